"""cocotb testbench: a compiled program (``heterotron run minilm``) on the whole accelerator,
through its host port, judged tensor by tensor against the program interpreter.

The accelerator runs in its simulation harness (:class:`heterotron.hdl.simtop.SimAccelerator`,
driven by :class:`heterotron.tb.harness.HarnessTransport`): the host link's bytes and the random
back-pressure on the link and on every tile come from hardware, and the testbench sleeps while
the program runs, so the simulator runs free.

The runner hands the testbench a *job* (``bench = {"job": FILE.npz}``, written by
:func:`write_job`): the program's words, the scratchpad images, the interpreter's scratchpads
after the program, and the tensors in the order the program writes them, each with its
layer and stage. The testbench loads the images, streams the program into the queue, waits
for the accelerator to go idle, reads every scratchpad's used part back once and compares
each tensor with the interpreter's, so a mismatch names the first wrong stage. It writes its
figures (cycles, each tile's counters, the first mismatch if any) as one JSON line to
``bench_out``.
"""

from __future__ import annotations

import json
import time

import cocotb
import numpy as np

from heterotron.sim.golden.accel import Region
from heterotron.tb import env
from heterotron.tb.accel import WAIT_POLLS, start

__all__ = ["write_job", "read_job", "written_spans"]


def write_job(path, words, images: dict[int, bytes], expected: dict[int, bytes],
              tensors: list[dict], retired: int,
              stalls: tuple[float, float, float] = (0.0, 0.0, 0.0)):
    """Write a job: ``tensors`` in program order, each ``{name, layer, stage, mem, addr,
    rows, cols, stride, ebytes}``; ``images`` and ``expected`` per memory tile, from address
    0 (the part the program uses); ``retired``, the instructions the program retires;
    ``stalls``, the host link's gap and back-pressure and every tile's back-pressure."""
    arrays = {"words": np.asarray(words, dtype=np.uint32)}
    for t, img in images.items():
        arrays[f"image{t}"] = np.frombuffer(bytes(img), dtype=np.uint8)
    for t, exp in expected.items():
        arrays[f"expect{t}"] = np.frombuffer(bytes(exp), dtype=np.uint8)
    arrays["meta"] = np.array(json.dumps({"tensors": tensors, "stalls": list(stalls),
                                          "retired": retired}))
    np.savez(path, **arrays)


def read_job(path) -> dict:
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        return {"words": [int(w) for w in f["words"]],
                "images": {int(k[5:]): f[k].tobytes() for k in f.files if k.startswith("image")},
                "expected": {int(k[6:]): f[k].tobytes() for k in f.files
                             if k.startswith("expect")},
                **meta}


def written_spans(tensors) -> dict[int, list[tuple[int, int]]]:
    """The byte ranges ``[a, b)`` of each memory tile that the tensors cover, merged, on
    word boundaries."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for t in tensors:
        r = Region(*(t[k] for k in ("mem", "addr", "rows", "cols", "stride", "ebytes")))
        spans.setdefault(r.mem, []).append((r.addr // 4 * 4, -(-r.end // 4) * 4))
    out = {}
    for mem, ranges in spans.items():
        merged: list[tuple[int, int]] = []
        for a, b in sorted(ranges):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        out[mem] = merged
    return out


def _first_mismatch(tensors, rtl: dict[int, bytes], expected: dict[int, bytes]):
    for t in tensors:
        eb = t["ebytes"]
        region = Region(t["mem"], t["addr"], t["rows"], t["cols"], t["stride"], eb)
        for r in range(t["rows"]):
            start = region.row_start(r)
            got = rtl[t["mem"]][start:start + t["cols"] * eb]
            want = expected[t["mem"]][start:start + t["cols"] * eb]
            if got != want:
                col = next(i for i in range(len(got)) if got[i] != want[i]) // eb
                return {"tensor": t["name"], "layer": t["layer"], "stage": t["stage"],
                        "row": r, "col": col,
                        "got": got[col * eb:(col + 1) * eb].hex(),
                        "want": want[col * eb:(col + 1) * eb].hex()}
    return None


#: Bytes moved between two progress lines while loading and reading back.
PROGRESS_BYTES = 64 * 1024
#: Cycles between two progress lines while the program runs, once it is all queued ...
PROGRESS_CYCLES = 1 << 17
#: ... and program words queued between two while it is being queued.
PROGRESS_WORDS = 2048


class Progress:
    """Progress lines for the runner's bar (``bench = {"progress": FILE}``), one JSON object
    a line: ``{"phase": "load" | "run" | "read", "done": n, "total": n}``."""

    def __init__(self, path: str | None):
        self.path = path

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"phase": phase, "done": done, "total": total}) + "\n")


async def _move(progress: Progress, phase: str, parts: dict[int, int], move) -> dict:
    """``await move(tile, offset, nbytes)`` over every tile's ``parts[tile]`` bytes, in
    pieces of :data:`PROGRESS_BYTES`, with a progress line after each."""
    total, done, out = sum(parts.values()), 0, {}
    progress(phase, 0, total)
    for t, n in parts.items():
        got = bytearray()
        for off in range(0, n, PROGRESS_BYTES):
            k = min(PROGRESS_BYTES, n - off)
            got += await move(t, off, k) or b""
            done += k
            progress(phase, done, total)
        out[t] = bytes(got)
    return out


@cocotb.test(skip=not (env.benching() and "job" in env.bench_config()))
async def test_job(dut):
    """The job's program, bit-exact tensor by tensor; cycles and counters reported."""
    cfg = env.bench_config()
    job = read_job(cfg["job"])
    progress = Progress(cfg.get("progress"))
    desc, _, link, dev = await start(dut, 7)
    link.set_stalls(*job["stalls"])
    t0 = time.monotonic()
    images = job["images"]

    backdoor = cfg.get("load", "host") == "backdoor"
    if backdoor and not hasattr(link, "poke"):
        raise ValueError("load = backdoor needs the simulation harness (its poke port)")
    for t, img in images.items():
        size = next(x for x in desc.tiles if x.index == t).params["kbytes"] * 1024
        if len(img) > size:
            raise ValueError(f"the image of memory tile {t} is {len(img)} bytes, its "
                             f"scratchpad {size}")

    async def load(t, off, n):
        if backdoor:  # straight into the scratchpad, a word a cycle (the harness's poke)
            await link.poke(t, off, images[t][off:off + n])
        else:  # through the host link, as a board is loaded
            await dev.write_mem(dev.address(t, off), images[t][off:off + n])
    await _move(progress, "load", {t: len(img) for t, img in images.items()}, load)
    load_s = time.monotonic() - t0
    # Cycles from the CYCLES register: from before the first program word to the first
    # status read after the accelerator stopped running. The testbench sleeps meanwhile:
    # it wakes to queue program words and when ``running`` falls.
    cycles_reg = dev.registers["cycles"]
    t0 = time.monotonic()
    c0 = await dev.read_reg(cycles_reg)
    limit = int(cfg.get("max_cycles", 1 << 32))

    async def running():
        progress("run", await dev.read_reg(dev.registers["retired"]), job["retired"])
    words = job["words"]
    for off in range(0, len(words), PROGRESS_WORDS):  # the queue fills as the program runs
        await dev.write_program(words[off:off + PROGRESS_WORDS])
        await running()
    finished = await link.wait_while_running(limit, PROGRESS_CYCLES, running)
    st = await dev.wait_idle(polls=WAIT_POLLS)
    run_s = time.monotonic() - t0
    cycles = (st["cycles"] - c0) & 0xFFFFFFFF
    t0 = time.monotonic()

    async def read(t, off, n):
        return await dev.read_mem(dev.address(t, off), n)
    whole = cfg.get("read_back", "all") == "all"
    if whole:
        rtl = await _move(progress, "read", {t: len(e) for t, e in job["expected"].items()},
                          read)
    else:  # the bytes the program writes: the rest stays the interpreter's
        spans = written_spans(job["tensors"])
        parts = {(t, a): b - a for t, spans_t in spans.items() for a, b in spans_t}

        async def read_span(key, off, n):
            return await read(key[0], key[1] + off, n)
        got = await _move(progress, "read", parts, read_span)
        rtl = {t: bytearray(e) for t, e in job["expected"].items()}
        for (t, a), data in got.items():
            rtl[t][a:a + len(data)] = data
        rtl = {t: bytes(v) for t, v in rtl.items()}
    read_s = time.monotonic() - t0
    mismatch = _first_mismatch(job["tensors"], rtl, job["expected"])
    counters = await dev.counters()
    row = {"cycles": cycles,
           "cycles_per_second": round(cycles / run_s) if run_s else 0,
           "load": "backdoor" if backdoor else "host", "load_seconds": round(load_s, 2),
           "run_seconds": round(run_s, 2),
           "read_seconds": round(read_s, 2), "wakes": link.cycle_waits,
           "retired": st["retired"], "error": st["error"], "watchdog": int(dut.watchdog.value),
           "finished": finished, "mismatch": mismatch,
           "whole_memory_equal": all(rtl[t] == job["expected"][t] for t in rtl) if whole
           else None,
           "tiles": counters}
    out = env.bench_out()
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    assert finished, ("watchdog (no progress for the control tile's watchdog cycles)"
                      if row["watchdog"] else f"still running after {limit} cycles")
    assert mismatch is None, f"first mismatch: {mismatch}"
    assert row["whole_memory_equal"] is not False, "a byte outside the tensors differs"
    assert row["watchdog"] == 0 and st["error"] == 0, row
    assert st["retired"] == job["retired"], (st["retired"], job["retired"])

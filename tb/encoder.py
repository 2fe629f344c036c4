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

from heterotron.tb import env
from heterotron.tb.accel import ANSWER_CYCLES, WAIT_POLLS
from heterotron.tb.harness import HarnessTransport

__all__ = ["write_job", "read_job"]


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


def _first_mismatch(tensors, rtl: dict[int, bytes], expected: dict[int, bytes]):
    for t in tensors:
        eb = t["ebytes"]
        for r in range(t["rows"]):
            start = t["addr"] + r * t["stride"] * eb
            got = rtl[t["mem"]][start:start + t["cols"] * eb]
            want = expected[t["mem"]][start:start + t["cols"] * eb]
            if got != want:
                col = next(i for i in range(len(got)) if got[i] != want[i]) // eb
                return {"tensor": t["name"], "layer": t["layer"], "stage": t["stage"],
                        "row": r, "col": col,
                        "got": got[col * eb:(col + 1) * eb].hex(),
                        "want": want[col * eb:(col + 1) * eb].hex()}
    return None


async def start_harness(dut, salt: int):
    """The accelerator in its simulation harness (:mod:`heterotron.tb.harness`), reset, and
    the host driver on it."""
    from heterotron.hdl.contract import accel
    from heterotron.sim.host.driver import Device
    from heterotron.tb.accel import description

    desc = description()
    link = HarnessTransport(dut, (cocotb.RANDOM_SEED & 0xFFFFFFFF) ^ (salt * 0x01000193))
    await link.start()
    return desc, link, Device(link, accel.sidecar(desc), timeout=ANSWER_CYCLES)


@cocotb.test(skip=not (env.benching() and "job" in env.bench_config()))
async def test_job(dut):
    """The job's program, bit-exact tensor by tensor; cycles and counters reported."""
    cfg = env.bench_config()
    job = read_job(cfg["job"])
    desc, link, dev = await start_harness(dut, 7)
    link.set_stalls(*job["stalls"])
    t0 = time.monotonic()
    for t, img in job["images"].items():
        if img:
            await dev.write_mem(dev.address(t), img)
    load_s = time.monotonic() - t0
    # Cycles from the CYCLES register: from before the first program word to the first
    # status read after the accelerator stopped running. The testbench sleeps meanwhile:
    # it wakes to queue program words and when ``running`` falls.
    cycles_reg = dev.registers["cycles"]
    t0 = time.monotonic()
    c0 = await dev.read_reg(cycles_reg)
    await dev.write_program(job["words"])
    limit = int(cfg.get("max_cycles", 1 << 32))
    finished = await link.wait_while_running(limit)
    st = await dev.wait_idle(polls=WAIT_POLLS)
    run_s = time.monotonic() - t0
    cycles = (st["cycles"] - c0) & 0xFFFFFFFF
    t0 = time.monotonic()
    rtl = {t: await dev.read_mem(dev.address(t), len(exp)) if exp else b""
           for t, exp in job["expected"].items()}
    read_s = time.monotonic() - t0
    mismatch = _first_mismatch(job["tensors"], rtl, job["expected"])
    counters = await dev.counters()
    row = {"cycles": cycles,
           "cycles_per_second": round(cycles / run_s) if run_s else 0,
           "load_seconds": round(load_s, 2), "run_seconds": round(run_s, 2),
           "read_seconds": round(read_s, 2), "wakes": link.cycle_waits,
           "retired": st["retired"], "error": st["error"], "watchdog": int(dut.watchdog.value),
           "finished": finished, "mismatch": mismatch, "whole_memory_equal": all(
               rtl[t] == job["expected"][t] for t in rtl),
           "tiles": counters}
    out = env.bench_out()
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    assert finished, f"still running after {limit} cycles"
    assert mismatch is None, f"first mismatch: {mismatch}"
    assert row["whole_memory_equal"], "a byte outside the tensors differs"
    assert row["watchdog"] == 0 and st["error"] == 0, row
    assert st["retired"] == job["retired"], (st["retired"], job["retired"])

"""cocotb testbench: a compiled program (``heterotron run minilm``) on the whole accelerator,
through its host port, judged tensor by tensor against the program interpreter.

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
from heterotron.tb.accel import WAIT_POLLS, start

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


@cocotb.test(skip=not (env.benching() and "job" in env.bench_config()))
async def test_job(dut):
    """The job's program, bit-exact tensor by tensor; cycles and counters reported."""
    cfg = env.bench_config()
    job = read_job(cfg["job"])
    desc, rng, link, dev = await start(dut, 7)
    link.set_stalls(*job["stalls"])
    t0 = time.monotonic()
    for t, img in job["images"].items():
        if img:
            await dev.write_mem(dev.address(t), img)
    load_s = time.monotonic() - t0
    # Cycles from the CYCLES register (no coroutine touching the DUT every cycle): from
    # before the first program word to the first status poll that finds the device idle.
    cycles_reg = dev.registers["cycles"]
    t0 = time.monotonic()
    c0 = await dev.read_reg(cycles_reg)
    await dev.write_program(job["words"])
    st = await dev.wait_idle(polls=1000 * WAIT_POLLS)
    run_s = time.monotonic() - t0
    cycles = (st["cycles"] - c0) & 0xFFFFFFFF
    rtl = {t: await dev.read_mem(dev.address(t), len(exp)) if exp else b""
           for t, exp in job["expected"].items()}
    mismatch = _first_mismatch(job["tensors"], rtl, job["expected"])
    counters = await dev.counters()
    row = {"cycles": cycles,
           "cycles_per_second": round(cycles / run_s) if run_s else 0,
           "load_seconds": round(load_s, 2), "run_seconds": round(run_s, 2),
           "retired": st["retired"], "error": st["error"], "watchdog": int(dut.watchdog.value),
           "mismatch": mismatch, "whole_memory_equal": all(
               rtl[t] == job["expected"][t] for t in rtl),
           "tiles": counters}
    out = env.bench_out()
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    assert mismatch is None, f"first mismatch: {mismatch}"
    assert row["whole_memory_equal"], "a byte outside the tensors differs"
    assert row["watchdog"] == 0 and st["error"] == 0, row
    assert st["retired"] == job["retired"], (st["retired"], job["retired"])

"""GEMM benchmark: cycles and utilisation of the GEMM engine measured in RTL simulation.

For each array size and dataflow the engine is built with buffers for the largest size, and
the testbench's ``test_bench`` loads random int8 operands, issues RUN with no stalls and an
always-ready sink, checks every result against the golden model, and reports the cycles from
the RUN command being taken to the last result beat (inclusive). Utilisation is
``M K N / (rows cols cycles)``; 100% is the physical limit.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from heterotron.sim.flows.runner import run_sim
from heterotron.sim.flows.toolchain import ToolError
from heterotron.sim.flows.units import get_unit

__all__ = ["bench_gemm", "GOALS", "bench_sfu", "SFU_CONFIGS"]

#: Utilisation goals (issue 4): on 8x8, at least 95% at 256^3 and 90% at 128^3.
GOALS = {(8, 8, 256): 0.95, (8, 8, 128): 0.90}


def _bench_sim(unit, params: dict[str, Any], sizes: list[int], seed: int, label: str
               ) -> list[dict[str, Any]]:
    """Run the unit's ``test_bench`` (no stalls, results checked) for ``sizes``; return the
    JSON records it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.jsonl"
        result = run_sim(unit, params, seed=seed, stalls=False, testcase="test_bench",
                         quiet=True, bench=list(sizes), bench_out=out)
        if not result.ok:
            raise ToolError(f"bench simulation failed for {label}; "
                            f"see {result.results_xml.parent / 'sim.log'}")
        return [json.loads(line) for line in out.read_text().splitlines()]


def bench_gemm(sizes: list[int], arrays: list[tuple[int, int]], dataflows: list[str],
               seed: int = 1) -> list[dict[str, Any]]:
    """Run the benchmark; one row per (array, dataflow, size), verified bit-exact."""
    unit = get_unit("gemm")
    rows_out = []
    largest = max(max(sizes), 2)  # the engine needs buffers of two words or more
    for rows, cols in arrays:
        for dataflow in dataflows:
            params = unit.resolve(overrides={
                "rows": str(rows), "cols": str(cols), "dataflow": dataflow,
                "max_m": str(largest), "max_k": str(largest), "max_n": str(largest)})
            unit.validate(params)
            print(f"[heterotron] bench gemm: {rows}x{cols} {dataflow}, "
                  f"M=K=N in {sizes} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            got = _bench_sim(unit, params, sizes, seed, f"{rows}x{cols} {dataflow}")
            wall = time.monotonic() - t0
            for row in got:
                row["goal"] = GOALS.get((rows, cols, row["m"]))
                row["config_wall_seconds"] = round(wall, 1)  # build + all sizes
                row["seed"] = seed
                rows_out.append(row)
    return rows_out


#: The special-function-unit benchmark's configurations: (label, unit, parameter overrides,
#: row lengths). Lengths follow MiniLM: 128 tokens per attention row, hidden size 384, FFN
#: width 1536; 512 and 1024 are the units' design maxima.
SFU_CONFIGS = [
    ("softmax ibert", "softmax", {"variant": "ibert"}, [128, 512]),
    ("softmax divfree", "softmax", {"variant": "divfree"}, [128, 512]),
    ("gelu", "gelu", {}, [1536]),
    ("layernorm", "layernorm", {}, [384, 1024]),
    ("residual", "residual", {}, [384]),
]


def bench_sfu(units: list[str] | None = None, fpga: bool = True, seed: int = 1,
              device: str = "ecp5-85f") -> dict[str, Any]:
    """Cycles per row and elements per cycle (Verilator, results checked), FPGA resources and
    Fmax (out of context), and the golden models' error against float, per unit."""
    from heterotron.sim.flows.build import generate
    from heterotron.sim.flows.fpga import fpga_synth
    from heterotron.sim.golden.sfu import float_errors

    configs = [c for c in SFU_CONFIGS if units is None or c[1] in units]
    throughput, resources = [], []
    for label, name, overrides, lengths in configs:
        unit = get_unit(name)
        params = unit.resolve(overrides={k: str(v) for k, v in overrides.items()})
        print(f"[heterotron] bench sfu: {label}, rows of {lengths} ...", file=sys.stderr,
              flush=True)
        for row in _bench_sim(unit, params, lengths, seed, label):
            row["label"] = label
            row["ideal_cycles_per_row"] = row["beats_per_row"]
            throughput.append(row)
        if fpga:
            gen = generate(unit, params)
            fig = fpga_synth(gen.verilog, gen.module, device=device)
            resources.append({"label": label, "unit": name, "params": params, **fig})
    return {"throughput": throughput, "fpga": resources,
            "float_error": [e for e in float_errors(seed)
                            if units is None or e["unit"] in units]}

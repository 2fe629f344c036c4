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

from heterotron.hdl.units import get_unit

from .runner import run_sim
from .toolchain import ToolError

__all__ = ["bench_gemm", "GOALS"]

#: Utilisation goals (issue 4): on 8x8, at least 95% at 256^3 and 90% at 128^3.
GOALS = {(8, 8, 256): 0.95, (8, 8, 128): 0.90}


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
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "bench.jsonl"
                result = run_sim(unit, params, seed=seed, stalls=False, testcase="test_bench",
                                 quiet=True,
                                 extra_env={"HETEROTRON_BENCH": ",".join(map(str, sizes)),
                                            "HETEROTRON_BENCH_OUT": str(out)})
                if not result.ok:
                    raise ToolError(f"bench simulation failed for {rows}x{cols} {dataflow}; "
                                    f"see {result.results_xml.parent / 'sim.log'}")
                got = [json.loads(line) for line in out.read_text().splitlines()]
            wall = time.monotonic() - t0
            for row in got:
                row["goal"] = GOALS.get((rows, cols, row["m"]))
                row["config_wall_seconds"] = round(wall, 1)  # build + all sizes
                row["seed"] = seed
                rows_out.append(row)
    return rows_out

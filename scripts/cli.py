"""``heterotron``: list, generate, lint and simulate the accelerator's units.

Every unit-taking command has the same shape::

    heterotron <command> <unit> [--config NAME|FILE.toml] [--param k=v ...]

Parameters come from the unit's defaults, then the configuration's ``[<unit>]`` table, then
``--param``. A bad unit, parameter or configuration gives one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from heterotron.hdl.contract.params import ParamError
from heterotron.sim.flows.units import UNITS, UnitError, get_unit

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["main", "load_config", "ConfigError"]

DEFAULT_CONFIG = "default"


class ConfigError(ValueError):
    """A configuration file is missing or malformed."""


class UsageError(ValueError):
    """A malformed command-line argument."""


def _builtin_configs() -> dict[str, Any]:
    """Configurations shipped with the package (``configs/*.toml``)."""
    found = {}
    for entry in resources.files("heterotron.configs").iterdir():
        if entry.name.endswith(".toml"):
            found[entry.name.removesuffix(".toml")] = entry
    return found


def _local_configs() -> dict[str, Path]:
    local = Path("configs")
    return {p.stem: p for p in sorted(local.glob("*.toml"))} if local.is_dir() else {}


def load_config(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Read a configuration: a TOML path, or the name of one in ``./configs`` or built in."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"configuration file {name_or_path} not found")
        source, text = str(path), path.read_text()
    elif name_or_path in _local_configs():
        source = str(_local_configs()[name_or_path])
        text = _local_configs()[name_or_path].read_text()
    elif name_or_path in _builtin_configs():
        source, text = f"built-in {name_or_path}", _builtin_configs()[name_or_path].read_text()
    else:
        names = sorted(set(_builtin_configs()) | set(_local_configs()))
        raise ConfigError(f"no configuration {name_or_path!r}; known: {', '.join(names)} "
                          "(or give a path to a .toml file)")
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for unit, table in config.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {unit!r} must be a table [{unit}] of parameters")
        if unit not in UNITS:
            raise ConfigError(f"{source}: unknown unit [{unit}]; known units: {', '.join(UNITS)}")
    return source, config


def _parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param expects name=value, not {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _resolve(args) -> tuple[Any, dict[str, Any]]:
    unit = get_unit(args.unit)
    _, config = load_config(args.config)
    params = unit.resolve(config.get(unit.name, {}), _parse_overrides(args.param))
    unit.validate(params)  # a bad value is reported before any tool runs
    return unit, params


def _param_pairs(params: dict[str, Any]) -> list[str]:
    """``name=value`` as a user types it (booleans as true/false)."""
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(_param_pairs(params))


# -- commands ---------------------------------------------------------------------------------

def cmd_list(args) -> int:
    print("units:")
    for unit in UNITS.values():
        print(f"  {unit.name:<14} {unit.summary}")
        for p in unit.params:
            print(f"      {p.name:<12} default {p.default_text():<8} {p.allowed():<34} {p.doc}")
    print("configurations (--config NAME):")
    builtin, local = _builtin_configs(), _local_configs()
    for name in sorted(set(builtin) | set(local)):
        where = str(local[name]) if name in local else "built in"
        _, config = load_config(str(local[name]) if name in local else name)
        print(f"  {name:<14} {where:<22} units: {', '.join(config) or '(none)'}")
    return 0


def cmd_generate(args) -> int:
    from heterotron.sim.flows.build import generate

    unit, params = _resolve(args)
    out = generate(unit, params, Path(args.output))
    meta = json.loads(out.sidecar.read_text())
    print(f"{unit.name}: {_fmt_params(params)}")
    print(f"  verilog  {out.verilog}")
    print(f"  sidecar  {out.sidecar}  (latency {meta['latency_cycles']} cycles, "
          f"{len(meta['ports'])} ports)")
    return 0


def cmd_lint(args) -> int:
    from heterotron.sim.flows.build import generate
    from heterotron.sim.flows.lint import verilator_lint, yosys_check
    from heterotron.sim.flows.toolchain import VERILATOR_WAIVERS

    unit, params = _resolve(args)
    if args.verilog:
        # Lint a file written earlier by `generate`; its sidecar names the parameters.
        verilog, module = Path(args.verilog), unit.name
        if not verilog.is_file():
            raise UsageError(f"--verilog: no such file {verilog}")
        side = verilog.with_suffix(".json")
        described = (_fmt_params(json.loads(side.read_text())["parameters"]) if side.is_file()
                     else "parameters unknown (no sidecar beside the file)")
    else:
        gen = generate(unit, params)
        verilog, module = gen.verilog, gen.module
        described = _fmt_params(params)
    print(f"{unit.name}: {described}")
    print(f"  verilog: {verilog}")
    ok = True
    vl = verilator_lint(verilog, module)
    print(f"  verilator --lint-only -Wall (waived: {', '.join(VERILATOR_WAIVERS)}): "
          f"{'clean' if vl.ok else 'FAILED'}")
    if not vl.ok:
        ok = False
        print("\n".join("    " + ln for ln in vl.log.splitlines()[:60]))
    ys = yosys_check(verilog, module)
    print(f"  yosys synthesis check (no latches, no undriven or multiply-driven nets): "
          f"{'clean' if ys.ok else 'FAILED'}")
    if ys.ok:
        total = sum(ys.cells.values())
        print(f"  yosys word-level cells: {total} total")
        for cell, count in ys.cells.items():
            print(f"    {cell:<14} {count}")
    else:
        ok = False
        print("\n".join("    " + ln for ln in (ys.problems or ys.log.splitlines()[-30:])))
    if args.json:
        print(json.dumps({"unit": unit.name, "params": params, "verilator_ok": vl.ok,
                          "yosys_ok": ys.ok, "cells": ys.cells}, indent=2))
    return 0 if ok else 1


def cmd_sim(args) -> int:
    from heterotron.sim.flows.runner import run_sim

    unit, params = _resolve(args)
    if args.vectors is not None and args.vectors < 1:
        raise UsageError(f"--vectors must be a positive integer, not {args.vectors}")
    result = run_sim(unit, params, simulator=args.sim, seed=args.seed, waves=args.waves,
                     vectors=args.vectors, stalls=not args.no_stalls)
    status = "PASS" if result.ok else "FAIL"
    print(f"{status} {unit.name} [{_fmt_params(result.params)}] on {result.simulator}, "
          f"seed {result.seed}: {result.tests} tests, {result.failed} failed "
          f"(build {result.build_seconds:.1f} s, run {result.run_seconds:.1f} s)")
    print(f"  results: {result.results_xml}")
    if args.waves:
        print(f"  waves:   {result.waves or '(no waveform file found)'}")
    if not result.ok:
        print(f"  reproduce: heterotron sim {unit.name} --sim {result.simulator} "
              f"--seed {result.seed} " + " ".join(f"--param {kv}"
                                                 for kv in _param_pairs(result.params)))
    return 0 if result.ok else 1


def cmd_fpga_synth(args) -> int:
    from heterotron.sim.flows.build import generate
    from heterotron.sim.flows.fpga import fpga_synth

    unit, params = _resolve(args)
    gen = generate(unit, params)
    try:
        fig = fpga_synth(gen.verilog, gen.module, args.device, args.freq)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fig = {"unit": unit.name, "params": params, **fig}
    if args.json:
        print(json.dumps(fig, indent=2))
        return 0
    a = fig["available"]
    print(f"{unit.name} [{_fmt_params(params)}] on {fig['device']} (out of context):")
    print(f"  Fmax        {fig['fmax_mhz']} MHz "
          f"({'meets' if fig['timing_met'] else 'misses'} {fig['constraint_mhz']:g} MHz)")
    print(f"  LUT4/logic  {fig['luts']} / {a['luts']}")
    print(f"  flip-flops  {fig['ffs']} / {a['ffs']}")
    print(f"  DSP (MULT18X18D) {fig['dsps']} / {a['dsps']}")
    print(f"  block RAM   {fig['brams']} / {a['brams']}")
    cp = fig.get("critical_path")
    if cp:
        print(f"  critical path {cp['total_ns']} ns ({cp['logic_ns']} logic, {cp['routing_ns']} "
              f"routing): {cp['from']} -> {cp['to']}")
    print(f"  tools: {fig['tools']}, LUT mapping {fig['lut_mapper']}; "
          f"synth {fig['synth_seconds']} s, place and route {fig['pnr_seconds']} s")
    return 0


# -- argument parsing -------------------------------------------------------------------------

def _unit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("unit", help=f"unit name ({', '.join(UNITS)})")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="configuration name or TOML file (default: %(default)s)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    try:
        version = metadata.version("heterotron")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    parser = argparse.ArgumentParser(
        prog="heterotron",
        description="RTL generator for a heterogeneous integer transformer accelerator.")
    parser.add_argument("--version", action="version", version=f"heterotron {version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="units, their parameters, and configurations")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("generate", help="write Verilog and a JSON sidecar")
    _unit_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("lint", help="Verilator -Wall lint and Yosys synthesis check")
    _unit_args(p)
    p.add_argument("--verilog", metavar="FILE",
                   help="lint this file (from `heterotron generate`) instead of regenerating")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("sim", help="run the unit's cocotb testbench against its golden model")
    _unit_args(p)
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--waves", action="store_true", help="write a VCD waveform")
    p.add_argument("--vectors", type=int, default=None,
                   help="random vectors (default: the testbench's, 10000 for requantizer)")
    p.add_argument("--no-stalls", action="store_true",
                   help="no random valid gaps or back-pressure")
    p.set_defaults(func=cmd_sim)

    from heterotron.sim.flows.fpga import DEVICES

    p = sub.add_parser("fpga", help="FPGA flows")
    fsub = p.add_subparsers(dest="fpga_command", required=True, metavar="FPGA_COMMAND")
    p = fsub.add_parser("synth", help="out-of-context synthesis and place and route of one "
                                      "unit: LUTs, flip-flops, DSPs, block RAMs, Fmax")
    _unit_args(p)
    p.add_argument("--device", choices=tuple(DEVICES), default="ecp5-85f",
                   help="(default: %(default)s)")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock constraint for place and route (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_fpga_synth)

    from heterotron.scripts.accuracy_cmd import add_parser as add_accuracy

    add_accuracy(sub)

    from heterotron.scripts.bench_cmd import add_parser as add_bench

    bench_sub = add_bench(sub)

    from heterotron.scripts.noc_cmd import add_parsers as add_noc

    add_noc(sub, bench_sub)

    from heterotron.scripts.pim_cmd import add_parser as add_pim_sweep

    add_pim_sweep(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from heterotron.sim.flows.toolchain import ToolError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamError, UnitError, ConfigError, UsageError) as exc:
        print(f"heterotron: error: {exc}", file=sys.stderr)
        return 2
    except ToolError as exc:
        print(f"heterotron: tool error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("heterotron: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

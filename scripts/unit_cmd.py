"""``heterotron list | generate | lint | sim``: the unit commands."""

from __future__ import annotations

import json
from pathlib import Path

from heterotron.scripts.common import (
    ACCELERATOR,
    Commands,
    UsageError,
    add_unit_args,
    builtin_configs,
    fmt_params,
    load_config,
    local_configs,
    param_pairs,
    resolve_description,
    resolve_unit,
)
from heterotron.sim.flows.units import UNITS

__all__ = ["add_commands"]


def cmd_list(args) -> int:
    print("units:")
    for unit in UNITS.values():
        print(f"  {unit.name:<14} {unit.summary}")
        for p in unit.params:
            print(f"      {p.name:<12} default {p.default_text():<8} {p.allowed():<34} {p.doc}")
    print("configurations (--config NAME):")
    builtin, local = builtin_configs(), local_configs()
    for name in sorted(set(builtin) | set(local)):
        where = str(local[name]) if name in local else "built in"
        _, config = load_config(str(local[name]) if name in local else name)
        print(f"  {name:<14} {where:<22} units: {', '.join(config) or '(none)'}")
    return 0


def cmd_generate(args) -> int:
    from heterotron.sim.flows.build import generate

    if args.unit == ACCELERATOR:
        return generate_accelerator(args)
    unit, params = resolve_unit(args)
    out = generate(unit, params, Path(args.output))
    meta = json.loads(out.sidecar.read_text())
    print(f"{unit.name}: {fmt_params(params)}")
    print(f"  verilog  {out.verilog}")
    print(f"  sidecar  {out.sidecar}  (latency {meta['latency_cycles']} cycles, "
          f"{len(meta['ports'])} ports)")
    return 0


def cmd_lint(args) -> int:
    from heterotron.sim.flows.build import generate
    from heterotron.sim.flows.lint import verilator_lint, yosys_check
    from heterotron.sim.flows.toolchain import VERILATOR_WAIVERS

    unit, params = resolve_unit(args)
    if args.verilog:
        # Lint a file written earlier by `generate`; its sidecar names the parameters.
        verilog, module = Path(args.verilog), unit.name
        if not verilog.is_file():
            raise UsageError(f"--verilog: no such file {verilog}")
        side = verilog.with_suffix(".json")
        described = (fmt_params(json.loads(side.read_text())["parameters"]) if side.is_file()
                     else "parameters unknown (no sidecar beside the file)")
    else:
        gen = generate(unit, params)
        verilog, module = gen.verilog, gen.module
        described = fmt_params(params)
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

    if args.unit == ACCELERATOR:
        return sim_accelerator(args)
    unit, params = resolve_unit(args)
    if args.vectors is not None and args.vectors < 1:
        raise UsageError(f"--vectors must be a positive integer, not {args.vectors}")
    result = run_sim(unit, params, simulator=args.sim, seed=args.seed, waves=args.waves,
                     vectors=args.vectors, stalls=not args.no_stalls)
    status = "PASS" if result.ok else "FAIL"
    print(f"{status} {unit.name} [{fmt_params(result.params)}] on {result.simulator}, "
          f"seed {result.seed}: {result.tests} tests, {result.failed} failed "
          f"(build {result.build_seconds:.1f} s, run {result.run_seconds:.1f} s)")
    print(f"  results: {result.results_xml}")
    if args.waves:
        print(f"  waves:   {result.waves or '(no waveform file found)'}")
    if not result.ok:
        print(f"  reproduce: heterotron sim {unit.name} --sim {result.simulator} "
              f"--seed {result.seed} " + " ".join(f"--param {kv}"
                                                 for kv in param_pairs(result.params)))
    return 0 if result.ok else 1


def generate_accelerator(args) -> int:
    from heterotron.sim.flows.accel import generate_accelerator as generate

    source, desc = resolve_description(args)
    out = generate(desc, Path(args.output))
    meta = json.loads(out.sidecar.read_text())
    print(f"accelerator from {source}: {len(desc.tiles)} tiles on a {desc.params['nx']}x"
          f"{desc.params['ny']}x{desc.params['nz']} mesh, {desc.n_planes} planes, config hash "
          f"{desc.config_hash:#010x}")
    for t in desc.tiles:
        print(f"  tile {t.index:<2} {t.kind.name.lower():<8} at {list(t.at)}")
    print(f"  verilog  {out.verilog}")
    print(f"  sidecar  {out.sidecar}  (contract version {meta['version']}, "
          f"{len(meta['opcodes'])} opcodes, {len(meta['verilog_ports'])} ports)")
    return 0


def sim_accelerator(args) -> int:
    from heterotron.sim.flows.accel import run_accelerator

    source, desc = resolve_description(args)
    if args.vectors is not None and args.vectors < 1:
        raise UsageError(f"--vectors must be a positive integer, not {args.vectors}")
    result = run_accelerator(desc, simulator=args.sim, seed=args.seed, waves=args.waves,
                             vectors=args.vectors, stalls=not args.no_stalls)
    status = "PASS" if result.ok else "FAIL"
    print(f"{status} accelerator from {source} on {result.simulator}, seed {result.seed}: "
          f"{result.tests} tests, {result.failed} failed (build {result.build_seconds:.1f} s, "
          f"run {result.run_seconds:.1f} s)")
    print(f"  results: {result.results_xml}")
    if not result.ok:
        print(f"  reproduce: heterotron sim accelerator --config {args.config} --sim "
              f"{result.simulator} --seed {result.seed}")
    return 0 if result.ok else 1


def add_commands(commands: Commands) -> None:
    commands.command("list", "units, their parameters, and configurations", cmd_list)

    p = commands.command("generate", "write Verilog and a JSON sidecar", cmd_generate)
    add_unit_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")

    p = commands.command("lint", "Verilator -Wall lint and Yosys synthesis check", cmd_lint)
    add_unit_args(p)
    p.add_argument("--verilog", metavar="FILE",
                   help="lint this file (from `heterotron generate`) instead of regenerating")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")

    p = commands.command("sim", "run the unit's cocotb testbench against its golden model",
                         cmd_sim)
    add_unit_args(p)
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--waves", action="store_true", help="write a VCD waveform")
    p.add_argument("--vectors", type=int, default=None,
                   help="random vectors (default: the testbench's, 10000 for requantizer)")
    p.add_argument("--no-stalls", action="store_true",
                   help="no random valid gaps or back-pressure")

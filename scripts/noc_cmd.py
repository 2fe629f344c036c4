"""``heterotron formal router`` (SymbiYosys proofs) and ``heterotron bench noc`` (latency
against load for each traffic pattern, saturation, zero-load against the analytic model, one
router on ECP5)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PATTERN_HELP = "uniform, transpose, bitcomp, hotspot, neighbour"


def _rates(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 0.05,0.2, not {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"rates are flits/node/cycle in (0, 1], not {text!r}")
    return values


def _patterns(text: str) -> list[str]:
    from heterotron.sim.golden.noc import PATTERNS

    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not values or any(v not in PATTERNS for v in values):
        raise argparse.ArgumentTypeError(f"patterns are {PATTERN_HELP}, not {text!r}")
    return values


def cmd_formal_router(args) -> int:
    from heterotron.scripts.common import UsageError, fmt_params, resolve_unit
    from heterotron.sim.flows.build import build_root
    from heterotron.sim.flows.formal import PROPERTIES, prove_router

    unit, params = resolve_unit(args, "router")
    if args.depth < 0:
        raise UsageError(f"--depth must be 0 (automatic) or positive, not {args.depth}")
    out = Path(args.output) if args.output else build_root() / "formal" / "router"
    print(f"[heterotron] proving router [{fmt_params(params)}] with yowasp-sby + yices "
          f"(k-induction) in {out} ...", file=sys.stderr, flush=True)
    res = prove_router(params, out, depth=args.depth, quiet=True)
    if args.json:
        print(json.dumps({"unit": "router", "params": res.params, "proved": res.passed,
                          "properties": list(PROPERTIES), "seconds": round(res.seconds, 1),
                          "log": str(out / "sby.log")}, indent=2))
    else:
        word = "PROVED" if res.passed else "NOT PROVED"
        print(f"{word} router [{fmt_params(res.params)}] in {res.seconds:.1f} s: "
              f"{', '.join(PROPERTIES)}")
        if not res.passed:
            print(res.summary)
        print(f"  log: {out / 'sby.log'}")
    return 0 if res.passed else 1


def cmd_bench_noc(args) -> int:
    from heterotron.sim.flows.noc_bench import bench_noc, plot_noc

    res = bench_noc(args.mesh, rates=args.rates, patterns=args.patterns, beats=args.beats,
                    cycles=args.cycles, fpga=not args.no_fpga, seed=args.seed)
    plot = plot_noc(res, Path(args.plot))
    res["plot"] = str(plot)
    if args.json:
        print(json.dumps({"benchmark": "noc", **res}, indent=2))
    else:
        m = res["mesh"]
        print(f"NoC {m['nx']}x{m['ny']}x{m['nz']} mesh, {res['beats']}-beat packets "
              f"({res['beats'] + 1} flits), RTL simulation (Verilator), every packet checked:")
        print(f"  {'pattern':<10}{'offered':>8}{'accepted':>9}{'avg lat':>9}{'p99 lat':>9}"
              f"{'packets':>9}")
        for r in res["points"]:
            sat = "  saturated" if r["saturated"] else ""
            print(f"  {r['pattern']:<10}{r['offered']:>8.3f}{r['accepted']:>9.3f}"
                  f"{r['avg_latency']:>9.1f}{r['p99_latency']:>9.1f}{r['packets']:>9}{sat}")
        print("  (offered and accepted in flits/node/cycle; latency in cycles from a packet's "
              "creation to its last beat delivered)")
        print(f"  {'pattern':<10}{'saturation':>11}{'zero-load measured':>20}"
              f"{'analytic':>10}")
        for p in res["patterns"]:
            sat = f"{p['saturation_throughput']:.3f}" if p["saturated"] else \
                f">{p['saturation_throughput']:.3f}"
            print(f"  {p['pattern']:<10}{sat:>11}"
                  f"{p['zero_load_measured']:>20.2f}{p['zero_load_analytic']:>10.2f}")
        print(f"  analytic zero-load latency = (hops + 1) x {res['per_hop']} cycle per router "
              f"+ {res['beats']} beats, averaged over each pattern's pairs")
        for r in res["fpga"]:
            print(f"  one router ({r['ports']} ports, {r['params']['flit_width']}-bit flits, "
                  f"{r['params']['buffer_depth']}-flit buffers) on {r['device']}: "
                  f"{r['luts']} LUT4, {r['ffs']} FF, Fmax {r['fmax_mhz']} MHz")
        print(f"  plot: {plot}")
    rates = ",".join(f"{r:g}" for r in res["rates"])
    print(f"  reproduce: heterotron bench noc --mesh {args.mesh} --rates {rates} "
          f"--beats {args.beats} --cycles {args.cycles} --seed {args.seed}"
          + (" --no-fpga" if args.no_fpga else "") + (" --json" if args.json else ""),
          file=sys.stderr if args.json else sys.stdout)
    return 0


def _mesh(text: str) -> str:
    parts = text.lower().split("x")
    try:
        dims = [int(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a mesh like 4x4 or 3x3x2, not {text!r}") \
            from None
    if len(dims) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected a mesh like 4x4 or 3x3x2, not {text!r}")
    return text.lower()


def add_commands(commands) -> None:
    from heterotron.scripts.common import add_unit_args

    commands.group("formal", "formal proofs (yowasp-sby + yices)")
    p = commands.command("router", "prove the router: no flit created or lost, routing, no "
                         "interleaving, bounded grant", cmd_formal_router, group="formal")
    add_unit_args(p, unit=False)
    p.add_argument("--depth", type=int, default=0,
                   help="induction depth (default: 0, buffer_depth + 4)")
    p.add_argument("-o", "--output", default=None, help="work folder (default: build/formal)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    commands.group("bench", "benchmarks measured in RTL simulation")
    p = commands.command("noc", "NoC latency against load per traffic pattern, saturation, "
                         "zero-load vs analytic, router on ECP5", cmd_bench_noc, group="bench")
    p.add_argument("--mesh", type=_mesh, default="4x4", help="nx x ny [x nz] (default: 4x4)")
    p.add_argument("--rates", type=_rates, default=None,
                   help="offered loads, flits/node/cycle (default: 0.02,0.1,...,0.6,0.8)")
    p.add_argument("--patterns", type=_patterns, default=None,
                   help=f"comma-separated subset of {PATTERN_HELP} (default: all)")
    p.add_argument("--beats", type=int, default=4, help="data beats per packet (default: 4)")
    p.add_argument("--cycles", type=int, default=1500,
                   help="measured cycles per point, after 300 of warm-up (default: 1500)")
    p.add_argument("--no-fpga", action="store_true", help="skip the router's place and route")
    p.add_argument("--seed", type=int, default=1, help="traffic seed (default: %(default)s)")
    p.add_argument("--plot", default="noc-latency.png", help="plot file (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

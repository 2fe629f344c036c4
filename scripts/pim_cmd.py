"""``heterotron pim-sweep``: MiniLM with its static weights on PiM tiles, swept over ADC bits,
cell bits, noise and faults (table, JSON, plot)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

__all__ = ["add_commands", "cmd_pim_sweep"]


def add_commands(commands) -> None:
    p = commands.command("pim-sweep", "accuracy of MiniLM on PiM tiles against ADC bits, cell "
                         "bits, noise and faults; cycles with skipping", cmd_pim_sweep)
    p.add_argument("--sentences", type=int, default=4, metavar="N",
                   help="evaluation sentences, from the 38 shipped (default: %(default)s)")
    p.add_argument("--calibration", type=int, default=4, metavar="N",
                   help="calibration sentences for the ADC ranges (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="a small sweep: ENOB 3, 6, 8 with 2-bit cells, one noise and one fault "
                        "point")
    p.add_argument("--rows", type=int, default=128,
                   help="crossbar rows per tile, 1-256 (default: %(default)s)")
    p.add_argument("-o", "--output", default="build/pim-sweep", metavar="DIR",
                   help="where pim-sweep.json and pim-sweep.png go (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = report["points"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    ref = report["exact_integer"]["final_cosine_mean"]
    series: dict[str, list] = {}
    for p in pts:
        if p["sigma_lsb"] == 0 and p["fault_rate"] == 0 and p["enob"] <= 8:
            key = f"{p['cell_bits']}-bit cells" + (", full range" if p["range_mode"] == "full"
                                                   else "")
            if p["rows"] != report["tile_rows"]:
                key += f", {p['rows']} rows"
            series.setdefault(key, []).append((p["enob"], p["final_cosine_mean"]))
    for key, xy in series.items():
        xy.sort()
        a.plot(*zip(*xy, strict=True), "o-" if "full" not in key else "s--", label=key)
    a.axhline(ref, color="grey", ls=":", label="exact integer encoder")
    a.set(xlabel="ADC ENOB", ylabel="sentence-embedding cosine vs float",
          title="accuracy vs ADC bits", ylim=(-0.1, 1.02))
    a.legend(fontsize=8)
    faults = [(p["fault_rate"], p["final_cosine_mean"]) for p in pts if p["fault_rate"] > 0]
    for code, style in (("twos", "o-"), ("signmag", "s--")):
        noise = [(p["sigma_lsb"], p["final_cosine_mean"]) for p in pts
                 if p["sigma_lsb"] > 0 and p["input_code"] == code]
        if noise:
            b.plot(*zip(*sorted(noise), strict=True), style,
                   label="two's complement" if code == "twos" else "sign-magnitude")
    b.legend(fontsize=8)
    b.set(xlabel="ADC noise sigma (LSB)", ylabel="cosine vs float", xscale="log",
          title=f"noise, ENOB {pts[-1]['enob']}", ylim=(-0.1, 1.02))
    if faults:
        c.plot(*zip(*sorted(faults), strict=True), "o-", color="tab:purple")
    c.set(xlabel="stuck-at cell rate", ylabel="cosine vs float", xscale="log",
          title=f"faults, ENOB {pts[-1]['enob']}", ylim=(-0.1, 1.02))
    for ax in (b, c):
        ax.axhline(ref, color="grey", ls=":")
    fig.suptitle(f"all-MiniLM-L6-v2 on PiM tiles ({report['tile_rows']} rows unless marked), "
                 f"{report['sentences']} sentences")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_report(r: dict) -> None:
    ex = r["exact_integer"]
    print(f"MiniLM on PiM tiles: {r['sentences']} sentences, ADC ranges calibrated on "
          f"{r['calibration_sentences']} others; exact integer encoder: cosine vs float mean "
          f"{ex['final_cosine_mean']:.4f}, worst {ex['final_cosine_min']:.4f}")
    print(f"  {'configuration':<52} {'vs float':>9} {'worst':>8} {'vs int':>8} {'range':>7}")
    for p in r["points"]:
        print(f"  {p['label']:<52} {p['final_cosine_mean']:9.4f} {p['final_cosine_min']:8.4f} "
              f"{p['cosine_vs_int_mean']:8.4f} {p['adc_range_median']:7.1f}")
    print("  cycles per tile MVM on the real activations (conversion slots; dense = every "
          "plane converted):")
    print(f"  {'input code':<11} {'matrix':<7} {'planes':>6} {'dense':>6} {'skipping':>9} "
          f"{'planes skipped':>15}")
    for code, kinds in r["cycles"].items():
        for kind, d in kinds.items():
            print(f"  {code:<11} {kind:<7} {d['planes']:6d} {d['cycles_per_mvm_dense']:6d} "
                  f"{d['cycles_per_mvm_skip']:9.2f} {100 * d['skipped_fraction']:14.2f}%")


def cmd_pim_sweep(args) -> int:
    from heterotron.scripts.common import UsageError
    from heterotron.sim.golden import bert_int as bi
    from heterotron.sim.golden.bert_float import ModelMissing, load_minilm, tokenize
    from heterotron.sim.studies.accuracy import shipped_sentences
    from heterotron.sim.studies.pim_study import PimPoint, run_sweep, sweep_points

    sentences = shipped_sentences("sentences")
    calibration = shipped_sentences("calibration")
    if not 1 <= args.sentences <= len(sentences):
        raise UsageError(f"--sentences must be in [1, {len(sentences)}], not {args.sentences}")
    if not 1 <= args.calibration <= len(calibration):
        raise UsageError(f"--calibration must be in [1, {len(calibration)}], "
                         f"not {args.calibration}")
    if not 1 <= args.rows <= 256:
        raise UsageError(f"--rows must be in [1, 256], not {args.rows}")
    try:
        w = load_minilm()
    except ModelMissing as exc:
        raise UsageError(str(exc)) from None
    if args.quick:
        points = sweep_points(enobs=(3, 6, 8), cell_bits=(2,), sigmas=(0.5,),
                              fault_rates=(1e-3,), short_rows=None)
        points = [p for p in points if p.input_code == "twos" or p.enob == 8]
        points = [p for p in points if p.range_mode == "calibrated" or p.enob == 9]
    else:
        points = sweep_points()
    main_rows = PimPoint.rows  # the series' tile size; the short-row series keeps its own
    points = [replace(p, rows=args.rows) if p.rows == main_rows else p for p in points]
    calib_toks = tokenize(calibration)
    enc = bi.build(w, calib_toks, bi.Precision())
    print(f"[heterotron] {len(points)} PiM configurations on {args.sentences} sentences",
          file=sys.stderr, flush=True)
    report = run_sweep(w, enc, tokenize(sentences[:args.sentences]),
                       calib_toks[:args.calibration], points,
                       progress=lambda s: print(f"[heterotron] {s}", file=sys.stderr,
                                                flush=True))
    report["tile_rows"] = args.rows
    # cycles: the counters of the first calibrated 2-bit point without noise or faults, in
    # each input code
    report["cycles"] = {}
    for p in report["points"]:
        if (p["range_mode"] == "calibrated" and p["cell_bits"] == 2 and p["sigma_lsb"] == 0
                and p["fault_rate"] == 0 and p["rows"] == args.rows):
            report["cycles"].setdefault(p["input_code"], p["cycles"])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    report["files"] = {"json": str(out / "pim-sweep.json"), "plot": str(out / "pim-sweep.png")}
    (out / "pim-sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out / "pim-sweep.png")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
        print(f"  wrote {out / 'pim-sweep.json'}, {out / 'pim-sweep.png'}")
    return 0

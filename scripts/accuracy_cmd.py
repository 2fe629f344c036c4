"""``heterotron accuracy``: integer encoder against the float model (report, JSON, plot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["add_commands", "cmd_accuracy"]

MODELS = ("minilm",)


def add_commands(commands) -> None:
    p = commands.command("accuracy", "integer encoder vs float all-MiniLM-L6-v2 on short "
                         "sentences and paragraphs: per-layer and sentence-embedding cosine, "
                         "per-op error", cmd_accuracy)
    p.add_argument("--model", choices=MODELS, default="minilm", help="(default: %(default)s)")
    p.add_argument("--sentences", metavar="FILE",
                   help="your own evaluation inputs, one per line, evaluated as one set "
                        "(default: the shipped sets, 38 sentences and 22 paragraphs)")
    p.add_argument("--softmax", choices=("ibert", "divfree"), default="ibert",
                   help="Softmax reciprocal (default: %(default)s)")
    p.add_argument("--ffn-bits", type=int, default=12,
                   help="bits of the GELU output / FC2 input, 4-16 (default: %(default)s)")
    p.add_argument("-o", "--output", default="build/accuracy", metavar="DIR",
                   help="where accuracy.json, accuracy.png and the integer parameter set "
                        "minilm-int.npz go (default: %(default)s)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the all-int8 baseline run (ffn_bits=8)")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")


def _progress(label: str, done: int, total: int) -> None:
    if done == total or done % 8 == 0:
        print(f"[heterotron] {label} {done}/{total} inputs", file=sys.stderr, flush=True)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = report["sets"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
    colors = dict(zip(sets, ("tab:blue", "tab:orange", "tab:green", "tab:purple"), strict=False))
    lows = [0.95]
    start = 0
    for name, r in sets.items():
        layers = range(1, len(r["layer_cosine_mean"]) + 1)
        a.plot(layers, r["layer_cosine_mean"], "o-", color=colors[name],
               label=f"{name}: mean")
        a.plot(layers, r["layer_cosine_min"], "s--", color=colors[name],
               label=f"{name}: worst input")
        fc = r["final_cosine"]
        xs = range(start, start + len(fc))
        b.bar(xs, fc, color=colors[name],
              label=f"{name} ({r['inputs']} inputs, {r['tokens']['min']}-"
                    f"{r['tokens']['max']} tokens)")
        base = report.get("baseline", {}).get("sets", {}).get(name)
        if base:
            b.plot(xs, base["final_cosine"], "r.",
                   label="all-int8 baseline" if start == 0 else None)
            lows.append(min(base["final_cosine"]))
        lows.append(min(fc))
        start += len(fc) + 2
    a.axhline(0.99, color="grey", lw=0.8, ls=":")
    a.set(xlabel="encoder layer", ylabel="cosine(int, float) of hidden states",
          title="per-layer agreement")
    a.legend(fontsize="small")
    b.axhline(report["target"]["final_cosine_min"], color="grey", lw=0.8, ls=":")
    b.axhline(report["target"]["final_cosine_mean"], color="grey", lw=0.8, ls="--")
    b.set(xlabel="input", ylabel="cosine of sentence embeddings", ylim=(min(lows) - 0.01, 1.0),
          title="final sentence embedding")
    b.legend(fontsize="small", loc="lower right")
    fig.suptitle(f"integer all-MiniLM-L6-v2, ffn_bits={report['precision']['ffn_bits']}, "
                 f"softmax={report['precision']['softmax']}, "
                 f"smooth_ratio={report['precision']['smooth_ratio']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _tokens(t: dict) -> str:
    return f"{t['min']}-{t['max']} tokens, mean {t['mean']:.1f}"


def _print_report(r: dict) -> None:
    from heterotron.sim.studies.accuracy import TAPS

    sets = r["sets"]
    cal = ", ".join(f"{c['inputs']} {name} ({_tokens(c['tokens'])})"
                    for name, c in r["calibration"].items())
    print(f"integer vs float {r['model']}, calibrated on {r['calibration_sentences']} inputs "
          f"disjoint from the evaluated ones: {cal}")
    print(f"  precision {r['precision']}")
    for name, s in sets.items():
        trunc = s["tokens"]["truncated"]
        print(f"  set {name}: {s['inputs']} inputs, {_tokens(s['tokens'])}"
              + (f" ({trunc} truncated to {r['max_tokens']})" if trunc else ""))
    print("  layer" + "".join(f"   {name + ' mean':>12} {name + ' worst':>12}" for name in sets))
    n_layers = len(next(iter(sets.values()))["layer_cosine_mean"])
    for i in range(n_layers):
        print(f"  {i + 1:>5}" + "".join(f"   {s['layer_cosine_mean'][i]:12.5f} "
                                        f"{s['layer_cosine_min'][i]:12.5f}"
                                        for s in sets.values()))
    t = r["target"]
    print(f"  sentence embedding (target: mean >= {t['final_cosine_mean']}, worst >= "
          f"{t['final_cosine_min']} on every set):")
    for name, s in sets.items():
        print(f"    {name:<8} mean {s['final_cosine_mean']:.5f}, worst {s['final_cosine_min']:.5f}"
              f"   {'met' if s['target_met'] else 'NOT met'}")
    print(f"    target {'met' if r['target_met'] else 'NOT met'}"
          f"{' on every set' if r['target_met'] else ''}")
    if "baseline" in r:
        b = r["baseline"]
        print(f"  all-int8 baseline (ffn_bits={b['precision']['ffn_bits']}): " + "; ".join(
            f"{name} mean {s['final_cosine_mean']:.5f}, worst {s['final_cosine_min']:.5f}"
            for name, s in b["sets"].items()))
    if "smoothing" in r:
        parts = []
        for layer, d in r["smoothing"].items():
            parts.append(f"{layer}: " + ", ".join(
                f"{what} " + " ".join(f"{c}/{1 << k}" for c, k in ch.items())
                for what, ch in d.items() if ch))
        print(f"  outlier channels scaled down (smooth_ratio {r['precision']['smooth_ratio']}; "
              "x = layer input, h1 = LayerNorm 1 output; channel/factor):")
        for p in parts:
            print(f"    {p}")
    if "op_error" in r:
        print("  nonlinear units vs float (layer-0 scales):")
        print(f"    {'op':<18} {'max abs err':>12} {'mean abs err':>13}  input range")
        for name, e in r["op_error"].items():
            print(f"    {name:<18} {e['max_abs']:12.3g} {e['mean_abs']:13.3g}  {e['range']}")
    for name, s in sets.items():
        if "tap_error" not in s:
            continue
        te = s["tap_error"]
        print(f"  per-op cost on {name}, 1 - cosine(int, float) with exact layer inputs:")
        print(f"    {'op':<7}" + "".join(f"{'layer ' + str(i + 1):>9}" for i in range(n_layers))
              + f"{'mean':>9}")
        for op in TAPS:
            v = te[op]
            print(f"    {op:<7}" + "".join(f"{x:9.1e}" for x in v) + f"{sum(v) / len(v):9.1e}")


def cmd_accuracy(args) -> int:
    from heterotron.scripts.common import UsageError
    from heterotron.sim.golden import bert_int as bi
    from heterotron.sim.golden.bert_float import ModelMissing, load_minilm
    from heterotron.sim.studies.accuracy import (
        read_sentences,
        run_accuracy,
        shipped_calibration,
        shipped_sets,
    )

    try:
        prec = bi.Precision(softmax=args.softmax, ffn_bits=args.ffn_bits)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.sentences:
        if not Path(args.sentences).is_file():
            raise UsageError(f"--sentences: no such file {args.sentences}")
        sentences = read_sentences(args.sentences)
        if not sentences:
            raise UsageError(f"--sentences: {args.sentences} has no sentences")
        sets = {"custom": sentences}
    else:
        sets = shipped_sets()
    try:
        w = load_minilm()
    except ModelMissing as exc:
        raise UsageError(str(exc)) from None
    calibration = shipped_calibration()
    print(f"[heterotron] building the integer encoder (calibrated on "
          f"{sum(map(len, calibration.values()))} inputs), evaluating "
          + ", ".join(f"{len(v)} {k}" for k, v in sets.items()), file=sys.stderr, flush=True)
    report, enc = run_accuracy(w, sets, calibration, prec, _progress)
    if args.sentences:
        report["sets"]["custom"]["source"] = str(args.sentences)
    if not args.no_baseline and args.ffn_bits != 8:
        base_prec = bi.Precision(softmax=args.softmax, ffn_bits=8)

        def base_progress(label, done, total):
            _progress(f"baseline (ffn_bits=8) {label}", done, total)

        base, _ = run_accuracy(w, sets, calibration, base_prec, base_progress, details=False)
        report["baseline"] = {
            "precision": base["precision"], "target_met": base["target_met"],
            "sets": {name: {k: s[k] for k in ("final_cosine", "final_cosine_mean",
                                              "final_cosine_min", "layer_cosine_mean",
                                              "target_met")}
                     for name, s in base["sets"].items()}}
        report["seconds"] += base["seconds"]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    report["files"] = {"json": str(out / "accuracy.json"), "plot": str(out / "accuracy.png"),
                       "int_params": str(out / "minilm-int.npz")}
    bi.save(enc, out / "minilm-int.npz")
    (out / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out / "accuracy.png")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
        print(f"  {report['seconds']:.0f} s; wrote {out / 'accuracy.json'}, "
              f"{out / 'accuracy.png'}, {out / 'minilm-int.npz'}")
    return 0

"""``heterotron accuracy``: integer encoder against the float model (report, JSON, plot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["add_parser", "cmd_accuracy"]

MODELS = ("minilm",)


def add_parser(sub) -> None:
    p = sub.add_parser("accuracy", help="integer encoder vs float all-MiniLM-L6-v2: per-layer "
                                        "and sentence-embedding cosine, per-op error")
    p.add_argument("--model", choices=MODELS, default="minilm", help="(default: %(default)s)")
    p.add_argument("--sentences", metavar="FILE",
                   help="your own evaluation sentences, one per line (default: 38 shipped)")
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
    p.set_defaults(func=cmd_accuracy)


def _progress(done: int, total: int) -> None:
    if done == total or done % 8 == 0:
        print(f"[heterotron] evaluated {done}/{total} sentences", file=sys.stderr, flush=True)


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    layers = range(1, len(report["layer_cosine_mean"]) + 1)
    a.plot(layers, report["layer_cosine_mean"], "o-", label="mean over sentences")
    a.plot(layers, report["layer_cosine_min"], "s--", label="worst sentence")
    a.axhline(0.99, color="grey", lw=0.8, ls=":")
    a.set(xlabel="encoder layer", ylabel="cosine(int, float) of hidden states",
          title="per-layer agreement")
    a.legend()
    fc = report["final_cosine"]
    b.bar(range(len(fc)), fc, color="tab:blue")
    if "baseline" in report:
        b.plot(range(len(fc)), report["baseline"]["final_cosine"], "r.", label="all-int8")
        b.legend()
    b.axhline(0.98, color="grey", lw=0.8, ls=":")
    b.set(xlabel="sentence", ylabel="cosine of sentence embeddings",
          ylim=(min(min(fc), 0.95) - 0.01, 1.0), title="final sentence embedding")
    fig.suptitle(f"integer all-MiniLM-L6-v2, ffn_bits={report['precision']['ffn_bits']}, "
                 f"softmax={report['precision']['softmax']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_report(r: dict) -> None:
    print(f"integer vs float {r['model']}: {r['sentences']} sentences, calibrated on "
          f"{r['calibration_sentences']} others; precision {r['precision']}")
    print("  layer   cosine mean   cosine worst")
    for i, (mean, worst) in enumerate(zip(r["layer_cosine_mean"], r["layer_cosine_min"],
                                          strict=True)):
        print(f"  {i + 1:>5}   {mean:11.5f}   {worst:12.5f}")
    print(f"  sentence embedding: mean {r['final_cosine_mean']:.5f}, "
          f"worst {r['final_cosine_min']:.5f}   (target: mean >= 0.99, worst >= 0.98: "
          f"{'met' if r['target_met'] else 'NOT met'})")
    if "baseline" in r:
        b = r["baseline"]
        print(f"  all-int8 baseline (ffn_bits=8): mean {b['final_cosine_mean']:.5f}, "
              f"worst {b['final_cosine_min']:.5f}")
    print("  nonlinear units vs float (layer-0 scales):")
    print(f"    {'op':<18} {'max abs err':>12} {'mean abs err':>13}  input range")
    for name, e in r["op_error"].items():
        print(f"    {name:<18} {e['max_abs']:12.3g} {e['mean_abs']:13.3g}  {e['range']}")
    print("  per-op cost, 1 - cosine(int, float) with exact inputs, mean over layers:")
    worst = sorted(r["tap_error"].items(), key=lambda kv: -sum(kv[1]))
    print("    " + ", ".join(f"{k} {sum(v) / len(v):.1e}" for k, v in worst))


def cmd_accuracy(args) -> int:
    from heterotron.scripts.cli import UsageError
    from heterotron.sim import bert_int as bi
    from heterotron.sim.accuracy import read_sentences, run_accuracy, shipped_sentences
    from heterotron.sim.bert_float import ModelMissing, load_minilm

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
    else:
        sentences = shipped_sentences("sentences")
    try:
        w = load_minilm()
    except ModelMissing as exc:
        raise UsageError(str(exc)) from None
    print(f"[heterotron] building the integer encoder, evaluating {len(sentences)} sentences",
          file=sys.stderr, flush=True)
    report, enc = run_accuracy(w, sentences, shipped_sentences("calibration"), prec, _progress)
    if not args.no_baseline and args.ffn_bits != 8:
        base, _ = run_accuracy(w, sentences, shipped_sentences("calibration"),
                               bi.Precision(softmax=args.softmax, ffn_bits=8))
        report["baseline"] = {k: base[k] for k in ("precision", "final_cosine",
                                                    "final_cosine_mean", "final_cosine_min",
                                                    "layer_cosine_mean")}
    report["target_met"] = report["final_cosine_mean"] >= 0.99 and \
        report["final_cosine_min"] >= 0.98
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
        print(f"  wrote {out / 'accuracy.json'}, {out / 'accuracy.png'}, "
              f"{out / 'minilm-int.npz'}")
    return 0

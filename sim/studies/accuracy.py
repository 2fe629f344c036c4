"""How far the integer encoder is from the float model: per layer, per input, per op, on sets
of inputs of different lengths.

Used by ``heterotron accuracy``; every figure is computed here from the golden models. The
package ships two evaluation sets, ``short`` (38 sentences, ``sim/data/sentences.txt``) and
``long`` (22 paragraphs of 39-122 tokens, ``sim/data/paragraphs.txt``), and calibration inputs of
both kinds, disjoint from them (``calibration.txt``: 16 sentences, ``calibration_paragraphs.txt``:
12 paragraphs). The encoder is calibrated on both, over the lengths it is measured on.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np

from heterotron.sim.golden import bert_int as bi
from heterotron.sim.golden.bert_float import (
    BertWeights,
    Tokenized,
    embed,
    encode,
    encoder_layer,
    gelu,
    layer_norm,
    mean_pool,
    softmax,
    tokenize,
)
from heterotron.sim.golden.intops import (
    exp_consts,
    gelu_consts,
    i_exp,
    i_gelu,
    layernorm_consts,
    layernorm_int,
    quantize_sym,
    requant_consts,
    softmax_int,
)
from heterotron.sim.golden.requantizer import requantize

__all__ = ["read_sentences", "shipped_sentences", "shipped_sets", "shipped_calibration",
           "token_lengths", "meets_target", "evaluate", "op_errors", "tap_errors",
           "run_accuracy", "TAPS", "EVAL_SETS", "CALIBRATION_SETS", "MAX_TOKENS", "TARGET"]

TAPS = ("q", "k", "v", "scores", "probs", "ctx", "h1_in", "h1", "f_in", "f", "h2_in", "out")
#: The shipped evaluation sets and, for each, the calibration file of the same kind of input.
EVAL_SETS = {"short": "sentences", "long": "paragraphs"}
CALIBRATION_SETS = {"short": "calibration", "long": "calibration_paragraphs"}
#: Inputs are truncated to this many tokens ([CLS] and [SEP] included); the shipped ones fit.
MAX_TOKENS = 128
#: Sentence-embedding cosine against float that every evaluated set must reach.
TARGET = {"final_cosine_mean": 0.99, "final_cosine_min": 0.98}


def read_sentences(path: str | Path) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def shipped_sentences(name: str) -> list[str]:
    """A shipped input file, one input a line: ``sentences`` (evaluation, 38 sentences),
    ``paragraphs`` (evaluation, 22 paragraphs), ``calibration`` (16 sentences) or
    ``calibration_paragraphs`` (12 paragraphs); no calibration input shares a sentence with an
    evaluation one."""
    text = resources.files("heterotron.sim").joinpath("data", f"{name}.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def shipped_sets() -> dict[str, list[str]]:
    """The evaluation sets: ``{"short": sentences, "long": paragraphs}``."""
    return {name: shipped_sentences(f) for name, f in EVAL_SETS.items()}


def shipped_calibration() -> dict[str, list[str]]:
    """The calibration inputs: ``{"short": calibration, "long": calibration_paragraphs}``
    (:func:`run_accuracy` and the tests calibrate on both together)."""
    return {name: shipped_sentences(f) for name, f in CALIBRATION_SETS.items()}


def token_lengths(sentences: list[str]) -> dict:
    """Tokens per input ([CLS] and [SEP] included) before truncation: min, mean, max, and how
    many inputs are longer than :data:`MAX_TOKENS` (they are evaluated truncated)."""
    n = [len(t.ids) for t in tokenize(sentences, max_len=1 << 20)]
    return {"min": min(n), "mean": float(np.mean(n)), "max": max(n),
            "truncated": sum(k > MAX_TOKENS for k in n)}


def meets_target(r: dict) -> bool:
    return all(r[k] >= v for k, v in TARGET.items())


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def evaluate(w: BertWeights, enc: bi.IntEncoder, toks: list[Tokenized],
             progress=None) -> dict:
    """Per-layer cosine of integer vs float hidden states and final sentence-embedding cosine."""
    n_layers = enc.layers
    layer_cos = np.zeros((len(toks), n_layers))
    final = np.zeros(len(toks))
    for j, t in enumerate(toks):
        fs = encode(w, t)
        ints = bi.run(enc, fs[0])
        for layer in range(n_layers):
            layer_cos[j, layer] = _cos(fs[layer + 1], ints[layer + 1])
        final[j] = float(mean_pool(fs[-1], t.mask) @ mean_pool(ints[-1], t.mask))
        if progress:
            progress(j + 1, len(toks))
    return {
        "layer_cosine_mean": layer_cos.mean(axis=0).tolist(),
        "layer_cosine_min": layer_cos.min(axis=0).tolist(),
        "final_cosine": final.tolist(),
        "final_cosine_mean": float(final.mean()),
        "final_cosine_min": float(final.min()),
    }


def tap_errors(w: BertWeights, enc: bi.IntEncoder, toks: list[Tokenized],
               progress=None) -> dict:
    """Per op and layer: ``1 - cosine`` of each integer tensor against the float one, each
    layer given the same input in both (so errors do not compound from layer to layer; within
    a layer each tensor carries the errors of the ops before it): which operation costs
    accuracy. Mean over the inputs. The last layer's ``out`` is its int8 copy, which nothing
    reads (the encoder's output is the wide residual copy)."""
    prec = enc.meta["precision"]
    sums = {n: np.zeros(enc.layers) for n in TAPS}
    for j, t in enumerate(toks):
        x = embed(w, t)
        for i in range(enc.layers):
            tf: dict = {}
            x_next = encoder_layer(w, i, x, tf)
            s_in, s_r = bi.input_scales(enc, i)
            ti: dict = {}
            bi.run_layer(enc, i, quantize_sym(x, s_in, prec["act_bits"]),
                         quantize_sym(x, s_r, prec["residual_bits"]), ti)
            sc = enc.meta["scales"][i]
            deq = dict(q=sc["q"], k=sc["k"], v=sc["v"],
                       scores=sc["q"] * sc["k"] / math.sqrt(enc.meta["head_dim"]),
                       probs=1 / 256, ctx=sc["c"], h1_in=sc["h1_in"],
                       h1=sc["h1"] * 2.0 ** enc.p(i, "h1.smooth"), f_in=sc["g"], f=sc["f"],
                       h2_in=sc["h2_in"], out=bi.output_scale(enc, i))
            for n in TAPS:
                sums[n][i] += 1 - _cos(tf[n], ti[n] * deq[n])
            x = x_next
        if progress:
            progress(j + 1, len(toks))
    return {n: (v / len(toks)).tolist() for n, v in sums.items()}


def _err(got: np.ndarray, want: np.ndarray) -> dict:
    d = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean())}


def op_errors(w: BertWeights, enc: bi.IntEncoder, seed: int = 0) -> dict:
    """Each nonlinear unit against float over its input range, at layer 0's scales."""
    rng = np.random.default_rng(seed)
    sc = enc.meta["scales"][0]
    out = {}
    # i-exp over [-10, 0] at the attention-score scale
    s = sc["q"] * sc["k"] / math.sqrt(enc.meta["head_dim"])
    k = exp_consts(s)
    xi = -np.arange(0, int(10 / s) + 1)
    out["i-exp"] = {"range": "[-10, 0]", "scale": s, **_err(i_exp(xi, k) * k.out_scale,
                                                              np.exp(xi * s))}
    # Softmax: random rows of 128 logits, std 3, output probabilities
    rows = rng.normal(0, 3, (256, 128))
    ri = np.round(rows / s).astype(np.int64)
    for variant in ("ibert", "divfree"):
        got = softmax_int(ri, k, variant=variant) / 256
        out[f"softmax ({variant})"] = {"range": "rows of 128 logits, std 3", "scale": s,
                                       **_err(got, softmax(ri * s))}
    # i-GELU over [-8, 8] (the FC1 output range) at the GELU input scale
    g = sc["g"]
    gk = gelu_consts(g)
    gi = np.arange(int(-8 / g), int(8 / g) + 1, max(1, int(1e-3 / g)))
    out["i-GELU"] = {"range": "[-8, 8]", "scale": g,
                     **_err(i_gelu(gi, gk) * gk.out_scale, gelu(gi * g))}
    # LayerNorm with layer 0's gamma/beta on rows like its input
    gamma = w.layer(0, "attention.output.LayerNorm.weight")
    beta = w.layer(0, "attention.output.LayerNorm.bias")
    hx = rng.normal(0, 1, (64, len(gamma))) * rng.uniform(0.2, 3, (64, 1))
    hi = quantize_sym(hx, sc["h1_in"], enc.meta["precision"]["ln_bits"])
    lk = layernorm_consts(gamma, beta, sc["h1r"], out_bits=16)
    out["LayerNorm"] = {"range": "rows of 384, std 0.2..3", "scale": sc["h1r"],
                        **_err(layernorm_int(hi, lk) * sc["h1r"],
                               layer_norm(hi * sc["h1_in"], gamma, beta, 1e-12))}
    # Requantisation: int32 -> int8 by a dyadic scale, against float rounding of z * r
    z = rng.integers(-(1 << 20), 1 << 20, 100_000)
    r = 1 / 8191.7
    m, e = requant_consts(r)
    out["requantize"] = {"range": "int21 -> int8, r = 1/8191.7", "scale": 1.0,
                         **_err(requantize(z, m, e, 8), np.clip(z * r, -128, 127))}
    return out


def _smoothing(enc: bi.IntEncoder) -> dict:
    """Per layer, the channels :attr:`~heterotron.sim.golden.bert_int.Precision.smooth_ratio` scaled
    down, ``{channel: shift}``, for the layer input and LayerNorm 1's output."""
    out = {}
    for i in range(enc.layers):
        out[f"layer{i + 1}"] = {
            name: {str(int(c)): int(enc.p(i, f"{name}.smooth")[c])
                   for c in np.flatnonzero(enc.p(i, f"{name}.smooth"))}
            for name in bi.SMOOTHED}
    return out


def run_accuracy(w: BertWeights, sets: dict[str, list[str]],
                 calibration: dict[str, list[str]], prec: bi.Precision, progress=None,
                 details: bool = True) -> tuple[dict, bi.IntEncoder]:
    """Build the integer encoder on every input of ``calibration`` (named groups, calibrated
    together) and evaluate it on each named set of ``sets``. ``progress(label, done, total)``
    is called as inputs are done. ``details``: also the per-op errors (tap table per set,
    nonlinear units); without, only the cosines."""
    t0 = time.monotonic()
    calib = [s for group in calibration.values() for s in group]
    enc = bi.build(w, tokenize(calib, MAX_TOKENS), prec)
    report: dict = {
        "model": "all-MiniLM-L6-v2",
        "precision": asdict(prec),
        "max_tokens": MAX_TOKENS,
        "calibration_sentences": len(calib),
        "calibration": {name: {"inputs": len(group), "tokens": token_lengths(group)}
                        for name, group in calibration.items()},
        "target": dict(TARGET),
        "sets": {},
    }

    def step(label: str):
        return (lambda done, total: progress(label, done, total)) if progress else None

    for name, sentences in sets.items():
        toks = tokenize(sentences, MAX_TOKENS)
        r = {"inputs": len(sentences), "tokens": token_lengths(sentences),
             **evaluate(w, enc, toks, step(f"{name}: evaluated"))}
        r["target_met"] = meets_target(r)
        if details:
            r["tap_error"] = tap_errors(w, enc, toks, step(f"{name}: per-op errors of"))
        report["sets"][name] = r
    report["target_met"] = all(r["target_met"] for r in report["sets"].values())
    if details:
        report["op_error"] = op_errors(w, enc)
        report["smoothing"] = _smoothing(enc)
    report["seconds"] = time.monotonic() - t0
    return report, enc

"""Integer-only BERT encoder built from a float model and calibration sentences.

Every scale is folded offline into integers (weights int8 per channel, biases int32, dyadic
``(m, e)`` pairs, i-exp/i-GELU/LayerNorm constants); :func:`run_layer` then uses integer
arithmetic only (the golden ops of :mod:`heterotron.sim.golden.intops`). The integer parameter
set is
what the hardware loads; :func:`save` / :func:`load` write it as a versioned ``.npz``.

Number formats per layer (scales from calibration, ``amax / (2^(bits-1) - 1)``, over short
sentences and paragraphs up to 128 tokens):

==============  ==========================  =====================================
tensor          format                      scale
==============  ==========================  =====================================
x (input)       int8                        S_x (LayerNorm output of the previous layer;
                                            outlier channels S_x 2^k, below)
x (residual)    int16 (``residual_bits``)   S_xr; the same LayerNorm, requantised wider
Q, K, V         int8                        S_q, S_k, S_v
scores          int32 (QK^T accumulator)    S_q S_k / sqrt(d), fed to i-exp as is
P               uint8                       1/256 (Softmax output)
context         int8                        S_c
h1_in, h2_in    int22 (``ln_bits``)         LayerNorm inputs: residual + requantised branch
FC1 -> GELU     int16 (``gelu_bits``)       S_g, fine enough for i-GELU's 2^14 shift
GELU out        int12 (``ffn_bits``)        S_f (FC2's input, bit-serial on a PiM tile)
==============  ==========================  =====================================

**Outlier channels** (``Precision.smooth_ratio``). The int8 copies of the LayerNorm outputs that
feed a matmul (the layer input, into Q/K/V; LayerNorm 1's, into FC1) have a few channels far
larger than the rest: in all-MiniLM-L6-v2 channel 99 of the [CLS] token reaches 28 where the
median channel stays below 2, and one per-tensor int8 scale set by it leaves every other value
a few levels. Such a channel ``c`` is scaled down by ``2^k_c`` at the LayerNorm's per-channel
requantiser (its shift ``e`` grows by ``k_c``; the host does the same for the embedding) and the
matmul's weight column ``c`` is multiplied by ``2^k_c`` before the weights are quantised: the
product is unchanged, no operation is added, and the int8 scale is set by the remaining
channels. ``k_c`` is the smallest that brings the channel's calibrated range within
``smooth_ratio`` times the median channel's. The shifts are kept as ``layer{i}.x.smooth`` and
``layer{i}.h1.smooth`` (already folded in; the host needs ``layer0.x.smooth`` to quantise the
embedding, :func:`quantize_input`). The residual copies are not scaled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heterotron.sim.golden.bert_float import BertWeights, Tokenized, embed, encoder_layer
from heterotron.sim.golden.intops import (
    ExpConsts,
    GeluConsts,
    LayerNormConsts,
    attention_int,
    exp_consts,
    gelu_consts,
    i_gelu,
    layernorm_consts,
    layernorm_core,
    linear_int,
    quantize_per_channel,
    quantize_sym,
    requant_consts,
    softmax_int,
)
from heterotron.sim.golden.requantizer import requantize

__all__ = ["Precision", "IntEncoder", "calibrate", "smoothing_shifts", "build", "input_scales",
           "output_scale", "quantize_input", "run_layer", "run", "save", "load",
           "FORMAT", "SMOOTHED"]

FORMAT = "heterotron-int-encoder/2"  # 2: per-channel smoothing shifts
I64 = np.int64


@dataclass(frozen=True)
class Precision:
    """The precision choices of the integer pipeline (see the module table)."""

    act_bits: int = 8
    residual_bits: int = 16
    ln_bits: int = 22
    gelu_bits: int = 16
    ffn_bits: int = 12  # GELU output = FC2 input (bit-serial on a PiM tile: bits cost cycles)
    softmax: str = "ibert"  # or "divfree"
    clip_percentile: float = 100.0  # activation calibration: 100 = max |x|
    # outlier channels of the int8 LayerNorm outputs (module doc); 0 = one scale for all
    smooth_ratio: float = 3.0

    _RANGES = {"act_bits": (4, 8), "residual_bits": (8, 24), "ln_bits": (16, 26),
               "gelu_bits": (12, 24), "ffn_bits": (4, 16)}

    def __post_init__(self):
        # int64 golden arithmetic and the hardware's widths bound these ranges.
        for name, (lo, hi) in self._RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
        if self.softmax not in ("ibert", "divfree"):
            raise ValueError(f"softmax must be 'ibert' or 'divfree', not {self.softmax!r}")
        if not 50.0 <= self.clip_percentile <= 100.0:
            raise ValueError(f"clip_percentile must be in [50, 100], not {self.clip_percentile}")
        r = self.smooth_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (
                r == 0 or 1 <= r <= 1000):
            raise ValueError(f"smooth_ratio must be 0 (off) or in [1, 1000], not {r!r}")


def _scale(amax: float, bits: int) -> float:
    return max(float(amax), 1e-8) / ((1 << (bits - 1)) - 1)


@dataclass
class IntEncoder:
    """The integer parameter set: a flat dict of integer arrays plus metadata."""

    params: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def p(self, i: int, name: str) -> np.ndarray:
        return self.params[f"layer{i}.{name}"]

    @property
    def layers(self) -> int:
        return int(self.meta["layers"])


#: Tensors whose int8 copy may have outlier channels scaled down (module doc): each layer's
#: input (into Q/K/V) and LayerNorm 1's output (into FC1).
SMOOTHED = ("x", "h1")


def smoothing_shifts(channel_max: np.ndarray, ratio: float) -> np.ndarray:
    """Per channel the smallest ``k >= 0`` with ``channel_max / 2^k <= ratio * median``
    (all 0 when ``ratio`` is 0)."""
    channel_max = np.asarray(channel_max, dtype=np.float64)
    if ratio == 0:
        return np.zeros(channel_max.shape, dtype=I64)
    limit = ratio * max(float(np.median(channel_max)), 1e-30)
    k = np.ceil(np.log2(np.maximum(channel_max, 1e-30) / limit))
    return np.maximum(k, 0).astype(I64)


def calibrate(w: BertWeights, toks: list[Tokenized], percentile: float = 100.0,
              smooth_ratio: float = 0.0) -> tuple[list[dict], list[dict], list[dict]]:
    """Per layer and tensor, the calibration range: ``(max |x|, int8 range, shifts)``.

    The int8 range is the ``percentile`` of ``|x|`` (``max |x|`` at 100); for the tensors of
    :data:`SMOOTHED` it is taken after each channel is divided by ``2^shift``, ``shifts[i][name]``
    from :func:`smoothing_shifts` on the channels' ``max |x|`` (``"x"`` is the layer's input: the
    embedding for layer 0, the previous layer's output after)."""
    stats: list[dict[str, list[np.ndarray]]] = [dict() for _ in range(w.config.layers)]
    for t in toks:
        x = embed(w, t)
        for i in range(w.config.layers):
            taps: dict = {}
            x = encoder_layer(w, i, x, taps)
            for k, v in taps.items():
                v = np.abs(v)
                stats[i].setdefault(k, []).append(v if k in SMOOTHED else v.ravel())
    amax, clip, shifts = [], [], []
    for s in stats:
        flat, sh = {}, {}
        for k, v in s.items():
            if k in SMOOTHED:
                v = np.concatenate(v)  # [tokens, channels]
                sh[k] = smoothing_shifts(v.max(axis=0), smooth_ratio)
                flat[k] = (v.ravel(), (v / 2.0 ** sh[k]).ravel())
            else:
                v = np.concatenate(v)
                flat[k] = (v, v)
        amax.append({k: float(np.max(v)) for k, (v, _) in flat.items()})
        clip.append({k: float(np.percentile(v, percentile)) if percentile < 100
                     else float(np.max(v)) for k, (_, v) in flat.items()})
        shifts.append(sh)
    return amax, clip, shifts


def _layernorm(params: dict, w: BertWeights, i: int, prefix: str, ln_name: str,
               s_out: float, s_res: float, smooth: np.ndarray | None = None) -> None:
    """LayerNorm constants, and the two requantisations of its result: to ``s_out`` for the
    next matmul (channel ``c`` to ``s_out * 2^smooth[c]``), to ``s_res`` for the residual
    path."""
    gamma, beta = w.layer(i, ln_name + ".weight"), w.layer(i, ln_name + ".bias")
    k = layernorm_consts(gamma, beta, s_out)
    k_res = layernorm_consts(gamma, beta, s_res)
    prefix = f"layer{i}.{prefix}"
    params[prefix + ".shift"] = np.array(k.shift, dtype=I64)
    params[prefix + ".bias"] = k.bias
    params[prefix + ".sign"] = k.sign
    out_e = k.e if smooth is None else k.e + smooth
    if np.any(out_e > 63):
        raise ValueError(f"{prefix}: a smoothing shift takes the requantiser's shift past 63")
    params[prefix + ".out_m"], params[prefix + ".out_e"] = k.m, out_e
    params[prefix + ".res_m"], params[prefix + ".res_e"] = k_res.m, k_res.e


def _run_layernorm(enc: IntEncoder, i: int, prefix: str, x: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Integer LayerNorm of ``x``: the matmul copy (``act_bits``) and the residual copy."""
    prec = enc.meta["precision"]
    p = lambda name: enc.p(i, f"{prefix}.{name}")  # noqa: E731
    core = layernorm_core(x, LayerNormConsts(int(p("shift")), p("bias"), p("sign"),
                                             p("out_m"), p("out_e"), prec["act_bits"]))
    return (requantize(core, p("out_m"), p("out_e"), prec["act_bits"]),
            requantize(core, p("res_m"), p("res_e"), prec["residual_bits"]))


def _linear(params: dict, w: BertWeights, i: int, key: str, w_name: str, in_scale: float,
            out_scale: float, smooth: np.ndarray | None = None) -> None:
    """int8 per-channel weights, int32 bias at ``in_scale * S_w``, and the per-channel
    requantisation of the accumulator to ``out_scale``. ``smooth``: the input's per-channel
    shifts (input channel ``c`` at ``in_scale * 2^smooth[c]``), folded into the weights'
    columns before they are quantised."""
    weight = w.layer(i, w_name + ".weight")
    if smooth is not None and np.any(smooth):
        weight = weight * np.exp2(smooth).astype(weight.dtype)[None, :]  # exact: powers of 2
    wi, ws = quantize_per_channel(weight)
    prefix = f"layer{i}.{key}"
    params[prefix + ".w"] = wi
    params[prefix + ".b"] = np.round(w.layer(i, w_name + ".bias") / (in_scale * ws)).astype(I64)
    params[prefix + ".m"], params[prefix + ".e"] = requant_consts(in_scale * ws / out_scale)


def build(w: BertWeights, calib_toks: list[Tokenized], prec: Precision = Precision()
          ) -> IntEncoder:
    """Fold a float encoder and its calibration ranges into integer constants."""
    c = w.config
    # int8 matmul inputs use the (possibly clipped, smoothed) range; wide tensors never clip.
    full, clipped, shifts = calibrate(w, calib_toks, prec.clip_percentile, prec.smooth_ratio)
    params: dict[str, np.ndarray] = {}
    scales: list[dict] = []
    a8 = prec.act_bits
    # Layer 0's input is the embedding LayerNorm, quantised on the host (quantize_input).
    s_x, s_xr = _scale(clipped[0]["x"], a8), _scale(full[0]["x"], prec.residual_bits)
    first = (s_x, s_xr)
    for i in range(c.layers):
        r, rf, sh = clipped[i], full[i], shifts[i]
        P = f"layer{i}."
        s = {"x": s_x, "xr": s_xr}
        params[P + "x.smooth"], params[P + "h1.smooth"] = sh["x"], sh["h1"]

        for key, name in (("q", "query"), ("k", "key"), ("v", "value")):
            s[key] = _scale(r[key], a8)
            _linear(params, w, i, key, "attention.self." + name, s_x, s[key], sh["x"])
        s_scores = s["q"] * s["k"] / math.sqrt(c.head_dim)
        ek = exp_consts(s_scores)
        params[P + "exp"] = np.array([ek.x0, ek.b, ek.c], dtype=I64)
        s["c"] = _scale(r["ctx"], a8)
        params[P + "ctx.m"], params[P + "ctx.e"] = requant_consts(s["v"] / 256 / s["c"])
        # attention output + residual -> LayerNorm input
        s["h1_in"] = _scale(rf["h1_in"], prec.ln_bits)
        _linear(params, w, i, "o", "attention.output.dense", s["c"], s["h1_in"])
        params[P + "o.my"], params[P + "o.ey"] = requant_consts(s_xr / s["h1_in"])
        # LayerNorm 1: int8 for FC1 (outlier channels scaled down), wide for the residual
        s["h1"], s["h1r"] = _scale(r["h1"], a8), _scale(rf["h1"], prec.residual_bits)
        _layernorm(params, w, i, "ln1", "attention.output.LayerNorm", s["h1"], s["h1r"],
                   sh["h1"])
        # FC1 -> GELU (wide input) -> int8
        s["g"] = _scale(rf["f_in"], prec.gelu_bits)
        _linear(params, w, i, "fc1", "intermediate.dense", s["h1"], s["g"], sh["h1"])
        gk = gelu_consts(s["g"])
        params[P + "gelu"] = np.array([gk.b, gk.c, gk.one], dtype=I64)
        s["f"] = _scale(rf["f"], prec.ffn_bits)  # GELU's outliers matter: never clipped
        params[P + "gelu.m"], params[P + "gelu.e"] = requant_consts(gk.out_scale / s["f"])
        # FC2 + residual -> LayerNorm 2
        s["h2_in"] = _scale(rf["h2_in"], prec.ln_bits)
        _linear(params, w, i, "fc2", "output.dense", s["f"], s["h2_in"])
        params[P + "fc2.my"], params[P + "fc2.ey"] = requant_consts(s["h1r"] / s["h2_in"])
        # LayerNorm 2: int8 for the next layer's Q/K/V (its input, smoothed), wide residual
        last = i + 1 == c.layers
        s_x = _scale(r["out"] if last else clipped[i + 1]["x"], a8)
        s_xr = _scale(rf["out"], prec.residual_bits)
        _layernorm(params, w, i, "ln2", "output.LayerNorm", s_x, s_xr,
                   None if last else shifts[i + 1]["x"])
        s["out"], s["outr"] = s_x, s_xr
        scales.append(s)
    meta = {"format": FORMAT, "model": "all-MiniLM-L6-v2", "layers": c.layers,
            "hidden": c.hidden, "heads": c.heads, "head_dim": c.head_dim,
            "precision": prec.__dict__, "input_scale": first[0], "input_residual_scale": first[1],
            "scales": scales, "calibration_sentences": len(calib_toks),
            "calibration_tokens": int(sum(len(t.ids) for t in calib_toks))}
    return IntEncoder(params, meta)


def input_scales(enc: IntEncoder, i: int) -> tuple[np.ndarray, float]:
    """The scales of layer ``i``'s input: per channel for the int8 copy (``S_x`` times its
    smoothing ``2^shift``), and the residual copy's."""
    sc = enc.meta["scales"][i]
    return sc["x"] * 2.0 ** enc.p(i, "x.smooth"), sc["xr"]


def output_scale(enc: IntEncoder, i: int) -> np.ndarray:
    """Per channel, the scale of layer ``i``'s int8 output (the next layer's input)."""
    if i + 1 < enc.layers:
        return input_scales(enc, i + 1)[0]
    return np.full(enc.meta["hidden"], enc.meta["scales"][i]["out"])


def quantize_input(enc: IntEncoder, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Host side: the embedding LayerNorm output as int8 (matmuls; channel ``c`` at
    ``input_scale * 2^layer0.x.smooth[c]``) and int16 (residual)."""
    prec = enc.meta["precision"]
    return (quantize_sym(x, input_scales(enc, 0)[0], prec["act_bits"]),
            quantize_sym(x, enc.meta["input_residual_scale"], prec["residual_bits"]))


def run_layer(enc: IntEncoder, i: int, x: np.ndarray, xr: np.ndarray,
              taps: dict | None = None, matmul=None) -> tuple[np.ndarray, np.ndarray]:
    """One encoder layer, integers only: ``x`` int8 [T, H], ``xr`` its wide residual copy.

    ``matmul(name, x, w)``, if given, computes the static-weight products ``x @ w.T`` of the
    projections and the FFN (``name`` is ``layer{i}.q`` ... ``layer{i}.fc2``) in place of the
    exact integer product: a processing-in-memory tile model, for instance."""
    prec = enc.meta["precision"]
    a8, lnb = prec["act_bits"], prec["ln_bits"]
    T = x.shape[0]
    nh, hd = enc.meta["heads"], enc.meta["head_dim"]
    p = lambda name: enc.p(i, name)  # noqa: E731

    def proj(key, v, bits, **res):
        if matmul is None:
            acc = linear_int(v, p(key + ".w"), p(key + ".b"))
        else:
            acc = matmul(f"layer{i}.{key}", v, p(key + ".w")) + p(key + ".b")
        return requantize(acc, p(key + ".m"), p(key + ".e"), bits, **res)

    q, k, v = (proj(key, x, a8) for key in ("q", "k", "v"))
    x0, b, c = (int(t) for t in p("exp"))
    exp = ExpConsts(x0, b, c, 0.0)
    ctx = attention_int(q, k, v, nh, exp, p("ctx.m"), p("ctx.e"), a8, prec["softmax"])
    h1_in = proj("o", ctx, lnb, y=xr, m_y=p("o.my"), e_y=p("o.ey"))
    h1, h1r = _run_layernorm(enc, i, "ln1", h1_in)
    g_in = proj("fc1", h1, prec["gelu_bits"])
    gb, gc, gone = (int(t) for t in p("gelu"))
    f = requantize(i_gelu(g_in, GeluConsts(gb, gc, gone, 0.0)), p("gelu.m"), p("gelu.e"),
                   prec["ffn_bits"])
    h2_in = proj("fc2", f, lnb, y=h1r, m_y=p("fc2.my"), e_y=p("fc2.ey"))
    out, outr = _run_layernorm(enc, i, "ln2", h2_in)
    if taps is not None:
        qh, kh = (a.reshape(T, nh, hd).transpose(1, 0, 2) for a in (q, k))
        scores = qh @ kh.transpose(0, 2, 1)
        taps.update(q=q, k=k, v=v, scores=scores,
                    probs=softmax_int(scores, exp, variant=prec["softmax"]), ctx=ctx,
                    h1_in=h1_in, h1=h1, f_in=g_in, f=f, h2_in=h2_in, out=out)
    return out, outr


def run(enc: IntEncoder, x_float_embed: np.ndarray, matmul=None) -> list[np.ndarray]:
    """Hidden states (dequantised with the wide residual copy): input and each layer's output.
    ``matmul``: as in :func:`run_layer`."""
    x, xr = quantize_input(enc, x_float_embed)
    states = [xr * enc.meta["input_residual_scale"]]
    for i in range(enc.layers):
        x, xr = run_layer(enc, i, x, xr, matmul=matmul)
        states.append(xr * enc.meta["scales"][i]["outr"])
    return states


def save(enc: IntEncoder, path: str | Path) -> Path:
    """Write the integer parameter set as ``.npz`` (integer arrays + a JSON metadata entry)."""
    path = Path(path)
    arrays = {k: np.asarray(v, dtype=I64) for k, v in enc.params.items()}
    np.savez_compressed(path, __meta__=np.array(json.dumps(enc.meta)), **arrays)
    return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")


def load(path: str | Path) -> IntEncoder:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["__meta__"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        params = {k: f[k] for k in f.files if k != "__meta__"}
    return IntEncoder(params, meta)

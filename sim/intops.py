"""Integer-only golden operations of the encoder (I-BERT's algorithms, hardware-friendly form).

Each function takes integer arrays and integer constants only; the constants are derived offline
from real scales by the ``*_consts`` helpers (the only place floats appear). Everything is exact
integer arithmetic in int64 (bounds are noted where they matter). ``docs/number-formats.md``
explains every operation; the RTL units match these functions bit for bit.

Rounding conventions, used throughout: ``floor`` is floor (towards -infinity, NumPy's ``//`` and
``>>``); ``round_shift`` is round half up (see :mod:`heterotron.sim.requantizer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .requantizer import dyadic, requantize

__all__ = [
    "quantize_sym",
    "quantize_per_channel",
    "linear_int",
    "ExpConsts",
    "exp_consts",
    "i_exp",
    "softmax_int",
    "reciprocal_divfree",
    "attention_int",
    "GeluConsts",
    "gelu_consts",
    "i_gelu",
    "isqrt",
    "LayerNormConsts",
    "layernorm_consts",
    "layernorm_core",
    "layernorm_int",
    "requant_consts",
]

I64 = np.int64

# -- quantisation and linear --------------------------------------------------------------------


def quantize_sym(x: np.ndarray, scale: float, bits: int = 8) -> np.ndarray:
    """Symmetric quantisation: ``clip(round_half_even(x / scale))`` to ``bits`` signed bits."""
    lim = (1 << (bits - 1)) - 1
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) / scale), -lim, lim).astype(I64)


def quantize_per_channel(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (row) symmetric quantisation of a weight matrix ``[out, in]``.
    Returns ``(w_int, scales)`` with ``w ~= w_int * scales[:, None]``."""
    lim = (1 << (bits - 1)) - 1
    amax = np.max(np.abs(w), axis=1)
    scales = np.where(amax > 0, amax / lim, 1.0).astype(np.float64)
    return quantize_sym(w / scales[:, None], 1.0, bits), scales


def linear_int(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w.T + b``: int8 x int8 -> int32 accumulate (exact in int64), int32 bias."""
    acc = np.asarray(x, dtype=I64) @ np.asarray(w, dtype=I64).T
    if b is not None:
        acc = acc + np.asarray(b, dtype=I64)
    return acc


def requant_consts(ratio, m_bits: int = 31, max_shift: int = 63):
    """Per-channel (or scalar) dyadic constants ``(m, e)`` for ``requantize``."""
    r = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    pairs = [dyadic(float(v), m_bits, max_shift) for v in r]
    m = np.array([p[0] for p in pairs], dtype=I64)
    e = np.array([p[1] for p in pairs], dtype=I64)
    if np.ndim(ratio) == 0:
        return m[0], e[0]
    return m, e


# -- i-exp and Softmax ----------------------------------------------------------------------------

#: exp(r) ~ A * (r + B)^2 + C on r in (-ln 2, 0] (I-BERT's second-order fit).
EXP_A, EXP_B, EXP_C = 0.35815147, 0.96963238 / 0.35815147, 1.0 / 0.35815147
LN2_X0 = -0.6931
EXP_N = 30  # clamp: at most 30 halvings


@dataclass(frozen=True)
class ExpConsts:
    """Integer constants of i-exp for an input scale ``S``: ``x0 = floor(-0.6931 / S)``,
    ``b = floor(B / S)``, ``c = floor(C / S^2)``; the output scale is ``A * S^2``."""

    x0: int
    b: int
    c: int
    out_scale: float


def exp_consts(scale: float) -> ExpConsts:
    return ExpConsts(math.floor(LN2_X0 / scale), math.floor(EXP_B / scale),
                     math.floor(EXP_C / scale**2), EXP_A * scale**2)


def i_exp(x: np.ndarray, k: ExpConsts) -> np.ndarray:
    """Integer exp of ``x <= 0`` (scale S): ``x = q * x0 + r``, ``z = (r + b) * r + c``,
    ``out = z >> q``, at scale ``A * S^2``. Inputs below ``30 * x0`` are clamped there."""
    x = np.maximum(np.asarray(x, dtype=I64), EXP_N * k.x0)
    q = x // k.x0  # x0 < 0, x <= 0: q in [0, 30]
    r = x - k.x0 * q  # in (x0, 0]
    z = (r + k.b) * r + k.c
    return np.maximum(z >> q, 0)


def reciprocal_divfree(s: np.ndarray, frac_bits: int = 30, iters: int = 3) -> np.ndarray:
    """``~floor(2^32 / s)`` for ``s >= 1`` without a divider.

    Normalise ``s = m * 2^k`` with ``m`` in [0.5, 1) (leading-one detection), then Newton-Raphson
    on ``1/m`` in fixed point with ``frac_bits`` fraction bits, starting from
    ``48/17 - 32/17 m``; ``iters`` multiply-subtract steps, each rounded down. Three steps give
    ~``2^-frac_bits`` relative error; the result never exceeds ``floor(2^32 / s)`` by more than
    a few LSB (measured in the tests).
    """
    s = np.asarray(s, dtype=I64)
    if np.any(s < 1):
        raise ValueError("reciprocal of a non-positive sum")
    F = frac_bits
    k = np.zeros_like(s)  # bit length of s: the leading-one detector
    for b in range(63):
        k += (s >> b) > 0
    m = np.where(k >= F, s >> np.maximum(k - F, 0), s << np.maximum(F - k, 0))  # m * 2^F
    one = I64(1) << F
    y = I64(round(48 / 17 * 2**F)) - ((m * I64(round(32 / 17 * 2**15))) >> 15)
    for _ in range(iters):
        t = (2 * one) - ((m * y) >> F)
        y = (y * t) >> F
    # 2^32 / s = (1/m) * 2^(32 - k): y is 1/m at 2^F
    shift = F - 32 + k
    return np.where(shift >= 0, y >> np.maximum(shift, 0), y << np.maximum(-shift, 0))


def softmax_int(x: np.ndarray, k: ExpConsts, *, variant: str = "ibert",
                out_bits: int = 8, mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise integer Softmax over the last axis; output unsigned ``out_bits`` at scale
    ``1 / 2^out_bits``.

    ``x`` (scale S) minus its row max -> i-exp -> row sum -> reciprocal ``floor(2^32 / sum)``
    (``ibert``) or the division-free Newton reciprocal (``divfree``) -> ``e * recip >> (32 -
    out_bits)``. A row whose max element takes all the mass would give ``2^out_bits``: it
    **saturates** to ``2^out_bits - 1`` so the output stays ``out_bits`` wide. ``mask`` (bool,
    True = keep) removes elements: they get 0 and do not enter the sum or the max.
    """
    x = np.asarray(x, dtype=I64)
    if mask is not None:
        mask = np.broadcast_to(mask, x.shape)
        floor_val = np.iinfo(np.int32).min
        x = np.where(mask, x, floor_val)
    xmax = x.max(axis=-1, keepdims=True)
    e = i_exp(x - xmax, k)
    if mask is not None:
        e = np.where(mask, e, 0)
    total = e.sum(axis=-1, keepdims=True)
    if variant == "ibert":
        recip = (I64(1) << 32) // total
    elif variant == "divfree":
        recip = reciprocal_divfree(total)
    else:
        raise ValueError(f"variant must be 'ibert' or 'divfree', not {variant!r}")
    out = (e * recip) >> (32 - out_bits)
    return np.minimum(out, (1 << out_bits) - 1)


def attention_int(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, exp: ExpConsts,
                  ctx_m, ctx_e, out_bits: int = 8, variant: str = "ibert") -> np.ndarray:
    """Multi-head attention on int8 ``q, k, v`` [T, H]: per head ``S = Q K^T`` (int32
    accumulators; ``1/sqrt(d)`` lives in the scale ``exp`` was made for, no operation),
    ``P = softmax_int(S)`` (uint8, 1/256), ``C = P V`` (int32 at ``S_v / 256``), heads
    concatenated and requantised by ``(ctx_m, ctx_e)`` to ``out_bits``."""
    T, H = q.shape
    hd = H // heads
    qh, kh, vh = (np.asarray(a, dtype=I64).reshape(T, heads, hd).transpose(1, 0, 2)
                  for a in (q, k, v))
    probs = softmax_int(qh @ kh.transpose(0, 2, 1), exp, variant=variant)
    ctx = (probs @ vh).transpose(1, 0, 2).reshape(T, H)
    return requantize(ctx, ctx_m, ctx_e, out_bits)


# -- i-GELU ---------------------------------------------------------------------------------------

GELU_K = 1.4142
GELU_A, GELU_B = -0.2888, -1.769
GELU_SHIFT = 14


@dataclass(frozen=True)
class GeluConsts:
    """i-GELU constants for input scale ``S``: erf's input scale is ``S/k``;
    ``b = floor(B / (S/k))``, ``c = floor(1 / (A (S/k)^2))``, ``one = floor(1 / S_erf)`` with
    ``S_erf = A (S/k)^2 2^14``; the output scale is ``S * S_erf / 2``."""

    b: int
    c: int
    one: int
    out_scale: float  # positive: i_gelu negates once to undo A < 0


def gelu_consts(scale: float) -> GeluConsts:
    s_in = scale / GELU_K
    s_erf = s_in**2 * GELU_A * 2**GELU_SHIFT
    return GeluConsts(math.floor(GELU_B / s_in), math.floor(1.0 / (GELU_A * s_in**2)),
                      math.floor(1.0 / s_erf), -scale * s_erf / 2)


def i_gelu(x: np.ndarray, k: GeluConsts) -> np.ndarray:
    """I-BERT's integer GELU: ``erf ~ sign(x) ((min(|x|, -b) + b)^2 + c)``, floored by ``2^14``,
    ``out = -(x * (erf + one))``. Because ``A < 0``, ``c``, ``one`` and the erf scale are
    negative; the final negation makes the output scale (``out_scale``) positive. Exact in int64
    for ``|x| < 2^24`` at the scales it is meant for (1e-3 or finer); an object array of Python
    integers stays one, and is exact for any constants."""
    x = np.asarray(x)
    if x.dtype != object:
        x = x.astype(I64)
    sign = np.sign(x)
    a = np.minimum(np.abs(x), -k.b)
    y = sign * ((a + k.b) ** 2 + k.c)
    # I-BERT: floor(y / 2^14) on the signed value
    y = y // (1 << GELU_SHIFT)
    return -(x * (y + k.one))


# -- LayerNorm ------------------------------------------------------------------------------


def isqrt(n: np.ndarray) -> np.ndarray:
    """Exact ``floor(sqrt(n))`` for ``0 <= n < 2^62``, digit by digit (two bits of ``n`` per
    step, shifts, subtracts and compares only; no divider)."""
    n = np.asarray(n, dtype=I64)
    if np.any(n < 0) or np.any(n >= (1 << 62)):
        raise ValueError("isqrt needs 0 <= n < 2^62")
    rem = n.copy()
    root = np.zeros_like(n)
    bit = I64(1) << 60
    for _ in range(31):
        trial = root + bit
        take = rem >= trial
        rem = np.where(take, rem - trial, rem)
        root = np.where(take, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root


#: Bits of LayerNorm's reciprocal ``floor(2^LN_RECIP_BITS / std)``.
LN_RECIP_BITS = 47


@dataclass(frozen=True)
class LayerNormConsts:
    """Integer LayerNorm constants: pre-shift of deviations, per-channel output requantisation
    ``(m, e)`` folding ``gamma * sqrt(D) / 2^30 / S_out``, and the per-channel integer bias
    ``floor(beta / gamma / (sqrt(D) / 2^30))``; ``sign`` is the sign of gamma."""

    shift: int
    bias: np.ndarray
    sign: np.ndarray
    m: np.ndarray
    e: np.ndarray
    out_bits: int


def layernorm_consts(gamma: np.ndarray, beta: np.ndarray, out_scale: float, *,
                     shift: int = 2, out_bits: int = 8) -> LayerNormConsts:
    d = len(gamma)
    norm_scale = math.sqrt(d) / 2**30
    # |gamma| is clamped at 1e-3 of its largest value: a (near-)zero gamma would need a shift
    # no requantiser has, and its channel's output is then the bias within 1e-3 of the rest.
    gamma = np.asarray(gamma, dtype=np.float64)
    floor_g = 1e-3 * max(float(np.max(np.abs(gamma))), 1e-30)
    g = np.where(gamma < 0, -1.0, 1.0) * np.maximum(np.abs(gamma), floor_g)
    bias = np.floor(beta / g / norm_scale).astype(I64)
    m, e = requant_consts(np.abs(g) * norm_scale / out_scale)
    return LayerNormConsts(shift, bias, np.where(g < 0, -1, 1).astype(I64), m, e, out_bits)


def layernorm_core(x: np.ndarray, k: LayerNormConsts) -> np.ndarray:
    """Integer LayerNorm over the last axis (I-BERT), before the output requantisation:
    ``mean = round(sum / D)`` (half up), ``dev = x - mean``, ``var = sum((dev >> shift)^2)``,
    ``std = isqrt(var) << shift``, ``y = (dev * floor(2^47 / std)) >> 17`` (scale
    ``sqrt(D) / 2^30``), ``+ bias``, times the sign of gamma. The result's scale per channel is
    ``|gamma| sqrt(D) / 2^30``.

    The reciprocal has 47 bits where I-BERT's ``floor(2^31 / std)`` has 31: with a 22-bit input
    ``std`` reaches 2^23 and I-BERT's factor keeps only ~8 significant bits (0.3% error). Since
    ``|dev| <= std`` (up to the floors), ``dev * factor`` stays below ~2^47.
    Bounds: with ``|x| < 2^21`` and ``D <= 1024``, ``var < 2^52``.
    A constant row (``std = 0``) gives ``y = 0``, i.e. the output is the bias alone.
    """
    x = np.asarray(x, dtype=I64)
    d = x.shape[-1]
    total = x.sum(axis=-1, keepdims=True)
    mean = (2 * total + d) // (2 * d)  # round half up of total / d
    dev = x - mean
    ds = dev >> k.shift
    var = (ds * ds).sum(axis=-1, keepdims=True)
    std = isqrt(var) << k.shift
    factor = np.where(std > 0, (I64(1) << LN_RECIP_BITS) // np.maximum(std, 1), 0)
    y = (dev * factor) >> (LN_RECIP_BITS - 30)
    return (y + k.bias) * k.sign


def layernorm_int(x: np.ndarray, k: LayerNormConsts) -> np.ndarray:
    """:func:`layernorm_core`, then the per-channel requantisation to ``out_bits``."""
    return requantize(layernorm_core(x, k), k.m, k.e, k.out_bits)

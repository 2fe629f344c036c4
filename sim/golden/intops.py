"""Integer-only golden operations of the encoder (I-BERT's algorithms, hardware-friendly form).

Each function takes integer arrays and integer constants only; the constants are derived offline
from real scales by the ``*_consts`` helpers (the only place floats appear). Everything is exact
integer arithmetic in int64 (bounds are noted where they matter). ``docs/number-formats.md``
explains every operation; the RTL units match these functions bit for bit.

Rounding conventions, used throughout: ``floor`` is floor (towards -infinity, NumPy's ``//`` and
``>>``); ``round_shift`` is round half up (see :mod:`heterotron.sim.golden.requantizer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from heterotron.hdl.contract.numerics import (  # noqa: F401 (re-exported)
    EXP_A,
    EXP_B,
    EXP_C,
    EXP_MAX_WIDTH,
    EXP_MIN_BITS,
    EXP_N,
    GELU_A,
    GELU_B,
    GELU_K,
    GELU_MAX_SCALE,
    GELU_MIN_ONE_BITS,
    GELU_SHIFT,
    LN2_X0,
    RECIP_NORM,
    exp_consts_problem,
    exp_field_bits,
    gelu_consts_problem,
    gelu_field_bits,
)
from heterotron.sim.golden.requantizer import _as_int_array, dyadic, requantize

__all__ = [
    "quantize_sym",
    "quantize_per_channel",
    "linear_int",
    "ExpConsts",
    "EXP_MAX_WIDTH",
    "EXP_MIN_BITS",
    "SOFTMAX_FIT_ERROR",
    "SOFTMAX_X0_FACTOR",
    "softmax_error_bound",
    "RECIP_NORM",
    "exp_consts",
    "exp_consts_problem",
    "exp_field_bits",
    "check_exp_consts",
    "exp_width_for",
    "i_exp",
    "bit_length",
    "recip_shift",
    "reciprocal_ibert",
    "reciprocal_divfree",
    "softmax_int",
    "attention_int",
    "GeluConsts",
    "GELU_MIN_ONE_BITS",
    "GELU_MAX_SCALE",
    "GELU_ERROR_BOUND",
    "gelu_consts",
    "gelu_consts_problem",
    "gelu_field_bits",
    "i_gelu",
    "isqrt",
    "LayerNormConsts",
    "layernorm_shift",
    "LN_VAR_BITS",
    "LN_ERROR_ABS",
    "LN_ERROR_REL",
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
    """``x @ w.T + b``: int8 x int8 -> int32 accumulate, int32 bias; exact. When no partial sum
    can reach 2^53 (``K max|x| max|w| < 2^53``: every matmul of the encoder, whose 12-bit
    inputs, 8-bit weights and K = 1536 stay below 2^29) the product is taken in float64 by
    BLAS, where every partial sum is an integer held exactly whatever the summation order
    (about 5x faster than int64); otherwise in int64."""
    x, w = _int_input(x, "linear input"), _int_input(w, "linear weights")
    bound = int(np.abs(x).max(initial=0)) * int(np.abs(w).max(initial=0)) * x.shape[-1]
    if bound < 1 << 53:
        acc = (x.astype(np.float64) @ w.astype(np.float64).T).astype(I64)
    else:
        acc = x @ w.T
    if b is not None:
        acc = acc + np.asarray(b, dtype=I64)
    return acc


#: ``requant_consts`` keeps at least this many mantissa bits (a relative error of the folded
#: scale below ``2^-8``) and refuses a ratio it cannot fold that well.
REQUANT_MIN_BITS = 8


def requant_consts(ratio, m_bits: int = 31, max_shift: int = 63):
    """Per-channel (or scalar) dyadic constants ``(m, e)`` for ``requantize``: ratios from
    ``2^-(max_shift - 7)`` to below ``2^m_bits - 0.5``; outside that :class:`ValueError`
    (:func:`~heterotron.sim.golden.requantizer.dyadic` with ``min_bits = 8``)."""
    r = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    pairs = [dyadic(float(v), m_bits, max_shift, REQUANT_MIN_BITS) for v in r]
    m = np.array([p[0] for p in pairs], dtype=I64)
    e = np.array([p[1] for p in pairs], dtype=I64)
    if np.ndim(ratio) == 0:
        return m[0], e[0]
    return m, e


# -- i-exp and Softmax ----------------------------------------------------------------------------

#: Softmax's documented error against float, for constants from :func:`exp_consts` and rows
#: of ``L`` elements up to 4096 (:func:`softmax_error_bound`):
#: ``|out / 2^out_bits - p| <= 2^-out_bits + FIT + X0 * delta + L / c``. ``2^-out_bits``: the
#: output's rounding and its saturation at ``p = 1``; ``FIT``: I-BERT's second-order fit;
#: ``delta = |x0 S + ln 2| <= S``: ``x0``'s floor, which errs by ``q delta`` relative on an
#: element ``q`` halvings down and adds up over a row's tail; ``L / c``: the floors of the
#: exps, one LSB of ``c`` each. Measured over random, peaked, uniform and narrow rows and
#: "one peak and L - 1 equal scores" rows at every offset (``tests/test_intops.py``).
SOFTMAX_FIT_ERROR, SOFTMAX_X0_FACTOR = 0.001, 3.0
@dataclass(frozen=True)
class ExpConsts:
    """Integer constants of i-exp for an input scale ``S``: ``x0 = floor(-0.6931 / S)``,
    ``b = floor(B / S)``, ``c = floor(C / S^2)``; the output scale is ``A * S^2``."""

    x0: int
    b: int
    c: int
    out_scale: float


def check_exp_consts(k: ExpConsts, exp_width: int = EXP_MAX_WIDTH) -> None:
    """Raise :class:`ValueError` with :func:`exp_consts_problem`'s message."""
    why = exp_consts_problem(k.x0, k.b, k.c, exp_width)
    if why:
        raise ValueError(why)


def exp_width_for(scale: float) -> int:
    """The narrowest ``exp_width`` that holds ``c`` for an input scale (``c < 2^width``)."""
    return max(4, math.floor(EXP_C / scale**2).bit_length())


def exp_consts(scale: float, exp_width: int = EXP_MAX_WIDTH) -> ExpConsts:
    """i-exp's constants for an input scale; refuses a scale whose constants no Softmax unit
    of ``exp_width`` takes (too coarse: ``c < 2^16``; too fine: ``c >= 2^exp_width``), naming
    the accepted scale range."""
    if not (isinstance(scale, (int, float, np.floating)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"i-exp input scale must be a positive finite number, not {scale!r}")
    k = ExpConsts(math.floor(LN2_X0 / scale), math.floor(EXP_B / scale),
                  math.floor(EXP_C / scale**2), EXP_A * scale**2)
    if exp_consts_problem(k.x0, k.b, k.c, exp_width):
        lo = math.sqrt(EXP_C / ((1 << exp_width) - 1))
        hi = math.sqrt(EXP_C / (1 << EXP_MIN_BITS))
        raise ValueError(f"i-exp input scale {scale!r} gives c = {k.c}: with exp_width = "
                         f"{exp_width} the scale must be in [{lo:.4g}, {hi:.4g}] "
                         f"(c = floor({EXP_C:.5f} / S^2) in [2^{EXP_MIN_BITS}, "
                         f"2^{exp_width} - 1])")
    return k


def softmax_error_bound(k: ExpConsts, length: int, out_bits: int = 8) -> float:
    """The documented bound on ``|out / 2^out_bits - p|`` for a row of ``length`` elements
    (:data:`SOFTMAX_FIT_ERROR`): ``2^-out_bits + 0.001 + 3 |x0 S + ln 2| + length / c``, with
    ``S = sqrt(EXP_C / c)`` the scale the constants come from."""
    if k.c < (1 << EXP_MIN_BITS):
        raise ValueError(f"no bound for c = {k.c}: the Softmax unit refuses c < 2^{EXP_MIN_BITS}")
    delta = abs(k.x0 * math.sqrt(EXP_C / k.c) + math.log(2))
    return 2.0**-out_bits + SOFTMAX_FIT_ERROR + SOFTMAX_X0_FACTOR * delta + length / k.c


def _int_input(x, name: str) -> np.ndarray:
    """``x`` as an int64 array: :func:`~heterotron.sim.golden.requantizer._as_int_array`'s check
    (floats would be truncated silently), then refuses values int64 would wrap."""
    a = np.asarray(x)
    if a.size and a.dtype != bool:
        a = _as_int_array(a, name)
    if a.size and a.dtype == object and max(abs(int(a.max())), abs(int(a.min()))) >= 2**62:
        raise ValueError(f"{name} must be below 2^62 in magnitude")
    if a.size and a.dtype.kind == "u" and int(a.max()) >= 2**63:
        raise ValueError(f"{name} must be below 2^63")
    return a.astype(I64)


def i_exp(x: np.ndarray, k: ExpConsts) -> np.ndarray:
    """Integer exp of ``x <= 0`` (scale S): ``x = q * x0 + r``, ``z = (r + b) * r + c``,
    ``out = z >> q``, at scale ``A * S^2``. Inputs below ``30 * x0`` are clamped there.
    Refuses constants the Softmax unit refuses and positive inputs."""
    check_exp_consts(k)
    x = _int_input(x, "i-exp input")
    if x.size and int(x.max()) > 0:
        raise ValueError(f"i-exp input must be <= 0 (x minus its row maximum), not {x.max()}")
    x = np.maximum(x, EXP_N * k.x0)
    q = x // k.x0  # x0 < 0, x <= 0: q in [0, 30]
    r = x - k.x0 * q  # in (x0, 0]
    z = (r + k.b) * r + k.c
    return np.maximum(z >> q, 0)


def bit_length(s: np.ndarray) -> np.ndarray:
    """Bit length of each non-negative ``s < 2^63``: the leading-one detector."""
    s = np.asarray(s, dtype=I64)
    k = np.zeros_like(s)
    for b in range(63):
        k += (s >> b) > 0
    return k


def recip_shift(s: np.ndarray) -> np.ndarray:
    """The reciprocal's normalisation ``sh = max(0, bitlen(s) - RECIP_NORM)``."""
    return np.maximum(bit_length(s) - RECIP_NORM, 0)


def reciprocal_ibert(s: np.ndarray) -> np.ndarray:
    """``floor(2^32 / (s >> sh))`` for ``s >= 1``, ``sh`` from :func:`recip_shift` (the
    ``ibert`` unit's divider, on a divisor of at most ``RECIP_NORM`` bits): within
    ``2^-(RECIP_NORM - 1)`` relative of ``2^(32 + sh) / s``."""
    s = np.asarray(s, dtype=I64)
    if np.any(s < 1):
        raise ValueError("reciprocal of a non-positive sum")
    return (I64(1) << 32) // (s >> recip_shift(s))


def reciprocal_divfree(s: np.ndarray, frac_bits: int = 30, iters: int = 3) -> np.ndarray:
    """``~floor(2^(32 + sh) / s)`` for ``s >= 1`` (``sh`` from :func:`recip_shift`) without a
    divider.

    Normalise ``s = m * 2^k`` with ``m`` in [0.5, 1) (leading-one detection), then Newton-Raphson
    on ``1/m`` in fixed point with ``frac_bits`` fraction bits, starting from
    ``48/17 - 32/17 m``; ``iters`` multiply-subtract steps, each rounded down. Three steps give
    ~``2^-frac_bits`` relative error; the result never exceeds ``floor(2^(32 + sh) / s)`` by more
    than a few LSB (measured in the tests).
    """
    s = np.asarray(s, dtype=I64)
    if np.any(s < 1):
        raise ValueError("reciprocal of a non-positive sum")
    F = frac_bits
    k = bit_length(s)
    m = np.where(k >= F, s >> np.maximum(k - F, 0), s << np.maximum(F - k, 0))  # m * 2^F
    one = I64(1) << F
    y = I64(round(48 / 17 * 2**F)) - ((m * I64(round(32 / 17 * 2**15))) >> 15)
    for _ in range(iters):
        t = (2 * one) - ((m * y) >> F)
        y = (y * t) >> F
    # 2^(32 + sh) / s = (1/m) * 2^(32 + sh - k): y is 1/m at 2^F
    shift = F - 32 + k - np.maximum(k - RECIP_NORM, 0)
    return np.where(shift >= 0, y >> np.maximum(shift, 0), y << np.maximum(-shift, 0))


def softmax_int(x: np.ndarray, k: ExpConsts, *, variant: str = "ibert",
                out_bits: int = 8, mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise integer Softmax over the last axis; output unsigned ``out_bits`` at scale
    ``1 / 2^out_bits``.

    ``x`` (scale S, integers below 2^31 in magnitude: the unit's widest input) minus its row
    max -> i-exp -> row sum -> normalisation ``sh = max(0, bitlen(sum) - 16)`` -> reciprocal
    ``floor(2^32 / (sum >> sh))`` (``ibert``) or the division-free Newton reciprocal
    (``divfree``) -> ``e * recip / 2^(32 + sh - out_bits)`` rounded half up. A row whose max
    element takes (nearly) all the mass would give ``2^out_bits``: it **saturates** to
    ``2^out_bits - 1`` so the output stays ``out_bits`` wide. ``mask`` (bool, True = keep)
    removes elements: they get 0 and do not enter the sum or the max; a row with every element
    masked is all 0 in both variants.
    Constants the unit refuses (:func:`exp_consts_problem`) raise :class:`ValueError`.
    """
    if variant not in ("ibert", "divfree"):
        raise ValueError(f"variant must be 'ibert' or 'divfree', not {variant!r}")
    if not 1 <= out_bits <= 16:
        raise ValueError(f"out_bits must be in [1, 16], not {out_bits}")
    check_exp_consts(k)
    x = _int_input(x, "Softmax input")
    if x.size and not (-2**31 <= int(x.min()) and int(x.max()) < 2**31):
        raise ValueError("Softmax input must be a signed 32-bit integer (the widest in_width)")
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), x.shape)
        floor_val = np.iinfo(np.int32).min
        x = np.where(mask, x, floor_val)
    xmax = x.max(axis=-1, keepdims=True)
    e = i_exp(x - xmax, k)
    if mask is not None:
        e = np.where(mask, e, 0)
    total = e.sum(axis=-1, keepdims=True)
    empty = total == 0  # only a fully masked row: an unmasked maximum gives e = c >= 1
    total = np.where(empty, 1, total)
    recip = reciprocal_ibert(total) if variant == "ibert" else reciprocal_divfree(total)
    # round half up: one more bit, then +1 and drop it
    out = (((e * recip) >> (31 + recip_shift(total) - out_bits)) + 1) >> 1
    return np.where(empty, 0, np.minimum(out, (1 << out_bits) - 1))


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

#: i-GELU's documented error against float GELU, in real units, over inputs in [-8, 8], for
#: constants from :func:`gelu_consts` at any accepted scale (0.019 at 5e-4 and finer, 0.0312
#: at the coarsest; measured in the tests). Beyond 8, where GELU(x) = x, the relative error
#: is below ``1 / |one| <= 2^-8``.
GELU_ERROR_BOUND = 0.032


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
    """i-GELU's constants for an input scale; refuses scales coarser than
    :data:`GELU_MAX_SCALE` (the unit would refuse their constants)."""
    if not (isinstance(scale, (int, float, np.floating)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"i-GELU input scale must be a positive finite number, not {scale!r}")
    s_in = scale / GELU_K
    s_erf = s_in**2 * GELU_A * 2**GELU_SHIFT
    k = GeluConsts(math.floor(GELU_B / s_in), math.floor(1.0 / (GELU_A * s_in**2)),
                   math.floor(1.0 / s_erf), -scale * s_erf / 2)
    if gelu_consts_problem(k.b, k.c, k.one):
        raise ValueError(f"i-GELU input scale {scale!r} is too coarse: the scale must be below "
                         f"{GELU_MAX_SCALE:.4g} (one = floor(1 / S_erf) <= "
                         f"-2^{GELU_MIN_ONE_BITS}); feed GELU the wide value")
    return k





def i_gelu(x: np.ndarray, k: GeluConsts) -> np.ndarray:
    """I-BERT's integer GELU: ``erf ~ sign(x) ((min(|x|, -b) + b)^2 + c)``, floored by ``2^14``,
    ``out = -(x * (erf + one))``. Because ``A < 0``, ``c``, ``one`` and the erf scale are
    negative; the final negation makes the output scale (``out_scale``) positive.

    Exact for any integer input and any constants the unit accepts: int64 where the products
    provably fit, Python integers (an object array, returned as one) otherwise. Refuses float
    inputs (they would be truncated) and constants the unit refuses."""
    why = gelu_consts_problem(k.b, k.c, k.one)
    if why:
        raise ValueError(why)
    x = np.asarray(x)
    if x.size:
        x = _as_int_array(x, "i-GELU input")
    if x.dtype != object:
        xmax = max(abs(int(x.max())), abs(int(x.min()))) if x.size else 0
        ymax = (abs(k.b) ** 2 + abs(k.c)) // (1 << GELU_SHIFT) + 1 + abs(k.one)
        x = x.astype(I64) if xmax * ymax < 2**62 and abs(k.b) ** 2 + abs(k.c) < 2**62 \
            else x.astype(object)
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
#: The variance ``sum((dev >> shift)^2)`` is kept below ``2^LN_VAR_BITS`` (the exact integer
#: square root's range): :func:`layernorm_shift` picks the smallest shift that guarantees it.
LN_VAR_BITS = 62
#: Widest LayerNorm input (the unit's ``in_width`` range) and widest folded bias.
LN_MAX_IN_BITS, LN_MAX_BIAS_BITS = 24, 48
#: LayerNorm's documented error against float, before gamma/beta and the requantisation: the
#: normalised value ``y = (x - mean) / sd`` (``layernorm_core`` times ``sqrt(D) / 2^30``) is
#: within ``LN_ERROR_ABS / sd + LN_ERROR_REL * |y|`` of float, ``sd`` the row's standard
#: deviation in input LSBs. The first term is the integer mean (half an LSB) and the floors of
#: the square root; the second the 47-bit reciprocal. Measured in the tests for rows of 2 to
#: 1024 with ``sd`` from 0.3 LSB to 2^21.
LN_ERROR_ABS, LN_ERROR_REL = 1.5, 2.0**-16


def layernorm_shift(in_bits: int, d: int) -> int:
    """The deviation pre-shift for ``in_bits``-bit inputs and rows of ``d``: the smallest that
    keeps ``d * 2^(2 (in_bits - shift))`` (the variance's bound, since ``|x - mean| <
    2^in_bits``) within :data:`LN_VAR_BITS`. It is 0 for every width and length the unit
    takes (24 bits, 1024 channels: 2^59), so no deviation is floored away: I-BERT's fixed
    pre-shift of 2 flattened rows whose deviations are a few LSB."""
    if not 2 <= in_bits <= 31:
        raise ValueError(f"in_bits must be in [2, 31], not {in_bits}")
    if d < 1:
        raise ValueError(f"a LayerNorm row needs at least one channel, not {d}")
    return max(0, -(-(2 * in_bits + d.bit_length() - LN_VAR_BITS) // 2))


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
                     shift: int | None = None, in_bits: int = LN_MAX_IN_BITS,
                     bias_bits: int = LN_MAX_BIAS_BITS, out_bits: int = 8) -> LayerNormConsts:
    """Integer constants of LayerNorm for a row of ``len(gamma)`` channels. ``shift`` defaults
    to :func:`layernorm_shift` for ``in_bits`` (0 for every unit). A folded bias that does not
    fit ``bias_bits`` signed bits (the unit's ``bias_width``) is refused, naming the channel;
    so are mismatched or non-finite ``gamma``/``beta`` and a non-positive ``out_scale``."""
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    d = len(gamma)
    if gamma.ndim != 1 or beta.shape != gamma.shape or d < 1:
        raise ValueError(f"gamma and beta must be vectors of one length, not {gamma.shape} and "
                         f"{beta.shape}")
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
        raise ValueError("gamma and beta must be finite")
    if not (math.isfinite(out_scale) and out_scale > 0):
        raise ValueError(f"out_scale must be a positive finite number, not {out_scale!r}")
    if shift is None:
        shift = layernorm_shift(in_bits, d)
    norm_scale = math.sqrt(d) / 2**30
    # |gamma| is clamped at 1e-3 of its largest value: a (near-)zero gamma would need a shift
    # no requantiser has, and its channel's output is then the bias within 1e-3 of the rest.
    floor_g = 1e-3 * max(float(np.max(np.abs(gamma))), 1e-30)
    g = np.where(gamma < 0, -1.0, 1.0) * np.maximum(np.abs(gamma), floor_g)
    bias_f = np.floor(beta / g / norm_scale)
    lim = 2.0 ** (bias_bits - 1)
    bad = np.flatnonzero(~((bias_f >= -lim) & (bias_f < lim)))
    if bad.size:
        ch = int(bad[np.argmax(np.abs(bias_f[bad]))])
        need = int(abs(bias_f[ch])).bit_length() + 1
        raise ValueError(f"LayerNorm's folded bias beta / gamma / (sqrt(D) / 2^30) of channel "
                         f"{ch} is {bias_f[ch]:.4g}: it needs {need} signed bits, more than "
                         f"bias_bits = {bias_bits}")
    bias = bias_f.astype(I64)
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
    ``|dev| <= std`` (up to the floors), ``dev * factor`` stays below ~2^48.
    Bounds: with ``|x| < 2^23`` and ``D <= 1024`` and no pre-shift (:func:`layernorm_shift`),
    ``var < 2^58``; an input whose variance could pass ``2^62`` is refused, as are floats.
    A constant row (``std = 0``) gives ``y = 0``, i.e. the output is the bias alone.
    """
    x = _int_input(x, "LayerNorm input")
    d = x.shape[-1]
    if x.size and max(abs(int(x.max())), abs(int(x.min()))) >= 1 << 31:
        raise ValueError("LayerNorm input must be below 2^31 in magnitude")
    total = x.sum(axis=-1, keepdims=True)
    mean = (2 * total + d) // (2 * d)  # round half up of total / d
    dev = x - mean
    ds = dev >> k.shift
    if ds.size and d * int(np.abs(ds).max()) ** 2 >= 1 << LN_VAR_BITS:
        raise ValueError(f"LayerNorm input too wide for shift {k.shift}: the variance of a row "
                         f"of {d} could pass 2^{LN_VAR_BITS} (layernorm_shift picks the shift)")
    var = (ds * ds).sum(axis=-1, keepdims=True)
    std = isqrt(var) << k.shift
    factor = np.where(std > 0, (I64(1) << LN_RECIP_BITS) // np.maximum(std, 1), 0)
    y = (dev * factor) >> (LN_RECIP_BITS - 30)
    return (y + k.bias) * k.sign


def layernorm_int(x: np.ndarray, k: LayerNormConsts) -> np.ndarray:
    """:func:`layernorm_core`, then the per-channel requantisation to ``out_bits``."""
    return requantize(layernorm_core(x, k), k.m, k.e, k.out_bits)

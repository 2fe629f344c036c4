"""Golden model of requantisation: the integer contract every scale in the accelerator obeys.

A real-valued scale ratio ``r = S_in / S_out`` is folded offline into a dyadic number
``m / 2^e`` (:func:`dyadic`); at run time only integers move::

    out = saturate(round_shift(z * m, e))                                   # plain
    out = saturate(round_shift(z * m, e) + round_shift(y * m_y, e_y))       # with residual

Rounding rule (``round_shift``): **round half up**, i.e. towards +infinity on ties::

    round_shift(p, e) = floor((p + 2^(e-1)) / 2^e)      for e >= 1
    round_shift(p, 0) = p

so 2.5 -> 3, -2.5 -> -2, -2.6 -> -3. With a residual operand each term is rounded on its own,
then the two are added, then the sum is saturated.

Saturation: to the signed range of ``out_bits``, ``[-2^(out_bits-1), 2^(out_bits-1) - 1]``;
never wraps.

All functions are exact for any integer inputs: they compute in int64 when the products provably
fit and in Python integers (object arrays) otherwise.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["M_BITS", "round_shift", "saturate", "requantize", "dyadic"]

#: Bits of the dyadic multiplier ``m`` (an unsigned value below ``2^M_BITS``).
M_BITS = 31


def _as_int_array(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == object:
        if not all(isinstance(v, (int, np.integer)) for v in a.flat):
            raise TypeError(f"{name} must hold integers")
        return a
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {a.dtype}")
    return a


def _max_abs(a: np.ndarray) -> int:
    if a.size == 0:
        return 0
    return max(abs(int(a.max())), abs(int(a.min())))


def round_shift(p, e) -> np.ndarray:
    """``floor((p + 2^(e-1)) / 2^e)`` (``p`` when ``e == 0``): arithmetic right shift by ``e``
    with round half up. ``p`` and ``e`` broadcast; ``e >= 0``."""
    p = _as_int_array(p, "p")
    e = _as_int_array(e, "e")
    if e.size and int(e.min()) < 0:
        raise ValueError("shift e must be >= 0")
    # ((p << 1) >> e) + 1) >> 1  ==  floor((p + 2^(e-1)) / 2^e), and == p for e == 0.
    if p.dtype != object and _max_abs(p) < 2**61:
        p = p.astype(np.int64)
        # numpy's >> by 64 or more is undefined; shifts that large leave only the sign.
        e = np.minimum(e.astype(np.int64), 63)
        return (((p << 1) >> e) + 1) >> 1
    p = np.asarray(p, dtype=object)
    e = np.asarray(e, dtype=object)
    # Arithmetic on 0-d object arrays yields a bare int: wrap the result again.
    return np.asarray((((p << 1) >> e) + 1) >> 1, dtype=object)


def saturate(x, bits: int) -> np.ndarray:
    """Clamp ``x`` to the signed range of ``bits`` bits."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = _as_int_array(x, "x")
    return np.asarray(np.clip(x, lo, hi), dtype=object if x.dtype == object else None).astype(
        np.int64)


def _product(z: np.ndarray, m: np.ndarray) -> np.ndarray:
    if z.dtype != object and m.dtype != object and _max_abs(z) * max(_max_abs(m), 1) < 2**61:
        return z.astype(np.int64) * m.astype(np.int64)
    return np.asarray(np.asarray(z, dtype=object) * np.asarray(m, dtype=object), dtype=object)


def _check_scale(m: np.ndarray, e: np.ndarray, which: str) -> None:
    if m.size and not (0 <= int(m.min()) and int(m.max()) < 2**M_BITS):
        raise ValueError(f"{which}: m must be in [0, 2^{M_BITS} - 1]")
    if e.size and int(e.min()) < 0:
        raise ValueError(f"{which}: e must be >= 0")


def requantize(z, m, e, out_bits: int = 8, *, y=None, m_y=None, e_y=None) -> np.ndarray:
    """Requantise ``z`` by the dyadic scale ``m / 2^e`` to a signed ``out_bits`` integer.

    ``m`` and ``e`` broadcast against ``z``: a scalar is one scale for all, a vector along the
    last axis is a per-channel (per-lane) scale. With ``y`` (the residual operand) given, its
    own scale ``m_y / 2^e_y`` is applied and the rounded terms are added before saturation.
    Returns int64.
    """
    if not 2 <= out_bits <= 63:
        raise ValueError(f"out_bits must be in [2, 63], not {out_bits}")
    z, m, e = _as_int_array(z, "z"), _as_int_array(m, "m"), _as_int_array(e, "e")
    _check_scale(m, e, "z scale")
    acc = round_shift(_product(z, m), e)
    if y is not None:
        if m_y is None or e_y is None:
            raise ValueError("a residual operand y needs its own m_y and e_y")
        y, m_y, e_y = _as_int_array(y, "y"), _as_int_array(m_y, "m_y"), _as_int_array(e_y, "e_y")
        _check_scale(m_y, e_y, "y scale")
        term = round_shift(_product(y, m_y), e_y)
        if acc.dtype == object or term.dtype == object:
            acc = np.asarray(np.asarray(acc, dtype=object) + np.asarray(term, dtype=object),
                             dtype=object)
        else:
            acc = acc + term
    return saturate(acc, out_bits)


def dyadic(ratio: float, m_bits: int = M_BITS, max_shift: int | None = None,
           min_bits: int = 1) -> tuple[int, int]:
    """Fold a positive real scale ratio into ``(m, e)`` with ``ratio ~= m / 2^e``.

    ``frexp(ratio) = (mant, e2)`` with ``mant`` in [0.5, 1); ``m = round(mant * 2^m_bits)``
    (half up), ``e = m_bits - e2``. When ``mant`` rounds up to ``2^m_bits`` the pair is
    renormalised. When ``max_shift`` is given and ``e`` exceeds it, ``m`` is shifted right (with
    rounding) until ``e == max_shift``, giving up low mantissa bits; fewer than ``min_bits``
    left (``m < 2^(min_bits - 1)``, a relative error that can pass ``2^-min_bits``) is refused.

    Raises :class:`ValueError` when ``ratio`` is not a positive finite number, when it is too
    large for a right shift (``e < 0``: ratios from ``2^m_bits - 0.5`` up, whose mantissa rounds
    to ``2^m_bits``), or too small to keep ``min_bits`` mantissa bits.
    """
    if not 1 <= m_bits <= M_BITS:
        raise ValueError(f"m_bits must be in [1, {M_BITS}], not {m_bits}")
    if not (isinstance(ratio, (int, float, np.floating)) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"scale ratio must be a positive finite number, not {ratio!r}")
    mant, e2 = math.frexp(float(ratio))
    m = math.floor(mant * (1 << m_bits) + 0.5)
    if m == 1 << m_bits:
        m >>= 1
        e2 += 1
    e = m_bits - e2
    if e < 0:
        raise ValueError(
            f"scale ratio {ratio!r} is too large: needs a left shift of {-e} bits "
            f"(with m_bits={m_bits}, ratios below 2^{m_bits} - 0.5 work)"
        )
    if max_shift is not None and e > max_shift:
        drop = e - max_shift
        kept = mant * 2.0 ** (m_bits - drop)  # the mantissa the capped shift leaves, unrounded
        m = (m + (1 << (drop - 1))) >> drop
        e = max_shift
        if kept < 1 << (min_bits - 1):
            raise ValueError(
                f"scale ratio {ratio!r} is too small for max_shift={max_shift}: "
                + ("it rounds to 0" if m == 0 else
                   f"the mantissa left, {kept:.4g}, is below 2^{min_bits - 1} (more than "
                   f"2^-{min_bits} off)")
                + f" (ratios from 2^-{max_shift - min_bits + 1} keep {min_bits})"
            )
        if m == 1 << m_bits:  # rounding carried into a new top bit; the value is exact
            m >>= 1
            e -= 1
    return m, e

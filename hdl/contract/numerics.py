"""Numeric constants and refusal rules the RTL units and the golden model share.

One definition each: the Softmax and Gelu units build their configuration checks from these,
and :mod:`heterotron.sim.golden.intops` computes with them (and re-exports them), so the unit,
the golden model, the testbench and the host refuse the same constants with the same message.
``docs/number-formats.md`` explains every one.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EXP_A", "EXP_B", "EXP_C", "LN2_X0", "EXP_N", "EXP_MAX_WIDTH", "EXP_MIN_BITS",
           "RECIP_NORM", "exp_field_bits", "exp_consts_problem", "GELU_K", "GELU_A", "GELU_B",
           "GELU_SHIFT", "GELU_MIN_ONE_BITS", "GELU_MAX_SCALE", "gelu_field_bits",
           "gelu_consts_problem"]

# -- i-exp and Softmax ----------------------------------------------------------------------------

#: exp(r) ~ A * (r + B)^2 + C on r in (-ln 2, 0] (I-BERT's second-order fit).
EXP_A, EXP_B, EXP_C = 0.35815147, 0.96963238 / 0.35815147, 1.0 / 0.35815147
LN2_X0 = -0.6931
EXP_N = 30  # clamp: at most 30 halvings
#: Widest i-exp output (and constant ``c``) any Softmax unit takes: ``Softmax``'s
#: ``exp_width`` is at most this, and the golden model refuses a wider ``c``.
EXP_MAX_WIDTH = 30
#: Smallest ``c`` (as ``2^EXP_MIN_BITS``) a Softmax unit takes, i.e. input scales up to
#: ``sqrt(EXP_C / 2^16) = 0.0065``: coarser scales leave i-exp so few levels (and floor
#: ``x0`` so far from ``-ln 2 / S``) that the result is off by more than 2.5 LSB of 8 bits
#: (13 LSB at S = 0.1, 200 at S = 1); the unit refuses them instead (``SfuError.CONFIG``).
EXP_MIN_BITS = 16
#: Row sums of more than ``RECIP_NORM`` bits are normalised before the reciprocal: with
#: ``sh = max(0, bitlen(sum) - RECIP_NORM)`` the reciprocal is ``floor(2^32 / (sum >> sh))``
#: (``~2^(32 + sh) / sum``), so it keeps at least ``33 - RECIP_NORM`` significant bits for any
#: row sum and the divider's divisor is at most ``RECIP_NORM`` bits wide (without the shift,
#: ``floor(2^32 / sum)`` keeps fewer than 8 bits once the sum passes 2^24 and is 0 past
#: 2^32); the output shift grows by ``sh``.
RECIP_NORM = 16



def exp_field_bits(exp_width: int) -> int:
    """``h`` of the Softmax unit's constant fields (``x0`` signed ``h + 1`` bits, ``b`` unsigned
    ``h + 1``): ``ceil(exp_width / 2) + 2``, since real constants have ``|x0| ~ 0.42 sqrt(c)``
    and ``b ~ 1.62 sqrt(c)``."""
    return (exp_width + 1) // 2 + 2


def exp_consts_problem(x0: int, b: int, c: int, exp_width: int = EXP_MAX_WIDTH) -> str | None:
    """Why the Softmax unit refuses i-exp constants (``SfuError.CONFIG``), or ``None``.

    The rule the RTL checks at its configuration port, written once for the golden model, the
    testbench and the host: ``x0 < 0``, ``b >= -x0`` (so ``0 <= e <= c`` and every row sum
    is at least 1) and ``2^16 <= c < 2^exp_width`` (:data:`EXP_MIN_BITS`: coarser scales are
    refused, not computed badly; ``exp_width`` is the unit's), and constants that fit the
    port's fields (:func:`exp_field_bits`: ``-2^h <= x0``, ``b < 2^(h+1)``; a wider value would
    be cut by the field, so the host must not write it)."""
    if not all(isinstance(v, (int, np.integer)) for v in (x0, b, c)):
        return f"i-exp constants must be integers, not x0={x0!r}, b={b!r}, c={c!r}"
    if x0 >= 0:
        return f"i-exp constant x0 must be negative, not {x0}"
    if b < -x0:
        return f"i-exp constant b must be at least -x0 = {-x0}, not {b}"
    if not (1 << EXP_MIN_BITS) <= c < (1 << exp_width):
        return (f"i-exp constant c must be in [2^{EXP_MIN_BITS}, 2^{exp_width} - 1] "
                f"(exp_width = {exp_width}), not {c}")
    h = exp_field_bits(exp_width)
    if x0 < -(1 << h) or b >= 1 << (h + 1):
        return (f"i-exp constants x0 = {x0}, b = {b} do not fit the port's fields (exp_width = "
                f"{exp_width}: x0 >= -2^{h}, b < 2^{h + 1})")
    return None


# -- i-GELU ---------------------------------------------------------------------------------------

GELU_K = 1.4142
GELU_A, GELU_B = -0.2888, -1.769
GELU_SHIFT = 14
#: The Gelu unit refuses ``one > -2^GELU_MIN_ONE_BITS``, i.e. input scales coarser than
#: about 1.3e-3: there the fixed ``2^14`` shift leaves erf so few levels that the result is
#: off by up to 0.085 at S = 3e-3 and 39 at S = 0.05 (int8 inputs); accepted scales stay within
#: :data:`GELU_ERROR_BOUND`.
GELU_MIN_ONE_BITS = 8

#: The input scale :func:`gelu_consts` accepts up to (not included): ``one = floor(1 / S_erf)``
#: is at most ``-2^8`` while ``1 / S_erf < 1 - 2^8``.
GELU_MAX_SCALE = GELU_K * math.sqrt(
    -1.0 / (GELU_A * 2**GELU_SHIFT * ((1 << GELU_MIN_ONE_BITS) - 1)))


def gelu_field_bits(in_width: int) -> dict:
    """Signed widths of the Gelu unit's constant fields for ``in_width``: wide enough for any
    input scale that still represents the data."""
    return {"b": in_width + 5, "c": 2 * in_width + 9, "one": 2 * in_width + 9}


def gelu_consts_problem(b: int, c: int, one: int, in_width: int | None = None) -> str | None:
    """Why the Gelu unit refuses i-GELU constants (``SfuError.CONFIG``), or ``None``: the
    rule its configuration port checks, written once (``b < 0``, ``c <= 0``,
    ``one <= -2^8``); with ``in_width``, also whether they fit the port's fields
    (:func:`gelu_field_bits`)."""
    if not all(isinstance(v, (int, np.integer)) for v in (b, c, one)):
        return f"i-GELU constants must be integers, not b={b!r}, c={c!r}, one={one!r}"
    if b >= 0:
        return f"i-GELU constant b must be negative, not {b}"
    if c > 0:
        return f"i-GELU constant c must be <= 0, not {c}"
    if one > -(1 << GELU_MIN_ONE_BITS):
        return (f"i-GELU constant one must be at most -2^{GELU_MIN_ONE_BITS} (an input scale of "
                f"below {GELU_MAX_SCALE:.4g}), not {one}")
    if in_width is not None:
        for name, v in (("b", b), ("c", c), ("one", one)):
            w = gelu_field_bits(in_width)[name]
            if not -(1 << (w - 1)) <= v < 1 << (w - 1):
                return (f"i-GELU constant {name} = {v} does not fit the port's {w}-bit field "
                        f"(in_width = {in_width})")
    return None

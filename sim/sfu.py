"""Golden models of the special-function units, row by row, exactly as the RTL sees them.

Each function applies the golden integer op of :mod:`heterotron.sim.intops` (and the
requantisation of :mod:`heterotron.sim.requantizer`) to the rows a unit receives, with the
unit's own conventions: rows longer than ``max_len`` are cut to their first ``max_len``
elements (the RTL flags ``SfuError.LENGTH``), and constants are plain integers as written
through the configuration port. Arithmetic on possibly wide values runs on Python integers
(object arrays), so the models are exact for any constant the port accepts.
"""

from __future__ import annotations

import numpy as np

from .intops import ExpConsts, GeluConsts, LayerNormConsts, i_gelu, layernorm_int, softmax_int
from .requantizer import requantize

__all__ = ["softmax_row", "gelu_values", "layernorm_row", "residual_values"]


def softmax_row(row, x0: int, b: int, c: int, *, variant: str = "ibert", out_bits: int = 8,
                max_len: int | None = None) -> np.ndarray:
    """One row through the Softmax unit (``x0, b, c`` of :func:`~.intops.exp_consts`)."""
    row = np.asarray(row, dtype=np.int64)[:max_len]
    return softmax_int(row[None, :], ExpConsts(int(x0), int(b), int(c), 0.0), variant=variant,
                       out_bits=out_bits)[0]


def gelu_values(x, b: int, c: int, one: int, m: int, e: int, out_bits: int) -> np.ndarray:
    """Elements through the Gelu unit: i-GELU, then the requantisation ``(m, e)``."""
    x = np.asarray(np.asarray(x, dtype=np.int64), dtype=object)
    g = i_gelu(x, GeluConsts(int(b), int(c), int(one), 0.0))
    return requantize(g, int(m), int(e), out_bits)


def layernorm_row(row, shift: int, bias, sign, m, e, *, out_bits: int,
                  max_len: int | None = None) -> np.ndarray:
    """One row through the LayerNorm unit; the per-channel tables are indexed by channel
    (element position in the row) and only their first ``len(row)`` entries are used."""
    row = np.asarray(row, dtype=np.int64)[:max_len]
    d = len(row)
    k = LayerNormConsts(int(shift), np.asarray(bias, dtype=np.int64)[:d],
                        np.asarray(sign, dtype=np.int64)[:d], np.asarray(m, dtype=np.int64)[:d],
                        np.asarray(e, dtype=np.int64)[:d], out_bits)
    return layernorm_int(row, k)


def residual_values(a, r, m: int, e: int, m_r: int, e_r: int, out_bits: int) -> np.ndarray:
    """Elements through ResidualAdd: both terms requantised, added, saturated."""
    return requantize(np.asarray(a, dtype=np.int64), int(m), int(e), out_bits,
                      y=np.asarray(r, dtype=np.int64), m_y=int(m_r), e_y=int(e_r))

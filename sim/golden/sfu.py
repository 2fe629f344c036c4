"""Golden models of the special-function units, row by row, exactly as the RTL sees them.

Each function applies the golden integer op of :mod:`heterotron.sim.golden.intops` (and the
requantisation of :mod:`heterotron.sim.golden.requantizer`) to the rows a unit receives, with the
unit's own conventions: rows longer than ``max_len`` are cut to their first ``max_len``
elements (the RTL flags ``SfuError.LENGTH``), and constants are plain integers as written
through the configuration port. Arithmetic on possibly wide values runs on Python integers
(object arrays), so the models are exact for any constant the port accepts.
"""

from __future__ import annotations

import numpy as np

from heterotron.sim.golden.intops import (
    EXP_MAX_WIDTH,
    ExpConsts,
    GeluConsts,
    LayerNormConsts,
    _int_input,
    check_exp_consts,
    i_gelu,
    layernorm_int,
    softmax_int,
)
from heterotron.sim.golden.requantizer import requantize

__all__ = ["softmax_row", "gelu_values", "layernorm_row", "residual_values", "float_errors"]


def softmax_row(row, x0: int, b: int, c: int, *, variant: str = "ibert", out_bits: int = 8,
                max_len: int | None = None, exp_width: int = EXP_MAX_WIDTH) -> np.ndarray:
    """One row through the Softmax unit (``x0, b, c`` of :func:`~.intops.exp_consts`);
    constants the unit of ``exp_width`` refuses raise :class:`ValueError` with the rule's
    message (:func:`~.intops.exp_consts_problem`)."""
    row = _int_input(row, "Softmax row")[:max_len]
    k = ExpConsts(int(x0), int(b), int(c), 0.0)
    check_exp_consts(k, exp_width)
    return softmax_int(row[None, :], k, variant=variant, out_bits=out_bits)[0]


def gelu_values(x, b: int, c: int, one: int, m: int, e: int, out_bits: int) -> np.ndarray:
    """Elements through the Gelu unit: i-GELU, then the requantisation ``(m, e)``."""
    x = np.asarray(_int_input(x, "GELU input"), dtype=object)
    g = i_gelu(x, GeluConsts(int(b), int(c), int(one), 0.0))
    return requantize(g, int(m), int(e), out_bits)


def layernorm_row(row, shift: int, bias, sign, m, e, *, out_bits: int,
                  max_len: int | None = None) -> np.ndarray:
    """One row through the LayerNorm unit; the per-channel tables are indexed by channel
    (element position in the row) and only their first ``len(row)`` entries are used."""
    row = _int_input(row, "LayerNorm row")[:max_len]
    d = len(row)
    k = LayerNormConsts(int(shift), np.asarray(bias, dtype=np.int64)[:d],
                        np.asarray(sign, dtype=np.int64)[:d], np.asarray(m, dtype=np.int64)[:d],
                        np.asarray(e, dtype=np.int64)[:d], out_bits)
    return layernorm_int(row, k)


def residual_values(a, r, m: int, e: int, m_r: int, e_r: int, out_bits: int) -> np.ndarray:
    """Elements through ResidualAdd: both terms requantised, added, saturated."""
    return requantize(np.asarray(a, dtype=np.int64), int(m), int(e), out_bits,
                      y=np.asarray(r, dtype=np.int64), m_y=int(m_r), e_y=int(e_r))


# -- accuracy of the integer units against float ------------------------------------------------


def _erf(x: np.ndarray) -> np.ndarray:
    import math

    return np.vectorize(math.erf)(x)


def _summary(unit: str, got: np.ndarray, ref: np.ndarray, lsb: float, what: str,
             **extra) -> dict:
    err = np.abs(np.asarray(got, dtype=np.float64) - ref)
    return {"unit": unit, **extra, "inputs": what, "max_abs_error": float(err.max()),
            "mean_abs_error": float(err.mean()), "output_lsb": lsb,
            "max_error_lsb": float(err.max() / lsb), "mean_error_lsb": float(err.mean() / lsb)}


def float_errors(seed: int = 0) -> list[dict]:
    """Max and mean absolute error of each unit's golden model against float arithmetic on the
    dequantised inputs, on synthetic inputs shaped like MiniLM's (scales as in
    :mod:`heterotron.sim.golden.bert_int`). Errors are in real units and in output LSBs."""
    from heterotron.sim.golden.intops import exp_consts, gelu_consts, layernorm_consts
    from heterotron.sim.golden.requantizer import dyadic

    rng = np.random.default_rng(seed)
    out = []

    # Softmax: int32 attention scores at S = S_q S_k / sqrt(d); 256 rows of 128.
    s = 0.05 * 0.05 / 8
    x = rng.normal(0.0, 2.5, (256, 128))
    x[::4, 0] += 10.0  # a quarter of the rows are peaked
    xi = np.round(x / s).astype(np.int64)
    xr = xi * s
    ref = np.exp(xr - xr.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    k = exp_consts(s)
    ibert = softmax_int(xi, k, variant="ibert")
    for variant in ("ibert", "divfree"):
        got = softmax_int(xi, k, variant=variant)
        extra = {"variant": variant}
        if variant == "divfree":  # what the division-free reciprocal costs
            extra["outputs_differing_from_ibert"] = int(np.count_nonzero(got != ibert))
        out.append(_summary("softmax", got / 256.0, ref, 1 / 256,
                            "256 rows x 128 scores, N(0, 2.5)", **extra))

    # GELU: int16 input over +-12, int12 output.
    s_in = 12.0 / 32767
    x = np.concatenate([rng.uniform(-12, 12, 20000), rng.normal(0, 1.5, 20000)])
    xi = np.clip(np.round(x / s_in), -32768, 32767).astype(np.int64)
    xr = xi * s_in
    ref = 0.5 * xr * (1 + _erf(xr / np.sqrt(2)))
    g = gelu_consts(s_in)
    s_out = float(np.abs(ref).max()) / 2047
    m, e = dyadic(g.out_scale / s_out, max_shift=63)
    got = gelu_values(xi, g.b, g.c, g.one, m, e, 12) * s_out
    out.append(_summary("gelu", got, ref, s_out, "40000 values in [-12, 12]"))

    # LayerNorm: 64 rows of 384 at int22, gamma/beta like a trained model, int8 output.
    d = 384
    rows = rng.normal(0.0, 1.0, (64, d)) * rng.uniform(0.5, 4, (64, 1)) + rng.normal(0, 1, (64, 1))
    rows[:, rng.integers(0, d, 4)] *= 8  # outlier channels
    s_x = float(np.abs(rows).max()) / ((1 << 21) - 1)
    xi = np.round(rows / s_x).astype(np.int64)
    xr = xi * s_x
    gamma, beta = rng.normal(1.0, 0.3, d), rng.normal(0.0, 0.2, d)
    mu, var = xr.mean(axis=1, keepdims=True), xr.var(axis=1, keepdims=True)
    ref = (xr - mu) / np.sqrt(var + 1e-12) * gamma + beta
    s_out = float(np.abs(ref).max()) / 127
    k = layernorm_consts(gamma, beta, s_out, out_bits=8)
    got = np.stack([layernorm_row(r, k.shift, k.bias, k.sign, k.m, k.e, out_bits=8)
                    for r in xi]) * s_out
    out.append(_summary("layernorm", got, ref, s_out, "64 rows x 384 at int22, outliers"))

    # ResidualAdd: an int32 branch and an int16 residual into int22.
    a = rng.normal(0, 3, 40000)
    r = rng.normal(0, 3, 40000)
    s_a, s_r = 3e-6, 12 / 32767
    ai = np.round(a / s_a).astype(np.int64)
    ri = np.clip(np.round(r / s_r), -32768, 32767).astype(np.int64)
    ref = ai * s_a + ri * s_r
    s_out = float(np.abs(ref).max()) / ((1 << 21) - 1)
    (m_a, e_a), (m_r, e_r) = dyadic(s_a / s_out, max_shift=63), dyadic(s_r / s_out, max_shift=63)
    got = residual_values(ai, ri, m_a, e_a, m_r, e_r, 22) * s_out
    out.append(_summary("residual", got, ref, s_out, "40000 int32 + int16 pairs"))
    return out

"""Golden models of the systolic array and the GEMM engine, and the accumulator-range arithmetic.

Everything is exact integer arithmetic (int64, or Python integers when a bound says int64 could
overflow). The RTL is compared with these bit for bit:

* :func:`os_tile` - one output-stationary tile: ``bias[j] + sum_k a[k, i] * b[k, j]``.
* :func:`ws_rows` - weight-stationary rows: ``psum[m, j] + sum_i a[m, i] * w[i, j]``.
* :func:`gemm` - a whole GEMM as :class:`heterotron.hdl.gemm.GemmEngine` computes it: operand
  transposes, optional bias, optional requantisation (one scale per output lane), in the
  engine's output order (:func:`output_order`).
"""

from __future__ import annotations

import numpy as np

from heterotron.sim.golden.requantizer import requantize

__all__ = [
    "operand_range",
    "product_range",
    "accumulator_range",
    "bits_for_range",
    "os_tile",
    "ws_rows",
    "gemm",
    "output_order",
]


def operand_range(width: int, signed: bool) -> tuple[int, int]:
    """Inclusive value range of a ``width``-bit operand."""
    if signed:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def product_range(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Inclusive range of ``x * y`` for ``x`` in ``a`` and ``y`` in ``b``."""
    corners = [x * y for x in a for y in b]
    return min(corners), max(corners)


def accumulator_range(a: tuple[int, int], b: tuple[int, int], bias: tuple[int, int],
                      max_k: int) -> tuple[int, int]:
    """Range of ``bias + sum_{k < K} a_k * b_k`` over every ``K <= max_k``."""
    plo, phi = product_range(a, b)
    return bias[0] + max_k * min(plo, 0), bias[1] + max_k * max(phi, 0)


def bits_for_range(lo: int, hi: int) -> int:
    """Smallest signed width holding every value of ``[lo, hi]``."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def _mat(x) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer) and a.dtype != object:
        raise TypeError(f"integer array expected, not {a.dtype}")
    return a.astype(np.int64) if a.dtype != object else a


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer matrix product (object arithmetic if int64 could overflow)."""
    def mx(v):
        return max(abs(int(v.max())), abs(int(v.min()))) if v.size else 0
    if a.shape[-1] * mx(a) * mx(b) < (1 << 62):
        return a.astype(np.int64) @ b.astype(np.int64)
    return a.astype(object) @ b.astype(object)


def os_tile(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """One output-stationary tile from its input beats.

    ``a`` is ``(K, rows)`` (beat ``k`` carries ``a[k, :]``), ``b`` is ``(K, cols)``; the result
    is ``(rows, cols)``: ``out[i, j] = bias[j] + sum_k a[k, i] * b[k, j]``.
    """
    a, b = _mat(a), _mat(b)
    out = _matmul(a.T, b)
    if bias is not None:
        out = out + _mat(bias)[None, :]
    return out


def ws_rows(a: np.ndarray, w: np.ndarray, psum: np.ndarray) -> np.ndarray:
    """Weight-stationary beats: ``a`` is ``(M, rows)``, ``w`` the ``(rows, cols)`` weight tile,
    ``psum`` the ``(M, cols)`` partial sums entering the top; returns ``psum + a @ w``."""
    return _mat(psum) + _matmul(_mat(a), _mat(w))


def output_order(m: int, n: int, cols: int) -> list[tuple[int, int]]:
    """The engine's output beats as ``(row, first column)``: column tiles of ``cols`` outer,
    rows ascending inner (the same for both dataflows)."""
    return [(r, nt * cols) for nt in range(-(-n // cols)) for r in range(m)]


def gemm(a: np.ndarray, b: np.ndarray, *, cols: int, bias: np.ndarray | None = None,
         scale_m: np.ndarray | None = None, scale_e: np.ndarray | None = None,
         out_width: int = 8) -> np.ndarray:
    """The GEMM engine's output beats for ``C = a @ b (+ bias)``.

    ``a`` is ``(M, K)`` and ``b`` ``(K, N)`` in logical orientation (the caller transposes
    what it loaded transposed). Returns ``(beats, cols)`` in :func:`output_order`; lanes past
    ``N`` are zero. With ``scale_m``/``scale_e`` (``cols`` values each: lane ``j`` of every
    beat uses entry ``j``) the values are requantised to ``out_width`` bits.
    """
    a, b = _mat(a), _mat(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not multiply")
    m, n = a.shape[0], b.shape[1]
    c = _matmul(a, b)
    if bias is not None:
        c = c + _mat(bias)[None, :]
    nt = -(-n // cols)
    padded = np.zeros((m, nt * cols), dtype=c.dtype)
    padded[:, :n] = c
    beats = padded.reshape(m, nt, cols).transpose(1, 0, 2).reshape(nt * m, cols)
    if scale_m is not None:
        beats = requantize(beats, np.asarray(scale_m)[None, :], np.asarray(scale_e)[None, :],
                           out_width)  # padding lanes stay 0: requantize(0) == 0
    return beats

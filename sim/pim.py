"""Golden model of an analog processing-in-memory MVM with a low-ENOB ADC.

The crossbar computes ``y = x @ w.T`` for signed integer ``x`` [..., K] and ``w`` [N, K]:

* **Signed weights** are held as a differential pair of crossbars, ``w = w_pos - w_neg`` with
  both magnitudes in ``weight_bits - 1`` bits; each magnitude is **bit-sliced** into cells of
  ``cell_bits`` (slice ``s`` has weight ``2^(s * cell_bits)``).
* **Inputs** are applied **bit-serially**, LSB first, as ``input_bits`` two's complement
  bit-planes; the sign plane counts ``-2^(input_bits-1)``.
* The crossbar's ``K`` rows are split into blocks of ``xbar_rows``. For every (block, bit-plane,
  slice, column) the analog column sum ``P = sum_r bit[r] * cell[r]``, an integer in
  ``[0, xbar_rows * (2^cell_bits - 1)]``, goes through the **ADC**: clip to ``adc_max``
  (the range), then ``code = round_half_up(P * L / adc_max)`` with ``L = 2^enob - 1`` levels,
  clipped to ``L``. The ADC's step is ``adc_max / L`` column-sum units.
* **Shift and add** digitally: ``acc = sum sign(plane) 2^plane 2^(slice * cell_bits)
  (code_pos - code_neg)``, exactly in integers. The product is ``acc * adc_max / L``.

With ``enob=None`` (ideal) the codes are the column sums themselves and ``acc`` equals the exact
product. The default range is ``max(largest column sum, L)``: with enough ADC bits
(``L >= xbar_rows * (2^cell_bits - 1)``) the step is exactly 1 and the result is exact too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PimConfig", "pim_mvm", "max_column_sum"]

I64 = np.int64


@dataclass(frozen=True)
class PimConfig:
    input_bits: int = 8
    weight_bits: int = 8
    cell_bits: int = 2
    xbar_rows: int | None = None  # None: one block of all K rows
    enob: int | None = None  # None: ideal ADC
    adc_max: int | None = None  # clip range in column-sum units; None: the full range

    def __post_init__(self):
        if not 2 <= self.input_bits <= 16:
            raise ValueError(f"input_bits must be in [2, 16], not {self.input_bits}")
        if not 2 <= self.weight_bits <= 16:
            raise ValueError(f"weight_bits must be in [2, 16], not {self.weight_bits}")
        if self.cell_bits not in (1, 2, 4):
            raise ValueError(f"cell_bits must be 1, 2 or 4, not {self.cell_bits}")
        if self.enob is not None and not 1 <= self.enob <= 16:
            raise ValueError(f"enob must be in [1, 16] or None (ideal), not {self.enob}")
        if self.adc_max is not None and self.adc_max < 1:
            raise ValueError(f"adc_max must be >= 1, not {self.adc_max}")
        if self.xbar_rows is not None and self.xbar_rows < 1:
            raise ValueError(f"xbar_rows must be >= 1, not {self.xbar_rows}")

    @property
    def slices(self) -> int:
        return -(-(self.weight_bits - 1) // self.cell_bits)


def max_column_sum(cfg: PimConfig, k: int) -> int:
    rows = min(cfg.xbar_rows or k, k)
    return rows * ((1 << cfg.cell_bits) - 1)


def pim_mvm(x: np.ndarray, w: np.ndarray, cfg: PimConfig = PimConfig()
            ) -> tuple[np.ndarray, float]:
    """Returns ``(acc, step)``: the integer result and its scale (``adc_max / L``, 1 when
    ideal), so that ``acc * step`` approximates ``x @ w.T``."""
    x = np.asarray(x, dtype=I64)
    w = np.asarray(w, dtype=I64)
    K = w.shape[1]
    if x.shape[-1] != K:
        raise ValueError(f"x has {x.shape[-1]} columns, w has {K}")
    xlim, wlim = 1 << (cfg.input_bits - 1), 1 << (cfg.weight_bits - 1)
    if x.size and (x.min() < -xlim or x.max() >= xlim):
        raise ValueError(f"x must fit {cfg.input_bits} signed bits")
    if w.size and (w.min() <= -wlim or w.max() >= wlim):
        raise ValueError(f"w must be in (-2^{cfg.weight_bits - 1}, 2^{cfg.weight_bits - 1})")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    ux = x2 & ((1 << cfg.input_bits) - 1)  # two's complement bits
    rows = cfg.xbar_rows or K
    full = max_column_sum(cfg, K)
    if cfg.enob is None:
        levels, adc_max = None, None
    else:
        levels = (1 << cfg.enob) - 1
        # Default range: one code per column-sum unit when the levels cover the largest sum
        # (exact), else the full range with coarser steps.
        adc_max = cfg.adc_max if cfg.adc_max is not None else max(full, levels)
    cb, cmask = cfg.cell_bits, (1 << cfg.cell_bits) - 1
    acc = np.zeros((x2.shape[0], w.shape[0]), dtype=I64)
    for part, mag in ((1, np.maximum(w, 0)), (-1, np.maximum(-w, 0))):
        for s in range(cfg.slices):
            cells = (mag >> (s * cb)) & cmask  # [N, K]
            for b in range(cfg.input_bits):
                plane = (ux >> b) & 1  # [M, K]
                weight = -(1 << b) if b == cfg.input_bits - 1 else (1 << b)
                for r0 in range(0, K, rows):
                    col = plane[:, r0:r0 + rows] @ cells[:, r0:r0 + rows].T  # analog sums
                    if levels is None:
                        code = col
                    else:
                        clipped = np.minimum(col, adc_max)
                        code = np.minimum((2 * clipped * levels + adc_max) // (2 * adc_max),
                                          levels)
                    acc += part * weight * (code << (s * cb))
    step = 1.0 if levels is None else adc_max / levels
    return acc.reshape(*lead, w.shape[0]), step

"""What the PiM tile's RTL and its golden model share: the generator parameters and the
rules between them, the ADC's fixed-point format, the noise and fault constants, and the
gain register's encoding (``docs/number-formats.md``, "Processing in memory")."""

from __future__ import annotations

import math

from heterotron.hdl.contract.params import Param, ParamError, check

__all__ = ["PIM_PARAMS", "check_pim_params", "PimError", "ADC_FRAC", "NOISE_SHIFT",
           "NOISE_STD", "SIGMA_BITS", "RATE_BITS", "SEED_MIX", "FAULT_MIX", "M32", "slices_of",
           "gain_for_range"]

M32 = 0xFFFFFFFF

#: Fractional bits of the ADC gain and offset.
ADC_FRAC = 12
#: ``noise = (z * sigma_q) >> NOISE_SHIFT``.
NOISE_SHIFT = 8
#: Standard deviation of ``z``: four independent bytes, each ``2b - 255`` (variance (2^16-1)/3).
NOISE_STD = math.sqrt(4 * ((1 << 16) - 1) / 3)
SIGMA_BITS = 16  # sigma_q register
RATE_BITS = 16  # fault_rate register: probability fault_rate / 2^16
SEED_MIX = 0x9E3779B9  # ADC a's LFSR starts at (seed ^ (SEED_MIX * (a + 1))) | 1
FAULT_MIX = 0x6A09E667


class PimError(ValueError):
    """A configuration or weight write the tile refuses (the RTL sets its ``error`` flag)."""


def slices_of(weight_bits: int, cell_bits: int) -> int:
    return -(-(weight_bits - 1) // cell_bits)


PIM_PARAMS = (
    Param("lanes", int, 8, "input elements per beat", 1, 64),
    Param("rows", int, 64, "crossbar rows (input vector length)", 1, 256,
          multiple_of="lanes"),
    Param("cols", int, 8, "output columns", 1, 64),
    Param("input_bits", int, 8, "signed input width (bit-planes)", 2, 16),
    Param("weight_bits", int, 8, "signed weight width", 2, 16),
    Param("cell_bits", int, 2, "bits per cell: 1, 2 or 4", 1, 4),
    Param("enob", int, 6, "ADC bits", 1, 10),
    Param("adc_range", str, "calibrated", "ADC clip range: run-time register or constant",
          choices=("calibrated", "fixed")),
    Param("adc_max", int, 0, "ADC range at reset in column-sum units; 0 = full range",
          0, 256 * 15),
    Param("adc_share", int, 8, "bit-lines per ADC (conversion cycles per plane)", 1, 1920),
    Param("noise", bool, True, "LFSR noise on the ADC"),
    Param("faults", bool, True, "stuck-at fault injection when weights are written"),
    Param("skip_zero", bool, True, "skip all-zero input bit-planes"),
    Param("input_code", str, "twos", "input bit-planes: two's complement, or sign-magnitude "
          "(positive then negative elements' magnitudes)", choices=("twos", "signmag")),
)


def check_pim_params(p: dict) -> None:
    """The rules between a tile's parameters (each one's range is in ``PIM_PARAMS``)."""
    check(PIM_PARAMS, **p)
    if p["cell_bits"] not in (1, 2, 4):
        raise ParamError(f"cell_bits must be 1, 2 or 4, not {p['cell_bits']}")
    full = p["rows"] * ((1 << p["cell_bits"]) - 1)
    if p["adc_max"] > full:
        raise ParamError(f"adc_max must be 0 (the full range) or in [1, rows * (2^cell_bits - 1)"
                         f" = {full}], not {p['adc_max']}")
    lines = p["cols"] * 2 * slices_of(p["weight_bits"], p["cell_bits"])
    if lines % p["adc_share"]:
        divisors = [d for d in range(1, lines + 1) if lines % d == 0]
        raise ParamError(f"adc_share must divide the tile's {lines} bit-lines (cols * 2 * "
                         f"slices), one of {divisors}, not {p['adc_share']}")


def gain_for_range(adc_range: float, enob: int) -> int:
    """The gain register for a clip range of ``adc_range`` column-sum units: ``round(L * 2^F /
    range)`` (at least 1), so that a sum of ``adc_range`` converts to the top code ``L``."""
    if adc_range <= 0:
        raise PimError(f"the ADC range must be positive, not {adc_range}")
    levels = (1 << enob) - 1
    return max(1, int(math.floor(levels * (1 << ADC_FRAC) / adc_range + 0.5)))

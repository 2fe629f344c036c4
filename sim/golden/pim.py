"""Golden model of the analog processing-in-memory tile (:class:`heterotron.hdl.pim.PimTile`).

A tile is a ``rows`` x ``cols`` crossbar that computes ``acc ~ x @ w.T`` for a signed integer
input vector ``x`` [rows] and weights ``w`` [cols, rows]. Everything below is integer and is
what the RTL does, bit for bit (``docs/number-formats.md``, "Processing in memory"):

* **Weights** are a differential pair, ``w = pos - neg``, each magnitude in ``weight_bits - 1``
  bits, **bit-sliced** into ``slices`` cells of ``cell_bits``. Column ``c`` owns ``2 * slices``
  bit-lines; bit-line ``j = (c * 2 + part) * slices + s`` (part 0 = pos, 1 = neg).
* **Stuck-at faults** are drawn when a weight is written: every cell hashes its address with
  the fault seed (:func:`fault_hash`); if the low 16 bits are below ``fault_rate`` the cell is
  stuck at 0 or at its maximum (bit 16) instead of taking its value.
* **Inputs** are applied **bit-serially**, LSB first. ``input_code="twos"``: ``input_bits``
  two's complement bit-planes, the sign plane counting ``-2^(input_bits-1)``. ``"signmag"``:
  ``2 * input_bits`` planes, the magnitudes of the positive elements (others 0), then those of
  the negative elements, whose terms are subtracted. With ``skip_zero`` a plane whose bits are
  all zero is skipped (not converted; no cycles). A vector that is all zero costs one idle slot
  and gives 0.
* **ADC**: every converted (plane, bit-line) analog sum ``P = sum_r bit[r] * cell[r, j]``
  becomes ``code = clamp((P * gain + offset + noise + 2^(F-1)) >> F, 0, 2^enob - 1)`` with
  ``F = ADC_FRAC``. ``gain = L * 2^F / range`` (:func:`gain_for_range`) sets the clip range;
  ``offset`` is in 2^-F LSB. ``noise = (z * sigma_q) >> NOISE_SHIFT``, ``z`` the sum of the four
  bytes of the ADC's xorshift32 state, each mapped to ``2b - 255`` (an Irwin-Hall
  approximation of a Gaussian with standard deviation :data:`NOISE_STD`).
* **ADC sharing**: ADC ``a`` converts bit-lines ``a * adc_share .. a * adc_share + share-1``, one
  per slot ``k``, so a converted plane takes ``adc_share`` slots. Each ADC steps its own LFSR
  once per conversion, in the order (vector, plane, slot).
* **Shift and add**: ``acc[c] += sign * code << (b + s * cell_bits)`` for plane bit ``b``, sign
  negative for the neg part and for the sign plane or negative pass (both: positive).

With an ADC of enough levels for the largest column sum (``2^enob - 1 >= rows * (2^cell_bits -
1)``), the default range, no offset, noise or fault, ``acc == x @ w.T`` exactly; otherwise ``acc``
is in units of ``2^F / gain`` column-sum units (:meth:`PimTileModel.step`).

:class:`PimTileModel` holds ``tiles`` independent tiles at once (same parameters, own weights,
LFSRs and statistics) so that a large matrix mapped onto a grid of tiles (:class:`PimMatrix`)
runs at NumPy speed; one physical tile is ``tiles=1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.contract.pim import (  # noqa: F401 (re-exported)
    ADC_FRAC,
    FAULT_MIX,
    M32,
    NOISE_SHIFT,
    NOISE_STD,
    PIM_PARAMS,
    RATE_BITS,
    SEED_MIX,
    SIGMA_BITS,
    PimError,
    check_pim_params,
    gain_for_range,
    slices_of,
)

__all__ = ["ADC_FRAC", "NOISE_SHIFT", "NOISE_STD", "PimError", "PimTileModel", "PimMatrix",
           "gain_for_range", "sigma_code", "rate_code", "xorshift32", "noise_z", "fault_hash",
           "adc_seed_states", "tile_params", "slices_of"]

I64 = np.int64
U64 = np.uint64


def tile_params(**given) -> dict:
    """All of a tile's generator parameters, defaults filled in and validated as the RTL's
    constructor validates them (:class:`heterotron.hdl.pim.PimTile`)."""
    p = defaults(PIM_PARAMS, given)
    check_pim_params(p)
    return p


# -- the integer pieces, shared by the tile and its tests -------------------------------------


def xorshift32(x):
    """One step of Marsaglia's xorshift32 (13, 17, 5) on Python ints or uint64 arrays."""
    x = x ^ ((x << 13) & M32)
    x = x ^ (x >> 17)
    return x ^ ((x << 5) & M32)


def noise_z(state):
    """Sum of the four bytes of ``state``, each mapped to ``2b - 255`` (range +-1020)."""
    if isinstance(state, np.ndarray):
        s = state.astype(I64)
        return sum(2 * ((s >> (8 * i)) & 255) - 255 for i in range(4))
    return sum(2 * ((state >> (8 * i)) & 255) - 255 for i in range(4))


def adc_seed_states(seed: int, n_adc: int) -> np.ndarray:
    a = np.arange(1, n_adc + 1, dtype=U64)
    return ((U64(seed & M32) ^ ((U64(SEED_MIX) * a) & U64(M32))) | U64(1)).astype(U64)


def fault_hash(seed, addr):
    """Three xorshift32 rounds of ``seed ^ addr ^ FAULT_MIX`` (ints or uint64 arrays)."""
    h = (seed ^ addr ^ FAULT_MIX) & M32
    for _ in range(3):
        h = xorshift32(h)
    return h


def sigma_code(sigma_lsb: float) -> int:
    """The ``sigma_q`` register for a noise standard deviation of ``sigma_lsb`` ADC LSB."""
    q = int(round(sigma_lsb * (1 << (ADC_FRAC + NOISE_SHIFT)) / NOISE_STD))
    if not 0 <= q < 1 << SIGMA_BITS:
        top = ((1 << SIGMA_BITS) - 1) * NOISE_STD / (1 << (ADC_FRAC + NOISE_SHIFT))
        raise PimError(f"noise sigma must be in [0, {top:.2f}] LSB, not {sigma_lsb}")
    return q


def rate_code(rate: float) -> int:
    """The ``fault_rate`` register for a probability ``rate`` that a cell is stuck."""
    if not 0.0 <= rate < 1.0:
        raise PimError(f"fault rate must be in [0, 1), not {rate}")
    return min((1 << RATE_BITS) - 1, int(round(rate * (1 << RATE_BITS))))


# -- the tile -------------------------------------------------------------------------------


@dataclass
class Stats:
    """Per tile: vectors, converted planes and slots, skipped planes and the slots they saved."""

    vectors: np.ndarray
    conv_cycles: np.ndarray
    skip_cycles: np.ndarray
    idle_cycles: np.ndarray  # the one slot of an all-zero vector


class PimTileModel:
    """``tiles`` tiles of one parameter set, in the state the RTL would be in.

    Registers (:meth:`configure`) start as the RTL's reset: gain from ``adc_max`` (0: the full
    range), offset 0, sigma 0, noise seed 0, fault rate 0, fault seed 0; the array starts with
    every cell 0.
    """

    def __init__(self, tiles: int = 1, **params):
        p = tile_params(**params)
        self.p = p
        self.tiles = tiles
        self.rows, self.cols = p["rows"], p["cols"]
        self.S = slices_of(p["weight_bits"], p["cell_bits"])
        self.J = self.cols * 2 * self.S
        self.share = p["adc_share"]
        self.n_adc = self.J // self.share
        self.levels = (1 << p["enob"]) - 1
        full = self.rows * ((1 << p["cell_bits"]) - 1)
        self.full_range = full
        self.reset_gain = gain_for_range(p["adc_max"] or max(full, self.levels), p["enob"])
        self.gain = self.reset_gain
        self.offset = 0
        self.sigma_q = 0
        self.fault_rate = 0
        self.fault_seed = np.zeros(tiles, dtype=U64)
        self.states = np.stack([adc_seed_states(0, self.n_adc)] * tiles)
        self.cells = np.zeros((tiles, self.rows, self.J), dtype=I64)
        z = np.zeros(tiles, dtype=I64)
        self.stats = Stats(z.copy(), z.copy(), z.copy(), z.copy())

    # -- configuration (the RTL's cfg and wr ports) -------------------------------------------

    @property
    def offset_limit(self) -> int:
        return 1 << (ADC_FRAC + self.p["enob"])

    def configure(self, *, gain: int | None = None, offset: int | None = None,
                  sigma_q: int | None = None, noise_seed: int | np.ndarray | None = None,
                  fault_rate: int | None = None, fault_seed: int | np.ndarray | None = None
                  ) -> None:
        """Register writes; a value the RTL refuses raises :class:`PimError` (and changes
        nothing). Seeds may be one per tile."""
        p = self.p
        if gain is not None:
            if p["adc_range"] == "fixed":
                raise PimError("gain is fixed at generation (adc_range=fixed)")
            if not 1 <= gain < 1 << (ADC_FRAC + p["enob"]):
                raise PimError(f"gain must be in [1, 2^{ADC_FRAC + p['enob']}), not {gain}")
        if offset is not None and not -self.offset_limit <= offset < self.offset_limit:
            raise PimError(f"offset must be in [-2^{ADC_FRAC + p['enob']}, "
                           f"2^{ADC_FRAC + p['enob']}), not {offset}")
        if sigma_q is not None:
            if not 0 <= sigma_q < 1 << SIGMA_BITS:
                raise PimError(f"sigma_q must be in [0, 2^{SIGMA_BITS}), not {sigma_q}")
            if sigma_q and not p["noise"]:
                raise PimError("noise was not generated (noise=false): sigma must be 0")
        if fault_rate is not None:
            if not 0 <= fault_rate < 1 << RATE_BITS:
                raise PimError(f"fault_rate must be in [0, 2^{RATE_BITS}), not {fault_rate}")
            if fault_rate and not p["faults"]:
                raise PimError("faults were not generated (faults=false): rate must be 0")
        if gain is not None:
            self.gain = gain
        if offset is not None:
            self.offset = offset
        if sigma_q is not None:
            self.sigma_q = sigma_q
        if fault_rate is not None:
            self.fault_rate = fault_rate
        if fault_seed is not None:
            self.fault_seed = np.broadcast_to(np.asarray(fault_seed, dtype=U64) & U64(M32),
                                              (self.tiles,)).copy()
        if noise_seed is not None:
            seeds = np.broadcast_to(np.asarray(noise_seed, dtype=np.int64), (self.tiles,))
            self.states = np.stack([adc_seed_states(int(s), self.n_adc) for s in seeds])

    def cell_address(self, row, col, part, s):
        """The address a cell hashes for its fault: ``row | col | part | slice`` bit fields."""
        cb = max(1, (self.cols - 1).bit_length())
        sb = max(1, (self.S - 1).bit_length())
        return ((((row << cb) | col) << 1 | part) << sb) | s

    def program(self, w: np.ndarray, tile: int | None = None) -> None:
        """Write a weight matrix ``w`` [cols, rows] (every cell, faults drawn as written) into
        one tile (the only one, or ``tile``), or ``w`` [tiles, cols, rows] into all."""
        wb = self.p["weight_bits"]
        lim = (1 << (wb - 1)) - 1
        w = np.asarray(w, dtype=I64)
        if tile is None and self.tiles == 1 and w.ndim == 2:
            tile = 0
        shape = (self.cols, self.rows) if tile is not None else (self.tiles, self.cols, self.rows)
        if w.shape != shape:
            raise PimError(f"weights must have shape {shape}, not {w.shape}")
        if w.size and (w.min() < -lim or w.max() > lim):
            raise PimError(f"weights must be in [-{lim}, {lim}] (weight_bits={wb})")
        tiles = [tile] if tile is not None else list(range(self.tiles))
        w = w[None] if tile is not None else w
        cb, cmask = self.p["cell_bits"], (1 << self.p["cell_bits"]) - 1
        r = np.arange(self.rows, dtype=U64)[:, None]
        c = np.arange(self.cols, dtype=U64)[None, :]
        for t, wt in zip(tiles, w, strict=True):
            cells = np.zeros((self.rows, self.cols, 2, self.S), dtype=I64)
            for part, mag in ((0, np.maximum(wt, 0)), (1, np.maximum(-wt, 0))):
                for s in range(self.S):
                    v = ((mag.T >> (s * cb)) & cmask).astype(I64)  # [rows, cols]
                    if self.fault_rate:
                        h = fault_hash(self.fault_seed[t],
                                       self.cell_address(r, c, U64(part), U64(s)))
                        stuck = (h & U64(0xFFFF)) < U64(self.fault_rate)
                        level = np.where((h >> U64(16)) & U64(1), cmask, 0)
                        v = np.where(stuck, level, v)
                    cells[:, :, part, s] = v
            self.cells[t] = cells.reshape(self.rows, self.J)

    def step(self) -> float:
        """Column-sum units per ADC code: ``acc * step`` approximates ``x @ w.T``."""
        return (1 << ADC_FRAC) / self.gain

    # -- the MVM --------------------------------------------------------------------------------

    @property
    def n_planes(self) -> int:
        """Bit-planes per vector: ``input_bits`` (two's complement), or ``2 * input_bits``
        (sign-magnitude: the positive elements' magnitudes, then the negative ones')."""
        return self.p["input_bits"] * (2 if self.p["input_code"] == "signmag" else 1)

    def plane_weights(self) -> np.ndarray:
        """Each plane's weight in the shift and add: ``2^b``, negative for the sign plane
        (two's complement) or for the negative elements' pass (sign-magnitude)."""
        ib = self.p["input_bits"]
        w = np.array([1 << b for b in range(ib)], dtype=I64)
        if self.p["input_code"] == "signmag":
            return np.concatenate([w, -w])
        w[-1] = -w[-1]
        return w

    def planes(self, x: np.ndarray) -> np.ndarray:
        """[..., n_planes, rows] bits of ``x`` [..., rows], in conversion order (LSB first)."""
        ib = self.p["input_bits"]
        b = np.arange(ib)[:, None]
        if self.p["input_code"] == "signmag":
            pos, neg = np.maximum(x, 0), np.maximum(-x, 0)
            return np.concatenate([(pos[..., None, :] >> b) & 1, (neg[..., None, :] >> b) & 1],
                                  axis=-2)
        return ((x & ((1 << ib) - 1))[..., None, :] >> b) & 1

    def plane_mask(self, x: np.ndarray) -> np.ndarray:
        """[tiles, M, n_planes] booleans: which planes are converted."""
        if not self.p["skip_zero"]:
            return np.ones((*x.shape[:2], self.n_planes), dtype=bool)
        return self.planes(x).any(axis=-1)

    def column_sums(self, x: np.ndarray) -> np.ndarray:
        """[tiles, M, n_planes, J]: every plane's analog bit-line sums (converted or not)."""
        planes = self.planes(x).astype(np.float32)
        # exact: sums are below 2^24
        return np.rint(planes @ self.cells[:, None].astype(np.float32)).astype(I64)

    def _noise(self, conv: np.ndarray) -> np.ndarray | None:
        """Each converted slot's noise, [tiles, M, n_planes, J]; steps the LFSRs."""
        if not self.p["noise"]:
            return None
        T, M, B = conv.shape
        share = self.share
        counts = conv.reshape(T, -1).sum(axis=1) * share  # conversions per ADC, per tile
        steps = int(counts.max()) if counts.size else 0
        z = np.zeros((T, self.n_adc, max(steps, 1)), dtype=I64)
        cur = kept = self.states
        for i in range(steps):
            cur = xorshift32(cur)
            z[:, :, i] = noise_z(cur)
            kept = np.where((i < counts)[:, None], cur, kept)  # a tile stops at its own count
        self.states = kept
        rank = np.cumsum(conv.reshape(T, -1), axis=1).reshape(T, M, B) - 1  # plane order
        j = np.arange(self.J)
        a, k = j // share, j % share
        idx = rank[..., None] * share + k  # [T, M, B, J]
        idx = np.where(conv[..., None], idx, 0)
        tt = np.arange(T)[:, None, None, None]
        zz = z[tt, a[None, None, None, :], idx]
        return np.where(conv[..., None], (zz * self.sigma_q) >> NOISE_SHIFT, 0)

    def mvm(self, x: np.ndarray) -> np.ndarray:
        """``x`` [tiles, M, rows] (or [M, rows] when tiles=1) -> ``acc`` [tiles, M, cols] (or
        [M, cols]), and the statistics advanced."""
        x = np.asarray(x, dtype=I64)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[None]
        ib = self.p["input_bits"]
        if x.shape[0] != self.tiles or x.shape[2] != self.rows:
            raise PimError(f"inputs must have shape [{self.tiles}, M, {self.rows}], "
                           f"not {list(x.shape)}")
        if x.size and (x.min() < -(1 << (ib - 1)) or x.max() >= 1 << (ib - 1)):
            raise PimError(f"inputs must fit {ib} signed bits (input_bits)")
        conv = self.plane_mask(x)
        sums = self.column_sums(x)
        noise = self._noise(conv)
        v = sums * self.gain + self.offset + (1 << (ADC_FRAC - 1))
        if noise is not None:
            v = v + noise
        code = np.clip(v >> ADC_FRAC, 0, self.levels)
        code = np.where(conv[..., None], code, 0)
        # shift and add: bit-line j -> column c, part, slice
        cb = self.p["cell_bits"]
        j = np.arange(self.J)
        part, s = (j // self.S) % 2, j % self.S
        wj = np.where(part == 0, 1, -1) * (1 << (s * cb))
        per_j = np.einsum("tmbj,b->tmj", code, self.plane_weights()) * wj
        acc = per_j.reshape(*x.shape[:2], self.cols, 2 * self.S).sum(axis=3)
        # statistics
        n_conv = conv.sum(axis=2)  # [tiles, M]
        self.stats.vectors += x.shape[1]
        self.stats.conv_cycles += n_conv.sum(axis=1) * self.share
        self.stats.skip_cycles += (self.n_planes - n_conv).sum(axis=1) * self.share
        self.stats.idle_cycles += (n_conv == 0).sum(axis=1)
        return acc[0] if squeeze else acc


# -- a matrix on a grid of tiles ------------------------------------------------------------


class PimMatrix:
    """A weight matrix ``w`` [N, K] on a grid of tiles: ``K`` in blocks of ``rows`` (summed
    digitally), ``N`` in blocks of ``cols``; zero-padded at the edges. Every tile is the golden
    :class:`PimTileModel`; :meth:`matmul` returns integers at the scale of ``x @ w.T``."""

    def __init__(self, w: np.ndarray, *, fault_seed: int = 0, noise_seed: int = 0, **params):
        w = np.asarray(w, dtype=I64)
        self.N, self.K = w.shape
        probe = tile_params(**params)
        rows, cols = probe["rows"], probe["cols"]
        self.kb, self.nb = -(-self.K // rows), -(-self.N // cols)
        self.model = PimTileModel(tiles=self.kb * self.nb, **params)
        self.rows, self.cols = rows, cols
        wp = np.zeros((self.nb * cols, self.kb * rows), dtype=I64)
        wp[:self.N, :self.K] = w
        # tile t = kb_i * nb + nb_j holds wp[nb_j block, kb_i block]
        grid = wp.reshape(self.nb, cols, self.kb, rows).transpose(2, 0, 1, 3)
        self.grid = grid.reshape(-1, cols, rows)
        seeds = np.arange(self.kb * self.nb, dtype=np.int64)
        self.fault_seed, self.noise_seed = fault_seed, noise_seed
        self.model.configure(noise_seed=(noise_seed + seeds) & M32)
        self._fault_seeds = (fault_seed + seeds) & M32

    def set_adc(self, *, gain: int | None = None, offset: int = 0, sigma_q: int = 0) -> None:
        self.model.configure(gain=gain, offset=offset, sigma_q=sigma_q)

    def program(self, fault_rate: int = 0) -> None:
        self.model.configure(fault_rate=fault_rate, fault_seed=self._fault_seeds)
        self.model.program(self.grid)

    def _blocks(self, x: np.ndarray) -> np.ndarray:
        M = x.shape[0]
        xp = np.zeros((M, self.kb * self.rows), dtype=I64)
        xp[:, :self.K] = x
        xb = xp.reshape(M, self.kb, self.rows).transpose(1, 0, 2)  # [kb, M, rows]
        return np.repeat(xb, self.nb, axis=0)  # tile order kb_i * nb + nb_j

    def column_sums(self, x: np.ndarray) -> np.ndarray:
        """Every tile's analog sums on ``x`` (for calibrating the ADC range)."""
        return self.model.column_sums(self._blocks(np.asarray(x, dtype=I64)))

    def matmul_codes(self, x: np.ndarray) -> np.ndarray:
        """The digital sum over the K blocks of the tiles' accumulators, [M, N], in ADC-code
        units (:meth:`PimTileModel.step`)."""
        x = np.asarray(x, dtype=I64)
        acc = self.model.mvm(self._blocks(x))  # [tiles, M, cols]
        acc = acc.reshape(self.kb, self.nb, x.shape[0], self.cols).sum(axis=0)
        return acc.transpose(1, 0, 2).reshape(x.shape[0], -1)[:, :self.N]

    def matmul(self, x: np.ndarray) -> np.ndarray:
        """``x @ w.T`` as the tiles compute it, rescaled by the ADC step to the exact product's
        scale (rounded half up: ``(acc * 2^F + gain/2) // gain``)."""
        acc = self.matmul_codes(x)
        g = self.model.gain
        return (acc * (1 << ADC_FRAC) + g // 2) // g

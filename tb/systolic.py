"""cocotb testbench: SystolicArray against :mod:`heterotron.sim.golden.systolic` (``os_tile``,
``ws_rows``), for whatever parameters the runner built it with.

Run through the runner: ``heterotron sim systolic --param rows=4 --param dataflow=ws``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.systolic import SystolicArray
from heterotron.sim.golden.systolic import operand_range, os_tile, product_range, ws_rows
from heterotron.tb.common import (
    STALL_PHASES,
    ClockedBench,
    Scoreboard,
    StreamSink,
    StreamSource,
    encode,
    in_phases,
    make_rng,
    pack,
    params_from_env,
    port_shapes,
    unpack,
    vectors_from_env,
)

DEFAULT_VECTORS = 3000  # input beats per random test


class SystolicBench:
    """Drivers, golden model and scoreboard around one SystolicArray."""

    def __init__(self, dut, rng: np.random.Generator):
        p = params_from_env(defaults(SystolicArray.PARAMS))
        self.dut, self.p, self.rng = dut, p, rng
        self.R, self.C = p["rows"], p["cols"]
        self.os = p["dataflow"] == "os"
        self.layout = port_shapes(SystolicArray, p)["i"]
        self.a_rng = operand_range(p["a_width"], p["a_signed"])
        self.b_rng = operand_range(p["b_width"], p["b_signed"])
        self.bias_rng = operand_range(p["bias_width"], True)
        self.acc_rng = operand_range(p["acc_width"], True)
        self.source = StreamSource(dut, "i", rng)
        parts = [self.source]
        if not self.os:
            self.wsource = StreamSource(dut, "w", rng)
            parts.append(self.wsource)
        self.scoreboard = Scoreboard("o", fmt=lambda w: unpack(w, p["acc_width"], self.C))
        self.sink = StreamSink(dut, "o", rng, on_beat=self.scoreboard.got)
        self.bench = ClockedBench(dut, [*parts, self.sink])
        self.beats = 0

    def operands(self, shape, which: str, extreme: str | None = None) -> np.ndarray:
        lo, hi = self.a_rng if which == "a" else self.b_rng
        if extreme == "lo":
            return np.full(shape, lo, dtype=np.int64)
        if extreme == "hi":
            return np.full(shape, hi, dtype=np.int64)
        full = self.rng.integers(lo, hi, size=shape, endpoint=True)
        corner = self.rng.choice(np.array([lo, hi, 0, min(max(lo, -1), hi)]), size=shape)
        return np.where(self.rng.random(shape) < 0.8, full, corner)

    # -- output-stationary ------------------------------------------------------------------

    def send_os_tile(self, a: np.ndarray, b: np.ndarray, bias: np.ndarray) -> None:
        """Queue one tile: ``a`` is (K, rows), ``b`` (K, cols); expect rows output beats."""
        K = len(a)
        words = [encode(self.layout, {"a": [int(v) for v in a[k]], "b": [int(v) for v in b[k]],
                                      "bias": [int(v) for v in bias], "first": k == 0,
                                      "last": k == K - 1}) for k in range(K)]
        want = os_tile(a, b, bias)
        for i in range(self.R):
            self.scoreboard.expect(pack(want[i], self.p["acc_width"]),
                                   f"tile with K={K}, row {i}")
        self.source.send(words)
        self.beats += K

    def random_bias(self) -> np.ndarray:
        lo, hi = self.bias_rng
        return self.rng.integers(lo, hi, size=self.C, endpoint=True)

    # -- weight-stationary ------------------------------------------------------------------

    def psum_bounds(self, k_rest: int) -> tuple[int, int]:
        """Partial sums a caller may feed so that the tile's ``rows`` products cannot
        overflow: a bias plus ``k_rest`` earlier products (the engine's contract)."""
        plo, phi = product_range(self.a_rng, self.b_rng)
        lo = self.bias_rng[0] + k_rest * min(plo, 0)
        hi = self.bias_rng[1] + k_rest * max(phi, 0)
        return lo, hi

    def send_ws_tile(self, w: np.ndarray, a: np.ndarray, psum: np.ndarray) -> None:
        """Queue a weight tile (rows, cols) and the beats (a row, psum row) that use it."""
        self.wsource.send([pack(w[i], self.p["b_width"]) for i in range(self.R)])
        words = [encode(self.layout, {"a": [int(v) for v in a[n]],
                                      "psum": [int(v) for v in psum[n]], "swap": n == 0})
                 for n in range(len(a))]
        want = ws_rows(a, w, psum)
        for n in range(len(a)):
            self.scoreboard.expect(pack(want[n], self.p["acc_width"]),
                                   f"weight tile beat {n} of {len(a)}")
        self.source.send(words)
        self.beats += len(a)

    async def drain(self) -> None:
        pending = len(self.scoreboard.expected) + len(self.source.queue)
        limit = 500 + 40 * pending * max(1, self.R)
        await self.bench.wait_until(
            lambda: self.source.idle and not self.scoreboard.expected, limit, "drain")
        await self.bench.cycles(self.R + self.C + 10)  # an extra beat would fail got()
        self.scoreboard.check_done()


def _k_lengths(rng: np.random.Generator, total: int, R: int, max_k: int) -> list[int]:
    """Tile lengths adding up to about ``total``: K = 1, K < rows, K = rows and longer."""
    out, n = [], 0
    while n < total:
        k = int(rng.choice([1, max(1, R - 1), R, rng.integers(1, 4 * R + 3)]))
        k = min(k, max_k)
        out.append(k)
        n += k
    return out


@cocotb.test()
async def test_random(dut):
    """Random tiles of random length (K = 1 included), random operands, random stalls."""
    tb = SystolicBench(dut, make_rng(1))
    await tb.bench.start()
    total = vectors_from_env(DEFAULT_VECTORS)
    share = max(1, total // len(STALL_PHASES))
    tiles = 0

    async def phase(k: int) -> int:
        nonlocal tiles
        first = tb.beats
        if tb.os:
            for K in _k_lengths(tb.rng, share, tb.R, tb.p["max_k"]):
                tb.send_os_tile(tb.operands((K, tb.R), "a"), tb.operands((K, tb.C), "b"),
                                tb.random_bias())
                tiles += 1
        else:
            lo, hi = tb.psum_bounds(max(0, tb.p["max_k"] - tb.R))
            while tb.beats - first < share:
                M = int(tb.rng.choice([1, tb.R + tb.C, tb.rng.integers(1, 3 * (tb.R + tb.C))]))
                psum = tb.rng.integers(lo, hi, size=(M, tb.C), endpoint=True)
                tb.send_ws_tile(tb.operands((tb.R, tb.C), "b"), tb.operands((M, tb.R), "a"),
                                psum)
                tiles += 1
        await tb.drain()
        return tb.beats - first

    await in_phases(tb.bench, total, phase)
    assert tb.scoreboard.matched > 0
    dut._log.info("%s: %d tiles, %d input beats, %d output beats bit-exact in %d cycles",
                  tb.p["dataflow"], tiles, tb.beats, tb.scoreboard.matched, tb.bench.cycle)


@cocotb.test()
async def test_extremes(dut):
    """Every operand at its extreme over the longest K the accumulator is sized for, with
    the bias (or partial sum) at its extreme: the largest sums must come out exact."""
    tb = SystolicBench(dut, make_rng(2))
    await tb.bench.start()
    tb.bench.set_stalls(0.2, 0.2)
    p, R, C = tb.p, tb.R, tb.C
    combos = [("lo", "lo"), ("hi", "hi"), ("lo", "hi"), ("hi", "lo")]
    if tb.os:
        K = p["max_k"]
        for (ea, eb), bias_end in zip(combos, (1, 1, 0, 0), strict=True):
            bias = np.full(C, tb.bias_rng[bias_end], dtype=np.int64)
            tb.send_os_tile(tb.operands((K, R), "a", ea), tb.operands((K, C), "b", eb), bias)
        # Back-to-back single-beat tiles at the extremes (spacing logic under load).
        for (ea, eb) in combos:
            tb.send_os_tile(tb.operands((1, R), "a", ea), tb.operands((1, C), "b", eb),
                            np.full(C, tb.bias_rng[1], dtype=np.int64))
    else:
        lo, hi = tb.psum_bounds(max(0, p["max_k"] - R))
        for (ea, eb) in combos:
            M = R + C + 3
            psum = np.where(np.arange(M)[:, None] % 2 == 0, lo, hi) * np.ones((1, C), np.int64)
            tb.send_ws_tile(tb.operands((R, C), "b", eb), tb.operands((M, R), "a", ea), psum)
    await tb.drain()
    dut._log.info("extremes bit-exact: %d output beats", tb.scoreboard.matched)

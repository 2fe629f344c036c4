"""cocotb testbench: Softmax against :func:`heterotron.sim.golden.sfu.softmax_row`.

Run through the runner: ``heterotron sim softmax --param lanes=2 --param variant=divfree``.
"""

from __future__ import annotations

import math

import cocotb
import numpy as np

from heterotron.hdl.rowstream import SfuError
from heterotron.hdl.softmax import Softmax
from heterotron.sim.golden.intops import EXP_C, EXP_MIN_BITS, exp_consts, exp_consts_problem
from heterotron.sim.golden.sfu import softmax_row
from heterotron.tb.common import make_rng
from heterotron.tb.rows import BENCH, RowBench, bench_rows, random_rows

DEFAULT_VECTORS = 40  # rows per random test


class SoftmaxBench(RowBench):
    def __init__(self, dut, rng):
        super().__init__(dut, Softmax, rng)
        self.W, self.E, self.N = self.p["in_width"], self.p["exp_width"], self.p["max_len"]
        self.field = self.shapes["cfg"]

    def fits(self, x0: int, b: int, c: int) -> bool:
        """Accepted by the unit and within its port's fields: the golden rule."""
        return exp_consts_problem(x0, b, c, self.E) is None

    def rand_consts(self) -> tuple[int, int, int]:
        """From a real scale (c between 2^16 or 2^(E/2) and 2^E) most of the time; otherwise
        any constants the port accepts."""
        rng = self.rng
        while True:
            if rng.random() < 0.7:
                c_target = 2.0 ** rng.uniform(max(EXP_MIN_BITS, self.E / 2), self.E - 0.01)
                k = exp_consts(math.sqrt(EXP_C / c_target))
                x0, b, c = k.x0, k.b, k.c
            else:
                h = self.field["x0"].shape.width - 1
                x0 = -int(rng.integers(1, 1 << h, endpoint=True))
                b = int(rng.integers(-x0, (1 << (h + 1)) - 1, endpoint=True))
                c = int(rng.integers(1 << EXP_MIN_BITS, (1 << self.E) - 1, endpoint=True))
            if self.fits(x0, b, c):
                return x0, b, c

    async def set_consts(self, consts) -> None:
        x0, b, c = consts
        await self.configure({"x0": x0, "b": b, "c": c})
        if self.fits(x0, b, c):
            self.consts = consts

    def rand_row(self, length: int) -> np.ndarray:
        """Scores around a random maximum, spread over a few to many multiples of ``x0`` (the
        range where i-exp is not clamped), or uniform over the full range."""
        rng = self.rng
        if rng.random() < 0.25:
            return rng.integers(self.lo, self.hi, size=length, endpoint=True)
        spread = -self.consts[0] * float(rng.choice([0.5, 4, 40]))
        top = int(rng.integers(self.lo, self.hi, endpoint=True))
        row = top - rng.integers(0, max(1, int(spread)), size=length, endpoint=True)
        return np.clip(row, self.lo, self.hi)

    def row(self, values, context: str) -> None:
        x0, b, c = self.consts
        want = softmax_row(values, x0, b, c, variant=self.p["variant"],
                           out_bits=self.p["out_width"], max_len=self.N, exp_width=self.E)
        self.send_row({"i": values}, want, context)


@cocotb.test()
async def test_random(dut):
    """Random rows of random lengths 1..max_len, new constants every few rows, stalls."""
    await random_rows(SoftmaxBench(dut, make_rng(1)), DEFAULT_VECTORS, per_phase=8)


@cocotb.test()
async def test_corners(dut):
    """All-equal rows, one huge value (the saturating top corner), all minimum, all maximum,
    alternating extremes; a refused configuration; a row longer than max_len."""
    tb = SoftmaxBench(dut, make_rng(2))
    await tb.bench.start()
    await tb.new_consts()
    tb.send_corners()
    # A single element takes all the mass: 2^out_width saturates to 2^out_width - 1.
    tb.row(np.array([tb.hi]), "single element")
    top = (1 << tb.p["out_width"]) - 1
    assert tb.board.expected[-1][0] == ([top], 0, True), "the top corner was not exercised"
    await tb.drain()
    assert tb.error_flags() == 0

    # A refused write (x0 >= 0) flags CONFIG and keeps the constants.
    kept = tb.consts
    await tb.set_consts((1, 5, 1 << EXP_MIN_BITS))
    tb.row(tb.rand_row(tb.N), "after a refused configuration")
    await tb.drain()
    assert tb.consts == kept
    assert tb.error_flags() == SfuError.CONFIG

    # A row past max_len: computed on its first max_len elements, LENGTH flagged.
    tb.row(tb.rand_row(tb.N + tb.lanes + 1), "too long")
    await tb.drain()
    assert tb.error_flags() == SfuError.CONFIG | SfuError.LENGTH
    dut._log.info("corner rows bit-exact: %d beats", tb.board.matched)


@cocotb.test()
async def test_refuses_coarse_scales(dut):
    """Constants of a scale coarser than the unit computes within its bound (c < 2^16, the
    golden rule of exp_consts_problem) are refused: CONFIG, and the old constants stay."""
    tb = SoftmaxBench(dut, make_rng(4))
    await tb.bench.start()
    await tb.new_consts()
    kept = tb.consts
    k = exp_consts(math.sqrt(EXP_C / (1 << EXP_MIN_BITS)) * 0.999)  # the coarsest accepted
    assert k.c >= 1 << EXP_MIN_BITS
    coarse = (k.x0, k.b, (1 << EXP_MIN_BITS) - 1)
    assert exp_consts_problem(*coarse, tb.E) is not None
    await tb.set_consts(coarse)
    tb.row(tb.rand_row(tb.N), "after a refused coarse scale")
    await tb.drain()
    assert tb.consts == kept
    assert tb.error_flags() == SfuError.CONFIG
    await tb.set_consts((k.x0, k.b, k.c))
    assert tb.consts == (k.x0, k.b, k.c)
    for n in (1, tb.lanes, tb.N):
        tb.row(tb.rand_row(n), f"coarsest accepted scale, length {n}")
    await tb.drain()


@cocotb.test(skip=not BENCH)
async def test_bench(dut):
    """Steady-state cycles per row for the runner's row lengths (results checked)."""
    await bench_rows(SoftmaxBench(dut, make_rng(3)), "softmax")

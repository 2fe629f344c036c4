"""cocotb testbench: ResidualAdd against :func:`heterotron.sim.golden.sfu.residual_values`.

Run through the runner: ``heterotron sim residual --param lanes=2 --param out_width=16``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from heterotron.hdl.residual import ResidualAdd
from heterotron.hdl.rowstream import SfuError
from heterotron.sim.golden.sfu import residual_values
from heterotron.tb.common import make_rng
from heterotron.tb.rows import BENCH, RowBench, bench_rows, corner_rows, random_rows

DEFAULT_VECTORS = 60  # rows per random test


class ResidualBench(RowBench):
    def __init__(self, dut, rng):
        super().__init__(dut, ResidualAdd, rng, inputs=("a", "r"))

    def rand_consts(self) -> dict:
        """Multipliers over their range; shifts around the ones that fill the output."""
        rng, p = self.rng, self.p
        k = {}
        for m, e, width in (("m", "e", p["a_width"]), ("m_r", "e_r", p["r_width"])):
            k[m] = int(rng.integers(0, 1 << 31))
            natural = width - 1 + 31 - (p["out_width"] - 1)
            k[e] = int(np.clip(natural - rng.integers(-2, width), 0, 63))
        return k

    async def set_consts(self, k: dict) -> None:
        await self.configure(k)
        self.consts = k

    def rand_values(self, width: int, length: int) -> np.ndarray:
        bits = int(self.rng.integers(1, width, endpoint=True))
        return self.rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=length)

    def rand_row(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """A row of each input, ``(a, r)``."""
        return (self.rand_values(self.p["a_width"], length),
                self.rand_values(self.p["r_width"], length))

    def row(self, values, context: str) -> None:
        a, r = values
        k = self.consts
        want = residual_values(a, r, k["m"], k["e"], k["m_r"], k["e_r"], self.p["out_width"])
        self.send_row({"a": a, "r": r}, want, context)


@cocotb.test()
async def test_random(dut):
    """Random rows, new scales every few rows, random gaps on both inputs and stalls."""
    await random_rows(ResidualBench(dut, make_rng(1)), DEFAULT_VECTORS, per_phase=6)


@cocotb.test()
async def test_corners(dut):
    """Extreme operands, m = 0 and the largest m, shift 0 and 63; rows whose ``last`` marks
    disagree set MISMATCH (the output follows ``a``)."""
    tb = ResidualBench(dut, make_rng(2))
    await tb.bench.start()
    p = tb.p
    length = 3 * tb.lanes + 1
    a_rows = corner_rows(tb.rng, -(1 << (p["a_width"] - 1)), (1 << (p["a_width"] - 1)) - 1,
                         length)
    r_rows = corner_rows(tb.rng, -(1 << (p["r_width"] - 1)), (1 << (p["r_width"] - 1)) - 1,
                         length)
    for m, e in (((1 << 31) - 1, 0), ((1 << 31) - 1, 63), (0, 5), (1 << 30, 31)):
        await tb.set_consts({"m": m, "e": e, "m_r": (1 << 31) - 1 - m, "e_r": 63 - e})
        for j, (a, r) in enumerate(zip(a_rows, r_rows[::-1], strict=True)):
            tb.row((a, r), f"m={m} e={e}, corner {j}")
    await tb.drain()
    assert tb.error_flags() == 0
    # r ends its row one beat early: a's row structure is kept, the values pair up beat by beat
    a, r = tb.rand_row(2 * tb.lanes)
    k = tb.consts
    want = residual_values(a, r, k["m"], k["e"], k["m_r"], k["e_r"], p["out_width"])
    tb.sources["r"].send(tb.words("r", r[:tb.lanes]) + tb.words("r", r[tb.lanes:]))
    tb.sources["a"].send(tb.words("a", a))
    tb.expect_row(want, "mismatch")
    await tb.drain()
    assert tb.error_flags() == SfuError.MISMATCH
    dut._log.info("corner rows bit-exact: %d beats", tb.board.matched)


@cocotb.test(skip=not BENCH)
async def test_bench(dut):
    """Steady-state cycles per row for the runner's row lengths (results checked)."""
    await bench_rows(ResidualBench(dut, make_rng(3)), "residual")

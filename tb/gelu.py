"""cocotb testbench: Gelu against :func:`heterotron.sim.golden.sfu.gelu_values`.

Run through the runner: ``heterotron sim gelu --param lanes=2 --param in_width=12``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from heterotron.hdl.gelu import Gelu
from heterotron.hdl.rowstream import SfuError
from heterotron.sim.golden.intops import GELU_MAX_SCALE, gelu_consts, gelu_consts_problem
from heterotron.sim.golden.requantizer import dyadic
from heterotron.sim.golden.sfu import gelu_values
from heterotron.tb.common import make_rng
from heterotron.tb.rows import BENCH, RowBench, bench_rows, random_rows

DEFAULT_VECTORS = 60  # rows per random test


class GeluBench(RowBench):
    def __init__(self, dut, rng):
        super().__init__(dut, Gelu, rng)
        self.W, self.O = self.p["in_width"], self.p["out_width"]
        self.field = self.shapes["cfg"]

    def fits(self, k: dict) -> bool:
        """Accepted by the unit and within its port's fields: the golden rule."""
        return gelu_consts_problem(k["b"], k["c"], k["one"], self.W) is None

    def rand_consts(self) -> dict:
        """A real input scale the unit accepts (fields permitting) and an output scale that
        uses the output range, or now and then any multiplier and shift."""
        rng = self.rng
        hi = np.log2(GELU_MAX_SCALE * 0.999)
        while True:
            s = 2.0 ** rng.uniform(min(np.log2(0.3 / 2**self.W), hi - 2), hi)
            g = gelu_consts(s)
            k = {"b": g.b, "c": g.c, "one": g.one}
            if rng.random() < 0.8:
                s_out = self.hi * s / (1 << (self.O - 1)) * 2.0 ** rng.uniform(-3, 2)
                try:
                    k["m"], k["e"] = dyadic(g.out_scale / s_out, max_shift=63)
                except ValueError:
                    continue
            else:
                k["m"] = int(rng.integers(0, 1 << 31))
                k["e"] = int(rng.integers(0, 63, endpoint=True))
            if self.fits(k):
                return k

    async def set_consts(self, k: dict) -> None:
        await self.configure(k)
        if self.fits(k):
            self.consts = k

    def row(self, values, context: str) -> None:
        k = self.consts
        want = gelu_values(values, k["b"], k["c"], k["one"], k["m"], k["e"], self.O)
        self.send_row({"i": values}, want, context)

    def rand_row(self, length: int) -> np.ndarray:
        bits = int(self.rng.integers(1, self.W, endpoint=True))
        return self.rng.integers(-(1 << (bits - 1)), (1 << (bits - 1)), size=length)


@cocotb.test()
async def test_random(dut):
    """Random rows of random lengths and magnitudes, new constants every few rows, stalls."""
    await random_rows(GeluBench(dut, make_rng(1)), DEFAULT_VECTORS, per_phase=6)


@cocotb.test()
async def test_corners(dut):
    """Extreme rows under several constant sets; a refused configuration keeps the old one."""
    tb = GeluBench(dut, make_rng(2))
    await tb.bench.start()
    for rep in range(4):
        await tb.new_consts()
        every = np.arange(tb.lo, tb.hi + 1) if tb.W <= 10 else np.array([tb.lo, -1, 0, 1, tb.hi])
        tb.row(every, f"set {rep}: every value or the extremes")
        tb.send_corners([3 * tb.lanes + 1], f"set {rep}, ")
    await tb.drain()
    kept = tb.consts
    await tb.set_consts({**kept, "b": 3})
    tb.row(tb.rand_row(5), "after a refused configuration")
    await tb.drain()
    assert tb.consts == kept and tb.error_flags() == SfuError.CONFIG
    dut._log.info("corner rows bit-exact: %d beats", tb.board.matched)


@cocotb.test(skip=not BENCH)
async def test_bench(dut):
    """Steady-state cycles per row for the runner's row lengths (results checked)."""
    await bench_rows(GeluBench(dut, make_rng(3)), "gelu")

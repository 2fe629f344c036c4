"""cocotb testbench: LayerNorm against :func:`heterotron.sim.golden.sfu.layernorm_row`.

Run through the runner: ``heterotron sim layernorm --param lanes=2 --param max_len=64``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from heterotron.hdl.layernorm import LayerNorm
from heterotron.hdl.rowstream import SfuError
from heterotron.sim.golden.intops import layernorm_consts
from heterotron.sim.golden.sfu import layernorm_row
from heterotron.tb.common import make_rng
from heterotron.tb.rows import BENCH, RowBench, bench_rows, random_rows

DEFAULT_VECTORS = 24  # rows per random test


class LayerNormBench(RowBench):
    def __init__(self, dut, rng):
        super().__init__(dut, LayerNorm, rng)
        self.W, self.N, self.O = self.p["in_width"], self.p["max_len"], self.p["out_width"]

    def rand_consts(self):
        """gamma around 1 (some negative, some tiny), beta around 0, an output scale that
        uses the output range; retried until the folded bias fits ``bias_width``."""
        rng, n = self.rng, self.N
        bias_lim = 1 << (self.p["bias_width"] - 1)
        gamma = rng.normal(1.0, 0.6, n) * np.where(rng.random(n) < 0.1, 1e-3, 1.0)
        beta = rng.normal(0.0, 0.5, n)
        s_out = 4.0 / (1 << (self.O - 1)) * 2.0 ** rng.uniform(-2, 2)
        shift = int(rng.integers(0, 5))
        while True:
            k = layernorm_consts(gamma, beta, s_out, shift=shift, out_bits=self.O)
            worst = int(np.max(np.abs(k.bias)))
            if worst < bias_lim:
                return k
            beta = beta * (bias_lim / (2.0 * worst))  # the folded bias is linear in beta

    async def set_consts(self, k) -> None:
        """The shift, then every channel's entry, through ``cfg``."""
        await self.configure({"kind": 0, "shift": k.shift})
        for ch in range(self.N):
            await self.configure({"kind": 1, "group": ch // self.lanes, "lane": ch % self.lanes,
                                  "entry": {"bias": int(k.bias[ch]), "neg": int(k.sign[ch] < 0),
                                            "m": int(k.m[ch]), "e": int(k.e[ch])}})
        self.consts = k

    def rand_row(self, length: int) -> np.ndarray:
        """A random offset plus deviations of random magnitude, within ``in_width``."""
        rng = self.rng
        bits = int(rng.integers(0, self.W - 1, endpoint=True))
        offset = int(rng.integers(self.lo // 2, self.hi // 2, endpoint=True))
        row = offset + rng.integers(-(1 << bits) // 2 - 1, (1 << bits) // 2 + 1, size=length)
        return np.clip(row, self.lo, self.hi)

    def row(self, values, context: str) -> None:
        k = self.consts
        want = layernorm_row(values, k.shift, k.bias, k.sign, k.m, k.e, out_bits=self.O,
                             max_len=self.N)
        self.send_row({"i": values}, want, context)


@cocotb.test()
async def test_random(dut):
    """Random rows of random lengths 1..max_len, new constants twice, stalls."""
    await random_rows(LayerNormBench(dut, make_rng(1)), DEFAULT_VECTORS, per_phase=4,
                      const_sets=2)


@cocotb.test()
async def test_corners(dut):
    """All-equal rows (std = 0), one huge value, all minimum, all maximum, alternating
    extremes, at several lengths; then a row longer than max_len."""
    tb = LayerNormBench(dut, make_rng(2))
    await tb.bench.start()
    await tb.new_consts()
    tb.send_corners()
    await tb.drain()
    assert tb.error_flags() == 0
    tb.row(tb.rand_row(tb.N + 2 * tb.lanes), "too long")
    await tb.drain()
    assert tb.error_flags() == SfuError.LENGTH
    dut._log.info("corner rows bit-exact: %d beats", tb.board.matched)


@cocotb.test(skip=not BENCH)
async def test_bench(dut):
    """Steady-state cycles per row for the runner's row lengths (results checked)."""
    await bench_rows(LayerNormBench(dut, make_rng(3)), "layernorm")

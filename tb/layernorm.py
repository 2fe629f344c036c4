"""cocotb testbench: LayerNorm against :func:`heterotron.sim.golden.sfu.layernorm_row`.

Run through the runner: ``heterotron sim layernorm --param lanes=2 --param max_len=64``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.layernorm import LayerNorm
from heterotron.hdl.rowstream import SfuError
from heterotron.sim.golden.intops import layernorm_consts
from heterotron.sim.golden.sfu import layernorm_row
from heterotron.tb.common import make_rng, params_from_env, vectors_from_env
from heterotron.tb.rows import BENCH, RowBench, bench_rows, corner_rows

DEFAULT_VECTORS = 24  # rows per random test


class LayerNormBench(RowBench):
    def __init__(self, dut, rng):
        p = params_from_env(defaults(LayerNorm.PARAMS))
        super().__init__(dut, LayerNorm, p, rng)
        self.W, self.N, self.O = p["in_width"], p["max_len"], p["out_width"]
        self.lo, self.hi = -(1 << (self.W - 1)), (1 << (self.W - 1)) - 1
        self.consts = None

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
    tb = LayerNormBench(dut, make_rng(1))
    await tb.bench.start()
    rows = vectors_from_env(DEFAULT_VECTORS)
    phases = [(0.0, 0.0), (0.3, 0.3), (0.0, 0.7), (0.7, 0.0)]
    for r in range(rows):
        if r % max(1, rows // 2) == 0:
            await tb.set_consts(tb.rand_consts())
        if r % 4 == 0:
            tb.set_stalls(*phases[(r // 4) % len(phases)])
        length = int(tb.rng.choice([1, tb.lanes, tb.N, int(tb.rng.integers(1, tb.N,
                                                                         endpoint=True))]))
        tb.row(tb.rand_row(length), f"row {r} (length {length})")
    await tb.drain()
    assert tb.error_flags() == 0
    dut._log.info("%d rows bit-exact in %d cycles", rows, tb.bench.cycle)


@cocotb.test()
async def test_corners(dut):
    """All-equal rows (std = 0), one huge value, all minimum, all maximum, alternating
    extremes, at several lengths; then a row longer than max_len."""
    tb = LayerNormBench(dut, make_rng(2))
    await tb.bench.start()
    tb.set_stalls(0.3, 0.3)
    await tb.set_consts(tb.rand_consts())
    lengths = sorted({n for n in (1, 2, tb.lanes, tb.N, int(tb.rng.integers(1, tb.N,
                                                                           endpoint=True)))
                      if n <= tb.N})
    for length in lengths:
        for j, values in enumerate(corner_rows(tb.rng, tb.lo, tb.hi, length)):
            tb.row(values, f"corner {j}, length {length}")
    await tb.drain()
    assert tb.error_flags() == 0
    tb.row(tb.rand_row(tb.N + 2 * tb.lanes), "too long")
    await tb.drain()
    assert tb.error_flags() == SfuError.LENGTH
    dut._log.info("corner rows bit-exact: %d beats", tb.matched)


@cocotb.test(skip=not BENCH)
async def test_bench(dut):
    """Steady-state cycles per row for the row lengths in $HETEROTRON_BENCH (results checked)."""
    tb = LayerNormBench(dut, make_rng(3))
    await tb.bench.start()
    await tb.set_consts(tb.rand_consts())
    await bench_rows(tb, "layernorm", lambda n, ctx: tb.row(tb.rand_row(n), ctx))

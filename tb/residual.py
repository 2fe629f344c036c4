"""cocotb testbench: ResidualAdd against :func:`heterotron.sim.golden.sfu.residual_values`.

Run through the runner: ``heterotron sim residual --param lanes=2 --param out_width=16``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.residual import ResidualAdd
from heterotron.hdl.rowstream import SfuError
from heterotron.sim.golden.sfu import residual_values
from heterotron.tb.common import make_rng, params_from_env, vectors_from_env
from heterotron.tb.rows import BENCH, RowBench, bench_rows, corner_rows

DEFAULT_VECTORS = 60  # rows per random test


class ResidualBench(RowBench):
    def __init__(self, dut, rng):
        p = params_from_env(defaults(ResidualAdd.PARAMS))
        super().__init__(dut, ResidualAdd, p, rng, inputs=("a", "r"))
        self.consts = None

    def rand_consts(self) -> dict:
        """Multipliers over their range; shifts around the ones that fill the output."""
        rng, p = self.rng, self.p
        k = {}
        for m, e, width in (("m", "e", p["a_width"]), ("m_r", "e_r", p["r_width"])):
            k[m] = int(rng.integers(0, 1 << 31))
            natural = width - 1 + 31 - (p["out_width"] - 1)
            k[e] = int(np.clip(natural - rng.integers(-2, width), 0, 63))
        return k

    def rand_values(self, width: int, length: int) -> np.ndarray:
        bits = int(self.rng.integers(1, width, endpoint=True))
        return self.rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=length)

    def row(self, a, r, context: str) -> None:
        k = self.consts
        want = residual_values(a, r, k["m"], k["e"], k["m_r"], k["e_r"], self.p["out_width"])
        self.send_row({"a": a, "r": r}, want, context)


@cocotb.test()
async def test_random(dut):
    """Random rows, new scales every few rows, random gaps on both inputs and stalls."""
    tb = ResidualBench(dut, make_rng(1))
    await tb.bench.start()
    p = tb.p
    rows = vectors_from_env(DEFAULT_VECTORS)
    phases = [(0.0, 0.0), (0.3, 0.3), (0.0, 0.7), (0.7, 0.0)]
    for i in range(rows):
        if i % 6 == 0:
            tb.set_stalls(*phases[(i // 6) % len(phases)])
            tb.consts = tb.rand_consts()
            await tb.configure(tb.consts)
        length = int(tb.rng.integers(1, 8 * tb.lanes, endpoint=True))
        tb.row(tb.rand_values(p["a_width"], length), tb.rand_values(p["r_width"], length),
               f"row {i} (scales {tb.consts})")
    await tb.drain()
    assert tb.error_flags() == 0
    dut._log.info("%d rows bit-exact in %d cycles", rows, tb.bench.cycle)


@cocotb.test()
async def test_corners(dut):
    """Extreme operands, m = 0 and the largest m, shift 0 and 63; rows whose ``last`` marks
    disagree set MISMATCH (the output follows ``a``)."""
    tb = ResidualBench(dut, make_rng(2))
    await tb.bench.start()
    tb.set_stalls(0.3, 0.3)
    p = tb.p
    length = 3 * tb.lanes + 1
    a_rows = corner_rows(tb.rng, -(1 << (p["a_width"] - 1)), (1 << (p["a_width"] - 1)) - 1,
                         length)
    r_rows = corner_rows(tb.rng, -(1 << (p["r_width"] - 1)), (1 << (p["r_width"] - 1)) - 1,
                         length)
    for m, e in (((1 << 31) - 1, 0), ((1 << 31) - 1, 63), (0, 5), (1 << 30, 31)):
        tb.consts = {"m": m, "e": e, "m_r": (1 << 31) - 1 - m, "e_r": 63 - e}
        await tb.configure(tb.consts)
        for j, (a, r) in enumerate(zip(a_rows, r_rows[::-1], strict=True)):
            tb.row(a, r, f"m={m} e={e}, corner {j}")
    await tb.drain()
    assert tb.error_flags() == 0
    # r ends its row one beat early: a's row structure is kept, the values pair up beat by beat
    a = tb.rand_values(p["a_width"], 2 * tb.lanes)
    r = tb.rand_values(p["r_width"], 2 * tb.lanes)
    k = tb.consts
    want = residual_values(a, r, k["m"], k["e"], k["m_r"], k["e_r"], p["out_width"])
    tb.sources["r"].send([tb.pack("r", {"data": list(r[:tb.lanes]), "n": tb.lanes - 1,
                                        "last": 1}),
                          tb.pack("r", {"data": list(r[tb.lanes:]), "n": tb.lanes - 1,
                                        "last": 1})])
    tb.sources["a"].send([tb.pack("a", {"data": list(a[:tb.lanes]), "n": tb.lanes - 1,
                                        "last": 0}),
                          tb.pack("a", {"data": list(a[tb.lanes:]), "n": tb.lanes - 1,
                                        "last": 1})])
    tb.expected.append(([int(v) for v in want[:tb.lanes]], tb.lanes - 1, False, "mismatch 0"))
    tb.expected.append(([int(v) for v in want[tb.lanes:]], tb.lanes - 1, True, "mismatch 1"))
    await tb.drain()
    assert tb.error_flags() == SfuError.MISMATCH
    dut._log.info("corner rows bit-exact: %d beats", tb.matched)


@cocotb.test(skip=not BENCH)
async def test_bench(dut):
    """Steady-state cycles per row for the row lengths in $HETEROTRON_BENCH (results checked)."""
    tb = ResidualBench(dut, make_rng(3))
    await tb.bench.start()
    tb.consts = tb.rand_consts()
    await tb.configure(tb.consts)
    p = tb.p
    await bench_rows(tb, "residual", lambda n, ctx: tb.row(
        tb.rand_values(p["a_width"], n), tb.rand_values(p["r_width"], n), ctx))

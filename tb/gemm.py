"""cocotb testbench: GemmEngine against :func:`heterotron.sim.golden.systolic.gemm`, and the GEMM
benchmark (``heterotron bench gemm``), for whatever parameters the runner built it with.

The host side is the command and operand-element streams (and with ``requant`` the ``cfg``
scale writes), each with its own random gaps, and a sink with random back-pressure; commands
are queued up front, and the engine's ``ready`` signals sequence them (a command waits while
the engine is busy). The sticky ``error`` flags must stay clear.
"""

from __future__ import annotations

import json

import cocotb
import numpy as np

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.gemm import GemmEngine, GemmError, Op
from heterotron.sim.golden.systolic import gemm, operand_range, output_order
from heterotron.tb import env
from heterotron.tb.common import (
    STALL_PHASES,
    ClockedBench,
    Scoreboard,
    StreamSink,
    StreamSource,
    encode,
    make_rng,
    params_from_env,
    port_shapes,
    vectors_from_env,
)

DEFAULT_JOBS = 10


class GemmBench:
    """Command/data sources, output sink, golden model and scoreboard around a GemmEngine."""

    def __init__(self, dut, rng: np.random.Generator, stalls: bool | None = None):
        p = params_from_env(defaults(GemmEngine.PARAMS))
        self.dut, self.p, self.rng = dut, p, rng
        self.R, self.C = p["rows"], p["cols"]
        shapes = port_shapes(GemmEngine, p)
        self.cmd_layout, self.out_layout = shapes["cmd"], shapes["o"]
        self.cfg_layout = shapes.get("cfg")  # the requantizer's scale writes
        # data_lanes > 1: beats of random count (StructLayout data, count), else one element
        self.data_lanes = p["data_lanes"]
        self.data_layout = shapes["data"]
        self.elem_width = (self.data_layout.width if self.data_lanes == 1
                           else self.data_layout["data"].shape.elem_shape.width)
        self.a_rng = operand_range(p["a_width"], p["a_signed"])
        self.b_rng = operand_range(p["b_width"], p["b_signed"])
        self.bias_rng = operand_range(p["bias_width"], True)
        # The common defaults (random gaps and stalls unless the runner switched them off),
        # or none at all for the bench test.
        gap = stall = None if stalls is None or stalls else 0.0
        self.cycle_of_cmd: list[int] = []
        self.cycle_of_out: list[int] = []
        self.cmd = StreamSource(dut, "cmd", rng, gap=gap,
                                on_send=lambda w: self.cycle_of_cmd.append(self.bench.cycle))
        self.data = StreamSource(dut, "data", rng, gap=gap)
        self.scoreboard = Scoreboard("o", fmt=self._fmt_out)
        self.sink = StreamSink(dut, "o", rng, stall=stall, on_beat=self._on_out)
        parts = [self.cmd, self.data, self.sink]
        self.cfg = None
        if p["requant"]:
            self.cfg = StreamSource(dut, "cfg", rng, gap=gap)
            parts.append(self.cfg)
        self.bench = ClockedBench(dut, parts)
        self.scale_m = self.scale_e = None
        self.macs = 0

    def _on_out(self, word: int) -> None:
        self.cycle_of_out.append(self.bench.cycle)
        self.scoreboard.got(word)

    def _fmt_out(self, word: int) -> str:
        view = self.out_layout.from_bits(word)
        return (f"row {view.row}, col {view.col}, last {view.last}, "
                f"data {[int(v) for v in view.data]}")

    # -- stimulus ---------------------------------------------------------------------------

    def operand(self, shape, rng_lohi, extreme: str | None = None) -> np.ndarray:
        lo, hi = rng_lohi
        if extreme is not None:
            return np.full(shape, lo if extreme == "lo" else hi, dtype=np.int64)
        full = self.rng.integers(lo, hi, size=shape, endpoint=True)
        corner = self.rng.choice(np.array([lo, hi, 0]), size=shape)
        return np.where(self.rng.random(shape) < 0.85, full, corner)

    def command(self, op: Op, trans=0, bias=0, m=0, k=0, n=0) -> int:
        fields = {"op": op, "trans": int(trans), "bias": int(bias), "m": m, "k": k, "n": n}
        return encode(self.cmd_layout, fields)

    def elements(self, values: np.ndarray) -> list[int]:
        return [int(v) for v in values.flat]

    def beats(self, elems: list[int]) -> list[int]:
        """The words on ``data`` for a stream of elements: one each, or with ``data_lanes =
        D > 1`` beats of 1 to D of them (beats may cross stored rows and loads)."""
        D = self.data_lanes
        if D == 1:
            mask = (1 << self.elem_width) - 1
            return [e & mask for e in elems]
        words, i = [], 0
        while i < len(elems):
            part = elems[i:i + int(self.rng.integers(1, D + 1))]
            i += len(part)
            words.append(encode(self.data_layout, {"data": part + [0] * (D - len(part)),
                                                   "count": len(part)}))
        return words

    async def write_scales(self) -> None:
        """Random per-lane requantisation scales through ``cfg``, one beat per lane."""
        p, C = self.p, self.C
        natural = p["acc_width"] // 2  # keeps typical sums inside out_width most of the time
        self.scale_m = self.rng.integers(0, 1 << 31, size=C)
        self.scale_e = np.clip(natural + 31 - (p["out_width"] - 1)
                               - self.rng.integers(0, p["acc_width"], size=C), 0, 63)
        words = []
        for j in range(C):
            fields = {"lane": j, "m": int(self.scale_m[j]), "e": int(self.scale_e[j])}
            fields = {k: v for k, v in fields.items() if k in self.cfg_layout.members}
            words.append(encode(self.cfg_layout, fields))
        self.cfg.send(words)
        await self.bench.wait_until(lambda: self.cfg.idle, 100 + 20 * C, "scale writes")

    def job(self, a: np.ndarray, b: np.ndarray, *, trans_a: bool, trans_b: bool,
            bias: np.ndarray | None, label: str) -> None:
        """Queue LOAD_A, LOAD_B (, LOAD_BIAS), RUN for ``C = a @ b (+ bias)`` and expect its
        beats. ``a`` and ``b`` are logical; they are sent transposed when asked."""
        M, K = a.shape
        N = b.shape[1]
        words = [self.command(Op.LOAD_A, trans_a, m=M, k=K),
                 self.command(Op.LOAD_B, trans_b, k=K, n=N)]
        elems = self.elements(a.T if trans_a else a) + self.elements(b.T if trans_b else b)
        if bias is not None:
            words.append(self.command(Op.LOAD_BIAS, n=N))
            elems += self.elements(bias)
        words.append(self.command(Op.RUN, bias=bias is not None))
        want = gemm(a, b, cols=self.C, bias=bias, scale_m=self.scale_m, scale_e=self.scale_e,
                    out_width=self.p["out_width"])
        order = output_order(M, N, self.C)
        for idx, ((row, col), lanes) in enumerate(zip(order, want, strict=True)):
            word = encode(self.out_layout, {"data": [int(v) for v in lanes], "row": row,
                                            "col": col, "last": idx == len(order) - 1})
            self.scoreboard.expect(word, f"{label}: beat {idx} (row {row}, col {col})")
        self.cmd.send(words)
        self.data.send(self.beats(elems))
        self.macs += M * K * N

    async def drain(self, what: str) -> None:
        pending = len(self.scoreboard.expected) + len(self.data.queue)
        work = self.macs // (self.R * self.C) + pending
        await self.bench.wait_until(
            lambda: self.cmd.idle and self.data.idle and not self.scoreboard.expected,
            2000 + 8 * work, what)
        await self.bench.cycles(self.R + self.C + 20)
        self.scoreboard.check_done()
        assert int(self.dut.error.value) == 0, (
            f"engine flagged {GemmError(int(self.dut.error.value))!r} during {what}")
        assert not int(self.dut.busy.value), f"engine still busy after {what}"


def _dim(rng: np.random.Generator, tile: int, hi: int) -> int:
    """1, around a multiple of the tile, or random: clipped to ``[1, hi]``."""
    pick = int(rng.integers(0, 6))
    value = [1, tile - 1, tile, tile + 1, 2 * tile + 3, int(rng.integers(1, 4 * tile + 2))][pick]
    return int(min(max(value, 1), hi))


@cocotb.test()
async def test_random(dut):
    """Random M, K, N (1, tile edges, non-multiples), random transposes and bias, random
    valid gaps and back-pressure, then one job at the operand extremes with the longest K."""
    tb = GemmBench(dut, make_rng(1))
    await tb.bench.start()
    p, rng = tb.p, tb.rng
    if p["requant"]:
        await tb.write_scales()
    jobs = vectors_from_env(DEFAULT_JOBS)
    for j in range(jobs):
        tb.bench.set_stalls(*STALL_PHASES[j % len(STALL_PHASES)])
        M = _dim(rng, tb.R, p["max_m"])
        K = _dim(rng, tb.R, p["max_k"])
        N = _dim(rng, tb.C, p["max_n"])
        a = tb.operand((M, K), tb.a_rng)
        b = tb.operand((K, N), tb.b_rng)
        bias = tb.operand((N,), tb.bias_rng) if rng.random() < 0.5 else None
        tb.job(a, b, trans_a=bool(rng.integers(0, 2)), trans_b=bool(rng.integers(0, 2)),
               bias=bias, label=f"job {j} M={M} K={K} N={N}")
        await tb.drain(f"job {j} M={M} K={K} N={N}")
    # Extremes: every operand at its most negative (largest positive products) over max_k,
    # bias at its largest; then the mixed-sign corner with the smallest bias.
    tb.bench.set_stalls(0.2, 0.2)
    M, N, K = min(tb.R + 1, p["max_m"]), min(tb.C + 1, p["max_n"]), p["max_k"]
    for ea, eb, be in (("lo", "lo", "hi"), ("lo", "hi", "lo"), ("hi", "hi", "hi")):
        tb.job(tb.operand((M, K), tb.a_rng, ea), tb.operand((K, N), tb.b_rng, eb),
               trans_a=False, trans_b=True, bias=tb.operand((N,), tb.bias_rng, be),
               label=f"extremes a={ea} b={eb} bias={be} K={K}")
        await tb.drain(f"extreme job K={K}")
    dut._log.info("%d jobs + 3 extreme jobs bit-exact: %d output beats in %d cycles",
                  jobs, tb.scoreboard.matched, tb.bench.cycle)


@cocotb.test(skip=not env.benching())
async def test_bench(dut):
    """Cycles of a RUN for M = K = N = each size the runner asked for (``tb.env``), no
    stalls, results checked; one JSON line per size to the runner's bench file."""
    tb = GemmBench(dut, make_rng(3), stalls=False)
    await tb.bench.start()
    sizes = env.bench_sizes()
    out_path = env.bench_out()
    for size in sizes:
        a = tb.operand((size, size), tb.a_rng)
        b = tb.operand((size, size), tb.b_rng)
        t0 = tb.bench.cycle
        n_cmd, n_out = len(tb.cycle_of_cmd), len(tb.cycle_of_out)
        tb.macs = 0
        tb.job(a, b, trans_a=False, trans_b=False, bias=None, label=f"bench {size}^3")
        await tb.drain(f"bench {size}^3")
        run_cycle = tb.cycle_of_cmd[n_cmd + 2]  # LOAD_A, LOAD_B, RUN
        cycles = tb.cycle_of_out[-1] - run_cycle + 1
        load = run_cycle - t0
        macs = size ** 3
        row = {"m": size, "k": size, "n": size, "rows": tb.R, "cols": tb.C,
               "dataflow": tb.p["dataflow"], "cycles": cycles, "macs": macs,
               "utilization": macs / (tb.R * tb.C * cycles), "load_cycles": load,
               "beats": len(tb.cycle_of_out) - n_out}
        dut._log.info("bench %s", json.dumps(row))
        if out_path:
            with open(out_path, "a") as f:
                f.write(json.dumps(row) + "\n")

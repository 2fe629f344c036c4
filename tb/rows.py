"""Shared cocotb pieces of the row-streaming units (Softmax, Gelu, LayerNorm, ResidualAdd):
row beats packed from the component's own layouts, a configuration stream, a row scoreboard
that compares the valid lanes of every beat with the golden model, and a sequencer that keeps
configuration writes and rows in program order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from amaranth.hdl import Const

from heterotron.hdl.rowstream import SfuError
from heterotron.tb.common import (
    ClockedBench,
    StreamSink,
    StreamSource,
    port_shapes,
    stalls_from_env,
)

__all__ = ["RowBench", "beats_of", "corner_rows", "bench_rows", "BENCH", "ENV_BENCH"]

ENV_BENCH = "HETEROTRON_BENCH"  # comma-separated row lengths; the bench test runs only when set
ENV_BENCH_OUT = "HETEROTRON_BENCH_OUT"  # where the bench writes its JSON lines
BENCH = ENV_BENCH in os.environ
BENCH_ROWS = 10  # rows per length: the first two fill the pipeline


def beats_of(values, lanes: int) -> list[tuple[list[int], int, bool]]:
    """A row as beats: ``(lane values, n, last)``; unused lanes of the last beat are 0."""
    values = [int(v) for v in values]
    out = []
    for start in range(0, len(values), lanes):
        chunk = values[start:start + lanes]
        out.append((chunk + [0] * (lanes - len(chunk)), len(chunk) - 1,
                    start + lanes >= len(values)))
    return out


def corner_rows(rng: np.random.Generator, lo: int, hi: int, length: int) -> list[np.ndarray]:
    """The corner cases every row unit is run on: all equal, one huge value among minimums,
    all minimum, all maximum, alternating extremes, zeros with one minimum."""
    huge = np.full(length, lo, dtype=np.int64)
    huge[int(rng.integers(0, length))] = hi
    alt = np.where(np.arange(length) % 2 == 0, lo, hi).astype(np.int64)
    low = np.zeros(length, dtype=np.int64)
    low[int(rng.integers(0, length))] = lo
    return [np.full(length, int(rng.integers(lo, hi, endpoint=True)), dtype=np.int64), huge,
            np.full(length, lo, dtype=np.int64), np.full(length, hi, dtype=np.int64), alt, low]


class RowBench:
    """Sources (``i`` or ``a``/``r``, ``cfg``), the ``o`` sink with its scoreboard, and the
    expected output beats, around one row unit built with ``params``."""

    def __init__(self, dut, component_cls, params: dict[str, Any], rng: np.random.Generator,
                 inputs: tuple[str, ...] = ("i",)):
        self.dut, self.p, self.rng = dut, params, rng
        self.lanes = params["lanes"]
        self.shapes = port_shapes(component_cls, params)
        stalls = stalls_from_env()
        self.sources = {name: StreamSource(dut, name, rng, gap=0.3 if stalls else 0.0)
                        for name in inputs}
        self.cfg = StreamSource(dut, "cfg", rng, gap=0.3 if stalls else 0.0)
        self.out_layout = self.shapes["o"]
        self.sink = StreamSink(dut, "o", rng, stall=0.3 if stalls else 0.0, on_beat=self._got)
        self.bench = ClockedBench(dut, [*self.sources.values(), self.cfg, self.sink])
        self.expected: list[tuple[list[int], int, bool, str]] = []
        self.matched = 0
        self.row_ends: list[int] = []  # cycle of each output row's last beat

    # -- stimulus ---------------------------------------------------------------------------

    def set_stalls(self, gap: float, stall: float) -> None:
        if stalls_from_env():
            for s in (*self.sources.values(), self.cfg):
                s.gap = gap
            self.sink.stall = stall

    def pack(self, port: str, fields: dict) -> int:
        return Const.cast(self.shapes[port].const(fields)).value

    async def configure(self, fields: dict) -> None:
        """One configuration write, after every row queued before it has been accepted."""
        await self.bench.wait_until(lambda: all(s.idle for s in self.sources.values()),
                                    10_000_000, "rows before a configuration write")
        self.cfg.send([self.pack("cfg", fields)])
        await self.bench.wait_until(lambda: self.cfg.idle, 10_000_000, "configuration write")

    def send_row(self, rows: dict[str, Any], want, context: str) -> None:
        """Queue one row on each input (``{"i": values}``) and its expected output values."""
        for name, values in rows.items():
            self.sources[name].send([self.pack(name, {"data": d, "n": n, "last": last})
                                     for d, n, last in beats_of(values, self.lanes)])
        for j, (d, n, last) in enumerate(beats_of(want, self.lanes)):
            self.expected.append((d[:n + 1] if last else d, n, last, f"{context}, beat {j}"))

    # -- checking ---------------------------------------------------------------------------

    def _decode(self, word: int) -> tuple[list[int], int, bool]:
        view = self.out_layout
        data_f, n_f, last_f = view["data"], view["n"], view["last"]
        elem = data_f.shape.elem_shape
        width = elem.width
        lanes = []
        for k in range(self.lanes):
            v = (word >> (data_f.offset + k * width)) & ((1 << width) - 1)
            if elem.signed and v >> (width - 1):
                v -= 1 << width
            lanes.append(v)
        n = (word >> n_f.offset) & ((1 << n_f.width) - 1)
        last = bool((word >> last_f.offset) & 1)
        return lanes, n, last

    def _got(self, word: int) -> None:
        assert self.matched < len(self.expected), f"unexpected extra output beat {word:#x}"
        data, n, last = self._decode(word)
        want, want_n, want_last, context = self.expected[self.matched]
        if last:
            data = data[:n + 1]
        assert (data, last) == (want, want_last) and (not last or n == want_n), (
            f"output mismatch at {context}: got {data} n={n} last={last}, "
            f"expected {want} n={want_n} last={want_last}")
        self.matched += 1
        if last:
            self.row_ends.append(self.bench.cycle)

    async def drain(self) -> None:
        """Wait until every expected beat arrived, then check nothing more does."""
        await self.bench.wait_until(lambda: self.matched == len(self.expected),
                                    20_000 + 50 * (len(self.expected) - self.matched), "drain")
        await self.bench.cycles(300)
        assert self.matched == len(self.expected)

    def error_flags(self) -> SfuError:
        return SfuError(int(self.dut.error.value))


async def bench_rows(tb: RowBench, unit: str, make_row: Callable[[int, str], None]) -> None:
    """For each row length in ``$HETEROTRON_BENCH``: :data:`BENCH_ROWS` rows back to back, no
    stalls, every result checked; the steady-state cycles per row (between the last beats of
    consecutive rows, after the first two) go to ``$HETEROTRON_BENCH_OUT`` as JSON lines."""
    tb.set_stalls(0.0, 0.0)
    for length in (int(v) for v in os.environ[ENV_BENCH].split(",")):
        first = len(tb.row_ends)
        start = tb.bench.cycle
        for r in range(BENCH_ROWS):
            make_row(length, f"bench length {length}, row {r}")
        await tb.drain()
        ends = tb.row_ends[first:]
        assert len(ends) == BENCH_ROWS
        per_row = (ends[-1] - ends[1]) / (BENCH_ROWS - 2)
        beats = -(-length // tb.lanes)
        record = {"unit": unit, "params": tb.p, "length": length, "cycles_per_row": per_row,
                  "elements_per_cycle": length / per_row, "beats_per_row": beats,
                  "first_row_cycles": ends[0] - start}
        tb.dut._log.info("bench %s", json.dumps(record))
        if ENV_BENCH_OUT in os.environ:
            with open(os.environ[ENV_BENCH_OUT], "a") as f:
                f.write(json.dumps(record) + "\n")

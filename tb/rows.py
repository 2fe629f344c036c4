"""Shared cocotb pieces of the row-streaming units (Softmax, Gelu, LayerNorm, ResidualAdd):
row beats encoded with the component's own layouts, a configuration stream, the common
scoreboard comparing the valid lanes of every beat with the golden model, a sequencer that
keeps configuration writes and rows in program order, and the random and bench tests' loops.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.rowstream import SfuError
from heterotron.tb import env
from heterotron.tb.common import (
    ClockedBench,
    Scoreboard,
    StreamSink,
    StreamSource,
    decode,
    encode,
    in_phases,
    params_from_env,
    port_shapes,
    vectors_from_env,
)

__all__ = ["RowBench", "beats_of", "row_payloads", "corner_rows", "random_rows", "bench_rows",
           "BENCH"]

BENCH = env.benching()  # the bench test runs only when the runner asks for it
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


def row_payloads(values, lanes: int) -> list[dict[str, Any]]:
    """A row as the fields of its beats' payloads (``data``, ``n``, ``last``)."""
    return [{"data": d, "n": n, "last": last} for d, n, last in beats_of(values, lanes)]


def _valid(data, n: int, last: bool) -> tuple[list[int], int | None, bool]:
    """What of a beat counts: every lane of a beat inside a row; the first ``n + 1`` lanes and
    ``n`` itself of a row's last beat."""
    return (list(data[:n + 1]), n, True) if last else (list(data), None, False)


def _fmt(beat) -> str:
    data, n, last = beat
    return f"{data} n={n} last={last}"


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
    """Sources (``i`` or ``a``/``r``, ``cfg``), the ``o`` sink with its scoreboard, around one
    row unit built with the runner's parameters (``p``). A unit's bench adds
    ``rand_consts()``, ``set_consts(k)`` (sets ``consts``), ``rand_row(length)`` and
    ``row(values, context)`` (queues a row and its golden output with :meth:`send_row`)."""

    def __init__(self, dut, component_cls, rng: np.random.Generator,
                 inputs: tuple[str, ...] = ("i",)):
        self.dut, self.rng = dut, rng
        self.p = params = params_from_env(defaults(component_cls.PARAMS))
        self.lanes = params["lanes"]
        if "in_width" in params:  # the range of a unit with one input
            w = params["in_width"]
            self.lo, self.hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
        self.shapes = port_shapes(component_cls, params)
        self.sources = {name: StreamSource(dut, name, rng) for name in inputs}
        self.cfg = StreamSource(dut, "cfg", rng)
        self.board = Scoreboard("o", fmt=_fmt, view=self._beat)
        self.sink = StreamSink(dut, "o", rng, on_beat=self._got)
        self.bench = ClockedBench(dut, [*self.sources.values(), self.cfg, self.sink])
        self.consts = None
        self.row_ends: list[int] = []  # cycle of each output row's last beat

    # -- stimulus ---------------------------------------------------------------------------

    async def configure(self, fields: dict) -> None:
        """One configuration write, after every row queued before it has been accepted."""
        await self.bench.wait_until(lambda: all(s.idle for s in self.sources.values()),
                                    10_000_000, "rows before a configuration write")
        self.cfg.send([encode(self.shapes["cfg"], fields)])
        await self.bench.wait_until(lambda: self.cfg.idle, 10_000_000, "configuration write")

    async def new_consts(self) -> None:
        await self.set_consts(self.rand_consts())

    def rand_length(self) -> int:
        """A row length: for a unit with a row buffer 1, one beat, ``max_len`` or any length up
        to it; otherwise up to eight beats."""
        rng, lanes = self.rng, self.lanes
        if "max_len" in self.p:
            n = self.p["max_len"]
            return int(rng.choice([1, lanes, n, int(rng.integers(1, n, endpoint=True))]))
        return int(rng.integers(1, 8 * lanes, endpoint=True))

    def words(self, port: str, values) -> list[int]:
        """A row's beats on input ``port``."""
        return [encode(self.shapes[port], beat) for beat in row_payloads(values, self.lanes)]

    def expect_row(self, want, context: str) -> None:
        """The output beats of a row whose values are ``want``."""
        for j, beat in enumerate(beats_of(want, self.lanes)):
            self.board.expect(_valid(*beat), f"{context}, beat {j}")

    def send_corners(self, lengths: list[int] | None = None, context: str = "") -> None:
        """Queue the corner rows (:func:`corner_rows`) at each of ``lengths``; by default 1, 2,
        one beat, ``max_len`` and a random length up to it."""
        if lengths is None:
            n = self.p["max_len"]
            drawn = (1, 2, self.lanes, n, int(self.rng.integers(1, n, endpoint=True)))
            lengths = sorted({k for k in drawn if k <= n})
        for length in lengths:
            for j, values in enumerate(corner_rows(self.rng, self.lo, self.hi, length)):
                self.row(values, f"{context}corner {j}, length {length}")

    def send_row(self, rows: dict[str, Any], want, context: str) -> None:
        """Queue one row on each input (``{"i": values}``) and its expected output values."""
        for name, values in rows.items():
            self.sources[name].send(self.words(name, values))
        self.expect_row(want, context)

    # -- checking ---------------------------------------------------------------------------

    def _beat(self, word: int) -> tuple[list[int], int | None, bool]:
        beat = decode(self.shapes["o"], word)
        return _valid(list(beat.data), beat.n, bool(beat.last))

    def _got(self, word: int) -> None:
        if self.board.got(word)[2]:
            self.row_ends.append(self.bench.cycle)

    async def drain(self) -> None:
        """Wait until every expected beat arrived, then check nothing more does."""
        await self.bench.wait_until(lambda: not self.board.expected,
                                    20_000 + 50 * len(self.board.expected), "drain")
        await self.bench.cycles(300)
        self.board.check_done()

    def error_flags(self) -> SfuError:
        return SfuError(int(self.dut.error.value))


async def random_rows(tb: RowBench, default_rows: int, per_phase: int,
                      const_sets: int | None = None) -> None:
    """A row unit's random test: the runner's vector count (or ``default_rows``) of random
    rows of random lengths, ``per_phase`` rows under each stall phase, new constants with
    every phase (or ``const_sets`` times, spread over the test); every beat checked, no error
    flag raised."""
    await tb.bench.start()
    rows = vectors_from_env(default_rows)
    phases = -(-rows // per_phase)
    every = 1 if const_sets is None else max(1, -(-phases // const_sets))

    async def chunk(k: int) -> int:
        if k % every == 0:
            await tb.new_consts()
        first = k * per_phase
        for r in range(first, min(first + per_phase, rows)):
            length = tb.rand_length()
            tb.row(tb.rand_row(length), f"row {r} (length {length}, consts {tb.consts})")
        return min(per_phase, rows - first)

    await in_phases(tb.bench, rows, chunk)
    await tb.drain()
    assert tb.error_flags() == 0, f"unexpected error flags {tb.error_flags()!r}"
    tb.dut._log.info("%d rows bit-exact in %d cycles", rows, tb.bench.cycle)


async def bench_rows(tb: RowBench, unit: str) -> None:
    """The bench test: for each row length the runner gives, :data:`BENCH_ROWS` random rows
    back to back, no stalls, every result checked; the steady-state cycles per row (between
    the last beats of consecutive rows, after the first two) go to the runner's bench file as
    JSON lines."""
    await tb.bench.start()
    await tb.new_consts()
    tb.bench.set_stalls(0.0, 0.0)
    for length in env.bench_sizes():
        first = len(tb.row_ends)
        start = tb.bench.cycle
        for r in range(BENCH_ROWS):
            tb.row(tb.rand_row(length), f"bench length {length}, row {r}")
        await tb.drain()
        ends = tb.row_ends[first:]
        assert len(ends) == BENCH_ROWS
        per_row = (ends[-1] - ends[1]) / (BENCH_ROWS - 2)
        beats = -(-length // tb.lanes)
        record = {"unit": unit, "params": tb.p, "length": length, "cycles_per_row": per_row,
                  "elements_per_cycle": length / per_row, "beats_per_row": beats,
                  "first_row_cycles": ends[0] - start}
        tb.dut._log.info("bench %s", json.dumps(record))
        if env.bench_out():
            with open(env.bench_out(), "a") as f:
                f.write(json.dumps(record) + "\n")

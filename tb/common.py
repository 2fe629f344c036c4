"""Shared cocotb testbench pieces: parameters from the runner (:mod:`heterotron.tb.env`),
payloads to words and back, stream source and sink with random valid gaps and back-pressure
in phases, a stream-rule checker, a scoreboard and the random test's loop.

Timing discipline (the same on Verilator and Icarus): every driver writes its inputs just after
a rising edge; every monitor samples after the falling edge in the read-only phase, when the
values that the next rising edge will act on have settled. A transfer happens at a rising edge
when the sampled ``valid`` and ``ready`` were both high.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import cocotb
import numpy as np
from amaranth.hdl import Const, Shape, ShapeCastable
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer

from heterotron.hdl.contract.params import inspect_only
from heterotron.tb.env import params_from_env, stalls_from_env, vectors_from_env

__all__ = [
    "params_from_env",
    "vectors_from_env",
    "stalls_from_env",
    "make_rng",
    "pack",
    "unpack",
    "encode",
    "decode",
    "GAP",
    "STALL",
    "STALL_PHASES",
    "stall_phases",
    "StreamSource",
    "StreamSink",
    "Scoreboard",
    "ClockedBench",
    "in_phases",
    "port_shapes",
]

CLOCK_NS = 10


def cycles(n: int) -> Timer:
    """A wait of ``n`` clock periods (at least one), for code that counts time in cycles
    without watching the clock edge by edge."""
    return Timer(max(1, int(n)) * CLOCK_NS, "ns")

#: The probabilities a bench starts with: a source idles a cycle before a beat (gap), a sink
#: is not ready (stall).
GAP = STALL = 0.3

#: The (gap, stall) phases a random test goes through in turn: none, both, heavy back-pressure,
#: sparse input.
STALL_PHASES = ((0.0, 0.0), (0.3, 0.3), (0.0, 0.7), (0.7, 0.0))


def stall_phases(phases: Sequence[tuple[float, float]] = STALL_PHASES
                 ) -> Sequence[tuple[float, float]]:
    """``phases``, or the one phase without stalls when the runner switched them off."""
    return phases if stalls_from_env() else ((0.0, 0.0),)


def make_rng(salt: int = 0) -> np.random.Generator:
    """NumPy generator seeded from cocotb's seed (``heterotron sim --seed N``)."""
    return np.random.default_rng([cocotb.RANDOM_SEED & 0xFFFFFFFF, salt])


def pack(values: Iterable[int], width: int) -> int:
    """Pack signed or unsigned lane values into one integer, lane 0 in the low bits."""
    mask = (1 << width) - 1
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & mask) << (k * width)
    return word


def unpack(word: int, width: int, count: int, signed: bool = True) -> list[int]:
    """Split an integer into ``count`` lanes of ``width`` bits (two's complement if signed)."""
    mask = (1 << width) - 1
    out = []
    for k in range(count):
        v = (word >> (k * width)) & mask
        if signed and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out


def encode(shape, value) -> int:
    """A payload's bits: ``value`` is what ``shape.const`` takes for a layout (a mapping of
    fields, nested mappings for nested layouts, a sequence for an array) or an integer for a
    plain shape."""
    if isinstance(shape, ShapeCastable):
        return Const.cast(shape.const(value)).value
    return Const(value, Shape.cast(shape)).value & ((1 << Shape.cast(shape).width) - 1)


def decode(shape, word: int):
    """A payload from its bits: for a layout, a constant view (fields by name or index, plain
    fields as integers, signed ones sign-extended); for a plain shape, the integer."""
    if isinstance(shape, ShapeCastable):
        return shape.from_bits(word)
    return Const(word, Shape.cast(shape)).value


def _default(probability: float | None, default: float) -> float:
    if probability is not None:
        return probability
    return default if stalls_from_env() else 0.0


class StreamSource:
    """Drives ``<prefix>__valid`` / ``<prefix>__payload`` from a queue of packed words, with a
    random gap before each beat (probability ``gap``, re-drawn per cycle; by default
    :data:`GAP`, or none when the runner switched stalls off)."""

    def __init__(self, dut, prefix: str, rng: np.random.Generator, gap: float | None = None,
                 on_send: Callable[[int], None] | None = None):
        self.on_send = on_send  # called with each word as it is taken
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rng = rng
        self.gap = _default(gap, GAP)
        self.queue: deque[int] = deque()
        self.sent = 0
        self._valid = False
        self._fired = False
        self.valid.value = 0

    def send(self, words: Iterable[int]) -> None:
        self.queue.extend(words)

    @property
    def idle(self) -> bool:
        return not self.queue and not self._valid

    def sample(self) -> None:
        self._fired = self._valid and bool(self.ready.value)
        if self._fired and self.on_send is not None:
            self.on_send(self.queue[0])

    def drive(self) -> None:
        if self._fired:
            self.queue.popleft()
            self.sent += 1
            self._valid = False
        if not self._valid and self.queue and not (self.gap and self.rng.random() < self.gap):
            self._valid = True
            self.payload.value = self.queue[0]
        self.valid.value = int(self._valid)


class StreamSink:
    """Drives ``<prefix>__ready`` high with probability ``1 - stall`` (by default
    :data:`STALL`, or always when the runner switched stalls off), collects transfers, and
    checks the stream rules: once valid, the source holds valid and payload until taken."""

    def __init__(self, dut, prefix: str, rng: np.random.Generator, stall: float | None = None,
                 on_beat: Callable[[int], None] | None = None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.name = prefix
        self.rng = rng
        self.stall = _default(stall, STALL)
        self.on_beat = on_beat
        self.received = 0
        self._ready = False
        self._pending: int | None = None  # payload offered but not taken at the last edge
        self.ready.value = 0

    def sample(self) -> None:
        valid = bool(self.valid.value)
        if self._pending is not None:
            assert valid, f"{self.name}: valid dropped before the beat was taken"
            word = self.payload.value.to_unsigned()
            assert word == self._pending, (
                f"{self.name}: payload changed while waiting: "
                f"{self._pending:#x} -> {word:#x}")
        if not valid:
            self._pending = None
            return
        word = self.payload.value.to_unsigned()
        if self._ready:
            self._pending = None
            self.received += 1
            if self.on_beat is not None:
                self.on_beat(word)
        else:
            self._pending = word

    def drive(self) -> None:
        self._ready = not (self.stall and self.rng.random() < self.stall)
        self.ready.value = int(self._ready)


class Scoreboard:
    """In-order comparison of received beats with the golden model's expected beats.

    ``view`` turns a received word into what is compared (the word itself by default; a
    bench whose beats have don't-care bits compares only the bits that count), and the
    expected beats are given in that form; ``fmt`` formats it for the failure messages."""

    def __init__(self, name: str, fmt: Callable[[Any], Any] = hex,
                 view: Callable[[int], Any] | None = None):
        self.name = name
        self.fmt = fmt
        self.view = view
        self.expected: deque[tuple[Any, Any]] = deque()
        self.matched = 0

    def expect(self, want: Any, context: Any = None) -> None:
        self.expected.append((want, context))

    def got(self, word: int) -> Any:
        """Check a received beat against the oldest expected one; returns its view."""
        got = word if self.view is None else self.view(word)
        assert self.expected, f"{self.name}: unexpected extra beat {self.fmt(got)}"
        want, context = self.expected.popleft()
        assert got == want, (
            f"{self.name}: beat {self.matched} mismatch: got {self.fmt(got)}, "
            f"expected {self.fmt(want)} ({context})")
        self.matched += 1
        return got

    def check_done(self) -> None:
        assert not self.expected, (
            f"{self.name}: {len(self.expected)} expected beats never arrived "
            f"(after {self.matched} matched)")


class ClockedBench:
    """Starts the clock, resets the DUT, and steps all sources and sinks once per cycle."""

    def __init__(self, dut, parts: Sequence[Any] = ()):
        self.dut = dut
        self.parts = list(parts)
        self.cycle = 0
        self._task = None

    def set_stalls(self, gap: float, stall: float) -> None:
        """Every source's gap and every sink's stall probability (none at all when the runner
        switched stalls off)."""
        if not stalls_from_env():
            gap = stall = 0.0
        for part in self.parts:
            if isinstance(part, StreamSource):
                part.gap = gap
            elif isinstance(part, StreamSink):
                part.stall = stall

    async def start(self, reset_cycles: int = 2) -> None:
        Clock(self.dut.clk, CLOCK_NS, unit="ns").start(start_high=False)
        self.dut.rst.value = 1
        if hasattr(self.dut, "error_clear"):  # the sticky-error convention (hdl/ports.py)
            self.dut.error_clear.value = 0
        for _ in range(reset_cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self._task = cocotb.start_soon(self._step_forever())

    async def _step_forever(self) -> None:
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            for part in self.parts:
                part.sample()
            await RisingEdge(self.dut.clk)
            self.cycle += 1
            for part in self.parts:
                part.drive()

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await RisingEdge(self.dut.clk)

    async def wait_until(self, done: Callable[[], bool], limit: int, what: str) -> None:
        """Wait for ``done()``; fail (watchdog) after ``limit`` cycles without it."""
        for _ in range(limit):
            if done():
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"watchdog: {what} not done after {limit} cycles")


async def in_phases(bench: ClockedBench, total: int,
                    chunk: Callable[[int], Awaitable[int]]) -> int:
    """The random test's loop: chunk ``k`` of random stimulus under stall phase ``k`` (the
    :data:`STALL_PHASES` in turn) until ``total`` vectors went in. ``await chunk(k)`` draws
    the chunk's vectors, queues them and their golden results, and returns how many it
    queued (checking is the scoreboard's, as the beats come out). Returns the chunks run."""
    done = k = 0
    while done < total:
        bench.set_stalls(*STALL_PHASES[k % len(STALL_PHASES)])
        queued = await chunk(k)
        assert queued > 0, f"chunk {k} of the random test queued nothing"
        done += queued
        k += 1
    return k


def port_shapes(component_cls, params: dict[str, Any]) -> dict[str, Any]:
    """Payload shapes of a component's stream ports (``{"i": layout, ...}``), for packing
    beats with ``layout.const(...)``. The component is built only to read its signature."""
    component = inspect_only(component_cls(**params))
    shapes = {}
    for name, member in component.signature.members.items():
        if member.is_signature and "payload" in member.signature.members:
            shapes[name] = member.signature.members["payload"].shape
    return shapes

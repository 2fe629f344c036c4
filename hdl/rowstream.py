"""Shared pieces of the row-streaming special-function units (Softmax, GELU, LayerNorm,
ResidualAdd): the row beat layout, the error flags, registered pipeline helpers, the
requantisation stages, and the two sequential row-level circuits (divider, square root).

A **row beat** carries ``lanes`` elements, ``n`` (the number of valid lanes minus one; only
looked at on the last beat of a row, every other beat is full) and ``last`` (the row ends with
this beat). Lanes at or above ``n + 1`` of a last beat are ignored on the way in and carry
unspecified values on the way out.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data

__all__ = ["SfuError", "count_width", "row_layout", "lane_valid", "reg", "requant_stages",
           "REQUANT_STAGES", "SeqDivider", "SeqIsqrt", "bank_depth"]


class SfuError(enum.IntFlag):
    """Bits of a unit's sticky ``error`` output (cleared only by reset)."""

    #: A row was longer than ``max_len``: the excess beats were dropped and the row was
    #: computed on its first ``max_len`` elements.
    LENGTH = 1
    #: A configuration write was refused (its constants cannot come from a real scale, see
    #: the unit's documentation); the previous constants stay.
    CONFIG = 2
    #: ResidualAdd only: the two inputs disagreed on ``last`` or ``n``; ``a``'s were used.
    MISMATCH = 4


def count_width(lanes: int) -> int:
    """Width of the ``n`` field (valid lanes minus one)."""
    return (lanes - 1).bit_length()


def row_layout(elem, lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "data": data.ArrayLayout(elem, lanes),
        "n": unsigned(count_width(lanes)),
        "last": unsigned(1),
    })


def bank_depth(max_len: int, lanes: int) -> int:
    """Words per row bank: ``max_len / lanes`` beats rounded up to a power of two, so that a
    bank address is ``Cat(beat, bank)``."""
    beats = max_len // lanes
    return 1 << max(0, (beats - 1).bit_length())


def lane_valid(n, last, k: int, lanes: int) -> Value:
    """Lane ``k`` of a beat holds an element: always on a full beat, ``k <= n`` on a last one."""
    if lanes == 1:
        return Value.cast(1)
    return ~last | (n >= k)


def reg(m: Module, en, value, name: str, domain: str = "sync") -> Signal:
    """A register loaded with ``value`` when ``en`` is high (``en=None``: every cycle), of the
    value's own shape, so no bit of an Amaranth expression is ever dropped."""
    if isinstance(value, data.View):
        r = Signal(value.shape(), name=name)
    else:
        r = Signal(Value.cast(value).shape(), name=name)
    if en is None:
        m.d[domain] += r.eq(value)
    else:
        with m.If(en):
            m.d[domain] += r.eq(value)
    return r


#: Register stages of :func:`requant_stages`.
REQUANT_STAGES = 3


def requant_stages(m: Module, en, terms, out_width: int, name: str) -> Signal:
    """``sat(sum(round_shift(z * mul, e)))`` in three registered stages (product; shift kept one
    bit wide; round half up, add, saturate) -- the contract of
    :func:`heterotron.sim.requantizer.requantize`. ``terms`` is a list of ``(z, mul, e)``; every
    register loads when ``en`` is high. Returns the output register (``signed(out_width)``)."""
    rounded = []
    for t, (z, mul, e) in enumerate(terms):
        prod = reg(m, en, z * mul, f"{name}_prod{t}")
        shift = reg(m, en, e, f"{name}_e{t}")
        half = reg(m, en, (prod << 1) >> shift, f"{name}_half{t}")
        rounded.append((half + 1) >> 1)
    total = rounded[0]
    for r in rounded[1:]:
        total = total + r
    lo, hi = -(1 << (out_width - 1)), (1 << (out_width - 1)) - 1
    out = Signal(signed(out_width), name=f"{name}_out")
    with m.If(en):
        m.d.sync += out.eq(Mux(total > hi, hi, Mux(total < lo, lo, total)))
    return out


class SeqDivider(Elaboratable):
    """``quot = floor(num / den)`` for an unsigned ``num`` below ``2^num_width`` and
    ``1 <= den < 2^den_width``: restoring division, one quotient bit per cycle, so a result
    takes ``num_width`` cycles. Operands are taken when ``start`` is high (and the divider is
    not ``busy``); ``done`` is high for one cycle with ``quot`` valid, and ``quot`` holds until
    the next start. A zero ``den`` gives all ones (callers never pass one)."""

    def __init__(self, num_width: int, den_width: int):
        self.num_width, self.den_width = num_width, den_width
        self.start = Signal()
        self.num = Signal(num_width)
        self.den = Signal(den_width)
        self.busy = Signal()
        self.done = Signal()
        self.quot = Signal(num_width)

    @property
    def cycles(self) -> int:
        return self.num_width

    def elaborate(self, platform):
        m = Module()
        rem = Signal(self.den_width)
        num = Signal(self.num_width)
        den = Signal(self.den_width)
        count = Signal(range(self.num_width + 1))
        trial = Cat(num[-1], rem)  # 2 * rem + next numerator bit, below 2 * den
        take = trial >= den
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += [
                rem.eq(Mux(take, trial - den, trial)),
                num.eq(num << 1),
                self.quot.eq(Cat(take, self.quot)),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            m.d.sync += [rem.eq(0), num.eq(self.num), den.eq(self.den), self.quot.eq(0),
                         count.eq(self.num_width), self.busy.eq(1)]
        return m


class SeqIsqrt(Elaboratable):
    """``root = floor(sqrt(value))`` for an unsigned ``value`` below ``2^width``, digit by
    digit: two bits of the operand per cycle, shifts, subtractions and compares only (no
    divider); ``ceil(width / 2)`` cycles. Same handshake as :class:`SeqDivider`."""

    def __init__(self, width: int):
        self.width = width + (width & 1)
        self.start = Signal()
        self.value = Signal(width)
        self.busy = Signal()
        self.done = Signal()
        self.root = Signal(self.width // 2)

    @property
    def cycles(self) -> int:
        return self.width // 2

    def elaborate(self, platform):
        m = Module()
        w = self.width
        rem = Signal(w)
        root = Signal(w)
        bit = Signal(w)
        trial = root + bit
        take = rem >= trial
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += [
                rem.eq(Mux(take, rem - trial, rem)),
                root.eq(Mux(take, (root >> 1) + bit, root >> 1)),
                bit.eq(bit >> 2),
            ]
            with m.If(bit == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            m.d.sync += [rem.eq(self.value), root.eq(0), bit.eq(1 << (w - 2)), self.busy.eq(1)]
        m.d.comb += self.root.eq(root)
        return m

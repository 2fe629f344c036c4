"""Shared pieces of the row-streaming special-function units (Softmax, GELU, LayerNorm,
ResidualAdd): the row beat layout, the error flags, registered pipeline helpers, the
requantisation stages, and the two sequential row-level circuits (divider, square root).

A **row beat** carries ``lanes`` elements, ``n`` (the number of valid lanes minus one; only
looked at on the last beat of a row, every other beat is full; one bit wide and ignored when
``lanes`` is 1) and ``last`` (the row ends with this beat). Lanes at or above ``n + 1`` of a
last beat are ignored on the way in and carry unspecified values on the way out.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from heterotron.hdl.ports import error_ports, raise_error

__all__ = ["SfuError", "row_unit_ports", "count_width", "row_layout", "lane_valid", "reg",
           "delay", "mul_pipe", "mul_stages", "requant_stages", "requant_latency", "REQUANT_EXTRA",
           "tree_stages", "tree_pipe", "bit_length", "SeqDivider", "SeqIsqrt", "bank_depth",
           "RowIngest", "RowIssuer"]


class SfuError(enum.IntFlag):
    """Bits of a unit's sticky ``error`` output: a flag stays set until a clock edge with
    ``error_clear`` high (or reset); one raised in that same cycle stays set
    (:mod:`heterotron.hdl.ports`)."""

    #: A row was longer than ``max_len``: the excess beats were dropped and the row was
    #: computed on its first ``max_len`` elements.
    LENGTH = 1
    #: A configuration write was refused (its constants cannot come from a real scale, see
    #: the unit's documentation); the previous constants stay.
    CONFIG = 2
    #: ResidualAdd only: the two inputs disagreed on ``last`` or ``n``; ``a``'s were used.
    MISMATCH = 4


def row_unit_ports(unit, lanes: int, inputs: dict, out_shape) -> dict:
    """The members of a row unit: a row-beat input stream per entry of ``inputs`` (name ->
    element shape), the output row stream ``o`` of ``out_shape``, the ``cfg`` stream of
    ``unit.cfg_layout`` and the sticky :class:`SfuError` flags with their clear
    (``hdl/ports.py``)."""
    return {
        **{name: In(stream.Signature(row_layout(shape, lanes))) for name, shape in inputs.items()},
        "o": Out(stream.Signature(row_layout(out_shape, lanes))),
        "cfg": In(stream.Signature(unit.cfg_layout)),
        **error_ports(SfuError),
    }


def count_width(lanes: int) -> int:
    """Width of the ``n`` field (valid lanes minus one); never zero, so that no zero-width
    wire reaches the Verilog."""
    return max(1, (lanes - 1).bit_length())


def row_layout(elem, lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "data": data.ArrayLayout(elem, lanes),
        "n": unsigned(count_width(lanes)),
        "last": unsigned(1),
    })


def bank_depth(max_len: int, lanes: int) -> int:
    """Words per row bank: ``max_len / lanes`` beats rounded up to a power of two (two at
    least, so that beat counters are never zero bits wide), so that a bank address is
    ``Cat(beat, bank)``."""
    beats = max_len // lanes
    return 1 << max(1, (beats - 1).bit_length())


def lane_valid(n, last, k: int, lanes: int) -> Value:
    """Lane ``k`` of a beat holds an element: always on a full beat, ``k <= n`` on a last one."""
    if k == 0:
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


def delay(m: Module, en, value, stages: int, name: str):
    """``value`` through ``stages`` registers (loaded when ``en``); ``stages=0`` is ``value``."""
    for s in range(stages):
        value = reg(m, en, value, f"{name}_d{s}")
    return value


#: Operand chunk of :func:`mul_pipe`: 17 unsigned bits, or a signed top chunk of up to 18, so
#: that every partial product fits one 18x18 multiplier (ECP5 MULT18X18D, Xilinx DSP48).
CHUNK = 17


def _chunks(v: Value) -> list[tuple[Value, int]]:
    v = Value.cast(v)
    width, is_signed = len(v), v.shape().signed
    top = CHUNK + 1 if is_signed else CHUNK
    if width <= top:
        return [(v, 0)]
    parts, lo = [], 0
    while width - lo > top:
        parts.append((v[lo:lo + CHUNK], lo))  # unsigned slice
        lo += CHUNK
    parts.append((v[lo:].as_signed() if is_signed else v[lo:], lo))
    return parts


def mul_stages(a_shape, b_shape) -> int:
    """Register stages of :func:`mul_pipe` for operands of these shapes."""
    n = len(_chunks(Signal(a_shape))) * len(_chunks(Signal(b_shape)))
    return 1 + max(0, (n - 1).bit_length())


def mul_pipe(m: Module, en, a, b, name: str) -> Value:
    """``a * b`` exactly, pipelined for the FPGA: the operands are cut into chunks of at most
    18x18 bits, each partial product is registered, then the partials are summed one adder
    level per register stage. Takes :func:`mul_stages` stages (loaded when ``en``)."""
    a, b = Value.cast(a), Value.cast(b)
    full = a * b
    terms = [reg(m, en, ac * bc, f"{name}_pp{i}_{j}")
             for i, (ac, _) in enumerate(_chunks(a)) for j, (bc, _) in enumerate(_chunks(b))]
    shifts = [sa + sb for _, sa in _chunks(a) for _, sb in _chunks(b)]
    level = 0
    vals = [t << sh for t, sh in zip(terms, shifts, strict=True)]
    while len(vals) > 1:
        pairs = [vals[i] + vals[i + 1] if i + 1 < len(vals) else vals[i]
                 for i in range(0, len(vals), 2)]
        vals = [reg(m, en, v, f"{name}_sum{level}_{k}") for k, v in enumerate(pairs)]
        level += 1
    out = Signal(full.shape(), name=f"{name}_prod")
    m.d.comb += out.eq(vals[0])
    return out


#: Stages of :func:`requant_stages` after the product: the shift, round and add, saturate.
REQUANT_EXTRA = 3


def requant_latency(*terms) -> int:
    """Stages of :func:`requant_stages` for terms whose ``z`` and ``mul`` have these shapes
    (``(z_shape, mul_shape)`` pairs): the widest product's, then :data:`REQUANT_EXTRA`. A unit
    can count its latency before it elaborates."""
    return max(mul_stages(z, mul) for z, mul in terms) + REQUANT_EXTRA


def requant_stages(m: Module, en, terms, out_width: int, name: str) -> tuple[Signal, int]:
    """``sat(sum(round_shift(z * mul, e)))`` -- the contract of
    :func:`heterotron.sim.golden.requantizer.requantize` -- pipelined: the product
    (:func:`mul_pipe`),
    the shift kept one bit wide, round half up and add, saturate. ``terms`` is a list of
    ``(z, mul, e)``; every register loads when ``en`` is high. Returns the output register
    (``signed(out_width)``) and the number of stages."""
    stages = requant_latency(*((Value.cast(z).shape(), Value.cast(mul).shape())
                               for z, mul, _ in terms))
    mstages = stages - REQUANT_EXTRA
    rounded = []
    for t, (z, mul, e) in enumerate(terms):
        z, mul = Value.cast(z), Value.cast(mul)
        pad = mstages - mul_stages(z.shape(), mul.shape())
        prod = mul_pipe(m, en, delay(m, en, z, pad, f"{name}_zpad{t}"),
                        delay(m, en, mul, pad, f"{name}_mpad{t}"), f"{name}_mul{t}")
        shift = delay(m, en, e, mstages, f"{name}_e{t}")
        half = reg(m, en, (prod << 1) >> shift, f"{name}_half{t}")
        rounded.append((half + 1) >> 1)
    total = rounded[0]
    for r in rounded[1:]:
        total = total + r
    total = reg(m, en, total, f"{name}_sum")
    lo, hi = -(1 << (out_width - 1)), (1 << (out_width - 1)) - 1
    out = Signal(signed(out_width), name=f"{name}_out")
    with m.If(en):
        m.d.sync += out.eq(Mux(total > hi, hi, Mux(total < lo, lo, total)))
    return out, stages


def bit_length(value):
    """``value``'s bit length (0 for 0): the leading-one detector, a priority chain."""
    out = Const(0, range(len(value) + 1))
    for b in range(len(value)):
        out = Mux(value[b], b + 1, out)
    return out


class SeqDivider(Elaboratable):
    """``quot = floor(num / den)`` for an unsigned ``num`` below ``2^num_width`` and
    ``1 <= den < 2^den_width``: restoring division, ``steps`` quotient bits per cycle, so a
    result takes ``ceil(num_width / steps)`` cycles. Operands are taken when ``start`` is high
    (and the divider is not ``busy``); ``done`` is high for one cycle with ``quot`` valid, and
    ``quot`` holds until the next start. A zero ``den`` gives all ones (callers never pass
    one)."""

    def __init__(self, num_width: int, den_width: int, steps: int = 1):
        self.num_width, self.den_width, self.steps = num_width, den_width, steps
        self.start = Signal()
        self.num = Signal(num_width)
        self.den = Signal(den_width)
        self.busy = Signal()
        self.done = Signal()
        self.quot = Signal(num_width)

    @property
    def cycles(self) -> int:
        return -(-self.num_width // self.steps)

    def elaborate(self, platform):
        m = Module()
        width = self.cycles * self.steps  # the numerator, zero-padded at the top
        rem = Signal(self.den_width)
        num = Signal(width)
        den = Signal(self.den_width)
        quot = Signal(width)
        count = Signal(range(self.cycles + 1))
        r, n, q = rem, num, quot
        for _ in range(self.steps):
            trial = Cat(n[-1], r)  # 2 * rem + next numerator bit, below 2 * den
            take = trial >= den
            r = Mux(take, trial - den, trial)[:self.den_width]
            n = (n << 1)[:width]
            q = Cat(take, q)
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += [rem.eq(r), num.eq(n), quot.eq(q), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            m.d.sync += [rem.eq(0), num.eq(self.num), den.eq(self.den), quot.eq(0),
                         count.eq(self.cycles), self.busy.eq(1)]
        m.d.comb += self.quot.eq(quot)
        return m


class SeqIsqrt(Elaboratable):
    """``root = floor(sqrt(value))`` for an unsigned ``value`` below ``2^width``, digit by
    digit: two bits of the operand per cycle, shifts, subtractions and compares only (no
    divider); ``ceil(width / 2)`` cycles. Same handshake as :class:`SeqDivider`.

    Its two additions are ORs: at the step where ``bit`` is ``4^k`` the partial root is a
    multiple of ``4^(k+1)``, so neither it nor half of it shares a bit with ``bit``. No carry
    chain then stands in front of the compare (LayerNorm's longest path once its reciprocal's
    divider is one subtraction deep)."""

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
        trial = root | bit
        take = rem >= trial
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += [
                rem.eq(Mux(take, rem - trial, rem)),
                root.eq(Mux(take, (root >> 1) | bit, root >> 1)),
                bit.eq(bit >> 2),
            ]
            with m.If(bit == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            m.d.sync += [rem.eq(self.value), root.eq(0), bit.eq(1 << (w - 2)), self.busy.eq(1)]
        m.d.comb += self.root.eq(root)
        return m


class RowIngest:
    """Stage 1 of a buffered row unit: takes the beats of ``i`` and writes them to bank
    ``bank`` of a row buffer through ``wr`` (address ``Cat(beat, bank)``), ``beats`` beats at
    most; beats past that are dropped and raise ``SfuError.LENGTH`` on ``raised`` (the unit's
    flags to raise this cycle, from :func:`~heterotron.hdl.ports.sticky_errors`).

    A new row starts only when ``can_start`` (a free bank, no configuration waiting); the
    caller computes its reduction from ``take``, ``keep`` (the beat is stored), ``first`` and
    the beat, and pushes its descriptor when ``push``: the row's ``last_idx`` (beat index of
    its last stored beat) and ``n`` are then valid.
    """

    def __init__(self, m: Module, i, wr, banks: int, beats: int, idx_w: int, can_start,
                 raised):
        self.in_row = Signal(name="s1_in_row")
        self.idx = Signal(range(beats + 1), name="s1_idx")
        self.bank = Signal(range(banks), name="s1_bank")
        beat = i.payload
        m.d.comb += i.ready.eq(self.in_row | can_start)
        self.take = i.valid & i.ready
        self.keep = self.idx < beats
        self.first = ~self.in_row
        self.alloc = self.take & self.first
        self.push = self.take & beat.last
        self.last_idx = Mux(self.keep, self.idx, beats - 1)
        self.n = Mux(self.keep, beat.n, len(beat.data) - 1)
        m.d.comb += [wr.addr.eq(Cat(self.idx[:idx_w], self.bank)), wr.data.eq(beat.data),
                     wr.en.eq(self.take & self.keep)]
        with m.If(self.take):
            with m.If(self.keep):
                m.d.sync += self.idx.eq(self.idx + 1)
            with m.Else():
                raise_error(m, raised, SfuError.LENGTH)
            with m.If(beat.last):
                m.d.sync += [self.in_row.eq(0), self.idx.eq(0),
                             self.bank.eq(Mux(self.bank == banks - 1, 0, self.bank + 1))]
            with m.Else():
                m.d.sync += self.in_row.eq(1)


class RowIssuer:
    """Walks the beats of one row after another: takes a descriptor (with ``last``, the beat
    index of the row's last beat) when ``avail`` and ``ok``, then issues beat ``idx`` in every
    cycle ``en`` is high (``en=None``: every cycle), ``last`` marking the row's final beat. The
    next row is taken in the cycle the current one issues its last beat, so rows follow each
    other without a gap. ``start`` is the caller's descriptor read strobe."""

    def __init__(self, m: Module, name: str, desc_layout, desc_in, avail, idx_w: int,
                 en=None, ok=1):
        self.cur = Signal(desc_layout, name=f"{name}_desc")
        self.active = Signal(name=f"{name}_active")
        self.idx = Signal(idx_w, name=f"{name}_idx")
        en = Value.cast(1) if en is None else en
        self.last = self.active & (self.idx == self.cur.last)
        self.issue = self.active & en
        self.done = self.issue & self.last
        self.start = (~self.active | self.done) & avail & ok
        with m.If(self.issue):
            m.d.sync += self.idx.eq(self.idx + 1)
            with m.If(self.last):
                m.d.sync += self.active.eq(0)
        with m.If(self.start):
            m.d.sync += [self.cur.eq(desc_in), self.active.eq(1), self.idx.eq(0)]


def tree_stages(n: int) -> int:
    """Register stages of :func:`tree_pipe` over ``n`` values."""
    return max(0, (n - 1).bit_length())


def tree_pipe(m: Module, en, values, op, name: str):
    """Reduce ``values`` with the two-input ``op`` (sum, maximum), one level of the tree per
    register stage (:func:`tree_stages`); a single value passes through unregistered."""
    values = list(values)
    level = 0
    while len(values) > 1:
        values = [reg(m, en, op(values[i], values[i + 1]), f"{name}_l{level}_{i // 2}")
                  if i + 1 < len(values) else reg(m, en, values[i], f"{name}_l{level}_{i // 2}")
                  for i in range(0, len(values), 2)]
        level += 1
    return values[0]

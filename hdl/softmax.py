"""Softmax: row-wise integer Softmax (max, i-exp, sum, reciprocal, normalisation), streaming."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .params import Param, ParamError, check, validating
from .rowstream import (
    RowIngest,
    RowIssuer,
    SeqDivider,
    SfuError,
    bank_depth,
    lane_valid,
    reg,
    row_layout,
)

__all__ = ["Softmax"]

#: Row banks of the input buffer (ingest / exp pass) and of the exponent buffer (exp pass /
#: reciprocal / output pass): enough for every stage to work on its own row.
X_BANKS, E_BANKS = 2, 3
#: Division-free reciprocal: fraction bits, Newton steps and the seed's constants, exactly as
#: :func:`heterotron.sim.intops.reciprocal_divfree`.
DF_F, DF_ITERS = 30, 3
DF_Y0 = round(48 / 17 * 2**DF_F)
DF_C15 = round(32 / 17 * 2**15)


def _tree(values, op):
    values = list(values)
    while len(values) > 1:
        values = [op(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class Softmax(wiring.Component):
    """Integer Softmax of each row, :func:`heterotron.sim.intops.softmax_int` bit for bit.

    Four stages work on four rows at once, each row's elements in a bank of on-chip buffer:

    1. **ingest**: takes the row's beats (``lanes`` elements per cycle), stores them and keeps
       the running maximum;
    2. **exp pass**: reads the row back, ``e = i_exp(x - max)`` per element (the quotient
       ``q = floor((x - max) / x0)`` by a five-step restoring division against the constant,
       pipelined), stores ``e`` and sums it;
    3. **reciprocal**: ``floor(2^32 / sum)`` by a sequential divider (``ibert``, 33 cycles) or
       the division-free Newton reciprocal (``divfree``: leading-one normalisation and seven
       multiplications on one multiplier, 17 cycles; no divider circuit);
    4. **output**: ``min(e * recip >> (32 - out_width), 2^out_width - 1)`` per element,
       ``lanes`` per cycle; the top corner (one element taking the whole mass, which would be
       ``2^out_width``) saturates.

    A row of ``L`` elements costs ``ceil(L / lanes)`` cycles in stages 1, 2 and 4 and the
    reciprocal's cycles in stage 3; the stages overlap, so the row rate is set by the slowest.

    Parameters
    ----------
    lanes : int
        Elements per beat, 1 to 16.
    max_len : int
        Longest row, a multiple of ``lanes``, up to 4096. A longer row sets
        ``SfuError.LENGTH`` and is computed on its first ``max_len`` elements.
    in_width : int
        Signed input width, 2 to 32 (int32 attention scores).
    exp_width : int
        Width of i-exp's output, 4 to 30: the constant ``c`` must be below ``2^exp_width``.
    variant : str
        ``ibert`` or ``divfree`` (the reciprocal, see above).
    out_width : int
        Unsigned output width, 2 to 16 (8: probabilities at scale 1/256).

    Members
    -------
    i : In(stream.Signature(row beat of signed(in_width)))
    o : Out(stream.Signature(row beat of unsigned(out_width)))
        Each row comes out with the same beat structure (``n``, ``last``) it went in with.
    cfg : In(stream.Signature(...))
        i-exp's ``x0``, ``b``, ``c`` (:func:`heterotron.sim.intops.exp_consts`). A write is
        taken once no row is being computed; while one waits no new row starts. It is refused
        (``SfuError.CONFIG``) unless ``x0 < 0``, ``b >= -x0`` and ``c >= 1`` -- the conditions
        under which ``0 <= e <= c`` and every row sum is at least 1.
    error : Out(3)
        Sticky :class:`~heterotron.hdl.rowstream.SfuError` flags.
    """

    PARAMS = (
        Param("lanes", int, 4, "elements per beat", 1, 16),
        Param("max_len", int, 512, "longest row in elements", 1, 4096, multiple_of="lanes"),
        Param("in_width", int, 32, "signed input width", 2, 32),
        Param("exp_width", int, 24, "width of i-exp's output (c < 2^exp_width)", 4, 30),
        Param("variant", str, "ibert", "reciprocal circuit", choices=("ibert", "divfree")),
        Param("out_width", int, 8, "unsigned output width", 2, 16),
    )

    EXP_STAGES = 10  # exp pass: read, clamp, 5 division steps, multiply, shift, write/sum
    OUT_STAGES = 3  # output pass: read, multiply, shift/saturate

    def __init__(self, *, lanes=4, max_len=512, in_width=32, exp_width=24, variant="ibert",
                 out_width=8):
        with validating(self):
            check(self.PARAMS, lanes=lanes, max_len=max_len, in_width=in_width,
                  exp_width=exp_width, variant=variant, out_width=out_width)
            if max_len < lanes:
                raise ParamError(f"max_len must be at least lanes ({lanes}), not {max_len}")
        self._lanes, self._max_len, self._in_width = lanes, max_len, in_width
        self._exp_width, self._variant, self._out_width = exp_width, variant, out_width
        super().__init__({
            "i": In(stream.Signature(row_layout(signed(in_width), lanes))),
            "o": Out(stream.Signature(row_layout(unsigned(out_width), lanes))),
            "cfg": In(stream.Signature(self.cfg_layout(exp_width))),
            "error": Out(len(SfuError)),
        })

    @staticmethod
    def cfg_layout(exp_width: int) -> data.StructLayout:
        """``|x0| < 2^h`` and ``b < 2^(h+1)`` with ``h = ceil(exp_width / 2) + 2``: real
        constants have ``|x0| ~ 0.42 sqrt(c)`` and ``b ~ 1.62 sqrt(c)``."""
        h = (exp_width + 1) // 2 + 2
        return data.StructLayout({"x0": signed(h + 1), "b": unsigned(h + 1),
                                  "c": unsigned(exp_width)})

    lanes = property(lambda self: self._lanes)
    max_len = property(lambda self: self._max_len)
    in_width = property(lambda self: self._in_width)
    exp_width = property(lambda self: self._exp_width)
    variant = property(lambda self: self._variant)
    out_width = property(lambda self: self._out_width)

    @property
    def parameters(self) -> dict:
        return {p.name: getattr(self, p.name) for p in self.PARAMS}

    @property
    def sum_width(self) -> int:
        return self._exp_width + self._max_len.bit_length()

    @property
    def recip_cycles(self) -> int:
        """Cycles of the reciprocal circuit per row: the divider's 33 quotient bits, or the
        Newton sequence (bit length, normalisation, seed, three steps of four cycles)."""
        return 33 if self._variant == "ibert" else 4 + 4 * DF_ITERS

    @property
    def latency(self) -> int:
        """Cycles from accepting the last beat of a one-beat row to its first output beat,
        with the other stages idle: ingest hand-off, exp pass, reciprocal, output pass
        (measured in ``tests/test_sfu.py``). See :meth:`row_latency` for longer rows."""
        return 18 + self.recip_cycles

    def row_latency(self, beats: int) -> int:
        """The same for a row of ``beats`` beats: the exp pass reads the row again first."""
        return self.latency + beats - 1

    def elaborate(self, platform):
        m = Module()
        L, W, E = self._lanes, self._in_width, self._exp_width
        beats = self._max_len // L
        depth = bank_depth(self._max_len, L)
        idx_shape = range(depth)
        idx_w = (depth - 1).bit_length()

        # -- configuration ------------------------------------------------------------------
        k = Signal(self.cfg_layout(E), name="consts")
        x0_30 = Signal(signed(len(k.x0) + 5), name="x0_30")  # clamp point 30 * x0
        nx0 = Signal(len(k.x0), name="nx0")  # -x0 > 0
        x_held = Signal(range(X_BANKS + 1))
        e_held = Signal(range(E_BANKS + 1))
        m.d.comb += self.cfg.ready.eq((x_held == 0) & (e_held == 0))
        with m.If(self.cfg.valid & self.cfg.ready):
            p = self.cfg.payload
            with m.If((p.x0 >= 0) | (p.b + p.x0 < 0) | (p.c == 0)):
                m.d.sync += self.error.eq(self.error | SfuError.CONFIG)
            with m.Else():
                m.d.sync += [k.eq(p), x0_30.eq(p.x0 * 30), nx0.eq(-p.x0)]

        # -- stage 1: ingest ----------------------------------------------------------------
        m.submodules.xbuf = xbuf = Memory(shape=data.ArrayLayout(signed(W), L),
                                          depth=X_BANKS * depth, init=[])
        x_wr = xbuf.write_port()
        x_rd = xbuf.read_port()
        desc1 = data.StructLayout({"bank": range(X_BANKS), "last": idx_shape,
                                   "n": len(self.i.payload.n), "max": signed(W)})
        m.submodules.f12 = f12 = SyncFIFO(width=desc1.size, depth=X_BANKS)
        run_max = Signal(signed(W))
        beat = self.i.payload
        s1 = RowIngest(m, self.i, x_wr, X_BANKS, beats, idx_w,
                       (x_held < X_BANKS) & ~self.cfg.valid, self.error)
        lo = -(1 << (W - 1))
        bmax = _tree([Mux(lane_valid(beat.n, beat.last, j, L), beat.data[j], lo)
                      for j in range(L)], lambda a, b: Mux(a > b, a, b))
        new_max = Mux(s1.in_row & (run_max > bmax), run_max, bmax)
        with m.If(s1.take & s1.keep):
            m.d.sync += run_max.eq(new_max)
        d1 = Signal(desc1)
        m.d.comb += [d1.bank.eq(s1.bank), d1.last.eq(s1.last_idx), d1.n.eq(s1.n),
                     d1.max.eq(Mux(s1.keep, new_max, run_max)),
                     f12.w_data.eq(d1), f12.w_en.eq(s1.push)]

        # -- stage 2: exp pass --------------------------------------------------------------
        m.submodules.ebuf = ebuf = Memory(shape=data.ArrayLayout(unsigned(E), L),
                                          depth=E_BANKS * depth, init=[])
        e_wr = ebuf.write_port()
        e_rd = ebuf.read_port()
        s2 = RowIssuer(m, "s2", desc1, f12.r_data, f12.r_rdy, idx_w, ok=e_held < E_BANKS)
        cur2 = s2.cur
        ebank2 = Signal(range(E_BANKS), name="s2_ebank")
        next_ebank = Signal(range(E_BANKS))
        m.d.comb += [f12.r_en.eq(s2.start), x_rd.addr.eq(Cat(s2.idx, cur2.bank))]
        with m.If(s2.start):
            m.d.sync += [ebank2.eq(next_ebank),
                         next_ebank.eq(Mux(next_ebank == E_BANKS - 1, 0, next_ebank + 1))]
        m.d.sync += x_held.eq(x_held + s1.alloc - s2.done)

        # The tag travels beside the data: valid, beat index, last, n, bank, max.
        tag_layout = data.StructLayout({"valid": 1, "idx": idx_shape, "last": 1,
                                        "n": len(beat.n), "bank": range(E_BANKS),
                                        "max": signed(W), "desc": desc1})
        t = Signal(tag_layout, name="s2_t0")
        m.d.comb += [t.valid.eq(s2.active), t.idx.eq(s2.idx), t.last.eq(s2.last),
                     t.n.eq(cur2.n),
                     t.bank.eq(ebank2), t.max.eq(cur2.max), t.desc.eq(cur2)]
        t = reg(m, None, t, "s2_t1")  # the buffer read lands with it
        xs = x_rd.data
        # clamp at 30 * x0, negate: a = -(max(x - max, 30 x0)) >= 0
        a = [reg(m, None, -Mux(xs[j] - t.max < x0_30, x0_30, xs[j] - t.max), f"s2_a{j}")
             for j in range(L)]
        t = reg(m, None, t, "s2_t2")
        q = [Const(0, 5)] * L
        for bit in reversed(range(5)):  # restoring division of a by -x0, five quotient bits
            step_q, step_a = [], []
            for j in range(L):
                ge = a[j] >= (nx0 << bit)
                step_a.append(reg(m, None, Mux(ge, a[j] - (nx0 << bit), a[j]),
                                  f"s2_rem{bit}_{j}"))
                step_q.append(reg(m, None, q[j] | (ge << bit), f"s2_q{bit}_{j}"))
            a, q = step_a, step_q
            t = reg(m, None, t, f"s2_tq{bit}")
        # r = -rem in (x0, 0]; z = (r + b) r + c <= c; e = max(z >> q, 0)
        prod = [reg(m, None, (k.b - rem) * -rem, f"s2_prod{j}") for j, rem in enumerate(a)]
        qq = [reg(m, None, qj, f"s2_qq{j}") for j, qj in enumerate(q)]
        t = reg(m, None, t, "s2_tp")
        ez = []
        for j in range(L):
            z = (prod[j] + k.c) >> qq[j]
            ez.append(reg(m, None, Mux(z < 0, 0, z), f"s2_e{j}"))
        t = reg(m, None, t, "s2_te")
        # write e, sum the valid lanes; the row's sum goes to the reciprocal stage
        m.d.comb += [e_wr.addr.eq(Cat(t.idx, t.bank)), e_wr.en.eq(t.valid)]
        for j in range(L):
            m.d.comb += e_wr.data[j].eq(ez[j])
        sw = self.sum_width
        acc = Signal(sw, name="s2_acc")
        lane_sum = _tree([Mux(lane_valid(t.n, t.last, j, L), ez[j][:E], 0) for j in range(L)],
                         lambda x, y: x + y)
        total = Signal(sw)
        m.d.comb += total.eq(acc + lane_sum)
        with m.If(t.valid):
            m.d.sync += acc.eq(Mux(t.last, 0, total))
        desc2 = data.StructLayout({"bank": range(E_BANKS), "last": idx_shape,
                                   "n": len(beat.n), "sum": sw})
        m.submodules.f23 = f23 = SyncFIFO(width=desc2.size, depth=E_BANKS + 1)
        d2 = Signal(desc2)
        m.d.comb += [d2.bank.eq(t.bank), d2.last.eq(t.desc.last), d2.n.eq(t.n), d2.sum.eq(total),
                     f23.w_data.eq(d2), f23.w_en.eq(t.valid & t.last)]

        # -- stage 3: reciprocal ------------------------------------------------------------
        desc3 = data.StructLayout({"bank": range(E_BANKS), "last": idx_shape,
                                   "n": len(beat.n), "recip": unsigned(34)})
        cur3 = Signal(desc3, name="s3_desc")
        busy3 = Signal()
        done3 = Signal()
        take3 = Signal()  # the output stage takes the finished reciprocal
        start3 = ~busy3 & ~done3 & f23.r_rdy
        d2r = Signal(desc2)
        m.d.comb += [f23.r_en.eq(start3), d2r.eq(f23.r_data)]
        with m.If(start3):
            m.d.sync += [cur3.bank.eq(d2r.bank), cur3.last.eq(d2r.last), cur3.n.eq(d2r.n),
                         busy3.eq(1)]
        with m.If(take3):
            m.d.sync += done3.eq(0)
        finish = Signal()
        recip = Signal(34)
        with m.If(finish):
            m.d.sync += [busy3.eq(0), done3.eq(1), cur3.recip.eq(recip)]
        if self._variant == "ibert":
            m.submodules.div = div = SeqDivider(33, sw)
            m.d.comb += [div.start.eq(start3), div.num.eq(1 << 32), div.den.eq(d2r.sum),
                         finish.eq(div.done), recip.eq(div.quot)]
        else:
            self._divfree(m, start3, d2r.sum, finish, recip)

        # -- stage 4: output ----------------------------------------------------------------
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        s4 = RowIssuer(m, "s4", desc3, cur3, done3, idx_w, en=advance)
        m.d.comb += [take3.eq(s4.start), e_rd.addr.eq(Cat(s4.idx, s4.cur.bank)),
                     e_rd.en.eq(advance)]
        m.d.sync += e_held.eq(e_held + s2.start - s4.done)
        o_tag = Signal(data.StructLayout({"valid": 1, "n": len(beat.n), "last": 1,
                                          "recip": unsigned(34)}))
        m.d.comb += [o_tag.valid.eq(s4.active), o_tag.n.eq(s4.cur.n), o_tag.last.eq(s4.last),
                     o_tag.recip.eq(s4.cur.recip)]
        o_tag = reg(m, advance, o_tag, "s4_t1")
        prods = [reg(m, advance, e_rd.data[j] * o_tag.recip, f"s4_prod{j}") for j in range(L)]
        o_tag = reg(m, advance, o_tag, "s4_t2")
        top = (1 << self._out_width) - 1
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(o_tag.valid), self.o.payload.n.eq(o_tag.n),
                         self.o.payload.last.eq(o_tag.last)]
            for j in range(L):
                scaled = prods[j] >> (32 - self._out_width)
                m.d.sync += self.o.payload.data[j].eq(Mux(scaled > top, top, scaled))
        return m

    def _divfree(self, m, start, s, finish, recip):
        """:func:`heterotron.sim.intops.reciprocal_divfree` on one multiplier: bit length,
        normalisation, the linear seed, three Newton steps of two products each, final
        shift. ``finish`` pulses with ``recip`` valid."""
        sw = len(s)
        sval = Signal(sw, name="df_s")
        klen = Signal(range(sw + 1), name="df_k")
        mn = Signal(DF_F, name="df_m")
        y = Signal(signed(36), name="df_y")
        tt = Signal(signed(36), name="df_t")
        prod = Signal(signed(72), name="df_p")
        step = Signal(range(4 + 4 * DF_ITERS + 2), name="df_step")
        running = Signal()
        # bit length of s: the leading-one detector
        blen = Const(0, range(sw + 1))
        for b in range(sw):
            blen = Mux(sval[b], b + 1, blen)
        final = Signal(unsigned(36))
        m.d.comb += [final.eq(Mux(klen >= 2, y >> (klen - 2).as_unsigned(), y << 1)),
                     recip.eq(final)]
        m.d.comb += finish.eq(0)
        with m.If(start):
            m.d.sync += [sval.eq(s), step.eq(0), running.eq(1)]
        with m.Elif(running):
            m.d.sync += step.eq(step + 1)
            # one register per step (no case statement: each assignment has its own enable)
            with m.If(step == 0):
                m.d.sync += klen.eq(blen)
            with m.If(step == 1):
                m.d.sync += mn.eq(Mux(klen >= DF_F, sval >> (klen - DF_F).as_unsigned(),
                                      sval << (DF_F - klen).as_unsigned()))
            with m.If(step == 2):
                m.d.sync += prod.eq(mn * DF_C15)
            with m.If(step == 3):
                m.d.sync += y.eq(DF_Y0 - (prod >> 15))
            for it in range(DF_ITERS):
                base = 4 + 4 * it
                with m.If(step == base):
                    m.d.sync += prod.eq(mn * y)
                with m.If(step == base + 1):
                    m.d.sync += tt.eq((2 << DF_F) - (prod >> DF_F))
                with m.If(step == base + 2):
                    m.d.sync += prod.eq(y * tt)
                with m.If(step == base + 3):
                    m.d.sync += y.eq(prod >> DF_F)
            with m.If(step == 4 + 4 * DF_ITERS):
                m.d.comb += finish.eq(1)
                m.d.sync += running.eq(0)

"""Softmax: row-wise integer Softmax (max, i-exp, sum, reciprocal, normalisation), streaming."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory

from heterotron.hdl.contract.numerics import EXP_MAX_WIDTH, EXP_MIN_BITS, RECIP_NORM, exp_field_bits
from heterotron.hdl.contract.params import Param, Parameterised
from heterotron.hdl.ports import raise_error, sticky_errors
from heterotron.hdl.rowstream import (
    RowIngest,
    RowIssuer,
    SeqDivider,
    SfuError,
    bank_depth,
    bit_length,
    delay,
    lane_valid,
    mul_pipe,
    mul_stages,
    reg,
    row_unit_ports,
    tree_pipe,
    tree_stages,
)
from heterotron.hdl.simgate import gated_pipeline

__all__ = ["Softmax"]

#: Row banks of the input buffer (held from ingest to the end of the exp pass) and of the
#: exponent buffer (held from the exp pass through the reciprocal to the end of the output
#: pass, about three rows' time plus the pipelines): enough that rows of 32 beats or more
#: follow each other without a gap.
X_BANKS, E_BANKS = 3, 4
#: Division-free reciprocal: fraction bits, Newton steps and the seed's constants, exactly as
#: :func:`heterotron.sim.golden.intops.reciprocal_divfree`.
DF_F, DF_ITERS = 30, 3
#: Quotient bits per cycle of the ``ibert`` divider: 17 cycles for 33 bits, so rows of 128
#: scores over 4 lanes (32 beats) are not held up by it.
DIV_STEPS = 2
DF_Y0 = round(48 / 17 * 2**DF_F)
DF_C15 = round(32 / 17 * 2**15)
DF_W = 34  # register width of the Newton sequence's y and t


def _norm_shift(blen):
    """The reciprocal's normalisation from the sum's bit length:
    :func:`heterotron.sim.golden.intops.recip_shift`, ``max(0, blen - RECIP_NORM)``."""
    return Mux(blen > RECIP_NORM, blen - RECIP_NORM, 0)


class Softmax(Parameterised, wiring.Component):
    """Integer Softmax of each row, :func:`heterotron.sim.golden.intops.softmax_int` bit for bit.

    Four stages work on four rows at once, each row's elements in a bank of on-chip buffer:

    1. **ingest**: takes the row's beats (``lanes`` elements per cycle), stores them and keeps
       the running maximum;
    2. **exp pass**: reads the row back, ``e = i_exp(x - max)`` per element (the quotient
       ``q = floor((x - max) / x0)`` by a five-step restoring division against the constant,
       pipelined), stores ``e`` and sums it;
    3. **reciprocal**: the row sum's normalisation ``sh = max(0, bitlen(sum) - 16)``, then
       ``floor(2^32 / (sum >> sh))`` by a sequential divider on a 16-bit divisor (``ibert``,
       two cycles for the normalisation, two quotient bits a cycle: 19 cycles) or the
       division-free Newton reciprocal (``divfree``:
       leading-one normalisation and seven products on one pipelined multiplier, 37 cycles; no
       divider circuit); the reciprocal keeps 17 or more significant bits for any row sum;
    4. **output**: ``min(round(e * recip / 2^(32 + sh - out_width)), 2^out_width - 1)`` per
       element (round half up), ``lanes`` per cycle; the top corner (one element taking the
       whole mass, which would be ``2^out_width``) saturates.

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
        Width of i-exp's output, 17 to 30: the constant ``c`` must be below ``2^exp_width``.
        ``c = floor(2.79 / S^2)`` for input scale ``S`` (:func:`heterotron.sim.golden.intops.
        exp_width_for` gives the width a scale needs): 28 bits hold scales down to 1.02e-4
        (all-MiniLM-L6-v2's calibrated score scales need 22 to 25 bits, 27 when calibrated on
        short sentences only).
    variant : str
        ``ibert`` or ``divfree`` (the reciprocal, see above).
    out_width : int
        Unsigned output width, 2 to 16 (8: probabilities at scale 1/256).

    Members
    -------
    i : In(stream.Signature(row beat of signed(in_width)))
    o : Out(stream.Signature(row beat of unsigned(out_width)))
        Each row comes out with the same beat structure (``n``, ``last``) it went in with.
    cfg : In(stream.Signature(cfg_layout))
        i-exp's ``x0``, ``b``, ``c`` (:func:`heterotron.sim.golden.intops.exp_consts`). A write is
        taken once no row is being computed; while one waits no new row starts. It is refused
        (``SfuError.CONFIG``) unless ``x0 < 0``, ``b >= -x0`` and ``c >= 2^16``
        (:func:`heterotron.sim.golden.intops.exp_consts_problem`): the first two make
        ``0 <= e <= c`` and every row sum at least 1, the last refuses scales coarser than
        0.0065, where i-exp is too coarse for the documented error bound.
    error : Out(3), error_clear : In(1)
        Sticky :class:`~heterotron.hdl.rowstream.SfuError` flags, cleared by a cycle with
        ``error_clear`` high (:mod:`heterotron.hdl.ports`).
    """

    PARAMS = (
        Param("lanes", int, 4, "elements per beat", 1, 16),
        Param("max_len", int, 512, "longest row in elements", 1, 4096, multiple_of="lanes"),
        Param("in_width", int, 32, "signed input width", 2, 32),
        Param("exp_width", int, 28, "width of i-exp's output (c < 2^exp_width)",
              EXP_MIN_BITS + 1, EXP_MAX_WIDTH),
        Param("variant", str, "ibert", "reciprocal circuit", choices=("ibert", "divfree")),
        Param("out_width", int, 8, "unsigned output width", 2, 16),
    )

    EXP_STAGES = 11  # exp pass: read, clamp (compare, negate), 5 division steps, multiply,
    # shift, write/sum
    OUT_STAGES = 4  # output pass: read, multiply, normalising shift, round/saturate

    def __init__(self, **given):
        p = self._take_params(given)
        super().__init__(row_unit_ports(self, p["lanes"], {"i": signed(p["in_width"])},
                                        unsigned(p["out_width"])))

    @property
    def cfg_layout(self) -> data.StructLayout:
        """The constants ``x0``, ``b``, ``c``: ``|x0| <= 2^h`` and ``b < 2^(h+1)`` with ``h``
        of :func:`heterotron.sim.golden.intops.exp_field_bits`, ``c < 2^exp_width``."""
        h = exp_field_bits(self.exp_width)
        return data.StructLayout({"x0": signed(h + 1), "b": unsigned(h + 1),
                                  "c": unsigned(self.exp_width)})

    @property
    def sum_width(self) -> int:
        return self.exp_width + self.max_len.bit_length()

    @property
    def df_wait(self) -> int:
        """Cycles the division-free sequence waits for each product (its multiplier's
        pipeline)."""
        return mul_stages(signed(DF_W), signed(DF_W))

    @property
    def recip_cycles(self) -> int:
        """Cycles of the reciprocal circuit per row: the normalisation (bit length, then the
        shifted divisor) and the divider's 33 quotient bits, two a cycle, or the Newton
        sequence (bit length, normalisation, seed, three steps of two products)."""
        if self.variant == "ibert":
            return 2 + -(-33 // DIV_STEPS)
        return 4 + 4 * DF_ITERS + (1 + 2 * DF_ITERS) * self.df_wait

    def _plan(self) -> dict:
        """Register stages of the pipelined multiplications, from the operand shapes: i-exp's
        ``(b - rem) * -rem`` and the output's ``e * recip``."""
        h1 = len(Signal(self.cfg_layout).x0)
        rem = Signal(h1)
        rb = Signal((Signal(h1) - rem).shape())
        return {"exp": mul_stages(rb.shape(), (-rem).shape()),
                "out": mul_stages(unsigned(self.exp_width), unsigned(34))}

    @property
    def latency(self) -> int:
        """Cycles from accepting the last beat of a one-beat row to its first output beat,
        with the other stages idle: ingest (lane maximum tree), exp pass (lane sum tree,
        pipelined product), reciprocal, output pass (pipelined product); measured in
        ``tests/test_sfu.py``. See :meth:`row_latency` for longer rows."""
        plan = self._plan()
        return (24 + 2 * tree_stages(self.lanes) + plan["exp"] + plan["out"]
                + self.recip_cycles)

    @property
    def timing(self) -> dict:
        """What the sidecar records about the timing of rows."""
        return {"latency": "cycles from a one-beat row's last input beat to its first output "
                           "beat; add one per further beat of the row",
                "reciprocal_cycles": self.recip_cycles,
                "row_interval": "about max(ceil(length / lanes), reciprocal_cycles + 4) cycles "
                                "(measured by heterotron bench sfu)"}

    def row_latency(self, beats: int) -> int:
        """The same for a row of ``beats`` beats: the exp pass reads the row again first."""
        return self.latency + beats - 1

    def elaborate(self, platform):
        m = Module()
        L, W, E = self.lanes, self.in_width, self.exp_width
        beats = self.max_len // L
        depth = bank_depth(self.max_len, L)
        idx_shape = range(depth)
        idx_w = (depth - 1).bit_length()

        # -- configuration ------------------------------------------------------------------
        k = Signal(self.cfg_layout, name="consts")
        x0_30 = Signal(signed(len(k.x0) + 5), name="x0_30")  # clamp point 30 * x0
        nx0 = Signal(len(k.x0), name="nx0")  # -x0 > 0
        x_held = Signal(range(X_BANKS + 1))
        e_held = Signal(range(E_BANKS + 1))
        raised = sticky_errors(m, self.error, self.error_clear)
        m.d.comb += self.cfg.ready.eq((x_held == 0) & (e_held == 0))
        with m.If(self.cfg.valid & self.cfg.ready):
            p = self.cfg.payload
            with m.If((p.x0 >= 0) | (p.b + p.x0 < 0) | (p.c < (1 << EXP_MIN_BITS))):
                raise_error(m, raised, SfuError.CONFIG)
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
        beat = self.i.payload
        s1 = RowIngest(m, self.i, x_wr, X_BANKS, beats, idx_w,
                       (x_held < X_BANKS) & ~self.cfg.valid, raised)
        # The row maximum: a registered tree over the lanes, then the running maximum; the
        # beat's bookkeeping travels alongside and the descriptor is pushed at the end.
        lo = -(1 << (W - 1))
        ev = Signal(data.StructLayout({"keep": 1, "first": 1, "push": 1, "desc": desc1}))
        m.d.comb += [ev.keep.eq(s1.take & s1.keep), ev.first.eq(s1.first),
                     ev.push.eq(s1.push), ev.desc.bank.eq(s1.bank),
                     ev.desc.last.eq(s1.last_idx), ev.desc.n.eq(s1.n)]
        # Each stage's pipeline holds still once its last beat is through (heterotron.hdl.
        # simgate); the unit's latency bounds every stage's depth.
        pm, _ = gated_pipeline(m, platform, 1, self.i.valid | ev.keep | ev.push, self.latency,
                               "s1_pipe")
        lanes_in = [reg(pm, None, Mux(lane_valid(beat.n, beat.last, j, L), beat.data[j], lo),
                        f"s1_lane{j}") for j in range(L)]
        ev = reg(pm, None, ev, "s1_ev")
        bmax = tree_pipe(pm, None, lanes_in, lambda a, b: Mux(a > b, a, b), "s1_max")
        ev = delay(pm, None, ev, tree_stages(L), "s1_ev")
        run_max = Signal(signed(W))
        new_max = Mux(~ev.first & (run_max > bmax), run_max, bmax)
        with m.If(ev.keep):
            m.d.sync += run_max.eq(new_max)
        d1 = Signal(desc1)
        m.d.comb += [d1.eq(ev.desc), d1.max.eq(Mux(ev.keep, new_max, run_max)),
                     f12.w_data.eq(d1), f12.w_en.eq(ev.push)]

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
                                        "bank": range(E_BANKS), "desc": desc1})
        t = Signal(tag_layout, name="s2_t0")
        m.d.comb += [t.valid.eq(s2.active), t.idx.eq(s2.idx), t.last.eq(s2.last),
                     t.bank.eq(ebank2), t.desc.eq(cur2)]
        pm, _ = gated_pipeline(m, platform, 1, s2.active, self.latency, "s2_pipe")
        t = reg(pm, None, t, "s2_t1")  # the buffer read lands with it
        xs = reg(pm, None, x_rd.data, "s2_x")  # registered straight out of the block RAM
        t = reg(pm, None, t, "s2_tx")
        # clamp at 30 * x0, negate: a = -(max(x - max, 30 x0)) >= 0
        d = [reg(pm, None, xs[j] - t.desc.max, f"s2_d{j}") for j in range(L)]
        t = reg(pm, None, t, "s2_t2")
        # 0 <= a <= 30 |x0| < 2^(h + 5): kept at that width through the division
        aw = len(k.x0) + 4
        # the wide compare in one stage, the negation in the next (only its low aw bits are
        # kept, so synthesis keeps an aw-bit carry chain: a < 2^aw)
        clamp = [reg(pm, None, d[j] < x0_30, f"s2_clamp{j}") for j in range(L)]
        d = [reg(pm, None, d[j], f"s2_dn{j}") for j in range(L)]
        t = reg(pm, None, t, "s2_tc")
        a = [reg(pm, None, (-Mux(clamp[j], x0_30, d[j]))[:aw], f"s2_a{j}") for j in range(L)]
        t = reg(pm, None, t, "s2_t3")
        q = [Const(0, 5)] * L
        for bit in reversed(range(5)):  # restoring division of a by -x0, five quotient bits
            step_q, step_a = [], []
            for j in range(L):
                ge = a[j] >= (nx0 << bit)
                step_a.append(reg(pm, None, Mux(ge, a[j] - (nx0 << bit), a[j])[:aw],
                                  f"s2_rem{bit}_{j}"))
                step_q.append(reg(pm, None, q[j] | (ge << bit), f"s2_q{bit}_{j}"))
            a, q = step_a, step_q
            t = reg(pm, None, t, f"s2_tq{bit}")
        # r = -rem in (x0, 0]; z = (r + b) r + c <= c; e = max(z >> q, 0)
        # the remainder is below -x0 <= 2^h: h + 1 bits hold it exactly
        a = [rem[:len(k.x0)] for rem in a]
        rb = [reg(pm, None, k.b - rem, f"s2_rb{j}") for j, rem in enumerate(a)]
        r = [reg(pm, None, -rem, f"s2_r{j}") for j, rem in enumerate(a)]
        q = [reg(pm, None, qj, f"s2_qr{j}") for j, qj in enumerate(q)]
        t = reg(pm, None, t, "s2_tr")
        prod = [mul_pipe(pm, None, rb[j], r[j], f"s2_mul{j}") for j in range(L)]
        stages = self._plan()["exp"]
        q = [delay(pm, None, qj, stages, f"s2_qm{j}") for j, qj in enumerate(q)]
        t = delay(pm, None, t, stages, "s2_tm")
        z = [reg(pm, None, prod[j] + k.c, f"s2_z{j}") for j in range(L)]
        q = [reg(pm, None, qj, f"s2_qz{j}") for j, qj in enumerate(q)]
        t = reg(pm, None, t, "s2_tz")
        ez = []
        for j in range(L):
            zq = z[j] >> q[j]
            ez.append(reg(pm, None, Mux(zq < 0, 0, zq), f"s2_e{j}"))
        t = reg(pm, None, t, "s2_te")
        # write e; sum the valid lanes (a registered tree), then the running row sum, which
        # goes to the reciprocal stage with the row's last beat
        pm.d.comb += [e_wr.addr.eq(Cat(t.idx, t.bank)), e_wr.en.eq(t.valid)]
        for j in range(L):
            pm.d.comb += e_wr.data[j].eq(ez[j])
        sw = self.sum_width
        lane_sum = tree_pipe(pm, None, [Mux(lane_valid(t.desc.n, t.last, j, L), ez[j][:E], 0)
                                       for j in range(L)], lambda x, y: x + y, "s2_sum")
        t = delay(pm, None, t, tree_stages(L), "s2_ts")
        acc = Signal(sw, name="s2_acc")
        total = Signal(sw)
        m.d.comb += total.eq(acc + lane_sum)
        with m.If(t.valid):
            m.d.sync += acc.eq(Mux(t.last, 0, total))
        desc2 = data.StructLayout({"bank": range(E_BANKS), "last": idx_shape,
                                   "n": len(beat.n), "sum": sw})
        m.submodules.f23 = f23 = SyncFIFO(width=desc2.size, depth=E_BANKS + 1)
        d2 = Signal(desc2)
        m.d.comb += [d2.bank.eq(t.bank), d2.last.eq(t.desc.last), d2.n.eq(t.desc.n),
                     d2.sum.eq(total), f23.w_data.eq(d2), f23.w_en.eq(t.valid & t.last)]

        # -- stage 3: reciprocal ------------------------------------------------------------
        sh_shape = range(max(2, sw - RECIP_NORM + 1))
        desc3 = data.StructLayout({"bank": range(E_BANKS), "last": idx_shape,
                                   "n": len(beat.n), "recip": unsigned(34), "sh": sh_shape})
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
        sh = Signal(sh_shape)
        with m.If(finish):
            m.d.sync += [busy3.eq(0), done3.eq(1), cur3.recip.eq(recip), cur3.sh.eq(sh)]
        if self.variant == "ibert":
            # two cycles to normalise: sh from the latched sum's bit length, then the divisor
            # sum >> sh (at most RECIP_NORM bits); then the divider on it
            m.submodules.div = div = SeqDivider(33, RECIP_NORM, DIV_STEPS)
            sum3 = Signal(sw, name="s3_sum")
            pre3 = Signal(2, name="s3_pre")
            sh3 = Signal(sh_shape, name="s3_sh")
            blen = bit_length(sum3)
            m.d.sync += pre3.eq(Cat(start3, pre3[0]))
            with m.If(start3):
                m.d.sync += sum3.eq(d2r.sum)
            with m.If(pre3[0]):
                m.d.sync += sh3.eq(_norm_shift(blen))
            m.d.comb += [div.start.eq(pre3[1]), div.num.eq(1 << 32),
                         div.den.eq((sum3 >> sh3)[:RECIP_NORM]),
                         finish.eq(div.done), recip.eq(div.quot), sh.eq(sh3)]
        else:
            self._divfree(m, start3, d2r.sum, finish, recip, sh)

        # -- stage 4: output ----------------------------------------------------------------
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        s4 = RowIssuer(m, "s4", desc3, cur3, done3, idx_w, en=advance)
        m.d.comb += [take3.eq(s4.start), e_rd.addr.eq(Cat(s4.idx, s4.cur.bank)),
                     e_rd.en.eq(advance)]
        m.d.sync += e_held.eq(e_held + s2.start - s4.done)
        o_tag = Signal(data.StructLayout({"valid": 1, "n": len(beat.n), "last": 1,
                                          "recip": unsigned(34), "sh": sh_shape}))
        m.d.comb += [o_tag.valid.eq(s4.active), o_tag.n.eq(s4.cur.n), o_tag.last.eq(s4.last),
                     o_tag.recip.eq(s4.cur.recip), o_tag.sh.eq(s4.cur.sh)]
        pm, padv = gated_pipeline(m, platform, advance, s4.active, self.latency,
                                  "s4_pipe")
        o_tag = reg(pm, padv, o_tag, "s4_t1")  # the buffer read lands with it
        e_val = [reg(pm, padv, e_rd.data[j], f"s4_e{j}") for j in range(L)]
        o_tag = reg(pm, padv, o_tag, "s4_t2")
        prods = [mul_pipe(pm, padv, e_val[j], o_tag.recip, f"s4_mul{j}") for j in range(L)]
        o_tag = delay(pm, padv, o_tag, self._plan()["out"], "s4_tm")
        # e * recip / 2^(31 + sh - out_width): one bit more than the output, for the rounding
        halves = [reg(pm, padv, (prods[j] >> (31 - self.out_width)) >> o_tag.sh,
                      f"s4_half{j}") for j in range(L)]
        o_tag = reg(pm, padv, o_tag, "s4_t3")
        top = (1 << self.out_width) - 1
        with pm.If(padv):
            pm.d.sync += [self.o.valid.eq(o_tag.valid), self.o.payload.n.eq(o_tag.n),
                         self.o.payload.last.eq(o_tag.last)]
            for j in range(L):
                scaled = (halves[j] + 1) >> 1  # round half up
                pm.d.sync += self.o.payload.data[j].eq(Mux(scaled > top, top, scaled))
        return m

    def _divfree(self, m, start, s, finish, recip, sh):
        """:func:`heterotron.sim.golden.intops.reciprocal_divfree` on one pipelined multiplier: bit
        length, normalisation, the linear seed, three Newton steps of two products each,
        final shift. ``finish`` pulses with ``recip`` and its normalisation ``sh`` valid."""
        sw = len(s)
        sval = Signal(sw, name="df_s")
        klen = Signal(range(sw + 1), name="df_k")
        mn = Signal(DF_F, name="df_m")
        # y < 2^32 (a Newton step never exceeds 1/m; the seed is below 2^31.5) and
        # |t| <= 2^31: 34 signed bits hold both, so every product is 2 x 2 partial products
        y = Signal(signed(DF_W), name="df_y")
        tt = Signal(signed(DF_W), name="df_t")
        ma = Signal(signed(DF_W), name="df_ma")
        mb = Signal(signed(DF_W), name="df_mb")
        prod = mul_pipe(m, None, ma, mb, "df_mul")
        blen = bit_length(sval)
        norm = Mux(klen >= DF_F, sval >> (klen - DF_F).as_unsigned(),
                   sval << (DF_F - klen).as_unsigned())
        # the schedule: one action per cycle; a product is ready DF_WAIT cycles after its
        # operands are set
        steps = [[klen.eq(blen)], [mn.eq(norm)], [ma.eq(mn), mb.eq(DF_C15)],
                 *[[]] * self.df_wait, [y.eq(DF_Y0 - (prod >> 15))]]
        for _ in range(DF_ITERS):
            steps += [[ma.eq(mn), mb.eq(y)], *[[]] * self.df_wait,
                      [tt.eq((2 << DF_F) - (prod >> DF_F))],
                      [ma.eq(y), mb.eq(tt)], *[[]] * self.df_wait, [y.eq(prod >> DF_F)]]
        step = Signal(range(len(steps) + 1), name="df_step")
        running = Signal()
        final = Signal(unsigned(DF_W))
        # 2^(32 + sh) / s = y 2^(32 + sh - klen - F): with sh = max(0, klen - 16) the shift
        # is 14 for long sums and klen - 2 below
        m.d.comb += [final.eq(Mux(klen >= RECIP_NORM, y >> (RECIP_NORM - 2),
                                  Mux(klen >= 2, y >> (klen - 2).as_unsigned(), y << 1))),
                     recip.eq(final),
                     sh.eq(_norm_shift(klen))]
        with m.If(start):
            m.d.sync += [sval.eq(s), step.eq(0), running.eq(1)]
        with m.Elif(running):
            m.d.sync += step.eq(step + 1)
            # one register per step (no case statement: each assignment has its own enable)
            for i, actions in enumerate(steps):
                if actions:
                    with m.If(step == i):
                        m.d.sync += actions
            with m.If(step == len(steps)):
                m.d.comb += finish.eq(1)
                m.d.sync += running.eq(0)

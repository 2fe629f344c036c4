"""LayerNorm: integer mean, variance, exact square root, gamma/beta and requantisation per row."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory

from heterotron.hdl.contract.params import Param, Parameterised
from heterotron.hdl.ports import sticky_errors
from heterotron.hdl.rowstream import (
    RowIngest,
    RowIssuer,
    SeqDivider,
    SeqIsqrt,
    bank_depth,
    delay,
    lane_valid,
    mul_pipe,
    mul_stages,
    reg,
    requant_latency,
    requant_stages,
    row_unit_ports,
    tree_pipe,
    tree_stages,
)
from heterotron.hdl.simgate import gated_pipeline

__all__ = ["LayerNorm", "LayerNormKind"]

#: Row banks of the input buffer. A row holds its bank from ingest to the end of the output
#: pass: three passes over its beats plus the two sequential row stages. Five banks keep rows
#: flowing at one per ``beats`` cycles whenever ``beats`` covers the reciprocal stage.
X_BANKS = 5
#: Bits of the reciprocal ``floor(2^RECIP_BITS / std)``
#: (:data:`heterotron.sim.golden.intops.LN_RECIP_BITS`).
RECIP_BITS = 47
MAX_SHIFT = 15
#: Quotient bits per cycle of the two dividers (the mean's, a ``SeqDivider``; the reciprocal's,
#: a :class:`RadixFourDivider`, which makes two).
DIV_STEPS = 2


class RadixFourDivider(SeqDivider):
    """``quot = floor(num / den)``: the ports, cycles and results of
    :class:`~heterotron.hdl.rowstream.SeqDivider` with ``steps=2`` (two quotient bits a cycle,
    ``ceil(num_width / 2)`` cycles), but each cycle's two bits come from comparing the partial
    remainder with ``den``, ``2 den`` and ``3 den`` side by side (``3 den`` formed once, at the
    start) instead of from two restoring steps in a row: one subtraction deep, not two. For
    the reciprocal's wide divisor, where two chained subtractions were the unit's longest
    path."""

    def __init__(self, num_width: int, den_width: int):
        super().__init__(num_width, den_width, steps=2)

    def elaborate(self, platform):
        m = Module()
        width = 2 * self.cycles  # the numerator, zero-padded at the top
        rem = Signal(self.den_width)  # below den
        num = Signal(width)
        den = Signal(self.den_width)
        den3 = Signal(self.den_width + 2)
        quot = Signal(width)
        count = Signal(range(self.cycles + 1))
        trial = Cat(num[-2:], rem)  # 4 * rem + the next two numerator bits, below 4 * den
        den2 = den << 1
        ge1, ge2, ge3 = trial >= den, trial >= den2, trial >= den3
        rem_next = Mux(ge3, trial - den3, Mux(ge2, trial - den2, Mux(ge1, trial - den, trial)))
        digit = Cat(ge3 | (ge1 & ~ge2), ge2)  # 0..3, ge3 implying ge2 implying ge1
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += [rem.eq(rem_next[:self.den_width]), num.eq((num << 2)[:width]),
                         quot.eq(Cat(digit, quot)[:width]), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.Elif(self.start):
            # 3 den as a shift and an add (Yosys maps a product by 3 to a DSP, slower)
            m.d.sync += [rem.eq(0), num.eq(self.num), den.eq(self.den),
                         den3.eq((self.den << 1) + self.den),
                         quot.eq(0), count.eq(self.cycles), self.busy.eq(1)]
        m.d.comb += self.quot.eq(quot)
        return m


class LastAheadIssuer:
    """:class:`~heterotron.hdl.rowstream.RowIssuer` cycle for cycle (the same members; ``idx``
    is 0 between rows rather than left where the last row ended), with ``idx == cur.last`` in
    a register, updated with ``idx``, instead of compared in the cycle that uses it. Neither
    that register nor ``idx`` waits for ``start``, which loads the whole descriptor (the
    mean and the reciprocal): the output pass's longest path was the compare, then
    ``start``'s fan-out, then ``idx``'s reset."""

    def __init__(self, m: Module, name: str, desc_layout, desc_in, avail, idx_w: int, en):
        self.cur = Signal(desc_layout, name=f"{name}_desc")
        self.active = Signal(name=f"{name}_active")
        self.idx = Signal(idx_w, name=f"{name}_idx")
        at_last = Signal(name=f"{name}_at_last")  # idx == cur.last while active
        self.last = self.active & at_last
        self.issue = self.active & en
        self.done = self.issue & self.last
        self.start = (~self.active | self.done) & avail
        with m.If(self.start):
            m.d.sync += [self.cur.eq(desc_in), self.active.eq(1)]
        with m.Elif(self.done):
            m.d.sync += self.active.eq(0)
        # No row is active after this cycle unless one starts: idx and at_last are then the
        # next row's (nothing reads them if none starts), else they move on with an issue.
        with m.If(~self.active | self.done):
            m.d.sync += [self.idx.eq(0), at_last.eq(desc_in.last == 0)]
        with m.Elif(self.issue):
            nxt = (self.idx + 1)[:idx_w]
            m.d.sync += [self.idx.eq(nxt), at_last.eq(nxt == self.cur.last)]


class LayerNormKind(enum.IntEnum, shape=1):
    """The two kinds of ``cfg`` write (the layout's ``kind`` field)."""

    SHIFT = 0  # the deviation pre-shift ``shift``
    ENTRY = 1  # one channel's constants ``entry``, at ``group``, ``lane``


class LayerNorm(Parameterised, wiring.Component):
    """Integer LayerNorm over each row,
    :func:`heterotron.sim.golden.intops.layernorm_int` bit for bit.

    Five stages work on different rows at once; a row's elements sit in a bank of on-chip
    buffer from ingest to output:

    1. **ingest**: stores the beats, sums the row;
    2. **mean**: ``round_half_up(sum / D)`` by a sequential divider (``D`` = row length);
    3. **variance pass**: ``var = sum(((x - mean) >> shift)^2)``, ``lanes`` per cycle;
    4. **reciprocal**: ``std = isqrt(var) << shift`` digit by digit (no divider), then
       ``floor(2^47 / std)`` by a sequential divider (0 for a constant row);
    5. **output pass**: ``y = ((x - mean) * recip) >> 17``, ``(y + bias) * sign``, then the
       per-channel requantisation ``(m, e)`` to ``out_width``.

    Parameters
    ----------
    lanes : int
        Elements per beat, 1 to 16.
    max_len : int
        Longest row (the hidden size), a multiple of ``lanes``, up to 1024; also the depth of
        the per-channel constant table. A longer row sets ``SfuError.LENGTH`` and is computed
        on its first ``max_len`` elements.
    in_width : int
        Signed input width, 2 to 24 (22 for MiniLM's residual sums).
    bias_width : int
        Signed width of the folded per-channel bias, 8 to 48.
    out_width : int
        Signed output width, 2 to 24.

    Members
    -------
    i : In(stream.Signature(row beat of signed(in_width)))
    o : Out(stream.Signature(row beat of signed(out_width)))
        Each row comes out with the beat structure it went in with.
    cfg : In(stream.Signature(cfg_layout))
        ``kind = SHIFT`` (:class:`LayerNormKind`): the deviation pre-shift ``shift``
        (0..15). ``kind = ENTRY``: the entry of channel ``group * lanes + lane``: ``bias``,
        ``neg`` (gamma < 0), ``m``, ``e`` (from
        :func:`heterotron.sim.golden.intops.layernorm_consts`). A write is taken once no row is in
        flight; while one waits no new row starts.
    error : Out(3), error_clear : In(1)
        Sticky :class:`~heterotron.hdl.rowstream.SfuError` flags, cleared by a cycle with
        ``error_clear`` high (:mod:`heterotron.hdl.ports`).
    """

    PARAMS = (
        Param("lanes", int, 4, "elements per beat", 1, 16),
        Param("max_len", int, 1024, "longest row (hidden size)", 1, 1024, multiple_of="lanes"),
        Param("in_width", int, 22, "signed input width", 2, 24),
        Param("bias_width", int, 40, "signed width of the folded per-channel bias", 8, 48),
        Param("out_width", int, 8, "signed output width", 2, 24),
    )

    def __init__(self, **given):
        p = self._take_params(given)
        super().__init__(row_unit_ports(self, p["lanes"], {"i": signed(p["in_width"])},
                                        signed(p["out_width"])))

    @property
    def cfg_layout(self) -> data.StructLayout:
        """A write of :class:`LayerNormKind` ``kind``: ``shift``, or the ``entry`` of channel
        ``group * lanes + lane`` (``bias``, ``neg``, ``m``, ``e``)."""
        return data.StructLayout({
            "kind": LayerNormKind,
            "group": range(max(2, self.max_len // self.lanes)),
            "lane": range(max(2, self.lanes)),
            "shift": range(MAX_SHIFT + 1),
            "entry": data.StructLayout({"bias": signed(self.bias_width), "neg": 1,
                                        "m": unsigned(31), "e": unsigned(6)}),
        })

    @property
    def sum_width(self) -> int:
        return self.in_width + self.max_len.bit_length()

    @property
    def var_width(self) -> int:
        return 2 * (self.in_width + 1) + self.max_len.bit_length()

    def _plan(self) -> dict:
        """Register stages of the output pass's pipelined products, from operand shapes (the
        same expressions as in :meth:`elaborate`)."""
        x, mean = Signal(signed(self.in_width)), Signal(signed(self.in_width + 1))
        recip = Signal(unsigned(RECIP_BITS + 1))
        dev = Signal((x - mean).shape())
        prod = Signal((dev * recip).shape())
        y = Signal(((prod >> (RECIP_BITS - 30)) + Signal(signed(self.bias_width))).shape())
        z = Signal(Mux(Signal(), -y, y).shape())
        return {"product": mul_stages(dev.shape(), recip.shape()),
                "requant": requant_latency((z.shape(), unsigned(31)))}

    @property
    def row_cycles(self) -> dict:
        """Cycles of the two sequential row stages: the mean's divider and, for the
        reciprocal, the square root plus the divider (skipped for a constant row)."""
        return {"mean": -(-(self.sum_width + 2) // DIV_STEPS),
                "isqrt": (self.var_width + 1) // 2 + 1,
                "recip": -(-(RECIP_BITS + 1) // DIV_STEPS)}

    @property
    def latency(self) -> int:
        """Cycles from accepting the last beat of a one-beat, non-constant row to its first
        output beat, with the other stages idle (measured in ``tests/test_sfu.py``): the
        passes' lane trees and pipelined products, and the sequential row stages. A constant
        row skips the reciprocal's divider. See :meth:`row_latency`."""
        plan = self._plan()
        square = mul_stages(signed(self.in_width + 2), signed(self.in_width + 2))
        return (19 + 2 * tree_stages(self.lanes) + square + plan["product"] + plan["requant"]
                + sum(self.row_cycles.values()))

    @property
    def timing(self) -> dict:
        """What the sidecar records about the timing of rows."""
        return {"latency": "cycles from a one-beat, non-constant row's last input beat to its "
                           "first output beat; add one per further beat of the row",
                "row_stage_cycles": self.row_cycles,
                "row_interval": "about max(ceil(length / lanes), isqrt + recip + 4) cycles "
                                "(measured by heterotron bench sfu)"}

    def row_latency(self, beats: int) -> int:
        """The same for a row of ``beats`` beats: the variance pass reads the row again."""
        return self.latency + beats - 1

    def elaborate(self, platform):
        m = Module()
        L, W = self.lanes, self.in_width
        beats = self.max_len // L
        depth = bank_depth(self.max_len, L)
        idx_w = (depth - 1).bit_length()
        n_w = len(self.i.payload.n)

        # -- configuration ------------------------------------------------------------------
        raised = sticky_errors(m, self.error, self.error_clear)
        x_held = Signal(range(X_BANKS + 1))
        shift = Signal(range(MAX_SHIFT + 1), name="shift")
        entry = self.cfg_layout["entry"].shape
        m.submodules.table = table = Memory(shape=data.ArrayLayout(entry, L), depth=max(beats, 2),
                                            init=[])
        t_wr = table.write_port(granularity=1)
        t_rd = table.read_port()
        p = self.cfg.payload
        m.d.comb += self.cfg.ready.eq(x_held == 0)
        cfg_take = self.cfg.valid & self.cfg.ready
        with m.If(cfg_take & (p.kind == LayerNormKind.SHIFT)):
            m.d.sync += shift.eq(p.shift)
        m.d.comb += t_wr.addr.eq(p.group)
        for j in range(L):
            m.d.comb += [t_wr.data[j].eq(p.entry),
                         t_wr.en[j].eq(cfg_take & (p.kind == LayerNormKind.ENTRY)
                                       & (p.lane == j))]

        # -- stage 1: ingest and row sum ----------------------------------------------------
        m.submodules.xbuf = xbuf = Memory(shape=data.ArrayLayout(signed(W), L),
                                          depth=X_BANKS * depth, init=[])
        x_wr = xbuf.write_port()
        x_rd_var = xbuf.read_port()
        x_rd_out = xbuf.read_port()
        beat = self.i.payload
        s1 = RowIngest(m, self.i, x_wr, X_BANKS, beats, idx_w,
                       (x_held < X_BANKS) & ~self.cfg.valid, raised)
        sw = self.sum_width
        row = {"bank": range(X_BANKS), "last": range(depth), "n": n_w}
        desc1 = data.StructLayout({**row, "sum": signed(sw)})
        # The row sum: a registered tree over the lanes, then the running sum; the beat's
        # bookkeeping travels alongside and the descriptor is pushed at the end.
        ev = Signal(data.StructLayout({"keep": 1, "first": 1, "push": 1, "desc": desc1}))
        m.d.comb += [ev.keep.eq(s1.take & s1.keep), ev.first.eq(s1.first),
                     ev.push.eq(s1.push), ev.desc.bank.eq(s1.bank),
                     ev.desc.last.eq(s1.last_idx), ev.desc.n.eq(s1.n)]
        # Each stage's pipeline holds still once its last beat is through (heterotron.hdl.
        # simgate); the unit's latency bounds every stage's depth.
        pm, _ = gated_pipeline(m, platform, 1, self.i.valid | ev.keep | ev.push, self.latency,
                               "s1_pipe")
        lanes_in = [reg(pm, None, Mux(lane_valid(beat.n, beat.last, j, L), beat.data[j], 0),
                        f"s1_lane{j}") for j in range(L)]
        ev = reg(pm, None, ev, "s1_ev")
        beat_sum = tree_pipe(pm, None, lanes_in, lambda a, b: a + b, "s1_sum")
        ev = delay(pm, None, ev, tree_stages(L), "s1_ev")
        run_sum = Signal(signed(sw))
        new_sum = Signal(signed(sw))
        m.d.comb += new_sum.eq(Mux(ev.first, 0, run_sum) + beat_sum)
        with m.If(ev.keep):
            m.d.sync += run_sum.eq(new_sum)
        m.submodules.f1 = f1 = SyncFIFO(width=desc1.size, depth=X_BANKS)
        d1 = Signal(desc1)
        m.d.comb += [d1.eq(ev.desc), d1.sum.eq(Mux(ev.keep, new_sum, run_sum)),
                     f1.w_data.eq(d1), f1.w_en.eq(ev.push)]

        # -- stage 2: mean = floor((2 sum + D) / 2D), by an unsigned divider ----------------
        desc2 = data.StructLayout({**row, "mean": signed(W + 1)})
        m.submodules.f2 = f2 = SyncFIFO(width=desc2.size, depth=X_BANKS)
        m.submodules.mdiv = mdiv = SeqDivider(sw + 2, (2 * self.max_len).bit_length(), DIV_STEPS)
        cur2 = Signal(desc1, name="s2_desc")
        busy2 = Signal()
        start2 = ~busy2 & f1.r_rdy
        d1r = Signal(desc1)
        count = Signal(range(self.max_len + 1))
        m.d.comb += [d1r.eq(f1.r_data), f1.r_en.eq(start2),
                     count.eq(d1r.last * L + d1r.n + 1)]
        num = Signal(signed(sw + 2))
        m.d.comb += num.eq(2 * d1r.sum + count)
        # floor(num / den) = -(floor((-num - 1) / den) + 1) for num < 0
        neg = Signal()
        m.d.comb += [mdiv.start.eq(start2), mdiv.num.eq(Mux(num < 0, -num - 1, num)),
                     mdiv.den.eq(2 * count)]
        with m.If(start2):
            m.d.sync += [cur2.eq(d1r), neg.eq(num < 0), busy2.eq(1)]
        d2 = Signal(desc2)
        m.d.comb += [d2.bank.eq(cur2.bank), d2.last.eq(cur2.last), d2.n.eq(cur2.n),
                     d2.mean.eq(Mux(neg, -mdiv.quot - 1, mdiv.quot)),
                     f2.w_data.eq(d2), f2.w_en.eq(mdiv.done)]
        with m.If(mdiv.done):
            m.d.sync += busy2.eq(0)

        # -- stage 3: variance pass ---------------------------------------------------------
        s3 = RowIssuer(m, "s3", desc2, f2.r_data, f2.r_rdy, idx_w)
        m.d.comb += [f2.r_en.eq(s3.start), x_rd_var.addr.eq(Cat(s3.idx, s3.cur.bank))]
        tag_l = data.StructLayout({"valid": 1, "last": 1, "desc": desc2})
        t = Signal(tag_l, name="s3_t0")
        m.d.comb += [t.valid.eq(s3.active), t.last.eq(s3.last), t.desc.eq(s3.cur)]
        pm, _ = gated_pipeline(m, platform, 1, s3.active, self.latency, "s3_pipe")
        t = reg(pm, None, t, "s3_t1")  # the buffer read lands with it
        xv = reg(pm, None, x_rd_var.data, "s3_x")  # registered straight out of the block RAM
        t = reg(pm, None, t, "s3_tx")
        dev = [reg(pm, None, xv[j] - t.desc.mean, f"s3_dev{j}") for j in range(L)]
        t = reg(pm, None, t, "s3_t2")
        ds = [reg(pm, None, Mux(lane_valid(t.desc.n, t.last, j, L), dev[j] >> shift, 0),
                  f"s3_ds{j}") for j in range(L)]
        t = reg(pm, None, t, "s3_t3")
        sq = [mul_pipe(pm, None, ds[j], ds[j], f"s3_sq{j}") for j in range(L)]
        t = delay(pm, None, t, mul_stages(ds[0].shape(), ds[0].shape()), "s3_tm")
        lane_sum = tree_pipe(pm, None, sq, lambda a, b: a + b, "s3_sum")
        t = delay(pm, None, t, tree_stages(L), "s3_ts")
        vw = self.var_width
        acc = Signal(vw, name="s3_acc")
        var = Signal(vw)
        m.d.comb += var.eq(acc + lane_sum)
        with m.If(t.valid):
            m.d.sync += acc.eq(Mux(t.last, 0, var))
        desc3 = data.StructLayout({**row, "mean": signed(W + 1), "var": vw})
        m.submodules.f3 = f3 = SyncFIFO(width=desc3.size, depth=X_BANKS)
        d3 = Signal(desc3)
        m.d.comb += [d3.bank.eq(t.desc.bank), d3.last.eq(t.desc.last), d3.n.eq(t.desc.n),
                     d3.mean.eq(t.desc.mean), d3.var.eq(var),
                     f3.w_data.eq(d3), f3.w_en.eq(t.valid & t.last)]

        # -- stage 4: std = isqrt(var) << shift, recip = floor(2^47 / std) ------------------
        m.submodules.sqrt = sqrt = SeqIsqrt(vw)
        std_w = (vw + 1) // 2 + MAX_SHIFT
        m.submodules.rdiv = rdiv = RadixFourDivider(RECIP_BITS + 1, std_w)
        desc4 = data.StructLayout({**row, "mean": signed(W + 1),
                                   "recip": unsigned(RECIP_BITS + 1)})
        cur4 = Signal(desc4, name="s4_desc")
        d3r = Signal(desc3)
        busy4 = Signal()
        done4 = Signal()
        take4 = Signal()
        std = Signal(std_w, name="s4_std")
        start4 = ~busy4 & ~done4 & f3.r_rdy
        m.d.comb += [d3r.eq(f3.r_data), f3.r_en.eq(start4), sqrt.start.eq(start4),
                     sqrt.value.eq(d3r.var)]
        with m.If(start4):
            m.d.sync += [cur4.bank.eq(d3r.bank), cur4.last.eq(d3r.last), cur4.n.eq(d3r.n),
                         cur4.mean.eq(d3r.mean), busy4.eq(1)]
        # std is registered one cycle after the root is done (the variable shift is long),
        # and whether it is zero with it (std_w holds the root shifted, so the root's zero
        # is std's; no wide compare in front of the divider's start)
        std_nz = Signal(name="s4_std_nz")
        with m.If(sqrt.done):
            m.d.sync += [std.eq(sqrt.root << shift), std_nz.eq(sqrt.root != 0)]
        std_ready = reg(m, None, sqrt.done, "s4_std_ready")
        m.d.comb += [rdiv.start.eq(std_ready & std_nz), rdiv.num.eq(1 << RECIP_BITS),
                     rdiv.den.eq(std)]
        with m.If(std_ready & ~std_nz):
            m.d.sync += [cur4.recip.eq(0), busy4.eq(0), done4.eq(1)]
        with m.If(rdiv.done):
            m.d.sync += [cur4.recip.eq(rdiv.quot), busy4.eq(0), done4.eq(1)]
        with m.If(take4):
            m.d.sync += done4.eq(0)

        # -- stage 5: output pass -----------------------------------------------------------
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        # The issuer's own copy of advance, from a register of its own (o.valid inverted):
        # advance enables every register of the pass, and a net of that fan-out is slow to
        # reach the issuer, whose start (loading the descriptor) follows it in the cycle.
        o_idle = Signal(init=1, name="s5_o_idle")
        issue_en = Signal(name="s5_issue_en")
        m.d.comb += issue_en.eq(o_idle | self.o.ready)
        s5 = LastAheadIssuer(m, "s5", desc4, cur4, done4, idx_w, en=issue_en)
        m.d.comb += [take4.eq(s5.start),
                     x_rd_out.addr.eq(Cat(s5.idx, s5.cur.bank)), x_rd_out.en.eq(advance),
                     t_rd.addr.eq(s5.idx), t_rd.en.eq(advance)]
        m.d.sync += x_held.eq(x_held + s1.alloc - s5.done)
        otag_l = data.StructLayout({"valid": 1, "last": 1, "n": n_w, "mean": signed(W + 1),
                                    "recip": unsigned(RECIP_BITS + 1)})
        o = Signal(otag_l, name="s5_t0")
        m.d.comb += [o.valid.eq(s5.active), o.last.eq(s5.last), o.n.eq(s5.cur.n),
                     o.mean.eq(s5.cur.mean), o.recip.eq(s5.cur.recip)]
        pm, padv = gated_pipeline(m, platform, advance, s5.active, self.latency, "s5_pipe")
        o = reg(pm, padv, o, "s5_t1")  # the buffer and table reads land with it
        ent = reg(pm, padv, t_rd.data, "s5_entry1")
        xv = [reg(pm, padv, x_rd_out.data[j], f"s5_x{j}") for j in range(L)]
        o = reg(pm, padv, o, "s5_t2")
        dev = [reg(pm, padv, xv[j] - o.mean, f"s5_dev{j}") for j in range(L)]
        ent = reg(pm, padv, ent, "s5_entry2")
        o = reg(pm, padv, o, "s5_t3")
        prod = [mul_pipe(pm, padv, dev[j], o.recip, f"s5_mul{j}") for j in range(L)]
        stages = self._plan()["product"]
        ent = delay(pm, padv, ent, stages, "s5_entry_m")
        o = delay(pm, padv, o, stages, "s5_tm")
        y = [reg(pm, padv, (prod[j] >> (RECIP_BITS - 30)) + ent[j].bias, f"s5_y{j}")
             for j in range(L)]
        ent = reg(pm, padv, ent, "s5_entry4")
        o = reg(pm, padv, o, "s5_t4")
        zs = [reg(pm, padv, Mux(ent[j].neg, -y[j], y[j]), f"s5_z{j}") for j in range(L)]
        ent = reg(pm, padv, ent, "s5_entry5")
        o = reg(pm, padv, o, "s5_t5")
        o = delay(pm, padv, o, self._plan()["requant"] - 1, "s5_trq")
        for j in range(L):
            out, _ = requant_stages(pm, padv, [(zs[j], ent[j].m, ent[j].e)], self.out_width,
                                    f"rq{j}")
            pm.d.comb += self.o.payload.data[j].eq(out)
        with pm.If(padv):
            pm.d.sync += [self.o.valid.eq(o.valid), o_idle.eq(~o.valid), self.o.payload.n.eq(o.n),
                          self.o.payload.last.eq(o.last)]
        return m

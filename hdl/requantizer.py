"""Requantizer: wide integers in, narrow integers out, by a run-time dyadic scale per channel."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.params import Param, check, validating

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """Requantise ``lanes`` integers per cycle: ``out = sat(round_shift(z * m, e))``.

    The arithmetic is :func:`heterotron.sim.golden.requantizer.requantize`, bit for bit: the product
    ``z * m`` is shifted right by ``e`` rounding half up (ties towards +infinity), then
    saturated to ``out_width`` signed bits. With ``residual`` the input beat also carries ``y``
    with its own ``(m_y, e_y)``; both terms are rounded, added, then saturated.

    Scales are per channel. A row of ``channels`` values arrives as ``channels // lanes``
    consecutive beats; beat ``k`` of the stream uses channel group ``k mod (channels // lanes)``,
    so with ``channels == lanes`` every beat uses the same per-lane scales. The scale table is
    written through ``cfg`` (channel ``c`` is ``group = c // lanes``, ``lane = c % lanes``); a
    beat uses the table as it stands in the cycle the beat is accepted, writes in that same
    cycle included.

    Parameters
    ----------
    lanes : int
        Values per beat, 1 to 64.
    channels : int
        Channels per row, a multiple of ``lanes``, up to 4096.
    in_width : int
        Signed input width, 2 to 48 (32 for an int32 accumulator).
    out_width : int
        Signed output width, 2 to 32.
    m_width : int
        Width of the unsigned multiplier ``m``, 1 to 31.
    max_shift : int
        Largest shift ``e``, 1 to 127.
    residual : bool
        Add a second operand ``y`` with its own scale before saturation.
    res_width : int
        Signed width of ``y``, 2 to 48 (used only with ``residual``).

    Members
    -------
    i : In(stream.Signature(...))
        Input beats. Payload is ``ArrayLayout(signed(in_width), lanes)``, or with ``residual``
        ``StructLayout({"z": ..., "y": ArrayLayout(signed(res_width), lanes)})``. Lane ``k``
        sits at bits ``[k * width, (k + 1) * width)``.
    o : Out(stream.Signature(ArrayLayout(signed(out_width), lanes)))
        Output beats, in input order, one per input beat.
    cfg : In(...)
        Scale-table write port: ``we``, ``group``, ``lane``, ``m``, ``e`` (and ``m_y``, ``e_y``
        with ``residual``). Written when ``we`` is high at a clock edge.

    Latency: 4 cycles from an accepted input beat to its output beat being valid (operands and
    scale read; multiply; shift; round, add and saturate); one beat per cycle throughput; all
    stages stall together while ``o`` is not ready.
    """

    PARAMS = (
        Param("lanes", int, 4, "values per beat", 1, 64),
        Param("channels", int, None, "channels per row (scale-table depth x lanes)", 1, 4096,
              multiple_of="lanes", follows="lanes"),
        Param("in_width", int, 32, "signed input width", 2, 48),
        Param("out_width", int, 8, "signed output width", 2, 32),
        Param("m_width", int, 31, "unsigned multiplier width", 1, 31),
        Param("max_shift", int, 63, "largest right shift e", 1, 127),
        Param("residual", bool, False, "add a second scaled operand y before saturation"),
        Param("res_width", int, 32, "signed width of the residual operand y", 2, 48),
    )

    LATENCY = 4

    def __init__(self, *, lanes=4, channels=None, in_width=32, out_width=8, m_width=31,
                 max_shift=63, residual=False, res_width=32):
        if channels is None:
            channels = lanes
        with validating(self):
            check(self.PARAMS, lanes=lanes, channels=channels, in_width=in_width,
                  out_width=out_width, m_width=m_width, max_shift=max_shift, residual=residual,
                  res_width=res_width)
        self._lanes = lanes
        self._channels = channels
        self._in_width = in_width
        self._out_width = out_width
        self._m_width = m_width
        self._max_shift = max_shift
        self._residual = residual
        self._res_width = res_width

        z_layout = data.ArrayLayout(signed(in_width), lanes)
        if residual:
            in_layout = data.StructLayout({
                "z": z_layout,
                "y": data.ArrayLayout(signed(res_width), lanes),
            })
        else:
            in_layout = z_layout
        # Address fields that would be zero bits wide are left out (no [-1:0] ports).
        cfg_members = {"we": Out(1)}
        if self.groups > 1:
            cfg_members["group"] = Out(range(self.groups))
        if lanes > 1:
            cfg_members["lane"] = Out(range(lanes))
        cfg_members["m"] = Out(m_width)
        cfg_members["e"] = Out(range(max_shift + 1))
        if residual:
            cfg_members["m_y"] = Out(m_width)
            cfg_members["e_y"] = Out(range(max_shift + 1))
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_width), lanes))),
            "cfg": In(wiring.Signature(cfg_members)),
        })

    lanes = property(lambda self: self._lanes)
    channels = property(lambda self: self._channels)
    in_width = property(lambda self: self._in_width)
    out_width = property(lambda self: self._out_width)
    m_width = property(lambda self: self._m_width)
    max_shift = property(lambda self: self._max_shift)
    residual = property(lambda self: self._residual)
    res_width = property(lambda self: self._res_width)

    @property
    def groups(self) -> int:
        """Depth of the scale table: beats per row."""
        return self._channels // self._lanes

    @property
    def latency(self) -> int:
        return self.LATENCY

    @property
    def parameters(self) -> dict:
        return {p.name: getattr(self, p.name) for p in self.PARAMS}

    def _scale_layout(self):
        fields = {"m": unsigned(self._m_width), "e": range(self._max_shift + 1)}
        if self._residual:
            fields["m_y"] = unsigned(self._m_width)
            fields["e_y"] = range(self._max_shift + 1)
        return data.StructLayout(fields)

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes

        # Pipeline control: every stage advances together when the output can move.
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]

        # Scale table: one row per channel group, one entry per lane, written a lane at a time.
        # ``row`` is the row of the beat in stage 1, read when that beat was accepted.
        row_layout = data.ArrayLayout(self._scale_layout(), lanes)
        wdata = Signal(row_layout, name="cfg_row")
        wen = Signal(lanes, name="cfg_lane_en")
        for k in range(lanes):
            lane_hit = (self.cfg.lane == k) if lanes > 1 else 1
            m.d.comb += [
                wen[k].eq(self.cfg.we & lane_hit),
                wdata[k].m.eq(self.cfg.m),
                wdata[k].e.eq(self.cfg.e),
            ]
            if self._residual:
                m.d.comb += [wdata[k].m_y.eq(self.cfg.m_y), wdata[k].e_y.eq(self.cfg.e_y)]
        if self.groups > 1:
            m.submodules.scales = scales = Memory(shape=row_layout, depth=self.groups, init=[])
            wr = scales.write_port(granularity=1)
            rd = scales.read_port(transparent_for=(wr,))
            m.d.comb += [wr.addr.eq(self.cfg.group), wr.en.eq(wen), wr.data.eq(wdata)]
            # The beat counter picks the channel group of the beat being accepted.
            group = Signal(range(self.groups), name="group")
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += group.eq(Mux(group == self.groups - 1, 0, group + 1))
            m.d.comb += [rd.addr.eq(group), rd.en.eq(advance)]
            row = rd.data
        else:
            # A single row lives in registers; the stage-1 copy sees same-cycle writes, as the
            # transparent memory read does above.
            table = Signal(row_layout, name="scales")
            row = Signal(row_layout, name="s1_scales")
            for k in range(lanes):
                with m.If(wen[k]):
                    m.d.sync += table[k].eq(wdata[k])
                with m.If(advance):
                    m.d.sync += row[k].eq(Mux(wen[k], wdata[k], table[k]))

        # Stage 1: register the operands; the scale table read lands alongside.
        v1 = Signal(name="s1_valid")
        s1 = Signal(self.i.payload.shape(), name="s1_payload")
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), s1.eq(self.i.payload)]

        # Stage 2: products (and the shifts that go with them).
        v2 = Signal(name="s2_valid")
        z1 = s1.z if self._residual else s1
        prod_w = self._in_width + self._m_width + 1
        prods = [Signal(signed(prod_w), name=f"s2_prod{k}") for k in range(lanes)]
        shifts = [Signal(range(self._max_shift + 1), name=f"s2_e{k}") for k in range(lanes)]
        if self._residual:
            rprod_w = self._res_width + self._m_width + 1
            rprods = [Signal(signed(rprod_w), name=f"s2_rprod{k}") for k in range(lanes)]
            rshifts = [Signal(range(self._max_shift + 1), name=f"s2_ey{k}") for k in range(lanes)]
        with m.If(advance):
            m.d.sync += v2.eq(v1)
            for k in range(lanes):
                m.d.sync += [prods[k].eq(z1[k] * row[k].m), shifts[k].eq(row[k].e)]
                if self._residual:
                    m.d.sync += [
                        rprods[k].eq(s1.y[k] * row[k].m_y),
                        rshifts[k].eq(row[k].e_y),
                    ]

        # Stage 3: the variable shift, kept one bit wide for the rounding:
        # half = (p << 1) >> e, so that round_half_up(p / 2^e) = (half + 1) >> 1.
        v3 = Signal(name="s3_valid")
        halves = [Signal(signed(prod_w + 1), name=f"s3_half{k}") for k in range(lanes)]
        if self._residual:
            rhalves = [Signal(signed(rprod_w + 1), name=f"s3_rhalf{k}") for k in range(lanes)]
        with m.If(advance):
            m.d.sync += v3.eq(v2)
            for k in range(lanes):
                m.d.sync += halves[k].eq((prods[k] << 1) >> shifts[k])
                if self._residual:
                    m.d.sync += rhalves[k].eq((rprods[k] << 1) >> rshifts[k])

        # Stage 4: round, add, saturate into the output register.
        lo = -(1 << (self._out_width - 1))
        hi = (1 << (self._out_width - 1)) - 1
        with m.If(advance):
            m.d.sync += self.o.valid.eq(v3)
            for k in range(lanes):
                acc = Signal(signed(prod_w + 1), name=f"s4_rnd{k}")
                m.d.comb += acc.eq((halves[k] + 1) >> 1)
                if self._residual:
                    racc = Signal(signed(rprod_w + 1), name=f"s4_rrnd{k}")
                    m.d.comb += racc.eq((rhalves[k] + 1) >> 1)
                    total = Signal(signed(max(prod_w, rprod_w) + 2), name=f"s4_sum{k}")
                    m.d.comb += total.eq(acc + racc)
                    acc = total
                m.d.sync += self.o.payload[k].eq(
                    Mux(acc > hi, hi, Mux(acc < lo, lo, acc)))
        return m

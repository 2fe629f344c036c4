"""Requantizer: wide integers in, narrow integers out, by a run-time dyadic scale per channel."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.params import Param, Parameterised
from heterotron.hdl.rowstream import delay, reg, requant_latency, requant_stages
from heterotron.hdl.simgate import gated_pipeline

__all__ = ["Requantizer"]


class Requantizer(Parameterised, wiring.Component):
    """Requantise ``lanes`` integers per cycle: ``out = sat(round_shift(z * m, e))``.

    The arithmetic is :func:`heterotron.sim.golden.requantizer.requantize`, bit for bit: the product
    ``z * m`` is shifted right by ``e`` rounding half up (ties towards +infinity), then
    saturated to ``out_width`` signed bits. With ``residual`` the input beat also carries ``y``
    with its own ``(m_y, e_y)``; both terms are rounded, added, then saturated. The datapath is
    :func:`heterotron.hdl.rowstream.requant_stages`, one per lane, the same as the special-function
    units': the products are cut into 18x18 partial products, registered and summed one adder
    level per stage, then the shift, the rounding and add, and the saturation each get a stage.

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
        Channels per row, a multiple of ``lanes``, up to 4096 (default: ``lanes``).
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
    meta_width : int
        Bits of metadata carried beside each beat, 0 to 64 (0: none). The ``meta`` of an input
        beat leaves, untouched, with that beat's result (a user's tags: row, column, last).

    Members
    -------
    i : In(stream.Signature(...))
        Input beats. Payload is ``ArrayLayout(signed(in_width), lanes)``; with ``residual`` or
        ``meta_width`` it is a ``StructLayout`` of ``z`` (those lanes), ``y``
        (``ArrayLayout(signed(res_width), lanes)``, with ``residual``) and ``meta``
        (``unsigned(meta_width)``, when not 0), in that order from bit 0. Lane ``k`` sits at
        bits ``[k * width, (k + 1) * width)`` of its array.
    o : Out(stream.Signature(...))
        Output beats, in input order, one per input beat. Payload is
        ``ArrayLayout(signed(out_width), lanes)``; with ``meta_width`` a ``StructLayout`` of
        ``data`` (those lanes) and ``meta``.
    cfg : In(stream.Signature(cfg_layout))
        Scale-table writes, one entry per accepted beat (``ready`` is always high):
        :attr:`cfg_layout` is ``group``, ``lane``, ``m``, ``e`` (and ``m_y``, ``e_y`` with
        ``residual``). ``group`` is there only with more than one group and ``lane`` only with
        more than one lane (no zero-width wires in the Verilog). The table starts all zeros.
        Nothing is refused (every ``m`` and ``e`` the fields hold is computed exactly), so
        there is no ``error`` port.

    Latency: :attr:`latency` cycles from an accepted input beat to its output beat being valid
    (7 at the defaults: the operands with the scale-table read, then the pipelined product, the
    shift, round and add, saturate); one beat per cycle; all stages stall together while ``o``
    is not ready.
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
        Param("meta_width", int, 0, "metadata bits carried beside each beat (0: none)", 0, 64),
    )

    def __init__(self, **given):
        p = self._take_params(given)
        lanes = p["lanes"]
        z_layout = data.ArrayLayout(signed(p["in_width"]), lanes)
        fields = {"z": z_layout}
        if p["residual"]:
            fields["y"] = data.ArrayLayout(signed(p["res_width"]), lanes)
        if p["meta_width"]:
            fields["meta"] = unsigned(p["meta_width"])
        in_layout = data.StructLayout(fields) if len(fields) > 1 else z_layout
        out_lanes = data.ArrayLayout(signed(p["out_width"]), lanes)
        out_layout = (data.StructLayout({"data": out_lanes, "meta": unsigned(p["meta_width"])})
                      if p["meta_width"] else out_lanes)
        scale = {"m": unsigned(p["m_width"]), "e": range(p["max_shift"] + 1)}
        if p["residual"]:
            scale |= {"m_y": unsigned(p["m_width"]), "e_y": range(p["max_shift"] + 1)}
        self._scale_layout = data.StructLayout(scale)
        # Address fields that would be zero bits wide are left out: Amaranth would write each
        # field of the payload as a [-1:0] wire.
        address = {}
        if self.groups > 1:
            address["group"] = range(self.groups)
        if lanes > 1:
            address["lane"] = range(lanes)
        self._cfg_layout = data.StructLayout({**address, **scale})
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
            "cfg": In(stream.Signature(self._cfg_layout)),
        })

    @property
    def cfg_layout(self) -> data.StructLayout:
        """Payload of ``cfg``: ``group`` (with more than one group), ``lane`` (with more than
        one lane), ``m``, ``e`` (, ``m_y``, ``e_y``)."""
        return self._cfg_layout

    @property
    def groups(self) -> int:
        """Depth of the scale table: beats per row."""
        return self.channels // self.lanes

    @property
    def latency(self) -> int:
        """Cycles from an accepted beat to its result: the operand and table-read stage, then
        :func:`requant_stages`."""
        m = unsigned(self.m_width)
        widths = [self.in_width] + ([self.res_width] if self.residual else [])
        return 1 + requant_latency(*((signed(w), m) for w in widths))

    def elaborate(self, platform):
        m = Module()
        lanes, residual = self.lanes, self.residual
        structured = isinstance(self.i.payload.shape(), data.StructLayout)

        # Pipeline control: every stage advances together when the output can move.
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance),
                     self.cfg.ready.eq(1)]

        # Scale table: one row per channel group, one entry per lane, written a lane at a time.
        # ``row`` is the row of the beat in stage 1, read when that beat was accepted.
        cfg = self.cfg.payload
        row_layout = data.ArrayLayout(self._scale_layout, lanes)
        wdata = Signal(row_layout, name="cfg_row")
        wen = Signal(lanes, name="cfg_lane_en")
        for k in range(lanes):
            lane_hit = (cfg.lane == k) if lanes > 1 else 1
            m.d.comb += wen[k].eq(self.cfg.valid & lane_hit)
            for name in self._scale_layout.members:
                m.d.comb += wdata[k][name].eq(cfg[name])
        if self.groups > 1:
            m.submodules.scales = scales = Memory(shape=row_layout, depth=self.groups, init=[])
            wr = scales.write_port(granularity=1)
            rd = scales.read_port(transparent_for=(wr,))
            m.d.comb += [wr.addr.eq(cfg.group), wr.en.eq(wen), wr.data.eq(wdata)]
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

        # Stage 1: register the operands (and the metadata); the scale-table read lands
        # alongside. Then one requant_stages per lane; the valid bit and the metadata ride
        # beside them in registers that advance the same way.
        # The stages hold still once the last beat is out (heterotron.hdl.simgate).
        pm, padv = gated_pipeline(m, platform, advance, self.i.valid, self.latency + 1,
                                  "pipe")
        if self.groups == 1:
            for k in range(lanes):
                with pm.If(padv):
                    pm.d.sync += row[k].eq(Mux(wen[k], wdata[k], table[k]))
        v1 = reg(pm, padv, self.i.valid, "s1_valid")
        s1 = reg(pm, padv, self.i.payload, "s1")
        z = s1.z if structured else s1
        out_data = self.o.payload.data if self.meta_width else self.o.payload
        for k in range(lanes):
            terms = [(z[k], row[k].m, row[k].e)]
            if residual:
                terms.append((s1.y[k], row[k].m_y, row[k].e_y))
            out, stages = requant_stages(pm, padv, terms, self.out_width, f"rq{k}")
            pm.d.comb += out_data[k].eq(out)
        assert 1 + stages == self.latency
        with pm.If(padv):
            pm.d.sync += self.o.valid.eq(delay(pm, padv, v1, stages - 1, "valid"))
        if self.meta_width:
            pm.d.comb += self.o.payload.meta.eq(delay(pm, padv, s1.meta, stages, "meta"))
        return m

"""Gelu: I-BERT's integer GELU (i-GELU) with the output requantisation, fully pipelined."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import Param, check, validating
from .rowstream import REQUANT_STAGES, SfuError, reg, requant_stages, row_layout

__all__ = ["Gelu"]


class Gelu(wiring.Component):
    """``out = requantize(i_gelu(x), m, e, out_width)``, ``lanes`` elements per cycle.

    The arithmetic is :func:`heterotron.sim.intops.i_gelu` followed by
    :func:`heterotron.sim.requantizer.requantize`, bit for bit (``docs/number-formats.md``):
    ``erf = sign(x) * ((min(|x|, -b) + b)^2 + c)``, floored by ``2^14``, ``g = -(x * (erf +
    one))``, then ``sat(round_half_up(g * m / 2^e))``. Every intermediate keeps its full width.

    Parameters
    ----------
    lanes : int
        Elements per beat, 1 to 64.
    in_width : int
        Signed input width, 2 to 24 (the FC1 output; 16 in the MiniLM pipeline).
    out_width : int
        Signed output width, 2 to 24 (12 in the MiniLM pipeline).

    Members
    -------
    i : In(stream.Signature(row beat of signed(in_width)))
        Row beats (``data``, ``n``, ``last``; see :mod:`heterotron.hdl.rowstream`).
    o : Out(stream.Signature(row beat of signed(out_width)))
        One output beat per input beat, ``n`` and ``last`` passed through.
    cfg : In(stream.Signature(...))
        Constants ``b``, ``c``, ``one`` (from :func:`heterotron.sim.intops.gelu_consts`) and
        the requantisation ``m`` (31 bits), ``e`` (0..63). A write is taken between rows, once
        every beat in the pipeline has left; while one waits no new row is accepted. A write
        with ``b >= 0``, ``c > 0`` or ``one > 0`` (impossible for a real scale) is refused and
        sets ``SfuError.CONFIG``.
    error : Out(3)
        Sticky :class:`~heterotron.hdl.rowstream.SfuError` flags.

    Latency: 8 cycles from an accepted beat to its output beat; one beat per cycle; all
    stages stall together while ``o`` is not ready.
    """

    PARAMS = (
        Param("lanes", int, 4, "elements per beat", 1, 64),
        Param("in_width", int, 16, "signed input width", 2, 24),
        Param("out_width", int, 12, "signed output width", 2, 24),
    )

    LATENCY = 5 + REQUANT_STAGES

    def __init__(self, *, lanes=4, in_width=16, out_width=12):
        with validating(self):
            check(self.PARAMS, lanes=lanes, in_width=in_width, out_width=out_width)
        self._lanes, self._in_width, self._out_width = lanes, in_width, out_width
        super().__init__({
            "i": In(stream.Signature(row_layout(signed(in_width), lanes))),
            "o": Out(stream.Signature(row_layout(signed(out_width), lanes))),
            "cfg": In(stream.Signature(self.cfg_layout(in_width))),
            "error": Out(len(SfuError)),
        })

    @staticmethod
    def cfg_layout(in_width: int) -> data.StructLayout:
        """Constant fields: wide enough for every scale that leaves ``x`` representable."""
        return data.StructLayout({
            "b": signed(in_width + 5),
            "c": signed(2 * in_width + 9),
            "one": signed(2 * in_width + 9),
            "m": unsigned(31),
            "e": unsigned(6),
        })

    lanes = property(lambda self: self._lanes)
    in_width = property(lambda self: self._in_width)
    out_width = property(lambda self: self._out_width)
    latency = property(lambda self: self.LATENCY)

    @property
    def parameters(self) -> dict:
        return {p.name: getattr(self, p.name) for p in self.PARAMS}

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Configuration: taken when no row is open and the pipeline is empty.
        k = Signal(self.cfg_layout(self._in_width), name="consts")
        in_row = Signal()
        busy = Signal()
        m.d.comb += self.cfg.ready.eq(~busy)
        with m.If(self.cfg.valid & self.cfg.ready):
            p = self.cfg.payload
            with m.If((p.b >= 0) | (p.c > 0) | (p.one > 0)):
                m.d.sync += self.error.eq(self.error | SfuError.CONFIG)
            with m.Else():
                m.d.sync += k.eq(p)
        m.d.comb += self.i.ready.eq(advance & (in_row | ~self.cfg.valid))
        take = self.i.valid & self.i.ready
        with m.If(take):
            m.d.sync += in_row.eq(~self.i.payload.last)

        # Stage 1: operands.
        v1 = reg(m, advance, take, "s1_valid")
        s1 = reg(m, advance, self.i.payload, "s1")
        # Stage 2: clamp |x| at -b; (a + b) <= 0.
        v2 = reg(m, advance, v1, "s2_valid")
        tag2 = reg(m, advance, s1, "s2")
        t2 = [reg(m, advance, Mux(abs(x) < -k.b, abs(x), -k.b) + k.b, f"s2_t{j}")
              for j, x in enumerate(s1.data)]
        # Stage 3: (a + b)^2 + c.
        v3 = reg(m, advance, v2, "s3_valid")
        tag3 = reg(m, advance, tag2, "s3")
        sq3 = [reg(m, advance, t * t + k.c, f"s3_sq{j}") for j, t in enumerate(t2)]
        # Stage 4: erf = floor(sign(x) * sq / 2^14) + one.
        v4 = reg(m, advance, v3, "s4_valid")
        tag4 = reg(m, advance, tag3, "s4")
        g4 = []
        for j, (x, sq) in enumerate(zip(tag3.data, sq3, strict=True)):
            signed_sq = Mux(x < 0, -sq, Mux(x == 0, 0, sq))
            g4.append(reg(m, advance, (signed_sq >> 14) + k.one, f"s4_erf{j}"))
        # Stage 5: x * (erf + one), negated in the requantiser's product.
        v5 = reg(m, advance, v4, "s5_valid")
        tag5 = reg(m, advance, tag4, "s5")
        p5 = [reg(m, advance, -(x * g), f"s5_gelu{j}") for j, (x, g) in
              enumerate(zip(tag4.data, g4, strict=True))]
        # Stages 6-8: requantisation; its last register is the output register.
        v, tag = v5, tag5
        valids = [v1, v2, v3, v4, v5]
        for s in range(REQUANT_STAGES - 1):
            v, tag = reg(m, advance, v, f"s{6 + s}_valid"), reg(m, advance, tag, f"s{6 + s}")
            valids.append(v)
        for j in range(lanes):
            out = requant_stages(m, advance, [(p5[j], k.m, k.e)], self._out_width, f"rq{j}")
            m.d.comb += self.o.payload.data[j].eq(out)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(v), self.o.payload.n.eq(tag.n),
                         self.o.payload.last.eq(tag.last)]
        m.d.comb += busy.eq(in_row | self.o.valid | Cat(*valids).any())
        return m


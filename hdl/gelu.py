"""Gelu: I-BERT's integer GELU (i-GELU) with the output requantisation, fully pipelined."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from heterotron.hdl.contract.numerics import GELU_MIN_ONE_BITS, gelu_field_bits
from heterotron.hdl.contract.params import Param, Parameterised
from heterotron.hdl.ports import raise_error, sticky_errors
from heterotron.hdl.rowstream import (
    SfuError,
    delay,
    mul_pipe,
    mul_stages,
    reg,
    requant_latency,
    requant_stages,
    row_unit_ports,
)
from heterotron.hdl.simgate import gated_module

__all__ = ["Gelu"]


class Gelu(Parameterised, wiring.Component):
    """``out = requantize(i_gelu(x), m, e, out_width)``, ``lanes`` elements per cycle.

    The arithmetic is :func:`heterotron.sim.golden.intops.i_gelu` followed by
    :func:`heterotron.sim.golden.requantizer.requantize`, bit for bit (``docs/number-formats.md``):
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
    cfg : In(stream.Signature(cfg_layout))
        Constants ``b``, ``c``, ``one`` (from :func:`heterotron.sim.golden.intops.gelu_consts`) and
        the requantisation ``m`` (31 bits), ``e`` (0..63). A write is taken between rows, once
        every beat in the pipeline has left; while one waits no new row is accepted. A write
        with ``b >= 0``, ``c > 0`` (impossible for a real scale) or ``one > -2^8`` (a scale
        coarser than about 1.3e-3, where the fixed ``2^14`` shift is too coarse for the
        documented error bound; :func:`heterotron.sim.golden.intops.gelu_consts_problem`) is refused
        and sets ``SfuError.CONFIG``.
    error : Out(3), error_clear : In(1)
        Sticky :class:`~heterotron.hdl.rowstream.SfuError` flags, cleared by a cycle with
        ``error_clear`` high (:mod:`heterotron.hdl.ports`).

    Latency: :attr:`latency` cycles from an accepted beat to its output beat (the wide
    products are cut into 18x18 partial products, one adder level per stage, so it grows with
    ``in_width``); one beat per cycle; all stages stall together while ``o`` is not ready.
    """

    PARAMS = (
        Param("lanes", int, 4, "elements per beat", 1, 64),
        Param("in_width", int, 16, "signed input width", 2, 24),
        Param("out_width", int, 12, "signed output width", 2, 24),
    )

    def __init__(self, **given):
        p = self._take_params(given)
        super().__init__(row_unit_ports(self, p["lanes"], {"i": signed(p["in_width"])},
                                        signed(p["out_width"])))

    @property
    def cfg_layout(self) -> data.StructLayout:
        """The constants ``b``, ``c``, ``one``, wide enough for every scale that leaves ``x``
        representable (:func:`heterotron.sim.golden.intops.gelu_field_bits`), and the
        requantisation ``m``, ``e``."""
        f = gelu_field_bits(self.in_width)
        return data.StructLayout({
            "b": signed(f["b"]),
            "c": signed(f["c"]),
            "one": signed(f["one"]),
            "m": unsigned(31),
            "e": unsigned(6),
        })

    def _plan(self) -> dict:
        """Register stages of the pipelined multiplications, from the operand shapes."""
        x = Signal(signed(self.in_width))
        k = Signal(self.cfg_layout)
        nb = Signal(self.in_width + 5)
        t = Signal((Mux(abs(x) < nb, abs(x), nb) - nb).shape())
        sq = Signal((t * t + k.c).shape())
        erf = Signal(((Mux(x < 0, -sq, sq) >> 14) + k.one).shape())
        g = Signal((-(x * erf)).shape())
        return {"square": mul_stages(t.shape(), t.shape()),
                "product": mul_stages(x.shape(), erf.shape()),
                "requant": requant_latency((g.shape(), unsigned(31)))}

    @property
    def latency(self) -> int:
        """Cycles from an accepted beat to its output beat: operands, clamp, square (pipelined
        multiplier), + c, erf, product (pipelined), negation, requantisation."""
        plan = self._plan()
        return 5 + plan["square"] + plan["product"] + plan["requant"]

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        # The stages advance together while the output can move, and only while a beat is
        # in flight or offered: an empty pipeline holds still (its registers then keep
        # stale operands, which no valid beat carries; an idle unit does not switch).
        advance = Signal()
        inflight = Signal(range(self.latency + 2))  # accepted, not yet delivered
        m.d.comb += advance.eq((~self.o.valid | self.o.ready)
                               & ((inflight != 0) | self.i.valid))

        # Configuration: taken when no row is open and the pipeline is empty.
        k = Signal(self.cfg_layout, name="consts")
        nb = Signal(self.in_width + 5, name="neg_b")  # -b > 0, kept with the constants
        in_row = Signal()
        busy = Signal()
        raised = sticky_errors(m, self.error, self.error_clear)
        m.d.comb += self.cfg.ready.eq(~busy)
        with m.If(self.cfg.valid & self.cfg.ready):
            p = self.cfg.payload
            with m.If((p.b >= 0) | (p.c > 0) | (p.one > -(1 << GELU_MIN_ONE_BITS))):
                raise_error(m, raised, SfuError.CONFIG)
            with m.Else():
                m.d.sync += [k.eq(p), nb.eq(-p.b)]
        m.d.comb += self.i.ready.eq(advance & (in_row | ~self.cfg.valid))
        take = self.i.valid & self.i.ready
        with m.If(take):
            m.d.sync += in_row.eq(~self.i.payload.last)
        m.d.sync += inflight.eq(inflight + take - (self.o.valid & self.o.ready))
        m.d.comb += busy.eq(in_row | (inflight != 0))

        tag = Signal(data.StructLayout({"valid": 1, "n": len(self.i.payload.n), "last": 1}))
        m.d.comb += [tag.valid.eq(take), tag.n.eq(self.i.payload.n),
                     tag.last.eq(self.i.payload.last)]
        plan = self._plan()
        # Every register below advances with ``advance`` (heterotron.hdl.simgate).
        pm, padv = gated_module(m, platform, advance, "pipe")

        # operands
        tag, x = reg(pm, padv, tag, "s1_tag"), reg(pm, padv, self.i.payload.data, "s1_x")
        ax = [reg(pm, padv, abs(self.i.payload.data[j]), f"s1_abs{j}") for j in range(lanes)]
        # min(|x|, -b) + b <= 0
        t = [reg(pm, padv, Mux(ax[j] < nb, ax[j], nb) - nb, f"s2_t{j}") for j in range(lanes)]
        tag, x = reg(pm, padv, tag, "s2_tag"), reg(pm, padv, x, "s2_x")
        # (...)^2 + c
        sq = [mul_pipe(pm, padv, t[j], t[j], f"sq{j}") for j in range(lanes)]
        tag = delay(pm, padv, tag, plan["square"], "sq_tag")
        x = delay(pm, padv, x, plan["square"], "sq_x")
        sq = [reg(pm, padv, sq[j] + k.c, f"s3_sqc{j}") for j in range(lanes)]
        tag, x = reg(pm, padv, tag, "s3_tag"), reg(pm, padv, x, "s3_x")
        # erf = floor(sign(x) * sq / 2^14) + one
        erf = [reg(pm, padv, (Mux(x[j] < 0, -sq[j], Mux(x[j] == 0, 0, sq[j])) >> 14) + k.one,
                   f"s4_erf{j}") for j in range(lanes)]
        tag, x = reg(pm, padv, tag, "s4_tag"), reg(pm, padv, x, "s4_x")
        # g = -(x * erf)
        prod = [mul_pipe(pm, padv, x[j], erf[j], f"xg{j}") for j in range(lanes)]
        tag = delay(pm, padv, tag, plan["product"], "xg_tag")
        g = [reg(pm, padv, -prod[j], f"s5_g{j}") for j in range(lanes)]
        tag = reg(pm, padv, tag, "s5_tag")
        # requantisation; its last register is the output register
        tag = delay(pm, padv, tag, plan["requant"] - 1, "rq_tag")
        for j in range(lanes):
            out, _ = requant_stages(pm, padv, [(g[j], k.m, k.e)], self.out_width, f"rq{j}")
            pm.d.comb += self.o.payload.data[j].eq(out)
        with pm.If(padv):
            pm.d.sync += [self.o.valid.eq(tag.valid), self.o.payload.n.eq(tag.n),
                          self.o.payload.last.eq(tag.last)]
        return m


"""ResidualAdd: a branch and a residual stream, each by its own run-time scale, summed and
saturated (the LayerNorm input of a transformer layer)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring

from heterotron.hdl.contract.params import Param, Parameterised
from heterotron.hdl.ports import raise_error, sticky_errors
from heterotron.hdl.rowstream import (
    SfuError,
    delay,
    reg,
    requant_latency,
    requant_stages,
    row_unit_ports,
)

__all__ = ["ResidualAdd"]


class ResidualAdd(Parameterised, wiring.Component):
    """``out = sat(round_shift(a * m, e) + round_shift(r * m_r, e_r))``, ``lanes`` per cycle.

    The arithmetic is :func:`heterotron.sim.golden.requantizer.requantize` with a residual operand,
    bit for bit: each term is rounded half up on its own, the two are added, the sum saturates
    to ``out_width`` signed bits.

    Parameters
    ----------
    lanes : int
        Elements per beat, 1 to 64.
    a_width : int
        Signed width of the branch ``a``, 2 to 48 (an int32 accumulator: 32).
    r_width : int
        Signed width of the residual ``r``, 2 to 32.
    out_width : int
        Signed output width, 2 to 32 (22 for MiniLM's LayerNorm inputs).

    Members
    -------
    a, r : In(stream.Signature(row beat))
        The two operands, beat for beat; a beat is taken when both are valid. ``n`` and
        ``last`` come from ``a``; if ``r`` disagrees, ``SfuError.MISMATCH`` is set.
    o : Out(stream.Signature(row beat of signed(out_width)))
    cfg : In(stream.Signature(cfg_layout))
        ``m``, ``e`` (branch) and ``m_r``, ``e_r`` (residual): multipliers of 31 bits, shifts
        0..63. Taken between rows once the pipeline is empty; while one waits no new row is
        accepted.
    error : Out(3), error_clear : In(1)
        Sticky :class:`~heterotron.hdl.rowstream.SfuError` flags, cleared by a cycle with
        ``error_clear`` high (:mod:`heterotron.hdl.ports`).

    Latency: :attr:`latency` cycles (7 at the defaults); one beat per cycle; all stages stall
    together while ``o`` is not ready.
    """

    PARAMS = (
        Param("lanes", int, 4, "elements per beat", 1, 64),
        Param("a_width", int, 32, "signed width of the branch operand", 2, 48),
        Param("r_width", int, 16, "signed width of the residual operand", 2, 32),
        Param("out_width", int, 22, "signed output width", 2, 32),
    )

    def __init__(self, **given):
        p = self._take_params(given)
        lanes = p["lanes"]
        super().__init__(row_unit_ports(self, lanes, {"a": signed(p["a_width"]),
                                                      "r": signed(p["r_width"])},
                                        signed(p["out_width"])))

    @property
    def cfg_layout(self) -> data.StructLayout:
        """The two scales: ``m``, ``e`` (branch) and ``m_r``, ``e_r`` (residual)."""
        return data.StructLayout({"m": unsigned(31), "e": unsigned(6), "m_r": unsigned(31),
                                  "e_r": unsigned(6)})

    def _requant_stages(self) -> int:
        return requant_latency((signed(self.a_width), unsigned(31)),
                               (signed(self.r_width), unsigned(31)))

    @property
    def latency(self) -> int:
        """Cycles from an accepted beat pair to its output beat: operands, then the
        requantisation (pipelined products, shift, round/add/saturate)."""
        return 1 + self._requant_stages()

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        raised = sticky_errors(m, self.error, self.error_clear)
        k = Signal(self.cfg_layout, name="consts")
        in_row = Signal()
        busy = Signal()
        m.d.comb += self.cfg.ready.eq(~busy)
        with m.If(self.cfg.valid & self.cfg.ready):
            m.d.sync += k.eq(self.cfg.payload)

        open_ = advance & (in_row | ~self.cfg.valid)
        m.d.comb += [self.a.ready.eq(open_ & self.r.valid), self.r.ready.eq(open_ & self.a.valid)]
        take = self.a.valid & self.a.ready
        a, r = self.a.payload, self.r.payload
        with m.If(take):
            m.d.sync += in_row.eq(~a.last)
            with m.If((a.last != r.last) | (a.last & (a.n != r.n))):
                raise_error(m, raised, SfuError.MISMATCH)

        inflight = Signal(range(self.latency + 2))  # accepted, not yet delivered
        m.d.sync += inflight.eq(inflight + take - (self.o.valid & self.o.ready))
        m.d.comb += busy.eq(in_row | (inflight != 0))
        tag = reg(m, advance, Cat(take, a.n, a.last), "s1_tag")
        ops_a = reg(m, advance, a.data, "s1_a")
        ops_r = reg(m, advance, r.data, "s1_r")
        tag = delay(m, advance, tag, self._requant_stages() - 1, "rq_tag")
        for j in range(self.lanes):
            out, _ = requant_stages(m, advance, [(ops_a[j], k.m, k.e), (ops_r[j], k.m_r, k.e_r)],
                                    self.out_width, f"rq{j}")
            m.d.comb += self.o.payload.data[j].eq(out)
        n_bits = len(a.n)
        with m.If(advance):
            m.d.sync += [self.o.valid.eq(tag[0]), self.o.payload.n.eq(tag[1:1 + n_bits]),
                         self.o.payload.last.eq(tag[1 + n_bits])]
        return m

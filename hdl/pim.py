"""PimTile: an analog processing-in-memory crossbar with bit-sliced weights, bit-serial inputs,
a low-ENOB ADC model (clip range, offset, LFSR noise), stuck-at faults and zero-plane skipping.

The numerics are :class:`heterotron.sim.golden.pim.PimTileModel`'s, bit for bit; the module
docstring
there is the specification and ``docs/number-formats.md`` explains each parameter next to those
of NeuroSim and CrossSim.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib import enum as hdl_enum
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.params import Parameterised
from heterotron.hdl.contract.pim import (
    ADC_FRAC,
    FAULT_MIX,
    M32,
    NOISE_SHIFT,
    PIM_PARAMS,
    RATE_BITS,
    SEED_MIX,
    SIGMA_BITS,
    check_pim_params,
    gain_for_range,
    slices_of,
)
from heterotron.hdl.ports import error_ports, raise_error, sticky_errors
from heterotron.hdl.rowstream import delay, mul_pipe, mul_stages, reg
from heterotron.hdl.simgate import gated_pipeline

__all__ = ["PimTile", "PimFlag", "PimReg"]

STAT_BITS = 48  # the cycle counters: 2^48 cycles is 32 days at 100 MHz
Z_SHAPE = signed(12)  # the noise sample z, +-1020


class PimFlag(enum.IntFlag):
    """Sticky ``error`` bits: a refused register write, a refused weight write (cleared by
    ``error_clear``, :mod:`heterotron.hdl.ports`)."""

    CONFIG = 1
    WEIGHT = 2


class PimReg(hdl_enum.IntEnum, shape=3):
    """Run-time registers, written through ``cfg`` as ``{reg, value}``: the shape of the
    ``reg`` field, three bits (codes 6 and 7 name no register and are refused)."""

    GAIN = 0  # ADC gain, F = ADC_FRAC fractional bits (adc_range=calibrated only)
    OFFSET = 1  # ADC offset in 2^-F LSB, two's complement in value
    SIGMA = 2  # noise sigma_q (sim.pim.sigma_code); 0 = no noise
    NOISE_SEED = 3  # restarts every ADC's LFSR
    FAULT_RATE = 4  # stuck cells per 2^16, drawn when a weight is written
    FAULT_SEED = 5


def _xorshift32(m: Module, x, name: str) -> Signal:
    """One xorshift32 step; each shift-xor is its own signal (as an expression the three
    steps would copy their operand eightfold)."""
    for i, (op, n) in enumerate((("<<", 13), (">>", 17), ("<<", 5))):
        y = Signal(32, name=f"{name}_{i}")
        m.d.comb += y.eq(x ^ ((x << n)[:32] if op == "<<" else (x >> n)))
        x = y
    return x


def _adder_levels(values, levels: int) -> list:
    """The first ``levels`` levels of a balanced adder tree over ``values``: its partial sums."""
    values = list(values)
    for _ in range(levels):
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values


def _balanced_sum(values):
    values = list(values)
    return _adder_levels(values, (len(values) - 1).bit_length())[0]


def _case(m: Module, value: int, count: int):
    """``m.Case(value)`` of a switch over ``0 .. count-1``, the last one as ``m.Default()``:
    a full case whatever the selector's width (the others never occur)."""
    return m.Default() if value == count - 1 else m.Case(value)


def _lowest(m: Module, mask, width: int, name: str) -> Signal:
    """Index of the lowest set bit of ``mask`` (0 if none)."""
    out = Signal(range(max(2, width)), name=name)
    for i in reversed(range(width)):
        with m.If(mask[i]):
            m.d.comb += out.eq(i)
    return out


class PimTile(Parameterised, wiring.Component):
    """A ``rows`` x ``cols`` crossbar tile computing ``x @ w.T`` on int inputs, as
    :class:`heterotron.sim.golden.pim.PimTileModel` does.

    Parameters
    ----------
    lanes : int
        Input elements per ``x`` beat, 1 to 64; a vector is ``rows / lanes`` beats.
    rows : int
        Crossbar rows (the length of the input vector), 1 to 256, a multiple of ``lanes``.
    cols : int
        Output columns, 1 to 64; each owns ``2 * slices`` bit-lines (a differential pair).
    input_bits, weight_bits : int
        Signed widths, 2 to 16. Weights lie in ``+-(2^(weight_bits-1) - 1)``.
    cell_bits : int
        Bits per cell: 1, 2 or 4; ``slices = ceil((weight_bits - 1) / cell_bits)``.
    enob : int
        ADC bits, 1 to 10: codes 0 .. 2^enob - 1.
    adc_range : str
        ``calibrated``: the gain (clip range) is a register written at run time; ``fixed``: it
        is a constant of the circuit.
    adc_max : int
        The range at reset (``calibrated``) or for good (``fixed``), in column-sum units; 0
        means the full column range (exact when the ADC has enough levels).
    adc_share : int
        Bit-lines per ADC, a divisor of ``cols * 2 * slices``: a converted input plane takes
        ``adc_share`` cycles.
    noise, faults, skip_zero : bool
        Generate the LFSR noise, the stuck-at fault injection, the zero-plane skipping.
    input_code : str
        ``twos``: ``input_bits`` two's-complement planes (the sign plane negative);
        ``signmag``: ``2 * input_bits`` planes, the positive elements' magnitudes then the
        negative elements' (subtracted). Small signed values leave high planes all zero only
        in sign-magnitude, so that is where skipping pays.

    Members
    -------
    wr : In(stream {row, col, w})
        Programs one weight (its ``2 * slices`` cells). Taken only while no vector is being
        computed; a weight of ``-2^(weight_bits-1)`` or an address outside the array is
        refused (``PimFlag.WEIGHT``).
    cfg : In(stream.Signature(cfg_layout))
        Run-time registers, ``{reg, value}`` (``reg`` a :class:`PimReg`), taken only while no
        vector is being computed. A value the register cannot hold, or an unknown ``reg``
        code, is refused (``PimFlag.CONFIG``), the old value stays.
    x : In(stream of ``lanes`` signed ``input_bits``)
        Input vectors, ``rows / lanes`` beats each; two vectors are buffered.
    o : Out(stream of ``cols`` signed accumulators)
        One beat per vector.
    conv_cycles, skip_cycles : Out(48)
        Cycles the ADCs converted; cycles saved by skipped planes (``adc_share`` per plane).
    error : Out(2), error_clear : In(1)
        Sticky :class:`PimFlag` bits, cleared by a cycle with ``error_clear`` high
        (:mod:`heterotron.hdl.ports`).

    A vector waits while a ``wr`` or ``cfg`` write is pending: writes land between vectors.
    """

    PARAMS = PIM_PARAMS

    @classmethod
    def check_params(cls, p: dict) -> None:
        check_pim_params(p)

    def __init__(self, **given):
        p = self._take_params(given)
        rows, cols, enob = p["rows"], p["cols"], p["enob"]
        input_bits, cell_bits = p["input_bits"], p["cell_bits"]
        self.slices = slices_of(p["weight_bits"], cell_bits)
        self.lines = cols * 2 * self.slices
        self.n_adc = self.lines // p["adc_share"]
        levels = (1 << enob) - 1
        self.full_range = rows * ((1 << cell_bits) - 1)
        self.reset_gain = gain_for_range(p["adc_max"] or max(self.full_range, levels), enob)
        ssum = sum(1 << (s * cell_bits) for s in range(self.slices))
        signmag = p["input_code"] == "signmag"
        self.n_planes = input_bits * (2 if signmag else 1)
        passes = 2 if signmag else 1  # a sign-magnitude sum: both passes add
        self.acc_width = (passes * levels * ((1 << input_bits) - 1) * ssum).bit_length() + 1
        self.col_bits = max(1, (cols - 1).bit_length())
        self.row_bits = max(1, (rows - 1).bit_length())
        self.WR_LAYOUT = data.StructLayout({"row": unsigned(self.row_bits),
                                            "col": unsigned(self.col_bits),
                                            "w": signed(p["weight_bits"])})
        super().__init__({
            "wr": In(stream.Signature(self.WR_LAYOUT)),
            "cfg": In(stream.Signature(self.cfg_layout)),
            "x": In(stream.Signature(data.ArrayLayout(signed(input_bits), p["lanes"]))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self.acc_width), cols))),
            "conv_cycles": Out(STAT_BITS),
            "skip_cycles": Out(STAT_BITS),
            **error_ports(PimFlag),
        })

    @property
    def cfg_layout(self) -> data.StructLayout:
        """A register write: ``reg`` (:class:`PimReg`) and its ``value``, 32 bits (signed
        registers in two's complement)."""
        return data.StructLayout({"reg": PimReg, "value": unsigned(32)})

    # -- pipeline depths ------------------------------------------------------------------

    def _p_width(self) -> int:
        return self.full_range.bit_length()

    def _mul_depth(self) -> int:
        gain_w = ADC_FRAC + self.enob
        return max(mul_stages(unsigned(self._p_width()), unsigned(gain_w)),
                   mul_stages(Z_SHAPE, unsigned(SIGMA_BITS)))

    @property
    def latency(self) -> int:
        """Cycles from a slot's issue to its term in the accumulator: column sums (a balanced
        adder tree per ADC, its first levels into a register, the rest into a second one), gain
        and noise products, add, clamp, shift."""
        return 1 + 1 + self._mul_depth() + 1 + 1 + 1

    @property
    def timing(self) -> dict:
        return {"latency": self.latency,
                "cycles_per_vector": "max(1, converted_planes * adc_share), and at least "
                                     "rows / lanes (the input beats)",
                "adc_share": self.adc_share, "adcs": self.n_adc, "bit_lines": self.lines}

    # -- circuit ----------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        ib, cb, S, share = self.input_bits, self.cell_bits, self.slices, self.adc_share
        enob, levels = self.enob, (1 << self.enob) - 1
        cmask = (1 << cb) - 1
        ssum = sum(1 << (s * cb) for s in range(S))
        depth = self.latency + 2
        m.submodules.ofifo = fifo = SyncFIFOBuffered(width=self.cols * self.acc_width,
                                                     depth=depth)

        # -- state shared by the ports ----------------------------------------------------
        active = Signal()
        inflight = Signal(range(depth + 1))
        idle = Signal()
        m.d.comb += idle.eq(~active & (inflight == 0))

        # -- registers --------------------------------------------------------------------
        gain_w = ADC_FRAC + enob
        if self.adc_range == "calibrated":
            gain = Signal(gain_w, init=self.reset_gain, name="gain")
        else:
            gain = Const(self.reset_gain, gain_w)
        offset = Signal(signed(gain_w + 1), name="offset")
        sigma = Signal(SIGMA_BITS, name="sigma_q")
        fault_rate = Signal(RATE_BITS, name="fault_rate")
        fault_seed = Signal(32, name="fault_seed")
        reseed = Signal()

        raised = sticky_errors(m, self.error, self.error_clear)
        m.d.comb += self.cfg.ready.eq(idle)
        cv = self.cfg.payload.value
        cv_s = cv.as_signed()
        with m.If(self.cfg.valid & self.cfg.ready):
            ok = Signal()
            reg_is = {r: self.cfg.payload.reg == r for r in PimReg}
            # ok: the value fits the register addressed (an unknown register is refused)
            fits = [reg_is[PimReg.OFFSET] & (cv_s >= -(1 << gain_w)) & (cv_s < (1 << gain_w)),
                    reg_is[PimReg.SIGMA] & (cv < (1 << SIGMA_BITS)) & (self.noise | (cv == 0)),
                    reg_is[PimReg.FAULT_RATE] & (cv < (1 << RATE_BITS))
                    & (self.faults | (cv == 0)),
                    reg_is[PimReg.NOISE_SEED], reg_is[PimReg.FAULT_SEED]]
            if self.adc_range == "calibrated":
                fits.append(reg_is[PimReg.GAIN] & (cv != 0) & (cv < (1 << gain_w)))
            m.d.comb += [ok.eq(Cat(*fits).any()), reseed.eq(reg_is[PimReg.NOISE_SEED])]
            with m.If(ok):
                for r, target in ((PimReg.OFFSET, offset), (PimReg.SIGMA, sigma),
                                  (PimReg.FAULT_RATE, fault_rate),
                                  (PimReg.FAULT_SEED, fault_seed)):
                    with m.If(reg_is[r]):
                        m.d.sync += target.eq(cv)
                if self.adc_range == "calibrated":
                    with m.If(reg_is[PimReg.GAIN]):
                        m.d.sync += gain.eq(cv)
            with m.If(~ok):
                raise_error(m, raised, PimFlag.CONFIG)

        # -- the array and its write port ---------------------------------------------------
        group = 2 * S * cb  # one column's cells
        # one group of cells per column address, the unused addresses included (never written:
        # the write's address check refuses them), so that the write decoder is a full case
        cells = [Signal(group << self.col_bits, name=f"cells{r}") for r in range(self.rows)]
        m.d.comb += self.wr.ready.eq(idle)
        wp = self.wr.payload
        wlim = 1 << (self.weight_bits - 1)
        w_ok = (wp.w != -wlim) & (wp.row < self.rows) & (wp.col < self.cols)
        pos, neg = Signal(self.weight_bits), Signal(self.weight_bits)
        m.d.comb += [pos.eq(Mux(wp.w > 0, wp.w, 0)), neg.eq(Mux(wp.w < 0, -wp.w, 0))]
        new_cells = []
        sb = max(1, (S - 1).bit_length())
        for part, mag in ((0, pos), (1, neg)):
            for s in range(S):
                v = (mag >> (s * cb))[:cb]
                if self.faults:
                    addr = Cat(Const(s, sb), Const(part, 1), wp.col, wp.row)
                    h = (fault_seed ^ addr ^ FAULT_MIX)[:32]
                    for rnd in range(3):
                        h = _xorshift32(m, h, f"fault_p{part}s{s}_r{rnd}")
                    stuck = h[:16] < fault_rate
                    v = Mux(stuck, Mux(h[16], cmask, 0), v)
                cell = Signal(cb, name=f"new_p{part}s{s}")  # cb bits even where mag is narrower
                m.d.comb += cell.eq(v)
                new_cells.append(cell)
        new_group = Signal(group)
        m.d.comb += new_group.eq(Cat(*new_cells))
        wtake = Signal()
        m.d.comb += wtake.eq(self.wr.valid & self.wr.ready)
        # The datapath's registers (the cells, the vector buffers, the slot issuer and the
        # conversion pipeline) change only on a weight written, an input beat taken, while a
        # vector converts or one starts, and then for the pipeline's depth: by then the last
        # sums are in the accumulators and every stage holds the idle slot's tag (not valid,
        # not converting) with values that only such tags carry, which nothing reads. So in
        # the simulation harness they get a clock that ticks only then
        # (heterotron.hdl.simgate), one clock for all, so that the column sums' adder trees
        # are computed in the block that loads them; elsewhere they are the unit's own.
        take_x = Signal()
        start = Signal()
        pm, _ = gated_pipeline(m, platform, 1, wtake | take_x | active | start,
                               self.latency + 2, "datapath")
        with pm.If(wtake & w_ok):
            for r in range(self.rows):
                with pm.If(wp.row == r):
                    pm.d.sync += cells[r].word_select(wp.col, group).eq(new_group)
        with m.If(wtake & ~w_ok):
            raise_error(m, raised, PimFlag.WEIGHT)

        # -- input ingest: two vector buffers ------------------------------------------------
        nbeats = self.rows // self.lanes
        bufs = [Signal(data.ArrayLayout(signed(ib), self.rows), name=f"xbuf{i}") for i in (0, 1)]
        NP = self.n_planes
        signmag = self.input_code == "signmag"
        ored = [Signal(NP, name=f"ored{i}") for i in (0, 1)]
        full = Signal(2)
        wsel = Signal()
        beat = Signal(range(max(2, nbeats)))
        m.d.comb += self.x.ready.eq(~full.bit_select(wsel, 1))
        taking = self.x.valid & self.x.ready
        beat_or = 0
        for lane in range(self.lanes):
            v = self.x.payload[lane]
            if signmag:  # the positive elements' magnitudes, then the negative ones'
                pos_v, neg_v = Signal(ib, name=f"in_pos{lane}"), Signal(ib, name=f"in_neg{lane}")
                m.d.comb += [pos_v.eq(Mux(v > 0, v, 0)), neg_v.eq(Mux(v < 0, -v, 0))]
                beat_or = beat_or | Cat(pos_v, neg_v)
            else:
                beat_or = beat_or | v.as_unsigned()
        set_full = [Signal(name=f"set_full{i}") for i in (0, 1)]
        m.d.comb += take_x.eq(taking)
        with pm.If(take_x):
            for i in (0, 1):
                with pm.If(wsel == i):
                    for bt in range(nbeats):
                        with pm.If(beat == bt):
                            for lane in range(self.lanes):
                                pm.d.sync += bufs[i][bt * self.lanes + lane].eq(
                                    self.x.payload[lane])
                    pm.d.sync += ored[i].eq(Mux(beat == 0, 0, ored[i]) | beat_or)
        with m.If(take_x):
            for i in (0, 1):
                with m.If(wsel == i):
                    m.d.comb += set_full[i].eq(beat == nbeats - 1)
            with m.If(beat == nbeats - 1):
                m.d.sync += [beat.eq(0), wsel.eq(~wsel)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # -- the slot issuer -------------------------------------------------------------------
        rsel = Signal()
        b = Signal(range(max(2, NP)), name="plane")
        k = Signal(range(max(2, share)), name="slot")
        rem = Signal(NP)
        zero_vec = Signal()
        last = Signal()
        m.d.comb += last.eq(active & (zero_vec | ((k == share - 1) & (rem == 0))))
        next_sel = rsel ^ last
        credit = (inflight + fifo.level) < depth
        m.d.comb += start.eq((~active | last) & full.bit_select(next_sel, 1) & ~self.cfg.valid
                             & ~self.wr.valid & credit)
        if self.skip_zero:
            mask = Mux(next_sel, ored[1], ored[0])
        else:
            mask = Const((1 << NP) - 1, NP)
        clr_full = [Signal(name=f"clr_full{i}") for i in (0, 1)]
        for i in (0, 1):
            m.d.comb += clr_full[i].eq(last & (rsel == i))
            m.d.sync += full[i].eq((full[i] | set_full[i]) & ~clr_full[i])
        low_mask = _lowest(m, mask, NP, "first_plane")
        low_rem = _lowest(m, rem, NP, "next_plane")
        with pm.If(last):
            pm.d.sync += [active.eq(0), rsel.eq(~rsel)]
        with pm.Elif(active):
            with pm.If(k == share - 1):
                pm.d.sync += [k.eq(0), b.eq(low_rem), rem.eq(rem & (rem - 1))]
            with pm.Else():
                pm.d.sync += k.eq(k + 1)
        with pm.If(start):
            pm.d.sync += [active.eq(1), k.eq(0), b.eq(low_mask), rem.eq(mask & (mask - 1)),
                          zero_vec.eq(mask == 0)]
        conv = active & ~zero_vec
        # statistics
        with pm.If(conv):
            pm.d.sync += self.conv_cycles.eq(self.conv_cycles + 1)
        if self.skip_zero:
            zeros = sum(~mask[i] for i in range(NP))
            with pm.If(start):
                pm.d.sync += self.skip_cycles.eq(self.skip_cycles + zeros * share)

        # -- column sums of the issued plane ---------------------------------------------------
        xb = Signal(self.rows * ib)
        bits = Signal(self.rows, name="plane_bits")
        m.d.comb += xb.eq(Mux(rsel, bufs[1].as_value(), bufs[0].as_value()))
        if signmag:
            pos_x, neg_x = Signal(self.rows * ib), Signal(self.rows * ib)
            for r in range(self.rows):
                xr = xb[r * ib:(r + 1) * ib].as_signed()
                m.d.comb += [pos_x[r * ib:(r + 1) * ib].eq(Mux(xr > 0, xr, 0)),
                             neg_x[r * ib:(r + 1) * ib].eq(Mux(xr < 0, -xr, 0))]
            sources = [(pos_x, bb) for bb in range(ib)] + [(neg_x, bb) for bb in range(ib)]
        else:
            sources = [(xb, bb) for bb in range(ib)]
        with m.Switch(b):
            for q, (src, bb) in enumerate(sources):
                with _case(m, q, NP):
                    m.d.comb += bits.eq(Cat(src[r * ib + bb] for r in range(self.rows)))
        # the plane's bit position and the sign of its terms
        shift = Signal(range(max(2, ib)), name="plane_shift")
        negate = Signal(name="plane_negative")
        if signmag:
            m.d.comb += [shift.eq(Mux(b >= ib, b - ib, b)), negate.eq(b >= ib)]
        else:
            m.d.comb += [shift.eq(b), negate.eq(b == ib - 1)]
        # One adder tree per ADC, not per bit-line: on slot k it sums the bit-line its ADC
        # converts then (a * share + k), each row's cells picked by k before the sum, so only the
        # sums that are converted are built. Loaded on converting slots only: an idle tile's
        # adder trees do not switch. With one bit-line per ADC k is always 0, and the enable is
        # the one the per-bit-line trees had (a plane's first slot).
        load_sums = Signal(name="load_sums")
        pm.d.comb += load_sums.eq(conv & (k == 0) if share == 1 else conv)
        # The tree's first levels are registered here, its last ones in the next stage (where
        # the pick by k was when the trees were per bit-line): the plane's bits fan out to every
        # tree, and the select and a whole tree in one cycle ran at 40 MHz on ECP5.
        split = (self.rows - 1).bit_length() // 2
        psum = []
        for a in range(self.n_adc):
            picked = Signal(self.rows * cb, name=f"adc{a}_cells")
            with pm.Switch(k):
                for kk in range(share):
                    j = a * share + kk
                    with _case(pm, kk, share):
                        pm.d.comb += picked.eq(Cat(cells[r][j * cb:(j + 1) * cb]
                                                   for r in range(self.rows)))
            terms = [Mux(bits[r], picked[r * cb:(r + 1) * cb], 0) for r in range(self.rows)]
            psum.append([reg(pm, load_sums, v, f"psum{a}_{i}")
                         for i, v in enumerate(_adder_levels(terms, split))])
        tag_layout = data.StructLayout({"valid": 1, "conv": 1, "last": 1, "shift": len(shift),
                                        "neg": 1, "k": len(k)})
        tag_now = Signal(tag_layout)
        pm.d.comb += tag_now.eq(Cat(active, conv, last, shift, negate, k))
        tag = reg(pm, None, tag_now, "tag_p")

        # -- ADCs: noise, gain ----------------------------------------------------------------
        t_conv = tag.conv
        codes_in, znoise = [], []
        for a in range(self.n_adc):
            sel = Signal(self._p_width(), name=f"adc{a}_p")
            pm.d.comb += sel.eq(_balanced_sum(psum[a]))
            codes_in.append(reg(pm, None, sel, f"adc{a}_psel"))
            if self.noise:
                state = Signal(32, init=noise_seed_mix(0, a), name=f"lfsr{a}")
                stepped = _xorshift32(m, state, f"lfsr{a}_next")
                with m.If(reseed):
                    m.d.sync += state.eq(noise_seed_mix(cv, a))
                with m.Elif(t_conv):
                    m.d.sync += state.eq(stepped)
                byte_sum = sum(stepped[8 * i:8 * i + 8] for i in range(4))  # 2z = ... - 1020
                z = Cat(Const(0, 1), byte_sum, Const(0, 1)).as_signed() - 1020
                zr = Signal(Z_SHAPE, name=f"adc{a}_z")
                m.d.sync += zr.eq(z)
                znoise.append(zr)
        tag = reg(pm, None, tag, "tag_sel")
        d = self._mul_depth()
        codes = []
        for a in range(self.n_adc):
            prod = mul_pipe(pm, None, codes_in[a], gain, f"adc{a}_gain")
            prod = delay(pm, None, prod, d - mul_stages(unsigned(self._p_width()),
                                                        unsigned(gain_w)), f"adc{a}_gd")
            total = prod + offset + (1 << (ADC_FRAC - 1))
            if self.noise:
                nz = mul_pipe(pm, None, znoise[a], sigma, f"adc{a}_noise")
                nz = delay(pm, None, nz, d - mul_stages(Z_SHAPE, unsigned(SIGMA_BITS)),
                           f"adc{a}_nd")
                total = total + (nz >> NOISE_SHIFT)
            v = reg(pm, None, total, f"adc{a}_v")
            q = v >> ADC_FRAC
            code = Signal(enob, name=f"adc{a}_code")
            pm.d.sync += code.eq(Mux(q < 0, 0, Mux(q > levels, levels, q)))
            codes.append(code)
        tag = delay(pm, None, tag, d + 2, "tag_adc")

        # -- shift and add ------------------------------------------------------------------------
        t_conv, t_k = tag.conv, tag.k
        deltas = []
        for c in range(self.cols):
            sel = Signal(signed((levels * ssum).bit_length() + 1), name=f"col{c}_slot")
            with pm.Switch(t_k):
                for kk in range(share):
                    terms = []
                    for a in range(self.n_adc):
                        j = a * share + kk
                        if j // (2 * S) != c:
                            continue
                        part, s = (j // S) % 2, j % S
                        term = codes[a] << (s * cb)
                        terms.append(-term if part else term)
                    with _case(pm, kk, share):
                        pm.d.comb += sel.eq(sum(terms) if terms else 0)
            shifted = sel << tag.shift
            delta = Signal(signed(self.acc_width), name=f"col{c}_delta")
            pm.d.sync += delta.eq(Mux(~t_conv, 0, Mux(tag.neg, -shifted, shifted)))
            deltas.append(delta)
        tag = reg(pm, None, tag, "tag_term")
        t_valid, t_last = tag.valid, tag.last
        accs = [Signal(signed(self.acc_width), name=f"acc{c}") for c in range(self.cols)]
        sums = [acc + dl for acc, dl in zip(accs, deltas, strict=True)]
        pm.d.comb += fifo.w_data.eq(Cat(*(s_[:self.acc_width] for s_ in sums)))
        # one expression, not an assignment under If: Icarus then evaluates it at time 0, and
        # the inflight count that depends on it never starts as X
        pm.d.comb += fifo.w_en.eq(t_valid & t_last)
        with pm.If(t_valid):
            with pm.If(t_last):
                pm.d.sync += [acc.eq(0) for acc in accs]
            with pm.Else():
                pm.d.sync += [acc.eq(s_) for acc, s_ in zip(accs, sums, strict=True)]
        m.d.sync += inflight.eq(inflight + start - fifo.w_en)

        # -- output ------------------------------------------------------------------------------
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready)]
        return m


def noise_seed_mix(seed, a: int):
    """ADC ``a``'s LFSR start for a seed (:func:`heterotron.sim.golden.pim.adc_seed_states`)."""
    return (seed ^ ((SEED_MIX * (a + 1)) & M32)) | 1

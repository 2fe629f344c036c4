"""The PiM tile: a :class:`~heterotron.hdl.pim.PimTile` crossbar behind the tile socket.

The tile takes the PiM instructions of the contract
(:data:`~heterotron.hdl.contract.accel.OPCODES`, class
:attr:`~heterotron.hdl.contract.accel.TileKind.PIM`) on ``cmd_rx``, one at a time, with the
meaning the golden interpreter gives them (:mod:`heterotron.sim.golden.accel`). The control
tile has checked the fields; the tile checks only its own state.

* ``ADC(gain, offset, sigma, noise_seed)``: register writes on the unit's ``cfg``: ``GAIN``
  (only when ``gain`` is not 0, and never with ``adc_range = fixed``), ``OFFSET``, ``SIGMA``
  and ``NOISE_SEED`` (always: every ADC restarts its LFSR from the seed, as
  ``PimTileModel.configure(noise_seed=...)`` does), then DONE.
* ``PROGRAM(fault_rate, fault_seed, src)``: writes ``FAULT_RATE`` and ``FAULT_SEED``, sends a
  REQ for ``src`` (``N x K`` weights in ``elem_bytes(weight_bits)``-byte containers,
  sign-extended) to its memory tile and writes every weight of the crossbar on the unit's
  ``wr``, one a cycle: row ``n`` of ``src`` is crossbar column ``n``, its ``K`` elements rows
  ``0 .. K-1``, then zeros for rows ``K .. rows-1``; after the ``N`` rows of ``src``, zeros
  for columns ``N .. cols-1``. A weight outside ``+-(2^(weight_bits-1) - 1)`` is not written
  (its cells, faults included, keep what they held) and raises ``PIM_RANGE``; DONE then
  carries ``UNIT``.
* ``MVM(acc, out, src, dest)``: with ``acc``, the accumulator must hold ``M = src.rows`` rows,
  else nothing runs and DONE carries ``ILLEGAL`` (and ``PIM_DIMS``). Otherwise a REQ for
  ``src`` (``M x K`` inputs of ``src.ebytes`` bytes, sign-extended); each row becomes one
  vector on the unit's ``x`` (``K`` elements wrapped to ``input_bits``, a wrapped one raises
  ``PIM_RANGE``, then zeros up to ``rows``; ``lanes`` elements a beat), and each of the unit's
  ``o`` beats is added into (``acc``) or written over row ``v`` of the accumulator memory
  (``max_m x cols`` sums of :attr:`PimNetTile.acc_bits` bits). The accumulator then holds
  ``M`` rows. Without ``out``: DONE (``UNIT`` after a wrapped input). With ``out``: row ``r``
  of the accumulator, its first ``dest.cols`` sums, rescaled ``(acc * 2^ADC_FRAC + gain //
  2) // gain`` (floor division, ``gain`` the ADC register as it is now) and wrapped to 32 bits
  (a wrapped one raises ``PIM_RANGE``), leaves as one DATA packet of ``dest.cols`` int32
  elements to ``dest.addr + r * dest.stride * 4`` (``Port.MEM``); the packet of the last row
  has ``ack``, so the memory answers DONE for the MVM and the tile sends none.

Unknown instructions (not of class PIM, an unknown code) are answered with DONE and
``ILLEGAL`` (the control tile should never send them).

The unit flags (``PIM_DIMS``, ``PIM_RANGE`` of the golden model) are sticky on ``flags``. An
MVM with ``out`` is answered by the memory's DONE: when it raised ``PIM_RANGE`` (a wrapped
input or sum), its last packet's header has ``unit`` set, so that DONE carries ``UNIT``.

The accumulator is exact (as the golden model's unbounded integers) while a chain of ``acc``
MVMs stays within ``acc_bits`` = the unit's accumulator width plus 16 bits: any chain of up to
2^16 MVMs.

Throughput: ``PROGRAM`` writes one weight a cycle (``rows * cols`` cycles, the data beats
hidden under them). ``MVM`` takes one input element a cycle into a vector buffer, then gives
the unit the vector's ``rows / lanes`` beats; the unit computes a vector in ``max(1,
converted planes * adc_share)`` cycles (it buffers two), so the loader keeps up while ``K +
rows / lanes`` is below that. The rescale divides sequentially, ``_DIV_BITS`` quotient bits a
cycle: ``ceil(n_bits / _DIV_BITS) + 1`` cycles a sum, ``n_bits = acc_bits + ADC_FRAC + 2``;
then the row's packet, ``3 + ceil(4 * dest.cols / word_bytes)`` beats. DATA beats are
buffered ahead of the loader (:data:`RX_BUFFER_BYTES`), so the memory tile sends a job of up
to that size at a beat a cycle and is free for the other tiles' jobs meanwhile.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from heterotron.hdl.contract.accel import (
    ACCEL_PARAMS,
    DATA_INFO,
    DONE_WORD,
    INSTR_HEAD,
    MAX_TILES,
    MSG_HEADER,
    OPCODES,
    REGION,
    REQ_ARGS,
    TILE_PARAMS,
    WORD,
    AccelError,
    MsgClass,
    Port,
    TileKind,
    elem_bytes,
)
from heterotron.hdl.contract.params import Param, ParamError, Parameterised
from heterotron.hdl.contract.pim import ADC_FRAC, PIM_PARAMS, check_pim_params
from heterotron.hdl.pim import PimReg, PimTile
from heterotron.hdl.tiles.common import check_placement, class_ports

__all__ = ["PimNetTile", "PIM_DIMS", "PIM_RANGE"]

#: The unit flags on ``flags`` (those of :mod:`heterotron.sim.golden.accel`).
PIM_DIMS = 1
PIM_RANGE = 2

_PIM_OPS = {op.name: op for op in OPCODES if op.cls == TileKind.PIM}
_ADC, _PROGRAM, _MVM = _PIM_OPS["ADC"], _PIM_OPS["PROGRAM"], _PIM_OPS["MVM"]
_ARG_WORDS = max(op.words for op in _PIM_OPS.values())
_UNIT_PARAMS = tuple(q.name for q in PIM_PARAMS)
#: Bits the accumulator has beyond the unit's (a chain of up to 2^16 ``acc`` MVMs is exact).
_CHAIN_BITS = 16
#: Quotient bits the rescale's divider makes a cycle.
_DIV_BITS = 4
#: Bytes of DATA beats the tile buffers ahead of its loader (one block RAM): the memory
#: tile's read engine serves one job at a time, so a loader taking an element a cycle
#: (a weight a cycle while programming) would hold it at a quarter of its rate on a 32-bit
#: plane, and every other tile's job waiting behind; buffered, a job of up to this many
#: bytes leaves the memory tile at a beat a cycle.
RX_BUFFER_BYTES = 1024


class _State(enum.Enum, shape=5):
    IDLE = 0
    DECODE = 1
    ADC = 2  #: the ADC's cfg writes
    P_CFG = 3  #: PROGRAM's fault register writes
    REQ = 4  #: the REQ for src
    P_DATA = 5  #: weights of a row of src
    P_PAD = 6  #: zeros for rows K .. rows-1 of the column
    P_ZCOL = 7  #: zero columns N .. cols-1
    M_DATA = 8  #: input elements of a row into the vector buffer
    M_EMIT = 9  #: the vector's beats on x
    M_WAIT = 10  #: the last sums into the accumulator
    O_READ = 11  #: an accumulator row read
    O_LOAD = 12  #: the divider takes a sum
    O_DIV = 13
    O_SEND = 14  #: the row's DATA packet
    CHECK = 15  #: the unit's flags after its last write
    DONE = 16


def _accel_param(name: str) -> Param:
    return next(q for q in ACCEL_PARAMS if q.name == name)


def _log2(n: int) -> int:
    assert n > 0 and n & (n - 1) == 0
    return n.bit_length() - 1


class PimNetTile(Parameterised, wiring.Component):
    """A PiM crossbar behind the tile socket (see the module documentation).

    Parameters
    ----------
    index, control : int
        This tile's index and the control tile's.
    flit_width : int
        Data-plane and scratchpad word bits (a power of two, 32 to 256).
    max_packet : int
        Most data beats in one packet: a result row (``cols`` int32) must fit.
    lanes, rows, cols, ..., input_code
        The :class:`~heterotron.hdl.pim.PimTile` parameters.
    max_m : int
        Most input vectors one MVM takes (accumulator rows).

    Members
    -------
    cmd_rx, data_rx : In
        Instruction packets; DATA packets answering the tile's REQs.
    req_tx, data_tx, done_tx : Out
        REQs to memory tiles; result rows to memory tiles; DONE packets to the control tile.
    busy : Out(1)
        High while an instruction is in hand.
    flags : Out(2)
        Sticky unit flags: ``PIM_DIMS`` (1), ``PIM_RANGE`` (2).
    """

    PARAMS = (
        Param("index", int, 1, "this tile's index (description order)", 0, MAX_TILES - 1),
        Param("control", int, 0, "the control tile's index", 0, MAX_TILES - 1),
        _accel_param("flit_width"),
        _accel_param("max_packet"),
        *TILE_PARAMS[TileKind.PIM],
    )

    @classmethod
    def check_params(cls, p):
        fw = p["flit_width"]
        if fw & (fw - 1):
            raise ParamError(f"flit_width must be a power of two in [32, 256], not {fw}")
        check_placement(p)
        check_pim_params({k: p[k] for k in _UNIT_PARAMS})
        need = -(-4 * p["cols"] // (fw // 8))
        if p["max_packet"] < need:
            raise ParamError(f"max_packet must be at least {need}: a result row of cols = "
                             f"{p['cols']} int32 sums is one packet of {need} "
                             f"{fw}-bit beats, not {p['max_packet']}")

    def __init__(self, **given):
        p = self._take_params(given)
        self.unit = PimTile(**{k: p[k] for k in _UNIT_PARAMS})
        super().__init__({
            **class_ports(p["flit_width"], rx=(MsgClass.CMD, MsgClass.DATA),
                          tx=(MsgClass.REQ, MsgClass.DATA, MsgClass.DONE)),
            "busy": Out(1),
            "flags": Out(2),
        })

    @property
    def word_bytes(self) -> int:
        return self.flit_width // 8

    @property
    def acc_bits(self) -> int:
        """Bits of one accumulator sum."""
        return self.unit.acc_width + _CHAIN_BITS

    @property
    def div_cycles(self) -> int:
        """Cycles of the rescale's division of one sum."""
        return -(-self._num_bits // _DIV_BITS)

    @property
    def _num_bits(self) -> int:
        return self.acc_bits + ADC_FRAC + 2  # |acc * 2^F + gain // 2|, unsigned

    def elaborate(self, platform):
        m = Module()
        p = self._params
        m.submodules.unit = unit = self.unit
        R, C, L, ib, wbits = p["rows"], p["cols"], p["lanes"], p["input_bits"], p["weight_bits"]
        W, wb = p["flit_width"], p["flit_width"] // 8
        AW = self.acc_bits
        gain_w = ADC_FRAC + p["enob"]

        # -- the instruction register -----------------------------------------------------
        head = Signal(INSTR_HEAD, name="instr_head")
        args = Signal(_ARG_WORDS * WORD, name="instr_args")
        adc = _ADC.args(args[:_ADC.args.size])
        prog = _PROGRAM.args(args[:_PROGRAM.args.size])
        mvm = _MVM.args(args[:_MVM.args.size])
        dest = mvm.dest
        src = Signal(REGION, name="src")  # latched at decode (PROGRAM's or MVM's)
        cmd_word = Signal(range(_ARG_WORDS + 3), name="cmd_word")

        idle = Signal()
        cmd_take = Signal()
        m.d.comb += [self.cmd_rx.ready.eq(idle), self.busy.eq(~idle),
                     cmd_take.eq(self.cmd_rx.valid & self.cmd_rx.ready)]
        with m.If(cmd_take):
            word = self.cmd_rx.payload.data
            with m.If(cmd_word == 1):
                m.d.sync += head.eq(word)
            for i in range(_ARG_WORDS):
                with m.If(cmd_word == 2 + i):
                    m.d.sync += args[WORD * i:WORD * (i + 1)].eq(word)
            with m.If(self.cmd_rx.payload.last):
                m.d.sync += cmd_word.eq(0)
            with m.Elif(cmd_word != _ARG_WORDS + 2):
                m.d.sync += cmd_word.eq(cmd_word + 1)

        # -- tile state ---------------------------------------------------------------------
        gain = Signal(gain_w, init=unit.reset_gain, name="gain")  # the unit's, mirrored
        acc_m = Signal(range(p["max_m"] + 1), name="acc_m")  # rows the accumulator holds
        own_err = Signal(name="own_error")  # a refused weight, a wrapped input or sum
        clear = Signal()
        m.d.comb += unit.error_clear.eq(clear)
        unit_err = Signal()
        m.d.comb += unit_err.eq(own_err | unit.error.any())
        is_mvm = Signal(name="is_mvm")

        # -- packets out: REQ and DONE ------------------------------------------------------
        done_err = Signal(8, name="done_error")
        req_args = Signal(REQ_ARGS)
        m.d.comb += [req_args.src.eq(src), req_args.dest_tile.eq(p["index"]),
                     req_args.port.eq(Port.B), req_args.id.eq(head.id)]
        req_hdr = Signal(MSG_HEADER)
        m.d.comb += [req_hdr.cls.eq(MsgClass.REQ), req_hdr.owner.eq(p["index"]),
                     req_hdr.length.eq(REQ_ARGS.size // WORD)]
        done_hdr = Signal(MSG_HEADER)
        m.d.comb += [done_hdr.cls.eq(MsgClass.DONE), done_hdr.owner.eq(p["index"]),
                     done_hdr.length.eq(1)]
        done_word = Signal(DONE_WORD)
        m.d.comb += [done_word.id.eq(head.id), done_word.tile.eq(p["index"]),
                     done_word.error.eq(done_err)]
        req_i = Signal(range(6), name="req_word")
        done_i = Signal(name="done_word")
        cfg_i = Signal(2, name="cfg_step")

        # -- the element loader: DATA packets -> one element a cycle ------------------------
        depth = max(16, RX_BUFFER_BYTES // wb)
        m.submodules.rx_buffer = rxb = SyncFIFOBuffered(
            width=len(self.data_rx.payload.as_value()), depth=depth)
        rx = self.data_rx.signature.flip().create()  # the buffer's output, as the port
        m.d.comb += [rxb.w_data.eq(self.data_rx.payload), rxb.w_en.eq(self.data_rx.valid),
                     self.data_rx.ready.eq(rxb.w_rdy),
                     rx.valid.eq(rxb.r_rdy), rx.payload.eq(rxb.r_data), rxb.r_en.eq(rx.ready)]
        wreg = Signal(W, name="rx_word")
        wvalid = Signal(name="rx_wvalid")
        pk_hdr = Signal(range(4), name="rx_hdr")
        eb2 = Signal(name="rx_eb2")  # 2-byte elements (else 1)
        e = Signal(range(wb), name="rx_elem")  # element of the word
        j = Signal(16, name="rx_col")  # element of the row
        r = Signal(16, name="rx_row")
        hold = Signal(name="rx_hold")  # a row is complete: its consumer finishes it
        ld_all = Signal(name="rx_all")
        ld_on = Signal(name="rx_on")
        release = Signal()  # the consumer is done with the row
        elem_ready = Signal()
        w8 = wreg.word_select(e, 8).as_signed()
        w16 = wreg.word_select(e[:_log2(wb // 2)] if wb > 2 else 0, 16).as_signed()
        elem = Signal(signed(16), name="rx_value")
        m.d.comb += elem.eq(Mux(eb2, w16, w8))
        per_word_last = Mux(eb2, wb // 2 - 1, wb - 1)
        row_end = j == src.cols - 1
        elem_valid = wvalid & ~hold
        elem_take = Signal()
        m.d.comb += elem_take.eq(elem_valid & elem_ready)
        word_end = elem_take & (row_end | (e == per_word_last))
        is_hdr = pk_hdr != 3
        m.d.comb += rx.ready.eq(ld_on & ~ld_all & (is_hdr | ~wvalid | word_end))
        with m.If(elem_take):
            with m.If(row_end):
                m.d.sync += [j.eq(0), e.eq(0), wvalid.eq(0), hold.eq(1)]
            with m.Elif(e == per_word_last):
                m.d.sync += [e.eq(0), j.eq(j + 1), wvalid.eq(0)]
            with m.Else():
                m.d.sync += [e.eq(e + 1), j.eq(j + 1)]
        with m.If(release):
            m.d.sync += [hold.eq(0), r.eq(r + 1)]
            with m.If(r == src.rows - 1):
                m.d.sync += ld_all.eq(1)
        with m.If(rx.valid & rx.ready):
            with m.If(rx.payload.last):
                m.d.sync += pk_hdr.eq(0)
            with m.Elif(is_hdr):
                m.d.sync += pk_hdr.eq(pk_hdr + 1)
            with m.If(~is_hdr):
                m.d.sync += [wreg.eq(rx.payload.data), wvalid.eq(1)]

        # -- the accumulator memory -----------------------------------------------------------
        m.submodules.accmem = accmem = Memory(shape=C * AW, depth=p["max_m"], init=[])
        rd = accmem.read_port()
        wr = accmem.write_port()
        vo = Signal(range(p["max_m"] + 1), name="out_vector")  # o beats taken
        orow = Signal(range(p["max_m"] + 1), name="out_row")
        rd_addr_prev = Signal(len(rd.addr))
        wrote = Signal()
        rd_ok = Signal()
        collecting = Signal()
        out_phase = Signal()
        m.d.comb += rd.addr.eq(Mux(out_phase, orow, vo))
        m.d.sync += [rd_addr_prev.eq(rd.addr), wrote.eq(wr.en)]
        m.d.comb += rd_ok.eq((rd_addr_prev == rd.addr) & ~wrote)
        o_take = Signal()
        m.d.comb += [unit.o.ready.eq(collecting & rd_ok & (vo != src.rows)),
                     o_take.eq(unit.o.valid & unit.o.ready)]
        old = [rd.data[c * AW:(c + 1) * AW].as_signed() for c in range(C)]
        new = [Mux(mvm.acc, old[c], 0) + unit.o.payload[c] for c in range(C)]
        m.d.comb += [wr.addr.eq(vo), wr.en.eq(o_take),
                     wr.data.eq(Cat(*(v[:AW] for v in new)))]
        with m.If(o_take):
            m.d.sync += vo.eq(vo + 1)

        # -- the vector buffer ------------------------------------------------------------------
        xbuf = Signal(R * ib, name="xbuf")
        xb = Signal(range(max(2, R // L)), name="x_beat")
        m.d.comb += [unit.x.payload.as_value().eq(xbuf.word_select(xb, L * ib))]

        # -- the rescale: a restoring divider ---------------------------------------------------
        NB = self._num_bits
        steps = self.div_cycles
        oc = Signal(range(C + 1), name="out_col")
        dq = Signal(steps * _DIV_BITS, name="div_dq")  # numerator out, quotient in
        rem = Signal(gain_w + 1, name="div_rem")
        neg = Signal(name="div_neg")
        dcnt = Signal(range(steps + 1), name="div_step")
        img = Signal(32 * C, name="tx_image")
        acc_sel = Signal(signed(AW), name="out_acc")
        m.d.comb += acc_sel.eq(Mux(oc < C, rd.data.word_select(oc[:max(1, (C - 1).bit_length())]
                                                                 if C > 1 else 0, AW), 0))
        num = Signal(signed(NB + 1), name="div_num")
        m.d.comb += num.eq((acc_sel << ADC_FRAC) + (gain >> 1))
        t_rem, t_dq = rem, dq
        for _ in range(_DIV_BITS):
            t = Cat(t_dq[-1], t_rem)  # (rem << 1) | the numerator's next bit
            ge = t >= gain
            t_rem = Mux(ge, t - gain, t)[:gain_w + 1]
            t_dq = Cat(ge, t_dq[:-1])
        quo = Signal(signed(NB + 2), name="div_q")
        m.d.comb += quo.eq(Mux(neg, -(dq + (rem != 0)), dq))
        q_fits = (quo >= -(1 << 31)) & (quo < (1 << 31))

        # -- the result packet ------------------------------------------------------------------
        tx = self.data_tx
        pk_i = Signal(range(self._max_beats() + 4), name="tx_beat")
        oaddr = Signal(32, name="tx_start")
        nbytes = Signal(16)
        nbeats = Signal(16)
        m.d.comb += [nbytes.eq(dest.cols * 4), nbeats.eq((nbytes + wb - 1) >> _log2(wb))]
        hdr = Signal(MSG_HEADER, name="tx_header")
        info = Signal(DATA_INFO, name="tx_info")
        m.d.comb += [hdr.cls.eq(MsgClass.DATA), hdr.port.eq(Port.MEM),
                     hdr.ack.eq(orow == src.rows - 1),
                     hdr.unit.eq(unit_err & (orow == src.rows - 1)), hdr.owner.eq(p["index"]),
                     hdr.length.eq(nbeats), info.id.eq(head.id), info.nbytes.eq(nbytes)]
        img_w = img[:W] if 32 * C >= W else img
        m.d.comb += [tx.payload.dest.eq(dest.mem), tx.payload.last.eq(pk_i == nbeats + 2),
                     tx.payload.data.eq(Mux(pk_i == 0, hdr.as_value(),
                                            Mux(pk_i == 1, info.as_value(),
                                                Mux(pk_i == 2, oaddr, img_w))))]

        # -- the sequencer ------------------------------------------------------------------------
        state = Signal(_State, name="state")
        pad_k = Signal(range(R + 1), name="pad_row")
        zn = Signal(range(C + 1), name="zero_col")
        zk = Signal(range(R), name="zero_row")
        lim = (1 << (wbits - 1)) - 1

        def goto(st):
            m.d.sync += state.eq(st)

        def finish(code):
            m.d.sync += done_err.eq(code)
            m.d.comb += clear.eq(1)
            goto(_State.DONE)

        def wr_weight(row, col, value):
            m.d.comb += [unit.wr.payload.row.eq(row), unit.wr.payload.col.eq(col),
                         unit.wr.payload.w.eq(value)]

        def cfg_write(reg, value):
            m.d.comb += [unit.cfg.payload.reg.eq(reg), unit.cfg.payload.value.eq(value)]

        with m.If(state == _State.IDLE):
            m.d.comb += idle.eq(1)
            with m.If(cmd_take & self.cmd_rx.payload.last):
                goto(_State.DECODE)

        with m.Elif(state == _State.DECODE):
            m.d.sync += [own_err.eq(0), cfg_i.eq(0), req_i.eq(0), wvalid.eq(0), pk_hdr.eq(0),
                         e.eq(0), j.eq(0), r.eq(0), hold.eq(0), ld_all.eq(0), xbuf.eq(0),
                         xb.eq(0), vo.eq(0), orow.eq(0), is_mvm.eq(head.code == _MVM.code),
                         eb2.eq(Mux(head.code == _MVM.code, mvm.src.ebytes == 1,
                                    elem_bytes(wbits) == 2)),
                         src.eq(Mux(head.code == _MVM.code, mvm.src.as_value(),
                                    prog.src.as_value()))]
            with m.If(head.cls != TileKind.PIM):
                finish(AccelError.ILLEGAL)
            with m.Elif(head.code == _ADC.code):
                goto(_State.ADC)
            with m.Elif(head.code == _PROGRAM.code):
                goto(_State.P_CFG)
            with m.Elif(head.code == _MVM.code):
                with m.If(mvm.acc & (acc_m != mvm.src.rows)):
                    m.d.sync += self.flags.eq(self.flags | PIM_DIMS)
                    finish(AccelError.ILLEGAL)
                with m.Else():
                    goto(_State.REQ)
            with m.Else():
                finish(AccelError.ILLEGAL)

        with m.Elif(state == _State.ADC):
            # GAIN (when given), OFFSET, SIGMA, NOISE_SEED
            skip_gain = (adc.gain == 0) if p["adc_range"] == "calibrated" else Const(1)
            with m.If((cfg_i == 0) & skip_gain):
                m.d.sync += cfg_i.eq(1)
            with m.Else():
                m.d.comb += unit.cfg.valid.eq(1)
                with m.Switch(cfg_i):
                    with m.Case(0):
                        cfg_write(PimReg.GAIN, adc.gain)
                    with m.Case(1):
                        cfg_write(PimReg.OFFSET, adc.offset)
                    with m.Case(2):
                        cfg_write(PimReg.SIGMA, adc.sigma)
                    with m.Default():
                        cfg_write(PimReg.NOISE_SEED, adc.noise_seed)
                with m.If(unit.cfg.ready):
                    m.d.sync += cfg_i.eq(cfg_i + 1)
                    with m.If(cfg_i == 0):
                        m.d.sync += gain.eq(adc.gain)
                    with m.If(cfg_i == 3):
                        goto(_State.CHECK)

        with m.Elif(state == _State.P_CFG):
            m.d.comb += unit.cfg.valid.eq(1)
            with m.If(cfg_i == 0):
                cfg_write(PimReg.FAULT_RATE, prog.fault_rate)
            with m.Else():
                cfg_write(PimReg.FAULT_SEED, prog.fault_seed)
            with m.If(unit.cfg.ready):
                m.d.sync += cfg_i.eq(cfg_i + 1)
                with m.If(cfg_i == 1):
                    goto(_State.REQ)

        with m.Elif(state == _State.REQ):
            n_args = REQ_ARGS.size // WORD
            m.d.comb += [self.req_tx.valid.eq(1), self.req_tx.payload.dest.eq(src.mem),
                         self.req_tx.payload.last.eq(req_i == n_args),
                         self.req_tx.payload.data.eq(req_hdr)]
            for i in range(n_args):
                with m.If(req_i == i + 1):
                    m.d.comb += self.req_tx.payload.data.eq(
                        req_args.as_value()[WORD * i:WORD * (i + 1)])
            with m.If(self.req_tx.ready):
                m.d.sync += req_i.eq(req_i + 1)
                with m.If((req_i == n_args) & is_mvm):
                    goto(_State.M_DATA)
                with m.Elif(req_i == n_args):
                    goto(_State.P_DATA)

        with m.Elif(state == _State.P_DATA):
            m.d.comb += ld_on.eq(1)
            refused = (elem > lim) | (elem < -lim)
            wr_weight(j, r, elem)
            m.d.comb += [unit.wr.valid.eq(elem_valid & ~refused),
                         elem_ready.eq(refused | unit.wr.ready)]
            with m.If(elem_take & refused):
                m.d.sync += [own_err.eq(1), self.flags.eq(self.flags | PIM_RANGE)]
            with m.If(hold):
                m.d.sync += pad_k.eq(src.cols)
                goto(_State.P_PAD)

        with m.Elif(state == _State.P_PAD):
            m.d.comb += ld_on.eq(1)
            wr_weight(pad_k, r, 0)
            with m.If(pad_k == R):
                m.d.comb += release.eq(1)
                with m.If(r == src.rows - 1):
                    m.d.sync += [zn.eq(src.rows), zk.eq(0)]
                    goto(_State.P_ZCOL)
                with m.Else():
                    goto(_State.P_DATA)
            with m.Else():
                m.d.comb += unit.wr.valid.eq(1)
                with m.If(unit.wr.ready):
                    m.d.sync += pad_k.eq(pad_k + 1)

        with m.Elif(state == _State.P_ZCOL):
            wr_weight(zk, zn, 0)
            with m.If(zn == C):
                goto(_State.CHECK)
            with m.Else():
                m.d.comb += unit.wr.valid.eq(1)
                with m.If(unit.wr.ready):
                    m.d.sync += zk.eq(Mux(zk == R - 1, 0, zk + 1))
                    with m.If(zk == R - 1):
                        m.d.sync += zn.eq(zn + 1)

        with m.Elif(state == _State.M_DATA):
            m.d.comb += [ld_on.eq(1), collecting.eq(1), elem_ready.eq(1)]
            with m.If(elem_take):
                m.d.sync += xbuf.word_select(j[:max(1, (R - 1).bit_length())] if R > 1 else 0,
                                             ib).eq(elem[:ib])
                if ib < 16:
                    with m.If(elem != elem[:ib].as_signed()):
                        m.d.sync += [own_err.eq(1), self.flags.eq(self.flags | PIM_RANGE)]
            with m.If(hold):
                m.d.sync += xb.eq(0)
                goto(_State.M_EMIT)

        with m.Elif(state == _State.M_EMIT):
            m.d.comb += [ld_on.eq(1), collecting.eq(1), unit.x.valid.eq(1)]
            with m.If(unit.x.ready):
                m.d.sync += xb.eq(xb + 1)
                with m.If(xb == R // L - 1):
                    m.d.comb += release.eq(1)
                    m.d.sync += [xbuf.eq(0), xb.eq(0)]
                    with m.If(r == src.rows - 1):
                        goto(_State.M_WAIT)
                    with m.Else():
                        goto(_State.M_DATA)

        with m.Elif(state == _State.M_WAIT):
            m.d.comb += collecting.eq(1)
            with m.If(vo == src.rows):
                m.d.sync += acc_m.eq(src.rows)
                with m.If(mvm.out):
                    m.d.sync += [orow.eq(0), oaddr.eq(dest.addr)]
                    goto(_State.O_READ)
                with m.Else():
                    goto(_State.CHECK)

        with m.Elif(state == _State.O_READ):
            m.d.comb += out_phase.eq(1)
            m.d.sync += oc.eq(0)
            with m.If(rd_ok):
                goto(_State.O_LOAD)

        with m.Elif(state == _State.O_LOAD):
            m.d.comb += out_phase.eq(1)
            mag = Mux(num < 0, -num, num)
            m.d.sync += [dq.eq(mag), rem.eq(0), neg.eq(num < 0),
                         dcnt.eq(0)]
            goto(_State.O_DIV)

        with m.Elif(state == _State.O_DIV):
            m.d.comb += out_phase.eq(1)
            with m.If(dcnt == steps):
                m.d.sync += [img.word_select(oc[:max(1, (C - 1).bit_length())] if C > 1 else 0,
                                             32).eq(quo[:32]), oc.eq(oc + 1)]
                with m.If(~q_fits):
                    m.d.sync += [own_err.eq(1), self.flags.eq(self.flags | PIM_RANGE)]
                with m.If(oc == dest.cols - 1):
                    m.d.sync += pk_i.eq(0)
                    goto(_State.O_SEND)
                with m.Else():
                    goto(_State.O_LOAD)
            with m.Else():
                m.d.sync += [rem.eq(t_rem), dq.eq(t_dq), dcnt.eq(dcnt + 1)]

        with m.Elif(state == _State.O_SEND):
            m.d.comb += [out_phase.eq(1), tx.valid.eq(1)]
            with m.If(tx.ready):
                m.d.sync += pk_i.eq(pk_i + 1)
                if 32 * C > W:
                    with m.If(pk_i >= 3):
                        m.d.sync += img.eq(img >> W)
                with m.If(pk_i == nbeats + 2):
                    with m.If(orow == src.rows - 1):
                        m.d.comb += clear.eq(1)
                        goto(_State.IDLE)
                    with m.Else():
                        m.d.sync += [orow.eq(orow + 1),
                                     oaddr.eq(oaddr + (dest.stride << 2))]
                        goto(_State.O_READ)

        with m.Elif(state == _State.CHECK):
            finish(Mux(unit_err, AccelError.UNIT, 0))

        with m.Else():  # DONE
            m.d.comb += [self.done_tx.valid.eq(1),
                         self.done_tx.payload.dest.eq(p["control"]),
                         self.done_tx.payload.last.eq(done_i),
                         self.done_tx.payload.data.eq(Mux(done_i, done_word.as_value(),
                                                          done_hdr.as_value()))]
            with m.If(self.done_tx.ready):
                m.d.sync += done_i.eq(~done_i)
                with m.If(done_i):
                    goto(_State.IDLE)
        return m

    def _max_beats(self) -> int:
        return -(-4 * self.cols // self.word_bytes)

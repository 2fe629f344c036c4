"""The SFU tile: the row units (Softmax, Gelu, LayerNorm) and a per-channel requantizer behind
the tile socket.

The tile takes the SFU instructions of the contract
(:data:`~heterotron.hdl.contract.accel.OPCODES`, class
:attr:`~heterotron.hdl.contract.accel.TileKind.SFU`) on ``cmd_rx``, one at a time. Their
meaning is that of the golden interpreter (``sim/golden/accel.py``, ``Interpreter._table``,
``_requant``, ``_softmax``, ``_gelu``, ``_layernorm``); the control tile has checked every
field, so the tile takes the instruction as legal by its fields.

* ``TABLE(which, src)``: one REQ for the row ``src`` (``n * words`` 4-byte words), unpacked
  into the row buffer; each entry is checked as it arrives (``RQ_M``, ``LN_OUT_M``,
  ``LN_RES_M`` below 2^31, the shifts at most 63, ``LN_SIGN`` 1 or -1, ``LN_BIAS`` a signed
  64-bit value below 2^47 in magnitude, low word first). With every entry in range the
  entries are copied into the table, one a cycle (``LN_BIAS``: one per two cycles), and DONE
  carries 0; else the table is unchanged and DONE carries ``UNIT``. The tables live in the
  socket: ``RQ_*`` as ``lanes``-wide memories of ``ceil(channels / lanes)`` rows (channel
  ``c`` at row ``c // lanes``, lane ``c % lanes``), the ``LN_*`` tables one entry a row, of
  ``min(max_row, channels)`` entries (a LayerNorm row is never longer; entries past that are
  not kept). They start all zeros.
* ``REQUANT``, ``SOFTMAX``, ``GELU``, ``LAYERNORM``: row by row. For each row of ``src`` the
  tile sends a REQ for that row (one row region; ``Port.A``), and for ``REQUANT`` with ``res``
  a second REQ for the row of ``y`` (``Port.B``), unpacks the DATA packets into a row buffer
  (two banks: the next row loads while one streams), streams the row through the unit in
  beats of ``lanes`` elements (:mod:`heterotron.hdl.rowstream`) and packs the results, little
  endian two's complement in ``elem_bytes(out_bits)`` bytes (Softmax: unsigned), into DATA
  packets to ``dest.mem`` of at most ``max_packet`` beats, one or more a row; a row's last
  word writes only the row's bytes (``DATA_INFO.nbytes``). The instruction's very last packet
  has ``ack``, so the memory answers DONE for it.

  - ``REQUANT``: ``sat(round_shift((src + RQ_BIAS[c]) * RQ_M[c], RQ_E[c]) +
    round_shift(y * m_y, e_y))`` to ``out_bits`` (the bias with ``bias``, the ``y`` term with
    ``res``), ``c`` the column: :func:`~heterotron.hdl.rowstream.requant_stages` per lane,
    the datapath of :class:`~heterotron.hdl.requantizer.Requantizer`, fed from the socket's
    tables (the requantizer's own table follows the beat count modulo its depth, which does
    not fit rows shorter than ``channels``).
  - ``SOFTMAX``: the constants are checked first with the rule of
    :func:`~heterotron.hdl.contract.numerics.exp_consts_problem` (the unit is built with the
    widest ``exp_width``); refused constants write nothing and DONE carries ``UNIT``. Only
    the first ``valid`` columns of a row are requested and fed to the unit; the columns from
    ``valid`` on are written 0, and a row with ``valid = 0`` is all zeros without a unit pass.
    The unit's output width follows ``out_bits`` at run time (see :class:`_Softmax`).
  - ``GELU``: the unit takes ``b``, ``c``, ``one``, ``m``, ``e``; its output (24 bits) is
    saturated to ``out_bits``. A refused constant writes nothing (DONE ``UNIT``).
  - ``LAYERNORM``: two passes over ``src``: first the unit's table is written from
    ``LN_BIAS``, ``LN_SIGN``, ``LN_OUT_M/E`` (and its shift) and the rows go to ``dest`` at
    ``out_bits``, then the table is written again with ``LN_RES_M/E`` and the rows go to
    ``res`` at ``res_bits`` (the same core both times, so the same result as one pass with two
    requantisations). The final ack is on the second pass's last packet (``dest`` and ``res``
    are on one memory tile).

  GELU and LayerNorm inputs wider than the unit's 24 bits are taken truncated; the rows are
  still written, and the last packet's header has ``unit`` set, so the memory's DONE carries
  ``UNIT``.

Unknown instructions (not of class SFU, an unknown code, a TABLE of no table) are answered
with DONE and ``ILLEGAL``.

Known gaps (differences from the interpreter or the contract that this file cannot close):

* LayerNorm's ``shift`` above ``SFU_LN_MAX_SHIFT`` (15, the unit's field) is ILLEGAL (the
  control tile refuses it); should one arrive, the tile refuses it with ``UNIT`` and writes
  nothing. GELU constants the unit refuses (``gelu_consts_problem`` with the unit's 24-bit
  input, so ``b`` below ``-2^28`` too) write nothing and DONE carries ``UNIT``, as in the
  interpreter.
* A LayerNorm row's variance cannot pass 2^62 with 24-bit inputs and rows of at most 1024,
  so ``layernorm_core``'s refusal never happens (the LayerNorm unit has no such check).
* The Softmax unit's output width is a construction parameter; :class:`_Softmax` makes it a
  run-time value from outside the unit.

Throughput: the loader unpacks up to ``lanes`` elements of a data word a cycle (to the end of
the word, the row, or the buffer beat), so a row arrives at link rate when a word holds at
most ``lanes`` elements; the units take a beat of ``lanes`` elements a cycle; the packer
takes a beat a cycle while its buffer holds less than a word, and its words leave at link
rate in packets of up to ``max_packet`` beats (plus three header beats each). A row's REQ
round trip is hidden behind the previous row by the two banks of the row buffer, so long
rows stream at the slower of the link and ``lanes`` elements a cycle (measured: 8 rows of 64
int8 at 32-bit flits, lanes 4: about 280 cycles for REQUANT or GELU, 350 for Softmax).
LayerNorm runs its rows twice and writes its table before each pass (two cycles a channel).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, wiring
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
    SFU_GELU_IN_BITS,
    SFU_LN_IN_BITS,
    TILE_PARAMS,
    WORD,
    AccelError,
    MsgClass,
    Port,
    SfuTable,
    TileKind,
)
from heterotron.hdl.contract.numerics import EXP_MAX_WIDTH, EXP_MIN_BITS, exp_field_bits
from heterotron.hdl.contract.params import Param, ParamError, Parameterised
from heterotron.hdl.gelu import Gelu
from heterotron.hdl.layernorm import LayerNorm, LayerNormKind
from heterotron.hdl.rowstream import SfuError, delay, requant_latency, requant_stages
from heterotron.hdl.simgate import gated_pipeline
from heterotron.hdl.softmax import Softmax
from heterotron.hdl.tiles.common import check_placement, class_ports

__all__ = ["SfuTile"]

_SFU_OPS = {op.name: op for op in OPCODES if op.cls == TileKind.SFU}
_TABLE, _REQUANT, _SOFTMAX = _SFU_OPS["TABLE"], _SFU_OPS["REQUANT"], _SFU_OPS["SOFTMAX"]
_GELU, _LAYERNORM = _SFU_OPS["GELU"], _SFU_OPS["LAYERNORM"]
#: Argument words of the longest SFU instruction (the instruction register's size).
_ARG_WORDS = max(op.words for op in _SFU_OPS.values())
#: Widest LayerNorm folded bias the tables hold (signed bits).
_LN_BIAS_BITS = 48
#: The LayerNorm unit's deviation shift field (0..15).
_LN_SHIFT_BITS = 4


class _Op(enum.Enum, shape=3):
    TABLE = 0
    REQUANT = 1
    SOFTMAX = 2
    GELU = 3
    LAYERNORM = 4


class _State(enum.Enum, shape=4):
    IDLE = 0  #: ready for an instruction (``cmd_rx`` ready)
    DECODE = 1
    TB_LOAD = 2  #: TABLE: the row into the row buffer
    TB_COPY = 3  #: TABLE: the row buffer into the table
    CFG = 4  #: a unit's constants (Softmax, GELU)
    CFG_CHECK = 5  #: did the unit take them?
    LN_CFG = 6  #: LayerNorm: the unit's table for this pass
    RUN = 7  #: the rows of one pass
    DONE = 8  #: the DONE packet


class _RuntimeWidth:
    """Stands for the Softmax unit's ``out_width`` inside its elaboration: the two expressions
    the unit builds from it (``31 - out_width``, a right shift, and ``1 << out_width``, the
    saturation) become run-time values of ``sig``."""

    def __init__(self, sig: Signal):
        self.sig = sig

    def __rsub__(self, other):
        return (Const(other, 6) - self.sig).as_unsigned()[:6]

    def __rlshift__(self, other):
        return Const(other, 1) << self.sig


class _Softmax(Softmax):
    """:class:`~heterotron.hdl.softmax.Softmax` whose output width is the run-time value
    ``out_bits`` (2..16) instead of a construction parameter: the unit is built with
    ``out_width = 16`` (its port) and its output pass reads :attr:`out_width` only for the
    rounding shift and the saturation, so those follow ``out_bits`` (results are below
    ``2^out_bits``). The unit has no run-time width of its own (a change outside this file
    would give it one)."""

    def __init__(self, **given):
        super().__init__(**given)
        self.out_bits = Signal(range(17), name="softmax_out_bits")

    @property
    def out_width(self):
        return _RuntimeWidth(self.out_bits)


def _accel_param(name: str) -> Param:
    return next(q for q in ACCEL_PARAMS if q.name == name)


def _sfu_param(name: str) -> Param:
    return next(q for q in TILE_PARAMS[TileKind.SFU] if q.name == name)


def _log2(n: int) -> int:
    assert n > 0 and n & (n - 1) == 0
    return n.bit_length() - 1


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class SfuTile(Parameterised, wiring.Component):
    """The SFU units behind the tile socket (see the module documentation).

    Parameters
    ----------
    index, control : int
        This tile's index and the control tile's (description order, 0 to 31).
    flit_width : int
        Data-plane and scratchpad word bits (a power of two, 32 to 256).
    max_packet : int
        Most data beats in one packet.
    lanes, max_row, channels, variant
        The SFU tile's parameters (``TILE_PARAMS[TileKind.SFU]``): elements per cycle of every
        unit, the longest row (Softmax, LayerNorm), the entries of each per-channel table (the
        longest REQUANT row), the Softmax unit's reciprocal.

    Members
    -------
    cmd_rx : In(rx_word(32))
        Instruction packets (header, then the instruction's words); ready only when idle.
    req_tx : Out(tx_word(32))
        Row requests to memory tiles.
    data_rx : In(rx_word(flit_width))
        Row data answering the requests (``Port.A``: src, ``Port.B``: REQUANT's y).
    data_tx : Out(tx_word(flit_width))
        Result packets to memory tiles.
    done_tx : Out(tx_word(32))
        DONE packets to the control tile.
    busy : Out(1)
        High while an instruction is in hand.
    """

    PARAMS = (
        Param("index", int, 1, "this tile's index (description order)", 0, MAX_TILES - 1),
        Param("control", int, 0, "the control tile's index", 0, MAX_TILES - 1),
        _accel_param("flit_width"),
        _accel_param("max_packet"),
        *TILE_PARAMS[TileKind.SFU],
    )

    @classmethod
    def check_params(cls, p):
        """A power-of-two ``flit_width``, the control tile elsewhere, and rows the units can
        hold: the LayerNorm unit's ``max_len`` (``min(max_row, channels)`` rounded up to
        ``lanes``) at most 1024."""
        fw = p["flit_width"]
        if fw & (fw - 1):
            raise ParamError(f"flit_width must be a power of two in [32, 256], not {fw}")
        check_placement(p)
        ln = _ceil(min(p["max_row"], p["channels"]), p["lanes"]) * p["lanes"]
        if ln > 1024:
            raise ParamError(f"min(max_row, channels) = {min(p['max_row'], p['channels'])} "
                             f"rounded up to lanes = {p['lanes']} is {ln}, above the LayerNorm "
                             "unit's 1024: make max_row or channels a multiple of lanes")

    def __init__(self, **given):
        self._take_params(given)
        super().__init__({
            **class_ports(self.flit_width, rx=(MsgClass.CMD, MsgClass.DATA),
                          tx=(MsgClass.REQ, MsgClass.DATA, MsgClass.DONE)),
            "busy": Out(1),
        })

    @property
    def word_bytes(self) -> int:
        return self.flit_width // 8

    @property
    def ln_entries(self) -> int:
        """Entries of the LayerNorm tables (the longest LayerNorm row)."""
        return min(self.max_row, self.channels)

    @property
    def buffer_elems(self) -> int:
        """Elements of one row-buffer bank: the longest row of any instruction but a TABLE of
        ``LN_BIAS``, and the words of the ``LN_BIAS`` entries kept (the words past those are
        checked as they arrive, not stored)."""
        return max(self.max_row, self.channels, 2 * self.ln_entries)

    @property
    def unit_params(self) -> dict:
        L = self.lanes
        return {
            "softmax": {"lanes": L, "max_len": _ceil(self.max_row, L) * L, "in_width": 32,
                        "exp_width": EXP_MAX_WIDTH, "variant": self.variant, "out_width": 16},
            "gelu": {"lanes": L, "in_width": SFU_GELU_IN_BITS, "out_width": 24},
            "layernorm": {"lanes": L, "max_len": _ceil(self.ln_entries, L) * L,
                          "in_width": SFU_LN_IN_BITS, "bias_width": _LN_BIAS_BITS,
                          "out_width": 24},
        }

    def elaborate(self, platform):
        m = Module()
        p = self._params
        L, W, wb = self.lanes, self.flit_width, self.word_bytes
        up = self.unit_params
        m.submodules.softmax = smx = _Softmax(**up["softmax"])
        m.submodules.gelu = gelu = Gelu(**up["gelu"])
        m.submodules.layernorm = ln = LayerNorm(**up["layernorm"])
        units = {_Op.SOFTMAX: smx, _Op.GELU: gelu, _Op.LAYERNORM: ln}

        # -- the instruction register -----------------------------------------------------
        head = Signal(INSTR_HEAD, name="instr_head")
        args = Signal(_ARG_WORDS * WORD, name="instr_args")
        a_tb = _TABLE.args(args[:_TABLE.args.size])
        a_rq = _REQUANT.args(args[:_REQUANT.args.size])
        a_sm = _SOFTMAX.args(args[:_SOFTMAX.args.size])
        a_ge = _GELU.args(args[:_GELU.args.size])
        a_ln = _LAYERNORM.args(args[:_LAYERNORM.args.size])
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

        # -- what the instruction in hand runs (set in DECODE, per pass) --------------------
        op = Signal(_Op, name="op")
        src = Signal(REGION, name="src")  # the rows read (Port.A)
        yreg = Signal(REGION, name="y")  # REQUANT's y (Port.B)
        dst = Signal(REGION, name="dest")  # the rows written in this pass
        use_y = Signal(name="use_y")
        use_bias = Signal(name="use_bias")
        feed = Signal(16, name="feed")  # elements of a row that go to the unit
        obits = Signal(6, name="out_bits")
        is_signed_out = Signal(name="signed_out")
        ln_pass = Signal(name="ln_pass")  # LayerNorm: 0 dest, 1 res
        last_pass = Signal(name="last_pass")
        which = Signal(4, name="table_which")
        range_err = Signal(name="range_err")  # an input was truncated (UNIT, rows written)
        start_pass = Signal()  # request: the next cycle starts a pass
        pass_start = Signal(name="pass_start")  # one cycle: counters of the row engine reset
        pass_end = Signal()  # the pass's last packet has left
        clear = Signal()  # the instruction ends
        for u in units.values():
            m.d.comb += u.error_clear.eq(clear)
        m.d.sync += pass_start.eq(start_pass)
        m.d.comb += smx.out_bits.eq(Mux(obits > 16, 16, obits))

        # -- DONE ----------------------------------------------------------------------------
        done_err = Signal(8, name="done_error")
        done_i = Signal(name="done_word")
        done_hdr = Signal(MSG_HEADER)
        m.d.comb += [done_hdr.cls.eq(MsgClass.DONE), done_hdr.owner.eq(p["index"]),
                     done_hdr.length.eq(1)]
        done_word = Signal(DONE_WORD)
        m.d.comb += [done_word.id.eq(head.id), done_word.tile.eq(p["index"]),
                     done_word.error.eq(done_err)]

        state = Signal(_State, name="state")

        def goto(st):
            m.d.sync += state.eq(st)

        def finish(code):
            m.d.sync += done_err.eq(code)
            m.d.comb += clear.eq(1)
            goto(_State.DONE)

        # -- the socket's tables -------------------------------------------------------------
        groups = _ceil(p["channels"], L)
        rq_depth = max(groups, 2)
        ln_depth = max(self.ln_entries, 2)
        rq_tabs = {
            "bias": Memory(shape=data.ArrayLayout(signed(32), L), depth=rq_depth, init=[]),
            "m": Memory(shape=data.ArrayLayout(unsigned(31), L), depth=rq_depth, init=[]),
            "e": Memory(shape=data.ArrayLayout(unsigned(6), L), depth=rq_depth, init=[]),
        }
        ln_tabs = {
            "bias": Memory(shape=signed(_LN_BIAS_BITS), depth=ln_depth, init=[]),
            "neg": Memory(shape=unsigned(1), depth=ln_depth, init=[]),
            "out_m": Memory(shape=unsigned(31), depth=ln_depth, init=[]),
            "out_e": Memory(shape=unsigned(6), depth=ln_depth, init=[]),
            "res_m": Memory(shape=unsigned(31), depth=ln_depth, init=[]),
            "res_e": Memory(shape=unsigned(6), depth=ln_depth, init=[]),
        }
        for name, mem in rq_tabs.items():
            m.submodules[f"rq_{name}"] = mem
        for name, mem in ln_tabs.items():
            m.submodules[f"ln_{name}"] = mem
        rq_wr = {k: v.write_port(granularity=1) for k, v in rq_tabs.items()}
        rq_rd = {k: v.read_port() for k, v in rq_tabs.items()}
        ln_wr = {k: v.write_port() for k, v in ln_tabs.items()}
        ln_rd = {k: v.read_port() for k, v in ln_tabs.items()}

        # -- the row buffers (two banks each) ------------------------------------------------
        zbeats = _ceil(self.buffer_elems, L)
        ybeats = _ceil(p["channels"], L)
        m.submodules.zbuf = zbuf = Memory(shape=data.ArrayLayout(signed(32), L),
                                          depth=2 * zbeats, init=[])
        m.submodules.ybuf = ybuf = Memory(shape=data.ArrayLayout(signed(32), L),
                                          depth=2 * ybeats, init=[])
        z_wr, y_wr = zbuf.write_port(granularity=1), ybuf.write_port(granularity=1)
        z_rd, y_rd = zbuf.read_port(), ybuf.read_port()
        full = Signal(2, name="bank_full")  # a bank holds a loaded row not yet fed
        set_full = Signal(2)
        clr_full = Signal(2)
        m.d.sync += full.eq((full | set_full) & ~clr_full)
        with m.If(pass_start | clear):
            m.d.sync += full.eq(0)

        # ======================================================================================
        # Loader: a REQ per row (and one for y), then the DATA packets unpacked into a bank.
        # ======================================================================================
        ld_on = Signal(name="ld_on")  # the loader runs (TB_LOAD, RUN)
        ld_r = Signal(16, name="ld_row")
        ld_bank = Signal(name="ld_bank")
        ld_addr = Signal(32, name="ld_addr_a")
        ld_yaddr = Signal(32, name="ld_addr_b")
        ld_phase = Signal(2, name="ld_phase")  # 0: REQ A, 1: REQ B, 2: wait for the data
        req_i = Signal(range(7), name="req_word")
        cnt_a = Signal(16, name="rx_count_a")  # elements of the row received
        cnt_b = Signal(16, name="rx_count_b")
        need_b = Signal(16)
        m.d.comb += need_b.eq(Mux(use_y, yreg.cols, 0))
        row_in = Signal()  # the row in the bank is complete
        m.d.comb += row_in.eq((cnt_a == feed) & (cnt_b == need_b))
        ld_done = Signal(name="ld_done", init=1)  # every row of the pass loaded
        stride_a = Signal(32)
        stride_b = Signal(32)
        m.d.comb += [stride_a.eq(src.stride << src.ebytes), stride_b.eq(yreg.stride << yreg.ebytes)]

        req_args = Signal(REQ_ARGS)
        req_port_b = Signal()
        m.d.comb += [req_port_b.eq(ld_phase == 1),
                     req_args.dest_tile.eq(p["index"]), req_args.id.eq(head.id),
                     req_args.port.eq(Mux(req_port_b, Port.B, Port.A))]
        req_region = Signal(REGION, name="req_region")
        with m.If(req_port_b):
            m.d.comb += [req_region.eq(yreg), req_region.addr.eq(ld_yaddr),
                         req_region.rows.eq(1)]
        with m.Else():
            m.d.comb += [req_region.eq(src), req_region.addr.eq(ld_addr),
                         req_region.rows.eq(1), req_region.cols.eq(feed)]
        m.d.comb += [req_args.src.eq(req_region), req_args.ack.eq(0), req_args.rsv.eq(0),
                     req_args.dest_addr.eq(0)]
        req_hdr = Signal(MSG_HEADER)
        m.d.comb += [req_hdr.cls.eq(MsgClass.REQ), req_hdr.owner.eq(p["index"]),
                     req_hdr.length.eq(REQ_ARGS.size // WORD)]
        n_args = REQ_ARGS.size // WORD
        m.d.comb += [self.req_tx.payload.dest.eq(req_args.src.mem),
                     self.req_tx.payload.last.eq(req_i == n_args),
                     self.req_tx.payload.data.eq(req_hdr)]
        for i in range(n_args):
            with m.If(req_i == i + 1):
                m.d.comb += self.req_tx.payload.data.eq(
                    req_args.as_value()[WORD * i:WORD * (i + 1)])

        with m.If(pass_start):
            m.d.sync += [ld_r.eq(0), ld_bank.eq(0), ld_addr.eq(src.addr), ld_yaddr.eq(yreg.addr),
                         ld_phase.eq(0), req_i.eq(0), cnt_a.eq(0), cnt_b.eq(0),
                         ld_done.eq((src.rows == 0) | (feed == 0))]
        with m.Elif(ld_on & ~ld_done):
            with m.If(ld_phase != 2):
                with m.If(~full.bit_select(ld_bank, 1) & ~((ld_phase == 0) & (feed == 0))):
                    m.d.comb += self.req_tx.valid.eq(1)
                    with m.If(self.req_tx.ready):
                        m.d.sync += req_i.eq(req_i + 1)
                        with m.If(req_i == n_args):
                            m.d.sync += [req_i.eq(0),
                                         ld_phase.eq(Mux((ld_phase == 0) & use_y, 1, 2))]
            with m.Elif(row_in):
                m.d.comb += set_full.eq(Mux(ld_bank, 2, 1))
                m.d.sync += [cnt_a.eq(0), cnt_b.eq(0), ld_r.eq(ld_r + 1), ld_bank.eq(~ld_bank),
                             ld_addr.eq(ld_addr + stride_a), ld_yaddr.eq(ld_yaddr + stride_b),
                             ld_phase.eq(0)]
                with m.If(ld_r == src.rows - 1):
                    m.d.sync += ld_done.eq(1)

        # The unpacker: a word register, up to lanes elements a cycle into the bank.
        rx = self.data_rx
        pk_hdr = Signal(range(4), name="rx_hdr")  # header beats of this packet seen (3: data)
        pk_port_b = Signal(name="rx_port_b")
        wreg = Signal(W, name="rx_word")
        wvalid = Signal(name="rx_wvalid")
        widx = Signal(range(wb + 1), name="rx_elem")
        w_b = Signal(name="rx_word_b")  # the word is y's
        code = Mux(w_b, yreg.ebytes, src.ebytes)
        per_word = Signal(range(wb + 1))
        m.d.comb += per_word.eq(wb >> code)
        def element(index):
            return Mux(code == 0, wreg.word_select(index, 8).as_signed(),
                       Mux(code == 1, wreg.word_select(index, 16).as_signed(),
                           wreg.word_select(index, 32).as_signed()))
        elem = Signal(signed(32), name="rx_value")  # the word's next element
        m.d.comb += elem.eq(element(widx))
        cnt = Mux(w_b, cnt_b, cnt_a)
        need = Mux(w_b, need_b, feed)
        wr_beat_a = Signal(range(2 * zbeats + 2), name="rx_beat_a")  # (a TABLE row: 2x)
        wr_lane_a = Signal(range(max(L, 2)), name="rx_lane_a")
        wr_beat_b = Signal(range(ybeats + 1), name="rx_beat_b")
        wr_lane_b = Signal(range(max(L, 2)), name="rx_lane_b")
        wr_lane = Mux(w_b, wr_lane_b, wr_lane_a)
        # Elements taken this cycle: to the end of the word, the row or the bank's beat (a
        # TABLE's one at a time, for its checks).
        k = Signal(range(L + 1), name="rx_take")
        k1 = Signal(range(L + 1))
        k2 = Signal(range(L + 1))
        w_left = Signal(range(wb + 1))
        r_left = Signal(16)
        m.d.comb += [w_left.eq(per_word - widx), r_left.eq(need - cnt),
                     k1.eq(L - wr_lane), k2.eq(Mux(w_left < k1, w_left, k1)),
                     k.eq(Mux(op == _Op.TABLE, 1, Mux(r_left < k2, r_left, k2)))]
        use_elem = Signal()
        m.d.comb += use_elem.eq(wvalid & (cnt != need))
        word_end = Signal()
        m.d.comb += word_end.eq(wvalid & ((cnt == need)
                                          | (use_elem & ((k == w_left) | (k == r_left)))))
        is_hdr = pk_hdr != 3
        m.d.comb += rx.ready.eq(ld_on & (is_hdr | ~wvalid | word_end))
        bank_a = Mux(ld_bank, zbeats, 0)
        bank_b = Mux(ld_bank, ybeats, 0)
        m.d.comb += [z_wr.addr.eq(bank_a + wr_beat_a), y_wr.addr.eq(bank_b + wr_beat_b)]
        wide_in = []
        for j in range(L):
            off = Signal(range(2 * wb + L), name=f"rx_off{j}")
            m.d.comb += off.eq(widx + j - wr_lane)
            ej = Signal(signed(32), name=f"rx_lane{j}")
            m.d.comb += ej.eq(element(off))
            en = Signal(name=f"rx_en{j}")
            at_or_past = (j >= wr_lane) if j < L - 1 else 1  # (a lane is at most L - 1)
            m.d.comb += en.eq(use_elem & at_or_past & (j < wr_lane + k))
            m.d.comb += [z_wr.data[j].eq(ej), y_wr.data[j].eq(ej),
                         z_wr.en[j].eq(en & ~w_b & (wr_beat_a < zbeats)),
                         y_wr.en[j].eq(en & w_b)]
            lim = 1 << (SFU_LN_IN_BITS - 1)
            wide_in.append(en & ~w_b & ((ej < -lim) | (ej >= lim)))
        assert SFU_LN_IN_BITS == SFU_GELU_IN_BITS
        with m.If(((op == _Op.GELU) | (op == _Op.LAYERNORM)) & Cat(*wide_in).any()):
            m.d.sync += range_err.eq(1)
        with m.If(word_end):
            m.d.sync += wvalid.eq(0)
        with m.Elif(wvalid):
            m.d.sync += widx.eq(widx + k)
        with m.If(rx.valid & rx.ready):
            with m.If(rx.payload.last):
                m.d.sync += pk_hdr.eq(0)
            with m.Elif(is_hdr):
                m.d.sync += pk_hdr.eq(pk_hdr + 1)
            with m.If(pk_hdr == 0):
                m.d.sync += pk_port_b.eq(MSG_HEADER(rx.payload.data[:32]).port == Port.B)
            with m.If(~is_hdr):
                m.d.sync += [wreg.eq(rx.payload.data), wvalid.eq(1), widx.eq(0),
                             w_b.eq(pk_port_b)]

        # the element's checks: GELU and LayerNorm inputs wider than 24 bits, TABLE entries
        tb_bad = Signal(name="table_bad")
        lo_nz = Signal(name="table_lo_nonzero")  # LN_BIAS: the entry's low word is not 0
        with m.If(use_elem):
            with m.If(w_b):
                m.d.sync += cnt_b.eq(cnt_b + k)
                with m.If(wr_lane_b + k == L):
                    m.d.sync += [wr_lane_b.eq(0), wr_beat_b.eq(wr_beat_b + 1)]
                with m.Else():
                    m.d.sync += wr_lane_b.eq(wr_lane_b + k)
            with m.Else():
                m.d.sync += cnt_a.eq(cnt_a + k)
                with m.If(wr_lane_a + k == L):
                    m.d.sync += [wr_lane_a.eq(0), wr_beat_a.eq(wr_beat_a + 1)]
                with m.Else():
                    m.d.sync += wr_lane_a.eq(wr_lane_a + k)
                u = elem.as_unsigned()
                bad = Signal(name="table_entry_bad")
                is_m = (which == SfuTable.RQ_M) | (which == SfuTable.LN_OUT_M) | (
                    which == SfuTable.LN_RES_M)
                is_e = (which == SfuTable.RQ_E) | (which == SfuTable.LN_OUT_E) | (
                    which == SfuTable.LN_RES_E)
                with m.If(is_m):
                    m.d.comb += bad.eq(u[31])
                with m.Elif(is_e):
                    m.d.comb += bad.eq(u > 63)
                with m.Elif(which == SfuTable.LN_SIGN):
                    m.d.comb += bad.eq((u != 1) & (u != 0xFFFFFFFF))
                with m.Elif(which == SfuTable.LN_BIAS):
                    # the high word: |hi * 2^32 + lo| < 2^47
                    m.d.comb += bad.eq(cnt_a[0] & ((elem >= (1 << 15)) | (elem < -(1 << 15))
                                                   | ((elem == -(1 << 15)) & ~lo_nz)))
                    m.d.sync += lo_nz.eq(u != 0)
                with m.If((op == _Op.TABLE) & bad):
                    m.d.sync += tb_bad.eq(1)
        # a new row starts at the bank's first beat
        with m.If(pass_start | (ld_on & ~ld_done & (ld_phase == 2) & row_in)):
            m.d.sync += [wr_beat_a.eq(0), wr_lane_a.eq(0), wr_beat_b.eq(0), wr_lane_b.eq(0)]

        # ======================================================================================
        # Feeder: the loaded rows, a beat of lanes elements a cycle, into the unit.
        # ======================================================================================
        fd_on = Signal(name="fd_on")
        fd_r = Signal(16, name="fd_row")
        fd_bank = Signal(name="fd_bank")
        fd_beat = Signal(range(zbeats + 1), name="fd_beat")
        fd_left = Signal(16, name="fd_left")  # elements of the row not yet issued
        fd_active = Signal(name="fd_active")
        fd_done = Signal(name="fd_done", init=1)
        f_valid = Signal(name="f_valid")
        f_n = Signal(range(max(L, 2)), name="f_n")
        f_last = Signal(name="f_last")
        f_ready = Signal()
        f_adv = Signal()
        m.d.comb += f_adv.eq(~f_valid | f_ready)
        issue = Signal()
        m.d.comb += issue.eq(fd_on & fd_active & f_adv)
        z_base = Mux(fd_bank, zbeats, 0)
        y_base = Mux(fd_bank, ybeats, 0)
        m.d.comb += [z_rd.addr.eq(z_base + fd_beat), y_rd.addr.eq(y_base + fd_beat),
                     z_rd.en.eq(f_adv), y_rd.en.eq(f_adv)]
        for rd in rq_rd.values():
            m.d.comb += [rd.addr.eq(fd_beat), rd.en.eq(f_adv)]
        with m.If(f_adv):
            m.d.sync += f_valid.eq(issue)
        with m.If(issue):
            last_beat = fd_left <= L
            m.d.sync += [f_n.eq(Mux(last_beat, fd_left - 1, L - 1)), f_last.eq(last_beat),
                         fd_left.eq(fd_left - L), fd_beat.eq(fd_beat + 1)]
            with m.If(last_beat):
                m.d.comb += clr_full.eq(Mux(fd_bank, 2, 1))
                m.d.sync += [fd_active.eq(0), fd_bank.eq(~fd_bank), fd_r.eq(fd_r + 1)]
                with m.If(fd_r == src.rows - 1):
                    m.d.sync += fd_done.eq(1)
        with m.If(pass_start):
            m.d.sync += [fd_r.eq(0), fd_bank.eq(0), fd_active.eq(0), f_valid.eq(0),
                         fd_done.eq((src.rows == 0) | (feed == 0))]
        with m.Elif(fd_on & ~fd_done & (~fd_active | (issue & (fd_left <= L)))
                    & (full & Mux(fd_bank ^ fd_active, 2, 1)).any()):
            # the next row (its bank is the other one when the current row ends now)
            m.d.sync += [fd_active.eq(1), fd_beat.eq(0), fd_left.eq(feed)]

        # the feeder's beat into the units
        f_data = [z_rd.data[j] for j in range(L)]
        for kind, u in units.items():
            sel = op == kind
            m.d.comb += [u.i.valid.eq(f_valid & sel), u.i.payload.n.eq(f_n),
                         u.i.payload.last.eq(f_last)]
            for j in range(L):
                m.d.comb += u.i.payload.data[j].eq(f_data[j])

        # -- the requantizer (REQUANT): requant_stages per lane, tables read with the beat --
        rq_valid = Signal(name="rq_valid")
        rq_ready = Signal()
        rq_adv = Signal()
        m.d.comb += rq_adv.eq(~rq_valid | rq_ready)
        my = Signal(unsigned(31))
        ey = Signal(range(64))
        m.d.comb += [my.eq(Mux(use_y, a_rq.m_y[:31], 0)), ey.eq(a_rq.e_y[:6])]
        rq_out = []
        rq_tag = Signal(name="rq_in_valid")
        m.d.comb += rq_tag.eq(f_valid & (op == _Op.REQUANT))
        stages = requant_latency((signed(33), Value.cast(rq_rd["m"].data[0]).shape()),
                                 (Value.cast(y_rd.data[0]).shape(), my.shape()))
        # Its stages hold still once the last beat is out (heterotron.hdl.simgate).
        rm, rq_en = gated_pipeline(m, platform, rq_adv, rq_tag, stages + 1, "requant")
        for j in range(L):
            z = Signal(signed(33), name=f"rq_z{j}")
            m.d.comb += z.eq(f_data[j] + Mux(use_bias, rq_rd["bias"].data[j], 0))
            terms = [(z, rq_rd["m"].data[j], rq_rd["e"].data[j]),
                     (y_rd.data[j], my, ey)]
            out, got = requant_stages(rm, rq_en, terms, 32, f"rq{j}")
            assert got == stages
            rq_out.append(out)
        m.d.comb += rq_valid.eq(delay(rm, rq_en, rq_tag, stages, "rq_valid"))

        m.d.comb += f_ready.eq(rq_adv)
        for kind, u in units.items():
            with m.If(op == kind):
                m.d.comb += f_ready.eq(u.i.ready)

        # -- the unit's output beat (the one op's) ------------------------------------------
        o_valid = Signal(name="o_valid")
        o_ready = Signal(name="o_ready")
        o_data = [Signal(signed(33), name=f"o_data{j}") for j in range(L)]
        m.d.comb += [o_valid.eq(rq_valid), rq_ready.eq(o_ready & (op == _Op.REQUANT))]
        m.d.comb += [o_data[j].eq(rq_out[j]) for j in range(L)]
        for kind, u in units.items():
            m.d.comb += u.o.ready.eq(o_ready & (op == kind))
            with m.If(op == kind):
                m.d.comb += [o_valid.eq(u.o.valid)]
                m.d.comb += [o_data[j].eq(u.o.payload.data[j]) for j in range(L)]

        # ======================================================================================
        # Packer: results (then a Softmax row's masked zeros) -> words of the dest row.
        # ======================================================================================
        g_on = Signal(name="g_on")
        g_r = Signal(16, name="g_row")
        g_uleft = Signal(16, name="g_unit_left")
        g_zleft = Signal(16, name="g_zero_left")
        g_flush = Signal(name="g_flush")
        g_done = Signal(name="g_done", init=1)
        gbits = 8 * (wb + 4 * L)
        gbuf = Signal(gbits, name="g_buf")
        gfill = Signal(range(wb + 4 * L + 1), name="g_fill")
        depth = max(2, min(p["max_packet"], _ceil(4 * max(p["max_row"], p["channels"]), wb)) + 2)
        m.submodules.words = wfifo = SyncFIFOBuffered(width=W, depth=depth)
        ocode = dst.ebytes
        hi = Signal(signed(34), name="sat_hi")
        lo = Signal(signed(34), name="sat_lo")
        m.d.comb += [hi.eq(((Const(1, 34) << obits) >> 1)[:34] - 1), lo.eq(-(hi + 1))]
        in_zero = g_uleft == 0
        nel = Signal(range(L + 1), name="g_nel")
        left = Mux(in_zero, g_zleft, g_uleft)
        m.d.comb += nel.eq(Mux(left < L, left, L))
        lanes_v = []
        for j in range(L):
            v = Signal(signed(33), name=f"g_lane{j}")
            sat = Mux(is_signed_out & (o_data[j] > hi), hi,
                      Mux(is_signed_out & (o_data[j] < lo), lo, o_data[j]))
            m.d.comb += v.eq(Mux(in_zero | (j >= nel), 0, sat))
            lanes_v.append(v)
        img = Signal(8 * 4 * L, name="g_image")
        m.d.comb += img.eq(Mux(ocode == 0, Cat(*(v[:8] for v in lanes_v)),
                               Mux(ocode == 1, Cat(*(v[:16] for v in lanes_v)),
                                   Cat(*(v[:32] for v in lanes_v)))))
        nbytes = Signal(range(4 * L + 1))
        m.d.comb += nbytes.eq(nel << ocode)
        emit_c = (gfill >= wb) | (g_flush & (gfill != 0))
        emit = Signal()
        m.d.comb += [emit.eq(emit_c & wfifo.w_rdy), wfifo.w_en.eq(emit), wfifo.w_data.eq(gbuf[:W])]
        fill1 = Signal.like(gfill)
        buf1 = Signal.like(gbuf)
        m.d.comb += [fill1.eq(Mux(emit, Mux(gfill >= wb, gfill - wb, 0), gfill)),
                     buf1.eq(Mux(emit, gbuf >> W, gbuf))]
        g_row_on = g_on & ~g_done & ~g_flush
        src_valid = Mux(in_zero, g_zleft != 0, o_valid)
        take = Signal()
        m.d.comb += [take.eq(g_row_on & (fill1 < wb) & src_valid),
                     o_ready.eq(g_row_on & (fill1 < wb) & ~in_zero)]
        m.d.sync += [gbuf.eq(buf1), gfill.eq(fill1)]
        with m.If(take):
            m.d.sync += [gbuf.eq(buf1 | (img << (fill1 << 3))), gfill.eq(fill1 + nbytes)]
            with m.If(in_zero):
                m.d.sync += g_zleft.eq(g_zleft - nel)
                with m.If(g_zleft == nel):
                    m.d.sync += g_flush.eq(1)
            with m.Else():
                m.d.sync += g_uleft.eq(g_uleft - nel)
                with m.If((g_uleft == nel) & (g_zleft == 0)):
                    m.d.sync += g_flush.eq(1)
        with m.If(g_flush & (fill1 == 0)):
            m.d.sync += [g_flush.eq(0), g_r.eq(g_r + 1), g_uleft.eq(feed),
                         g_zleft.eq(src.cols - feed)]
            with m.If(g_r == src.rows - 1):
                m.d.sync += g_done.eq(1)
        with m.If(pass_start):
            m.d.sync += [g_r.eq(0), g_flush.eq(0), g_done.eq(src.rows == 0), gfill.eq(0),
                         g_uleft.eq(feed), g_zleft.eq(src.cols - feed)]

        # ======================================================================================
        # Packetiser: the words of each dest row in DATA packets of at most max_packet beats.
        # ======================================================================================
        tx = self.data_tx
        mp = p["max_packet"]
        p_on = Signal(name="p_on")
        p_r = Signal(16, name="p_row")
        p_w = Signal(16, name="p_word")  # words of the row sent
        p_base = Signal(32, name="p_row_addr")
        p_i = Signal(range(mp + 4), name="tx_beat")
        p_busy = Signal(name="tx_busy")
        p_beats = Signal(range(mp + 1), name="tx_beats")
        p_nbytes = Signal(16, name="tx_nbytes")
        p_addr = Signal(32, name="tx_addr")
        p_ack = Signal(name="tx_ack")
        p_all = Signal(name="tx_all", init=1)  # every row sent
        rbytes = Signal(18)
        rwords = Signal(16)
        m.d.comb += [rbytes.eq(src.cols << ocode), rwords.eq((rbytes + wb - 1) >> _log2(wb))]
        rem = Signal(16)
        m.d.comb += rem.eq(rwords - p_w)
        beats = Signal(range(mp + 1))
        m.d.comb += beats.eq(Mux(rem > mp, mp, rem))
        row_last_pk = rem <= mp
        start_pk = Signal()
        m.d.comb += start_pk.eq(p_on & ~p_all & ~p_busy & (wfifo.level >= beats))
        with m.If(start_pk):
            nb_full = beats << _log2(wb)
            nb_left = rbytes - (p_w << _log2(wb))
            m.d.sync += [p_busy.eq(1), p_i.eq(0), p_beats.eq(beats),
                         p_nbytes.eq(Mux(nb_full < nb_left, nb_full, nb_left)),
                         p_addr.eq(p_base + (p_w << _log2(wb))),
                         p_ack.eq(last_pass & row_last_pk & (p_r == src.rows - 1))]
            with m.If(row_last_pk):
                m.d.sync += [p_w.eq(0), p_r.eq(p_r + 1),
                             p_base.eq(p_base + (dst.stride << ocode))]
                with m.If(p_r == src.rows - 1):
                    m.d.sync += p_all.eq(1)
            with m.Else():
                m.d.sync += p_w.eq(p_w + beats)
        hdr = Signal(MSG_HEADER, name="tx_header")
        info = Signal(DATA_INFO, name="tx_info")
        m.d.comb += [hdr.cls.eq(MsgClass.DATA), hdr.port.eq(Port.MEM), hdr.ack.eq(p_ack),
                     hdr.unit.eq(p_ack & range_err), hdr.owner.eq(p["index"]),
                     hdr.length.eq(p_beats),
                     info.id.eq(head.id), info.nbytes.eq(p_nbytes)]
        final = p_i == p_beats + 2
        m.d.comb += [tx.valid.eq(p_busy & ((p_i < 3) | wfifo.r_rdy)),
                     tx.payload.dest.eq(dst.mem), tx.payload.last.eq(final),
                     tx.payload.data.eq(Mux(p_i == 0, hdr.as_value(),
                                            Mux(p_i == 1, info.as_value(),
                                                Mux(p_i == 2, p_addr, wfifo.r_data)))),
                     wfifo.r_en.eq(p_busy & (p_i >= 3) & tx.ready)]
        with m.If(tx.valid & tx.ready):
            m.d.sync += p_i.eq(p_i + 1)
            with m.If(final):
                m.d.sync += p_busy.eq(0)
                with m.If(p_all):
                    m.d.comb += pass_end.eq(1)
        with m.If(pass_start):
            m.d.sync += [p_r.eq(0), p_w.eq(0), p_base.eq(dst.addr), p_busy.eq(0),
                         p_all.eq(src.rows == 0)]

        run = state == _State.RUN
        m.d.comb += [ld_on.eq(run | (state == _State.TB_LOAD)), fd_on.eq(run), g_on.eq(run),
                     p_on.eq(run)]

        # ======================================================================================
        # The instruction's sequence.
        # ======================================================================================
        # TABLE copy: the row buffer's elements -> the table (bank 0)
        tc_j = Signal(16, name="tc_elem")  # element issued
        tc_beat = Signal(range(zbeats + 1), name="tc_beat")
        tc_lane = Signal(range(max(L, 2)), name="tc_lane")
        tc_lane_d = Signal(range(max(L, 2)), name="tc_lane_d")
        tc_v = Signal(name="tc_valid")  # an element read last cycle
        tc_j_d = Signal(16, name="tc_elem_d")
        tc_e = Signal(16, name="tc_entry")  # the entry the element belongs to
        tc_grp = Signal(range(rq_depth + 1), name="tc_group")
        tc_elane = Signal(range(max(L, 2)), name="tc_entry_lane")
        tc_lo = Signal(32, name="tc_low")
        tb_cols = src.cols

        # LayerNorm configuration: SHIFT, then one ENTRY per channel (read, then write)
        lc_c = Signal(16, name="lc_chan")
        lc_grp = Signal(range(max(ln.max_len // L, 2) + 1), name="lc_group")
        lc_lane = Signal(range(max(L, 2)), name="lc_lane")
        lc_phase = Signal(2, name="lc_phase")  # 0: shift, 1: read, 2: write

        with m.If(state == _State.IDLE):
            m.d.comb += idle.eq(1)
            with m.If(cmd_take & self.cmd_rx.payload.last):
                goto(_State.DECODE)

        with m.Elif(state == _State.DECODE):
            m.d.sync += [range_err.eq(0), tb_bad.eq(0), lo_nz.eq(0), ln_pass.eq(0),
                         last_pass.eq(1), use_y.eq(0), use_bias.eq(0), is_signed_out.eq(1)]
            with m.If(head.cls != TileKind.SFU):
                finish(AccelError.ILLEGAL)
            with m.Elif(head.code == _TABLE.code):
                with m.If(a_tb.which >= len(SfuTable)):
                    finish(AccelError.ILLEGAL)
                with m.Else():
                    m.d.sync += [op.eq(_Op.TABLE), which.eq(a_tb.which), src.eq(a_tb.src),
                                 src.rows.eq(1), feed.eq(a_tb.src.cols), tc_j.eq(0),
                                 tc_beat.eq(0), tc_lane.eq(0), tc_v.eq(0), tc_e.eq(0),
                                 tc_grp.eq(0), tc_elane.eq(0)]
                    goto(_State.TB_LOAD)
            with m.Elif(head.code == _REQUANT.code):
                m.d.sync += [op.eq(_Op.REQUANT), src.eq(a_rq.src), yreg.eq(a_rq.y),
                             dst.eq(a_rq.dest), use_y.eq(a_rq.res), use_bias.eq(a_rq.bias),
                             feed.eq(a_rq.src.cols), obits.eq(a_rq.out_bits)]
                goto(_State.RUN)
            with m.Elif(head.code == _SOFTMAX.code):
                m.d.sync += [op.eq(_Op.SOFTMAX), src.eq(a_sm.src), dst.eq(a_sm.dest),
                             feed.eq(a_sm.valid), obits.eq(a_sm.out_bits),
                             is_signed_out.eq(0)]
                goto(_State.CFG)
            with m.Elif(head.code == _GELU.code):
                m.d.sync += [op.eq(_Op.GELU), src.eq(a_ge.src), dst.eq(a_ge.dest),
                             feed.eq(a_ge.src.cols), obits.eq(a_ge.out_bits)]
                goto(_State.CFG)
            with m.Elif(head.code == _LAYERNORM.code):
                m.d.sync += [op.eq(_Op.LAYERNORM), src.eq(a_ln.src), dst.eq(a_ln.dest),
                             feed.eq(a_ln.src.cols), obits.eq(a_ln.out_bits),
                             last_pass.eq(0), lc_phase.eq(0)]
                with m.If(a_ln.shift >= 1 << _LN_SHIFT_BITS):  # the unit has no such shift
                    finish(AccelError.UNIT)
                with m.Else():
                    goto(_State.LN_CFG)
            with m.Else():
                finish(AccelError.ILLEGAL)

        with m.Elif(state == _State.TB_LOAD):
            with m.If(ld_done & ~pass_start):
                with m.If(tb_bad):
                    finish(AccelError.UNIT)
                with m.Else():
                    goto(_State.TB_COPY)

        with m.Elif(state == _State.TB_COPY):
            # issue element tc_j's read; write the element read last cycle
            issue_c = tc_j != tb_cols
            m.d.comb += [z_rd.addr.eq(tc_beat), z_rd.en.eq(1)]
            m.d.sync += [tc_v.eq(issue_c), tc_lane_d.eq(tc_lane), tc_j_d.eq(tc_j)]
            with m.If(issue_c):
                m.d.sync += tc_j.eq(tc_j + 1)
                with m.If(tc_lane == L - 1):
                    m.d.sync += [tc_lane.eq(0), tc_beat.eq(tc_beat + 1)]
                with m.Else():
                    m.d.sync += tc_lane.eq(tc_lane + 1)
            val = Signal(signed(32), name="tc_value")
            m.d.comb += val.eq(z_rd.data[0])
            for j in range(1, L):
                with m.If(tc_lane_d == j):
                    m.d.comb += val.eq(z_rd.data[j])
            entry_done = Signal()
            is_bias = which == SfuTable.LN_BIAS
            with m.If(tc_v):
                with m.If(is_bias & ~tc_j_d[0]):
                    m.d.sync += tc_lo.eq(val)
                with m.Else():
                    m.d.comb += entry_done.eq(1)
            with m.If(entry_done):
                m.d.sync += tc_e.eq(tc_e + 1)
                with m.If(tc_elane == L - 1):
                    m.d.sync += [tc_elane.eq(0), tc_grp.eq(tc_grp + 1)]
                with m.Else():
                    m.d.sync += tc_elane.eq(tc_elane + 1)
                rq_of = {SfuTable.RQ_BIAS: "bias", SfuTable.RQ_M: "m", SfuTable.RQ_E: "e"}
                for t, name in rq_of.items():
                    wr = rq_wr[name]
                    m.d.comb += wr.addr.eq(tc_grp)
                    for j in range(L):
                        m.d.comb += [wr.data[j].eq(val),
                                     wr.en[j].eq((which == t) & (tc_elane == j))]
                ln_of = {SfuTable.LN_SIGN: "neg", SfuTable.LN_OUT_M: "out_m",
                         SfuTable.LN_OUT_E: "out_e", SfuTable.LN_RES_M: "res_m",
                         SfuTable.LN_RES_E: "res_e", SfuTable.LN_BIAS: "bias"}
                for t, name in ln_of.items():
                    wr = ln_wr[name]
                    m.d.comb += [wr.addr.eq(tc_e), wr.en.eq((which == t) & (tc_e < ln_depth))]
                    if name == "bias":
                        m.d.comb += wr.data.eq(Cat(tc_lo, val))
                    elif name == "neg":
                        m.d.comb += wr.data.eq(val != 1)
                    else:
                        m.d.comb += wr.data.eq(val)
            with m.If(~issue_c & ~tc_v):
                finish(0)

        with m.Elif(state == _State.CFG):
            with m.If(op == _Op.SOFTMAX):
                x0, b, c = a_sm.x0.as_signed(), a_sm.b.as_signed(), a_sm.c.as_signed()
                h = exp_field_bits(EXP_MAX_WIDTH)
                refused = ((x0 >= 0) | (b < -x0) | (c < (1 << EXP_MIN_BITS))
                           | (c >= (1 << EXP_MAX_WIDTH)) | (x0 < -(1 << h))
                           | (b >= (1 << (h + 1))))
                k = smx.cfg.payload
                m.d.comb += [k.x0.eq(x0), k.b.eq(b), k.c.eq(c)]
                with m.If(refused):
                    finish(AccelError.UNIT)
                with m.Else():
                    m.d.comb += smx.cfg.valid.eq(1)
                    with m.If(smx.cfg.ready):
                        goto(_State.CFG_CHECK)
            with m.Else():  # GELU
                k = gelu.cfg.payload
                m.d.comb += [k.b.eq(a_ge.b.as_signed()), k.c.eq(a_ge.c.as_signed()),
                             k.one.eq(a_ge.one.as_signed()), k.m.eq(a_ge.m[:31]),
                             k.e.eq(a_ge.e[:6]), gelu.cfg.valid.eq(1)]
                b_bits = len(k.b)  # a b the unit's field cannot hold: refused
                with m.If(a_ge.b.as_signed() < -(1 << (b_bits - 1))):
                    m.d.comb += gelu.cfg.valid.eq(0)
                    finish(AccelError.UNIT)
                with m.Elif(gelu.cfg.ready):
                    goto(_State.CFG_CHECK)

        with m.Elif(state == _State.CFG_CHECK):
            err = Mux(op == _Op.SOFTMAX, smx.error, gelu.error)
            with m.If(err & SfuError.CONFIG):
                finish(AccelError.UNIT)
            with m.Else():
                m.d.comb += start_pass.eq(1)
                goto(_State.RUN)

        with m.Elif(state == _State.LN_CFG):
            k = ln.cfg.payload
            for rd in ln_rd.values():
                m.d.comb += [rd.addr.eq(lc_c), rd.en.eq(1)]
            m.d.comb += [k.group.eq(lc_grp), k.lane.eq(lc_lane),
                         k.shift.eq(a_ln.shift[:_LN_SHIFT_BITS]),
                         k.entry.bias.eq(ln_rd["bias"].data), k.entry.neg.eq(ln_rd["neg"].data),
                         k.entry.m.eq(Mux(ln_pass, ln_rd["res_m"].data, ln_rd["out_m"].data)),
                         k.entry.e.eq(Mux(ln_pass, ln_rd["res_e"].data, ln_rd["out_e"].data))]
            with m.If(lc_phase == 0):
                m.d.comb += [k.kind.eq(LayerNormKind.SHIFT), ln.cfg.valid.eq(1)]
                with m.If(ln.cfg.ready):
                    m.d.sync += [lc_phase.eq(1), lc_c.eq(0), lc_grp.eq(0), lc_lane.eq(0)]
            with m.Elif(lc_c == src.cols):
                m.d.comb += start_pass.eq(1)
                goto(_State.RUN)
            with m.Elif(lc_phase == 1):
                m.d.sync += lc_phase.eq(2)  # the tables' read lands next cycle
            with m.Else():
                m.d.comb += [k.kind.eq(LayerNormKind.ENTRY), ln.cfg.valid.eq(1)]
                m.d.comb += [rd.en.eq(0) for rd in ln_rd.values()]
                with m.If(ln.cfg.ready):
                    m.d.sync += [lc_phase.eq(1), lc_c.eq(lc_c + 1)]
                    with m.If(lc_lane == L - 1):
                        m.d.sync += [lc_lane.eq(0), lc_grp.eq(lc_grp + 1)]
                    with m.Else():
                        m.d.sync += lc_lane.eq(lc_lane + 1)

        with m.Elif(state == _State.RUN):
            with m.If(pass_end):
                with m.If(~last_pass):  # LayerNorm: the res copy next
                    m.d.sync += [ln_pass.eq(1), last_pass.eq(1), dst.eq(a_ln.res),
                                 obits.eq(a_ln.res_bits), lc_phase.eq(0)]
                    goto(_State.LN_CFG)
                with m.Else():
                    m.d.comb += clear.eq(1)
                    goto(_State.IDLE)

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

        # REQUANT starts its pass straight from DECODE, TABLE its load
        with m.If((state == _State.DECODE) & (head.cls == TileKind.SFU)
                  & ((head.code == _REQUANT.code)
                     | ((head.code == _TABLE.code) & (a_tb.which < len(SfuTable))))):
            m.d.comb += start_pass.eq(1)
        return m

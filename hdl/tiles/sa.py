"""The SA tile: a :class:`~heterotron.hdl.gemm.GemmEngine` behind the tile socket.

The tile takes the SA instructions of the contract
(:data:`~heterotron.hdl.contract.accel.OPCODES`, class
:attr:`~heterotron.hdl.contract.accel.TileKind.SA`) on ``cmd_rx``, one at a time:

* ``LOAD(port, trans, src)``: gives the engine its ``LOAD_A`` / ``LOAD_B`` / ``LOAD_BIAS``
  command (A: ``m, k = rows, cols``, transposed ``k, m = rows, cols``; B: ``k, n = rows,
  cols``, transposed ``n, k = rows, cols``; bias: ``n = cols``), sends a REQ for region ``src``
  to its memory tile, and unpacks the DATA packets that answer (their three header beats
  skipped) into the engine's ``data`` port, one beat per data word, in stored row order: row
  ``r`` is ``ceil(cols * eb / word_bytes)`` words, element ``j`` at byte ``j * eb`` of them,
  sign-extended from its container when the operand is signed (bias always), zero-extended
  otherwise. The engine is built with ``data_lanes`` = the elements of the narrowest operand
  container in a word (:attr:`SaTile.data_lanes`); a word's beat carries its elements that
  belong to the row (``count``: ``word_bytes / eb``, fewer in the last word of a row). When
  the engine has every element it answers DONE, with ``error = UNIT`` if the engine raised a
  flag (or an element did not even fit the engine's data port), and clears
  the engine's sticky flags. A LOAD the engine refuses (a size of 0 or above its maximum:
  ``DIMS``) sends no REQ and is answered at once with ``UNIT``.
* ``SCALE(lane, e, m)``: one write on the engine's ``cfg`` (requant only), then DONE.
* ``RUN(bias, dest)``: checks what the engine would (A and B loaded, K of both equal, the bias
  loaded and as wide as B when asked for) and that ``dest`` is ``M x N``; if not, nothing runs
  and DONE carries ``ILLEGAL``. Otherwise each result beat of the engine (``row``, ``col``,
  ``cols`` lanes) leaves as one DATA packet to ``dest.mem`` (``Port.MEM``) of the
  ``min(cols, N - col) * ob`` bytes from ``dest.addr + (row * stride + col) * ob``; the
  engine's final beat's packet has ``ack`` set, so the memory answers DONE for the RUN and the
  tile sends none.

Unknown instructions (not of class SA, an unknown code, a LOAD of port 0, SCALE without
requant) are answered with DONE and ``ILLEGAL`` (the control tile should never send them).

Throughput: when the engine loads in its fast direction (OS: A stored ``K x M`` with ``trans
= 1``, B with ``trans = 0``, the bias; WS: A and B with ``trans = 0``, the bias; see
:class:`~heterotron.hdl.gemm.GemmEngine`) it takes up to a buffer word's lanes (``rows`` for
A, ``cols`` for B and the bias) of elements a cycle, so a LOAD runs at link rate, a data word
a cycle, while a word holds no more elements than that (else in ``ceil(elements / lanes)``
cycles a word); in the slow direction the engine takes one element a cycle. A packet's
three header beats cost three link cycles (the word register is taken as the engine takes the
previous word). A RUN sends one packet of ``3 + ceil(cols * ob / word_bytes)`` beats per
result beat, back to back, from a result buffer of ``result_depth`` beats between the
engine's ``o`` and the packetiser, so the engine runs on while a burst of beats (an OS tile's
``rows``, a WS column tile's ``M``) drains: with ``result_depth >= rows`` an OS engine stalls
only when the packets of a tile take longer than the tile's ``K`` cycles of work.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import Out

from heterotron.hdl.contract.accel import (
    ACCEL_PARAMS,
    DATA_INFO,
    DONE_WORD,
    INSTR_HEAD,
    MAX_TILES,
    MSG_HEADER,
    OPCODES,
    REQ_ARGS,
    WORD,
    AccelError,
    MsgClass,
    Port,
    TileKind,
    elem_bytes,
    sa_link_problems,
)
from heterotron.hdl.contract.params import Param, ParamError, Parameterised
from heterotron.hdl.gemm import GemmEngine, Op
from heterotron.hdl.tiles.common import check_placement, class_ports

__all__ = ["SaTile"]

_SA_OPS = {op.name: op for op in OPCODES if op.cls == TileKind.SA}
_LOAD, _SCALE, _RUN = _SA_OPS["LOAD"], _SA_OPS["SCALE"], _SA_OPS["RUN"]
#: Argument words of the longest SA instruction (the instruction register's size).
_ARG_WORDS = max(op.words for op in _SA_OPS.values())
#: The engine's parameters a tile takes (``data_lanes`` the tile derives itself).
_ENGINE_PARAMS = tuple(q.name for q in GemmEngine.PARAMS if q.name != "data_lanes")
_DATA_LANES_DEFAULT = next(q.default for q in GemmEngine.PARAMS if q.name == "data_lanes")


class _State(enum.Enum, shape=4):
    IDLE = 0  #: ready for an instruction (``cmd_rx`` ready)
    DECODE = 1
    LOAD_CMD = 2  #: the engine's LOAD_* command
    LOAD_CHECK = 3  #: did the engine take it?
    LOAD_REQ = 4  #: the REQ to the memory tile
    LOAD_DATA = 5  #: unpacking the DATA packets into the engine
    SCALE = 6  #: the engine's cfg write
    RUN_CMD = 7
    RUN_CHECK = 8
    RUN_OUT = 9  #: one DATA packet per result beat
    DONE = 10  #: the DONE packet


def _accel_param(name: str) -> Param:
    return next(q for q in ACCEL_PARAMS if q.name == name)


def _log2(n: int) -> int:
    assert n > 0 and n & (n - 1) == 0
    return n.bit_length() - 1


class SaTile(Parameterised, wiring.Component):
    """A GEMM engine behind the tile socket (see the module documentation).

    Parameters
    ----------
    index, control : int
        This tile's index and the control tile's (description order, 0 to 31).
    flit_width : int
        Data-plane and scratchpad word bits (a power of two, 32 to 256).
    max_packet : int
        Most data beats in one packet (a result beat's packet must fit).
    result_depth : int
        Result beats buffered between the engine and the packetiser, 2 to 1024 (default 16;
        OS needs ``rows`` to take a tile's burst without stalling the engine).
    rows, cols, dataflow, a_width, ..., requant, out_width
        The :class:`~heterotron.hdl.gemm.GemmEngine` parameters but ``data_lanes``, which
        the tile derives (:attr:`data_lanes`); a ``data_lanes`` given at the engine's default
        (1, as a description's engine check fills it in) is ignored.

    Members
    -------
    cmd_rx : In(rx_word(32))
        Instruction packets (header, then the instruction's words); ready only when idle.
    req_tx : Out(tx_word(32))
        Operand requests to memory tiles.
    data_rx : In(rx_word(flit_width))
        Operand data answering the requests.
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
        Param("result_depth", int, 16, "result beats buffered between the engine and the "
              "packetiser (OS: >= rows keeps a tile's burst from stalling the engine)", 2, 1024),
        *(q for q in GemmEngine.PARAMS if q.name in _ENGINE_PARAMS),
    )

    @staticmethod
    def _out_width(p) -> int:
        return p["out_width"] if p["requant"] else p["acc_width"]

    @classmethod
    def validate_params(cls, given=None):
        """As :meth:`Parameterised.validate_params`; a ``data_lanes`` at the engine's default
        (what a description's engine check fills in) is dropped: the tile sets its engine's
        ``data_lanes`` itself (:attr:`data_lanes`)."""
        given = dict(given or {})
        if "data_lanes" in given and given["data_lanes"] == _DATA_LANES_DEFAULT:
            del given["data_lanes"]
        return super().validate_params(given)

    @classmethod
    def check_params(cls, p):
        """The engine's rules, then what the links and the scratchpad must carry: operands
        and results in 1-, 2- or 4-byte containers, a result beat that never straddles two
        words, and a result beat's packet within ``max_packet``."""
        fw = p["flit_width"]
        if fw & (fw - 1):
            raise ParamError(f"flit_width must be a power of two in [32, 256], not {fw}")
        check_placement(p)
        GemmEngine.check_params(p)
        problems = sa_link_problems(p, fw, p["max_packet"])
        if problems:
            raise ParamError(problems[0])

    def __init__(self, **given):
        p = self._take_params(given)
        super().__init__({
            **class_ports(p["flit_width"], rx=(MsgClass.CMD, MsgClass.DATA),
                          tx=(MsgClass.REQ, MsgClass.DATA, MsgClass.DONE)),
            "busy": Out(1),
        })

    @property
    def engine_params(self) -> dict:
        """The parameters of the engine inside (built at elaboration, so a tile made only to
        be inspected leaves no unused engine behind)."""
        return {**{k: self._params[k] for k in _ENGINE_PARAMS}, "data_lanes": self.data_lanes}

    @property
    def data_lanes(self) -> int:
        """The engine's ``data_lanes``: the elements of the narrowest operand container in
        one word (a word of a wider operand fills fewer)."""
        return self.word_bytes // min(self.operand_bytes.values())

    @property
    def word_bytes(self) -> int:
        return self.flit_width // 8

    @property
    def result_bytes(self) -> int:
        """Bytes of one result element in memory (``ob``)."""
        return elem_bytes(self._out_width(self._params))

    @property
    def operand_bytes(self) -> dict[Port, int]:
        """Container bytes of each operand in memory."""
        p = self._params
        return {Port.A: elem_bytes(p["a_width"]), Port.B: elem_bytes(p["b_width"]),
                Port.BIAS: elem_bytes(p["bias_width"])}

    def elaborate(self, platform):
        m = Module()
        p = self._params
        C = p["cols"]
        m.submodules.engine = eng = GemmEngine(**self.engine_params)
        max_m, max_k, max_n = p["max_m"], p["max_k"], p["max_n"]
        dim_max = max(max_m, max_k, max_n)

        # -- the instruction register -----------------------------------------------------
        head = Signal(INSTR_HEAD, name="instr_head")
        args = Signal(_ARG_WORDS * WORD, name="instr_args")
        load = _LOAD.args(args[:_LOAD.args.size])
        scale = _SCALE.args(args[:_SCALE.args.size])
        run = _RUN.args(args[:_RUN.args.size])
        src, dest = load.src, run.dest
        cmd_word = Signal(range(_ARG_WORDS + 3), name="cmd_word")  # 0: the packet's header

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

        # -- what the engine holds (mirrored, for RUN's checks) ------------------------------
        a_m, a_k = Signal(range(max_m + 2)), Signal(range(max_k + 2))
        b_k, b_n = Signal(range(max_k + 2)), Signal(range(max_n + 2))
        bias_n = Signal(range(max_n + 2))
        a_ok, b_ok, bias_ok = Signal(), Signal(), Signal()

        # The engine command of the instruction in hand.
        ecmd = Signal(eng.cmd.payload.shape(), name="engine_cmd")
        m.d.comb += eng.cmd.payload.eq(ecmd)

        # -- the DONE packet and the instruction's end ---------------------------------------
        done_err = Signal(8, name="done_error")
        clear = Signal()  # the instruction ends: clear the sticky flags
        own_err = Signal()  # an element too wide for the engine's data port
        unit_err = Signal()
        m.d.comb += [eng.error_clear.eq(clear), unit_err.eq(eng.error.any() | own_err)]

        # -- loader state (driven by _loader) ------------------------------------------------
        ld_port = Signal(2, name="ld_port")
        ld_rows, ld_cols = Signal(16, name="ld_rows"), Signal(16, name="ld_cols")
        ld_r = Signal(range(dim_max + 1), name="ld_r")
        ld_j = Signal(range(dim_max + 1), name="ld_j")
        ld_all = Signal(name="ld_all")  # every element went to the engine
        ld_active = Signal(name="ld_active")
        pk_hdr = Signal(range(4), name="rx_hdr")  # header beats of this packet seen (3: data)
        wvalid = Signal(name="rx_wvalid")
        req_i = Signal(range(6), name="req_word")
        done_i = Signal(name="done_word")

        # The end of a RUN (driven by _formatter).
        run_end = Signal()  # the packet of the engine's last beat has left

        req_args = Signal(REQ_ARGS)
        m.d.comb += [req_args.src.eq(src), req_args.dest_tile.eq(p["index"]),
                     req_args.port.eq(ld_port), req_args.id.eq(head.id)]
        req_hdr = Signal(MSG_HEADER)
        m.d.comb += [req_hdr.cls.eq(MsgClass.REQ), req_hdr.owner.eq(p["index"]),
                     req_hdr.length.eq(REQ_ARGS.size // WORD)]
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

        # (An if-chain, not m.FSM or m.Switch: a case statement that leaves some values out
        # for a signal is CASEINCOMPLETE to Verilator.)
        with m.If(state == _State.IDLE):
            m.d.comb += idle.eq(1)
            with m.If(cmd_take & self.cmd_rx.payload.last):
                goto(_State.DECODE)

        with m.Elif(state == _State.DECODE):
            with m.If(head.cls != TileKind.SA):
                finish(AccelError.ILLEGAL)
            with m.Elif(head.code == _LOAD.code):
                trans = load.trans
                m.d.sync += [ecmd.trans.eq(trans), ecmd.bias.eq(0), ecmd.m.eq(0), ecmd.k.eq(0),
                             ecmd.n.eq(0), ld_port.eq(load.port), ld_rows.eq(src.rows),
                             ld_cols.eq(src.cols), ld_r.eq(0), ld_j.eq(0), ld_all.eq(0),
                             pk_hdr.eq(0), wvalid.eq(0), req_i.eq(0)]
                goto(_State.LOAD_CMD)
                with m.If(load.port == Port.A):
                    m.d.sync += [ecmd.op.eq(Op.LOAD_A), ecmd.m.eq(Mux(trans, src.cols, src.rows)),
                                 ecmd.k.eq(Mux(trans, src.rows, src.cols))]
                with m.Elif(load.port == Port.B):
                    m.d.sync += [ecmd.op.eq(Op.LOAD_B), ecmd.k.eq(Mux(trans, src.cols, src.rows)),
                                 ecmd.n.eq(Mux(trans, src.rows, src.cols))]
                with m.Elif(load.port == Port.BIAS):
                    m.d.sync += [ecmd.op.eq(Op.LOAD_BIAS), ecmd.n.eq(src.cols)]
                with m.Else():
                    finish(AccelError.ILLEGAL)
            with m.Elif(head.code == _SCALE.code):
                if p["requant"]:
                    goto(_State.SCALE)
                else:
                    finish(AccelError.ILLEGAL)
            with m.Elif(head.code == _RUN.code):
                ok = (a_ok & b_ok & (a_k == b_k)
                      & (~run.bias | (bias_ok & (bias_n == b_n)))
                      & (dest.rows == a_m) & (dest.cols == b_n))
                m.d.sync += [ecmd.op.eq(Op.RUN), ecmd.bias.eq(run.bias), ecmd.trans.eq(0),
                             ecmd.m.eq(0), ecmd.k.eq(0), ecmd.n.eq(0)]
                with m.If(ok):
                    goto(_State.RUN_CMD)
                with m.Else():
                    finish(AccelError.ILLEGAL)
            with m.Else():
                finish(AccelError.ILLEGAL)

        with m.Elif(state == _State.LOAD_CMD):
            m.d.comb += eng.cmd.valid.eq(1)
            with m.If(eng.cmd.ready):
                goto(_State.LOAD_CHECK)

        with m.Elif(state == _State.LOAD_CHECK):
            # The engine took the command; it is loading unless it refused it (DIMS).
            ok = eng.busy
            with m.If(ld_port == Port.A):
                m.d.sync += [a_ok.eq(ok), a_m.eq(ecmd.m), a_k.eq(ecmd.k)]
            with m.Elif(ld_port == Port.B):
                m.d.sync += [b_ok.eq(ok), b_k.eq(ecmd.k), b_n.eq(ecmd.n)]
            with m.Else():
                m.d.sync += [bias_ok.eq(ok), bias_n.eq(ecmd.n)]
            with m.If(ok):
                goto(_State.LOAD_REQ)
            with m.Else():
                finish(AccelError.UNIT)

        with m.Elif(state == _State.LOAD_REQ):
            n_args = REQ_ARGS.size // WORD
            m.d.comb += [ld_active.eq(1), self.req_tx.valid.eq(1),
                         self.req_tx.payload.dest.eq(src.mem),
                         self.req_tx.payload.last.eq(req_i == n_args),
                         self.req_tx.payload.data.eq(req_hdr)]
            for i in range(n_args):
                with m.If(req_i == i + 1):
                    m.d.comb += self.req_tx.payload.data.eq(
                        req_args.as_value()[WORD * i:WORD * (i + 1)])
            with m.If(self.req_tx.ready):
                m.d.sync += req_i.eq(req_i + 1)
                with m.If(req_i == n_args):
                    goto(_State.LOAD_DATA)

        with m.Elif(state == _State.LOAD_DATA):
            m.d.comb += ld_active.eq(1)
            with m.If(ld_all & ~eng.busy):
                finish(Mux(unit_err, AccelError.UNIT, 0))

        with m.Elif(state == _State.SCALE):
            if p["requant"]:
                cfg = eng.cfg.payload
                m.d.comb += [eng.cfg.valid.eq(1), cfg.m.eq(scale.m), cfg.e.eq(scale.e)]
                if C > 1:
                    m.d.comb += cfg.lane.eq(scale.lane)
                with m.If(eng.cfg.ready):
                    finish(0)

        with m.Elif(state == _State.RUN_CMD):
            m.d.comb += eng.cmd.valid.eq(1)
            with m.If(eng.cmd.ready):
                goto(_State.RUN_CHECK)

        with m.Elif(state == _State.RUN_CHECK):
            with m.If(eng.busy):
                goto(_State.RUN_OUT)
            with m.Else():  # (the checks above mirror the engine's: not expected)
                finish(AccelError.UNIT)

        with m.Elif(state == _State.RUN_OUT):
            with m.If(run_end):
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

        self._loader(m, eng, ld_port, ld_rows, ld_cols, ld_r, ld_j, ld_all, ld_active, pk_hdr,
                     wvalid, own_err, clear)
        # -- the result buffer: the engine runs on while packets drain -----------------------
        # (A buffered FIFO of 2 would hold a one-word memory, of zero-width address: 2 is a
        # plain SyncFIFO, two registers.)
        res_shape = eng.o.payload.shape()
        depth = p["result_depth"]
        make = SyncFIFOBuffered if depth > 2 else SyncFIFO
        m.submodules.results = fifo = make(width=Shape.cast(res_shape).width, depth=depth)
        m.d.comb += [fifo.w_data.eq(eng.o.payload.as_value()), fifo.w_en.eq(eng.o.valid),
                     eng.o.ready.eq(fifo.w_rdy)]
        self._formatter(m, fifo, res_shape(fifo.r_data), dest, head, b_n, run_end)
        return m

    # -- operand loader ---------------------------------------------------------------------

    def _loader(self, m, eng, ld_port, ld_rows, ld_cols, ld_r, ld_j, ld_all, ld_active,
                pk_hdr, wvalid, own_err, clear):
        """DATA packets on ``data_rx`` -> beats on the engine's ``data``: each word of a row
        one beat of its elements (``count`` of them: the last word of a row may be partial),
        from a word register; the next word (or a header beat) is taken as the engine takes
        the current one."""
        p = self._params
        W, wb = p["flit_width"], p["flit_width"] // 8
        eb = self.operand_bytes
        D = self.data_lanes
        signs = {Port.A: p["a_signed"], Port.B: p["b_signed"], Port.BIAS: True}
        per_word = {q: wb // b for q, b in eb.items()}
        rx = self.data_rx
        wreg = Signal(W, name="rx_word")

        def by_port(values):
            return Mux(ld_port == Port.A, values[Port.A],
                       Mux(ld_port == Port.B, values[Port.B], values[Port.BIAS]))

        # Element i of the word, extended from its container (0 past the port's elements).
        elems = []
        for i in range(D):
            ext = {}
            for q in (Port.A, Port.B, Port.BIAS):
                ext[q] = 0
                if i < per_word[q]:
                    bits = wreg[8 * eb[q] * i:8 * eb[q] * (i + 1)]
                    ext[q] = Signal(signed(33), name=f"rx_elem{i}_{q.name.lower()}")
                    m.d.comb += ext[q].eq(bits.as_signed() if signs[q] else bits)
            e = Signal(signed(33), name=f"rx_elem{i}")
            m.d.comb += e.eq(by_port(ext))
            elems.append(e)
        left = Signal(len(ld_cols), name="rx_left")  # elements left in the row
        count = Signal(range(D + 1), name="rx_count")  # elements of the word in the row
        n_word = by_port(per_word)
        m.d.comb += [left.eq(ld_cols - ld_j), count.eq(Mux(left < n_word, left, n_word))]
        if D == 1:
            m.d.comb += eng.data.payload.eq(elems[0])
        else:
            m.d.comb += eng.data.payload.count.eq(count)
            for i in range(D):
                m.d.comb += eng.data.payload.data[i].eq(elems[i])
        m.d.comb += eng.data.valid.eq(wvalid & ld_active)

        take = Signal()
        m.d.comb += take.eq(eng.data.valid & eng.data.ready)
        is_hdr = pk_hdr != 3
        free = ~wvalid | take
        m.d.comb += rx.ready.eq(ld_active & ~ld_all & (is_hdr | free))

        # An element wider than the engine's data port would reach it truncated, possibly in
        # range: flag it here (the engine checks the operand's own range).
        elem_w = eng.data_width
        wide = [q for q in eb if 8 * eb[q] + (0 if signs[q] else 1) > elem_w]
        with m.If(clear):
            m.d.sync += own_err.eq(0)
        if wide:
            lo, hi = -(1 << (elem_w - 1)), (1 << (elem_w - 1)) - 1
            bad = [(i < count) & ((e < lo) | (e > hi)) for i, e in enumerate(elems)]
            with m.Elif(take & Cat(*bad).any()):
                m.d.sync += own_err.eq(1)

        with m.If(take):
            m.d.sync += wvalid.eq(0)
            with m.If(count == left):
                m.d.sync += [ld_j.eq(0), ld_r.eq(ld_r + 1)]
                with m.If(ld_r == ld_rows - 1):
                    m.d.sync += ld_all.eq(1)
            with m.Else():
                m.d.sync += ld_j.eq(ld_j + count)
        with m.If(rx.valid & rx.ready):
            with m.If(rx.payload.last):
                m.d.sync += pk_hdr.eq(0)
            with m.Elif(is_hdr):
                m.d.sync += pk_hdr.eq(pk_hdr + 1)
            with m.If(~is_hdr):
                m.d.sync += [wreg.eq(rx.payload.data), wvalid.eq(1)]

    # -- result formatter -------------------------------------------------------------------

    def _formatter(self, m, fifo, beat, dest, head, b_n, run_end):
        """Result beats (``beat``, out of the result buffer ``fifo``) -> one DATA packet
        each on ``data_tx``."""
        p = self._params
        W, wb, C = p["flit_width"], p["flit_width"] // 8, p["cols"]
        ob = self.result_bytes
        beat_bytes = C * ob
        max_beats = -(-beat_bytes // wb)
        tx = self.data_tx

        pk_valid = Signal(name="tx_valid")
        pk_i = Signal(range(max_beats + 3), name="tx_beat")
        pk_ack = Signal(name="tx_ack")
        pk_nbeats = Signal(range(max_beats + 1), name="tx_nbeats")
        pk_nbytes = Signal(range(beat_bytes + 1), name="tx_nbytes")
        pk_start = Signal(32, name="tx_start")
        img = Signal(8 * beat_bytes, name="tx_image")

        # The beat's lanes as ob-byte two's complement, lane j at bytes [j ob, (j + 1) ob).
        lanes = []
        for j in range(C):
            v = Signal(signed(8 * ob), name=f"tx_lane{j}")
            m.d.comb += v.eq(beat.data[j])
            lanes.append(v)
        rem = Signal(range(p["max_n"] + 2), name="tx_rem")
        nvalid = Signal(range(C + 1), name="tx_nvalid")
        nbytes = Signal(range(beat_bytes + 1), name="tx_nbytes_in")
        m.d.comb += [rem.eq(b_n - beat.col), nvalid.eq(Mux(rem >= C, C, rem)),
                     nbytes.eq(nvalid * ob)]

        final = Signal()
        send = Signal()
        take = Signal()
        m.d.comb += [final.eq(pk_i == pk_nbeats + 2), send.eq(tx.valid & tx.ready),
                     fifo.r_en.eq(~pk_valid | (tx.ready & final)),
                     take.eq(fifo.r_rdy & fifo.r_en),
                     run_end.eq(send & final & pk_ack)]

        with m.If(send):
            with m.If(final):
                m.d.sync += pk_valid.eq(0)
            with m.Else():
                m.d.sync += pk_i.eq(pk_i + 1)
            if beat_bytes > wb:
                with m.If(pk_i >= 3):
                    m.d.sync += img.eq(img >> W)
        with m.If(take):
            m.d.sync += [
                pk_valid.eq(1), pk_i.eq(0), pk_ack.eq(beat.last), img.eq(Cat(*lanes)),
                pk_nbytes.eq(nbytes),
                pk_start.eq(dest.addr + (beat.row * dest.stride + beat.col) * ob),
            ]
            if beat_bytes >= wb:
                m.d.sync += pk_nbeats.eq((nbytes + wb - 1) >> _log2(wb))
            else:
                m.d.sync += pk_nbeats.eq(1)

        hdr = Signal(MSG_HEADER, name="tx_header")
        info = Signal(DATA_INFO, name="tx_info")
        m.d.comb += [hdr.cls.eq(MsgClass.DATA), hdr.port.eq(Port.MEM), hdr.ack.eq(pk_ack),
                     hdr.owner.eq(p["index"]), hdr.length.eq(pk_nbeats),
                     info.id.eq(head.id), info.nbytes.eq(pk_nbytes)]
        if beat_bytes >= wb:
            payload = img[:W]
        else:  # one beat, the bytes at their lanes: slot start % wb / beat_bytes of the word
            slot = pk_start[_log2(beat_bytes):_log2(wb)]
            payload = Cat(*(Mux(slot == s, img, 0) for s in range(wb // beat_bytes)))
        m.d.comb += [tx.valid.eq(pk_valid), tx.payload.dest.eq(dest.mem),
                     tx.payload.last.eq(final)]
        m.d.comb += tx.payload.data.eq(Mux(pk_i == 0, hdr.as_value(),
                                           Mux(pk_i == 1, info.as_value(),
                                               Mux(pk_i == 2, pk_start, payload))))

"""The memory tile: a scratchpad SRAM that sinks DATA packets into its write port and answers
read jobs (a ``COPY`` instruction on CMD, a request on REQ) with DATA packets.

Packet formats are those of :mod:`heterotron.hdl.contract.accel`; the tile's ports follow
:mod:`heterotron.hdl.tiles.common`.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.accel import (
    ACCEL_PARAMS,
    DATA_INFO,
    DONE_WORD,
    INSTR_HEAD,
    MAX_TILES,
    MSG_HEADER,
    REGION,
    REQ_ARGS,
    TILE_PARAMS,
    WORD,
    AccelError,
    MsgClass,
    Port,
    TileKind,
    opcode,
)
from heterotron.hdl.contract.params import Param, ParamError, Parameterised
from heterotron.hdl.ports import NO_INIT, error_ports, raise_error, sticky_errors
from heterotron.hdl.tiles.common import check_placement, class_ports, header_value

__all__ = ["MemoryTile", "MemoryTileError", "COPY"]

#: The one instruction a memory tile runs.
COPY = opcode(TileKind.MEMORY, "COPY")
#: Words of a CMD packet holding a COPY after its header: the head and the arguments.
_CMD_WORDS = 1 + COPY.words
#: Words of a REQ packet after its header.
_REQ_WORDS = REQ_ARGS.size // WORD
assert _CMD_WORDS == _REQ_WORDS + 1 and COPY.args.size == REQ_ARGS.size


class MemoryTileError(enum.IntFlag):
    """Bits of the tile's sticky ``error`` output (cleared by ``error_clear``).

    (Not called ``MemoryError``: that would shadow Python's built-in exception.)
    """

    #: A packet the tile cannot use was consumed and dropped: a DATA packet for a port other
    #: than ``Port.MEM`` or of another class, a DATA packet whose beats do not match its
    #: header's ``length``, a CMD packet that is not one COPY instruction, a REQ packet of the
    #: wrong length or a region with the reserved ``ebytes`` code 3.
    BAD_PACKET = 1
    #: A word address beyond the scratchpad: a write beat was dropped, or a read beat was sent
    #: as zeros (the address never wraps).
    RANGE = 2


# Read engine states (a job is taken; its walk is set up; then the packets' beats, with the
# reads running ahead from HDR on).
_E_IDLE, _E_SETUP, _E_SETUP2, _E_HDR, _E_INFO, _E_ADDR, _E_DATA = range(7)
# Write path states (a packet's three header beats, its data beats, then its DONE if asked).
_W_HDR, _W_INFO, _W_ADDR, _W_DATA, _W_DONE_HDR, _W_DONE_WORD = range(6)


def _accel_param(name: str) -> Param:
    return next(q for q in ACCEL_PARAMS if q.name == name)


class MemoryTile(Parameterised, wiring.Component):
    """A scratchpad of ``kbytes`` KiB in ``flit_width``-bit words behind the tile packet ports.

    **Writes** (``data_rx``). A DATA packet for ``Port.MEM`` writes bytes ``[start, start +
    nbytes)`` (``start`` its third beat, ``nbytes`` from its ``DATA_INFO``): data beat ``i``
    goes to word ``start // word_bytes + i`` with the byte enables of the bytes of that range
    it holds (bytes at their natural lanes). ``data_rx.ready`` is high but while a DONE is
    being sent: writes never wait on reads (the scratchpad has its own write port). After the
    last beat of a packet whose header has ``ack``, the tile sends DONE to ``control``
    (``owner`` and ``DONE_WORD.tile`` = the header's owner, ``id`` = ``DATA_INFO.id``,
    ``error`` = 0, or ``AccelError.UNIT`` if the packet raised one of the tile's flags or its
    header's ``unit`` bit is set: the sender's instruction raised a unit error). A
    packet the tile cannot use is consumed and dropped and raises ``BAD_PACKET`` (and is
    still acknowledged, with ``UNIT``, when it asked for it, so nobody waits forever); a beat
    beyond the scratchpad is dropped and raises ``RANGE``.

    **Read jobs** (``cmd_rx``, ``req_rx``). A COPY instruction is the job ``{src, dest_tile,
    port = MEM, dest_addr, ack = 1, id = the head's id, owner = index}``; a REQ packet the job
    of its ``REQ_ARGS``, ``owner`` = the header's owner. Each input has a buffer of one
    packet (for CMD, the instruction register), whose ``ready`` is low from the packet's last
    word until the engine takes the job: so CMD never waits on the read engine (the control
    tile sends the next instruction after the last one finished), and the next job's packet
    comes in while a job runs. One read engine runs the jobs one at a time; when both inputs
    hold one it alternates between them. A packet that is not a well-formed job is dropped
    (``BAD_PACKET``). A job sends the rows of ``src`` (each ``row_words = ceil(cols * eb /
    word_bytes)`` whole words, row ``r`` from byte ``addr + r * stride * eb``), rows packed,
    to tile ``dest_tile`` in DATA packets of at most ``max_packet`` data beats: header
    (``port``, ``owner``, ``ack`` on the job's last packet only, ``length``),
    ``DATA_INFO(id, nbytes = length * word_bytes)``, the address ``dest_addr + data beats
    already sent * word_bytes``, then the words. A job of no words (``rows`` or ``cols`` 0)
    sends one packet of length 0, so its acknowledgement still happens. A read in the cycle
    a write to the same word lands returns the old word (the control tile orders dependent
    instructions).

    **Throughput.** Data beats leave at one per cycle while ``data_tx.ready`` stays high (the
    read port reads ahead under each packet's three header beats, and its output register
    holds a word not yet taken): a job of ``n`` words in ``p`` packets is ``n + 3 p``
    back-to-back beats on ``data_tx``, and the next job's header follows its last beat after
    three cycles (pick, two setup cycles) when its packet is already in. Writes take one beat
    per cycle; an acknowledged packet adds the two cycles of its DONE.

    Parameters
    ----------
    index, control : int
        This tile's index and the control tile's (description order, 0 .. 31).
    flit_width : int
        Data-plane and scratchpad word bits, a power of two in [32, 256].
    kbytes : int
        Scratchpad KiB.
    max_packet : int
        Most data beats in one DATA packet.

    Members
    -------
    cmd_rx, req_rx : In(rx_word(32))
        CMD and REQ packets (read jobs).
    data_rx : In(rx_word(flit_width))
        DATA packets to write.
    data_tx : Out(tx_word(flit_width))
        DATA packets of read jobs (``dest`` = the job's ``dest_tile``).
    done_tx : Out(tx_word(32))
        DONE packets of acknowledged writes (``dest`` = ``control``).
    busy : Out(1)
        A read job is coming in, waiting or running, or a write packet is in progress (from
        the cycle after its header to the cycle its DONE, if any, is taken).
    poke : In(stream of :meth:`poke_layout`), only with ``backdoor=True``
        Simulation only (a constructor argument, never a description field): writes one
        scratchpad word a cycle, ``{addr, data, en}`` (word address, word, byte enables),
        while no write packet is in progress, so a testbench can load images at a word a
        cycle before a program runs instead of through the host link.
    error, error_clear : Out(2), In(1)
        Sticky :class:`MemoryTileError` flags (:mod:`heterotron.hdl.ports`).
    """

    PARAMS = (
        Param("index", int, 1, "this tile's index (description order)", 0, MAX_TILES - 1),
        Param("control", int, 0, "the control tile's index (description order)", 0,
              MAX_TILES - 1),
        _accel_param("flit_width"),
        *TILE_PARAMS[TileKind.MEMORY],
        _accel_param("max_packet"),
    )

    @classmethod
    def check_params(cls, p):
        fw = p["flit_width"]
        if fw & (fw - 1):
            raise ParamError(f"flit_width must be a power of two in [32, 256], not {fw}")
        if p["kbytes"] * 1024 % (fw // 8):
            raise ParamError(f"kbytes must hold whole {fw // 8}-byte words, not "
                             f"{p['kbytes']}")
        check_placement(p)

    def __init__(self, *, backdoor: bool = False, **given):
        p = self._take_params(given)
        self.backdoor = backdoor
        super().__init__({
            **class_ports(p["flit_width"], rx=(MsgClass.CMD, MsgClass.REQ, MsgClass.DATA),
                          tx=(MsgClass.DATA, MsgClass.DONE)),
            "busy": Out(1),
            **error_ports(MemoryTileError),
            **({"poke": In(stream.Signature(self.poke_layout))} if backdoor else {}),
        })

    @property
    def poke_layout(self) -> data.StructLayout:
        """A backdoor write: word address, word, byte enables."""
        return data.StructLayout({"addr": range(self.words), "data": unsigned(self.flit_width),
                                  "en": unsigned(self.word_bytes)})

    @property
    def word_bytes(self) -> int:
        return self.flit_width // 8

    @property
    def words(self) -> int:
        """Scratchpad depth, in ``flit_width``-bit words."""
        return self.kbytes * 1024 // self.word_bytes

    def elaborate(self, platform):
        m = Module()
        W, wb, words = self.flit_width, self.word_bytes, self.words
        lwb = wb.bit_length() - 1
        max_packet = self.max_packet

        # An SRAM: undefined until written (no initial contents in the Verilog).
        m.submodules.mem = mem = Memory(shape=unsigned(W), depth=words, init=[],
                                        attrs={NO_INIT: 1})
        wr = mem.write_port(granularity=8)
        rd = mem.read_port()
        raised = sticky_errors(m, self.error, self.error_clear)

        reading, writing = Signal(), Signal()
        eng = Signal(range(_E_DATA + 1))  # the read engine's state
        m.d.comb += self.busy.eq(reading | writing | (eng != _E_IDLE))

        # -- read jobs: intake --------------------------------------------------------------
        # Each input has its own one-packet buffer: a COPY waits in its instruction register
        # (so CMD never waits on the read engine: the control tile's credit guarantees room),
        # a REQ in its own; both fill while a job runs.
        cmd, req, tx = self.cmd_rx, self.req_rx, self.data_tx

        def intake(rx, n_words, name):
            """The packet's header, the ``n_words`` words after it (the newest on top), the
            number of words taken (header included, saturating) and whether it is complete."""
            first = Signal(WORD, name=f"{name}_hdr")
            buf = Signal(n_words * WORD, name=f"{name}_buf")
            count = Signal(range(n_words + 3), name=f"{name}_count")
            full = Signal(name=f"{name}_full")
            m.d.comb += rx.ready.eq(~full)
            with m.If(rx.valid & ~full):
                with m.If(count == 0):
                    m.d.sync += first.eq(rx.payload.data)
                with m.Else():
                    m.d.sync += buf.eq(Cat(buf[WORD:], rx.payload.data))
                with m.If(count < n_words + 2):
                    m.d.sync += count.eq(count + 1)
                with m.If(rx.payload.last):
                    m.d.sync += full.eq(1)
            return MSG_HEADER(first), buf, count, full

        c_hdr, c_buf, c_count, c_full = intake(cmd, _CMD_WORDS, "cmd")
        r_hdr, r_buf, r_count, r_full = intake(req, _REQ_WORDS, "req")
        m.d.comb += reading.eq((c_count != 0) | (r_count != 0))
        prio_req = Signal()  # when both inputs wait, req_rx goes next

        # The job.
        j_src = Signal(REGION)
        j_dest = Signal(8)
        j_port = Signal(4)
        j_ack = Signal()
        j_id = Signal(16)
        j_daddr = Signal(32)
        j_owner = Signal(8)

        # The walk: rows of row_words words, a row start pointer stepped by `step` words.
        ptr_w = 34  # (addr >> lwb) + rows * stride * eb / wb < 2^33
        row_words = Signal(17)
        step = Signal(17)
        col = Signal(17)
        row_ptr = Signal(ptr_w)
        waddr = Signal(ptr_w)  # the next word to read
        issue_left = Signal(32)  # words still to read
        remain = Signal(32)  # words still to send
        plen = Signal(range(max_packet + 1))  # the current packet's data beats
        pleft = Signal(range(max_packet + 1))  # its data beats still to send
        daddr = Signal(32)  # destination byte address of the next data beat

        # The read stage: the read port's output register holds one word, valid or not.
        st_valid = Signal()
        st_bad = Signal()  # it was out of range: sent as zeros
        take = Signal()  # a data beat leaves this cycle

        # (If/elif chains on state registers, not FSMs: Amaranth writes an FSM as a case per
        # signal over only the states that assign it, which Verilator's -Wall refuses as
        # CASEINCOMPLETE.)
        with m.If(eng == _E_IDLE):
            # Pick a complete packet (alternating when both are), check it, take its job.
            pick_cmd = c_full & (~r_full | ~prio_req)
            pick_req = r_full & (~c_full | prio_req)
            head = INSTR_HEAD(c_buf[:WORD])
            cargs = COPY.args(c_buf[WORD:])
            rargs = REQ_ARGS(r_buf)
            cmd_ok = ((c_hdr.cls == MsgClass.CMD) & (c_hdr.length == _CMD_WORDS)
                      & (c_count == 1 + _CMD_WORDS) & (head.cls == TileKind.MEMORY)
                      & (head.code == COPY.code) & (cargs.src.ebytes != 3))
            req_ok = ((r_hdr.cls == MsgClass.REQ) & (r_hdr.length == _REQ_WORDS)
                      & (r_count == 1 + _REQ_WORDS) & (rargs.src.ebytes != 3))
            with m.If(pick_cmd):
                m.d.sync += [c_full.eq(0), c_count.eq(0), prio_req.eq(1),
                             j_src.eq(cargs.src), j_dest.eq(cargs.dest_tile),
                             j_port.eq(Port.MEM), j_ack.eq(1), j_id.eq(head.id),
                             j_daddr.eq(cargs.dest_addr), j_owner.eq(self.index)]
            with m.If(pick_req):
                m.d.sync += [r_full.eq(0), r_count.eq(0), prio_req.eq(0),
                             j_src.eq(rargs.src), j_dest.eq(rargs.dest_tile),
                             j_port.eq(rargs.port), j_ack.eq(rargs.ack), j_id.eq(rargs.id),
                             j_daddr.eq(rargs.dest_addr), j_owner.eq(r_hdr.owner)]
            with m.If((pick_cmd & cmd_ok) | (pick_req & req_ok)):
                m.d.sync += eng.eq(_E_SETUP)
            with m.Elif(pick_cmd | pick_req):
                raise_error(m, raised, MemoryTileError.BAD_PACKET)

        with m.Elif(eng == _E_SETUP):
            row_bytes = j_src.cols << j_src.ebytes
            start = j_src.addr >> lwb
            m.d.sync += [
                row_words.eq((row_bytes + (wb - 1)) >> lwb),
                step.eq((j_src.stride << j_src.ebytes) >> lwb),
                col.eq(0), row_ptr.eq(start), waddr.eq(start), daddr.eq(j_daddr),
            ]
            m.d.sync += eng.eq(_E_SETUP2)

        with m.Elif(eng == _E_SETUP2):
            total = j_src.rows * row_words
            m.d.sync += [remain.eq(total), issue_left.eq(total)]
            m.d.sync += eng.eq(_E_HDR)

        with m.Elif(eng == _E_HDR):
            last_pkt = remain <= max_packet
            pkt_len = Mux(last_pkt, remain, max_packet)[:16]
            m.d.comb += [
                tx.valid.eq(1),
                tx.payload.data.eq(header_value(cls=MsgClass.DATA, port=j_port,
                                                ack=j_ack & last_pkt, owner=j_owner,
                                                length=pkt_len)),
            ]
            with m.If(tx.ready):
                m.d.sync += [plen.eq(pkt_len), pleft.eq(pkt_len)]
                m.d.sync += eng.eq(_E_INFO)

        with m.Elif(eng == _E_INFO):
            info = Signal(DATA_INFO)
            m.d.comb += [info.id.eq(j_id), info.nbytes.eq(plen << lwb),
                         tx.valid.eq(1), tx.payload.data.eq(info)]
            with m.If(tx.ready):
                m.d.sync += eng.eq(_E_ADDR)

        with m.Elif(eng == _E_ADDR):
            m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(daddr),
                         tx.payload.last.eq(plen == 0)]
            with m.If(tx.ready):
                with m.If(plen == 0):
                    m.d.sync += eng.eq(_E_IDLE)
                with m.Else():
                    m.d.sync += eng.eq(_E_DATA)

        with m.Elif(eng == _E_DATA):
            m.d.comb += [
                tx.valid.eq(st_valid), take.eq(st_valid & tx.ready),
                tx.payload.data.eq(Mux(st_bad, 0, rd.data)),
                tx.payload.last.eq(pleft == 1),
            ]
            with m.If(take):
                m.d.sync += [remain.eq(remain - 1), daddr.eq(daddr + wb),
                             pleft.eq(pleft - 1)]
                with m.If(pleft == 1):
                    with m.If(remain == 1):
                        m.d.sync += eng.eq(_E_IDLE)
                    with m.Else():
                        m.d.sync += eng.eq(_E_HDR)

        m.d.comb += tx.payload.dest.eq(j_dest)

        # The read ahead: issue a read whenever the stage is empty or its word leaves.
        active = eng >= _E_HDR
        can_load = ~st_valid | take
        issue = active & can_load & (issue_left != 0)
        m.d.comb += [rd.addr.eq(waddr), rd.en.eq(issue)]
        with m.If(can_load):
            m.d.sync += st_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [st_bad.eq(waddr >= words), issue_left.eq(issue_left - 1)]
            with m.If(waddr >= words):
                raise_error(m, raised, MemoryTileError.RANGE)
            with m.If(col + 1 == row_words):
                m.d.sync += [col.eq(0), row_ptr.eq(row_ptr + step), waddr.eq(row_ptr + step)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), waddr.eq(waddr + 1)]

        # -- writes -------------------------------------------------------------------------
        rx, done = self.data_rx, self.done_tx
        rhdr = MSG_HEADER(rx.payload.data[:WORD])
        rinfo = DATA_INFO(rx.payload.data[:WORD])
        w_owner = Signal(8)
        w_ack = Signal()
        w_len = Signal(16)
        w_drop = Signal()  # not for the scratchpad: consume only
        w_err = Signal()  # this packet raised a flag
        w_id = Signal(16)
        w_nbytes = Signal(16)
        w_ptr = Signal(WORD + 1)  # word address of the next beat
        w_soff = Signal(range(wb))  # start byte in the first word
        w_rem = Signal(17)  # bytes from the next word's lane 0 to the range's end
        w_first = Signal()
        w_left = Signal(16)  # data beats the header announced, still to come
        wst = Signal(range(_W_DONE_WORD + 1))

        def end_packet():
            with m.If(w_ack):
                m.d.sync += wst.eq(_W_DONE_HDR)
            with m.Else():
                m.d.sync += wst.eq(_W_HDR)

        def bad_packet():
            raise_error(m, raised, MemoryTileError.BAD_PACKET)
            m.d.sync += w_err.eq(1)

        with m.If(wst == _W_HDR):
            m.d.comb += rx.ready.eq(1)
            with m.If(rx.valid):
                drop = (rhdr.cls != MsgClass.DATA) | (rhdr.port != Port.MEM)
                m.d.sync += [w_owner.eq(rhdr.owner), w_ack.eq(rhdr.ack),
                             w_len.eq(rhdr.length), w_drop.eq(drop),
                             w_err.eq(drop | rhdr.unit)]
                with m.If(drop | rx.payload.last):
                    raise_error(m, raised, MemoryTileError.BAD_PACKET)
                with m.If(~rx.payload.last):
                    m.d.sync += wst.eq(_W_INFO)

        with m.Elif(wst == _W_INFO):
            m.d.comb += [writing.eq(1), rx.ready.eq(1)]
            with m.If(rx.valid):
                m.d.sync += [w_id.eq(rinfo.id), w_nbytes.eq(rinfo.nbytes)]
                with m.If(rx.payload.last):
                    bad_packet()
                    end_packet()
                with m.Else():
                    m.d.sync += wst.eq(_W_ADDR)

        with m.Elif(wst == _W_ADDR):
            m.d.comb += [writing.eq(1), rx.ready.eq(1)]
            with m.If(rx.valid):
                start = rx.payload.data[:WORD]
                m.d.sync += [w_ptr.eq(start >> lwb), w_soff.eq(start[:lwb]),
                             w_rem.eq(start[:lwb] + w_nbytes), w_first.eq(1),
                             w_left.eq(w_len)]
                with m.If(rx.payload.last):
                    with m.If(w_len != 0):
                        bad_packet()
                    end_packet()
                with m.Else():
                    m.d.sync += wst.eq(_W_DATA)

        with m.Elif(wst == _W_DATA):
            m.d.comb += [writing.eq(1), rx.ready.eq(1)]
            lo = Mux(w_first, w_soff, 0)  # (lane wb - 1 is never below it)
            lanes = Cat(*(((lo <= b) if b < wb - 1 else 1) & (w_rem > b) for b in range(wb)))
            in_pkt = w_left != 0
            in_range = w_ptr < words
            m.d.comb += [wr.addr.eq(w_ptr), wr.data.eq(rx.payload.data)]
            with m.If(rx.valid):
                with m.If(~w_drop & in_pkt & in_range):
                    m.d.comb += wr.en.eq(lanes)
                with m.If(~w_drop & in_pkt & ~in_range):
                    raise_error(m, raised, MemoryTileError.RANGE)
                    m.d.sync += w_err.eq(1)
                with m.If(~in_pkt):
                    bad_packet()
                m.d.sync += [w_ptr.eq(w_ptr + 1), w_first.eq(0),
                             w_rem.eq(Mux(w_rem > wb, w_rem - wb, 0))]
                with m.If(in_pkt):
                    m.d.sync += w_left.eq(w_left - 1)
                with m.If(rx.payload.last):
                    with m.If(w_left > 1):  # ended early
                        bad_packet()
                    end_packet()

        with m.Elif(wst == _W_DONE_HDR):
            m.d.comb += [
                writing.eq(1), done.valid.eq(1),
                done.payload.data.eq(header_value(cls=MsgClass.DONE, owner=w_owner,
                                                  length=1)),
            ]
            with m.If(done.ready):
                m.d.sync += wst.eq(_W_DONE_WORD)

        with m.Elif(wst == _W_DONE_WORD):
            word = Signal(DONE_WORD)
            m.d.comb += [
                word.id.eq(w_id), word.tile.eq(w_owner),
                word.error.eq(Mux(w_err, AccelError.UNIT, 0)),
                writing.eq(1), done.valid.eq(1), done.payload.data.eq(word),
                done.payload.last.eq(1),
            ]
            with m.If(done.ready):
                m.d.sync += wst.eq(_W_HDR)

        m.d.comb += done.payload.dest.eq(self.control)

        if self.backdoor:  # after the write engine's assignments: these take the port
            poke = self.poke
            m.d.comb += poke.ready.eq(~writing)
            with m.If(poke.valid & ~writing):
                m.d.comb += [wr.addr.eq(poke.payload.addr), wr.data.eq(poke.payload.data),
                             wr.en.eq(poke.payload.en)]
        return m

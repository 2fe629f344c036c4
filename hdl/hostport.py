"""HostPort: the accelerator's end of the host link, byte stream in, checked frames out.

The protocol is :mod:`heterotron.hdl.contract.hostlink`; every constant of it (``FLAG``,
``ESC``, ``ESC_XOR``, ``CRC_POLY``, ``CRC_INIT``, ``OVERHEAD``, :class:`Status`) comes from there.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract import hostlink
from heterotron.hdl.contract.hostlink import (
    CRC_INIT,
    CRC_POLY,
    ESC,
    ESC_XOR,
    FLAG,
    OVERHEAD,
    Status,
)
from heterotron.hdl.contract.params import Param, ParamError, Parameterised
from heterotron.hdl.ports import error_ports, raise_error, sticky_errors

__all__ = ["HostPort", "HostPortError", "crc16_masks", "crc16_next", "BYTE_LAYOUT",
           "CMD_LAYOUT"]

#: One byte of a frame on ``resp``: the byte and whether it ends the frame.
BYTE_LAYOUT = data.StructLayout({"data": 8, "last": 1})
#: One byte of a frame on ``cmd``: also the frame's length (op, seq and payload bytes; the
#: same on every byte of the frame), so the control logic can size what it sends before the
#: frame's end.
CMD_LAYOUT = data.StructLayout({"data": 8, "last": 1, "length": 16})

_CRC_WIDTH = 16
# Phases of the transmitter: opening FLAG, body, the two CRC bytes, closing FLAG.
_IDLE, _BODY, _CRC_LO, _CRC_HI, _END = range(5)


def crc16_masks(poly: int = CRC_POLY, width: int = _CRC_WIDTH) -> list[tuple[int, int]]:
    """The bytewise CRC update as a matrix over GF(2), built from ``poly``.

    Bit ``i`` of the next CRC is the XOR of the bits of the current CRC selected by
    ``masks[i][0]`` and of the input byte selected by ``masks[i][1]``: the eight shift-and-XOR
    steps of :func:`heterotron.hdl.contract.hostlink.crc16` (MSB first, no reflection), run
    on symbols. The CRC is linear in ``(crc, byte)``, so this is exact."""
    # Each bit is a set of symbols: ("c", k) for crc bit k, ("b", k) for byte bit k; XOR is
    # the symmetric difference.
    bits = [{("c", k)} for k in range(width)]
    for k in range(8):
        bits[width - 8 + k] ^= {("b", k)}
    for _ in range(8):
        top = bits[width - 1]
        bits = [set() if i == 0 else set(bits[i - 1]) for i in range(width)]
        for i in range(width):
            if (poly >> i) & 1:
                bits[i] ^= top
    masks = []
    for s in bits:
        masks.append((sum(1 << k for kind, k in s if kind == "c"),
                      sum(1 << k for kind, k in s if kind == "b")))
    return masks


def crc16_next(crc: Value, byte: Value, poly: int = CRC_POLY) -> Value:
    """The CRC after ``byte`` (an 8-bit value), combinationally: one XOR tree per bit, from
    :func:`crc16_masks`."""
    out = []
    for cmask, bmask in crc16_masks(poly, len(crc)):
        terms = [crc[k] for k in range(len(crc)) if (cmask >> k) & 1]
        terms += [byte[k] for k in range(8) if (bmask >> k) & 1]
        out.append(Cat(*terms).xor() if terms else Const(0, 1))
    return Cat(*out)


class HostPortError(enum.IntFlag):
    """Bits of :class:`HostPort`'s sticky ``error``; each case is also answered to the host
    (except ``LOST``, which says an answer could not be queued)."""

    BAD_CRC = 1    # a frame failed its CRC or was shorter than OVERHEAD (answered BAD_CRC)
    TOO_LONG = 2   # a frame longer than max_payload + OVERHEAD (answered BAD_COMMAND)
    TIMEOUT = 4    # a frame paused for `timeout` cycles mid-frame (answered TIMEOUT)
    OVERRUN = 8    # a good frame found the frame buffer full (answered QUEUE_FULL)
    LOST = 16      # an answer the port owed was dropped: its answer queue was full


class HostPort(Parameterised, wiring.Component):
    """The host link's receiver and transmitter: byte stuffing, framing and CRC in hardware,
    only CRC-checked frames passed on, every refused frame answered by the port itself.

    **Receive.** ``rx`` bytes are unstuffed one per cycle (``rx.ready`` is always high: a
    UART cannot be stalled, and nothing here needs to). A ``FLAG`` ends the frame in
    progress; empty frames are ignored. The CRC is computed as the bytes arrive: the port
    keeps the last three bytes in a shift register, the running CRC of all bytes but the last
    two, and writes each byte into the frame buffer three bytes late, so that at the closing
    ``FLAG`` the buffer holds exactly ``op, seq, payload``, its final byte written with
    ``last`` set, and the CRC (the last two bytes, little-endian) is compared with the
    running CRC. Bytes before the first ``FLAG`` after reset are not a frame (dropped, as
    :func:`~heterotron.hdl.contract.hostlink.unstuff_frames` drops them).

    **Buffering.** The frame buffer is one ``amaranth.lib.memory.Memory`` ring of
    :attr:`buffer_depth` bytes (a power of two, at least two frames of ``max_payload + 2``
    stored bytes), holding the frames that wait on ``cmd`` back to back, each released only
    once its CRC has checked (a bad frame is rolled back). So while one frame of any size
    waits on (or is being read out of) ``cmd``, at least one more frame of any size is
    received whole; small frames queue many deep. A good frame that finds the ring full is
    not lost silently: it is dropped whole and answered :attr:`Status.QUEUE_FULL` with its
    seq (``OVERRUN``), so the host may send it again.

    **Refused frames**, each answered by the port with a response of no payload whose seq is
    the frame's second byte (0 if it has fewer than two), and nothing on ``cmd``:

    * a CRC mismatch, or fewer than ``OVERHEAD`` bytes: ``BAD_CRC`` (``BAD_CRC`` flag);
    * more than ``max_payload + OVERHEAD`` bytes: ``BAD_COMMAND``, sent as soon as the byte
      too many arrives; the rest, up to the next ``FLAG``, is dropped unanswered
      (``TOO_LONG``);
    * no ``rx`` byte for ``timeout`` consecutive cycles after a frame's first byte (an
      ``ESC`` counts) and before its ``FLAG``: ``TIMEOUT``; the partial frame is dropped, and
      so is whatever follows up to the next ``FLAG`` (the rest of the same frame: the host
      has had its one answer for it) (``TIMEOUT``);
    * a good frame with no room: ``QUEUE_FULL`` (``OVERRUN``), as above.

    So every non-empty frame the host sends gets exactly one answer: either it appears on
    ``cmd`` (and the control logic answers it on ``resp``), or the port answers it. The
    port's own answers wait in a queue of :attr:`ANSWERS` entries; an answer that finds it
    full (a host sending many bad frames while ``tx`` is stalled) is dropped and ``LOST`` is
    raised, the one case a frame goes unanswered. A host with at most :attr:`ANSWERS` frames
    awaiting an answer never sees it (each such frame owes at most one queued answer).

    **Transmit.** The port's answers and the ``resp`` frames are merged onto ``tx`` a whole
    frame at a time, taking turns when both wait (order between the two sources is not kept;
    within each, it is). Each frame goes out byte for byte as
    ``stuff(response_frame(status, seq, payload))`` of the contract gives it: ``FLAG``, the
    stuffed bytes and CRC (computed on the fly), ``FLAG``; one byte per cycle while ``tx``
    is ready. The port's answer for a refused frame has no payload.

    Parameters
    ----------
    max_payload : int
        Largest payload of a command frame, in bytes: 4 to 4096, a multiple of 4 (default
        the protocol's ``MAX_PAYLOAD``).
    timeout : int
        Cycles without a byte after which a frame in progress is dropped, 16 to 2**24.

    Members
    -------
    rx : In(stream.Signature(unsigned(8)))
        Wire bytes from the host (stuffed, with ``FLAG``). ``ready`` is always high.
    tx : Out(stream.Signature(unsigned(8)))
        Wire bytes to the host; a registered output that obeys ``ready``.
    cmd : Out(stream.Signature(BYTE_LAYOUT))
        Each good command frame: ``op``, ``seq``, payload (CRC removed), ``last`` on the final
        byte; in the order the frames arrived.
    resp : In(stream.Signature(BYTE_LAYOUT))
        Response frames from the control logic: ``status``, ``seq``, payload, ``last`` on
        the final byte. The port adds the CRC, the stuffing and the ``FLAG`` bytes.
    error : Out(5), error_clear : In(1)
        Sticky :class:`HostPortError` flags (:mod:`heterotron.hdl.ports`).

    Latency: :attr:`latency` cycles from the edge that takes a good frame's closing ``FLAG``
    to its first byte valid on ``cmd`` (when ``cmd`` is free); one byte per cycle on every
    stream.
    """

    PARAMS = (
        Param("max_payload", int, hostlink.MAX_PAYLOAD,
              "largest command payload in bytes (a multiple of 4)", 4, 4096),
        Param("timeout", int, 65536,
              "cycles without a byte after which a partial frame is dropped", 16, 1 << 24),
    )

    #: Depth of the queue of the port's own answers.
    ANSWERS = 8
    #: Good frames that may wait on ``cmd`` at once (their lengths are queued); one more is
    #: answered ``QUEUE_FULL``, as when the ring is full.
    FRAMES = 16

    @classmethod
    def check_params(cls, p):
        if p["max_payload"] % 4:
            raise ParamError(f"max_payload must be a multiple of 4 (whole 32-bit words), "
                             f"not {p['max_payload']}")

    def __init__(self, **given):
        self._take_params(given)
        super().__init__({
            "rx": In(stream.Signature(unsigned(8))),
            "tx": Out(stream.Signature(unsigned(8))),
            "cmd": Out(stream.Signature(CMD_LAYOUT)),
            "resp": In(stream.Signature(BYTE_LAYOUT)),
            **error_ports(HostPortError),
        })

    @property
    def frame_max(self) -> int:
        """Largest frame accepted, in bytes (unstuffed, CRC included)."""
        return self.max_payload + OVERHEAD

    @property
    def buffer_depth(self) -> int:
        """Bytes of the frame ring: the power of two holding two largest frames (each stored
        as ``op, seq, payload``: ``max_payload + 2`` bytes)."""
        return 1 << (2 * (self.max_payload + 2) - 1).bit_length()

    @property
    def latency(self) -> int:
        """Cycles from a good frame's closing ``FLAG`` to its first byte on ``cmd``: the
        commit, taking its length, then the buffer read."""
        return 3

    def elaborate(self, platform):
        m = Module()
        raised = sticky_errors(m, self.error, self.error_clear)
        rx, tx, cmd, resp = self.rx, self.tx, self.cmd, self.resp
        fmax = self.frame_max
        depth = self.buffer_depth
        abits = depth.bit_length() - 1

        # -- frame ring: written by the receiver, read out on ``cmd`` ------------------------
        m.submodules.ring = ring = Memory(shape=BYTE_LAYOUT, depth=depth, init=[])
        wr = ring.write_port()
        rd = ring.read_port()
        # Pointers one bit wider than an address: equal means empty, equal but for the top
        # bit means full.
        start = Signal(abits + 1, name="commit_ptr")  # end of the released frames
        wptr = Signal(abits + 1, name="write_ptr")    # next byte of the frame in progress
        rptr = Signal(abits + 1, name="read_ptr")     # next byte to read out
        full = Signal()
        m.d.comb += [
            full.eq((wptr[:abits] == rptr[:abits]) & (wptr[abits] != rptr[abits])),
            wr.addr.eq(wptr[:abits]),
        ]

        m.submodules.lengths = lengths = SyncFIFO(width=16, depth=self.FRAMES)
        length = Signal(16, name="frame_length")
        need_len = Signal(init=1)  # between frames: the next frame's length not yet taken
        advance = Signal()
        avail = Signal()
        m.d.comb += [
            advance.eq(~cmd.valid | cmd.ready),
            # A byte is read out only once its frame's length is taken (and, at a frame's
            # end, the next one's is not taken in the cycle its last byte leaves).
            avail.eq((rptr != start) & ~need_len & ~(cmd.valid & cmd.ready & cmd.payload.last)),
            rd.addr.eq(rptr[:abits]),
            rd.en.eq(advance),
            cmd.payload.data.eq(rd.data.data),
            cmd.payload.last.eq(rd.data.last),
        ]
        with m.If(advance):
            m.d.sync += cmd.valid.eq(avail)
            with m.If(avail):
                m.d.sync += rptr.eq(rptr + 1)
        # The released frames' lengths, in order. The next frame's is taken into ``length``
        # before its first byte is read out and held until the frame after it, so ``length``
        # is a defined value at every cycle (a reader may look at it after ``last``).
        m.d.comb += [cmd.payload.length.eq(length),
                     lengths.r_en.eq(need_len & lengths.r_rdy)]
        with m.If(need_len & lengths.r_rdy):
            m.d.sync += [length.eq(lengths.r_data), need_len.eq(0)]
        with m.If(cmd.valid & cmd.ready & cmd.payload.last):
            m.d.sync += need_len.eq(1)

        # -- the port's own answers -------------------------------------------------------
        m.submodules.answers = answers = SyncFIFO(width=16, depth=self.ANSWERS)
        ans = Signal()
        ans_status = Signal(8)
        ans_seq = Signal(8)
        m.d.comb += [answers.w_data.eq(Cat(ans_status, ans_seq)),
                     answers.w_en.eq(ans & answers.w_rdy)]
        with m.If(ans & ~answers.w_rdy):
            raise_error(m, raised, HostPortError.LOST)

        def answer(status: Status, seq) -> None:
            m.d.comb += [ans.eq(1), ans_status.eq(int(status)), ans_seq.eq(seq)]

        # -- receiver ---------------------------------------------------------------------
        m.d.comb += rx.ready.eq(1)
        hunt = Signal(init=1)        # dropping bytes until the next FLAG
        esc = Signal()               # the previous wire byte was ESC
        n = Signal(range(fmax + 1))  # unstuffed bytes of the frame so far
        w1, w2, w3 = (Signal(8, name=f"last{k}") for k in (1, 2, 3))  # newest first
        crc = Signal(_CRC_WIDTH, init=CRC_INIT)  # CRC of all bytes but the last two
        seq = Signal(8)
        ovf = Signal()               # this frame found the ring full
        timer = Signal(range(self.timeout))

        seq_or_0 = Mux(n >= 2, seq, 0)
        byte = rx.payload
        datum = Mux(esc, byte ^ ESC_XOR, byte)

        def restart() -> None:
            """Forget the frame in progress (the ring rolls back to the committed end)."""
            m.d.sync += [n.eq(0), esc.eq(0), ovf.eq(0), crc.eq(CRC_INIT), timer.eq(0),
                         wptr.eq(start)]

        with m.If(rx.valid):
            m.d.sync += timer.eq(0)
            with m.If(hunt):
                with m.If(byte == FLAG):
                    m.d.sync += hunt.eq(0)
                    restart()
            with m.Elif(byte == FLAG):
                restart()
                with m.If(n == 0):
                    pass  # an empty frame (a dangling ESC alone is nothing, as unstuffed)
                with m.Elif((n < OVERHEAD) | (crc != Cat(w2, w1))):
                    answer(Status.BAD_CRC, seq_or_0)
                    raise_error(m, raised, HostPortError.BAD_CRC)
                with m.Elif(ovf | full | ~lengths.w_rdy):
                    answer(Status.QUEUE_FULL, seq)
                    raise_error(m, raised, HostPortError.OVERRUN)
                with m.Else():
                    m.d.comb += [wr.en.eq(1), wr.data.data.eq(w3), wr.data.last.eq(1),
                                 lengths.w_en.eq(1), lengths.w_data.eq(n - 2)]
                    m.d.sync += [start.eq(wptr + 1), wptr.eq(wptr + 1)]  # released
            with m.Elif((byte == ESC) & ~esc):
                m.d.sync += esc.eq(1)
            with m.Elif(n == fmax):
                answer(Status.BAD_COMMAND, seq)
                raise_error(m, raised, HostPortError.TOO_LONG)
                m.d.sync += hunt.eq(1)
                restart()
            with m.Else():
                m.d.sync += [esc.eq(0), n.eq(n + 1), w1.eq(datum), w2.eq(w1), w3.eq(w2)]
                with m.If(n == 1):
                    m.d.sync += seq.eq(datum)
                with m.If(n >= 2):
                    m.d.sync += crc.eq(crc16_next(crc, w2))
                with m.If((n >= 3) & ~ovf):
                    with m.If(full):
                        m.d.sync += ovf.eq(1)
                    with m.Else():
                        m.d.comb += [wr.en.eq(1), wr.data.data.eq(w3), wr.data.last.eq(0)]
                        m.d.sync += wptr.eq(wptr + 1)
        with m.Elif(~hunt & ((n != 0) | esc)):
            with m.If(timer == self.timeout - 1):
                answer(Status.TIMEOUT, seq_or_0)
                raise_error(m, raised, HostPortError.TIMEOUT)
                m.d.sync += hunt.eq(1)
                restart()
            with m.Else():
                m.d.sync += timer.eq(timer + 1)

        # -- transmitter: whole frames from the answer queue or ``resp`` --------------------
        load = Signal()
        m.d.comb += load.eq(~tx.valid | tx.ready)
        pend = Signal()              # the second byte of an escape waits
        pend_byte = Signal(8)
        tcrc = Signal(_CRC_WIDTH)
        from_queue = Signal()        # the frame going out is one of the port's answers
        last_queue = Signal()        # the previous frame was (turns when both wait)
        second = Signal()            # the answer's seq byte is next
        phase = Signal(range(_END + 1), init=_IDLE)
        q_status, q_seq = answers.r_data[:8], answers.r_data[8:]

        def send(value, stuffed=True) -> None:
            if not stuffed:
                m.d.sync += [tx.valid.eq(1), tx.payload.eq(value)]
                return
            special = (value == FLAG) | (value == ESC)
            m.d.sync += [tx.valid.eq(1), tx.payload.eq(Mux(special, ESC, value)),
                         pend.eq(special), pend_byte.eq(value ^ ESC_XOR)]

        with m.If(load):
            m.d.sync += tx.valid.eq(0)
            with m.If(pend):
                m.d.sync += pend.eq(0)
                send(pend_byte, stuffed=False)
            with m.Else():
                # An if/elif chain on a state register, not an FSM or a Switch: Amaranth
                # writes those as a case per signal, of only the states that assign it,
                # which Verilator's -Wall refuses (CASEINCOMPLETE).
                with m.If(phase == _IDLE):
                    pick_queue = answers.r_rdy & (~resp.valid | ~last_queue)
                    with m.If(answers.r_rdy | resp.valid):
                        send(FLAG, stuffed=False)
                        m.d.sync += [tcrc.eq(CRC_INIT), from_queue.eq(pick_queue),
                                     last_queue.eq(pick_queue), second.eq(0),
                                     phase.eq(_BODY)]
                with m.Elif(phase == _BODY):
                    with m.If(from_queue):
                        value = Mux(second, q_seq, q_status)
                        send(value)
                        m.d.sync += [tcrc.eq(crc16_next(tcrc, value)), second.eq(1)]
                        with m.If(second):
                            m.d.comb += answers.r_en.eq(1)
                            m.d.sync += phase.eq(_CRC_LO)
                    with m.Elif(resp.valid):
                        m.d.comb += resp.ready.eq(1)
                        send(resp.payload.data)
                        m.d.sync += tcrc.eq(crc16_next(tcrc, resp.payload.data))
                        with m.If(resp.payload.last):
                            m.d.sync += phase.eq(_CRC_LO)
                with m.Elif(phase == _CRC_LO):
                    send(tcrc[:8])
                    m.d.sync += phase.eq(_CRC_HI)
                with m.Elif(phase == _CRC_HI):
                    send(tcrc[8:])
                    m.d.sync += phase.eq(_END)
                with m.Else():  # _END
                    send(FLAG, stuffed=False)
                    m.d.sync += phase.eq(_IDLE)
        return m

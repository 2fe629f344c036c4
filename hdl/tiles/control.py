"""The control tile: host commands, the program queue, instruction checks and issue, DONE sink,
status, errors and per-tile counters.

:class:`ControlTile` is the accelerator's only host-facing tile. It takes the host's command
frames (already unframed and CRC-checked by :class:`~heterotron.hdl.hostport.HostPort`),
answers each with exactly one response, reads and writes the scratchpads for the host over the
network, holds the program queue and runs the program: it checks every instruction, issues the
good ones to their tiles as CMD packets (at most one outstanding per tile, the credit of the
contract) and retires them when their DONE arrives.

Host commands (:mod:`heterotron.hdl.contract.hostlink`; fields little-endian)
-----------------------------------------------------------------------------
``length`` below is the frame's byte count on ``host_cmd`` (op + seq + payload).

* ``PING`` (length 2) -> ``OK`` + ``MAGIC u32, VERSION u16, tiles u8, word_bytes u8,
  config_hash u32``.
* ``WRITE_MEM`` ``addr u32, data``: ``n = length - 6``; ``n >= 4``, ``n % 4 == 0`` and
  ``addr % 4 == 0`` else ``BAD_COMMAND``; window ``j = addr >> MEM_WINDOW_BITS`` must be a
  memory tile (description order) and ``(addr & window mask) + n`` within its ``kbytes * 1024``
  else ``BUS_ERROR`` (a refused frame is still consumed). Else the bytes go out as DATA
  packets (``Port.MEM``, owner = the control tile, id 0, ``start`` = the packet's first byte's
  local address, at most ``max_packet`` data beats, split on word boundaries, bytes at their
  natural lanes, unused lanes 0), ``ack`` on the last packet only; the answer (``OK``) waits for
  the DONE whose ``tile`` is the control tile.
* ``READ_MEM`` ``addr u32, nbytes u16`` (length 8): ``nbytes >= 4``, ``% 4 == 0``,
  ``<= MAX_PAYLOAD``, ``addr % 4 == 0`` else ``BAD_COMMAND``; window checks else
  ``BUS_ERROR``. Else one REQ (owner control, ``src = {addr: local addr rounded down to a word,
  rows 1, cols: words_covering * word_bytes / 4, stride = cols, ebytes 2 (4 bytes), mem}``,
  ``dest_tile`` control, ``port`` HOST, ack 0, id 0, dest_addr 0); the DATA beats of packets
  for ``Port.HOST`` are written to a read buffer of ``MAX_PAYLOAD / word_bytes + 1`` words
  (``data_rx`` is always ready) and, once ``words_covering`` beats are in, the answer is
  ``OK`` + the ``nbytes`` requested.
* ``WRITE_PROG`` ``words u32 x n``: ``length - 2`` a multiple of 4 and ``n >= 1`` else
  ``BAD_COMMAND``. The burst is judged against the free space when the frame starts (the
  queue only drains meanwhile): if ``n`` words do not fit, nothing is queued, ``QUEUE`` is
  raised and the status is ``QUEUE_FULL``. Else the words are written behind a speculative
  pointer and committed once the frame has ended: ``OK`` + free words u16 after the burst.
* ``READ_REG`` ``reg u16`` (length 4) -> ``OK`` + value u32, or ``BUS_ERROR`` for a register
  that does not exist. ``WRITE_REG`` ``reg u16, value u32`` (length 8): only ``ERROR`` is
  writable (1s clear those flags in ``ERROR`` and the same bits of every tile's STATUS error
  field; a flag raised in the same cycle stays set); any other register -> ``BUS_ERROR``.
* An unknown op or a payload of the wrong length -> ``BAD_COMMAND``. A response with a status
  other than ``OK`` has no payload. Frames are handled one at a time: ``host_cmd`` is not
  ready while a command executes or its response is sent.

Registers (:class:`~heterotron.hdl.contract.accel.Reg`): ``ID`` MAGIC, ``VERSION``,
``CONFIG_HASH``, ``STATUS`` (bit 0 running, bit 1 queue empty, bit 2 any ``ERROR`` flag),
``ERROR``, ``RETIRED``, ``LAST_ID``, ``QUEUE_FREE``, ``CYCLES`` (cycles since reset, low 32
bits). Per tile ``i`` at ``TILE_REG_BASE + i * TILE_REG_STRIDE +``
:class:`~heterotron.hdl.contract.accel.TileReg`: ``STATUS`` (bit 0: the tile has an
outstanding instruction; bits 8..15: OR of the ``error`` fields of its DONEs since those bits
were last cleared), ``BUSY`` (cycles with an outstanding instruction), ``STALLED`` (cycles the
program's head tile instruction waited because this tile had one outstanding), ``ITEMS``
(DONEs that retired an instruction of the tile), ``LAST_ID`` (id of the last). The control
tile's own tile registers read 0.

Program execution (the semantics the golden interpreter follows)
----------------------------------------------------------------
The program queue holds ``queue_depth`` 32-bit words. The executor takes one instruction at a
time, in order:

1. **Fetch.** It waits for the head word. Its ``(cls, code)`` names an opcode of
   :data:`~heterotron.hdl.contract.accel.OPCODES`; an unknown one raises ``ILLEGAL`` and
   retires (``RETIRED += 1``, ``LAST_ID`` = the head's ``id`` field), consuming only the head
   word. A known one waits until all its argument words are queued (an incomplete
   instruction is not an error; it waits, and the tile stays ``running``), then the whole
   instruction is taken out of the queue.
2. **Static checks**, in this order; the first failing one raises its one flag and the
   instruction retires (``RETIRED += 1``, ``LAST_ID`` = its id) doing nothing else:

   ``ILLEGAL``
     the tile index is not a tile, or its kind is not the opcode's class (``NOP``/``WAIT``
     must name the control tile); any ``rsv`` field of the head or the arguments (nested
     ``REGION.rsv`` too) not zero; ``WAIT``'s mask names a tile that does not exist;
     ``COPY``: ``src.ebytes`` is 3; ``LOAD``: ``port`` not A, B or BIAS, ``src.ebytes`` not the
     container code of the port's operand width (``a_width``, ``b_width``, ``bias_width``),
     a dimension 0 or above its maximum (A: ``m, k = rows, cols``, transposed ``cols, rows``;
     B: ``k, n = rows, cols``, transposed ``cols, rows``; BIAS: ``rows == 1``, ``trans == 0``,
     ``n = cols``); ``SCALE``: the tile has no requantizer, ``lane >= cols``,
     ``e > max_shift`` or ``m >= 2 ** m_width`` (the requantizer's defaults); ``RUN``:
     ``dest.ebytes`` is not the container code of the result width (``out_width`` with
     requant, else ``acc_width``).
   ``ADDRESS`` (the region: ``LOAD``/``COPY`` src, ``RUN`` dest)
     ``mem`` not a memory tile (``COPY``: not the instruction's own tile); ``rows == 0`` or
     ``cols == 0``; ``addr % word_bytes != 0``; ``rows > 1`` and (``stride * eb`` not a
     multiple of ``word_bytes`` or ``stride < cols``);
     ``addr + ((rows - 1) * stride + cols) * eb`` above the memory's bytes. ``COPY`` also:
     ``dest_tile`` not a memory tile, ``dest_addr % word_bytes != 0``, or
     ``dest_addr + rows * row_words * word_bytes`` above its bytes
     (``row_words = ceil(cols * eb / word_bytes)``).
3. **Execute.** ``NOP`` retires at once. ``WAIT`` (mask; 0 = all tiles) retires once no tile
   of the mask has an outstanding instruction. A tile instruction waits until its tile has
   none outstanding (its ``STALLED`` counts those cycles; a ``WAIT``'s are not counted), is
   then *issued* (the tile marked outstanding) and sent as one CMD packet
   (``MSG_HEADER(cls CMD, owner control, length n)`` and its ``n`` words as queued); the
   executor goes on with the next instruction at once.
   It retires when a DONE for its tile arrives: ``RETIRED += 1``, ``LAST_ID`` = the DONE's
   id, the tile's ``ITEMS += 1`` and ``LAST_ID``, outstanding cleared, the DONE's ``error``
   OR-ed into ``ERROR`` (its low ``len(AccelError)`` bits) and into the tile's STATUS.

A DONE whose ``tile`` is the control tile acknowledges a host ``WRITE_MEM``; any other DONE
for a tile with nothing outstanding (or no such tile) is ignored. When a DONE and a program
retire (``NOP``, ``WAIT`` or a refused instruction) fall in one cycle, ``RETIRED`` counts both
and ``LAST_ID`` takes the program's.

**Watchdog.** While ``running`` (the queue holds words, an instruction is in hand, a tile has
one outstanding, or a host ``WRITE_MEM``/``READ_MEM`` frame has been taken and waits for its
data or DONE), the tile counts consecutive cycles without an issue, a retire, a DONE, a
``data_rx`` beat or a ``progress`` pulse; the ``watchdog``-th such cycle raises ``WATCHDOG``.
``watchdog`` (the output) is that ``ERROR`` flag. Nothing stops: a late DONE still retires.

**Timing** (correctness first): a response byte takes two cycles (the read buffer's read),
a queued word two cycles to fetch, the checks two more; a DONE is counted two cycles after
its word arrives. ``host_cmd``'s ``length`` is trusted: a frame's ``last`` must come with its
``length``-th byte.

Members
-------
host_cmd : In(stream of {data 8, last 1, length 16})
host_resp : Out(stream of {data 8, last 1})
cmd_tx, req_tx : Out(tx_word(32)); data_tx : Out(tx_word(flit_width))
data_rx : In(rx_word(flit_width)); done_rx : In(rx_word(32)) (both always ready)
progress : In(1); running, watchdog : Out(1); error : Out(len(AccelError))
"""

from __future__ import annotations

from functools import reduce
from operator import or_
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.accel import (
    DATA_INFO,
    DONE_WORD,
    EBYTES,
    INSTR_HEAD,
    MAGIC,
    MEM_WINDOW_BITS,
    MSG_HEADER,
    OPCODES,
    REGION,
    REQ_ARGS,
    SFU_LN_MAX_SHIFT,
    SFU_OUT_BITS,
    TILE_REG_BASE,
    TILE_REG_STRIDE,
    VERSION,
    WORD,
    AccelError,
    Description,
    MsgClass,
    Port,
    Reg,
    SfuTable,
    TileKind,
    TileReg,
    elem_bytes,
)
from heterotron.hdl.contract.hostlink import MAX_PAYLOAD, Op, Status
from heterotron.hdl.contract.pim import ADC_FRAC
from heterotron.hdl.requantizer import Requantizer
from heterotron.hdl.tiles.common import header_value, packet_beat, rx_word, tx_word

__all__ = ["ControlTile", "HOST_CMD_LAYOUT", "HOST_RESP_LAYOUT", "CHECKED_REGIONS", "rsv_mask"]

#: One byte of a good command frame from the host port, with the frame's byte count.
HOST_CMD_LAYOUT = data.StructLayout({"data": 8, "last": 1, "length": 16})
#: One byte of a response frame to the host port.
HOST_RESP_LAYOUT = data.StructLayout({"data": 8, "last": 1})

assert all(b == 1 << i for i, b in enumerate(EBYTES)), "ebytes code c means 1 << c bytes"
assert TILE_REG_STRIDE & (TILE_REG_STRIDE - 1) == 0 and len(TileReg) <= TILE_REG_STRIDE

#: The requantizer inside an SA tile's engine runs with its defaults for these.
_REQUANT = {q.name: q.default for q in Requantizer.PARAMS}


def rsv_mask(layout: data.StructLayout, base: int = 0) -> int:
    """Bit mask of every field named ``rsv`` in ``layout`` (nested layouts too), at ``base``."""
    mask = 0
    for name, fld in layout:
        if isinstance(fld.shape, data.StructLayout):
            mask |= rsv_mask(fld.shape, base + fld.offset)
        elif name == "rsv":
            mask |= ((1 << fld.width) - 1) << (base + fld.offset)
    return mask


#: The regions of each opcode the ADDRESS checks look at, in order: ``(field, flag)``, the
#: region checked only while the flag field is 1 (``None``: always).
CHECKED_REGIONS = {
    "COPY": (("src", None),), "LOAD": (("src", None),), "RUN": (("dest", None),),
    "PROGRAM": (("src", None),), "MVM": (("src", None), ("dest", "out")),
    "TABLE": (("src", None),), "REQUANT": (("src", None), ("dest", None), ("y", "res")),
    "SOFTMAX": (("src", None), ("dest", None)), "GELU": (("src", None), ("dest", None)),
    "LAYERNORM": (("src", None), ("dest", None), ("res", None)),
}
_SLOTS = max(len(v) for v in CHECKED_REGIONS.values())


def _code(width: int) -> int:
    """The ebytes code of the container of a ``width``-bit element."""
    return EBYTES.index(elem_bytes(width))


def _any(values):
    values = list(values)
    return reduce(or_, values) if values else Const(0, 1)


def _select(index, values):
    """``values[index]`` as a chain of multiplexers (an ``Array`` would become a Verilog
    ``case`` of only the listed values, which Verilator's -Wall refuses: CASEINCOMPLETE)."""
    out = values[-1]
    for k in reversed(range(len(values) - 1)):
        out = Mux(index == k, values[k], out)
    return out


class _States:
    """A state register stepped by an if/elif chain. ``m.FSM`` and ``m.Switch`` are written
    to Verilog as one ``case`` per signal, of only the states that assign it, which
    Verilator's -Wall refuses (CASEINCOMPLETE); so this design uses neither."""

    def __init__(self, m: Module, name: str, names: list[str]):
        self.m = m
        self.index = {n: i for i, n in enumerate(names)}
        self.reg = Signal(range(max(2, len(names))), name=f"{name}_state")
        self._first = True

    def state(self, name: str):
        cond = self.reg == self.index[name]
        ctx = self.m.If(cond) if self._first else self.m.Elif(cond)
        self._first = False
        return ctx

    def goto(self, name: str) -> None:
        self.m.d.sync += self.reg.eq(self.index[name])

    def at(self, name: str):
        return self.reg == self.index[name]


class ControlTile(wiring.Component):
    """The control tile of :mod:`this module <heterotron.hdl.tiles.control>`."""

    def __init__(self, desc: Description):
        self.desc = desc
        self.n_tiles = len(desc.tiles)
        self.ctrl = desc.control.index
        self.width = desc.params["flit_width"]
        self.word_bytes = desc.word_bytes
        self.max_packet = desc.params["max_packet"]
        self.queue_depth = desc.control.params["queue_depth"]
        self.watchdog_cycles = desc.control.params["watchdog"]
        self.mems = desc.of_kind(TileKind.MEMORY)
        #: Words of the host-read buffer (MAX_PAYLOAD bytes at any 4-byte offset in a word).
        self.read_buffer_words = MAX_PAYLOAD // self.word_bytes + 1
        super().__init__({
            "host_cmd": In(stream.Signature(HOST_CMD_LAYOUT)),
            "host_resp": Out(stream.Signature(HOST_RESP_LAYOUT)),
            "cmd_tx": Out(tx_word(WORD)),
            "req_tx": Out(tx_word(WORD)),
            "data_tx": Out(tx_word(self.width)),
            "data_rx": In(rx_word(self.width)),
            "done_rx": In(rx_word(WORD)),
            "progress": In(1),
            "running": Out(1),
            "error": Out(len(AccelError)),
            "watchdog": Out(1),
        })

    # -- helpers ------------------------------------------------------------------------------

    def _mem_lookup(self, index):
        """``(is a memory tile, its bytes)`` of tile ``index``."""
        ok = _any(index == t.index for t in self.mems)
        size = Const(0, 1)
        for t in self.mems:
            size = Mux(index == t.index, t.params["kbytes"] * 1024, size)
        return ok, size

    def _queue_wrap(self, ptr, step):
        total = ptr + step
        return Mux(total >= self.queue_depth, total - self.queue_depth, total)

    def _tile_bits(self):
        return range(max(self.n_tiles, 2))

    # -- the design ---------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        s = SimpleNamespace()
        n_tiles, ctrl = self.n_tiles, self.ctrl
        depth = self.queue_depth
        s.others = others = [t.index for t in self.desc.tiles if t.index != ctrl]

        # -- error flags ----------------------------------------------------------------------
        # One 1-bit signal per flag (a flag nothing raises is a constant wire).
        s.raised = raised = [Signal(name=f"error_raised{i}") for i in range(len(AccelError))]
        s.err_clear = err_clear = Signal(8)  # also clears the tiles' error fields
        m.d.sync += self.error.eq((self.error & ~err_clear[:len(AccelError)]) | Cat(*raised))
        m.d.comb += self.watchdog.eq(self.error[AccelError.WATCHDOG.value.bit_length() - 1])

        def raise_flag(flag):
            m.d.comb += raised[flag.value.bit_length() - 1].eq(1)
        s.raise_flag = raise_flag

        s.retired = retired = Signal(32)
        s.last_id = last_id = Signal(16)
        s.cycles = cycles = Signal(32)
        m.d.sync += cycles.eq(cycles + 1)

        # -- per-tile state -------------------------------------------------------------------
        s.outst = outst = [Signal(name=f"outstanding{i}") for i in range(n_tiles)]
        s.outst_vec = outst_vec = Cat(*outst)
        s.busy_cnt = {i: Signal(32, name=f"busy{i}") for i in others}
        s.stall_cnt = {i: Signal(32, name=f"stalled{i}") for i in others}
        s.items = {i: Signal(32, name=f"items{i}") for i in others}
        s.tile_last = {i: Signal(16, name=f"tile_last_id{i}") for i in others}
        s.tile_err = {i: Signal(8, name=f"tile_error{i}") for i in others}

        s.host_ack = Signal()      # the DONE of a host WRITE_MEM arrived
        s.host_pending = Signal()  # a host memory access waits for its data or DONE
        s.issue = Signal()         # the executor issues a tile instruction this cycle
        s.issue_tile = Signal(self._tile_bits())
        s.stall = Signal()         # the head tile instruction waits for its tile
        s.prog_retire = Signal()   # the executor retires an instruction itself
        s.prog_retire_id = Signal(16)
        s.exec_idle = Signal()

        # -- program queue --------------------------------------------------------------------
        m.submodules.queue = queue = Memory(shape=32, depth=depth, init=[])
        s.qw = queue.write_port()
        s.qr = queue.read_port()
        s.q_rd = Signal(range(depth))
        s.q_wr = Signal(range(depth))
        s.q_spec = Signal(range(depth))
        s.q_count = q_count = Signal(range(depth + 1))
        s.q_push = q_push = Signal(range(depth + 1))
        s.q_pop = q_pop = Signal(range(2 + max(op.words for op in OPCODES)))
        s.q_free = q_free = Signal(range(depth + 1))
        m.d.comb += q_free.eq(depth - q_count)
        m.d.sync += q_count.eq(q_count + q_push - q_pop)

        # -- DONE sink (always ready) ---------------------------------------------------------
        m.d.comb += self.done_rx.ready.eq(1)
        d_beat = packet_beat(m, self.done_rx, 2, "d_beat")
        d_valid = Signal()
        d_word = Signal(DONE_WORD)
        m.d.sync += d_valid.eq(0)
        with m.If(self.done_rx.valid):
            with m.If(d_beat == 1):
                m.d.sync += [d_valid.eq(1), d_word.eq(self.done_rx.payload.data)]
        hits = {i: Signal(name=f"done_hit{i}") for i in others}
        for i in others:
            m.d.comb += hits[i].eq(d_valid & (d_word.tile == i) & outst[i])
        done_hit = _any(hits.values())
        with m.If(d_valid & (d_word.tile == ctrl)):
            m.d.sync += s.host_ack.eq(1)
        for k, r in enumerate(raised):
            with m.If(done_hit & d_word.error[k]):
                m.d.comb += r.eq(1)

        for i in others:
            with m.If(s.issue & (s.issue_tile == i)):
                m.d.sync += outst[i].eq(1)
            with m.Elif(hits[i]):
                m.d.sync += outst[i].eq(0)
            m.d.sync += s.busy_cnt[i].eq(s.busy_cnt[i] + outst[i])
            with m.If(s.stall & (s.issue_tile == i)):
                m.d.sync += s.stall_cnt[i].eq(s.stall_cnt[i] + 1)
            with m.If(hits[i]):
                m.d.sync += [s.items[i].eq(s.items[i] + 1), s.tile_last[i].eq(d_word.id)]
            m.d.sync += s.tile_err[i].eq((s.tile_err[i] & ~err_clear)
                                         | Mux(hits[i], d_word.error, 0))

        m.d.sync += retired.eq(retired + s.prog_retire + done_hit)
        with m.If(s.prog_retire):
            m.d.sync += last_id.eq(s.prog_retire_id)
        with m.Elif(done_hit):
            m.d.sync += last_id.eq(d_word.id)

        # -- running and the watchdog ---------------------------------------------------------
        m.d.comb += self.running.eq((q_count != 0) | ~s.exec_idle | (outst_vec != 0)
                                    | s.host_pending)
        event = s.issue | s.prog_retire | d_valid | self.data_rx.valid | self.progress
        limit = self.watchdog_cycles
        wd_cnt = Signal(range(limit + 1))
        with m.If(~self.running | event):
            m.d.sync += wd_cnt.eq(0)
        with m.Elif(wd_cnt != limit):
            m.d.sync += wd_cnt.eq(wd_cnt + 1)
        with m.If(self.running & ~event & (wd_cnt == limit - 1)):
            raise_flag(AccelError.WATCHDOG)

        # -- host read buffer and the DATA sink (always ready) --------------------------------
        m.submodules.read_buffer = rbuf = Memory(shape=self.width,
                                                 depth=self.read_buffer_words, init=[])
        rbw = rbuf.write_port()
        s.rbr = rbuf.read_port()
        s.rb_count = rb_count = Signal(range(self.read_buffer_words + 1))
        s.rb_open = Signal()   # a host read collects its data
        s.rb_reset = Signal()
        rx_beat = packet_beat(m, self.data_rx, 3, "rx_beat")  # 0 header, 1 info, 2 address, 3 data
        rx_port = Signal(4)
        m.d.comb += self.data_rx.ready.eq(1)
        rx_write = (self.data_rx.valid & (rx_beat == 3) & (rx_port == Port.HOST) & s.rb_open
                    & (rb_count < self.read_buffer_words))
        with m.If(self.data_rx.valid):
            with m.If(rx_beat == 0):
                m.d.sync += rx_port.eq(MSG_HEADER(self.data_rx.payload.data[:WORD]).port)
        m.d.comb += [rbw.addr.eq(rb_count), rbw.data.eq(self.data_rx.payload.data),
                     rbw.en.eq(rx_write)]
        with m.If(s.rb_reset):
            m.d.sync += rb_count.eq(0)
        with m.Elif(rx_write):
            m.d.sync += rb_count.eq(rb_count + 1)

        self._host(m, s)
        self._executor(m, s)
        return m

    # -- the host command engine --------------------------------------------------------------

    def _registers(self, m: Module, s: SimpleNamespace, reg):
        """``(exists, value)`` of register ``reg`` (comb)."""
        ok, value = Signal(name="reg_ok"), Signal(32, name="reg_value")
        status = Cat(self.running, s.q_count == 0, self.error != 0)
        table = [(Reg.ID, MAGIC), (Reg.VERSION, VERSION),
                 (Reg.CONFIG_HASH, self.desc.config_hash), (Reg.STATUS, status),
                 (Reg.ERROR, self.error), (Reg.RETIRED, s.retired), (Reg.LAST_ID, s.last_id),
                 (Reg.QUEUE_FREE, s.q_free), (Reg.CYCLES, s.cycles)]
        assert {r for r, _ in table} == set(Reg)
        for t in self.desc.tiles:
            i = t.index
            base = TILE_REG_BASE + i * TILE_REG_STRIDE
            for tr in TileReg:
                if i == self.ctrl:
                    v = 0
                else:
                    v = {TileReg.STATUS: Cat(s.outst[i], Const(0, 7), s.tile_err[i]),
                         TileReg.BUSY: s.busy_cnt[i], TileReg.STALLED: s.stall_cnt[i],
                         TileReg.ITEMS: s.items[i], TileReg.LAST_ID: s.tile_last[i]}[tr]
                table.append((base + tr, v))
        first = True
        for number, v in table:
            with (m.If if first else m.Elif)(reg == number):
                m.d.comb += [ok.eq(1), value.eq(v)]
            first = False
        return ok, value

    def _host(self, m: Module, s: SimpleNamespace) -> None:
        ctrl, wb, desc = self.ctrl, self.word_bytes, self.desc
        lb = wb.bit_length() - 1
        cmd, resp = self.host_cmd, self.host_resp
        byte, length, last = cmd.payload.data, cmd.payload.length, cmd.payload.last

        h_bi = Signal(16)     # byte index in the frame
        h_op = Signal(8)
        h_seq = Signal(8)
        h_len = Signal(16)
        h_args = Signal(64)   # the first 8 payload bytes
        h_stat = Signal(8)
        h_words = Signal(16)  # WRITE_PROG: words in the burst
        h_word = Signal(32)   # WRITE_PROG: the word being assembled
        pidx = Signal(16)     # payload byte index
        m.d.comb += pidx.eq(h_bi - 2)
        addr = h_args[:32]
        local = addr[:MEM_WINDOW_BITS]
        nbytes = h_args[32:48]
        reg = h_args[:16]
        reg_value = h_args[16:48]

        # The response.
        r_status = Signal(8)
        r_len = Signal(range(MAX_PAYLOAD + 1))
        r_buf = Signal()      # payload from the read buffer, else from r_small
        r_small = Signal(128)
        r_off = Signal(lb)
        r_i = Signal(range(MAX_PAYLOAD + 3))
        r_settled = Signal()  # the byte at r_i is ready (the buffer read takes a cycle)

        # The memory window of the host address.
        w_n = Signal(17)
        m.d.comb += w_n.eq(Mux(h_op == Op.READ_MEM, nbytes, h_len - 6))
        window = addr[MEM_WINDOW_BITS:]
        w_ok = _any((window == j) & (local + w_n <= t.params["kbytes"] * 1024)
                    for j, t in enumerate(self.mems))
        w_tile = _select(window, [t.index for t in self.mems])

        # WRITE_MEM streaming.
        wm_cur = Signal(MEM_WINDOW_BITS + 1)  # local address of the next byte
        wm_rem = Signal(16)
        wm_dest = Signal(self._tile_bits())
        pk_n = Signal(16)
        pk_beats = Signal(16)
        pk_ack = Signal()
        pk_start = Signal(MEM_WINDOW_BITS + 1)
        pk_left = Signal(16)
        beat = Signal(self.width)
        cap = self.max_packet * wb
        room = Signal(range(cap + 1))
        m.d.comb += room.eq(cap - wm_cur[:lb])
        info = Signal(DATA_INFO)
        m.d.comb += info.nbytes.eq(pk_n)

        # READ_MEM.
        rm_args = Signal(REQ_ARGS)
        rm_tile = Signal(self._tile_bits())
        rm_words = Signal(range(self.read_buffer_words + 1))
        rm_i = Signal(3)
        req_words = REQ_ARGS.size // WORD
        off = local[:lb]
        covering = Signal(range(self.read_buffer_words + 1))
        m.d.comb += covering.eq((off + nbytes + wb - 1) >> lb)

        reg_ok, reg_val = self._registers(m, s, reg)
        ping = Cat(Const(MAGIC, 32), Const(VERSION, 16), Const(self.n_tiles, 8),
                   Const(wb, 8), Const(desc.config_hash, 32))

        st = _States(m, "host", ["RX", "DISCARD", "EXEC", "WP_FREE", "WM_CHECK", "WM_SETUP",
                                 "WM_H0", "WM_H1", "WM_H2", "WM_FILL", "WM_BEAT", "WM_WAIT",
                                 "RM_REQ", "RM_WAIT", "RESP"])

        def respond(status, n=0, small=None, from_buffer=False):
            m.d.sync += [r_status.eq(status), r_len.eq(n), r_buf.eq(from_buffer), r_i.eq(0),
                         r_settled.eq(0)]
            if small is not None:
                m.d.sync += r_small.eq(small)
            st.goto("RESP")

        with st.state("RX"):
            m.d.comb += cmd.ready.eq(1)
            with m.If(cmd.valid):
                m.d.sync += h_bi.eq(h_bi + 1)
                with m.If(h_bi == 0):
                    burst = (length - 2) >> 2
                    m.d.sync += [h_op.eq(byte), h_len.eq(length), h_seq.eq(0), h_args.eq(0),
                                 h_stat.eq(Status.OK), s.q_spec.eq(s.q_wr), h_words.eq(burst)]
                    with m.If(byte == Op.WRITE_PROG):
                        # Judged against the space now: the queue only drains meanwhile.
                        with m.If((length < 6) | ((length - 2)[:2] != 0)):
                            m.d.sync += h_stat.eq(Status.BAD_COMMAND)
                        with m.Elif(burst > s.q_free):
                            m.d.sync += h_stat.eq(Status.QUEUE_FULL)
                with m.Elif(h_bi == 1):
                    m.d.sync += h_seq.eq(byte)
                with m.Else():
                    with m.If(pidx < 8):
                        m.d.sync += h_args.word_select(pidx[:3], 8).eq(byte)
                    with m.If((h_op == Op.WRITE_PROG) & (h_stat == Status.OK)):
                        m.d.sync += h_word.word_select(pidx[:2], 8).eq(byte)
                        with m.If(pidx[:2] == 3):
                            m.d.comb += [s.qw.en.eq(1), s.qw.addr.eq(s.q_spec),
                                         s.qw.data.eq(Cat(h_word[:24], byte))]
                            m.d.sync += s.q_spec.eq(self._queue_wrap(s.q_spec, 1))
                with m.If(last):
                    st.goto("EXEC")
                with m.Elif((h_bi == 5) & (h_op == Op.WRITE_MEM) & (h_len >= 10)
                            & (h_len[:2] == 2)):
                    st.goto("WM_CHECK")  # the address is in: judge it before the data

        with st.state("DISCARD"):  # the rest of a refused frame
            m.d.comb += cmd.ready.eq(1)
            with m.If(cmd.valid & last):
                st.goto("EXEC")

        with st.state("EXEC"):  # the frame has ended
            with m.If(h_op == Op.PING):
                with m.If(h_len == 2):
                    respond(Status.OK, 12, ping)
                with m.Else():
                    respond(Status.BAD_COMMAND)
            with m.Elif(h_op == Op.READ_REG):
                with m.If(h_len != 4):
                    respond(Status.BAD_COMMAND)
                with m.Elif(reg_ok):
                    respond(Status.OK, 4, reg_val)
                with m.Else():
                    respond(Status.BUS_ERROR)
            with m.Elif(h_op == Op.WRITE_REG):
                with m.If(h_len != 8):
                    respond(Status.BAD_COMMAND)
                with m.Elif(reg == Reg.ERROR):
                    m.d.comb += s.err_clear.eq(reg_value)
                    respond(Status.OK)
                with m.Else():
                    respond(Status.BUS_ERROR)
            with m.Elif(h_op == Op.WRITE_PROG):
                with m.If(h_stat == Status.OK):
                    m.d.comb += s.q_push.eq(h_words)
                    m.d.sync += s.q_wr.eq(s.q_spec)
                    st.goto("WP_FREE")
                with m.Else():
                    with m.If(h_stat == Status.QUEUE_FULL):
                        s.raise_flag(AccelError.QUEUE)
                    respond(h_stat)
            with m.Elif(h_op == Op.WRITE_MEM):
                # Only a refused frame (or one cut short) ends here.
                respond(Mux(h_stat == Status.OK, Status.BAD_COMMAND, h_stat))
            with m.Elif(h_op == Op.READ_MEM):
                with m.If((h_len != 8) | (nbytes < 4) | (nbytes[:2] != 0)
                          | (nbytes > MAX_PAYLOAD) | (addr[:2] != 0)):
                    respond(Status.BAD_COMMAND)
                with m.Elif(~w_ok):
                    respond(Status.BUS_ERROR)
                with m.Else():
                    cols = covering << (lb - 2)
                    m.d.sync += [
                        rm_args.eq(0),
                        rm_args.src.addr.eq(local & ~(wb - 1)),
                        rm_args.src.rows.eq(1),
                        rm_args.src.cols.eq(cols),
                        rm_args.src.stride.eq(cols),
                        rm_args.src.ebytes.eq(EBYTES.index(4)),
                        rm_args.src.mem.eq(w_tile),
                        rm_args.dest_tile.eq(ctrl),
                        rm_args.port.eq(Port.HOST),
                        rm_tile.eq(w_tile), rm_words.eq(covering), rm_i.eq(0), r_off.eq(off),
                        s.rb_open.eq(1),
                    ]
                    m.d.comb += s.rb_reset.eq(1)
                    st.goto("RM_REQ")
            with m.Else():
                respond(Status.BAD_COMMAND)

        with st.state("WP_FREE"):  # the burst is committed
            respond(Status.OK, 2, s.q_free)

        with st.state("WM_CHECK"):
            with m.If(addr[:2] != 0):
                m.d.sync += h_stat.eq(Status.BAD_COMMAND)
                st.goto("DISCARD")
            with m.Elif(~w_ok):
                m.d.sync += h_stat.eq(Status.BUS_ERROR)
                st.goto("DISCARD")
            with m.Else():
                m.d.sync += [wm_cur.eq(local), wm_rem.eq(h_len - 6), wm_dest.eq(w_tile),
                             s.host_ack.eq(0)]
                st.goto("WM_SETUP")

        with st.state("WM_SETUP"):  # the next packet: up to max_packet words from wm_cur
            n = Mux(wm_rem < room, wm_rem, room)
            m.d.sync += [pk_n.eq(n), pk_beats.eq((wm_cur[:lb] + n + wb - 1) >> lb),
                         pk_ack.eq(wm_rem <= room), pk_start.eq(wm_cur), pk_left.eq(n),
                         beat.eq(0)]
            st.goto("WM_H0")

        for state, word, nxt in (
                ("WM_H0", header_value(cls=MsgClass.DATA, port=Port.MEM, ack=pk_ack,
                                       owner=ctrl, length=pk_beats), "WM_H1"),
                ("WM_H1", info.as_value(), "WM_H2"),
                ("WM_H2", pk_start, "WM_FILL")):
            with st.state(state):
                m.d.comb += [self.data_tx.valid.eq(1), self.data_tx.payload.data.eq(word),
                             self.data_tx.payload.dest.eq(wm_dest)]
                with m.If(self.data_tx.ready):
                    st.goto(nxt)

        with st.state("WM_FILL"):  # bytes at their lanes until the word or packet is full
            m.d.comb += cmd.ready.eq(1)
            with m.If(cmd.valid):
                m.d.sync += [beat.word_select(wm_cur[:lb], 8).eq(byte), wm_cur.eq(wm_cur + 1),
                             wm_rem.eq(wm_rem - 1), pk_left.eq(pk_left - 1)]
                with m.If((wm_cur[:lb] == wb - 1) | (pk_left == 1)):
                    st.goto("WM_BEAT")

        with st.state("WM_BEAT"):
            m.d.comb += [self.data_tx.valid.eq(1), self.data_tx.payload.data.eq(beat),
                         self.data_tx.payload.last.eq(pk_left == 0),
                         self.data_tx.payload.dest.eq(wm_dest)]
            with m.If(self.data_tx.ready):
                m.d.sync += beat.eq(0)
                with m.If(pk_left != 0):
                    st.goto("WM_FILL")
                with m.Elif(wm_rem != 0):
                    st.goto("WM_SETUP")
                with m.Else():
                    st.goto("WM_WAIT")

        with st.state("WM_WAIT"):
            m.d.comb += s.host_pending.eq(1)
            with m.If(s.host_ack):
                respond(Status.OK)

        with st.state("RM_REQ"):
            m.d.comb += s.host_pending.eq(1)
            words = [header_value(cls=MsgClass.REQ, owner=ctrl, length=req_words),
                     *(rm_args.as_value().word_select(k, WORD) for k in range(req_words))]
            m.d.comb += [self.req_tx.valid.eq(1),
                         self.req_tx.payload.data.eq(_select(rm_i, words)),
                         self.req_tx.payload.last.eq(rm_i == req_words),
                         self.req_tx.payload.dest.eq(rm_tile)]
            with m.If(self.req_tx.ready):
                m.d.sync += rm_i.eq(rm_i + 1)
                with m.If(rm_i == req_words):
                    st.goto("RM_WAIT")

        with st.state("RM_WAIT"):
            m.d.comb += s.host_pending.eq(1)
            with m.If(s.rb_count >= rm_words):
                m.d.sync += s.rb_open.eq(0)
                respond(Status.OK, nbytes, from_buffer=True)

        with st.state("RESP"):
            pos = Signal(range(MAX_PAYLOAD + 2 * wb))
            m.d.comb += [pos.eq(r_off + r_i - 2), s.rbr.addr.eq(pos >> lb)]
            out = Mux(r_i == 0, r_status,
                      Mux(r_i == 1, h_seq,
                          Mux(r_buf, s.rbr.data.word_select(pos[:lb], 8),
                              r_small.word_select((r_i - 2)[:4], 8))))
            final = r_i == r_len + 1
            m.d.comb += [resp.valid.eq(r_settled), resp.payload.data.eq(out),
                         resp.payload.last.eq(final)]
            m.d.sync += r_settled.eq(1)
            with m.If(resp.valid & resp.ready):
                m.d.sync += [r_i.eq(r_i + 1), r_settled.eq(0)]
                with m.If(final):
                    m.d.sync += h_bi.eq(0)
                    st.goto("RX")

    # -- the program executor -----------------------------------------------------------------

    def _executor(self, m: Module, s: SimpleNamespace) -> None:
        desc, n_tiles, ctrl, wb = self.desc, self.n_tiles, self.ctrl, self.word_bytes
        lb = wb.bit_length() - 1
        qr = s.qr
        max_words = 1 + max(op.words for op in OPCODES)

        # Only the instructions of the description's tile kinds are ever checked or sent, so
        # ibuf holds the longest of those; a longer one's words are counted, not kept.
        kinds = {t.kind for t in desc.tiles}
        kept_words = 1 + max(op.words for op in OPCODES if op.cls in kinds)
        f_k = Signal(range(max_words))
        kept_bits = max(1, (kept_words - 1).bit_length())
        ibuf = Signal((1 << kept_bits) * WORD)  # every word a kept_bits index can name
        i_op = Signal(range(len(OPCODES)))
        i_nargs = Signal(range(max_words))
        s_i = Signal(range(max_words + 1))
        head = INSTR_HEAD(ibuf[:WORD])
        m.d.comb += [s.issue_tile.eq(head.tile), s.prog_retire_id.eq(head.id),
                     qr.addr.eq(self._queue_wrap(s.q_rd, f_k))]

        # Decode of the word just read.
        new_head = INSTR_HEAD(qr.data)
        known = _any((new_head.cls == op.cls) & (new_head.code == op.code) for op in OPCODES)
        new_op = Signal(range(len(OPCODES)))
        new_nargs = Signal(range(max_words))
        for k, op in enumerate(OPCODES):
            with m.If((new_head.cls == op.cls) & (new_head.code == op.code)):
                m.d.comb += [new_op.eq(k), new_nargs.eq(op.words)]

        # -- ILLEGAL, and the region the ADDRESS checks look at (comb, from ibuf) --
        illegal = Signal()
        # The regions the ADDRESS checks look at, one slot after another (CHECK1 / CHECK2).
        slots = [Signal(REGION, name=f"slot{k}") for k in range(_SLOTS)]
        slot_on = [Signal(name=f"slot{k}_on") for k in range(_SLOTS)]
        r_k = Signal(range(_SLOTS))
        sel = Signal(REGION)
        has_region = Signal()
        next_on = Signal()
        m.d.comb += [sel.eq(_select(r_k, slots)), has_region.eq(_select(r_k, slot_on)),
                     next_on.eq(_select(r_k, [*slot_on[1:], Const(0, 1)]))]
        is_copy = Signal()
        copy_dest = Signal(8)
        copy_addr = Signal(32)
        # slot -> the region's bit offset in ibuf -> the opcodes whose region is there
        at_offset = [{} for _ in range(_SLOTS)]
        for k, op in enumerate(OPCODES):
            owners = [t.index for t in desc.tiles if t.kind == op.cls]
            with (m.If if k == 0 else m.Elif)(i_op == k):
                if not owners:
                    # No tile of its class: ILLEGAL whatever the fields say, and ILLEGAL is
                    # judged before the regions, so none of its checks need a circuit.
                    m.d.comb += illegal.eq(1)
                    continue
                av = op.args(ibuf[WORD:WORD + op.args.size]) if op.args.size else None
                mask = rsv_mask(op.args, WORD) | rsv_mask(INSTR_HEAD)
                conds = [(ibuf & mask) != 0] if mask else []
                conds.append(~_any(head.tile == i for i in owners))
                if op.name == "WAIT" and n_tiles < len(av.mask):
                    conds.append(av.mask[n_tiles:] != 0)
                if op.name == "COPY":
                    conds.append(av.src.ebytes == 3)
                    m.d.comb += [is_copy.eq(1), copy_dest.eq(av.dest_tile),
                                 copy_addr.eq(av.dest_addr)]
                for j, (name, when) in enumerate(CHECKED_REGIONS.get(op.name, ())):
                    at_offset[j].setdefault(WORD + op.args[name].offset, []).append(k)
                    m.d.comb += slot_on[j].eq(1 if when is None else getattr(av, when))
                checks = {TileKind.SA: self._sa_illegal, TileKind.PIM: self._pim_illegal,
                          TileKind.SFU: self._sfu_illegal}.get(op.cls)
                if checks is not None:
                    conds += [(head.tile == t.index) & checks(m, op, av, t.params)
                              for t in desc.of_kind(op.cls)]
                m.d.comb += illegal.eq(_any(conds))
        # A slot is one multiplexer over the offsets its regions sit at, not one per opcode
        # (0 for an opcode without that slot, as the checks expect).
        for j, offsets in enumerate(at_offset):
            value = Const(0, REGION.size)
            for offset, ops in offsets.items():
                value = Mux(_any(i_op == k for k in ops), ibuf[offset:offset + REGION.size],
                            value)
            m.d.comb += slots[j].eq(value)

        # -- ADDRESS (from the registers CHECK1 sets) --
        cr = Signal(REGION)
        c_copy = Signal()
        c_region = Signal()
        c_dest = Signal(8)
        c_daddr = Signal(32)
        c_prod = Signal(32)        # (rows - 1) * stride
        c_rows_words = Signal(32)  # rows * row_words
        c_illegal = Signal()
        src_ok, src_bytes = self._mem_lookup(cr.mem)
        dst_ok, dst_bytes = self._mem_lookup(c_dest)
        code = cr.ebytes
        src_bad = (~src_ok | (c_copy & (cr.mem != head.tile))
                   | (cr.rows == 0) | (cr.cols == 0) | (cr.addr[:lb] != 0)
                   | ((cr.rows > 1) & (((cr.stride << code)[:lb] != 0) | (cr.stride < cr.cols)))
                   | (cr.addr + ((c_prod + cr.cols) << code) > src_bytes))
        dst_bad = c_copy & (~dst_ok | (c_daddr[:lb] != 0)
                            | (c_daddr + (c_rows_words << lb) > dst_bytes))
        address_bad = c_region & (src_bad | dst_bad)

        names = [op.name for op in OPCODES]
        nop, wait = names.index("NOP"), names.index("WAIT")
        wait_args = OPCODES[wait].args
        wait_mask = wait_args(ibuf[WORD:WORD + wait_args.size]).mask
        eff_mask = Mux(wait_mask == 0, (1 << n_tiles) - 1, wait_mask)
        head_busy = s.outst_vec.bit_select(head.tile, 1)

        st = _States(m, "exec", ["FETCH", "CAPTURE", "CHECK1", "CHECK2", "ACT", "SEND"])

        def retire():
            m.d.comb += s.prog_retire.eq(1)
            st.goto("FETCH")

        with st.state("FETCH"):  # word f_k of the instruction, once it is queued
            m.d.comb += s.exec_idle.eq(f_k == 0)
            with m.If(s.q_count > f_k):
                st.goto("CAPTURE")
        with st.state("CAPTURE"):
            with m.If(f_k < kept_words):
                m.d.sync += ibuf.word_select(f_k[:kept_bits], WORD).eq(qr.data)
            with m.If(f_k == 0):
                with m.If(~known):
                    # Only the head word is consumed; it retires with its own id.
                    m.d.comb += [s.q_pop.eq(1), s.prog_retire.eq(1),
                                 s.prog_retire_id.eq(new_head.id)]
                    s.raise_flag(AccelError.ILLEGAL)
                    m.d.sync += s.q_rd.eq(self._queue_wrap(s.q_rd, 1))
                    st.goto("FETCH")
                with m.Else():
                    m.d.sync += [i_op.eq(new_op), i_nargs.eq(new_nargs)]
                    with m.If(new_nargs == 0):
                        st.goto("CHECK1")
                    with m.Else():
                        m.d.sync += f_k.eq(1)
                        st.goto("FETCH")
            with m.Elif(f_k == i_nargs):
                st.goto("CHECK1")
            with m.Else():
                m.d.sync += f_k.eq(f_k + 1)
                st.goto("FETCH")
        with st.state("CHECK1"):
            # The instruction leaves the queue (at its first region slot); the products of
            # the slot's region are registered.
            with m.If(r_k == 0):
                m.d.comb += s.q_pop.eq(i_nargs + 1)
                m.d.sync += s.q_rd.eq(self._queue_wrap(s.q_rd, i_nargs + 1))
            row_words = ((sel.cols << sel.ebytes) + wb - 1) >> lb
            m.d.sync += [f_k.eq(0),
                         cr.eq(sel), c_copy.eq(is_copy & (r_k == 0)), c_region.eq(has_region),
                         c_dest.eq(copy_dest), c_daddr.eq(copy_addr),
                         c_prod.eq(Mux(sel.rows == 0, 0, sel.rows - 1) * sel.stride),
                         c_rows_words.eq(sel.rows * row_words), c_illegal.eq(illegal)]
            st.goto("CHECK2")
        with st.state("CHECK2"):
            with m.If(c_illegal):
                s.raise_flag(AccelError.ILLEGAL)
                m.d.sync += r_k.eq(0)
                retire()
            with m.Elif(address_bad):
                s.raise_flag(AccelError.ADDRESS)
                m.d.sync += r_k.eq(0)
                retire()
            with m.Elif(next_on):  # the next region of the instruction
                m.d.sync += r_k.eq(r_k + 1)
                st.goto("CHECK1")
            with m.Elif(i_op == nop):
                m.d.sync += r_k.eq(0)
                retire()
            with m.Else():
                m.d.sync += r_k.eq(0)
                st.goto("ACT")
        with st.state("ACT"):
            with m.If(i_op == wait):
                with m.If((s.outst_vec & eff_mask) == 0):
                    retire()
            with m.Elif(head_busy):
                m.d.comb += s.stall.eq(1)
            with m.Else():
                m.d.comb += s.issue.eq(1)
                m.d.sync += s_i.eq(0)
                st.goto("SEND")
        with st.state("SEND"):
            cmd_len = Signal(16)
            m.d.comb += cmd_len.eq(i_nargs + 1)
            words = [header_value(cls=MsgClass.CMD, owner=ctrl, length=cmd_len),
                     *(ibuf.word_select(k, WORD) for k in range(kept_words))]
            m.d.comb += [self.cmd_tx.valid.eq(1),
                         self.cmd_tx.payload.data.eq(_select(s_i, words)),
                         self.cmd_tx.payload.last.eq(s_i == cmd_len),
                         self.cmd_tx.payload.dest.eq(head.tile)]
            with m.If(self.cmd_tx.ready):
                m.d.sync += s_i.eq(s_i + 1)
                with m.If(s_i == cmd_len):
                    st.goto("FETCH")

    def _pim_illegal(self, m: Module, op, av, p: dict):
        """ILLEGAL for a PiM tile's instruction against that tile's parameters (the
        interpreter's field checks, ``sim/golden/accel.py``)."""
        lim = 1 << (ADC_FRAC + p["enob"])
        if op.name == "ADC":
            off = av.offset.as_signed()
            bad = (av.gain >= lim) | (off < -lim) | (off >= lim)
            if p["adc_range"] == "fixed":
                bad = bad | (av.gain != 0)
            if not p["noise"]:
                bad = bad | (av.sigma != 0)
            return bad
        xrows, xcols = p["rows"], p["cols"]
        s = av.src
        if op.name == "PROGRAM":
            bad = ((s.ebytes != _code(p["weight_bits"])) | (s.rows == 0) | (s.rows > xcols)
                   | (s.cols == 0) | (s.cols > xrows))
            if not p["faults"]:
                bad = bad | (av.fault_rate != 0)
            return bad
        assert op.name == "MVM", op.name
        d = av.dest
        bad = ((s.ebytes == 3) | (s.ebytes > _code(p["input_bits"])) | (s.rows == 0)
               | (s.rows > p["max_m"]) | (s.cols == 0) | (s.cols > xrows))
        return bad | (av.out & ((d.ebytes != 2) | (d.rows != s.rows) | (d.cols == 0)
                                | (d.cols > xcols)))

    def _sfu_illegal(self, m: Module, op, av, p: dict):
        """ILLEGAL for an SFU tile's instruction against that tile's parameters (the
        interpreter's field checks, ``sim/golden/accel.py``)."""
        def code_of(bits):  # the container code of a bits-wide result (bits <= 32)
            return Mux(bits <= 8, 0, Mux(bits <= 16, 1, 2))

        def out_bad(bits, hi):
            return (bits < 2) | (bits > hi)

        def like(r, src, bits=None):  # r is src's shape (and holds bits-wide results)
            bad = (r.ebytes == 3) | (r.rows != src.rows) | (r.cols != src.cols)
            return bad if bits is None else bad | (r.ebytes != code_of(bits))
        n = p["channels"]
        if op.name == "TABLE":
            s, two = av.src, av.which == SfuTable.LN_BIAS
            return ((av.which >= len(SfuTable)) | (s.rows != 1) | (s.ebytes != 2)
                    | (two & s.cols[0]) | Mux(two, s.cols > 2 * n, s.cols > n))
        s = av.src
        bad = s.ebytes == 3
        if op.name == "REQUANT":
            return (bad | out_bad(av.out_bits, SFU_OUT_BITS["REQUANT"])
                    | like(av.dest, s, av.out_bits) | (av.res & like(av.y, s))
                    | (s.cols > n) | (av.m_y[31:] != 0) | (av.e_y > 63))
        if op.name == "SOFTMAX":
            return (bad | out_bad(av.out_bits, SFU_OUT_BITS["SOFTMAX"])
                    | like(av.dest, s, av.out_bits) | (s.cols > p["max_row"])
                    | (av.valid > s.cols))
        if op.name == "GELU":
            return (bad | out_bad(av.out_bits, SFU_OUT_BITS["GELU"])
                    | like(av.dest, s, av.out_bits) | (av.m[31:] != 0) | (av.e > 63))
        assert op.name == "LAYERNORM", op.name
        return (bad | out_bad(av.out_bits, SFU_OUT_BITS["LAYERNORM"])
                | (av.shift > SFU_LN_MAX_SHIFT)
                | out_bad(av.res_bits, SFU_OUT_BITS["LAYERNORM"])
                | like(av.dest, s, av.out_bits) | like(av.res, s, av.res_bits)
                | (av.dest.mem != av.res.mem) | (s.cols > min(p["max_row"], n)))

    def _sa_illegal(self, m: Module, op, av, p: dict):
        """ILLEGAL for an SA tile's instruction against that tile's parameters."""
        if op.name == "RUN":
            return av.dest.ebytes != _code(p["out_width"] if p["requant"] else p["acc_width"])
        if op.name == "SCALE":
            if not p["requant"]:
                return Const(1, 1)
            bad = (av.lane >= p["cols"]) | (av.e > _REQUANT["max_shift"])
            if _REQUANT["m_width"] < len(av.m):
                bad = bad | (av.m[_REQUANT["m_width"]:] != 0)
            return bad
        assert op.name == "LOAD", op.name
        r, trans = av.src, av.trans

        def out_of(v, hi):
            return (v == 0) | (v > hi)
        a_bad = ((r.ebytes != _code(p["a_width"]))
                 | out_of(Mux(trans, r.cols, r.rows), p["max_m"])
                 | out_of(Mux(trans, r.rows, r.cols), p["max_k"]))
        b_bad = ((r.ebytes != _code(p["b_width"]))
                 | out_of(Mux(trans, r.cols, r.rows), p["max_k"])
                 | out_of(Mux(trans, r.rows, r.cols), p["max_n"]))
        bias_bad = ((r.ebytes != _code(p["bias_width"])) | (r.rows != 1) | trans
                    | out_of(r.cols, p["max_n"]))
        return Mux(av.port == Port.A, a_bad,
                   Mux(av.port == Port.B, b_bad, Mux(av.port == Port.BIAS, bias_bad, 1)))

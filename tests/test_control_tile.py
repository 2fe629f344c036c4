"""The control tile (hdl/tiles/control.py) in Amaranth's simulator, against Python models of
the host and of the tiles around it: host commands and their one response each, scratchpad
writes and reads over the network, the program queue, issue order and credits, WAIT, every
static check, DONE errors, counters and the watchdog; and its Verilog lint-clean.

Every expected value comes from the test's own reading of the specification (the module
docstring of hdl/tiles/control.py and the brief it implements), not from the RTL."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract.accel import (
    DATA_INFO,
    DONE_WORD,
    INSTR_HEAD,
    MAGIC,
    MEM_WINDOW_BITS,
    MSG_HEADER,
    REQ_ARGS,
    TILE_REG_BASE,
    TILE_REG_STRIDE,
    VERSION,
    AccelError,
    MsgClass,
    Port,
    Reg,
    TileKind,
    TileReg,
    decode_instr,
    encode_instr,
    from_words,
    pack,
    unpack,
)
from heterotron.hdl.contract.hostlink import MAX_PAYLOAD, Op, Status
from heterotron.hdl.tiles.control import ControlTile
from heterotron.sim.flows.lint import verilator_lint, yosys_check
from heterotron.sim.flows.toolchain import ToolError, verilator_root

C, M, S = TileKind.CONTROL, TileKind.MEMORY, TileKind.SA

#: Control 0; memory 1 (2 KiB) and 3 (1 KiB); SA 2 (requant, int8, max 8 x 8 x 8) and SA 4
#: (no requant, a 16-bit, b 12-bit, bias 24-bit, acc 32-bit, max m 4, k 6, n 5).
TABLE32 = {"nx": 3, "ny": 2, "max_packet": 4, "tile": [
    {"kind": "control", "at": [0, 0], "queue_depth": 17, "watchdog": 256},
    {"kind": "memory", "at": [1, 0], "kbytes": 2},
    {"kind": "sa", "at": [2, 0], "rows": 2, "cols": 2, "max_m": 8, "max_k": 8, "max_n": 8,
     "requant": True},
    {"kind": "memory", "at": [1, 1], "kbytes": 1},
    {"kind": "sa", "at": [2, 1], "rows": 2, "cols": 2, "max_m": 4, "max_k": 6, "max_n": 5,
     "a_width": 16, "b_width": 12},
]}
TABLE64 = {"nx": 2, "ny": 2, "flit_width": 64, "max_packet": 2, "tile": [
    {"kind": "memory", "at": [0, 0], "kbytes": 1},
    {"kind": "control", "at": [1, 0]},
    {"kind": "memory", "at": [0, 1], "kbytes": 2},
    {"kind": "sa", "at": [1, 1], "rows": 2, "cols": 2, "max_m": 16, "max_k": 16, "max_n": 16},
]}
DESC32 = describe(TABLE32)
DESC64 = describe(TABLE64)
MEM1, SA1, MEM2, SA2 = 1, 2, 3, 4  # tiles of DESC32
DEPTH = DESC32.control.params["queue_depth"]  # not a power of two: the pointers wrap
LIMIT = 60000  # cycles any one test may run


def region(addr=0, rows=1, cols=4, stride=None, ebytes=0, mem=MEM1, rsv=0):
    return {"addr": addr, "rows": rows, "cols": cols,
            "stride": cols if stride is None else stride, "ebytes": ebytes, "rsv": rsv,
            "mem": mem}


def nop(id, tile=0):
    return encode_instr(C, "NOP", tile, id)


def wait(id, mask, tile=0):
    return encode_instr(C, "WAIT", tile, id, mask=mask)


def copy(id, tile=MEM1, src=None, dest_tile=MEM2, dest_addr=0, rsv=0):
    return encode_instr(M, "COPY", tile, id, src=src or region(mem=tile), dest_tile=dest_tile,
                        dest_addr=dest_addr, rsv=rsv)


def scale(id, tile=SA1, lane=0, e=3, m=5, rsv=0):
    return encode_instr(S, "SCALE", tile, id, lane=lane, e=e, m=m, rsv=rsv)


def load(id, tile=SA1, port=Port.A, trans=0, src=None, rsv=0):
    return encode_instr(S, "LOAD", tile, id, port=int(port), trans=trans,
                        src=src or region(rows=2, cols=4), rsv=rsv)


def run(id, tile=SA1, dest=None, bias=0, rsv=0):
    return encode_instr(S, "RUN", tile, id, bias=bias,
                        dest=dest or region(rows=2, cols=2, stride=4), rsv=rsv)


def words_bytes(words) -> bytes:
    return b"".join(int(w).to_bytes(4, "little") for w in words)


def u32(b: bytes) -> int:
    return int.from_bytes(b, "little")


# -- the models around the control tile ------------------------------------------------------

class Net:
    """The network and the tiles: memories as byte arrays that apply DATA writes (and ack
    them), answer REQs with DATA for the host, and tiles that answer each CMD with a DONE
    after a delay (``policy``), or hold it until released."""

    def __init__(self, desc, rng):
        self.desc, self.rng = desc, rng
        self.wb = desc.word_bytes
        self.ctrl = desc.control.index
        self.max_packet = desc.params["max_packet"]
        self.mem = {t.index: bytearray(rng.integers(0, 256, t.params["kbytes"] * 1024,
                                                    dtype=np.uint8).tobytes())
                    for t in desc.of_kind(M)}
        self.cycle = 0
        self.cmds = []          # (cycle of the last beat, tile, words)
        self.outstanding = {}   # tile -> id, from its CMD to its DONE's release
        self.max_concurrent = 0
        self.timers = []        # (due cycle, DONE packet, instruction tile or None)
        self.done_q, self.data_q = deque(), deque()
        self.held = {}          # tile -> id of a DONE withheld
        self.held_acks = []
        self.policy = lambda tile, words: (int(rng.integers(3, 40)), 0)  # or None: hold
        self.hold_acks = False
        self.writes = []        # DATA packets from the control tile
        self.reqs = []          # REQ packets from the control tile
        self.dones = []         # (cycle, tile, id, error) of instruction DONEs sent

    @staticmethod
    def done_packet(tile, id, error):
        return [(pack(MSG_HEADER, cls=MsgClass.DONE, owner=tile, length=1), 0),
                (pack(DONE_WORD, id=id, tile=tile, error=error), 1)]

    def schedule(self, delay, tile, id, error, instruction=True):
        self.timers.append((self.cycle + delay, self.done_packet(tile, id, error),
                            (tile, id, error) if instruction else None))

    def release(self, tile, error=0):
        self.schedule(1, tile, self.held.pop(tile), error)

    def release_acks(self):
        for owner, id in self.held_acks:
            self.schedule(1, owner, id, 0, instruction=False)
        self.held_acks = []

    def tick(self):
        self.cycle += 1
        assert self.cycle < LIMIT, "the test ran out of cycles"
        due = [t for t in self.timers if t[0] <= self.cycle]
        self.timers = [t for t in self.timers if t[0] > self.cycle]
        for _, packet, instr in due:
            self.done_q.append(packet)
            if instr is not None:
                tile, id, error = instr
                assert self.outstanding.pop(tile) == id
                self.dones.append((self.cycle, tile, id, error))

    def on_cmd(self, beats):
        dest = beats[0][2]
        head = unpack(MSG_HEADER, beats[0][0])
        assert (head["cls"], head["owner"], head["length"]) == (MsgClass.CMD, self.ctrl,
                                                                len(beats) - 1)
        words = [b[0] for b in beats[1:]]
        assert dest not in self.outstanding, f"a second instruction for busy tile {dest}"
        iid = unpack(INSTR_HEAD, words[0])["id"]
        self.cmds.append((self.cycle, dest, words))
        self.outstanding[dest] = iid
        self.max_concurrent = max(self.max_concurrent, len(self.outstanding))
        answer = self.policy(dest, words)
        if answer is None:
            self.held[dest] = iid
        else:
            delay, error = answer
            self.schedule(delay, dest, iid, error)

    def on_data(self, beats):
        dest = beats[0][2]
        head = unpack(MSG_HEADER, beats[0][0] & 0xFFFFFFFF)
        info = unpack(DATA_INFO, beats[1][0] & 0xFFFFFFFF)
        start = beats[2][0] & 0xFFFFFFFF
        data = [b[0] for b in beats[3:]]
        assert head["cls"] == MsgClass.DATA and head["port"] == Port.MEM
        assert head["owner"] == self.ctrl and head["length"] == len(data) >= 1
        assert len(data) <= self.max_packet and dest in self.mem
        wb, mem = self.wb, self.mem[dest]
        for i, beat in enumerate(data):
            word = start // wb + i
            for b in range(wb):
                a = word * wb + b
                if start <= a < start + info["nbytes"]:
                    mem[a] = (beat >> (8 * b)) & 0xFF
        self.writes.append({"dest": dest, "ack": head["ack"], "start": start,
                            "nbytes": info["nbytes"], "beats": len(data)})
        if head["ack"]:
            if self.hold_acks:
                self.held_acks.append((head["owner"], info["id"]))
            else:
                self.schedule(int(self.rng.integers(1, 20)), head["owner"], info["id"], 0,
                              instruction=False)

    def on_req(self, beats):
        dest = beats[0][2]
        head = unpack(MSG_HEADER, beats[0][0])
        assert (head["cls"], head["length"], len(beats)) == (MsgClass.REQ, 5, 6)
        args = unpack(REQ_ARGS, from_words([b[0] for b in beats[1:]]))
        self.reqs.append({"dest": dest, "owner": head["owner"], **args})
        src, wb = args["src"], self.wb
        eb = 1 << src["ebytes"]
        row_words = -(-src["cols"] * eb // wb)
        mem = self.mem[dest]
        words = []
        for r in range(src["rows"]):
            a = src["addr"] + r * src["stride"] * eb
            words += [int.from_bytes(mem[a + k * wb:a + (k + 1) * wb], "little")
                      for k in range(row_words)]
        assert args["dest_tile"] == self.ctrl
        for p in range(0, len(words), self.max_packet):
            chunk = words[p:p + self.max_packet]
            final = p + self.max_packet >= len(words)
            self.data_q.append(
                [(pack(MSG_HEADER, cls=MsgClass.DATA, port=args["port"],
                       ack=args["ack"] & final, owner=head["owner"], length=len(chunk)), 0),
                 (pack(DATA_INFO, id=args["id"], nbytes=len(chunk) * wb), 0), (0, 0)]
                + [(w, int(k == len(chunk) - 1)) for k, w in enumerate(chunk)])


class Bench:
    """The control tile, its models and a host that sends frames and checks responses."""

    def __init__(self, desc, seed=0, gap=0.3, stall=0.3):
        self.desc = desc
        #: Pulse ``progress`` every so many cycles (the rest of the accelerator at work), so
        #: only the watchdog's own test sees it fire; ``None``: never.
        self.alive = 64
        self.dut = ControlTile(desc)
        self.rng = np.random.default_rng(seed)
        self.net = Net(desc, self.rng)
        self.gap, self.stall = gap, stall
        self.seq = 0
        self.expect_resp = False

    # -- stream helpers --
    async def _sink(self, ctx, port, on_packet, always=False):
        beats, pending = [], None
        while True:
            ready = always or self.rng.random() >= self.stall
            ctx.set(port.ready, ready)
            _, _, valid, p = await ctx.tick().sample(port.valid, port.payload)
            beat = (int(p.data), int(p.last), int(p.dest))
            if pending is not None:
                assert valid and beat == pending, "valid and payload must hold until taken"
            pending = None
            if valid and ready:
                assert not beats or beat[2] == beats[0][2], "dest changed within a packet"
                beats.append(beat)
                if beat[1]:
                    on_packet(beats)
                    beats = []
            elif valid:
                pending = beat

    async def _source(self, ctx, port, queue):
        while True:
            if not queue:
                await ctx.tick()
                continue
            for data, last in queue.popleft():
                while self.rng.random() < self.gap:
                    await ctx.tick()
                ctx.set(port.valid, 1)
                ctx.set(port.payload, {"data": data, "last": last})
                assert ctx.get(port.ready), "DATA and DONE must always be sunk"
                await ctx.tick()
                ctx.set(port.valid, 0)

    async def _clock(self, ctx):
        while True:
            pulse = self.alive is not None and self.net.cycle % self.alive == 0
            ctx.set(self.dut.progress, pulse)
            await ctx.tick()
            self.net.tick()

    async def _resp_monitor(self, ctx):
        while True:
            _, _, valid = await ctx.tick().sample(self.dut.host_resp.valid)
            assert not valid or self.expect_resp, "a response no frame asked for"

    def run(self, *mains):
        dut, net = self.dut, self.net
        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(self._clock, background=True)
        sim.add_testbench(self._resp_monitor, background=True)
        def bind(function, *args):
            async def testbench(ctx):
                await function(ctx, *args)
            return testbench
        for port, handler in ((dut.cmd_tx, net.on_cmd), (dut.req_tx, net.on_req),
                              (dut.data_tx, net.on_data)):
            sim.add_testbench(bind(self._sink, port, handler), background=True)
        sim.add_testbench(bind(self._source, dut.data_rx, net.data_q), background=True)
        sim.add_testbench(bind(self._source, dut.done_rx, net.done_q), background=True)
        for main in mains:
            sim.add_testbench(main)
        sim.run()

    # -- the host --
    async def frame(self, ctx, op, payload=b"", expect=None):
        """Send one command frame; return (status, payload) of its one response."""
        seq = self.seq = (self.seq + 37) & 0xFF
        body = bytes([int(op), seq]) + bytes(payload)
        cmd, resp = self.dut.host_cmd, self.dut.host_resp
        for i, b in enumerate(body):
            while self.rng.random() < self.gap:
                await ctx.tick()
            ctx.set(cmd.valid, 1)
            ctx.set(cmd.payload, {"data": b, "last": int(i == len(body) - 1),
                                  "length": len(body)})
            await ctx.tick().until(cmd.ready)
            ctx.set(cmd.valid, 0)
        self.expect_resp = True
        out, pending = [], None
        while True:
            ready = self.rng.random() >= self.stall
            ctx.set(resp.ready, ready)
            _, _, valid, p = await ctx.tick().sample(resp.valid, resp.payload)
            beat = (int(p.data), int(p.last))
            if pending is not None:
                assert valid and beat == pending, "response byte must hold until taken"
            pending = None
            if valid and ready:
                out.append(beat[0])
                if beat[1]:
                    break
            elif valid:
                pending = beat
        ctx.set(resp.ready, 0)
        self.expect_resp = False
        assert len(out) >= 2 and out[1] == seq, f"response {out} to seq {seq}"
        status, data = Status(out[0]), bytes(out[2:])
        if status != Status.OK:
            assert data == b"", "only OK carries a payload"
        if expect is not None:
            assert status == expect, f"{Op(op).name if op in set(Op) else op}: {status!r}"
        return status, data

    async def read_reg(self, ctx, reg, expect=Status.OK):
        status, data = await self.frame(ctx, Op.READ_REG, int(reg).to_bytes(2, "little"),
                                        expect)
        return u32(data) if status == Status.OK else None

    async def write_reg(self, ctx, reg, value, expect=Status.OK):
        await self.frame(ctx, Op.WRITE_REG, int(reg).to_bytes(2, "little")
                         + value.to_bytes(4, "little"), expect)

    async def tile_reg(self, ctx, tile, reg):
        return await self.read_reg(ctx, TILE_REG_BASE + tile * TILE_REG_STRIDE + reg)

    async def write_mem(self, ctx, addr, data, expect=Status.OK):
        return await self.frame(ctx, Op.WRITE_MEM, addr.to_bytes(4, "little") + data, expect)

    async def read_mem(self, ctx, addr, n, expect=Status.OK):
        _, data = await self.frame(ctx, Op.READ_MEM, addr.to_bytes(4, "little")
                                   + n.to_bytes(2, "little"), expect)
        return data

    async def write_prog(self, ctx, words, expect=Status.OK):
        status, data = await self.frame(ctx, Op.WRITE_PROG, words_bytes(words), expect)
        return int.from_bytes(data, "little") if status == Status.OK else None

    async def until(self, ctx, cond, limit=5000):
        for _ in range(limit):
            if cond():
                return
            await ctx.tick()
        raise AssertionError("condition not met in time")

    async def program(self, ctx, words):
        """Queue ``words`` in bursts that fit (the free count polled, never QUEUE_FULL)."""
        depth = self.desc.control.params["queue_depth"]
        i = 0
        while i < len(words):
            free = await self.read_reg(ctx, Reg.QUEUE_FREE)
            n = min(free, len(words) - i, depth)
            if n == 0:
                await ctx.tick().repeat(30)
                continue
            await self.write_prog(ctx, words[i:i + n])
            i += n


def ids_of(cmds, tile):
    return [words[0] >> 16 for _, t, words in cmds if t == tile]


# -- host commands ----------------------------------------------------------------------------

def test_ping_registers_and_refused_commands():
    b = Bench(DESC32, seed=1)
    d = DESC32

    async def main(ctx):
        status, data = await b.frame(ctx, Op.PING, expect=Status.OK)
        assert data == (MAGIC.to_bytes(4, "little") + VERSION.to_bytes(2, "little")
                        + bytes([len(d.tiles), d.word_bytes])
                        + d.config_hash.to_bytes(4, "little"))
        assert await b.read_reg(ctx, Reg.ID) == MAGIC
        assert await b.read_reg(ctx, Reg.VERSION) == VERSION
        assert await b.read_reg(ctx, Reg.CONFIG_HASH) == d.config_hash
        assert await b.read_reg(ctx, Reg.STATUS) == 0b010  # idle, queue empty, no error
        assert await b.read_reg(ctx, Reg.ERROR) == 0
        assert await b.read_reg(ctx, Reg.RETIRED) == 0
        assert await b.read_reg(ctx, Reg.QUEUE_FREE) == DEPTH
        c0 = await b.read_reg(ctx, Reg.CYCLES)
        c1 = await b.read_reg(ctx, Reg.CYCLES)
        assert 0 < c0 < c1 <= b.net.cycle + 2
        for t in range(len(d.tiles)):
            for r in TileReg:
                assert await b.tile_reg(ctx, t, r) == 0
        # Registers that do not exist.
        for reg in (max(Reg) + 1, 0xFF, TILE_REG_BASE - 1,
                    TILE_REG_BASE + len(d.tiles) * TILE_REG_STRIDE,
                    TILE_REG_BASE + len(TileReg), TILE_REG_BASE + 2 * TILE_REG_STRIDE + 15,
                    0xFFFF):
            await b.read_reg(ctx, reg, expect=Status.BUS_ERROR)
        # Only ERROR is writable.
        for reg in (Reg.ID, Reg.STATUS, Reg.RETIRED, Reg.CYCLES, TILE_REG_BASE, 0x1234):
            await b.write_reg(ctx, reg, 0, expect=Status.BUS_ERROR)
        await b.write_reg(ctx, Reg.ERROR, 0xFFFFFFFF)
        # Unknown ops and payloads of the wrong length.
        for op in (0x00, 0x07, 0x55, 0xFF):
            await b.frame(ctx, op, b"\x01\x02", expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.PING, b"\x00", expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.READ_REG, b"\x00", expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.READ_REG, b"\x00\x00\x00", expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.WRITE_REG, b"\x04\x00\x00\x00\x00", expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.WRITE_REG, bytes(7), expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.READ_MEM, bytes(5), expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.READ_MEM, bytes(7), expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.WRITE_PROG, b"", expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.WRITE_PROG, bytes(6), expect=Status.BAD_COMMAND)
        await b.frame(ctx, Op.WRITE_MEM, bytes(3), expect=Status.BAD_COMMAND)
        # Nothing of that reached the network or the queue.
        assert await b.read_reg(ctx, Reg.QUEUE_FREE) == DEPTH
        assert await b.read_reg(ctx, Reg.ERROR) == 0
        assert not b.net.cmds and not b.net.writes and not b.net.reqs

    b.run(main)


def _window(desc, tile):
    j = [t.index for t in desc.of_kind(M)].index(tile)
    return j << MEM_WINDOW_BITS


@pytest.mark.parametrize("desc, seed", [(DESC32, 2), (DESC64, 3)], ids=["w32", "w64"])
def test_memory_round_trip_and_refusals(desc, seed):
    b = Bench(desc, seed=seed)
    net, wb = b.net, desc.word_bytes
    mems = desc.of_kind(M)

    async def main(ctx):
        for t in mems:
            size = t.params["kbytes"] * 1024
            base = _window(desc, t.index)
            for local, n in ((4, 4), (wb + 4, 4 * wb + 8), (size - 12, 12), (0, wb * 3),
                             (12, 36), (size - 64, 64)):
                data = b.rng.integers(0, 256, n, dtype=np.uint8).tobytes()
                before = bytearray(net.mem[t.index])
                first = len(net.writes)
                await b.write_mem(ctx, base + local, data)
                want = bytearray(before)
                want[local:local + n] = data
                assert net.mem[t.index] == want, "WRITE_MEM wrote other bytes or lanes"
                packets = net.writes[first:]
                assert [p["ack"] for p in packets] == [0] * (len(packets) - 1) + [1]
                assert all(p["dest"] == t.index for p in packets)
                assert sum(p["nbytes"] for p in packets) == n
                assert packets[0]["start"] == local
                words = -(-(local % wb + n) // wb)
                assert len(packets) == -(-words // desc.params["max_packet"])
                # Read back at this and at other 4-byte offsets.
                for roff, rn in ((0, n), (4, n - 4) if n > 4 else (0, n)):
                    first_req = len(net.reqs)
                    got = await b.read_mem(ctx, base + local + roff, rn)
                    assert got == bytes(want[local + roff:local + roff + rn])
                    req, = net.reqs[first_req:]
                    a = local + roff
                    cover = -(-(a % wb + rn) // wb)
                    cols = cover * wb // 4
                    assert req == {"dest": t.index, "owner": desc.control.index,
                                   "src": {"addr": a - a % wb, "rows": 1, "cols": cols,
                                           "stride": cols, "ebytes": 2, "rsv": 0,
                                           "mem": t.index},
                                   "dest_tile": desc.control.index, "port": Port.HOST,
                                   "ack": 0, "rsv": 0, "id": 0, "dest_addr": 0}
        # The largest read, 4 bytes into a word: the buffer holds MAX_PAYLOAD and a word.
        big = max(mems, key=lambda t: t.params["kbytes"])
        base = _window(desc, big.index)
        got = await b.read_mem(ctx, base + wb + 4, MAX_PAYLOAD)
        assert got == bytes(net.mem[big.index][wb + 4:wb + 4 + MAX_PAYLOAD])

        # Refused: BAD_COMMAND before BUS_ERROR; the frame is consumed, nothing is sent.
        snapshot = {k: bytes(v) for k, v in net.mem.items()}
        sent = (len(net.writes), len(net.reqs))
        size0 = mems[0].params["kbytes"] * 1024
        bad_w = [(0, b""), (0, bytes(2)), (0, bytes(6)), (2, bytes(4)), (1, bytes(8)),
                 (len(mems) << MEM_WINDOW_BITS | 3, bytes(4))]
        bus_w = [(len(mems) << MEM_WINDOW_BITS, bytes(4)), (0xFF << MEM_WINDOW_BITS, bytes(8)),
                 (size0 - 4, bytes(8)), (size0, bytes(4)), (0x00FFFFFC, bytes(4))]
        for addr, data in bad_w:
            await b.write_mem(ctx, addr, data, expect=Status.BAD_COMMAND)
        for addr, data in bus_w:
            await b.write_mem(ctx, addr, data, expect=Status.BUS_ERROR)
        for addr, n in ((0, 0), (0, 2), (0, 6), (2, 4), (0, MAX_PAYLOAD + 4),
                        (len(mems) << MEM_WINDOW_BITS | 1, 4)):
            await b.read_mem(ctx, addr, n, expect=Status.BAD_COMMAND)
        for addr, n in ((len(mems) << MEM_WINDOW_BITS, 4), (size0 - 4, 8), (size0, 4),
                        (0x00FFFFF0, 16)):
            await b.read_mem(ctx, addr, n, expect=Status.BUS_ERROR)
        assert {k: bytes(v) for k, v in net.mem.items()} == snapshot
        assert (len(net.writes), len(net.reqs)) == sent
        # Still in step: a good command after the refusals.
        await b.write_mem(ctx, 8, b"\x11\x22\x33\x44")
        assert await b.read_mem(ctx, 8, 4) == b"\x11\x22\x33\x44"
        assert await b.read_reg(ctx, Reg.ERROR) == 0

    b.run(main)


# -- the program queue --------------------------------------------------------------------------

def test_program_queue_bursts_queue_full_and_incomplete_instructions():
    b = Bench(DESC32, seed=5)
    net = b.net

    async def main(ctx):
        net.policy = lambda tile, words: None  # every DONE held until released
        free = await b.write_prog(ctx, copy(1) + wait(2, 1 << MEM1))
        assert DEPTH - 8 <= free <= DEPTH
        await b.until(ctx, lambda: MEM1 in net.held)
        while await b.read_reg(ctx, Reg.QUEUE_FREE) != DEPTH:  # the WAIT is taken, waits
            pass
        nops = [w for i in range(10) for w in nop(10 + i)]
        left = DEPTH - 10
        assert await b.write_prog(ctx, nops) == left
        refused = scale(99) + nop(98) * (left - 2)  # one word too many: nothing is queued
        await b.write_prog(ctx, refused, expect=Status.QUEUE_FULL)
        assert await b.read_reg(ctx, Reg.ERROR) == AccelError.QUEUE
        assert await b.read_reg(ctx, Reg.QUEUE_FREE) == left
        assert await b.read_reg(ctx, Reg.STATUS) == 0b101  # running, not empty, error
        assert await b.write_prog(ctx, [w for i in range(left) for w in nop(30 + i)]) == 0
        await b.write_prog(ctx, nop(97), expect=Status.QUEUE_FULL)
        await b.write_reg(ctx, Reg.ERROR, AccelError.QUEUE)
        assert await b.read_reg(ctx, Reg.RETIRED) == 0
        net.release(MEM1)
        await b.until(ctx, lambda: not net.timers and not net.done_q)
        total = 2 + 10 + left
        while await b.read_reg(ctx, Reg.RETIRED) != total:
            pass
        assert await b.read_reg(ctx, Reg.LAST_ID) == 30 + left - 1
        assert await b.read_reg(ctx, Reg.QUEUE_FREE) == DEPTH
        assert await b.read_reg(ctx, Reg.ERROR) == 0
        # An incomplete instruction waits (no error), running; the rest lets it issue.
        head, *args = copy(50)
        await b.write_prog(ctx, [head])
        await ctx.tick().repeat(200)
        assert await b.read_reg(ctx, Reg.STATUS) == 0b001
        assert await b.read_reg(ctx, Reg.QUEUE_FREE) == DEPTH - 1
        assert len(net.cmds) == 1 and await b.read_reg(ctx, Reg.RETIRED) == total
        assert await b.write_prog(ctx, args) >= 10
        await b.until(ctx, lambda: MEM1 in net.held)
        assert net.cmds[-1][1:] == (MEM1, copy(50))
        net.release(MEM1)
        while await b.read_reg(ctx, Reg.RETIRED) != total + 1:
            pass
        assert await b.read_reg(ctx, Reg.ERROR) == 0
        assert [w[0] >> 16 for _, _, w in net.cmds] == [1, 50]  # 99 never issued

    b.run(main)


# -- issue, credits, WAIT, counters ---------------------------------------------------------------

def _valid_instructions():
    """Instructions of DESC32 that pass every check, per tile."""
    return {
        MEM1: lambda i: copy(i, MEM1, region(addr=64, rows=2, cols=6, stride=8, mem=MEM1),
                             MEM2, 128),
        MEM2: lambda i: copy(i, MEM2, region(addr=0, rows=1, cols=16, mem=MEM2), MEM1, 0),
        SA1: lambda i: [scale(i, SA1, lane=i % 2), load(i, SA1, Port.B, 1,
                                                       region(rows=3, cols=8, mem=MEM2)),
                        run(i, SA1, region(rows=2, cols=2, stride=4, mem=MEM1))][i % 3],
        SA2: lambda i: [load(i, SA2, Port.A, 0, region(rows=4, cols=6, stride=6, ebytes=1)),
                        run(i, SA2, region(rows=2, cols=2, ebytes=2, mem=MEM2)),
                        load(i, SA2, Port.BIAS, 0, region(rows=1, cols=5, ebytes=2))][i % 3],
    }


def test_issue_order_credits_concurrency_and_counters():
    b = Bench(DESC32, seed=6)
    net = b.net
    make = _valid_instructions()
    tiles = list(make)
    # One instruction per tile, long ones, then a random mix.
    order = tiles + [tiles[int(b.rng.integers(0, 4))] for _ in range(32)]
    program, per_tile = [], {t: [] for t in tiles}
    for i, t in enumerate(order, start=1):
        program.append(make[t](i))
        per_tile[t].append(i)
    final = len(order) + 1
    words = [w for instr in program for w in instr] + wait(final, 0)

    async def main(ctx):
        net.policy = lambda tile, w: (400 if w[0] >> 16 <= 4 else int(b.rng.integers(3, 90)), 0)
        await b.program(ctx, words)
        while await b.read_reg(ctx, Reg.RETIRED) != final:
            await ctx.tick().repeat(50)
        assert await b.read_reg(ctx, Reg.LAST_ID) == final
        assert await b.read_reg(ctx, Reg.ERROR) == 0
        assert await b.read_reg(ctx, Reg.STATUS) == 0b010
        for t in tiles:
            assert ids_of(net.cmds, t) == per_tile[t], f"tile {t} issue order"
            cmds = [w for _, tt, w in net.cmds if tt == t]
            assert cmds == [program[i - 1] for i in per_tile[t]]
            assert await b.tile_reg(ctx, t, TileReg.ITEMS) == len(per_tile[t])
            assert await b.tile_reg(ctx, t, TileReg.LAST_ID) == per_tile[t][-1]
            assert await b.tile_reg(ctx, t, TileReg.STATUS) == 0
            # BUSY: from issue to the DONE's arrival, at least the model's own delays.
            held = sum(done - start for (start, tt, _), (done, td, _, _) in
                       zip([c for c in net.cmds if c[1] == t],
                           [d for d in net.dones if d[1] == t], strict=True))
            busy = await b.tile_reg(ctx, t, TileReg.BUSY)
            assert held <= busy <= held + 40 * len(per_tile[t])
            assert await b.tile_reg(ctx, t, TileReg.STALLED) <= busy
        assert net.max_concurrent == 4, "instructions of different tiles overlap"
        stalled = [await b.tile_reg(ctx, t, TileReg.STALLED) for t in tiles]
        assert sum(stalled) > 0
        assert await b.tile_reg(ctx, 0, TileReg.ITEMS) == 0

    b.run(main)


def test_wait_semantics_and_stalls():
    b = Bench(DESC32, seed=7)
    net = b.net
    delays = {1: 200, 4: 200, 7: 150, 8: 250, 13: 120}
    net.policy = lambda tile, w: (delays.get(w[0] >> 16, 5), 0)

    def cmd_at(id):
        return next(c for c, _, w in net.cmds if w[0] >> 16 == id)

    def done_at(id):
        return next(c for c, _, i, _ in net.dones if i == id)

    async def main(ctx):
        # WAIT on the busy tile holds the next instruction back.
        await b.write_prog(ctx, copy(1) + wait(2, 1 << MEM1) + scale(3))
        await b.until(ctx, lambda: any(w[0] >> 16 == 3 for _, _, w in net.cmds), 1000)
        assert cmd_at(3) > done_at(1)
        # WAIT on idle tiles (and the control tile's own bit) does not.
        await b.write_prog(ctx, copy(4) + wait(5, 1 << SA2 | 1) + scale(6))
        await b.until(ctx, lambda: any(w[0] >> 16 == 6 for _, _, w in net.cmds), 1000)
        assert MEM1 in net.outstanding and cmd_at(6) < cmd_at(4) + 200
        await b.until(ctx, lambda: not net.outstanding, 1000)
        # WAIT 0: every tile.
        await b.program(ctx, copy(7) + load(8, SA2, Port.A, 0, region(rows=2, cols=2,
                                                                      ebytes=1))
                        + wait(9, 0) + nop(10) + scale(11))
        await b.until(ctx, lambda: any(w[0] >> 16 == 11 for _, _, w in net.cmds), 1500)
        assert cmd_at(11) > max(done_at(7), done_at(8))
        await b.until(ctx, lambda: not net.outstanding and not net.done_q, 1000)
        while await b.read_reg(ctx, Reg.RETIRED) != 11:
            pass
        assert await b.read_reg(ctx, Reg.LAST_ID) == 11
        # A second instruction for a busy tile waits for its DONE, counted as STALLED.
        before = await b.tile_reg(ctx, SA1, TileReg.STALLED)
        await b.write_prog(ctx, scale(13) + scale(14))
        await b.until(ctx, lambda: any(w[0] >> 16 == 14 for _, _, w in net.cmds), 1000)
        assert cmd_at(14) > done_at(13)
        await b.until(ctx, lambda: not net.outstanding and not net.done_q, 1000)
        stalled = await b.tile_reg(ctx, SA1, TileReg.STALLED) - before
        assert 120 - 40 <= stalled <= 120 + 10
        assert await b.tile_reg(ctx, MEM1, TileReg.STALLED) == 0
        while await b.read_reg(ctx, Reg.RETIRED) != 13:
            pass
        assert await b.read_reg(ctx, Reg.ERROR) == 0

    b.run(main)


# -- static checks ---------------------------------------------------------------------------------

IL, AD = AccelError.ILLEGAL, AccelError.ADDRESS


def _head(cls, code, tile, id):
    return [pack(INSTR_HEAD, code=code, cls=cls, tile=tile, id=id)]


def _a(rows, cols, ebytes=0, trans=0, tile=SA1, port=Port.A, **kw):
    return lambda i: load(i, tile, port, trans, region(rows=rows, cols=cols, ebytes=ebytes,
                                                       **kw))


#: (what, instruction of an id, the one flag it raises or None if it passes), from the
#: specification's list, in DESC32: memories 1 (2048 B) and 3 (1024 B), 4-byte words; SA 2
#: (requant, int8 operands, 24-bit bias, 8-bit results, cols 2, max 8 x 8 x 8) and SA 4 (no
#: requant, a 16-bit, b 12-bit, bias 24-bit, 32-bit results, max m 4, k 6, n 5).
CHECKS = [
    # ILLEGAL: opcodes, tiles, kinds
    ("unknown opcode 0.2", lambda i: _head(0, 2, 0, i), IL),
    ("free class 5", lambda i: _head(5, 0, 0, i), IL),
    ("unknown PiM code 3", lambda i: _head(3, 3, 0, i), IL),
    ("unknown SA code 3", lambda i: _head(2, 3, SA1, i), IL),
    ("class 7 code 31", lambda i: _head(7, 31, 0, i), IL),
    ("tile beyond the tiles", lambda i: copy(i, 7, region(mem=MEM1)), IL),
    ("tile 255", lambda i: scale(i, 255), IL),
    ("COPY on an SA tile", lambda i: copy(i, SA1, region(mem=MEM1)), IL),
    ("LOAD on a memory tile", lambda i: load(i, MEM1), IL),
    ("NOP on a memory tile", lambda i: nop(i, MEM1), IL),
    ("WAIT on an SA tile", lambda i: wait(i, 0, SA1), IL),
    ("SCALE on the control tile", lambda i: scale(i, 0), IL),
    # known opcodes of kinds DESC32 has no tile of: all their words are consumed (the
    # follow-up instruction after each is read from the right place)
    ("MVM (7 words) without a PiM tile",
     lambda i: encode_instr(TileKind.PIM, "MVM", SA1, i, out=1, src=region(rows=2, cols=2)),
     IL),
    ("LAYERNORM (10 words) without an SFU tile",
     lambda i: encode_instr(TileKind.SFU, "LAYERNORM", SA1, i, shift=1,
                            src=region(rows=2, cols=2)), IL),
    # ILLEGAL: reserved fields
    ("COPY rsv", lambda i: copy(i, rsv=1 << 23), IL),
    ("COPY src.rsv", lambda i: copy(i, src=region(rsv=1)), IL),
    ("LOAD rsv", lambda i: load(i, rsv=1 << 28), IL),
    ("LOAD src.rsv", lambda i: load(i, src=region(rows=2, cols=3, rsv=32)), IL),
    ("SCALE rsv", lambda i: scale(i, rsv=0x80), IL),
    ("RUN rsv", lambda i: run(i, rsv=1), IL),
    ("RUN dest.rsv", lambda i: run(i, dest=region(rows=2, cols=2, rsv=4)), IL),
    # ILLEGAL: WAIT masks
    ("WAIT for tile 5", lambda i: wait(i, 1 << 5), IL),
    ("WAIT for tile 31", lambda i: wait(i, 1 << 31 | 1), IL),
    ("WAIT for existing tiles", lambda i: wait(i, 0b11111), None),
    # ILLEGAL: LOAD
    ("LOAD port 0", lambda i: load(i, port=0), IL),
    ("A ebytes 2 bytes for int8", _a(2, 2, ebytes=1), IL),
    ("A ebytes code 3", _a(2, 2, ebytes=3), IL),
    ("B ebytes 1 byte for 12 bits", _a(2, 2, tile=SA2, port=Port.B), IL),
    ("B ebytes 2 bytes for 12 bits", _a(2, 2, ebytes=1, tile=SA2, port=Port.B), None),
    ("BIAS ebytes 1 byte for 24 bits", _a(1, 2, port=Port.BIAS), IL),
    ("BIAS ebytes 4 bytes", _a(1, 2, ebytes=2, port=Port.BIAS), None),
    ("A m = rows above max_m", _a(9, 2), IL),
    ("A m = rows at max_m", _a(8, 8, stride=8), None),
    ("A k = cols above max_k", _a(2, 9), IL),
    ("A trans: k = rows above max_k", _a(7, 2, ebytes=1, trans=1, tile=SA2, stride=2), IL),
    ("A trans: k = rows at max_k", _a(6, 4, ebytes=1, trans=1, tile=SA2), None),
    ("A trans: m = cols above max_m", _a(2, 5, ebytes=1, trans=1, tile=SA2), IL),
    ("B n = cols above max_n", _a(2, 6, ebytes=1, tile=SA2, port=Port.B), IL),
    ("B k = rows above max_k", _a(7, 2, ebytes=1, tile=SA2, port=Port.B, stride=2), IL),
    ("B trans: n = rows above max_n", _a(6, 2, ebytes=1, trans=1, tile=SA2, port=Port.B,
                                         stride=2), IL),
    ("B trans: k = cols above max_k", _a(2, 7, ebytes=1, trans=1, tile=SA2, port=Port.B,
                                         stride=8), IL),
    ("B trans: n, k at their max", _a(5, 6, ebytes=1, trans=1, tile=SA2, port=Port.B), None),
    ("BIAS rows 2", _a(2, 2, ebytes=2, port=Port.BIAS), IL),
    ("BIAS trans", _a(1, 2, ebytes=2, trans=1, port=Port.BIAS), IL),
    ("BIAS n above max_n", _a(1, 9, ebytes=2, port=Port.BIAS), IL),
    ("A rows 0 (and a bad mem): ILLEGAL first", _a(0, 2, mem=SA2), IL),
    ("B cols 0", _a(2, 0, port=Port.B), IL),
    ("bad ebytes and bad mem: ILLEGAL first", _a(2, 2, ebytes=1, mem=SA2), IL),
    # ILLEGAL: SCALE and RUN
    ("SCALE without requant", lambda i: scale(i, SA2), IL),
    ("SCALE lane = cols", lambda i: scale(i, lane=2), IL),
    ("SCALE lane 1", lambda i: scale(i, lane=1, e=63, m=(1 << 31) - 1), None),
    ("SCALE e above max_shift", lambda i: scale(i, e=64), IL),
    ("SCALE m above m_width", lambda i: scale(i, m=1 << 31), IL),
    ("RUN int8 results in 4 bytes", lambda i: run(i, dest=region(rows=2, cols=2, ebytes=2)), IL),
    ("RUN 32-bit results in 1 byte", lambda i: run(i, SA2, region(rows=2, cols=4)), IL),
    ("RUN 32-bit results in 4 bytes", lambda i: run(i, SA2, region(rows=2, cols=2, ebytes=2)),
     None),
    ("COPY ebytes code 3", lambda i: copy(i, src=region(ebytes=3)), IL),
    # ADDRESS: the region's memory
    ("LOAD from an SA tile", _a(2, 2, mem=SA2), AD),
    ("LOAD from no tile", _a(2, 2, mem=9), AD),
    ("LOAD from the control tile", _a(2, 2, mem=0), AD),
    ("COPY from another memory", lambda i: copy(i, MEM1, region(mem=MEM2)), AD),
    ("RUN into memory 3", lambda i: run(i, dest=region(rows=2, cols=2, stride=4, mem=MEM2)),
     None),
    # ADDRESS: shape and alignment
    ("RUN dest rows 0", lambda i: run(i, dest=region(rows=0, cols=2)), AD),
    ("RUN dest cols 0", lambda i: run(i, dest=region(rows=2, cols=0)), AD),
    ("COPY rows 0", lambda i: copy(i, src=region(rows=0)), AD),
    ("COPY cols 0", lambda i: copy(i, src=region(cols=0)), AD),
    ("addr not word aligned", lambda i: copy(i, src=region(addr=2)), AD),
    ("addr 4-byte aligned", lambda i: copy(i, src=region(addr=4)), None),
    ("row stride not whole words", _a(2, 2, stride=2), AD),
    ("stride below cols", _a(2, 8, stride=4), AD),
    ("one row: stride below cols is fine", _a(1, 2, stride=0), None),
    ("one row: odd stride is fine", _a(1, 2, stride=1), None),
    ("region past the end by 4", lambda i: run(i, SA2, region(addr=1012, rows=2, cols=2,
                                                              ebytes=2, mem=MEM2)), AD),
    ("region ends at the end", lambda i: run(i, SA2, region(addr=1008, rows=2, cols=2,
                                                           ebytes=2, mem=MEM2)), None),
    ("COPY src ends at 2048", lambda i: copy(i, src=region(addr=2044, cols=4)), None),
    ("COPY src past 2048", lambda i: copy(i, src=region(addr=2044, cols=5)), AD),
    ("huge rows and stride", lambda i: copy(i, src=region(rows=0xFFFF, cols=1,
                                                          stride=0xFFFC)), AD),
    ("addr near 2**32", _a(1, 2, addr=0xFFFFFFFC), AD),
    # ADDRESS: COPY's destination
    ("COPY to an SA tile", lambda i: copy(i, dest_tile=SA1), AD),
    ("COPY to no tile", lambda i: copy(i, dest_tile=9), AD),
    ("COPY to itself", lambda i: copy(i, dest_tile=MEM1, dest_addr=1024), None),
    ("COPY dest_addr not aligned", lambda i: copy(i, dest_addr=2), AD),
    ("COPY dest past the end", lambda i: copy(i, src=region(rows=2, cols=5, stride=8),
                                              dest_addr=1024 - 12), AD),
    ("COPY dest ends at the end", lambda i: copy(i, src=region(rows=2, cols=5, stride=8),
                                                 dest_addr=1024 - 16), None),
    ("COPY dest: rows of whole words", lambda i: copy(i, src=region(rows=3, cols=1, stride=4),
                                                      dest_addr=1024 - 8), AD),
]


def test_every_static_check_raises_its_flag_retires_and_execution_goes_on():
    b = Bench(DESC32, seed=8, gap=0.1, stall=0.1)
    net = b.net
    follow = 0xF000

    async def main(ctx):
        # The follow-up instruction is held until the case has been looked at; a passing
        # case is answered quickly.
        net.policy = lambda tile, w: None if w[0] >> 16 >= follow else (5, 0)
        retired = 0
        for n, (what, make, flag) in enumerate(CHECKS, start=1):
            words = make(n) + scale(follow + n)
            await b.program(ctx, words)
            await b.until(ctx, lambda: SA1 in net.held, 1500)
            assert net.held[SA1] == follow + n, what
            issued = [w for _, _, w in net.cmds if w[0] >> 16 == n]
            if flag is None and unpack(INSTR_HEAD, make(n)[0])["cls"] == C:
                assert not issued, f"{what}: passes and retires here"
            elif flag is None:
                assert issued == [make(n)], f"{what}: passes and is issued as it is"
                await b.until(ctx, lambda: not net.done_q and not net.timers, 200)
                await ctx.tick().repeat(4)
            else:
                assert not issued, f"{what}: refused, not issued"
            retired += 1
            assert await b.read_reg(ctx, Reg.ERROR) == (flag or 0), what
            assert await b.read_reg(ctx, Reg.RETIRED) == retired, what
            assert await b.read_reg(ctx, Reg.LAST_ID) == n, what
            net.release(SA1)
            retired += 1
            while await b.read_reg(ctx, Reg.RETIRED) != retired:
                pass
            assert await b.read_reg(ctx, Reg.LAST_ID) == follow + n
            if flag is not None:
                await b.write_reg(ctx, Reg.ERROR, int(flag))

    b.run(main)


# -- DONE errors, ERROR clear -----------------------------------------------------------------

def test_done_errors_reach_error_and_tile_status_until_cleared():
    b = Bench(DESC32, seed=9)
    net = b.net
    errors = {1: AccelError.UNIT, 2: 0x80 | AccelError.UNIT, 3: 0, 4: AccelError.ILLEGAL,
              5: AccelError.ADDRESS}
    net.policy = lambda tile, w: (int(b.rng.integers(3, 30)), errors.get(w[0] >> 16, 0))

    async def status_of(ctx, tile):
        return await b.tile_reg(ctx, tile, TileReg.STATUS)

    async def main(ctx):
        await b.program(ctx, scale(1) + copy(2) + load(3, SA2, Port.A, 0,
                                                        region(rows=2, cols=2, ebytes=1))
                        + wait(6, 0))
        while await b.read_reg(ctx, Reg.RETIRED) != 4:
            pass
        assert await b.read_reg(ctx, Reg.ERROR) == AccelError.UNIT
        assert await b.read_reg(ctx, Reg.STATUS) == 0b110
        assert await status_of(ctx, SA1) == int(AccelError.UNIT) << 8
        assert await status_of(ctx, MEM1) == (0x80 | AccelError.UNIT) << 8
        assert await status_of(ctx, SA2) == 0
        # Clearing UNIT clears it in ERROR and in every tile's field; bit 7 stays.
        await b.write_reg(ctx, Reg.ERROR, int(AccelError.UNIT))
        assert await b.read_reg(ctx, Reg.ERROR) == 0
        assert await status_of(ctx, SA1) == 0
        assert await status_of(ctx, MEM1) == 0x80 << 8
        await b.write_reg(ctx, Reg.ERROR, 0)
        assert await status_of(ctx, MEM1) == 0x80 << 8
        await b.write_reg(ctx, Reg.ERROR, 0xFF)
        assert await status_of(ctx, MEM1) == 0
        # Errors of one tile's DONEs accumulate.
        await b.program(ctx, scale(4) + scale(5) + wait(7, 0))
        while await b.read_reg(ctx, Reg.RETIRED) != 7:
            pass
        assert await b.read_reg(ctx, Reg.ERROR) == AccelError.ILLEGAL | AccelError.ADDRESS
        assert await status_of(ctx, SA1) == int(AccelError.ILLEGAL | AccelError.ADDRESS) << 8
        assert await b.tile_reg(ctx, SA1, TileReg.ITEMS) == 3
        assert await b.tile_reg(ctx, SA1, TileReg.LAST_ID) == 5
        await b.write_reg(ctx, Reg.ERROR, 0xFFFFFFFF)
        assert await b.read_reg(ctx, Reg.STATUS) == 0b010
        # A DONE for a tile with nothing outstanding is ignored.
        net.done_q.append(net.done_packet(SA2, 77, int(AccelError.UNIT)))
        await ctx.tick().repeat(20)
        assert await b.read_reg(ctx, Reg.ERROR) == 0
        assert await b.read_reg(ctx, Reg.RETIRED) == 7
        assert await b.tile_reg(ctx, SA2, TileReg.ITEMS) == 1

    b.run(main)


# -- the watchdog -----------------------------------------------------------------------------

def test_watchdog_fires_when_a_tile_never_answers_and_a_late_done_still_retires():
    b = Bench(DESC32, seed=10)
    b.alive = None  # no progress pulses but the test's own
    net, dut = b.net, b.dut
    limit = DESC32.control.params["watchdog"]
    phase = {"go": 0, "done": 0}

    async def host(ctx):
        net.policy = lambda tile, w: None
        await b.write_prog(ctx, copy(1))
        await b.until(ctx, lambda: phase["done"] == 1, 2000)
        assert await b.read_reg(ctx, Reg.ERROR) == AccelError.WATCHDOG
        assert await b.read_reg(ctx, Reg.STATUS) == 0b111  # running, queue empty, error
        assert await b.tile_reg(ctx, MEM1, TileReg.STATUS) == 1
        net.release(MEM1)
        while await b.read_reg(ctx, Reg.RETIRED) != 1:
            pass
        assert await b.tile_reg(ctx, MEM1, TileReg.ITEMS) == 1
        assert await b.tile_reg(ctx, MEM1, TileReg.STATUS) == 0
        assert await b.read_reg(ctx, Reg.STATUS) == 0b110  # idle; the flag is sticky
        assert ctx.get(dut.watchdog)
        await b.write_reg(ctx, Reg.ERROR, int(AccelError.WATCHDOG))
        assert not ctx.get(dut.watchdog)
        # Progress pulses keep it quiet; it fires once they stop.
        await b.write_prog(ctx, copy(2))
        phase["go"] = 2
        await b.until(ctx, lambda: phase["done"] == 2, 4000)
        net.release(MEM1)
        while await b.read_reg(ctx, Reg.RETIRED) != 2:
            pass
        await b.write_reg(ctx, Reg.ERROR, int(AccelError.WATCHDOG))
        # A host WRITE_MEM whose DONE never comes counts too; its answer waits for it.
        net.hold_acks = True
        phase["go"] = 3
        await b.write_mem(ctx, 64, bytes(range(16)))
        assert phase["done"] == 3
        assert net.mem[MEM1][64:80] == bytes(range(16))
        assert await b.read_reg(ctx, Reg.ERROR) == AccelError.WATCHDOG

    async def watch(ctx):
        await b.until(ctx, lambda: MEM1 in net.held, 1000)
        start = net.cycle
        while not ctx.get(dut.watchdog):
            await ctx.tick()
            assert net.cycle - start < limit + 50
        assert limit - 20 <= net.cycle - start <= limit + 2
        assert ctx.get(dut.running) and MEM1 in net.held
        phase["done"] = 1
        await b.until(ctx, lambda: phase["go"] == 2, 4000)
        await b.until(ctx, lambda: MEM1 in net.held, 1000)
        for _ in range(6):
            for _ in range(limit - 30):
                await ctx.tick()
                assert not ctx.get(dut.watchdog)
            ctx.set(dut.progress, 1)
            await ctx.tick()
            ctx.set(dut.progress, 0)
        stop = net.cycle
        await b.until(ctx, lambda: ctx.get(dut.watchdog), limit + 10)
        assert limit - 2 <= net.cycle - stop <= limit + 2
        phase["done"] = 2
        await b.until(ctx, lambda: phase["go"] == 3, 4000)
        await b.until(ctx, lambda: net.held_acks, 1000)
        start = net.cycle
        await b.until(ctx, lambda: ctx.get(dut.watchdog), limit + 10)
        assert limit - 20 <= net.cycle - start <= limit + 2
        assert b.expect_resp and not ctx.get(dut.host_resp.valid)  # still unanswered
        phase["done"] = 3
        net.release_acks()

    b.run(host, watch)


# -- Verilog -------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", [TABLE32, TABLE64, {
    "nx": 4, "ny": 2, "flit_width": 256, "max_packet": 1, "tile": [
        {"kind": "memory", "at": [0, 0], "kbytes": 16384 - 1},
        {"kind": "sa", "at": [1, 0], "rows": 2, "cols": 8, "max_m": 4, "max_k": 4, "max_n": 8},
        {"kind": "control", "at": [2, 0], "queue_depth": 4096 - 3, "watchdog": 1 << 24},
        {"kind": "memory", "at": [3, 0], "kbytes": 1}]}], ids=["w32", "w64", "w256"])
def test_verilog_lints_clean(tmp_path, table):
    try:
        verilator_root()
    except ToolError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "control_tile.v"
    path.write_text(verilog.convert(ControlTile(describe(table)), name="control_tile"))
    result = verilator_lint(path, "control_tile")
    assert result.ok, result.log
    result = yosys_check(path, "control_tile")
    assert result.ok, result.log[-3000:]


# -- the PiM and SFU opcodes' static checks, against the program interpreter ------------------

#: Control 0, memories 1 (1 KiB) and 4 (2 KiB), a small PiM tile 2 (faults, no noise) and a
#: small SFU tile 3.
TABLE_PS = {"nx": 3, "ny": 2, "max_packet": 4, "tile": [
    {"kind": "control", "at": [0, 0]},
    {"kind": "memory", "at": [1, 0], "kbytes": 1},
    {"kind": "pim", "at": [2, 0], "rows": 16, "cols": 4, "lanes": 4, "enob": 6,
     "noise": False, "max_m": 8},
    {"kind": "sfu", "at": [0, 1], "lanes": 2, "max_row": 16, "channels": 24},
    {"kind": "memory", "at": [1, 1], "kbytes": 2},
]}


def _random_instruction(rng, prog, desc):
    """One PiM or SFU instruction with fields near their limits (some past them)."""
    from heterotron.sim.golden.accel import Region
    from heterotron.sim.golden.intops import exp_consts, gelu_consts

    def pick(*values):
        return values[int(rng.integers(0, len(values)))]

    def bad():
        return rng.random() < 0.15

    def reg(rows=None, cols=None, eb=None):
        """A region that fits (of the shape asked for), one field in seven past its limit."""
        rows = pick(1, 2, 3, 4) if rows is None else rows
        cols = pick(1, 4, 5, 16) if cols is None else cols
        eb = eb or pick(1, 2, 4)
        stride = -(-cols * eb // 4) * 4 // eb + pick(0, 0, 4 // eb)
        r = dict(mem=pick(1, 4), addr=pick(0, 64, 128), rows=rows, cols=cols, stride=stride,
                 ebytes=eb)
        if bad():
            key = pick("mem", "addr", "rows", "cols", "stride", "ebytes")
            r[key] = {"mem": pick(0, 2, 3), "addr": pick(2, 1020, 2048),
                      "rows": pick(0, 9, 300), "cols": pick(0, 17, 25),
                      "stride": max(0, cols - 1), "ebytes": pick(1, 2, 4)}[key]
        return Region(**r)

    def like(r, eb=None):
        return reg(r.rows, r.cols, eb or r.ebytes) if not bad() else reg()

    op = pick("ADC", "PROGRAM", "MVM", "TABLE", "REQUANT", "SOFTMAX", "GELU", "LAYERNORM")
    if op == "ADC":
        prog.adc(2, pick(0, 1, 1 << 17, (1 << 18) - 1) if not bad() else 1 << 18,
                 pick(0, -(1 << 18), 5) if not bad() else 1 << 18, 3 if bad() else 0)
    elif op == "PROGRAM":
        prog.program(2, reg(pick(1, 4), pick(1, 16), 1), 7 if bad() else 0,
                     int(rng.integers(0, 1 << 32)))
    elif op == "MVM":
        src = reg(pick(1, 8), pick(1, 16), pick(1, 2))
        prog.mvm(2, src, like(reg(src.rows, pick(1, 4), 4), 4) if rng.random() < 0.6 else None)
    elif op == "TABLE":
        which = pick(0, 1, 2, 3, 8) if not bad() else 9
        prog.table(3, which, reg(1, pick(2, 24) * (2 if which == 3 else 1), 4))
    elif op == "REQUANT":
        src, bits = reg(), pick(2, 8, 9, 16, 32) if not bad() else pick(1, 33)
        y = like(src) if rng.random() < 0.5 else None
        prog.requant(3, src, like(src, {8: 1, 16: 2}.get(bits, 4) if bits <= 16 else 4), bits,
                     bias=bool(rng.integers(0, 2)), y=y, m_y=5 if not bad() else 1 << 31,
                     e_y=pick(3, 63) if not bad() else 64)
    elif op == "SOFTMAX":
        src, k = reg(), exp_consts(0.002)
        bits = pick(8, 16) if not bad() else pick(17, 1)
        prog.softmax(3, src, like(src, 1 if bits <= 8 else 2), k.x0, k.b, k.c, bits,
                     valid=pick(0, src.cols) if not bad() else src.cols + 1)
    elif op == "GELU":
        src, g = reg(), gelu_consts(0.001)
        bits = pick(12, 16, 24) if not bad() else 25
        prog.gelu(3, src, like(src, 2 if bits <= 16 else 4), g.b, g.c, g.one,
                  7 if not bad() else 1 << 31, 4 if not bad() else 64, bits)
    else:
        src = reg(cols=pick(4, 16) if not bad() else 17)
        dest = like(src, 1)
        res = like(dest, 2)
        if rng.random() < 0.2:
            res = Region(5 - dest.mem, res.addr, res.rows, res.cols, res.stride, res.ebytes)
        prog.layernorm(3, src, dest, res, pick(0, 15) if not bad() else 16,
                       8 if not bad() else 25, 16 if not bad() else 1)


def test_pim_and_sfu_static_checks_match_the_interpreter():
    """Random PiM and SFU instructions, many of them with a field past its limit or a region
    outside its scratchpad: the control tile refuses (ILLEGAL, else ADDRESS) exactly those
    the program interpreter refuses, and issues the rest unchanged."""
    from heterotron.sim.golden.accel import Interpreter, Program

    desc = describe(TABLE_PS)
    rng = np.random.default_rng(12)
    cases = []
    for _ in range(160):
        prog = Program(desc)
        prog._next_id = len(cases) + 1
        _random_instruction(rng, prog, desc)
        cases.append(prog.words)
    expect = []
    for n, words in enumerate(cases, start=1):
        interp = Interpreter(desc, hazards=False)
        interp.execute(words)
        flags = [f for id, f, _ in interp.result().errors if id == n]
        refused = flags[0] & (AccelError.ILLEGAL | AccelError.ADDRESS) if flags else 0
        expect.append(refused)
    assert sum(1 for f in expect if f == 0) >= len(cases) // 4, "a fair share passes"
    assert {AccelError.ILLEGAL, AccelError.ADDRESS} <= set(expect)

    b = Bench(desc, seed=13, gap=0.1, stall=0.1)
    net = b.net

    async def main(ctx):
        net.policy = lambda tile, w: (3, 0)
        retired = 0
        for n, (words, flag) in enumerate(zip(cases, expect, strict=True), start=1):
            await b.program(ctx, words)
            retired += 1
            while await b.read_reg(ctx, Reg.RETIRED) != retired:
                pass
            issued = [w for _, _, w in net.cmds if w[0] >> 16 == n]
            what = f"case {n}: {decode_instr(words)[0].name} {decode_instr(words)[2]}"
            assert issued == ([] if flag else [words]), what
            assert await b.read_reg(ctx, Reg.ERROR) == int(flag), what
            if flag:
                await b.write_reg(ctx, Reg.ERROR, int(flag))

    b.run(main)


def test_verilog_lints_clean_with_pim_and_sfu_tiles(tmp_path):
    try:
        verilator_root()
    except ToolError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "control_tile.v"
    path.write_text(verilog.convert(ControlTile(describe(TABLE_PS)), name="control_tile"))
    result = verilator_lint(path, "control_tile")
    assert result.ok, result.log
    result = yosys_check(path, "control_tile")
    assert result.ok, result.log[-3000:]

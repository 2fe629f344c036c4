"""The memory tile (``hdl/tiles/memory.py``) in Amaranth's simulator, against a bytearray.

Every stream is driven cycle by cycle from one testbench: inputs with random idle gaps (valid
and payload held until taken), outputs with random back-pressure (checked to hold valid and
payload until taken). Packets are built with the contract's ``pack``; every DATA packet the
tile sends is compared beat by beat with the list computed here from the model.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from heterotron.hdl.contract.accel import (
    DATA_INFO,
    DONE_WORD,
    EBYTES,
    MSG_HEADER,
    REQ_ARGS,
    AccelError,
    MsgClass,
    Port,
    TileKind,
    encode_instr,
    pack,
    unpack,
    words_of,
)
from heterotron.hdl.contract.params import ParamError, inspect_only
from heterotron.hdl.tiles.memory import MemoryTile, MemoryTileError

INDEX, CONTROL = 3, 0


# -- packets ----------------------------------------------------------------------------------

def write_packet(wb: int, start: int, payload: bytes, *, owner: int, ack: bool, id: int,
                 rng, port: int = Port.MEM) -> list[int]:
    """A DATA packet writing ``payload`` at byte ``start``; bytes outside the range are
    random (the byte enables must drop them)."""
    n = len(payload)
    first = start // wb
    beats = (start + n - 1) // wb - first + 1 if n else 0
    words = []
    for i in range(beats):
        word = bytearray(rng.integers(0, 256, wb, dtype=np.uint8).tobytes())
        for b in range(wb):
            pos = (first + i) * wb + b
            if start <= pos < start + n:
                word[b] = payload[pos - start]
        words.append(int.from_bytes(word, "little"))
    return [pack(MSG_HEADER, cls=MsgClass.DATA, port=port, ack=int(ack), owner=owner,
                 length=beats),
            pack(DATA_INFO, id=id, nbytes=n), start, *words]


def region(addr, rows, cols, stride, ebytes):
    return dict(addr=addr, rows=rows, cols=cols, stride=stride, ebytes=ebytes, mem=INDEX)


def req_packet(src, *, owner, dest_tile, port, ack, id, dest_addr) -> list[int]:
    args = pack(REQ_ARGS, src=src, dest_tile=dest_tile, port=port, ack=int(ack), id=id,
                dest_addr=dest_addr)
    return [pack(MSG_HEADER, cls=MsgClass.REQ, owner=owner, length=5), *words_of(args, 5)]


def copy_packet(src, *, dest_tile, id, dest_addr) -> list[int]:
    instr = encode_instr(TileKind.MEMORY, "COPY", tile=INDEX, id=id, src=src,
                         dest_tile=dest_tile, dest_addr=dest_addr)
    return [pack(MSG_HEADER, cls=MsgClass.CMD, owner=CONTROL, length=len(instr)), *instr]


def expected_job(model: bytearray, wb: int, max_packet: int, src, *, owner, dest_tile, port,
                 ack, id, dest_addr) -> list[tuple[int, int, int]]:
    """The ``(data, last, dest)`` beats of a read job's DATA packets."""
    eb = EBYTES[src["ebytes"]]
    row_words = -(-src["cols"] * eb // wb)
    words = []
    for r in range(src["rows"]):
        base = src["addr"] + r * src["stride"] * eb
        for j in range(row_words):
            at = base + j * wb
            words.append(int.from_bytes(model[at:at + wb], "little")
                         if at + wb <= len(model) else 0)
    beats = []
    starts = list(range(0, len(words), max_packet)) or [0]
    for k in starts:
        chunk = words[k:k + max_packet]
        last_pkt = k == starts[-1]
        packet = [pack(MSG_HEADER, cls=MsgClass.DATA, port=port, ack=int(ack and last_pkt),
                       owner=owner, length=len(chunk)),
                  pack(DATA_INFO, id=id, nbytes=len(chunk) * wb),
                  (dest_addr + k * wb) & 0xFFFFFFFF, *chunk]
        beats += [(w, int(i == len(packet) - 1), dest_tile) for i, w in enumerate(packet)]
    return beats


def done_beats(owner, id, error=0) -> list[tuple[int, int, int]]:
    return [(pack(MSG_HEADER, cls=MsgClass.DONE, owner=owner, length=1), 0, CONTROL),
            (pack(DONE_WORD, id=id, tile=owner, error=error), 1, CONTROL)]


# -- the bench --------------------------------------------------------------------------------

class Source:
    """Drives an rx stream from a queue of packets, idle with probability ``gap`` before a
    beat; holds valid and payload until the beat is taken."""

    def __init__(self, stream, rng, gap=0.0):
        self.stream, self.rng, self.gap = stream, rng, gap
        self.queue: deque = deque()
        self.cur = None
        self.open = False  # a packet's first beat was taken, its last not yet

    def push(self, words):
        for i, w in enumerate(words):
            self.queue.append({"data": w, "last": int(i == len(words) - 1)})

    @property
    def idle(self):
        return self.cur is None and not self.queue

    def drive(self, ctx):
        if self.cur is None and self.queue and not (self.gap and self.rng.random() < self.gap):
            self.cur = self.queue.popleft()
        ctx.set(self.stream.valid, self.cur is not None)
        if self.cur is not None:
            ctx.set(self.stream.payload, self.cur)

    def sample(self, ctx):
        if self.cur is not None and ctx.get(self.stream.ready):
            self.open = not self.cur["last"]
            self.cur = None
            return True
        return False


class Sink:
    """Takes a tx stream's beats, ready low with probability ``stall``; checks that valid and
    payload stay until taken."""

    def __init__(self, stream, rng, stall=0.0):
        self.stream, self.rng, self.stall = stream, rng, stall
        self.beats: list[tuple[int, int, int]] = []
        self.held = None
        self.ready = False

    @property
    def packets(self):
        return sum(last for _, last, _ in self.beats)

    def drive(self, ctx):
        self.ready = not (self.stall and self.rng.random() < self.stall)
        ctx.set(self.stream.ready, self.ready)

    def sample(self, ctx):
        valid = ctx.get(self.stream.valid)
        beat = None
        if valid:
            p = ctx.get(self.stream.payload)
            beat = (int(p.data), int(p.last), int(p.dest))
        if self.held is not None:
            assert beat == self.held, f"a beat not taken changed: {self.held} -> {beat}"
        if valid and self.ready:
            self.beats.append(beat)
            self.held = None
        else:
            self.held = beat


class Bench:
    def __init__(self, seed, *, flit_width=32, kbytes=1, max_packet=3, gap=0.3, stall=0.3):
        self.rng = rng = np.random.default_rng(seed)
        self.dut = dut = MemoryTile(index=INDEX, control=CONTROL, flit_width=flit_width,
                                    kbytes=kbytes, max_packet=max_packet)
        self.wb, self.max_packet = flit_width // 8, max_packet
        self.model = bytearray(kbytes * 1024)
        self.cmd = Source(dut.cmd_rx, rng, gap)
        self.req = Source(dut.req_rx, rng, gap)
        self.wr = Source(dut.data_rx, rng, gap)
        self.tx = Sink(dut.data_tx, rng, stall)
        self.done = Sink(dut.done_tx, rng, stall)
        self.jobs: dict[int, tuple[str, list]] = {}  # id -> (input, expected beats)
        self.order: list[int] = []  # ids in the order their first beat left
        self.dones: list = []
        self.cycles = 0
        self.stuck_writes = 0  # cycles data_rx offered a beat outside a DONE and was refused
        self.stuck_cmds = 0  # cycles cmd_rx offered a beat and was refused
        self.busy_seen = False

    # what to send (the model is updated as the packet is queued)
    def write(self, start, payload, *, ack=False, id=0, owner=7, port=Port.MEM):
        self.wr.push(write_packet(self.wb, start, payload, owner=owner, ack=ack, id=id,
                                  rng=self.rng, port=port))
        if port == Port.MEM:
            self.model[start:start + len(payload)] = payload
        if ack:
            self.dones += done_beats(owner, id, 0 if port == Port.MEM else AccelError.UNIT)

    def write_words(self, start, nbytes, *, ack_last=False, id=0, packet=None):
        """Aligned writes of random bytes in packets of ``packet`` (default ``max_packet``)
        words, split as a sender splits them."""
        data = self.rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
        step = (packet or self.max_packet) * self.wb
        for k in range(0, nbytes, step):
            last = k + step >= nbytes
            self.write(start + k, data[k:k + step], ack=ack_last and last, id=id)

    def request(self, src, *, id, owner=5, dest_tile=9, port=Port.A, ack=False, dest_addr=0):
        assert id not in self.jobs
        job = dict(owner=owner, dest_tile=dest_tile, port=port, ack=ack, id=id,
                   dest_addr=dest_addr)
        self.req.push(req_packet(src, **job))
        self.jobs[id] = ("req", expected_job(self.model, self.wb, self.max_packet, src, **job))

    def copy(self, src, *, id, dest_tile=2, dest_addr=0):
        assert id not in self.jobs
        self.cmd.push(copy_packet(src, dest_tile=dest_tile, id=id, dest_addr=dest_addr))
        self.jobs[id] = ("cmd", expected_job(
            self.model, self.wb, self.max_packet, src, owner=INDEX, dest_tile=dest_tile,
            port=Port.MEM, ack=True, id=id, dest_addr=dest_addr))

    # running
    async def run(self, ctx, limit=20000, tail=8):
        """Until every input is sent, every expected packet arrived and the tile is idle,
        then ``tail`` more cycles (nothing more may arrive)."""
        dut = self.dut
        want_tx = sum(sum(b[1] for b in beats) for _, beats in self.jobs.values())
        want_done = sum(b[1] for b in self.dones)
        quiet = 0
        for _ in range(limit):
            sources, sinks = (self.cmd, self.req, self.wr), (self.tx, self.done)
            for s in (*sources, *sinks):
                s.drive(ctx)
            busy = ctx.get(dut.busy)
            self.busy_seen |= bool(busy)
            if self.wr.open:
                assert busy, "busy low in the middle of a write packet"
            if ctx.get(dut.data_tx.valid):
                assert busy, "busy low while a read job sends"
            if (self.wr.cur is not None and not ctx.get(dut.data_rx.ready)
                    and not ctx.get(dut.done_tx.valid)):
                self.stuck_writes += 1
            if self.cmd.cur is not None and not ctx.get(dut.cmd_rx.ready):
                self.stuck_cmds += 1
            for s in (*sources, *sinks):
                s.sample(ctx)
            await ctx.tick()
            self.cycles += 1
            settled = (all(s.idle for s in sources) and self.tx.packets >= want_tx
                       and self.done.packets >= want_done and not busy)
            quiet = quiet + 1 if settled else 0
            if quiet > tail:
                break
        else:
            raise AssertionError(f"not finished in {limit} cycles: {self.tx.packets} of "
                                 f"{want_tx} data packets, {self.done.packets} of {want_done} "
                                 f"DONEs")
        assert ctx.get(dut.busy) == 0

    def check(self):
        """Every job's packets, whole and in one piece, in each input's order; the DONEs."""
        beats, seen = self.tx.beats, []
        at = 0
        while at < len(beats):
            assert unpack(MSG_HEADER, beats[at][0])["cls"] == MsgClass.DATA
            id = unpack(DATA_INFO, beats[at + 1][0])["id"]
            assert id in self.jobs and id not in seen, f"unexpected job {id} at beat {at}"
            want = self.jobs[id][1]
            got = beats[at:at + len(want)]
            for k, (g, w) in enumerate(zip(got, want, strict=True)):
                assert g == w, f"job {id}, beat {k}: got {g}, expected {w}"
            seen.append(id)
            at += len(want)
        assert sorted(seen) == sorted(self.jobs)
        for source in ("cmd", "req"):
            ids = [i for i in seen if self.jobs[i][0] == source]
            assert ids == sorted(ids), f"{source} jobs out of order: {ids}"
        self.order = seen
        assert self.done.beats == self.dones

    def simulate(self, bench):
        sim = Simulator(self.dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()


def random_region(rng, wb, lo, hi):
    """A valid region whose bytes lie in ``[lo, hi)``: word-aligned row starts."""
    while True:
        code = int(rng.integers(0, 3))
        eb = EBYTES[code]
        cols = int(rng.integers(1, 3 * wb // eb + 2))
        rows = int(rng.integers(1, 6))
        row_bytes = -(-cols * eb // wb) * wb
        unit = wb // eb  # strides keep row starts word aligned
        stride = unit * int(rng.choice([0, -(-cols // unit), -(-cols // unit) + 1,
                                        int(rng.integers(0, 6))]))
        span = (rows - 1) * stride * eb + row_bytes
        if span <= hi - lo:
            addr = lo + wb * int(rng.integers(0, (hi - lo - span) // wb + 1))
            return region(addr, rows, cols, stride, code)


# -- tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("flit_width, max_packet, gap, stall, seed", [
    (32, 3, 0.3, 0.3, 1), (64, 3, 0.3, 0.3, 2), (32, 1, 0.0, 0.7, 3), (64, 5, 0.6, 0.0, 4),
    (128, 2, 0.2, 0.5, 5), (256, 64, 0.3, 0.3, 6),
])
def test_writes_reads_copies_and_both_at_once(flit_width, max_packet, gap, stall, seed):
    b = Bench(seed, flit_width=flit_width, kbytes=1, max_packet=max_packet, gap=gap,
              stall=stall)
    wb, size, rng = b.wb, len(b.model), b.rng
    half = size // 2

    async def bench(ctx):
        # 1. Writes: whole words over several packets, narrow unaligned sub-word writes,
        # partial last words, unaligned multi-word ranges; some acknowledged.
        b.write_words(0, size, ack_last=True, id=100)
        for k in range(40):
            kind = k % 3
            if kind == 0:  # narrow, inside one word
                n = int(rng.integers(1, wb))
                start = int(rng.integers(0, size // wb)) * wb + int(rng.integers(0, wb - n + 1))
            elif kind == 1:  # aligned start, partial last word
                n = int(rng.integers(1, 4 * wb))
                start = wb * int(rng.integers(0, (size - n) // wb + 1))
            else:  # unaligned start, several words
                n = int(rng.integers(1, 3 * wb))
                start = int(rng.integers(0, size - n + 1))
            b.write(start, rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
                    ack=bool(rng.integers(0, 2)), id=200 + k, owner=int(rng.integers(0, 32)))
        await b.run(ctx)

        # 2. Reads of random regions, from both inputs, every port and ack.
        for k in range(10):
            src = random_region(rng, wb, 0, size)
            if k % 3 == 0:
                b.copy(src, id=300 + k, dest_tile=int(rng.integers(0, 32)),
                       dest_addr=wb * int(rng.integers(0, 1 << 20)))
            else:
                b.request(src, id=300 + k, owner=int(rng.integers(0, 32)),
                          dest_tile=int(rng.integers(0, 32)), port=int(rng.integers(0, 5)),
                          ack=bool(rng.integers(0, 2)),
                          dest_addr=wb * int(rng.integers(0, 1 << 20)))
        await b.run(ctx)

        # 3. Reads of the lower half while the upper half is written, then read back.
        for k in range(6):
            src = random_region(rng, wb, 0, half)
            (b.copy if k % 2 else b.request)(src, id=400 + k)
        b.write_words(half, half, ack_last=True, id=500)
        for k in range(10):
            n = int(rng.integers(1, 3 * wb))
            start = half + int(rng.integers(0, half - n + 1))
            b.write(start, rng.integers(0, 256, n, dtype=np.uint8).tobytes(), ack=k % 2 == 0,
                    id=510 + k)
        await b.run(ctx)
        b.request(region(half, half // (4 * wb), 4 * wb, 4 * wb, 0), id=600)
        await b.run(ctx)
        assert ctx.get(b.dut.error) == 0

    b.simulate(bench)
    b.check()
    assert b.busy_seen and b.stuck_writes == 0


def test_alternation_throughput_and_back_to_back():
    """Both inputs always waiting: jobs alternate (req first: its packet is shorter). With no
    gaps or back-pressure a job's DATA packets leave without a bubble (n words in p packets:
    n + 3p beats in a row), the next job's packet comes in meanwhile and its header follows
    after 3 idle cycles. Writes are taken one beat per cycle."""
    b = Bench(3, flit_width=32, kbytes=1, max_packet=4, gap=0.0, stall=0.0)
    wb = b.wb
    ids = []
    for k in range(3):
        b.copy(region(64 * k, 2, 5, 8, 0), id=10 + k)  # 2 rows of 2 words: 1 packet
        b.request(region(256 + 16 * k, 3, 3, 4, 1), id=20 + k)  # 3 rows of 2 words: 2 packets
        ids += [20 + k, 10 + k]
    runs: list[list[int]] = []  # [valid?, cycles] of data_tx

    async def bench(ctx):
        for _ in range(200):
            for s in (b.cmd, b.req, b.wr, b.tx, b.done):
                s.drive(ctx)
            valid = ctx.get(b.dut.data_tx.valid)
            for s in (b.cmd, b.req, b.wr, b.tx, b.done):
                s.sample(ctx)
            if runs and runs[-1][0] == valid:
                runs[-1][1] += 1
            else:
                runs.append([valid, 1])
            await ctx.tick()
        # Writes at one beat per cycle: a 40-word packet, unacknowledged, in 43 cycles.
        b.write_words(0, 40 * wb, id=1, packet=40)
        start = b.cycles
        await b.run(ctx, tail=0)
        assert b.stuck_writes == 0 and b.cycles - start <= 43 + 2

    b.simulate(bench)
    b.check()
    assert b.order == ids
    # REQ: 6 words in packets of 4 + 2: 12 beats; COPY: 4 words in one packet: 7 beats
    assert [n for v, n in runs[1:-1]] == [12, 3, 7, 3, 12, 3, 7, 3, 12, 3, 7], runs
    # the first header: 6 words of REQ intake, a cycle to pick, two of setup
    assert runs[0] == [0, 6 + 3]


def test_an_instruction_never_waits_on_the_read_engine():
    """A COPY arriving while long REQ jobs run (the output nearly blocked) is taken at once,
    into the instruction register; it runs when the engine is free (alternating)."""
    b = Bench(6, kbytes=1, max_packet=8, gap=0.0, stall=0.8)

    async def bench(ctx):
        b.write_words(0, 1024)
        await b.run(ctx)
        for k in range(3):
            b.request(region(0, 8, 16, 4, 0), id=k)
        for _ in range(30):  # the first job is running
            for s in (b.cmd, b.req, b.wr, b.tx, b.done):
                s.drive(ctx)
                s.sample(ctx)
            await ctx.tick()
        b.copy(region(512, 4, 2, 2, 2), id=9, dest_addr=4)
        await b.run(ctx)

    b.simulate(bench)
    b.check()
    assert b.stuck_cmds == 0 and b.order == [0, 9, 1, 2]


def test_empty_job_sends_one_acknowledged_packet():
    b = Bench(4, kbytes=1)

    async def bench(ctx):
        b.request(region(0, 0, 4, 4, 2), id=1, ack=True, dest_addr=64)
        b.copy(region(8, 3, 0, 4, 0), id=2, dest_addr=128)
        await b.run(ctx)

    b.simulate(bench)
    b.check()
    assert [unpack(MSG_HEADER, b.tx.beats[k][0])["length"] for k in (0, 3)] == [0, 0]
    assert [unpack(MSG_HEADER, b.tx.beats[k][0])["ack"] for k in (0, 3)] == [1, 1]


def test_refused_packets_raise_flags_and_never_wrap():
    """A DATA packet for another port is dropped (BAD_PACKET; its DONE says UNIT); a write
    beyond the scratchpad is dropped, a read beyond it sends zeros (RANGE); a CMD that is not
    a COPY and a short REQ are dropped (BAD_PACKET). The flags stay until error_clear."""
    b = Bench(5, kbytes=1, gap=0.2, stall=0.2)
    wb, size = b.wb, len(b.model)
    dut = b.dut

    async def bench(ctx):
        b.write_words(0, size)
        await b.run(ctx)
        assert ctx.get(dut.error) == 0
        b.write(16, b"\x55" * 8, ack=True, id=9, port=Port.A)
        await b.run(ctx)
        assert ctx.get(dut.error) == MemoryTileError.BAD_PACKET
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        assert ctx.get(dut.error) == 0
        # beyond the end: word (size / wb) would wrap to word 0
        b.wr.push(write_packet(wb, size, b"\xaa" * wb, owner=1, ack=True, id=11, rng=b.rng))
        b.dones += done_beats(1, 11, AccelError.UNIT)
        await b.run(ctx)
        assert ctx.get(dut.error) == MemoryTileError.RANGE
        b.request(region(size - 2 * wb, 1, 4 * wb, 0, 0), id=12)  # 2 words in, 2 beyond
        await b.run(ctx)
        assert ctx.get(dut.error) == MemoryTileError.RANGE
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        # not a COPY (a head of another class), a REQ one word short: dropped
        bad_cmd = copy_packet(region(0, 1, 1, 1, 0), dest_tile=2, id=13, dest_addr=0)
        bad_cmd[1] ^= 1 << 5  # INSTR_HEAD.cls
        b.cmd.push(bad_cmd)
        b.req.push(req_packet(region(0, 1, 1, 1, 0), owner=1, dest_tile=2, port=Port.A,
                              ack=False, id=14, dest_addr=0)[:-1])
        await b.run(ctx)
        assert ctx.get(dut.error) == MemoryTileError.BAD_PACKET
        b.request(region(0, 2, wb, wb, 0), id=15)  # and it still works
        await b.run(ctx)

    b.simulate(bench)
    b.check()
    # the out-of-range read: two words in range, then zeros (packets of 3 + 1 data beats)
    job = [w for w, _, _ in b.jobs[12][1]]
    assert len(job) == 10 and job[5] == job[9] == 0 and job[3] == int.from_bytes(
        b.model[size - 2 * wb:size - wb], "little")


@pytest.mark.parametrize("given, name", [
    ({"flit_width": 48}, "flit_width"), ({"flit_width": 512}, "flit_width"),
    ({"kbytes": 0}, "kbytes"), ({"kbytes": 1 << 14 + 1}, "kbytes"),
    ({"max_packet": 0}, "max_packet"), ({"max_packet": 1025}, "max_packet"),
    ({"index": 32}, "index"), ({"control": -1}, "control"),
    ({"index": 4, "control": 4}, "index"), ({"depth": 3}, "depth"),
])
def test_parameters_refused(given, name):
    with pytest.raises(ParamError, match=name):
        MemoryTile(**given)
    with pytest.raises(ParamError, match=name):
        MemoryTile.validate_params(given)


def test_parameters_and_ports():
    t = inspect_only(MemoryTile(flit_width=64, kbytes=2))
    assert t.words == 256 and t.parameters == {"index": 1, "control": 0, "flit_width": 64,
                                               "kbytes": 2, "max_packet": 64}
    assert len(t.data_tx.payload.data) == 64 and len(t.cmd_rx.payload.data) == 32
    assert len(t.error) == len(MemoryTileError)


@pytest.mark.parametrize("params", [
    {}, {"flit_width": 256, "kbytes": 1, "max_packet": 1, "index": 31, "control": 30},
    {"flit_width": 64, "kbytes": 3, "max_packet": 1024},
])
def test_verilog_lints_clean(tmp_path, params):
    """Verilator -Wall with the project's waivers; the Yosys check (latches, undriven nets)
    on a 1 KiB scratchpad (the same logic: a 64 KiB one only makes Yosys slow)."""
    from heterotron.sim.flows.lint import verilator_lint, yosys_check
    from heterotron.sim.flows.toolchain import ToolError, verilator_root
    try:
        verilator_root()
    except ToolError as exc:
        pytest.skip(str(exc))
    for kbytes in dict.fromkeys((params.get("kbytes", 64), 1)):
        path = tmp_path / f"memory_tile_{kbytes}.v"
        path.write_text(verilog.convert(MemoryTile(**{**params, "kbytes": kbytes}),
                                        name="memory_tile", emit_src=False))
        vl = verilator_lint(path, "memory_tile")
        assert vl.ok, vl.log
    ys = yosys_check(path, "memory_tile")
    assert ys.ok, ys.log[-2000:]
    assert ys.cells.get("mem_v2") == 1  # the scratchpad is one memory, not registers


def test_largest_scratchpad_converts_without_initial_contents():
    """The scratchpad is an SRAM, undefined until written: its Verilog has no initial block
    (hdl.ports.NO_INIT), so the largest one (16 MiB, configs/encoder.toml's) is a short file,
    not 4M lines of zeros (gigabytes of RAM while Amaranth writes them); a memory without
    the mark (the control tile's program queue) keeps its initial contents."""
    import re

    from heterotron.hdl.accelerator import describe
    from heterotron.hdl.tiles.control import ControlTile
    from heterotron.sim.flows.build import to_verilog

    text = to_verilog(MemoryTile(index=1, control=0, flit_width=32, kbytes=1 << 14,
                                 max_packet=64), "memory_tile")
    assert re.search(r"reg \[31:0\] mem \[4194303:0\];", text)
    assert "mem[0] =" not in text and len(text) < 1_000_000
    queue = to_verilog(ControlTile(describe({
        "nx": 2, "ny": 1, "tile": [{"kind": "control", "at": [0, 0]},
                                   {"kind": "memory", "at": [1, 0], "kbytes": 1}]})),
        "control_tile")
    assert re.search(r"queue\[0\] = 32'd0;", queue)

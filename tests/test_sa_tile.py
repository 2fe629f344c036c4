"""The SA tile (``hdl/tiles/sa.py``) in Amaranth's simulator, with the test playing the network:
the control tile sends instructions on ``cmd_rx`` (the next only after the previous one
finished), memory tiles (a bytearray each) answer REQ packets with DATA packets on
``data_rx`` (split into packets of a few beats) and apply the DATA packets of ``data_tx``,
and every stream sees random gaps (inputs) or back-pressure (outputs). Results are compared
with numpy (and the requantizer's golden model) byte for byte, the bytes around them
untouched; then the error answers, the parameter rules and the lint (Verilator, Yosys)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.back import verilog

from heterotron.hdl.contract.accel import (
    DATA_INFO,
    DONE_WORD,
    EBYTES,
    INSTR_HEAD,
    MSG_HEADER,
    REQ_ARGS,
    AccelError,
    MsgClass,
    Port,
    TileKind,
    decode_instr,
    elem_bytes,
    encode_instr,
    from_words,
    pack,
    unpack,
)
from heterotron.hdl.contract.params import ParamError, inspect_only
from heterotron.hdl.gemm import GemmEngine, Op
from heterotron.hdl.tiles.sa import SaTile
from heterotron.sim.flows.lint import verilator_lint, yosys_check
from heterotron.sim.flows.toolchain import ToolError, verilator_root
from heterotron.sim.golden.requantizer import requantize
from heterotron.sim.golden.systolic import operand_range
from heterotron.tb.amaranth_sim import simulate, stream_put

CONTROL, SA, MEM_A, MEM_B = 0, 2, 1, 3  # tile indices
MEM_BYTES = 8192
SMALL = {"rows": 2, "cols": 2, "max_m": 8, "max_k": 8, "max_n": 8}


# -- the network model ------------------------------------------------------------------------


@dataclass
class Instr:
    words: list[int]
    id: int
    kind: str  # "load", "scale", "run" or "raw"
    error: int | None = 0  # the DONE's error flags; None: a RUN answered by the memory's ack
    req: dict | None = None  # LOAD: the REQ's arguments expected
    packets: list = field(default_factory=list)  # RUN: expected (start, nbytes) per packet
    cycles: int = 0


class Network:
    """The control tile, the memory tiles and the links around one SA tile, cycle by cycle."""

    def __init__(self, dut: SaTile, mems: dict[int, bytearray], rng, gap=0.3, stall=0.3,
                 mem_packet=3):
        self.dut, self.mems, self.rng = dut, mems, rng
        self.gap, self.stall, self.mem_packet = gap, stall, mem_packet
        self.wb = dut.word_bytes
        self.rx = {"cmd": dut.cmd_rx, "data": dut.data_rx}
        self.tx = {"req": dut.req_tx, "data": dut.data_tx, "done": dut.done_tx}
        self.queue = {name: deque() for name in self.rx}
        self.offered = dict.fromkeys(self.rx)
        self.beats = {name: [] for name in self.tx}
        self.held = dict.fromkeys(self.tx)
        self.current: Instr | None = None
        self.finished = False
        self.dones, self.writes = [], []
        self.busy_seen = False
        self.cycle = 0

    # one cycle: offer input beats, decide output readiness, see what moved, clock
    async def step(self, ctx):
        taken = []
        for name, port in self.rx.items():
            if self.offered[name] is None and self.queue[name] and not (
                    self.gap and self.rng.random() < self.gap):
                data, last = self.offered[name] = self.queue[name].popleft()
                ctx.set(port.payload.data, data)
                ctx.set(port.payload.last, last)
                ctx.set(port.valid, 1)
            if self.offered[name] is not None and ctx.get(port.ready):
                taken.append(name)
        for name, port in self.tx.items():
            ready = not (self.stall and self.rng.random() < self.stall)
            ctx.set(port.ready, ready)
            beat = None
            if ctx.get(port.valid):
                beat = (ctx.get(port.payload.data), ctx.get(port.payload.last),
                        ctx.get(port.payload.dest))
            # a beat offered is held, unchanged, until taken
            assert self.held[name] is None or beat == self.held[name], (name, beat)
            self.held[name] = None
            if beat is not None:
                if ready:
                    self.receive(name, beat)
                else:
                    self.held[name] = beat
        self.busy_seen |= bool(ctx.get(self.dut.busy))
        await ctx.tick()
        self.cycle += 1
        for name in taken:
            self.offered[name] = None
            ctx.set(self.rx[name].valid, 0)

    def send(self, name, words):
        self.queue[name].extend((w, int(i == len(words) - 1)) for i, w in enumerate(words))

    def receive(self, name, beat):
        beats = self.beats[name]
        if beats:
            assert beat[2] == beats[0][2], f"{name}: dest changed within a packet"
        beats.append(beat)
        if beat[1]:
            self.beats[name] = []
            getattr(self, f"on_{name}")([b[0] for b in beats], beats[0][2])

    # packets from the tile
    def on_req(self, words, dest):
        ins = self.current
        assert ins is not None and ins.req is not None, f"unexpected REQ {words}"
        hdr = unpack(MSG_HEADER, words[0])
        assert hdr == {"cls": MsgClass.REQ, "port": 0, "ack": 0, "unit": 0, "owner": SA,
                       "length": 5} and len(words) == 6, (hdr, len(words))
        req = unpack(REQ_ARGS, from_words(words[1:]))
        assert req == ins.req, (req, ins.req)
        assert dest == req["src"]["mem"]
        src = req["src"]
        eb = EBYTES[src["ebytes"]]
        row_words = -(-src["cols"] * eb // self.wb)
        mem = self.mems[src["mem"]]
        stream = []
        for r in range(src["rows"]):
            base = src["addr"] + r * src["stride"] * eb
            for w in range(row_words):
                stream.append(int.from_bytes(mem[base + w * self.wb:base + (w + 1) * self.wb],
                                             "little"))
        for i in range(0, len(stream), self.mem_packet):
            part = stream[i:i + self.mem_packet]
            self.send("data", [
                pack(MSG_HEADER, cls=MsgClass.DATA, port=req["port"], owner=SA,
                     length=len(part)),
                pack(DATA_INFO, id=req["id"], nbytes=len(part) * self.wb), 0, *part])

    def on_data(self, words, dest):
        ins = self.current
        assert ins is not None and ins.kind == "run" and ins.error is None, \
            f"unexpected DATA packet during {ins}"
        hdr = unpack(MSG_HEADER, words[0] & 0xFFFFFFFF)
        assert words[0] >> 32 == 0 and words[1] >> 32 == 0 and words[2] >> 32 == 0
        info = unpack(DATA_INFO, words[1])
        start, nbytes = words[2], info["nbytes"]
        assert hdr["cls"] == MsgClass.DATA and hdr["port"] == Port.MEM and hdr["owner"] == SA
        assert hdr["unit"] == 0 and hdr["length"] == len(words) - 3
        assert info["id"] == ins.id
        wb = self.wb
        assert hdr["length"] == -(-(start % wb + nbytes) // wb), (start, nbytes, hdr)
        mem = self.mems[dest]
        first = start // wb
        for i, word in enumerate(words[3:]):
            for b in range(wb):
                at = (first + i) * wb + b
                if start <= at < start + nbytes:
                    mem[at] = (word >> (8 * b)) & 0xFF
        self.writes.append((start, nbytes, hdr["ack"], dest))

    def on_done(self, words, dest):
        assert dest == CONTROL
        assert len(words) == 2
        hdr = unpack(MSG_HEADER, words[0])
        assert hdr == {"cls": MsgClass.DONE, "port": 0, "ack": 0, "unit": 0, "owner": SA,
                       "length": 1}, hdr
        self.dones.append(unpack(DONE_WORD, words[1]))

    # the control tile: one instruction at a time
    async def execute(self, ctx, program: list[Instr], limit=4000):
        for ins in program:
            assert not ctx.get(self.dut.busy)
            self.current, self.busy_seen = ins, False
            n_done, n_writes = len(self.dones), len(self.writes)
            start = self.cycle
            cmd = [pack(MSG_HEADER, cls=MsgClass.CMD, owner=CONTROL, length=len(ins.words)),
                   *ins.words]
            self.send("cmd", cmd)
            while True:
                await self.step(ctx)
                assert self.cycle - start < limit, f"instruction {ins.kind} {ins.id} hangs"
                if ins.error is not None and len(self.dones) > n_done:
                    assert self.dones[n_done:] == [{"id": ins.id, "tile": SA,
                                                    "error": ins.error}], (ins, self.dones)
                    assert len(self.writes) == n_writes
                    break
                if ins.error is None and self.writes[n_writes:] and self.writes[-1][2]:
                    got = [w[:2] for w in self.writes[n_writes:]]
                    assert got == ins.packets
                    assert [w[2] for w in self.writes[n_writes:]] == [0] * (len(got) - 1) + [1]
                    break
            ins.cycles = self.cycle - start
            assert self.busy_seen
            await self.step(ctx)
            assert not ctx.get(self.dut.busy)
        for _ in range(40):  # nothing more comes
            await self.step(ctx)
        assert len(self.dones) == sum(ins.error is not None for ins in program)
        assert not any(self.beats.values()) and not any(self.queue.values())
        self.current = None


def run_program(dut, mems, program, seed=0, **options) -> Network:
    net = Network(dut, mems, np.random.default_rng(seed), **options)

    async def bench(ctx):
        await net.execute(ctx, program)

    simulate(dut, bench)
    return net


# -- building programs ------------------------------------------------------------------------


class Memories:
    """Memory tiles filled with random bytes, and a bump allocator of word-aligned regions."""

    def __init__(self, rng, wb, tiles=(MEM_A, MEM_B)):
        self.rng, self.wb = rng, wb
        self.data = {t: bytearray(rng.integers(0, 256, MEM_BYTES, dtype=np.uint8).tobytes())
                     for t in tiles}
        self.free = dict.fromkeys(tiles, 0)

    def region(self, mem, rows, cols, eb):
        """A region with a random stride (rows word aligned, some padding now and then)."""
        per_word = self.wb // eb
        stride = -(-(cols + int(self.rng.integers(0, 2)) * per_word // 2) // per_word) * per_word
        addr = self.free[mem] + int(self.rng.integers(0, 3)) * self.wb
        self.free[mem] = addr + rows * stride * eb
        assert self.free[mem] <= MEM_BYTES
        return {"addr": addr, "rows": rows, "cols": cols, "stride": stride,
                "ebytes": EBYTES.index(eb), "mem": mem, "rsv": 0}

    def store(self, reg, mat):
        eb = EBYTES[reg["ebytes"]]
        mem = self.data[reg["mem"]]
        assert mat.shape == (reg["rows"], reg["cols"])
        for r in range(reg["rows"]):
            for j in range(reg["cols"]):
                at = reg["addr"] + (r * reg["stride"] + j) * eb
                mem[at:at + eb] = (int(mat[r, j]) & ((1 << 8 * eb) - 1)).to_bytes(eb, "little")


class Program:
    def __init__(self, tile: SaTile, mems: Memories):
        self.tile, self.mems = tile, mems
        self.instrs: list[Instr] = []
        self.next_id = 0x100

    def _id(self):
        self.next_id += 37
        return self.next_id

    def load(self, port, mat, trans=0, mem=MEM_A, error=0, region=None):
        """LOAD of ``mat`` as stored (the caller transposes)."""
        eb = self.tile.operand_bytes[port]
        if region is None:
            region = self.mems.region(mem, *mat.shape, eb)
            self.mems.store(region, mat)
        i = self._id()
        req = {"src": region, "dest_tile": SA, "port": int(port), "ack": 0, "rsv": 0,
               "id": i, "dest_addr": 0}
        self.instrs.append(Instr(encode_instr(TileKind.SA, "LOAD", SA, i, port=int(port),
                                              trans=trans, src=region), i, "load", error, req))

    def scale(self, lane, e, m):
        i = self._id()
        self.instrs.append(Instr(encode_instr(TileKind.SA, "SCALE", SA, i, lane=lane, e=e, m=m),
                                 i, "scale"))

    def run(self, dest, bias=0, error=None):
        i = self._id()
        ins = Instr(encode_instr(TileKind.SA, "RUN", SA, i, bias=bias, dest=dest), i, "run",
                    error)
        if error is None:
            ob, cols = EBYTES[dest["ebytes"]], self.tile.cols
            ins.packets = [(dest["addr"] + (r * dest["stride"] + c) * ob,
                            min(cols, dest["cols"] - c) * ob)
                           for c in range(0, dest["cols"], cols) for r in range(dest["rows"])]
        self.instrs.append(ins)

    def raw(self, words, error):
        """Any instruction words (their head carries the id)."""
        self.instrs.append(Instr(words, unpack(INSTR_HEAD, words[0])["id"], "raw", error))


def operand(rng, shape, width, is_signed):
    lo, hi = operand_range(width, is_signed)
    return rng.integers(lo, hi + 1, shape)


def expect_result(mems: Memories, dest, c):
    want = {t: bytearray(b) for t, b in mems.data.items()}
    saved, mems.data = mems.data, want
    mems.store(dest, c)
    mems.data = saved
    return want


# -- results ----------------------------------------------------------------------------------

CASES = {
    # int32 results (2 beats a packet at W = 32), A stored K x M, a bias, N % cols != 0
    "os-w32-transA-bias": (dict(SMALL, dataflow="os"), (3, 5, 3), 1, 0, True, False),
    # W = 64, B stored N x K, unsigned 12-bit A in 2-byte containers, int8 results: a result
    # beat of 2 bytes, shifted into its lanes
    "ws-w64-transB-u12-requant": (dict(SMALL, dataflow="ws", flit_width=64, a_width=12,
                                       a_signed=False, requant=True), (4, 5, 5), 0, 1, False,
                                  True),
    # cols x int8 = 2 bytes < a 4-byte word, unsigned B, bias
    "os-w32-narrow-requant-bias": (dict(SMALL, dataflow="os", b_signed=False, requant=True),
                                   (3, 3, 4), 0, 0, True, True),
    # 4 lanes of int32 = 2 beats at W = 64; both transposes, K > rows (WS partial sums)
    "ws-w64-cols4-both-trans": (dict(SMALL, dataflow="ws", cols=4, flit_width=64),
                                (3, 6, 6), 1, 1, True, False),
    # 12-bit results in 2-byte containers, one word a beat; N % cols != 0
    "os-w64-requant12": (dict(SMALL, dataflow="os", cols=4, flit_width=64, requant=True,
                              out_width=12), (3, 4, 7), 0, 0, True, True),
}


def check_gemm(dut, rng, M, K, N, trans_a, trans_b, with_bias, seed, **options):
    """One job (LOADs, SCALEs with requant, RUN) through the network, checked byte for byte."""
    requant = dut.requant
    mems = Memories(rng, dut.word_bytes)
    prog = Program(dut, mems)
    a = operand(rng, (M, K), dut.a_width, dut.a_signed)
    b = operand(rng, (K, N), dut.b_width, dut.b_signed)
    bias = operand(rng, (1, N), dut.bias_width, True)
    prog.load(Port.A, a.T if trans_a else a, trans_a, MEM_A)
    prog.load(Port.B, b.T if trans_b else b, trans_b, MEM_B)
    c = a @ b
    if with_bias:
        prog.load(Port.BIAS, bias, 0, MEM_A)
        c = c + bias
    if requant:
        sm = rng.integers(0, 1 << 20, dut.cols)
        se = rng.integers(8, 21, dut.cols)
        for lane in range(dut.cols):
            prog.scale(lane, int(se[lane]), int(sm[lane]))
        lanes = np.arange(N) % dut.cols
        c = requantize(c, sm[lanes], se[lanes], dut.out_width)
    dest = mems.region(MEM_B, M, N, dut.result_bytes)
    prog.run(dest, bias=int(with_bias))
    want = expect_result(mems, dest, c)
    run_program(dut, mems.data, prog.instrs, seed=seed, **options)
    for t in want:
        assert mems.data[t] == want[t], f"memory {t} differs"


@pytest.mark.parametrize("name", sorted(CASES))
def test_gemm_through_the_network(name):
    params, (M, K, N), trans_a, trans_b, with_bias, requant = CASES[name]
    rng = np.random.default_rng(sorted(CASES).index(name) + 11)
    dut = SaTile(index=SA, control=CONTROL, **params)
    assert dut.requant == requant
    check_gemm(dut, rng, M, K, N, trans_a, trans_b, with_bias, seed=3)


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_gemm_with_one_element_a_word(dataflow):
    """4-byte containers at W = 32: the engine's data port is one element a beat
    (``data_lanes = 1``)."""
    rng = np.random.default_rng(17)
    dut = SaTile(index=SA, control=CONTROL, **dict(SMALL, dataflow=dataflow, a_width=17,
                                                   b_width=17, bias_width=20, acc_width=40,
                                                   requant=True))
    assert dut.data_lanes == 1
    check_gemm(dut, rng, 3, 5, 3, 1, 0, True, seed=5)


def draw_params(rng) -> dict:
    """Random tile parameters the tile accepts (small arrays and buffers)."""
    for _ in range(200):
        requant = bool(rng.integers(0, 2))
        given = dict(
            rows=int(rng.integers(1, 4)), cols=int(rng.choice([1, 2, 3, 4, 8])),
            dataflow=str(rng.choice(["os", "ws"])), flit_width=int(rng.choice([32, 64, 128, 256])),
            a_width=int(rng.integers(2, 19)), a_signed=bool(rng.integers(0, 2)),
            b_width=int(rng.integers(2, 19)), b_signed=bool(rng.integers(0, 2)),
            acc_width=int(rng.choice([32, 40, 48])) if requant else 32,
            bias_width=int(rng.integers(2, 33)), requant=requant,
            out_width=int(rng.integers(2, 33)), max_m=int(rng.integers(4, 9)),
            max_k=int(rng.integers(4, 9)), max_n=int(rng.integers(4, 9)))
        try:
            SaTile.validate_params(given)
        except ParamError:
            continue
        return given
    raise AssertionError("no valid draw")


@pytest.mark.parametrize("seed", range(24))
def test_gemm_sampled_parameters(seed):
    """Random widths, signedness, containers (1, 2, 4 bytes), flit widths 32..256, result
    beats narrower and wider than a word, dims up to the maxima, transposes and bias."""
    rng = np.random.default_rng(1000 + seed)
    given = draw_params(rng)
    dut = SaTile(index=SA, control=CONTROL, **given)
    M, K, N = (int(rng.integers(1, given[f"max_{d}"] + 1)) for d in "mkn")
    check_gemm(dut, rng, M, K, N, int(rng.integers(0, 2)), int(rng.integers(0, 2)),
               bool(rng.integers(0, 2)), seed=seed, mem_packet=int(rng.integers(1, 5)))


def test_errors_are_answered_and_the_tile_recovers():
    """A RUN without loads, with K of A and B different, with the wrong destination shape, or
    with a bias never loaded: DONE with ILLEGAL and no data. A LOAD holding an element outside
    its operand (100 in an int8 container of a 4-bit B) or above the engine's maximum: UNIT.
    Unknown instructions (a LOAD of port 0, SCALE without requant, another class's opcode, an
    unknown code): ILLEGAL. After each, the next instruction works."""
    rng = np.random.default_rng(5)
    dut = SaTile(index=SA, control=CONTROL, b_width=4, **SMALL)
    mems = Memories(rng, dut.word_bytes)
    prog = Program(dut, mems)
    M, K, N = 3, 4, 3
    a = operand(rng, (M, K), 8, True)
    b = operand(rng, (K, N), 4, True)
    ob = dut.result_bytes
    dest = mems.region(MEM_B, M, N, ob)
    ILLEGAL, UNIT = int(AccelError.ILLEGAL), int(AccelError.UNIT)
    prog.run(dest, error=ILLEGAL)  # nothing loaded
    prog.load(Port.A, a)
    prog.run(dest, error=ILLEGAL)  # no B
    prog.load(Port.B, operand(rng, (K + 1, N), 4, True))
    prog.run(dest, error=ILLEGAL)  # K differs
    bad = b.copy()
    bad[1, 2] = 100
    prog.load(Port.B, bad, error=UNIT)  # out of the 4-bit range
    prog.run(dict(dest, rows=M + 1), error=ILLEGAL)
    prog.run(dict(dest, cols=N - 1), error=ILLEGAL)
    prog.run(dest, bias=1, error=ILLEGAL)  # no bias
    prog.load(Port.BIAS, operand(rng, (1, N + 1), 24, True))
    prog.run(dest, bias=1, error=ILLEGAL)  # bias as wide as B? no
    too_tall = mems.region(MEM_A, dut.max_m + 1, K, 1)
    too_tall_ins = encode_instr(TileKind.SA, "LOAD", SA, 0x77, port=int(Port.A), trans=0,
                                src=too_tall)
    prog.raw(too_tall_ins, UNIT)  # the engine refuses it (DIMS): no REQ, UNIT
    prog.raw(encode_instr(TileKind.SA, "LOAD", SA, 0x54, port=0, trans=0, src=too_tall),
             ILLEGAL)  # port 0 (MEM) is no operand
    prog.raw(encode_instr(TileKind.SA, "SCALE", SA, 0x55, lane=0, e=1, m=1), ILLEGAL)
    prog.raw(encode_instr(TileKind.CONTROL, "NOP", SA, 0x56), ILLEGAL)
    prog.raw([pack(INSTR_HEAD, code=7, cls=int(TileKind.SA), tile=SA, id=0x57)], ILLEGAL)
    prog.load(Port.A, a)  # A again (the refused LOAD dropped it)
    prog.load(Port.B, b)
    prog.run(dest)
    want = expect_result(mems, dest, a @ b)
    net = run_program(dut, mems.data, prog.instrs, seed=9)
    for t in want:
        assert mems.data[t] == want[t]
    assert len(net.writes) == len(prog.instrs[-1].packets)


def test_element_wider_than_the_engine_port_is_a_unit_error():
    """With 4-bit operands and bias the engine's data port is 4 bits: 100 in an int8 container
    would reach it as 4, in range; the tile flags it itself."""
    rng = np.random.default_rng(8)
    dut = SaTile(index=SA, control=CONTROL, a_width=4, b_width=4, bias_width=4, **SMALL)
    mems = Memories(rng, dut.word_bytes)
    prog = Program(dut, mems)
    a, b = operand(rng, (2, 3), 4, True), operand(rng, (3, 2), 4, True)
    bad = a.copy()
    bad[1, 1] = 100
    prog.load(Port.A, bad, error=int(AccelError.UNIT))
    prog.load(Port.A, a)
    prog.load(Port.B, b)
    dest = mems.region(MEM_A, 2, 2, dut.result_bytes)
    prog.run(dest)
    want = expect_result(mems, dest, a @ b)
    run_program(dut, mems.data, prog.instrs, seed=4)
    assert mems.data == want


def test_cycles_without_back_pressure():
    """With no gaps and no back-pressure: a LOAD costs its elements plus a fixed overhead,
    and a RUN's packets leave back to back."""
    rng = np.random.default_rng(1)
    dut = SaTile(index=SA, control=CONTROL, dataflow="os", **SMALL)
    mems = Memories(rng, dut.word_bytes)
    prog = Program(dut, mems)
    M, K, N = 8, 8, 8
    a, b = operand(rng, (M, K), 8, True), operand(rng, (K, N), 8, True)
    prog.load(Port.A, a)
    prog.load(Port.B, b)
    dest = mems.region(MEM_B, M, N, dut.result_bytes)
    prog.run(dest)
    want = expect_result(mems, dest, a @ b)
    run_program(dut, mems.data, prog.instrs, gap=0, stall=0, mem_packet=8)
    assert mems.data == want
    load_a, _, run = prog.instrs
    # 5 CMD beats + decode + engine command + check + 6 REQ words, then M K elements (4 a
    # word) behind one packet header per 8 words, then DONE: about M K + 25
    assert load_a.cycles <= M * K + 30, load_a.cycles
    beats = M * N // dut.cols
    per_packet = 3 + dut.cols * dut.result_bytes // dut.word_bytes
    assert run.cycles <= beats * per_packet + 40, run.cycles



def bare_run_cycles(params: dict, M: int, K: int, N: int) -> int:
    """Cycles of a RUN on the tile's engine alone (no back-pressure): from the edge that takes
    the command to the one that takes the last result beat."""
    dut = GemmEngine(**params)
    lanes = dut.data_lanes
    counted = []

    def cmd(op, m=0, k=0, n=0):
        return {"op": op, "trans": 0, "bias": 0, "m": m, "k": k, "n": n}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for c, n_elems in ((cmd(Op.LOAD_A, m=M, k=K), M * K), (cmd(Op.LOAD_B, k=K, n=N), K * N)):
            await stream_put(ctx, dut.cmd, c)
            for i in range(0, n_elems, lanes):
                count = min(lanes, n_elems - i)
                await stream_put(ctx, dut.data, {"data": [0] * lanes, "count": count})
            await ctx.tick().until(~dut.busy)
        await stream_put(ctx, dut.cmd, cmd(Op.RUN))
        cycles = 0
        while True:
            cycles += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.payload.last):
                break
            await ctx.tick()
        counted.append(cycles)

    simulate(dut, bench)
    return counted[0]


def test_wide_loads_and_result_buffer_keep_up():
    """W = 32, int8 operands: a LOAD of a 16 x 16 operand in the fast direction (B, and A
    stored K x M for OS) moves a word (4 elements) a cycle; a RUN of 16^3 on a 4 x 4 OS tile
    with int8 results (one 4-cycle packet per result beat, a tile's 4 beats in a burst) takes
    little more than the bare engine's RUN: the result buffer absorbs the bursts."""
    rng = np.random.default_rng(2)
    params = dict(rows=4, cols=4, dataflow="os", max_m=16, max_k=16, max_n=16, requant=True)
    dut = SaTile(index=SA, control=CONTROL, **params)
    assert dut.data_lanes == 4 and dut.engine_params["data_lanes"] == 4
    mems = Memories(rng, dut.word_bytes)
    prog = Program(dut, mems)
    M = K = N = 16
    a, b = operand(rng, (M, K), 8, True), operand(rng, (K, N), 8, True)
    prog.load(Port.A, a.T, 1)
    prog.load(Port.B, b)
    sm, se = rng.integers(0, 1 << 20, 4), rng.integers(8, 21, 4)
    for lane in range(4):
        prog.scale(lane, int(se[lane]), int(sm[lane]))
    dest = mems.region(MEM_B, M, N, dut.result_bytes)
    prog.run(dest)
    lanes = np.arange(N) % 4
    want = expect_result(mems, dest, requantize(a @ b, sm[lanes], se[lanes], 8))
    run_program(dut, mems.data, prog.instrs, gap=0, stall=0, mem_packet=64)
    assert mems.data == want
    load_a, load_b, run = prog.instrs[0], prog.instrs[1], prog.instrs[-1]
    # 5 CMD beats, decode, engine command, check, 6 REQ words, 64 words behind one packet
    # header, the DONE
    assert load_a.cycles <= M * K / 4 + 40, load_a.cycles
    assert load_b.cycles <= K * N / 4 + 40, load_b.cycles
    bare = bare_run_cycles(dut.engine_params, M, K, N)
    assert run.cycles <= 1.3 * bare, (run.cycles, bare)



def test_result_buffer_keeps_the_engine_running():
    """8 x 8 OS, K = 128, int32 results at W = 32: a tile's 8 result beats are 8 packets of
    11 beats (88 cycles) per 128 cycles of work. With a buffer of ``rows`` beats the engine
    never waits for them (the RUN is the bare engine's plus the last tile's packets); with 2
    it stalls on every tile's burst."""
    M, K, N = 16, 128, 16
    runs = {}
    for depth in (2, 8):
        rng = np.random.default_rng(6)
        dut = SaTile(index=SA, control=CONTROL, rows=8, cols=8, dataflow="os", max_m=M,
                     max_k=K, max_n=N, result_depth=depth)
        mems = Memories(rng, dut.word_bytes)
        prog = Program(dut, mems)
        a, b = operand(rng, (M, K), 8, True), operand(rng, (K, N), 8, True)
        prog.load(Port.A, a.T, 1)
        prog.load(Port.B, b)
        dest = mems.region(MEM_B, M, N, dut.result_bytes)
        prog.run(dest)
        want = expect_result(mems, dest, a @ b)
        run_program(dut, mems.data, prog.instrs, gap=0, stall=0, mem_packet=64)
        assert mems.data == want
        runs[depth] = prog.instrs[-1].cycles
    bare = bare_run_cycles(dut.engine_params, M, K, N)
    assert runs[8] <= bare + 8 * 11 + 15, (runs, bare)
    assert runs[2] > runs[8] + 60, (runs, bare)


def test_scale_model_takes_the_tiles_load_and_run_cycles():
    """The scale model's SA work figures (``sim/scale/perf.py``) are this tile's cycles less a
    fixed overhead, with no gaps or back-pressure: a LOAD's in the fast and slow directions,
    over one or several packets; a RUN's on OS (short and long K, partial row and column
    tiles, int32 results that outrun the work, int8 ones that do not) and WS."""
    from types import SimpleNamespace

    from heterotron.sim.scale.perf import _engine_latency, _sa_load_cycles, _sa_run_cycles

    shapes = [(2, 16, 2), (5, 8, 5), (16, 16, 16), (3, 3, 16), (10, 10, 8)]
    for params, load_over, run_over in ((dict(rows=2, cols=2, dataflow="os"), 22, 9),
                                        (dict(rows=4, cols=4, dataflow="os", requant=True),
                                         22, 9),
                                        (dict(rows=4, cols=4, dataflow="ws"), 22, 9)):
        params = dict(params, max_m=16, max_k=16, max_n=16)
        rng = np.random.default_rng(3)
        dut = SaTile(index=SA, control=CONTROL, max_packet=16, **params)
        mems = Memories(rng, dut.word_bytes)
        prog = Program(dut, mems)
        for M, K, N in shapes:
            for t in mems.free:
                mems.free[t] = 0
            prog.load(Port.A, operand(rng, (M, K), dut.a_width, dut.a_signed))
            prog.load(Port.B, operand(rng, (N, K), dut.b_width, dut.b_signed), 1)
            prog.load(Port.B, operand(rng, (K, N), dut.b_width, dut.b_signed))
            prog.run(mems.region(MEM_B, M, N, dut.result_bytes))
        run_program(dut, mems.data, prog.instrs, gap=0, stall=0, mem_packet=16)
        desc = SimpleNamespace(word_bytes=dut.word_bytes, params={"max_packet": 16})
        p = {**dut.engine_params, "result_depth": dut.result_depth}
        for ins in prog.instrs:
            if ins.kind == "load":
                got = _sa_load_cycles(desc, p, decode_instr(ins.words)[2])
                assert ins.cycles - got == pytest.approx(load_over, abs=1), (params, ins)
        runs = [i for i in prog.instrs if i.kind == "run"]
        for (M, K, N), ins in zip(shapes, runs, strict=True):
            got = _sa_run_cycles(params["dataflow"], dut.rows, dut.cols, dut.result_depth,
                                 _engine_latency(p), dut.result_bytes, dut.word_bytes, M, K, N)
            assert ins.cycles - got == pytest.approx(run_over, abs=1), (params, M, K, N)


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("given, message", [
    ({"flit_width": 48}, r"flit_width must be a power of two"),
    ({"flit_width": 16}, r"flit_width must be an integer in \[32, 256\]"),
    ({"index": 0, "control": 0}, r"index must differ from control"),
    ({"index": 32}, r"index must be an integer in \[0, 31\]"),
    ({"max_packet": 0}, r"max_packet must be an integer in \[1, 1024\]"),
    ({"acc_width": 48, "bias_width": 40}, r"bias_width = 40 does not fit a 32-bit memory"),
    ({"acc_width": 40}, r"results of 40 bits do not fit a 32-bit memory element"),
    ({"cols": 3, "requant": True}, r"a result beat of cols x 1 bytes = 3 bytes must be a "
                                   r"power of two"),
    ({"cols": 3, "flit_width": 64}, r"= 12 bytes must be a power of two below or a multiple "
                                    r"of the 8-byte word"),
    ({"cols": 8, "max_packet": 4}, r"more than max_packet = "),
    ({"bias_width": 40}, r"bias_width must be at most acc_width"),  # the engine's own rule
    ({"rows": 0}, r"rows must be an integer in \[1, 32\]"),
    ({"result_depth": 1}, r"result_depth must be an integer in \[2, 1024\]"),
    ({"data_lanes": 4}, r"unknown parameter 'data_lanes'"),  # the tile's own choice
])
def test_parameters_refused(given, message):
    with pytest.raises(ParamError, match=message):
        SaTile(**given)
    with pytest.raises(ParamError, match=message):
        SaTile.validate_params(given)


def test_parameters_accepted_and_exposed():
    tile = inspect_only(SaTile(cols=8, max_packet=8, flit_width=64, requant=True))
    assert tile.result_bytes == 1 and tile.word_bytes == 8
    assert tile.operand_bytes == {Port.A: 1, Port.B: 1, Port.BIAS: 4}
    assert tile.engine_params["cols"] == 8 and tile.engine_params["requant"]
    assert tile.parameters["max_packet"] == 8
    assert elem_bytes(tile.a_width) == 1
    # the engine takes a word of the narrowest container a beat
    assert tile.data_lanes == tile.engine_params["data_lanes"] == 8
    assert tile.parameters["result_depth"] == 16 and "data_lanes" not in tile.parameters
    assert inspect_only(SaTile(a_width=16, b_width=12, max_k=8)).data_lanes == 2
    assert inspect_only(SaTile(a_width=17, b_width=17, bias_width=32, acc_width=48,
                               requant=True, max_k=8)).data_lanes == 1
    # what a description's engine check hands the tile (data_lanes = 1 filled in) is taken
    assert inspect_only(SaTile(**GemmEngine.validate_params({}))).data_lanes == 4
    assert set(tile.signature.members) == {"cmd_rx", "req_tx", "data_rx", "data_tx", "done_tx",
                                           "busy"}


# -- lint -------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [
    dict(rows=2, cols=2, max_m=16, max_k=16, max_n=16),
    dict(rows=1, cols=1, dataflow="ws", requant=True, flit_width=128, max_m=4, max_k=4,
         max_n=4),
    # 32 elements a beat, 4-byte results, the smallest result buffer
    dict(rows=4, cols=4, flit_width=256, result_depth=2, max_m=8, max_k=8, max_n=8),
])
def test_verilog_lints_clean(tmp_path, given):
    try:
        verilator_root()
    except ToolError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "sa_tile.v"
    path.write_text(verilog.convert(SaTile(**given), name="sa_tile"))
    result = verilator_lint(path, "sa_tile")
    assert result.ok, result.log
    try:
        checked = yosys_check(path, "sa_tile")  # no latches, undriven nets or double drivers
    except ToolError as exc:
        pytest.skip(str(exc))
    assert checked.ok, checked.log[-2000:]

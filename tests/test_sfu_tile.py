"""The SFU tile (``hdl/tiles/sfu.py``) in Amaranth's simulator, with the test playing the
network: the control tile sends the instructions of a program built with
:class:`~heterotron.sim.golden.accel.Program` on ``cmd_rx`` (the next only after the previous
one's DONE), memory tiles (a bytearray each) answer REQ packets with DATA packets on
``data_rx`` and apply the DATA packets of ``data_tx`` (answering DONE for an ``ack``), and
every stream sees random gaps (inputs) or back-pressure (outputs). The scratchpads after the
program and every instruction's DONE error are compared with the golden program interpreter
run on the same program and initial memory (expected values come from the interpreter only);
then the tile against the real memory tile, unknown instructions, the parameter rules and the
lint."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module

from heterotron.hdl.contract.accel import (
    DATA_INFO,
    DONE_WORD,
    EBYTES,
    MSG_HEADER,
    REQ_ARGS,
    AccelError,
    MsgClass,
    Port,
    SfuTable,
    TileKind,
    decode_instr,
    encode_instr,
    from_words,
    pack,
    parse_description,
    unpack,
)
from heterotron.hdl.contract.params import ParamError
from heterotron.hdl.tiles.memory import MemoryTile
from heterotron.hdl.tiles.sfu import SfuTile
from heterotron.sim.flows.lint import verilator_lint
from heterotron.sim.flows.toolchain import ToolError, verilator_root
from heterotron.sim.golden.accel import Interpreter, Program, write_tensor
from heterotron.sim.golden.intops import exp_consts, gelu_consts, layernorm_consts, requant_consts
from heterotron.tb.amaranth_sim import simulate

CONTROL, MEM, SFU, MEM2 = 0, 1, 2, 3  # tile indices (description order)
KBYTES = 4


def describe(flit_width=32, max_packet=4, **sfu):
    sfu = {"lanes": 2, "max_row": 16, "channels": 32, "variant": "ibert", **sfu}
    tiles = [{"kind": "control", "at": [0, 0]}, {"kind": "memory", "at": [1, 0], "kbytes": KBYTES},
             {"kind": "sfu", "at": [0, 1], **sfu},
             {"kind": "memory", "at": [1, 1], "kbytes": KBYTES}]
    return parse_description({"nx": 2, "ny": 2, "flit_width": flit_width,
                              "max_packet": max_packet, "tile": tiles})


def tile_of(desc) -> SfuTile:
    t = desc.tiles[SFU]
    return SfuTile(index=SFU, control=CONTROL, flit_width=desc.params["flit_width"],
                   max_packet=desc.params["max_packet"], **t.params)


def instructions(words):
    """The program's words cut into instructions."""
    out, pos = [], 0
    while pos < len(words):
        op, head, _ = decode_instr(words[pos:pos + 1])
        n = 1 + (op.words if op is not None else 0)
        out.append((head["id"], words[pos:pos + n]))
        pos += n
    return out


# -- the network model ------------------------------------------------------------------------


class Network:
    """The control tile and the memory tiles around one SFU tile, cycle by cycle."""

    def __init__(self, dut: SfuTile, mems: dict[int, bytearray], rng, gap=0.3, stall=0.3,
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
        self.dones: list[dict] = []  # (from the tile or a memory's ack)
        self.busy_seen = False
        self.cycle = 0

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

    def on_req(self, words, dest):
        hdr = unpack(MSG_HEADER, words[0])
        assert hdr == {"cls": MsgClass.REQ, "port": 0, "ack": 0, "unit": 0, "owner": SFU,
                       "length": 5} and len(words) == 6, (hdr, len(words))
        req = unpack(REQ_ARGS, from_words(words[1:]))
        src = req["src"]
        assert dest == src["mem"] and req["dest_tile"] == SFU and req["ack"] == 0
        assert req["port"] in (Port.A, Port.B) and src["rows"] == 1 and src["cols"] >= 1
        eb = EBYTES[src["ebytes"]]
        row_words = -(-src["cols"] * eb // self.wb)
        mem = self.mems[src["mem"]]
        base = src["addr"]
        assert base % self.wb == 0 and base + src["cols"] * eb <= len(mem)
        stream = [int.from_bytes(mem[base + w * self.wb:base + (w + 1) * self.wb], "little")
                  for w in range(row_words)]
        for i in range(0, len(stream), self.mem_packet):
            part = stream[i:i + self.mem_packet]
            self.send("data", [
                pack(MSG_HEADER, cls=MsgClass.DATA, port=req["port"], owner=SFU,
                     length=len(part)),
                pack(DATA_INFO, id=req["id"], nbytes=len(part) * self.wb), 0, *part])

    def on_data(self, words, dest):
        hdr = unpack(MSG_HEADER, words[0] & 0xFFFFFFFF)
        assert all(w >> 32 == 0 for w in words[:3])
        info = unpack(DATA_INFO, words[1])
        start, nbytes = words[2], info["nbytes"]
        assert hdr["cls"] == MsgClass.DATA and hdr["port"] == Port.MEM and hdr["owner"] == SFU
        assert (hdr["unit"] == 0 or hdr["ack"]) and hdr["length"] == len(words) - 3
        assert 1 <= hdr["length"] <= self.dut.max_packet
        wb = self.wb
        assert start % wb == 0 and hdr["length"] == -(-nbytes // wb), (start, nbytes, hdr)
        mem = self.mems[dest]
        assert start + nbytes <= len(mem)
        for i, word in enumerate(words[3:]):
            for b in range(wb):
                at = start + i * wb + b
                if at < start + nbytes:
                    mem[at] = (word >> (8 * b)) & 0xFF
        if hdr["ack"]:  # the memory's DONE: UNIT when the header says so
            self.dones.append({"id": info["id"], "tile": SFU, "from": "mem",
                               "error": int(AccelError.UNIT) if hdr["unit"] else 0})

    def on_done(self, words, dest):
        assert dest == CONTROL and len(words) == 2
        hdr = unpack(MSG_HEADER, words[0])
        assert hdr == {"cls": MsgClass.DONE, "port": 0, "ack": 0, "unit": 0, "owner": SFU,
                       "length": 1}, hdr
        self.dones.append({**unpack(DONE_WORD, words[1]), "from": "tile"})

    async def execute(self, ctx, program, limit=20000):
        """``program``: ``(id, words)`` per instruction; one at a time, each until its DONE."""
        for id, words in program:
            assert not ctx.get(self.dut.busy)
            n_done = len(self.dones)
            self.busy_seen = False
            start = self.cycle
            self.send("cmd", [pack(MSG_HEADER, cls=MsgClass.CMD, owner=CONTROL,
                                   length=len(words)), *words])
            while len(self.dones) == n_done:
                await self.step(ctx)
                assert self.cycle - start < limit, f"instruction {id} hangs"
            assert self.dones[n_done]["id"] == id
            assert self.busy_seen
            for _ in range(3):
                await self.step(ctx)
            assert not ctx.get(self.dut.busy)
        for _ in range(40):  # nothing more comes
            await self.step(ctx)
        assert len(self.dones) == len(program), self.dones
        assert not any(self.beats.values()) and not any(self.queue.values()), (
            self.beats, self.queue, self.dones)


def run_on_tile(desc, mems, program, seed=0, **options) -> Network:
    dut = tile_of(desc)
    net = Network(dut, mems, np.random.default_rng(seed), **options)

    async def bench(ctx):
        await net.execute(ctx, program)

    simulate(dut, bench)
    return net


def check_against_golden(desc, init: dict[int, bytearray], prog: Program, seed=0,
                         **options) -> dict[int, int]:
    """Run ``prog`` on the tile and on the interpreter from the same memories; the bytes
    after it and every DONE's error must agree. Returns id -> expected error."""
    interp = Interpreter(desc, {k: bytes(v) for k, v in init.items()})
    interp.execute(prog.words)
    res = interp.result()
    written = {w.id for w in res.writes}
    expected: dict[int, int] = {}
    for id, flags, _ in res.errors:
        expected[id] = expected.get(id, 0) | int(flags)
    program = instructions(prog.words)
    mems = {k: bytearray(v) for k, v in init.items()}
    net = run_on_tile(desc, mems, program, seed=seed, **options)
    got = {d["id"]: d for d in net.dones}
    assert len(got) == len(program)
    for id, words in program:
        err = expected.get(id, 0)
        assert got[id]["error"] == err, (id, got[id], err, res.errors)
        # the memory acknowledges an instruction that wrote (its unit errors in the header)
        writes = decode_instr(words)[0].name != "TABLE" and id in written
        assert got[id]["from"] == ("mem" if writes else "tile"), (id, got[id])
    for k in mems:
        if mems[k] != res.memories[k]:
            diff = [i for i in range(len(mems[k])) if mems[k][i] != res.memories[k][i]]
            raise AssertionError(f"memory {k}: {len(diff)} bytes differ, first at {diff[:8]}")
    return expected


# -- building programs --------------------------------------------------------------------------


class Setup:
    """A program, its initial memories, and helpers that allocate and fill regions."""

    def __init__(self, desc, rng):
        self.desc, self.rng = desc, rng
        self.prog = Program(desc)
        self.init = {t.index: bytearray(rng.integers(0, 256, KBYTES * 1024, dtype=np.uint8)
                                        .tobytes()) for t in desc.of_kind(TileKind.MEMORY)}

    def put(self, values, ebytes, mem=MEM, pad=0):
        values = np.atleast_2d(np.asarray(values, dtype=np.int64))
        rows, cols = values.shape
        region = self.prog.alloc(mem, rows, cols + pad, ebytes)
        region = type(region)(region.mem, region.addr, rows, cols, region.stride, ebytes)
        write_tensor(self.init[mem], region, _wrap(values, ebytes))
        return region

    def out(self, rows, cols, ebytes, mem=MEM, pad=0):
        region = self.prog.alloc(mem, rows, cols + pad, ebytes)
        return type(region)(region.mem, region.addr, rows, cols, region.stride, ebytes)

    def table(self, which, values, mem=MEM):
        vals = [int(v) for v in values]
        if which == SfuTable.LN_BIAS:
            vals = [w for v in vals for w in (v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF)]
        region = self.put(np.array([[_s32(v) for v in vals]]), 4, mem)
        return self.prog.table(SFU, which, region)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _wrap(values: np.ndarray, ebytes: int) -> np.ndarray:
    bits = 8 * ebytes
    u = values & ((1 << bits) - 1)
    return u - ((u >> (bits - 1)) << bits)


def requant_tables(s: Setup, n: int, ratio=(1e-5, 3e-5), bias=1 << 20):
    """Per-channel scales that bring 23-bit values to about 8 bits, and biases."""
    rng = s.rng
    m, e = requant_consts(rng.uniform(*ratio, n))
    s.table(SfuTable.RQ_M, m)
    s.table(SfuTable.RQ_E, e)
    s.table(SfuTable.RQ_BIAS, rng.integers(-bias, bias, n))


def ln_tables(s: Setup, d: int, out_scale=0.05, res_scale=0.002):
    rng = s.rng
    gamma = rng.uniform(0.5, 1.5, d) * np.where(rng.random(d) < 0.3, -1, 1)
    beta = rng.uniform(-0.3, 0.3, d)
    k = layernorm_consts(gamma, beta, out_scale)
    kr = layernorm_consts(gamma, beta, res_scale)
    s.table(SfuTable.LN_BIAS, k.bias)
    s.table(SfuTable.LN_SIGN, k.sign)
    s.table(SfuTable.LN_OUT_M, k.m)
    s.table(SfuTable.LN_OUT_E, k.e)
    s.table(SfuTable.LN_RES_M, kr.m)
    s.table(SfuTable.LN_RES_E, kr.e)
    return k


# -- the instructions ---------------------------------------------------------------------------


def test_table_and_requant_match_the_interpreter():
    """TABLE of the three requantizer tables (one with an entry out of range: unchanged,
    UNIT), then REQUANT with and without the bias and the residual, several containers and
    widths, rows not a multiple of lanes or words, strides past the columns."""
    desc = describe()
    rng = np.random.default_rng(1)
    s = Setup(desc, rng)
    p = s.prog
    n = 13
    requant_tables(s, n)
    s.table(SfuTable.RQ_E, [3] * 5 + [64] + [3] * 3)  # refused: the table stays
    x = rng.integers(-(1 << 22), 1 << 22, (3, n))
    src = s.put(x, 4, pad=3)
    p.requant(SFU, src, s.out(3, n, 1), 8)
    p.requant(SFU, src, s.out(3, n, 2, mem=MEM2, pad=1), 12, bias=True)
    y = s.put(rng.integers(-128, 128, (3, n)), 1, mem=MEM2)
    m_y, e_y = requant_consts(0.7)
    p.requant(SFU, src, s.out(3, n, 4), 32, bias=True, y=y, m_y=int(m_y), e_y=int(e_y))
    p.requant(SFU, src, s.out(3, n, 1), 8, y=y, m_y=int(m_y), e_y=int(e_y))
    requant_tables(s, 30)  # a row longer than max_row (16): up to channels (32)
    p.requant(SFU, s.put(rng.integers(-(1 << 22), 1 << 22, (2, 30)), 4), s.out(2, 30, 1), 8,
              bias=True)
    x16 = s.put(rng.integers(-(1 << 15), 1 << 15, (2, 7)), 2)
    y16 = s.put(rng.integers(-(1 << 15), 1 << 15, (2, 7)), 2)
    m_y, e_y = requant_consts(4e-4)
    p.requant(SFU, x16, s.out(2, 7, 1), 5, y=y16, m_y=int(m_y), e_y=int(e_y))
    expected = check_against_golden(desc, s.init, p, seed=1)
    assert list(expected.values()) == [AccelError.UNIT]


def test_softmax_with_valid_matches_the_interpreter():
    """SOFTMAX of rows with every column valid, some masked, none; 8-, 16- and 5-bit
    outputs; then constants the unit refuses (nothing written, UNIT)."""
    desc = describe()
    rng = np.random.default_rng(2)
    s = Setup(desc, rng)
    p = s.prog
    k = exp_consts(0.004)
    x = rng.integers(-700, 700, (3, 11))
    src = s.put(x, 4)
    for bits, valid, eb in ((8, 11, 1), (16, 7, 2), (5, 0, 1), (8, 1, 1)):
        p.softmax(SFU, src, s.out(3, 11, eb), k.x0, k.b, k.c, bits, valid=valid)
    x8 = s.put(rng.integers(-128, 128, (2, 16)), 1)
    p.softmax(SFU, x8, s.out(2, 16, 1, mem=MEM2), k.x0, k.b, k.c, 8, valid=13)
    p.softmax(SFU, x8, s.out(2, 16, 1), k.x0, -k.x0 - 1, k.c, 8)  # b < -x0: refused
    p.softmax(SFU, x8, s.out(2, 16, 1), k.x0, k.b, 1 << 30, 8)  # c too wide: refused
    expected = check_against_golden(desc, s.init, p, seed=2)
    assert list(expected.values()) == [AccelError.UNIT] * 2


def test_gelu_matches_the_interpreter():
    """GELU with realistic constants at 12, 24 and 8 bits (saturating), and 4-byte inputs
    past 24 bits: taken truncated, written, UNIT."""
    desc = describe()
    rng = np.random.default_rng(3)
    s = Setup(desc, rng)
    p = s.prog
    g = gelu_consts(0.0005)
    x = rng.integers(-8000, 8000, (3, 9))  # -4 .. 4
    src = s.put(x, 2)

    def scale(top):  # (m, e) from i-GELU's output scale to 4.0 / top
        m, e = requant_consts(g.out_scale / (4.0 / top))
        return int(m), int(e)
    m, e = scale(1500)
    p.gelu(SFU, src, s.out(3, 9, 2), g.b, g.c, g.one, m, e, 12)
    p.gelu(SFU, src, s.out(3, 9, 4), g.b, g.c, g.one, *scale(3e6), 24)
    p.gelu(SFU, src, s.out(3, 9, 1), g.b, g.c, g.one, *scale(200), 8)  # some saturate
    wide = x.copy()
    wide[1, 4] = 1 << 25
    p.gelu(SFU, s.put(wide, 4), s.out(3, 9, 2), g.b, g.c, g.one, int(m), int(e), 16)
    expected = check_against_golden(desc, s.init, p, seed=3)
    assert list(expected.values()) == [AccelError.UNIT]


def test_layernorm_matches_the_interpreter():
    """LAYERNORM tables from layernorm_consts, then rows of 12 (a multiple of neither lanes 4
    nor the word) to an 8-bit copy and a 16-bit copy; one input past 24 bits (UNIT)."""
    desc = describe(lanes=4)
    rng = np.random.default_rng(4)
    s = Setup(desc, rng)
    p = s.prog
    d = 10
    ln_tables(s, d)
    x = rng.integers(-(1 << 18), 1 << 18, (3, d)) + rng.integers(-9000, 9000, (3, 1))
    src = s.put(x, 4)
    p.layernorm(SFU, src, s.out(3, d, 1), s.out(3, d, 2), 0, 8, 16)
    x[2, 3] = -(1 << 24)
    p.layernorm(SFU, s.put(x, 4), s.out(3, d, 1, mem=MEM2), s.out(3, d, 4, mem=MEM2), 1, 6,
                20)
    expected = check_against_golden(desc, s.init, p, seed=4)
    assert list(expected.values()) == [AccelError.UNIT]


def test_wide_flits_all_instructions():
    """64-bit flits, lanes 4, the division-free Softmax, 2-beat packets: one of each."""
    desc = describe(flit_width=64, max_packet=2, lanes=4, max_row=32, channels=24,
                    variant="divfree")
    rng = np.random.default_rng(5)
    s = Setup(desc, rng)
    p = s.prog
    n = 21
    requant_tables(s, n)
    src = s.put(rng.integers(-(1 << 20), 1 << 20, (2, n)), 4)
    p.requant(SFU, src, s.out(2, n, 2), 16, bias=True)
    k = exp_consts(0.003)
    sm = s.put(rng.integers(-2000, 2000, (2, 30)), 2)
    p.softmax(SFU, sm, s.out(2, 30, 1), k.x0, k.b, k.c, 8, valid=27)
    g = gelu_consts(0.001)
    m, e = requant_consts(g.out_scale / 2e-4)
    p.gelu(SFU, sm, s.out(2, 30, 2, mem=MEM2), g.b, g.c, g.one, int(m), int(e), 16)
    ln_tables(s, 18)
    x = rng.integers(-(1 << 20), 1 << 20, (2, 18))
    p.layernorm(SFU, s.put(x, 4), s.out(2, 18, 1), s.out(2, 18, 2), 0, 8, 12)
    expected = check_against_golden(desc, s.init, p, seed=5)
    assert expected == {}


def test_table_entry_limits():
    """TABLE refuses (UNIT, table unchanged) an LN_BIAS of 2^47 or -2^47, an LN_SIGN other
    than 1 and -1, a multiplier of 2^31 and a shift of 64, and takes the values just inside
    (2^47 - 1, -2^47 + 1, 2^31 - 1, 63); LAYERNORMs and a REQUANT show what the tables
    hold."""
    desc = describe(lanes=4)
    rng = np.random.default_rng(6)
    s = Setup(desc, rng)
    p = s.prog
    d = 6
    ln_tables(s, d)
    s.table(SfuTable.LN_BIAS, [0, 1 << 47, 5, 0, 0, 0])
    s.table(SfuTable.LN_BIAS, [0, 0, -(1 << 47), 0, 0, 0])
    s.table(SfuTable.LN_SIGN, [1, -1, 2, 1, 1, 1])
    s.table(SfuTable.LN_OUT_E, [64, 3, 3, 3, 3, 3])
    s.table(SfuTable.LN_RES_M, [1 << 31, 3, 3, 3, 3, 3])
    x = rng.integers(-(1 << 16), 1 << 16, (2, d))
    src = s.put(x, 4)
    p.layernorm(SFU, src, s.out(2, d, 1), s.out(2, d, 2), 0, 8, 16)
    s.table(SfuTable.LN_BIAS, [(1 << 47) - 1, -(1 << 47) + 1, (1 << 32) + 7, -(1 << 33) - 9,
                               -1, 1 << 40])
    s.table(SfuTable.LN_SIGN, [-1] * d)
    p.layernorm(SFU, src, s.out(2, d, 4), s.out(2, d, 4), 0, 24, 24)
    # LN tables longer than a LayerNorm row (max_row 16 < channels 32): the entries past 16
    # are checked (one out of range refuses the table) but never used
    ln_tables(s, 16)
    s.table(SfuTable.LN_BIAS, [3] * 19 + [1 << 50])
    s.table(SfuTable.LN_BIAS, [-(1 << 40)] * 32)
    src16 = s.put(rng.integers(-(1 << 16), 1 << 16, (2, 16)), 4)
    p.layernorm(SFU, src16, s.out(2, 16, 2), s.out(2, 16, 1), 0, 16, 8)
    requant_tables(s, d)
    s.table(SfuTable.RQ_M, [(1 << 31) - 1] * d)
    s.table(SfuTable.RQ_E, [63, 0, 40, 45, 50, 55])
    p.requant(SFU, src, s.out(2, d, 4), 32)
    expected = check_against_golden(desc, s.init, p, seed=6)
    assert len(expected) == 6 and set(expected.values()) == {AccelError.UNIT}


@pytest.mark.parametrize("lanes, flit_width", [(1, 32), (3, 64)])
def test_odd_lane_counts(lanes, flit_width):
    """One lane, and three lanes (rows of 2-byte elements straddle beats and words)."""
    desc = describe(flit_width=flit_width, max_packet=3, lanes=lanes, max_row=12,
                    channels=12)
    rng = np.random.default_rng(7 + lanes)
    s = Setup(desc, rng)
    p = s.prog
    n = 11
    requant_tables(s, n, ratio=(1e-3, 3e-3))
    y = s.put(rng.integers(-500, 500, (2, n)), 2)
    src = s.put(rng.integers(-(1 << 15), 1 << 15, (2, n)), 2)
    p.requant(SFU, src, s.out(2, n, 2), 10, bias=True, y=y, m_y=3, e_y=2)
    k = exp_consts(0.005)
    p.softmax(SFU, src, s.out(2, n, 2), k.x0, k.b, k.c, 12, valid=9)
    ln_tables(s, n)
    p.layernorm(SFU, src, s.out(2, n, 1), s.out(2, n, 2), 0, 8, 12)
    check_against_golden(desc, s.init, p, seed=lanes)


@pytest.mark.parametrize("seed", [*range(4), *(pytest.param(s, marks=pytest.mark.slow)
                                              for s in range(4, 24))])
def test_random_programs(seed):
    """Random mixes of all five instructions on random shapes and containers, with more or
    less back-pressure."""
    rng = np.random.default_rng(100 + seed)
    fw = int(rng.choice([32, 64]))
    lanes = int(rng.choice([1, 2, 3, 4]))
    desc = describe(flit_width=fw, max_packet=int(rng.choice([1, 2, 5])), lanes=lanes,
                    max_row=24, channels=24, variant=str(rng.choice(["ibert", "divfree"])))
    s = Setup(desc, rng)
    p = s.prog
    n_ln = 0
    for _ in range(6):
        rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 25))
        eb = int(rng.choice([1, 2, 4]))
        mem = int(rng.choice([MEM, MEM2]))
        kind = rng.choice(["requant", "softmax", "gelu", "layernorm"])
        lim = {1: 127, 2: 30000, 4: 1 << 21}[eb]
        if kind == "gelu":
            lim = min(lim, 12000)
        x = rng.integers(-lim, lim + 1, (rows, cols))
        if eb == 4 and rng.random() < 0.2:
            x[-1, -1] = 1 << 24  # GELU, LayerNorm: truncated (UNIT)
        src = s.put(x, eb, mem=mem)
        if kind == "requant":
            requant_tables(s, cols, ratio=(0.3 / lim, 1.0 / lim))
            bits = int(rng.choice([4, 8, 16, 32]))
            y = s.put(rng.integers(-100, 100, (rows, cols)), 1) if rng.random() < 0.5 else None
            p.requant(SFU, src, s.out(rows, cols, {4: 1, 8: 1, 16: 2, 32: 4}[bits], mem=mem),
                      bits, bias=bool(rng.random() < 0.5), y=y, m_y=1 << 20, e_y=21)
        elif kind == "softmax":
            k = exp_consts(min(max(3.0 / lim, 6e-5), 6e-3))
            bits = int(rng.choice([2, 8, 9, 16]))
            p.softmax(SFU, src, s.out(rows, cols, 1 if bits <= 8 else 2), k.x0, k.b, k.c, bits,
                      valid=int(rng.integers(0, cols + 1)))
        elif kind == "gelu":
            g = gelu_consts(min(max(4.0 / lim, 3.5e-4), 1.2e-3))
            m, e = requant_consts(g.out_scale / (4.0 / 100))
            p.gelu(SFU, src, s.out(rows, cols, 1), g.b, g.c, g.one, int(m), int(e), 8)
        else:
            if cols != n_ln:
                ln_tables(s, cols)
                n_ln = cols
            p.layernorm(SFU, src, s.out(rows, cols, 1), s.out(rows, cols, 2), 0, 8, 16)
    check_against_golden(desc, s.init, p, seed=seed, gap=float(rng.choice([0, 0.3, 0.6])),
                         stall=float(rng.choice([0, 0.3, 0.7])),
                         mem_packet=int(rng.choice([1, 3, 8])))


class _Scratchpad(MemoryTile):
    """The memory tile, its SRAM kept for the test to fill and read."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        self.sram = m.submodules.mem
        return m


class _Pair(Elaboratable):
    """An SFU tile wired to a real memory tile (``MEM``): REQ and both DATA directions."""

    def __init__(self, desc):
        self.sfu = tile_of(desc)
        self.mem = _Scratchpad(index=MEM, control=CONTROL, flit_width=desc.params["flit_width"],
                               max_packet=desc.params["max_packet"], kbytes=KBYTES)

    def elaborate(self, platform):
        m = Module()
        m.submodules.sfu, m.submodules.mem = self.sfu, self.mem
        for a, b in ((self.sfu.req_tx, self.mem.req_rx), (self.sfu.data_tx, self.mem.data_rx),
                     (self.mem.data_tx, self.sfu.data_rx)):
            m.d.comb += [b.valid.eq(a.valid), b.payload.data.eq(a.payload.data),
                         b.payload.last.eq(a.payload.last), a.ready.eq(b.ready)]
        return m


def test_with_the_memory_tile():
    """The tile against the real memory tile (``hdl/tiles/memory.py``), its SRAM filled and
    read back by the test: one instruction of each kind, bytes and DONEs as the
    interpreter's."""
    desc = describe(flit_width=64, max_packet=3, lanes=4)
    rng = np.random.default_rng(9)
    s = Setup(desc, rng)
    p = s.prog
    requant_tables(s, 10)
    src = s.put(rng.integers(-(1 << 21), 1 << 21, (2, 10)), 4)
    y = s.put(rng.integers(-100, 100, (2, 10)), 1)
    p.requant(SFU, src, s.out(2, 10, 2), 9, bias=True, y=y, m_y=1 << 24, e_y=26)
    k = exp_consts(0.003)
    sm = s.put(rng.integers(-900, 900, (2, 13)), 2)
    p.softmax(SFU, sm, s.out(2, 13, 1), k.x0, k.b, k.c, 8, valid=11)
    g = gelu_consts(0.0005)
    m, e = requant_consts(g.out_scale / 0.02)
    p.gelu(SFU, sm, s.out(2, 13, 1), g.b, g.c, g.one, int(m), int(e), 8)
    ln_tables(s, 12)
    p.layernorm(SFU, s.put(rng.integers(-(1 << 18), 1 << 18, (2, 12)), 4), s.out(2, 12, 1),
                s.out(2, 12, 2), 0, 8, 12)
    interp = Interpreter(desc, {k: bytes(v) for k, v in s.init.items()})
    interp.execute(p.words)
    want = interp.result().memories[MEM]
    dut = _Pair(desc)
    wb = desc.word_bytes
    init = s.init[MEM]
    dones = []

    async def bench(ctx):
        sram = dut.mem.sram
        for i in range(len(init) // wb):
            ctx.set(sram.data[i], int.from_bytes(init[i * wb:(i + 1) * wb], "little"))
        ctx.set(dut.sfu.done_tx.ready, 1)
        ctx.set(dut.mem.done_tx.ready, 1)
        for id, words in instructions(p.words):
            pkt = [pack(MSG_HEADER, cls=MsgClass.CMD, owner=CONTROL, length=len(words)), *words]
            for i, w in enumerate(pkt):
                ctx.set(dut.sfu.cmd_rx.payload.data, w)
                ctx.set(dut.sfu.cmd_rx.payload.last, i == len(pkt) - 1)
                ctx.set(dut.sfu.cmd_rx.valid, 1)
                await ctx.tick().until(dut.sfu.cmd_rx.ready)
            ctx.set(dut.sfu.cmd_rx.valid, 0)
            for _ in range(20000):
                got = [unpack(DONE_WORD, ctx.get(t.payload.data))
                       for t in (dut.sfu.done_tx, dut.mem.done_tx)
                       if ctx.get(t.valid) and ctx.get(t.payload.last)]
                await ctx.tick()
                if got:
                    dones.extend(got)
                    break
            assert dones and dones[-1]["id"] == id, f"instruction {id} hangs"
            while ctx.get(dut.sfu.busy):
                await ctx.tick()
        out = b"".join(ctx.get(sram.data[i]).to_bytes(wb, "little")
                       for i in range(len(init) // wb))
        assert out == want

    simulate(dut, bench)
    assert [d["error"] for d in dones] == [0] * len(dones)


def test_unknown_instructions_are_illegal():
    """An instruction of another class, an unknown SFU code and a TABLE of no table are
    answered by the tile with DONE and ILLEGAL."""
    desc = describe()
    words = encode_instr(TileKind.SFU, "TABLE", SFU, 7, which=12,
                         src={"addr": 0, "rows": 1, "cols": 2, "stride": 2, "ebytes": 2,
                              "mem": MEM})
    other = encode_instr(TileKind.SA, "SCALE", SFU, 8, lane=0, e=0, m=0)
    unknown = [pack_head(code=9, cls=int(TileKind.SFU), id=9), 0, 0]
    net = run_on_tile(desc, {MEM: bytearray(KBYTES * 1024), MEM2: bytearray(KBYTES * 1024)},
                      [(7, words), (8, other), (9, unknown)])
    assert [(d["id"], d["error"], d["from"]) for d in net.dones] == [
        (7, AccelError.ILLEGAL, "tile"), (8, AccelError.ILLEGAL, "tile"),
        (9, AccelError.ILLEGAL, "tile")]


def test_layernorm_shift_past_the_unit_is_refused():
    """A LAYERNORM shift above the unit's 15 is ILLEGAL (the control tile never issues it);
    should one reach the tile, it writes nothing and answers UNIT."""
    desc = describe()
    rng = np.random.default_rng(8)
    s = Setup(desc, rng)
    src = s.put(rng.integers(-100, 100, (2, 4)), 1)
    s.prog.layernorm(SFU, src, s.out(2, 4, 1), s.out(2, 4, 1), 16, 8, 8)
    mems = {k: bytearray(v) for k, v in s.init.items()}
    net = run_on_tile(desc, mems, instructions(s.prog.words))
    assert [(d["error"], d["from"]) for d in net.dones] == [(AccelError.UNIT, "tile")]
    assert mems == s.init


def pack_head(**fields):
    from heterotron.hdl.contract.accel import INSTR_HEAD
    return pack(INSTR_HEAD, tile=SFU, **fields)


@pytest.mark.parametrize("given, words", [
    ({"flit_width": 48}, "flit_width"),
    ({"index": 0, "control": 0}, "index"),
    ({"lanes": 3, "max_row": 1024, "channels": 1024}, "max_row or channels"),
    ({"lanes": 0}, "lanes"),
    ({"variant": "exact"}, "variant"),
    ({"channels": 5000}, "channels"),
])
def test_parameters_are_checked(given, words):
    with pytest.raises(ParamError, match=words):
        SfuTile(**{"index": 2, "control": 0, **given})


@pytest.mark.parametrize("given", [
    {"flit_width": 32, "max_packet": 4, "lanes": 2, "max_row": 16, "channels": 32},
    {"flit_width": 64, "max_packet": 1, "lanes": 1, "max_row": 8, "channels": 8,
     "variant": "divfree"},
])
def test_verilog_lints_clean(tmp_path, given):
    try:
        verilator_root()
    except ToolError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "sfu_tile.v"
    dut = SfuTile(index=2, control=0, **given)
    path.write_text(verilog.convert(dut, name="sfu_tile"))
    result = verilator_lint(path, "sfu_tile")
    assert result.ok, result.log

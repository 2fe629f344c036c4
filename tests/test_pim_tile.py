"""The PiM tile (``hdl/tiles/pim.py``) in Amaranth's simulator, with the test playing the
network: the control tile sends instructions on ``cmd_rx`` one at a time, a memory tile (a
bytearray) answers REQ packets with DATA packets and applies the tile's DATA packets, and
every stream sees random gaps (inputs) or back-pressure (outputs). Random programs of ADC,
PROGRAM and MVM are compared with the golden interpreter (``sim/golden/accel.py``) run on a
description holding the same tile: the scratchpad bytes, each instruction's DONE error flags
and the tile's unit flags. Then the error answers, the parameter rules and the lint."""

from __future__ import annotations

from collections import deque

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
    encode_instr,
    from_words,
    pack,
    parse_description,
    unpack,
)
from heterotron.hdl.contract.params import ParamError, inspect_only
from heterotron.hdl.contract.pim import ADC_FRAC, PIM_PARAMS
from heterotron.hdl.tiles.pim import PIM_DIMS, PIM_RANGE, PimNetTile
from heterotron.sim.flows.lint import verilator_lint
from heterotron.sim.flows.toolchain import ToolError, verilator_root
from heterotron.sim.golden.accel import Interpreter, Program, write_tensor
from heterotron.tb.amaranth_sim import simulate

CONTROL, MEM, PIM = 0, 1, 2
KBYTES = 4
MEM_BYTES = KBYTES * 1024

#: An exact tile: 2^enob - 1 >= rows * (2^cell_bits - 1) at the reset gain, 1-byte inputs and
#: weights, no noise or faults generated.
EXACT = dict(rows=16, cols=4, lanes=4, input_bits=8, weight_bits=8, cell_bits=2, enob=6,
             adc_share=8, noise=False, faults=False, skip_zero=True, input_code="twos",
             max_m=3)
#: A lossy one: 4-bit ADC with noise, stuck-at faults, 12-bit inputs (1- or 2-byte
#: containers), 6-bit weights in 1-byte containers (values up to 127 arrive), sign-magnitude,
#: 1-bit cells, ADCs shared by 10 bit-lines, W = 64.
LOSSY = dict(rows=16, cols=4, lanes=4, input_bits=12, weight_bits=6, cell_bits=1, enob=4,
             adc_share=10, noise=True, faults=True, skip_zero=True, input_code="signmag",
             max_m=4)


def describe(params: dict, flit_width: int):
    tiles = [{"kind": "control", "at": [0, 0]},
             {"kind": "memory", "at": [1, 0], "kbytes": KBYTES},
             {"kind": "pim", "at": [0, 1], **params}]
    return parse_description({"nx": 2, "ny": 2, "flit_width": flit_width, "tile": tiles})


def make_tile(params: dict, flit_width: int, max_packet: int = 8) -> PimNetTile:
    return PimNetTile(index=PIM, control=CONTROL, flit_width=flit_width,
                      max_packet=max_packet, **params)


# -- the network model ------------------------------------------------------------------------


class Network:
    """The control tile and the memory tile around one PiM tile, cycle by cycle."""

    def __init__(self, dut: PimNetTile, mem: bytearray, rng, gap=0.3, stall=0.3,
                 mem_packet=3):
        self.dut, self.mem, self.rng = dut, mem, rng
        self.gap, self.stall, self.mem_packet = gap, stall, mem_packet
        self.wb = dut.word_bytes
        self.rx = {"cmd": dut.cmd_rx, "data": dut.data_rx}
        self.tx = {"req": dut.req_tx, "data": dut.data_tx, "done": dut.done_tx}
        self.queue = {name: deque() for name in self.rx}
        self.offered = dict.fromkeys(self.rx)
        self.beats = {name: [] for name in self.tx}
        self.held = dict.fromkeys(self.tx)
        self.current = None  # (id, kind)
        self.dones, self.writes, self.reqs = [], [], []
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
        assert hdr == {"cls": MsgClass.REQ, "port": 0, "ack": 0, "unit": 0, "owner": PIM,
                       "length": 5} and len(words) == 6, (hdr, len(words))
        req = unpack(REQ_ARGS, from_words(words[1:]))
        assert dest == MEM == req["src"]["mem"]
        assert req["dest_tile"] == PIM and req["ack"] == 0 and req["id"] == self.current[0]
        self.reqs.append(req)
        src = req["src"]
        eb = EBYTES[src["ebytes"]]
        row_words = -(-src["cols"] * eb // self.wb)
        stream = []
        for r in range(src["rows"]):
            base = src["addr"] + r * src["stride"] * eb
            for w in range(row_words):
                stream.append(int.from_bytes(self.mem[base + w * self.wb:
                                                      base + (w + 1) * self.wb], "little"))
        for i in range(0, len(stream), self.mem_packet):
            part = stream[i:i + self.mem_packet]
            self.send("data", [
                pack(MSG_HEADER, cls=MsgClass.DATA, port=req["port"], owner=PIM,
                     length=len(part)),
                pack(DATA_INFO, id=req["id"], nbytes=len(part) * self.wb), 0, *part])

    def on_data(self, words, dest):
        assert self.current is not None and self.current[1] == "ack", \
            f"unexpected DATA packet during {self.current}"
        assert dest == MEM
        hdr = unpack(MSG_HEADER, words[0] & 0xFFFFFFFF)
        assert all(w >> 32 == 0 for w in words[:3])
        info = unpack(DATA_INFO, words[1])
        start, nbytes = words[2], info["nbytes"]
        assert hdr["cls"] == MsgClass.DATA and hdr["port"] == Port.MEM and hdr["owner"] == PIM
        assert (hdr["unit"] == 0 or hdr["ack"]) and hdr["length"] == len(words) - 3
        assert info["id"] == self.current[0]
        wb = self.wb
        assert start % wb == 0 and hdr["length"] == -(-nbytes // wb), (start, nbytes, hdr)
        for i, word in enumerate(words[3:]):
            for b in range(wb):
                at = start + i * wb + b
                if at < start + nbytes:
                    self.mem[at] = (word >> (8 * b)) & 0xFF
        self.writes.append((start, nbytes, hdr["ack"], hdr["unit"]))

    def on_done(self, words, dest):
        assert dest == CONTROL and len(words) == 2
        hdr = unpack(MSG_HEADER, words[0])
        assert hdr == {"cls": MsgClass.DONE, "port": 0, "ack": 0, "unit": 0, "owner": PIM,
                       "length": 1}, hdr
        self.dones.append(unpack(DONE_WORD, words[1]))

    async def execute(self, ctx, program, limit=20000):
        """``program``: ``(words, id, expected)``, expected the DONE's error flags or
        ``("ack", flags)`` (answered by the memory's acknowledgement of the last result
        packet, whose DONE carries ``UNIT`` when the packet's header has ``unit``)."""
        for words, id, want in program:
            assert not ctx.get(self.dut.busy)
            acked = isinstance(want, tuple)
            self.current = (id, "ack" if acked else "done")
            n_done, n_writes = len(self.dones), len(self.writes)
            start = self.cycle
            self.send("cmd", [pack(MSG_HEADER, cls=MsgClass.CMD, owner=CONTROL,
                                   length=len(words)), *words])
            while True:
                await self.step(ctx)
                assert self.cycle - start < limit, f"instruction {id} hangs"
                if not acked and len(self.dones) > n_done:
                    assert self.dones[n_done:] == [{"id": id, "tile": PIM, "error": want}], \
                        (id, self.dones[n_done:], want)
                    assert len(self.writes) == n_writes
                    break
                if acked and self.writes[n_writes:] and self.writes[-1][2]:
                    assert [w[2] for w in self.writes[n_writes:]] == \
                        [0] * (len(self.writes) - n_writes - 1) + [1]
                    assert len(self.dones) == n_done
                    unit = AccelError.UNIT if self.writes[-1][3] else 0
                    assert unit == want[1] & AccelError.UNIT, (id, unit, want)
                    break
            await self.step(ctx)
            assert not ctx.get(self.dut.busy)
        for _ in range(30):
            await self.step(ctx)
        assert not any(self.beats.values()) and not any(self.queue.values())
        self.current = None


def run_rtl(dut, mem: bytearray, program, seed=0, **options) -> tuple[Network, int]:
    net = Network(dut, mem, np.random.default_rng(seed), **options)
    flags = []

    async def bench(ctx):
        await net.execute(ctx, program)
        flags.append(ctx.get(dut.flags))

    simulate(dut, bench)
    return net, flags[0]


# -- random programs ---------------------------------------------------------------------------


class Builder:
    """A golden :class:`Program` whose instructions are kept apart, with the initial memory."""

    def __init__(self, desc, rng):
        self.desc, self.rng = desc, rng
        self.prog = Program(desc)
        self.mem = bytearray(rng.integers(0, 256, MEM_BYTES, dtype=np.uint8).tobytes())
        self.instrs: list[tuple[list[int], int]] = []
        self.p = next(t for t in desc.tiles if t.index == PIM).params

    def _add(self, method, *args, **kwargs) -> int:
        n = len(self.prog.words)
        id = method(PIM, *args, **kwargs)
        self.instrs.append((self.prog.words[n:], id))
        return id

    def put(self, values: np.ndarray, ebytes: int):
        region = self.prog.alloc(MEM, *values.shape, ebytes)
        write_tensor(self.mem, region, values)
        return region

    def adc(self):
        rng, p = self.rng, self.p
        lim = 1 << (ADC_FRAC + p["enob"])
        gain = 0 if rng.random() < 0.2 or p["adc_range"] == "fixed" else \
            int(np.exp(rng.uniform(0, np.log(lim - 1))))
        offset = int(rng.integers(-lim // 64, lim // 64)) if rng.random() < 0.5 else 0
        sigma = int(rng.integers(0, 1 << 12)) if p["noise"] else 0
        self._add(self.prog.adc, gain=gain, offset=offset, sigma=sigma,
                  noise_seed=int(rng.integers(0, 1 << 32)))

    def program(self):
        rng, p = self.rng, self.p
        n, k = int(rng.integers(1, p["cols"] + 1)), int(rng.integers(1, p["rows"] + 1))
        lim = (1 << (p["weight_bits"] - 1)) - 1
        w = rng.integers(-lim, lim + 1, (n, k))
        if rng.random() < 0.3:  # refused weights: anything the container holds beyond +-lim
            eb = 1 if p["weight_bits"] <= 8 else 2
            top = 1 << (8 * eb - 1)
            for _ in range(int(rng.integers(1, 3))):
                w[rng.integers(0, n), rng.integers(0, k)] = rng.choice(
                    [-top, top - 1, lim + 1, -lim - 1])
        rate = int(rng.integers(0, 4000)) if p["faults"] else 0
        self._add(self.prog.program, self.put(w, 1 if p["weight_bits"] <= 8 else 2),
                  fault_rate=rate, fault_seed=int(rng.integers(0, 1 << 32)))

    def mvm_chain(self):
        """An MVM over one or more K blocks (acc), out on the last, or no out at all."""
        rng, p = self.rng, self.p
        m = int(rng.integers(1, p["max_m"] + 1))
        ib = p["input_bits"]
        eb_max = 1 if ib <= 8 else 2
        blocks = int(rng.integers(1, 4))
        for b in range(blocks):
            if b and rng.random() < 0.4:
                self.program()  # the next weight block
            k = int(rng.integers(1, p["rows"] + 1))
            eb = int(rng.integers(1, eb_max + 1))
            hi = min(1 << (ib - 1), 1 << (8 * eb - 1))
            x = rng.integers(-hi, hi, (m, k))
            if eb * 8 > ib and rng.random() < 0.3:  # inputs outside input_bits: wrapped
                x[rng.integers(0, m), rng.integers(0, k)] = rng.choice(
                    [1 << (ib - 1), -(1 << (8 * eb - 1))])
            src = self.put(x, eb)
            last = b == blocks - 1
            dest = None
            if last and rng.random() < 0.8:
                dest = self.prog.alloc(MEM, m, int(rng.integers(1, p["cols"] + 1)), 4)
            self._add(self.prog.mvm, src, dest, acc=b > 0)

    def illegal(self):
        rng, p = self.rng, self.p
        if rng.random() < 0.5:  # acc with another M than the accumulator's (or none)
            m = int(rng.integers(1, p["max_m"] + 1))
            src = self.put(rng.integers(-4, 4, (m, 2)), 1)
            self._add(self.prog.mvm, src, None, acc=True)
        else:  # an unknown code of the class
            id = 0x7000 + len(self.instrs)
            head = pack(INSTR_HEAD, code=int(rng.integers(3, 32)), cls=TileKind.PIM,
                        tile=PIM, id=id)
            self.instrs.append(([head], id))

    def noisy(self):
        """A tiny gain under loud noise: random codes rescaled far past 32 bits (wrapped)."""
        rng = self.rng
        if self.p["adc_range"] == "fixed":
            return
        self._add(self.prog.adc, gain=int(rng.integers(1, 9)), offset=0,
                  sigma=int(rng.integers(1 << 15, 1 << 16)),
                  noise_seed=int(rng.integers(0, 1 << 32)))
        self.mvm_chain()

    def random(self, n: int):
        ops = [self.adc, self.program, self.mvm_chain, self.mvm_chain, self.illegal]
        if self.p["noise"]:
            ops.append(self.noisy)
        self.program()
        for _ in range(n):
            ops[int(self.rng.integers(0, len(ops)))]()


def expected(builder: Builder):
    """The golden run: memory, the answer per instruction, the tile's unit flags."""
    interp = Interpreter(builder.desc, {MEM: bytes(builder.mem)})
    program = []
    for words, id in builder.instrs:
        n = len(interp.errors)
        interp.execute(words)
        flags = 0
        for _, f, _ in interp.errors[n:]:
            flags |= int(f)
        op = unpack(INSTR_HEAD, words[0])
        writes = [w for w in interp.writes if w.id == id]
        if op["code"] == 2 and op["cls"] == TileKind.PIM and writes:
            # answered by the memory's ack, UNIT through the last packet's unit bit
            want = ("ack", flags)
        else:
            want = flags
        program.append((words, id, want))
    res = interp.result()
    return program, res.memories[MEM], res.tile_errors[PIM]


def check_random(params, flit_width, seed, n, **options):
    rng = np.random.default_rng(seed)
    desc = describe(params, flit_width)
    builder = Builder(desc, rng)
    builder.random(n)
    program, want_mem, want_flags = expected(builder)
    dut = make_tile(params, flit_width)
    mem = bytearray(builder.mem)
    net, flags = run_rtl(dut, mem, program, seed=seed + 1, **options)
    assert bytes(mem) == want_mem, [i for i in range(MEM_BYTES) if mem[i] != want_mem[i]][:8]
    assert flags == want_flags
    return program, net


@pytest.mark.parametrize("params, flit_width, seed", [(EXACT, 32, 1), (LOSSY, 64, 2)],
                         ids=["exact-w32", "lossy-w64"])
def test_random_programs_match_the_interpreter(params, flit_width, seed):
    program, _ = check_random(params, flit_width, seed, 10)
    kinds = {unpack(INSTR_HEAD, w[0])["code"] for w, _, _ in program}
    assert {0, 1, 2} <= kinds


#: More shapes: one lane and one column; a vector a beat with a fixed ADC range; 16-bit
#: inputs and weights in 2-byte containers with 4-bit cells at W = 256; 2-bit inputs and
#: weights; no zero-plane skipping, 3 columns.
VARIANTS = {
    "exact-w32": (EXACT, 32), "lossy-w64": (LOSSY, 64), "exact-w128": (EXACT, 128),
    "lanes1-cols1": (dict(EXACT, lanes=1, cols=1, adc_share=4, max_m=2), 32),
    "lanes16-fixed": (dict(EXACT, lanes=16, adc_range="fixed", adc_max=40, max_m=1), 64),
    "ib16-wb16-w256": (dict(LOSSY, input_bits=16, weight_bits=16, cell_bits=4, adc_share=8,
                            rows=8, lanes=2), 256),
    "ib2-wb2": (dict(EXACT, input_bits=2, weight_bits=2, cell_bits=1, adc_share=2, enob=5), 32),
    "noskip-twos-cols3": (dict(LOSSY, skip_zero=False, input_code="twos", cols=3, adc_share=6,
                               max_m=5), 128),
}


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_random_programs_slow(name, seed):
    params, flit_width = VARIANTS[name]
    check_random(params, flit_width, 100 + 7 * seed + sorted(VARIANTS).index(name), 14)


def test_exact_tile_computes_the_product():
    """At the reset gain the exact tile's result is x @ w.T (the golden says so too)."""
    rng = np.random.default_rng(5)
    desc = describe(EXACT, 32)
    b = Builder(desc, rng)
    w = rng.integers(-127, 128, (3, 10))
    x = rng.integers(-128, 128, (2, 10))
    b._add(b.prog.program, b.put(w, 1))
    dest = b.prog.alloc(MEM, 2, 3, 4)
    b._add(b.prog.mvm, b.put(x, 1), dest)
    program, want_mem, _ = expected(b)
    mem = bytearray(b.mem)
    run_rtl(make_tile(EXACT, 32), mem, program, seed=3)
    assert bytes(mem) == want_mem
    got = np.frombuffer(bytes(mem[dest.addr:dest.addr + 2 * dest.stride * 4]),
                        "<i4").reshape(2, dest.stride)[:, :3]
    assert (got == x @ w.T).all()


# -- error answers -----------------------------------------------------------------------------


def test_mvm_acc_without_rows_is_illegal():
    rng = np.random.default_rng(9)
    desc = describe(EXACT, 32)
    b = Builder(desc, rng)
    x = b.put(rng.integers(-8, 8, (2, 4)), 1)
    b._add(b.prog.mvm, x, None, acc=True)  # nothing held
    b._add(b.prog.mvm, x, None)  # now 2 rows
    b._add(b.prog.mvm, b.put(rng.integers(-8, 8, (1, 4)), 1), None, acc=True)  # 1 != 2
    b._add(b.prog.mvm, x, b.prog.alloc(MEM, 2, 4, 4), acc=True)  # fine
    program, want_mem, want_flags = expected(b)
    assert [p[2] for p in program] == [AccelError.ILLEGAL, 0, AccelError.ILLEGAL, ("ack", 0)]
    assert want_flags == PIM_DIMS
    mem = bytearray(b.mem)
    net, flags = run_rtl(make_tile(EXACT, 32), mem, program)
    assert bytes(mem) == want_mem and flags == PIM_DIMS
    assert len(net.reqs) == 2  # the refused ones sent no REQ


def test_unknown_instructions_are_illegal():
    words = [pack(INSTR_HEAD, code=5, cls=TileKind.PIM, tile=PIM, id=0x55),
             pack(INSTR_HEAD, code=31, cls=TileKind.PIM, tile=PIM, id=0x56),
             encode_instr(TileKind.SA, "SCALE", PIM, 0x57, lane=0, e=0, m=0)]
    program = [([words[0]], 0x55, AccelError.ILLEGAL), ([words[1]], 0x56, AccelError.ILLEGAL),
               (words[2], 0x57, AccelError.ILLEGAL)]  # another class's opcode
    mem = bytearray(MEM_BYTES)
    net, flags = run_rtl(make_tile(EXACT, 32), mem, program)
    assert not net.reqs and not net.writes and flags == 0


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize("given, name", [
    ({"flit_width": 48}, "flit_width"),
    ({"index": CONTROL}, "index"),
    ({"cols": 8, "max_packet": 1}, "max_packet"),
    ({"adc_share": 7}, "adc_share"),
    ({"cell_bits": 3}, "cell_bits"),
    ({"rows": 10}, "rows"),
    ({"max_m": 0}, "max_m"),
    ({"adc_max": 1000}, "adc_max"),
])
def test_parameter_refusals_name_the_parameter(given, name):
    args = {"index": PIM, "control": CONTROL, "flit_width": 32, "max_packet": 8, **EXACT,
            **given}
    with pytest.raises(ParamError, match=name):
        PimNetTile(**args)


def test_unit_errors():
    """A refused weight (kept cells) and wrapped inputs answer UNIT; a rescaled sum past 32
    bits is written wrapped, and the last packet's ``unit`` bit makes the memory's DONE say
    UNIT (the flag shows on ``flags`` too)."""
    rng = np.random.default_rng(21)
    desc = describe(LOSSY, 64)
    b = Builder(desc, rng)
    w = rng.integers(-31, 32, (4, 16))
    b._add(b.prog.program, b.put(w, 1), fault_rate=3000, fault_seed=77)
    w[1, 3], w[2, 0], w[0, 15] = 32, -128, 127
    b._add(b.prog.program, b.put(w, 1), fault_rate=5000, fault_seed=78)
    x = rng.integers(-2048, 2048, (3, 16))
    x[1, 2] = 3000
    b._add(b.prog.mvm, b.put(x, 2), None)
    b._add(b.prog.adc, gain=1, sigma=60000, noise_seed=5)
    x[1, 2] = -2048
    x2 = b.put(x, 2)
    b._add(b.prog.mvm, x2, None, acc=True)
    b._add(b.prog.mvm, x2, None, acc=True)
    b._add(b.prog.mvm, x2, b.prog.alloc(MEM, 3, 4, 4), acc=True)
    program, want_mem, want_flags = expected(b)
    assert [p[2] for p in program] == [0, AccelError.UNIT, AccelError.UNIT, 0, 0, 0,
                                       ("ack", AccelError.UNIT)]
    interp = Interpreter(desc, {MEM: bytes(b.mem)})
    interp.execute(b.prog.words)
    assert any("outside 32 bits" in msg for _, _, msg in interp.errors)
    mem = bytearray(b.mem)
    _, flags = run_rtl(make_tile(LOSSY, 64), mem, program, seed=4)
    assert bytes(mem) == want_mem and flags == want_flags == PIM_RANGE


def test_parameters_follow_the_contract():
    names = [q.name for q in PimNetTile.PARAMS]
    assert names[:4] == ["index", "control", "flit_width", "max_packet"]
    assert names[4:] == [q.name for q in PIM_PARAMS] + ["max_m"]
    tile = inspect_only(make_tile(LOSSY, 64))
    assert tile.acc_bits >= tile.unit.acc_width + 16


@pytest.mark.parametrize("params, flit_width", [(EXACT, 32), (LOSSY, 64)],
                         ids=["exact-w32", "lossy-w64"])
def test_verilog_lints_clean(tmp_path, params, flit_width):
    try:
        verilator_root()
    except ToolError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "pim_tile.v"
    path.write_text(verilog.convert(make_tile(params, flit_width), name="pim_tile"))
    result = verilator_lint(path, "pim_tile")
    assert result.ok, result.log

"""cocotb testbench: the whole accelerator, driven through its host port by the host driver,
against the golden program interpreter (:mod:`heterotron.sim.golden.accel`).

The transport is the simulated host link: bytes go into ``rx`` with random gaps, ``tx`` is
drained under random back-pressure. Programs are random GEMM chains, moves and barriers
(:func:`~heterotron.sim.golden.accel.random_program`); every tensor a program writes is read
back over the host port and compared byte for byte with the interpreter's memory, then the
whole used part of every scratchpad (nothing written where it should not be). Bad programs
and bad frames must get their status and leave the accelerator working.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract import accel, hostlink
from heterotron.hdl.contract.accel import AccelError, TileKind
from heterotron.hdl.contract.hostlink import Op, Status
from heterotron.hdl.contract.params import ParamError
from heterotron.sim.golden import accel as golden
from heterotron.sim.host.driver import Device, FrameReader
from heterotron.tb import env
from heterotron.tb.common import ClockedBench, StreamSink, StreamSource, make_rng
from heterotron.tb.harness import HarnessTransport

#: Cycles the driver waits for an answer before it calls the device dead.
ANSWER_CYCLES = 200_000
#: Status polls (each a register read, some 50 cycles) before a program counts as hung.
WAIT_POLLS = 4000


class TileStalls:
    """Random back-pressure on every tile: each cycle, bit ``i`` of the DUT's ``stall``
    input holds tile ``i``'s network inputs with probability :attr:`p`."""

    def __init__(self, dut, rng: np.random.Generator, tiles: int):
        self.dut, self.rng, self.tiles, self.p = dut, rng, tiles, 0.0
        dut.stall.value = 0

    def sample(self) -> None:
        pass

    def drive(self) -> None:
        bits = self.rng.random(self.tiles) < self.p if self.p else ()
        self.dut.stall.value = sum(1 << i for i, b in enumerate(bits) if b)


class SimTransport:
    """The host link in simulation: :class:`~heterotron.sim.host.driver.Transport` over the
    DUT's ``rx``/``tx`` byte streams; time is counted in clock cycles."""

    def __init__(self, dut, rng: np.random.Generator, tiles: int):
        self.dut = dut
        self.received = bytearray()
        self.source = StreamSource(dut, "rx", rng)
        self.sink = StreamSink(dut, "tx", rng, on_beat=lambda b: self.received.append(b))
        self.tiles = TileStalls(dut, rng, tiles)
        self.bench = ClockedBench(dut, [self.source, self.sink, self.tiles])

    def set_stalls(self, gap: float, stall: float, tile_stall: float) -> None:
        """Host-link gaps and back-pressure, and every tile's back-pressure (none at all
        when the runner switched stalls off)."""
        self.bench.set_stalls(gap, stall)
        self.tiles.p = tile_stall if env.stalls_from_env() else 0.0

    async def send(self, data: bytes) -> None:
        self.source.send(data)

    async def receive(self, timeout: float) -> bytes:
        for _ in range(int(timeout)):
            if self.received:
                break
            await RisingEdge(self.dut.clk)
        out = bytes(self.received)
        self.received.clear()
        return out

    async def drain(self) -> None:
        """Wait until every byte sent has gone into the DUT."""
        while not self.source.idle:
            await RisingEdge(self.dut.clk)


def description():
    return describe(env.params_from_env({}))


async def start(dut, salt: int):
    """Reset the DUT and put the host driver on its link: the accelerator's own ports
    driven byte by byte (:class:`SimTransport`), or the simulation harness's
    (:class:`~heterotron.tb.harness.HarnessTransport`) when the DUT is the harness."""
    desc = description()
    rng = make_rng(salt)
    if hasattr(dut, "push__valid"):  # hdl/simtop.py's SimAccelerator
        link = HarnessTransport(dut, int(rng.integers(1 << 32)))
        await link.start()
    else:
        link = SimTransport(dut, rng, len(desc.tiles))
        await link.bench.start()
    dev = Device(link, accel.sidecar(desc), timeout=ANSWER_CYCLES)
    return desc, rng, link, dev


def used_extent(allocated: dict[int, int], writes) -> dict[int, int]:
    """Bytes of each scratchpad a program uses, from address 0: what its builder allocated
    and every byte it wrote, rounded up to 4 (the host link moves whole words). Only this
    part is loaded and compared: the rest is never read."""
    out = dict(allocated)
    for w in writes:
        out[w.mem] = max(out.get(w.mem, 0), w.region.end)
    return {t: -(-n // 4) * 4 for t, n in out.items()}


async def load_images(dev: Device, memories: dict[int, bytes], extent: dict[int, int]):
    for t, img in memories.items():
        if extent.get(t):
            await dev.write_mem(dev.address(t), bytes(img[:extent[t]]))


class Golden:
    """The interpreter beside the RTL, its state (loaded operands, scale tables) carried from
    program to program as the tiles carry theirs; each program starts from new scratchpad
    contents in the part it uses and with nothing in flight."""

    def __init__(self, desc):
        self.interp = golden.Interpreter(desc)

    def run(self, memories: dict[int, bytes], words, allocated: dict[int, int]):
        # What the program will touch: its allocations (its writes stay inside them).
        self.interp.new_program({t: memories[t][:n] for t, n in allocated.items()})
        self.interp.execute(words)
        return self.interp.result()


async def check_against_golden(dut, dev: Device, model: Golden, memories, words, allocated,
                               what: str):
    """Run ``words`` on the RTL and on the interpreter; compare every written tensor, the
    used part of every scratchpad, the error flags and the retired count."""
    result = model.run(memories, words, allocated)
    extent = used_extent(allocated, result.writes)
    await load_images(dev, memories, extent)
    before = await dev.read_reg(dev.registers["retired"])
    await dev.write_program(words)
    st = await dev.wait_idle(polls=WAIT_POLLS)
    assert st["retired"] - before == result.retired, (
        f"{what}: retired {st['retired'] - before}, golden {result.retired}")
    assert st["error"] == int(result.error), (
        f"{what}: ERROR {AccelError(st['error'])!r}, golden {result.error!r}")
    # The used part of every scratchpad, read back once; each written tensor is judged in
    # it first, so a mismatch names its instruction, then the whole part (nothing written
    # where it should not be).
    rtl = {t: await dev.read_mem(dev.address(t), n) for t, n in extent.items() if n}
    for w in result.writes:
        r = w.region
        row_bytes = -(-r.cols * r.ebytes // 4) * 4
        for row in range(r.rows):
            start = r.addr + row * r.stride * r.ebytes
            got = rtl[w.mem][start:start + row_bytes]
            want = result.memories[w.mem][start:start + row_bytes]
            assert got[:r.cols * r.ebytes] == want[:r.cols * r.ebytes], (
                f"{what}: instruction {w.id} on tile {w.tile}: row {row} of its result in "
                f"memory tile {w.mem} differs:\n  rtl    {got.hex()}\n  golden {want.hex()}")
    for t, got in rtl.items():
        assert got == result.memories[t][:len(got)], f"{what}: memory tile {t} differs"
    assert int(dut.watchdog.value) == 0, f"{what}: watchdog"
    return result


@cocotb.test()
async def test_identity_and_registers(dut):
    """PING answers the sidecar's identity; the fixed registers read back their values; an
    unknown register is a bus error."""
    desc, rng, link, dev = await start(dut, 1)
    ident = await dev.ping()
    assert ident["word_bytes"] == desc.word_bytes
    assert await dev.read_reg(accel.Reg.ID) == accel.MAGIC
    assert await dev.read_reg(accel.Reg.VERSION) == accel.VERSION
    assert await dev.read_reg(accel.Reg.CONFIG_HASH) == desc.config_hash
    status, _ = await dev.command(Op.READ_REG, (0x0FF).to_bytes(2, "little"), check=False)
    assert status == Status.BUS_ERROR
    # Memory round trip at the start and the end of every window.
    for t in desc.of_kind(TileKind.MEMORY):
        size = t.params["kbytes"] * 1024
        for off in (0, size - 64):
            data = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
            await dev.write_mem(dev.address(t.index, off), data)
            assert await dev.read_mem(dev.address(t.index, off), 64) == data
        status, _ = await dev.command(Op.READ_MEM, (dev.address(t.index, size)).to_bytes(
            4, "little") + (4).to_bytes(2, "little"), check=False)
        assert status == Status.BUS_ERROR


@cocotb.test()
async def test_random_programs(dut):
    """Random GEMM chains (transposes, bias, requantisation), moves and barriers on every SA
    tile, under random gaps and back-pressure on the host link and on every tile's network
    inputs, in three phases (some, none, heavy): every tensor bit-exact."""
    desc, rng, link, dev = await start(dut, 2)
    model = Golden(desc)
    for k in range(env.vectors_from_env(3)):
        link.set_stalls(*[(0.3, 0.3, 0.3), (0.0, 0.0, 0.0), (0.7, 0.7, 0.6)][k % 3])
        prog, memories = golden.random_program(desc, rng, n_ops=6)
        await check_against_golden(dut, dev, model, memories, prog.words, prog.allocated(),
                                   f"program {k}")


@cocotb.test()
async def test_bad_programs(dut):
    """An illegal instruction and a region past the scratchpad get their error flag, retire,
    and leave the accelerator working: the same random program then runs bit-exact."""
    desc, rng, link, dev = await start(dut, 3)
    link.set_stalls(0.3, 0.3, 0.3)
    prog, memories = golden.random_program(desc, rng, n_ops=4)
    sa = desc.of_kind(TileKind.SA)[0]
    mem = desc.of_kind(TileKind.MEMORY)[0]
    size = mem.params["kbytes"] * 1024
    bad = golden.Program(desc)
    bad.raw([accel.pack(accel.INSTR_HEAD, cls=7, code=3, tile=0, id=900)])  # no such opcode
    bad.load(sa.index, accel.Port.A, golden.Region(mem.index, size - 4, 4, 4, 4, 1))
    bad.nop()
    model = Golden(desc)
    result = await check_against_golden(dut, dev, model, memories, bad.words + prog.words,
                                        prog.allocated(), "bad then good")
    assert result.error == AccelError.ILLEGAL | AccelError.ADDRESS
    await dev.clear_errors()
    assert await dev.read_reg(accel.Reg.ERROR) == 0
    prog, memories = golden.random_program(desc, rng, n_ops=4)
    await check_against_golden(dut, dev, model, memories, prog.words, prog.allocated(),
                               "after the errors")


@cocotb.test()
async def test_bad_frames(dut):
    """A frame with a bad CRC, a frame cut short, a frame that stops mid-way: each gets its
    status, nothing is executed, and the link works afterwards."""
    desc, rng, link, dev = await start(dut, 4)
    frame = bytearray(hostlink.command_frame(Op.PING, 7))
    frame[1] ^= 0x40  # corrupt the sequence byte: the CRC no longer matches
    await link.send(hostlink.stuff(bytes(frame)))
    status, seq, _ = await _one_answer(link)
    assert status == Status.BAD_CRC
    # Cut short: the tail lost, the next FLAG ends it.
    await link.send(hostlink.stuff(hostlink.command_frame(Op.PING, 8))[:-3] + b"\x7e")
    status, _, _ = await _one_answer(link)
    assert status == Status.BAD_CRC
    # A frame that stops: TIMEOUT after the port's timeout.
    await link.send(hostlink.stuff(hostlink.command_frame(Op.PING, 9))[:4])
    status, _, _ = await _one_answer(link, cycles=desc.control.params["host_timeout"] * 2)
    assert status == Status.TIMEOUT
    await dev.resync()
    ident = await dev.ping()
    assert ident["config_hash"] == desc.config_hash
    # Nothing of the bad frames reached the program or the memories.
    assert await dev.read_reg(accel.Reg.RETIRED) == 0
    assert await dev.read_reg(accel.Reg.ERROR) == 0


def _has(kind: TileKind) -> bool:
    try:
        return bool(description().of_kind(kind))
    except ParamError:  # no description in the environment (an import outside the runner)
        return False


def pim_program(desc, rng: np.random.Generator):
    """One matmul on each PiM tile: random weights (a few refused) and inputs, an ADC
    setting, the K blocks summed in the accumulator, the rescaled sums written back."""
    prog = golden.Program(desc)
    mem = desc.of_kind(TileKind.MEMORY)[0]
    memories = {t.index: bytearray(t.params["kbytes"] * 1024)
                for t in desc.of_kind(TileKind.MEMORY)}
    for pim in desc.of_kind(TileKind.PIM):
        p = pim.params
        rows, cols = p["rows"], p["cols"]
        K = int(rng.integers(1, 3 * rows + 1))
        N = int(rng.integers(1, cols + 1))
        M = int(rng.integers(1, p["max_m"] + 1))
        lim = (1 << (p["weight_bits"] - 1)) - 1
        w = rng.integers(-lim, lim + 1, (N, K))
        if rng.random() < 0.5:
            w[0, 0] = -lim - 1  # refused: the cell keeps what it held (UNIT)
        xlim = 1 << (p["input_bits"] - 1)
        x = rng.integers(-xlim, xlim, (M, K))
        if rng.random() < 0.5 and accel.elem_bytes(p["input_bits"]) * 8 > p["input_bits"]:
            x[-1, -1] = xlim + 5  # wrapped, in the last K block: the memory's DONE says UNIT
        wr = prog.alloc(mem, N, K, accel.elem_bytes(p["weight_bits"]))
        xr = prog.alloc(mem, M, K, accel.elem_bytes(p["input_bits"]))
        out = prog.alloc(mem, M, N, 4)
        golden.write_tensor(memories[mem.index], wr, w)
        golden.write_tensor(memories[mem.index], xr, x)
        if p["adc_range"] == "calibrated":
            prog.adc(pim, int(rng.integers(1 << 11, 1 << 13)), int(rng.integers(-99, 99)))
        kb = -(-K // rows)
        for i in range(kb):
            k0, kk = i * rows, min(rows, K - i * rows)
            prog.program(pim, golden.Region(mem.index, wr.addr + k0 * wr.ebytes, N, kk,
                                            wr.stride, wr.ebytes))
            prog.mvm(pim, golden.Region(mem.index, xr.addr + k0 * xr.ebytes, M, kk,
                                        xr.stride, xr.ebytes),
                     out if i == kb - 1 else None, acc=i > 0)
    return prog, {k: bytes(v) for k, v in memories.items()}


@cocotb.test(skip=not _has(TileKind.PIM))
async def test_pim_programs(dut):
    """Matmuls on every PiM tile through the network: ADC settings, crossbar blocks written
    from the scratchpad (a refused weight now and then), K blocks summed, rescaled sums
    written back; under random gaps and back-pressure, every tensor equal to the
    interpreter's."""
    desc, rng, link, dev = await start(dut, 6)
    model = Golden(desc)
    for k in range(env.vectors_from_env(2)):
        link.set_stalls(*[(0.3, 0.3, 0.3), (0.0, 0.0, 0.0)][k % 2])
        prog, memories = pim_program(desc, rng)
        await dev.clear_errors()
        await check_against_golden(dut, dev, model, memories, prog.words, prog.allocated(),
                                   f"PiM program {k}")


async def _one_answer(link: SimTransport, cycles: int = ANSWER_CYCLES):
    reader = FrameReader()
    for _ in range(8):
        frames = reader.feed(await link.receive(cycles))
        if frames:
            assert len(frames) == 1, frames
            return hostlink.parse_frame(frames[0])
    raise AssertionError("no answer")


@cocotb.test(skip=not env.benching())
async def test_bench(dut):
    """``heterotron bench accelerator``: one GEMM of the runner's size (``M = K = N``) on the
    first SA tile, operands moved from the first memory tile and the result written back,
    no stalls; the cycles from the program reaching the queue to the accelerator going
    idle, each tile's counters, and the result checked against the interpreter."""
    import json

    desc, rng, link, dev = await start(dut, 5)
    link.set_stalls(0.0, 0.0, 0.0)
    cfg = env.bench_config()
    size = int(cfg["size"])
    trans_a = bool(cfg.get("trans_a", True))
    sa = desc.of_kind(TileKind.SA)[0]
    mem = desc.of_kind(TileKind.MEMORY)[0].index
    p = sa.params
    prog = golden.Program(desc)
    a = rng.integers(-128, 128, (size, size))
    b = rng.integers(-128, 128, (size, size))
    memories = {mem: bytearray(desc.of_kind(TileKind.MEMORY)[0].params["kbytes"] * 1024)}
    stored_a = a.T if trans_a else a  # A^T rows put M along the engine's lanes
    ra = prog.alloc(mem, size, size, accel.elem_bytes(p["a_width"]))
    rb = prog.alloc(mem, size, size, accel.elem_bytes(p["b_width"]))
    out_bytes = accel.elem_bytes(p["out_width"] if p["requant"] else p["acc_width"])
    rc = prog.alloc(mem, size, size, out_bytes)
    golden.write_tensor(memories[mem], ra, stored_a)
    golden.write_tensor(memories[mem], rb, b)
    prog.load(sa.index, accel.Port.A, ra, trans=trans_a)
    prog.load(sa.index, accel.Port.B, rb)
    prog.run(sa.index, rc)
    memories = {k: bytes(v) for k, v in memories.items()}
    result = golden.run_program(desc, memories, prog.words)
    extent = used_extent(prog.allocated(), result.writes)
    await load_images(dev, memories, extent)
    busy = {"cycles": 0}

    async def count():
        while True:
            await RisingEdge(dut.clk)
            if int(dut.running.value):
                busy["cycles"] += 1
    task = cocotb.start_soon(count())
    await dev.write_program(prog.words)
    await dev.wait_idle(polls=100 * WAIT_POLLS)
    task.cancel()
    got = await dev.read_mem(dev.address(mem, rc.addr), size * size * out_bytes)
    want = result.memories[mem][rc.addr:rc.addr + size * size * out_bytes]
    assert got == want, "bench GEMM result differs from the interpreter"
    counters = await dev.counters()
    cycles = busy["cycles"]
    row = {"m": size, "k": size, "n": size, "rows": p["rows"], "cols": p["cols"],
           "dataflow": p["dataflow"], "trans_a": trans_a, "flit_width": desc.params[
               "flit_width"], "cycles": cycles,
           "ideal_cycles": size ** 3 // (p["rows"] * p["cols"]),
           "tiles": [{"tile": c["tile"], "kind": c["kind"], "busy": c["busy"],
                      "stalled": c["stalled"], "items": c["items"],
                      "utilisation": round(c["busy"] / cycles, 4) if cycles else 0.0}
                     for c in counters]}
    dut._log.info("bench %s", json.dumps(row))
    out_path = env.bench_out()
    if out_path:
        with open(out_path, "a") as f:
            f.write(json.dumps(row) + "\n")

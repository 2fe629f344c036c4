"""cocotb testbench: the board's core (:class:`heterotron.hdl.board.BoardCore`, the accelerator
behind its UART) driven through its UART pins by a line model, with the host driver on top.

The line model (:class:`UartLink`) is a :class:`~heterotron.sim.host.driver.Transport`: it
drives ``uart_rx`` a bit time per wake-up, from the line format of
:mod:`heterotron.hdl.contract.uart` (and can corrupt a character: a flipped bit, a low stop
bit, glitches), and reads ``uart_tx`` as an ideal receiver, checking each stop bit. Tests:
ping, scratchpad write and read-back, a GEMM program against the golden interpreter, then the
same link through corrupted bytes (bad CRC: error status, resynchronisation), glitches, a
framing error, a frame cut short (the host port's timeout) and back-to-back frames.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge, Timer

from heterotron.hdl.accelerator import describe
from heterotron.hdl.board import LEDS
from heterotron.hdl.contract import accel, hostlink
from heterotron.hdl.contract.hostlink import Op, Status
from heterotron.hdl.contract.uart import DATA_BITS, IDLE, START, STOP, char_bits
from heterotron.sim.golden.jobs import compare, gemm_job
from heterotron.sim.host.driver import Device, FrameReader, HostError
from heterotron.tb import env
from heterotron.tb.common import CLOCK_NS, cycles, make_rng

#: Cycles the driver waits for an answer.
ANSWER_CYCLES = 400_000



class UartLink:
    """The host's end of the board's serial line; time in clock cycles.

    ``send`` queues characters; a task puts them on ``uart_rx`` back to back, a level a bit
    time. ``corrupt`` changes the next characters sent: each entry is a function from the
    character's ten ``(level, cycles)`` segments to the segments to send instead."""

    time_unit = "cycles"  # what receive()'s timeout counts

    def __init__(self, dut, divisor: int):
        self.dut, self.div = dut, divisor
        self._queue: list[list[tuple[int, int]]] = []
        self._wake = Event()
        self._in = bytearray()
        self._flags = 0
        self.tx_framing = 0   # characters from the board with a low stop bit (must stay 0)
        self.corrupt: list = []

    async def start(self) -> None:
        dut = self.dut
        dut.uart_rx.value = IDLE
        Clock(dut.clk, CLOCK_NS, unit="ns").start(start_high=False)
        dut.rst.value = 1
        await cycles(8)
        dut.rst.value = 0
        await cycles(2)
        cocotb.start_soon(self._drive())
        cocotb.start_soon(self._listen())

    def char(self, byte: int) -> list[tuple[int, int]]:
        return [(level, self.div) for level in char_bits(byte)]

    async def _drive(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                await Timer(1, "ns")  # out of whatever phase the sender was in
                continue
            for level, n in self._queue.pop(0):
                self.dut.uart_rx.value = level
                await cycles(n)
            self.dut.uart_rx.value = IDLE

    async def _listen(self) -> None:
        """An ideal receiver on ``uart_tx``: each bit sampled in its middle."""
        dut, div = self.dut, self.div
        while True:
            await FallingEdge(dut.uart_tx)
            await cycles(div // 2)
            assert int(dut.uart_tx.value) == START, "a glitch on the board's uart_tx"
            byte = 0
            for i in range(DATA_BITS):
                await cycles(div)
                byte |= int(dut.uart_tx.value) << i
            await cycles(div)
            if int(dut.uart_tx.value) != STOP:
                self.tx_framing += 1
                continue
            self._in.append(byte)
            self._flags += byte == hostlink.FLAG

    def busy(self) -> bool:
        return bool(self._queue)

    # -- Transport ---------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        for byte in data:
            segments = self.char(byte)
            if self.corrupt:
                segments = self.corrupt.pop(0)(segments)
            self._queue.append(segments)
        self._wake.set()

    async def receive(self, timeout: float) -> bytes:
        """Bytes from the board: waits up to ``timeout`` cycles for an answer to end."""
        waited = 0
        while waited < timeout:
            if self._in and self._in[-1] == hostlink.FLAG and self._flags % 2 == 0 \
                    and not self.busy():
                break
            await cycles(self.div)
            waited += self.div
        out = bytes(self._in)
        self._in.clear()
        return out

    async def rest(self, bits: int) -> None:
        """Let the line rest (after what is queued) for ``bits`` bit times."""
        while self.busy():
            await cycles(self.div)
        await cycles(bits * self.div)


def led(dut, name: str) -> int:
    return (int(dut.leds.value) >> LEDS.index(name)) & 1


async def start(dut, salt: int):
    params = env.params_from_env({})
    desc = describe(params["description"])
    link = UartLink(dut, params["divisor"])
    await link.start()
    dev = Device(link, accel.sidecar(desc), timeout=ANSWER_CYCLES, retries=0)
    return desc, params, make_rng(salt), link, dev


@cocotb.test()
async def test_ping_memory_and_leds(dut):
    """Identity, a random image written and read back through the UART, the heartbeat."""
    desc, params, rng, link, dev = await start(dut, 1)
    # The heartbeat toggles every `heartbeat` cycles.
    hb = params["heartbeat"]
    seen = []
    for _ in range(4 * hb + 2):
        await RisingEdge(dut.clk)
        await ReadOnly()
        seen.append(led(dut, "heartbeat"))
    flips = [i for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
    gaps = {flips[i + 1] - flips[i] for i in range(len(flips) - 1)}
    assert len(flips) >= 3 and gaps == {hb}, flips
    await RisingEdge(dut.clk)
    ident = await dev.ping()
    assert ident["config_hash"] == desc.config_hash
    mem = desc.of_kind(accel.TileKind.MEMORY)[0]
    data = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
    data = data[:len(data) // 4 * 4]
    addr = dev.address(mem.index, 256)
    await dev.write_mem(addr, data)
    assert await dev.read_mem(addr, len(data)) == data
    for name in ("error", "host", "line_error", "watchdog", "misrouted"):
        assert led(dut, name) == 0, name
    assert link.tx_framing == 0


@cocotb.test()
async def test_gemm_program(dut):
    """A random GEMM program: operands written, the program queued, the result read back and
    compared with the golden interpreter, byte for byte."""
    desc, params, rng, link, dev = await start(dut, 2)
    await dev.ping()
    job = gemm_job(desc, 8, 16, 8, seed=int(rng.integers(1 << 16)))
    addr = dev.address(job.mem)
    await dev.write_mem(addr, job.image)
    before = await dev.status()
    await dev.write_program(job.words)
    after = await dev.wait_idle(polls=2000)
    got = await dev.read_mem(addr, len(job.image))
    assert compare(job, got) == []
    assert after["error"] == int(job.result.error) == 0
    assert after["retired"] - before["retired"] == job.result.retired
    assert led(dut, "error") == 0 and link.tx_framing == 0


def _flip(bit: int):
    """A character with data bit ``bit`` inverted (the UART delivers a wrong byte)."""
    def change(segments):
        out = list(segments)
        level, cycles = out[1 + bit]
        out[1 + bit] = (level ^ 1, cycles)
        return out
    return change


def _glitch(div: int):
    """A pulse a quarter bit long, minus a cycle, in the middle of data bit 3 (filtered)."""
    def change(segments):
        out = list(segments)
        level, cycles = out[4]
        width = max(1, div // 4 - 1)
        a = (cycles - width) // 2
        out[4:5] = [(level, a), (level ^ 1, width), (level, cycles - a - width)]
        return out
    return change


def _low_stop(segments):
    """A character whose stop bit is low (a framing error)."""
    return segments[:-1] + [(0, segments[-1][1])]


@cocotb.test()
async def test_corrupted_bytes_glitches_and_framing(dut):
    desc, params, rng, link, dev = await start(dut, 3)
    div = params["divisor"]
    await dev.ping()

    # A byte of a PING frame corrupted on the line: the port answers BAD_CRC, does nothing.
    frame_len = len(hostlink.stuff(hostlink.command_frame(Op.PING, 1, b"")))
    link.corrupt = [lambda s: s] * 3 + [_flip(int(rng.integers(8)))]
    status, _ = await dev.command(Op.PING, check=False)
    assert status == Status.BAD_CRC, Status(status).name
    assert frame_len > 4 and led(dut, "host") == 1
    assert (await dev.ping())["config_hash"] == desc.config_hash  # back in step

    # Glitches in every character of a command: filtered, the answer is right.
    assert led(dut, "line_error") == 0
    payload = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    mem = desc.of_kind(accel.TileKind.MEMORY)[0]
    addr = dev.address(mem.index, 1024)
    link.corrupt = [_glitch(div)] * 200
    await dev.write_mem(addr, payload)
    link.corrupt = []
    assert await dev.read_mem(addr, len(payload)) == payload
    assert led(dut, "line_error") == 1  # NOISE: the samples of a bit disagreed

    # A framing error inside a frame: no OK answer for it; after a rest and a
    # resynchronisation the link works again.
    link.corrupt = [lambda s: s] * 5 + [_low_stop]
    try:
        status, _ = await dev.command(Op.READ_REG, bytes([accel.Reg.ID, 0]), check=False)
    except HostError:
        status = None
    assert status != Status.OK
    link.corrupt = []
    await link.rest(2 * 10)
    await dev.resync()
    assert await dev.read_reg(accel.Reg.ID) == accel.MAGIC
    assert link.tx_framing == 0


@cocotb.test()
async def test_frame_cut_short(dut):
    """Half a frame, then silence: the host port answers TIMEOUT with the frame's seq after
    ``host_timeout`` cycles, and the next frame is served."""
    desc, params, rng, link, dev = await start(dut, 4)
    await dev.ping()
    wire = hostlink.stuff(hostlink.command_frame(Op.READ_REG, 77, bytes([accel.Reg.ID, 0])))
    await link.send(wire[:len(wire) // 2])
    got = FrameReader().feed(await link.receive(ANSWER_CYCLES))
    assert len(got) == 1
    status, seq, payload = hostlink.parse_frame(got[0])
    assert (status, seq, payload) == (Status.TIMEOUT, 77, b"")
    assert await dev.read_reg(accel.Reg.ID) == accel.MAGIC


@cocotb.test()
async def test_back_to_back_frames(dut):
    """Five commands sent without waiting: five answers, in order, each right."""
    desc, params, rng, link, dev = await start(dut, 5)
    mem = desc.of_kind(accel.TileKind.MEMORY)[0]
    addr = dev.address(mem.index, 512)
    data = rng.integers(0, 256, 128, dtype=np.uint8).tobytes()
    import struct
    frames = [(Op.PING, b""), (Op.READ_REG, struct.pack("<H", accel.Reg.ID)),
              (Op.WRITE_MEM, struct.pack("<I", addr) + data),
              (Op.READ_MEM, struct.pack("<IH", addr, len(data))),
              (Op.READ_REG, struct.pack("<H", accel.Reg.VERSION))]
    wire = b"".join(hostlink.stuff(hostlink.command_frame(op, 100 + i, p))
                    for i, (op, p) in enumerate(frames))
    await link.send(wire)
    answers = []
    reader = FrameReader()
    for _ in range(len(frames) * 4):
        answers += reader.feed(await link.receive(ANSWER_CYCLES))
        if len(answers) == len(frames):
            break
    parsed = [hostlink.parse_frame(f) for f in answers]
    assert [(s, q) for s, q, _ in parsed] == [(Status.OK, 100 + i) for i in range(len(frames))]
    assert parsed[1][2] == struct.pack("<I", accel.MAGIC)
    assert parsed[3][2] == data
    assert parsed[4][2] == struct.pack("<I", accel.VERSION)
    assert link.tx_framing == 0

"""UartRx and UartTx in Amaranth's simulator against the line model
(:mod:`heterotron.sim.golden.uart`): clean lines at several divisors and baud mismatches,
glitches, framing errors and breaks, resynchronisation, overrun, a loopback; parameter
refusals; Verilator and Yosys lint."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring

from heterotron.hdl.contract.params import ParamError
from heterotron.hdl.contract.uart import (
    CHAR_BITS,
    IDLE,
    START,
    UartConfigError,
    char_bits,
    divisor_for,
)
from heterotron.hdl.uart import UartError, UartRx, UartTx
from heterotron.sim.flows.lint import verilator_lint, yosys_check
from heterotron.sim.golden.uart import decode, encode
from heterotron.tb.amaranth_sim import simulate


def receive(divisor: int, levels: list[int], *, ready=None) -> tuple[bytes, int]:
    """Drive ``levels`` (a cycle each) into a UartRx; return the bytes it gave and its
    error flags. ``ready(cycle)`` is ``o.ready`` (default always high)."""
    dut = UartRx(divisor=divisor)
    got = bytearray()
    flags = []

    async def line(ctx):
        for level in levels + [IDLE] * (2 * CHAR_BITS * divisor):
            ctx.set(dut.rx, level)
            await ctx.tick()
        flags.append(ctx.get(dut.error))

    async def sink(ctx):
        cycle = 0
        while True:
            r = 1 if ready is None else ready(cycle)
            ctx.set(dut.o.ready, r)
            _, _, valid, byte = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and r:
                got.append(byte)
            cycle += 1

    sim_cycles = len(levels) + 2 * CHAR_BITS * divisor + 4
    simulate(dut, line, sink, cycles=sim_cycles)
    return bytes(got), flags[0] if flags else None


def transmit(divisor: int, data: bytes, rng=None, gap: float = 0.0) -> list[int]:
    """Offer ``data`` to a UartTx (random gaps between bytes) and record its line."""
    dut = UartTx(divisor=divisor)
    levels = []
    done = []

    async def source(ctx):
        for b in data:
            while rng is not None and gap and rng.random() < gap:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        done.append(True)

    async def probe(ctx):
        while True:
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    simulate(dut, source, probe, cycles=(len(data) + 2) * CHAR_BITS * divisor * 4)
    assert done
    return levels


@pytest.mark.parametrize("divisor", [6, 7, 13, 50])
def test_clean_line_every_byte(divisor):
    data = bytes(range(256))
    rng = np.random.default_rng(divisor)
    levels = []
    for b in data:  # rests of 0 to 2 bit times between characters
        levels += encode([b], divisor, rest=int(rng.integers(0, 2 * divisor + 1)))
    got, err = receive(divisor, levels)
    assert got == data
    assert err == 0


@pytest.mark.parametrize("mismatch", [-0.02, 0.02])
def test_baud_mismatch_back_to_back(mismatch):
    """A sender 2% slow or fast, characters back to back with no rest at all."""
    divisor = 16
    data = np.random.default_rng(3).integers(0, 256, 200).astype(np.uint8).tobytes()
    got, err = receive(divisor, encode(data, divisor * (1 + mismatch)))
    assert got == data
    assert not err & UartError.FRAMING


def test_glitches_are_filtered():
    """Pulses shorter than a quarter bit, inside characters and at rest, change no byte; they
    are reported as NOISE."""
    divisor = 24
    q = divisor // 4
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 120).astype(np.uint8).tobytes()
    levels = []
    for b in data:
        char = encode([b], divisor)
        # one glitch in a random data bit, anywhere in it
        at = int(rng.integers(divisor, (CHAR_BITS - 1) * divisor - q))
        for t in range(at, at + int(rng.integers(1, q + 1))):
            char[t] ^= 1
        rest = [IDLE] * (3 * divisor)
        if rng.random() < 0.5:  # a low glitch at rest, a bit time before the next start
            for t in range(1, 1 + int(rng.integers(1, q + 1))):
                rest[t] = START
        levels += char + rest
    got, err = receive(divisor, levels)
    assert got == data
    assert err & UartError.NOISE and not err & UartError.FRAMING


def test_framing_error_drops_the_character_and_resynchronises():
    divisor = 8
    rng = np.random.default_rng(11)
    good = rng.integers(0, 256, 40).astype(np.uint8).tobytes()
    levels = encode(good[:20], divisor)
    levels += encode([0x55], divisor, stop=[0]) + [IDLE] * divisor  # low stop bit, a rest
    levels += encode(good[20:], divisor)
    got, err = receive(divisor, levels)
    assert got == good
    assert err & UartError.FRAMING


def test_break_then_characters():
    """A line held low for many characters (a break, a cable pulled) yields nothing; the
    characters after a rest are received."""
    divisor = 8
    data = b"\x7e\x01\x02\x7e"
    levels = [IDLE] * 5 + [START] * (25 * CHAR_BITS * divisor) + [IDLE] * (2 * divisor)
    levels += encode(data, divisor)
    got, err = receive(divisor, levels)
    assert got == data
    assert err & UartError.FRAMING


def test_joining_mid_character_resynchronises():
    """A receiver that wakes in the middle of a stream (here: at every cycle of a character
    in turn) is in step with the characters after a rest of a character time and a bit (a
    character it took for one, started inside the stream, has ended by then)."""
    divisor = 6
    stream = encode(b"\x00\xff\x33", divisor)  # what it may wake into
    tail = b"\x7e\xa5\x5a\x7e"
    for cut in range(1, len(stream), 5):
        rest = [IDLE] * ((CHAR_BITS + 1) * divisor)
        got, _ = receive(divisor, stream[cut:] + rest + encode(tail, divisor))
        assert got.endswith(tail), (cut, got)
        assert len(got) <= len(tail) + 3


def test_overrun_keeps_the_first_byte():
    divisor = 6
    levels = encode(b"\x11\x22\x33", divisor)
    # nothing taken until the third character has ended, then always
    got, err = receive(divisor, levels, ready=lambda c: int(c > len(levels) + 2 * divisor))
    assert got == b"\x11"
    assert err == UartError.OVERRUN


@pytest.mark.parametrize("divisor", [6, 11])
def test_transmitter_back_to_back_and_with_gaps(divisor):
    rng = np.random.default_rng(divisor)
    data = rng.integers(0, 256, 64).astype(np.uint8).tobytes()
    levels = transmit(divisor, data)
    assert decode(levels, divisor) == (data, 0)
    # back to back: the line from the first start bit is exactly the characters, no rest
    first = levels.index(START)
    assert levels[first:first + len(data) * CHAR_BITS * divisor] == encode(data, divisor)
    assert decode(transmit(divisor, data, rng, gap=0.3), divisor) == (data, 0)


def test_loopback():
    """Transmitter into receiver, a clock apart, random bytes with random gaps."""
    divisor = 9
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 100).astype(np.uint8).tobytes()
    m = Module()
    m.submodules.tx = tx = UartTx(divisor=divisor)
    m.submodules.rx = rx = UartRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = bytearray()

    async def source(ctx):
        for b in data:
            while rng.random() < 0.2:
                await ctx.tick()
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, b)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)

    async def sink(ctx):
        ctx.set(rx.o.ready, 1)
        while True:
            _, _, valid, byte = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(byte)

    simulate(m, source, sink, cycles=len(data) * CHAR_BITS * divisor * 2)
    assert bytes(got) == data


def test_receiver_latency():
    divisor = 10
    dut = UartRx(divisor=divisor)
    levels = encode([0xA5], divisor)
    seen = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for t, level in enumerate(levels + [IDLE] * divisor):
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.o.valid) and not seen:
                seen.append(t + 1)

    simulate(dut, tb)
    assert seen == [dut.latency]


def test_line_model_round_trip():
    assert char_bits(0x01) == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    data = bytes(range(0, 256, 7))
    assert decode(encode(data, 6, rest=3), 6) == (data, 0)
    assert decode(encode(b"\x00\x01", 6, rest=6, stop=[0, 1]), 6) == (b"\x01", 1)


@pytest.mark.parametrize("clk_hz, baud, divisor", [
    (50e6, 1_000_000, 50), (12e6, 1_000_000, 12), (25e6, 115200, 217), (48e6, 3_000_000, 16)])
def test_divisor_for(clk_hz, baud, divisor):
    assert divisor_for(clk_hz, baud) == divisor


@pytest.mark.parametrize("clk_hz, baud, message", [
    (12e6, 3_000_000, "needs 4.00 cycles a bit; the UART takes 6 to"),
    (25e6, 3_000_000, "8 cycles a bit make 3125000 baud, 4.2% off (at most 2%)"),
    (50e6, 100, "baud must be an integer of at least 300"),
])
def test_divisor_for_refuses(clk_hz, baud, message):
    with pytest.raises(UartConfigError, match=re.escape(message)):
        divisor_for(clk_hz, baud)


@pytest.mark.parametrize("cls", [UartRx, UartTx])
def test_bad_divisor_refused(cls):
    with pytest.raises(ParamError, match=re.escape("divisor must be an integer in [6, 1048576]")):
        cls(divisor=5)


@pytest.mark.parametrize("cls, divisor", [(UartRx, 6), (UartRx, 434), (UartTx, 6),
                                          (UartTx, 434)])
def test_lint_clean(tmp_path, cls, divisor):
    dut = cls(divisor=divisor)
    assert isinstance(dut, wiring.Component)
    path = tmp_path / "uart.v"
    path.write_text(verilog.convert(dut, name="uart", emit_src=False))
    vl = verilator_lint(path, "uart")
    assert vl.ok, vl.log
    ys = yosys_check(path, "uart")
    assert ys.ok, ys.log[-2000:]

"""The host link through the simulation harness (:class:`heterotron.hdl.simtop.SimAccelerator`):
a :class:`~heterotron.sim.host.driver.Transport` that moves :data:`HOST_WORD_BYTES` bytes a
wake-up and lets the simulator run free in between.

The testbench wakes only to push a burst, to pull an answer, or when the harness says
something happened (an answer waiting on ``pull``, ``running`` falling); the clock is
cocotb's C++ clock (``impl="gpi"``), so no Python runs on a cycle the testbench does not
ask for. Timing discipline as in :mod:`heterotron.tb.common`: inputs are written just after
a rising edge, outputs sampled in the read-only phase after the falling edge.
"""

from __future__ import annotations

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from heterotron.hdl.contract.hostlink import FLAG
from heterotron.hdl.simtop import (
    BOOT_CYCLES,
    HOST_WORD,
    HOST_WORD_BYTES,
    POKE_DEPTH,
    POKE_WORD,
    PUSH_DEPTH,
)
from heterotron.tb.common import CLOCK_NS, cycles, decode, encode
from heterotron.tb.env import stalls_from_env

__all__ = ["HarnessTransport", "probability"]


#: Cycles the simulator runs free when the driver pauses (a full program queue).
PAUSE_CYCLES = 512


def probability(p: float) -> int:
    """A probability as the harness's threshold out of 256."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a stall probability must be in [0, 1], not {p}")
    return min(255, round(p * 256))



class HarnessTransport:
    """The host link of a :class:`~heterotron.hdl.simtop.SimAccelerator`; time in cycles."""

    time_unit = "cycles"  # what receive()'s timeout counts

    def __init__(self, dut, seed: int):
        self.dut = dut
        self._seed = seed & 0xFFFFFFFF
        self._out = bytearray()   # bytes not yet pushed
        self._in = bytearray()    # bytes pulled, not yet given to the driver
        self._flags = 0           # FLAG bytes pulled (two a frame)
        self.cycle_waits = 0      # times the testbench woke (a figure of the run)

    async def start(self) -> None:
        """Start the clock; the harness resets itself (:data:`BOOT_CYCLES`)."""
        dut = self.dut
        Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
        dut.push__valid.value = 0
        dut.pull__ready.value = 0
        dut.poke__valid.value = 0
        dut.seed.value = self._seed
        for name in ("gap", "stall", "tile_stall"):
            getattr(dut, name).value = 0
        await cycles(BOOT_CYCLES + 2)
        await RisingEdge(dut.clk)

    def set_stalls(self, gap: float, stall: float, tile_stall: float) -> None:
        """Host-link gaps and back-pressure, and every tile's back-pressure (none at all
        when the runner switched stalls off)."""
        if not stalls_from_env():
            gap = stall = tile_stall = 0.0
        self.dut.gap.value = probability(gap)
        self.dut.stall.value = probability(stall)
        self.dut.tile_stall.value = probability(tile_stall)

    # -- Transport --------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        self._out += data
        await self._push()

    async def receive(self, timeout: float) -> bytes:
        """The bytes that came back: waits up to ``timeout`` cycles for an answer to end
        (a closing ``FLAG``: the host port sends two per frame), then returns everything
        pulled (a partial frame on a timeout, ``b""`` if nothing came)."""
        dut = self.dut
        start = get_sim_time("ns")
        while True:
            await self._push()
            await self._pull()
            if self._in and self._in[-1] == FLAG and self._flags % 2 == 0:
                break
            left = timeout - (get_sim_time("ns") - start) / CLOCK_NS
            if left <= 0:
                break
            self.cycle_waits += 1
            if self._in or self._flags % 2:  # mid-frame: let a few words gather
                await cycles(min(left, 8 * HOST_WORD_BYTES))
            else:
                await First(RisingEdge(dut.pull__valid), cycles(min(left, 1 << 20)))
        out = bytes(self._in)
        self._in.clear()
        return out

    async def pause(self) -> None:
        """The driver has nothing to do until the device has worked a while (a full
        program queue): let the simulator run :data:`PAUSE_CYCLES`."""
        self.cycle_waits += 1
        await cycles(PAUSE_CYCLES)

    async def wait_while_running(self, limit: int, every: int = 1 << 20,
                                 tick=None) -> bool:
        """Let the simulator run until the accelerator stops running (``True``), or for
        ``limit`` cycles or until its watchdog fires (``False``); ``await tick()`` every
        ``every`` cycles meanwhile."""
        left = limit
        while int(self.dut.running.value):
            if left <= 0 or int(self.dut.watchdog.value):
                return False
            step = min(left, every)
            self.cycle_waits += 1
            await First(FallingEdge(self.dut.running), RisingEdge(self.dut.watchdog),
                        cycles(step))
            left -= step
            if tick is not None and int(self.dut.running.value):
                await tick()
        return True

    async def poke(self, tile: int, addr: int, data: bytes) -> None:
        """Write ``data`` into memory tile ``tile``'s scratchpad from byte ``addr`` (a multiple
        of :data:`HOST_WORD_BYTES`) through the harness's backdoor, a scratchpad word a
        cycle, and return once it is all written. For images before a program runs: the
        backdoor takes the scratchpad's write port. The caller checks that the bytes fit."""
        if addr % HOST_WORD_BYTES:
            raise ValueError(f"a poke starts at a multiple of {HOST_WORD_BYTES} bytes, "
                             f"not at {addr}")
        dut, W = self.dut, HOST_WORD_BYTES
        off = 0
        while off < len(data):
            await ReadOnly()
            free = int(dut.poke_free.value)
            await RisingEdge(dut.clk)
            self.cycle_waits += 1
            while off < len(data) and free:
                chunk = data[off:off + W]
                dut.poke__payload.value = encode(POKE_WORD, {
                    "tile": tile, "addr": addr + off, "count": len(chunk),
                    "data": int.from_bytes(chunk, "little")})
                dut.poke__valid.value = 1
                off += W
                free -= 1
                await RisingEdge(dut.clk)
            dut.poke__valid.value = 0
            await self._poke_drain(POKE_DEPTH // 2 if off < len(data) else POKE_DEPTH)
        await cycles(W)  # the last beat's words into the scratchpad

    async def _poke_drain(self, free: int) -> None:
        """Wait until the poke FIFO has ``free`` words free."""
        while True:
            await ReadOnly()
            if int(self.dut.poke_free.value) >= free:
                break
            self.cycle_waits += 1
            await cycles(POKE_DEPTH // 4)
        await RisingEdge(self.dut.clk)

    # -- bursts ----------------------------------------------------------------------------------

    async def _push(self) -> None:
        """Push what fits of the unsent bytes, a word a cycle."""
        dut = self.dut
        if not self._out:
            return
        await ReadOnly()
        free = int(dut.push_free.value)
        await RisingEdge(dut.clk)
        W = HOST_WORD_BYTES
        while self._out and free:
            chunk = bytes(self._out[:W])
            del self._out[:W]
            dut.push__payload.value = encode(
                HOST_WORD, {"data": int.from_bytes(chunk, "little"), "count": len(chunk)})
            dut.push__valid.value = 1
            free -= 1
            self.cycle_waits += 1
            await RisingEdge(dut.clk)
        dut.push__valid.value = 0
        if self._out:  # the FIFO is full: let half of it drain before the rest
            self.cycle_waits += 1
            await cycles(W * PUSH_DEPTH // 2)

    async def _pull(self) -> None:
        """Take every word waiting on ``pull``, one a cycle."""
        dut = self.dut
        # Start between rising edges (a timer may wake us at one): ready goes high for the
        # next edge, and every word seen valid before an edge is taken at it.
        await FallingEdge(dut.clk)
        dut.pull__ready.value = 1
        while True:
            await ReadOnly()
            self.cycle_waits += 1
            if not int(dut.pull__valid.value):
                break
            word = decode(HOST_WORD, dut.pull__payload.value.to_unsigned())
            got = int(word.data).to_bytes(HOST_WORD_BYTES, "little")[:int(word.count)]
            self._in += got
            self._flags += got.count(FLAG)
            await RisingEdge(dut.clk)  # taken at this edge
        await RisingEdge(dut.clk)  # not valid before it: nothing taken
        dut.pull__ready.value = 0

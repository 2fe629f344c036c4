"""UartRx and UartTx: the host link's serial line, 8N1, a bit every ``divisor`` clock cycles.

The line format is :mod:`heterotron.hdl.contract.uart`. On a board the pair sits under the
host port (:class:`heterotron.hdl.hostport.HostPort`): received bytes into its ``rx``, its
``tx`` bytes out on the line. The frame layer above does the checking (CRC) and the
resynchronisation between frames; the UART's part is to lose no character on a clean line,
to reject what is not a character (a glitch, a framing error, a line held low) without
inventing bytes, and to be back in step at the next character after a line at rest.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.params import Param, Parameterised
from heterotron.hdl.contract.uart import (
    CHAR_BITS,
    DATA_BITS,
    IDLE,
    MAX_DIVISOR,
    MIN_DIVISOR,
    START,
    STOP,
)
from heterotron.hdl.ports import error_ports, raise_error, sticky_errors

__all__ = ["UartRx", "UartTx", "UartError", "SYNC_STAGES"]

#: Flip-flops between the ``rx`` pin and the receiver's logic (the pin is asynchronous).
SYNC_STAGES = 2

_DIVISOR = Param("divisor", int, 50, "clock cycles per bit (clock frequency / baud rate)",
                 MIN_DIVISOR, MAX_DIVISOR)


class UartError(enum.IntFlag):
    """Bits of :class:`UartRx`'s sticky ``error``."""

    FRAMING = 1  # a character's stop bit was low (dropped; the receiver waits for a rest)
    OVERRUN = 2  # a character arrived while the last one still waited on ``o`` (dropped)
    NOISE = 4    # a start bit that was a glitch, or a bit whose three samples disagreed


class UartRx(Parameterised, wiring.Component):
    """UART receiver: characters from the ``rx`` pin, bytes out on ``o``.

    The pin goes through :data:`SYNC_STAGES` flip-flops. At rest the receiver waits for the
    line to fall; from then on it times the character in bit times of ``divisor`` cycles
    (counting the synchroniser's delay) and takes three samples in each bit, at a quarter,
    half and three quarters of it (``divisor // 2 -+ divisor // 4``); the bit is their
    majority, so a glitch shorter than a quarter of a bit changes nothing.

    * **Start bit**: if its majority is high, the fall was a glitch: no character, ``NOISE``,
      back to rest.
    * **Stop bit**: decided at its three-quarter sample, and the receiver is back at rest
      from there, so a sender up to a quarter of a bit faster over the character (2.5%) is
      still caught at its next start bit. A high stop bit makes the byte valid on ``o``. A
      low one is a framing error (a character out of step, or a line held low, "break"):
      the byte is dropped, ``FRAMING`` is raised, and the receiver waits for the line to
      stay high for a whole bit time before it looks for a start bit again. That is the
      resynchronisation. A receiver out of step (woken mid-stream, or after noise) is in
      step again after the line rests for a character time and a bit; in a stream without
      rests it can take a few characters, whatever they are. The frame layer above throws
      the broken frame away at its CRC.
    * A bit whose three samples are not all equal raises ``NOISE`` (the majority is kept).
    * A byte completed while the last one still waits on ``o`` (``ready`` low) is dropped,
      ``OVERRUN``: a UART cannot be stalled. The host port's ``rx`` is always ready.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (:func:`heterotron.hdl.contract.uart.divisor_for`), 6 to 2**20.

    Members
    -------
    rx : In(1)
        The line (asynchronous to the clock).
    o : Out(stream.Signature(unsigned(8)))
        Received bytes; ``valid`` is a register.
    error : Out(3), error_clear : In(1)
        Sticky :class:`UartError` flags (:mod:`heterotron.hdl.ports`).

    Latency: a byte is valid on ``o`` :attr:`latency` clock edges after the edge that first
    samples its start bit on the pin (just after the stop bit's three-quarter sample).
    """

    PARAMS = (_DIVISOR,)

    def __init__(self, **given):
        self._take_params(given)
        super().__init__({
            "rx": In(1, init=IDLE),
            "o": Out(stream.Signature(unsigned(DATA_BITS))),
            **error_ports(UartError),
        })

    @property
    def samples(self) -> tuple[int, int, int]:
        """The three sample times inside a bit, in cycles from its start."""
        h, q = self.divisor // 2, self.divisor // 4
        return (h - q, h, h + q)

    @property
    def latency(self) -> int:
        return (CHAR_BITS - 1) * self.divisor + self.samples[2] + 2

    def elaborate(self, platform):
        m = Module()
        raised = sticky_errors(m, self.error, self.error_clear)
        div = self.divisor
        first, middle, last = self.samples

        line = Signal(init=IDLE)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=IDLE, stages=SYNC_STAGES)

        busy = Signal()            # timing a character
        hunt = Signal()            # after a framing error: waiting for a bit time of rest
        cnt = Signal(range(div))   # cycles into the current bit
        idx = Signal(range(CHAR_BITS))  # the bit: 0 start, 1..DATA_BITS data, then stop
        highs = Signal(2)          # samples of this bit that were high
        shreg = Signal(DATA_BITS)

        o = self.o
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)

        highs_now = highs + line   # the count including the sample taken this cycle
        bit = highs_now >= 2
        with m.If(hunt):
            with m.If(~line):
                m.d.sync += cnt.eq(0)
            with m.Elif(cnt == div - 1):
                m.d.sync += [hunt.eq(0), cnt.eq(0)]
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
        with m.Elif(~busy):
            with m.If(~line):
                # The line fell SYNC_STAGES cycles ago (on the pin).
                m.d.sync += [busy.eq(1), cnt.eq(SYNC_STAGES), idx.eq(0), highs.eq(0)]
        with m.Else():
            m.d.sync += cnt.eq(cnt + 1)
            with m.If((cnt == first) | (cnt == middle)):
                m.d.sync += highs.eq(highs_now)
            with m.If(cnt == last):
                with m.If((highs_now != 0) & (highs_now != 3)):
                    raise_error(m, raised, UartError.NOISE)
                with m.If(idx == 0):
                    with m.If(bit):  # a glitch, not a start bit
                        m.d.sync += busy.eq(0)
                with m.Elif(idx == CHAR_BITS - 1):
                    m.d.sync += busy.eq(0)
                    with m.If(bit == STOP):
                        with m.If(o.valid & ~o.ready):
                            raise_error(m, raised, UartError.OVERRUN)
                        with m.Else():
                            m.d.sync += [o.payload.eq(shreg), o.valid.eq(1)]
                    with m.Else():
                        raise_error(m, raised, UartError.FRAMING)
                        m.d.sync += [hunt.eq(1), cnt.eq(0)]
                with m.Else():
                    m.d.sync += shreg.eq(Cat(shreg[1:], bit))
            with m.If(cnt == div - 1):
                m.d.sync += [cnt.eq(0), idx.eq(idx + 1), highs.eq(0)]
        return m


class UartTx(Parameterised, wiring.Component):
    """UART transmitter: bytes from ``i`` out on the ``tx`` pin, back to back at full rate.

    ``i.ready`` is high at rest and in the last cycle of a stop bit, so a stream of bytes
    leaves as characters with no rest between them. ``tx`` is a register, high at rest.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, 6 to 2**20.

    Members
    -------
    i : In(stream.Signature(unsigned(8)))
    tx : Out(1)
        The line; the start bit of a byte taken at an edge begins at that edge.
    """

    PARAMS = (_DIVISOR,)

    def __init__(self, **given):
        self._take_params(given)
        super().__init__({
            "i": In(stream.Signature(unsigned(DATA_BITS))),
            "tx": Out(1, init=IDLE),
        })

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        busy = Signal()
        cnt = Signal(range(div))
        left = Signal(range(DATA_BITS + 2))  # bit times after the current one
        shreg = Signal(DATA_BITS + 1)        # the data bits then the stop bit, LSB first

        bit_end = cnt == div - 1
        m.d.comb += self.i.ready.eq(~busy | (bit_end & (left == 0)))
        with m.If(busy):
            m.d.sync += cnt.eq(cnt + 1)
            with m.If(bit_end):
                m.d.sync += cnt.eq(0)
                with m.If(left == 0):
                    m.d.sync += busy.eq(0)
                with m.Else():
                    m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg >> 1),
                                 left.eq(left - 1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [busy.eq(1), cnt.eq(0), left.eq(CHAR_BITS - 1), self.tx.eq(START),
                         shreg.eq(Cat(self.i.payload, STOP))]
        return m

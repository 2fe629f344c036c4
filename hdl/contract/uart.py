"""The UART line under the host link: 8N1, least significant bit first, the line high when idle.

One definition for the RTL (:mod:`heterotron.hdl.uart`), the line model the testbenches drive
and check (:mod:`heterotron.sim.golden.uart`), the board tops (the divisor from their clock)
and the host driver (the default baud).

A character is :data:`CHAR_BITS` bit times: a start bit (low), :data:`DATA_BITS` data bits
(least significant first), one stop bit (high). A bit lasts ``divisor`` clock cycles, the
clock's frequency over the baud rate rounded to the nearest integer; a baud rate the clock
cannot make within :data:`BAUD_TOLERANCE` is refused (a UART receiver copes with a few per
cent of mismatch between both ends, spent half by each).
"""

from __future__ import annotations

__all__ = ["DATA_BITS", "CHAR_BITS", "IDLE", "START", "STOP", "DEFAULT_BAUD",
           "BAUD_TOLERANCE", "MIN_DIVISOR", "MAX_DIVISOR", "UartConfigError", "divisor_for",
           "char_bits"]

DATA_BITS = 8
#: Bit times of one character: start, data, stop.
CHAR_BITS = 1 + DATA_BITS + 1
#: Line levels.
IDLE, START, STOP = 1, 0, 1
#: The boards' default baud rate: 1 Mbaud, exact from 12, 25, 50 MHz and from an FTDI
#: FT2232/FT231X's 3 MHz base (3 MHz / 3).
DEFAULT_BAUD = 1_000_000
#: Largest relative error of the bit time the clock can make, against the baud rate asked.
BAUD_TOLERANCE = 0.02
#: Fewest clock cycles a bit: the receiver votes on three samples inside the bit.
MIN_DIVISOR = 6
#: Most clock cycles a bit (the width of the bit-time counter).
MAX_DIVISOR = 1 << 20


class UartConfigError(ValueError):
    """A clock and baud rate that do not make a usable UART."""


def divisor_for(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` from a ``clk_hz`` clock; raises
    :class:`UartConfigError` naming the figures when the rate is out of reach."""
    if not isinstance(baud, int) or baud < 300:
        raise UartConfigError(f"baud must be an integer of at least 300, not {baud!r}")
    if clk_hz <= 0:
        raise UartConfigError(f"the clock must be positive, not {clk_hz} Hz")
    divisor = round(clk_hz / baud)
    if not MIN_DIVISOR <= divisor <= MAX_DIVISOR:
        raise UartConfigError(
            f"baud {baud} from a {clk_hz / 1e6:g} MHz clock needs {clk_hz / baud:.2f} cycles "
            f"a bit; the UART takes {MIN_DIVISOR} to {MAX_DIVISOR}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > BAUD_TOLERANCE:
        raise UartConfigError(
            f"baud {baud} from a {clk_hz / 1e6:g} MHz clock: {divisor} cycles a bit make "
            f"{clk_hz / divisor:.0f} baud, {100 * error:.1f}% off (at most "
            f"{100 * BAUD_TOLERANCE:g}%); pick a baud rate that divides the clock")
    return divisor


def char_bits(byte: int) -> list[int]:
    """The line levels of one character, a level per bit time: start, data LSB first, stop."""
    if not 0 <= byte < 1 << DATA_BITS:
        raise ValueError(f"a character is a byte, 0 to 255, not {byte!r}")
    return [START] + [(byte >> i) & 1 for i in range(DATA_BITS)] + [STOP]

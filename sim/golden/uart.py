"""The UART line as a list of levels, one per clock cycle: what a testbench drives into a
receiver and how it reads a transmitter, from the line format of
:mod:`heterotron.hdl.contract.uart`."""

from __future__ import annotations

from collections.abc import Iterable

from heterotron.hdl.contract.uart import CHAR_BITS, DATA_BITS, IDLE, START, STOP, char_bits

__all__ = ["encode", "decode"]


def encode(data: Iterable[int], divisor: float, *, rest: int = 0,
           stop: Iterable[int] | None = None) -> list[int]:
    """The line carrying ``data``, ``divisor`` cycles a bit (a fraction models a sender whose
    baud rate is off from the receiver's), ``rest`` cycles of idle line after each
    character. ``stop``, if given, is each character's stop-bit level (a low one makes a
    framing error)."""
    levels: list[int] = []
    data = list(data)
    stops = list(stop) if stop is not None else [STOP] * len(data)
    for byte, s in zip(data, stops, strict=True):
        bits = char_bits(byte)
        bits[-1] = s
        n = round(CHAR_BITS * divisor)
        levels += [bits[min(int(t / divisor), CHAR_BITS - 1)] for t in range(n)]
        levels += [IDLE] * rest
    return levels


def decode(levels: list[int], divisor: int) -> tuple[bytes, int]:
    """What an ideal receiver reads off ``levels``: each character found at a fall of the
    line and sampled in the middle of its bits. Returns the bytes with a high stop bit and
    the number of characters whose stop bit was low (framing errors)."""
    out = bytearray()
    framing = 0
    t = 0
    while t < len(levels):  # the line before the record was at rest
        if (t == 0 or levels[t - 1] == IDLE) and levels[t] == START:
            mid = [levels[t + k * divisor + divisor // 2] if t + k * divisor + divisor // 2
                   < len(levels) else None for k in range(CHAR_BITS)]
            if None in mid:
                break  # a character cut by the end of the record
            if mid[0] == START:
                if mid[-1] == STOP:
                    out.append(sum(b << i for i, b in enumerate(mid[1:1 + DATA_BITS])))
                else:
                    framing += 1
                t += (CHAR_BITS - 1) * divisor + divisor // 2
                continue
        t += 1
    return bytes(out), framing

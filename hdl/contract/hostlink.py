"""The host link's protocol: framed, checked commands over a byte stream, each one answered.

One definition for the RTL host port, the golden model of the port and the host driver.

**Framing** (HDLC-style byte stuffing): a frame is its bytes between two ``FLAG`` bytes; a
``FLAG`` or ``ESC`` inside a frame is sent as ``ESC, byte ^ ESC_XOR``. Any ``FLAG`` ends the
frame in progress, so a receiver that lost its place (noise, a frame cut short) is back in step
at the next ``FLAG``: that is the resynchronisation. Empty frames (two ``FLAG`` in a row) are
ignored, so a host may send ``FLAG`` bytes freely to resynchronise.

**Frame contents** (after unstuffing; multi-byte fields little-endian)::

    command frame:   op (1) | seq (1) | payload (0 .. MAX_PAYLOAD) | crc (2)
    response frame:  status (1) | seq (1) | payload | crc (2)

``crc`` is CRC-16/CCITT-FALSE (polynomial ``0x1021``, initial value ``0xFFFF``, no reflection,
no final XOR) of every byte before it. ``seq`` is the host's; the response repeats it, so the
host can tell an answer from a stale one. Every command frame gets exactly one response frame:
a frame with a bad CRC gets :attr:`Status.BAD_CRC` (seq 0 when the frame is too short to carry
one), an unknown op, a malformed payload or a frame longer than the port takes
:attr:`Status.BAD_COMMAND`, an address outside the memory map :attr:`Status.BUS_ERROR`, a
frame whose bytes stop for ``timeout`` cycles :attr:`Status.TIMEOUT` (the frame is dropped,
and so are its remaining bytes up to the next ``FLAG``, without a second answer), a program
burst the queue cannot take, or a good frame the port has no room for (send it again),
:attr:`Status.QUEUE_FULL` (nothing of it is done). The seq of an answer to a refused frame is
the frame's second byte as received (0 when it has fewer than two).

**Commands** (:class:`Op`; payload in, payload out on ``OK``):

``PING``         ``-``                                  -> ``magic u32, version u16, tiles u8,
                                                           word_bytes u8, config_hash u32``
``WRITE_MEM``    ``addr u32, data (4 n bytes)``         -> ``-``
``READ_MEM``     ``addr u32, nbytes u16``               -> ``data (nbytes)``
``WRITE_PROG``   ``words u32 x n`` (a burst to the program queue) -> ``free u16``
``READ_REG``     ``reg u16``                            -> ``value u32``
``WRITE_REG``    ``reg u16, value u32``                 -> ``-``

``addr`` is a byte address of the memory map (:mod:`heterotron.hdl.contract.accel`); memory
accesses are whole 32-bit words (``addr`` and the length multiples of 4, 4 to ``MAX_PAYLOAD``
bytes), else ``BAD_COMMAND``; an address outside every scratchpad window (or an access running
past its end) is ``BUS_ERROR``. ``WRITE_MEM`` answers once the data is in the scratchpad.
``WRITE_PROG`` takes 1 to ``MAX_PAYLOAD / 4`` words. ``READ_REG``/``WRITE_REG`` of a register
that does not exist, or a write to a read-only one, is ``BUS_ERROR``; only ``ERROR`` is
writable (1s clear flags). An unknown op, or a payload of the wrong length for its op, is
``BAD_COMMAND``.
"""

from __future__ import annotations

import enum

__all__ = ["FLAG", "ESC", "ESC_XOR", "MAX_PAYLOAD", "OVERHEAD", "CRC_POLY", "CRC_INIT", "Op",
           "Status", "crc16", "stuff", "unstuff_frames", "command_frame", "response_frame",
           "parse_frame", "FrameError"]

FLAG = 0x7E
ESC = 0x7D
ESC_XOR = 0x20
#: Largest payload of one frame, in bytes (a multiple of 4).
MAX_PAYLOAD = 1024
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF
#: Bytes a frame has besides its payload: op/status, seq, two of CRC.
OVERHEAD = 4


class Op(enum.IntEnum):
    """Host commands (the first byte of a command frame)."""

    PING = 0x01
    WRITE_MEM = 0x02
    READ_MEM = 0x03
    WRITE_PROG = 0x04
    READ_REG = 0x05
    WRITE_REG = 0x06


class Status(enum.IntEnum):
    """Response codes (the first byte of a response frame)."""

    OK = 0x00
    BAD_CRC = 0x01
    BAD_COMMAND = 0x02
    BUS_ERROR = 0x03
    TIMEOUT = 0x04
    QUEUE_FULL = 0x05


class FrameError(ValueError):
    """A received frame is malformed (too short or a CRC mismatch)."""


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def stuff(frame: bytes) -> bytes:
    """A frame's bytes on the wire: ``FLAG``, the stuffed bytes, ``FLAG``."""
    out = bytearray([FLAG])
    for b in frame:
        if b in (FLAG, ESC):
            out += bytes([ESC, b ^ ESC_XOR])
        else:
            out.append(b)
    out.append(FLAG)
    return bytes(out)


def unstuff_frames(wire: bytes) -> list[bytes]:
    """The frames in a byte stream (the inverse of :func:`stuff`, frame by frame); bytes
    before the first ``FLAG`` and after the last are not a frame; empty frames are skipped."""
    frames, cur, esc, started = [], bytearray(), False, False
    for b in wire:
        if b == FLAG:
            if started and cur:
                frames.append(bytes(cur))
            cur, esc, started = bytearray(), False, True
        elif esc:
            cur.append(b ^ ESC_XOR)
            esc = False
        elif b == ESC:
            esc = True
        else:
            cur.append(b)
    return frames


def _with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def command_frame(op: int, seq: int, payload: bytes = b"") -> bytes:
    """A command frame's bytes (before stuffing)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload must be at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    return _with_crc(bytes([int(op), seq & 0xFF]) + payload)


def response_frame(status: int, seq: int, payload: bytes = b"") -> bytes:
    """A response frame's bytes (before stuffing)."""
    return _with_crc(bytes([int(status), seq & 0xFF]) + payload)


def parse_frame(frame: bytes) -> tuple[int, int, bytes]:
    """``(op or status, seq, payload)`` of an unstuffed frame; :class:`FrameError` when it is
    shorter than :data:`OVERHEAD` bytes or its CRC does not match."""
    if len(frame) < OVERHEAD:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than {OVERHEAD}")
    if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise FrameError("CRC mismatch")
    return frame[0], frame[1], frame[2:-2]

"""The host driver: framed, checked commands to the accelerator over a byte transport.

One driver for the board and the simulation. A :class:`Transport` moves bytes (a serial port,
:class:`SerialTransport`; the cocotb testbench's simulated host port); :class:`Device` speaks
the protocol of :mod:`heterotron.hdl.contract.hostlink` over it and takes the accelerator's
constants (tiles, registers, memory map, config hash) from the sidecar that ``heterotron
generate accelerator`` writes, never from a hand-copied table.

The driver is ``async`` so that the same code runs inside cocotb (where waiting means letting
the simulator run) and on a board (``asyncio.run(...)``; the serial transport blocks briefly).

Errors: :class:`HostError` when the device answers a command with a status other than OK (or
its answer is corrupted, or it is not the accelerator of the sidecar), :class:`HostTimeout`
when it does not answer in time, :class:`LinkError` when the transport itself fails (a port
that cannot be opened or goes away, pyserial missing).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from heterotron.hdl.contract import hostlink
from heterotron.hdl.contract.hostlink import FLAG, Op, Status
from heterotron.hdl.contract.uart import DEFAULT_BAUD

__all__ = ["Transport", "SerialTransport", "Device", "HostError", "HostTimeout",
           "LinkError", "FrameReader"]


class HostError(RuntimeError):
    """The device answered a command with a status other than OK (``status`` < 0: an answer
    that could not be read; ``Status.OK``: a good answer the driver refuses, ``detail`` says
    why)."""

    def __init__(self, op: Op, status: Status | int, detail: str = ""):
        self.op, self.status = op, status
        known = status in set(Status)
        if known and status != Status.OK:
            what = [Status(status).name]
        elif known or status is None or status < 0:
            what = []
        else:
            what = [f"status {status}"]
        super().__init__(": ".join([Op(op).name, *what, *([detail] if detail else [])]))


class HostTimeout(HostError):
    """No (well-formed) answer within the timeout."""

    def __init__(self, op: Op, detail: str):
        self.op, self.status = op, None
        RuntimeError.__init__(self, f"{Op(op).name}: no answer ({detail})")


class LinkError(RuntimeError):
    """The transport failed: a port that cannot be opened, a write that does not go out, a
    device that went away, or pyserial missing."""


class Transport(Protocol):
    """Moves bytes to and from the device.

    A transport may also have ``pause()`` (the driver awaits it when it has nothing to do
    until the device has worked a while), ``close()``, and ``time_unit``: what its timeouts
    count, for messages (``"s"`` when it has none; a simulation's transport counts cycles).
    """

    async def send(self, data: bytes) -> None:
        """Send ``data`` (all of it, in order)."""
        ...

    async def receive(self, timeout: float) -> bytes:
        """Bytes that arrived since the last call, in order, returned once at least one has
        come: any number, a partial frame or several frames (:class:`FrameReader` keeps the
        pieces); ``b""`` when none came within ``timeout`` seconds (or the transport's own
        measure of time: cycles in simulation)."""
        ...


class SerialTransport:
    """A serial port (pyserial), e.g. a board's FTDI UART: 8 data bits, no parity, one stop
    bit, no flow control.

    Parameters
    ----------
    port : str
        The device (``/dev/ttyUSB1``, ``COM3``).
    baud : int
        Bits per second.
    write_timeout : float
        Seconds a write may wait for room before the port is given up as stuck.

    Input that was waiting before the port opened is dropped. A context manager
    (``with SerialTransport(...) as link:``); :meth:`close` closes the port. Every failure of
    the port itself is a :class:`LinkError`: pyserial missing, a port that cannot be opened,
    a write that times out, a device that goes away.
    """

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, *, write_timeout: float = 5.0):
        try:
            import serial
        except ImportError:
            raise LinkError("the serial transport needs pyserial: pip install pyserial") \
                from None
        if not isinstance(baud, int) or baud <= 0:
            raise LinkError(f"the baud rate must be a positive integer, not {baud!r}")
        self.name = port
        self._errors = (serial.SerialException, OSError)
        try:
            self._port = serial.Serial(port, baud, timeout=0, write_timeout=write_timeout)
        except (*self._errors, ValueError) as exc:
            raise LinkError(f"cannot open serial port {port}: {_reason(exc)}") from None
        try:
            self._port.reset_input_buffer()
        except self._errors as exc:
            self._port.close()
            raise LinkError(f"cannot use serial port {port}: {_reason(exc)}") from None

    def __enter__(self) -> SerialTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def send(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except self._errors as exc:
            raise LinkError(f"writing to {self.name}: {_reason(exc)}") from None

    async def receive(self, timeout: float) -> bytes:
        """Waits up to ``timeout`` seconds for a first byte, then takes what else has
        already arrived, without waiting for more (see :meth:`Transport.receive`)."""
        port = self._port
        try:
            if port.timeout != timeout:  # pyserial reconfigures the port on every change
                port.timeout = timeout
            first = port.read(1)
            if not first:
                return b""
            waiting = port.in_waiting
            return first + (port.read(waiting) if waiting else b"")
        except self._errors as exc:
            raise LinkError(f"reading from {self.name}: {_reason(exc)}") from None

    def close(self) -> None:
        """Close the port (again: nothing)."""
        self._port.close()


def _reason(exc: BaseException) -> str:
    """Why a port operation failed, in a few words: the OS's error, found down the chain of
    exceptions (pyserial repeats the port's name and nests the OS's message)."""
    seen = exc
    while seen is not None:
        code = getattr(seen, "errno", None)
        if code is None and seen.args and isinstance(seen.args[0], int):  # termios.error
            code = seen.args[0]
        if isinstance(code, int) and code > 0:
            text = os.strerror(code)
            if code in (errno.EACCES, errno.EPERM):
                text += " (on Linux: be in the group that owns the device, often dialout)"
            elif code == errno.EBUSY:
                text += " (another program has it open)"
            elif code == errno.ENOTTY:
                text = f"not a serial port ({text})"
            return text
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


class FrameReader:
    """Splits received bytes into frames (unstuffed), keeping a partial frame between calls."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while True:
            try:
                start = self._buf.index(FLAG)
            except ValueError:
                self._buf.clear()
                return frames
            try:
                end = self._buf.index(FLAG, start + 1)
            except ValueError:
                del self._buf[:start]
                return frames
            chunk = bytes(self._buf[start:end + 1])
            del self._buf[:end]  # the closing FLAG may open the next frame
            frames += hostlink.unstuff_frames(chunk)


class Device:
    """The accelerator behind a transport.

    Parameters
    ----------
    transport : Transport
    sidecar : dict
        The ``heterotron generate accelerator`` sidecar (``accelerator.json``).
    timeout : float
        Seconds (or the transport's unit) to wait for each answer.
    retries : int
        Times a command answered ``BAD_CRC`` or ``QUEUE_FULL`` (the device saw a corrupted
        frame, or had no room for it, and did nothing) is sent again.
    """

    def __init__(self, transport: Transport, sidecar: dict[str, Any], *, timeout: float = 1.0,
                 retries: int = 2):
        self.transport, self.sidecar = transport, sidecar
        self.timeout, self.retries = timeout, retries
        self._reader = FrameReader()
        self._seq = 0
        self.registers = sidecar["registers"]
        self.tile_registers = sidecar["tile_registers"]

    # -- framing --------------------------------------------------------------------------------

    #: Stale answers (another command's sequence number) skipped before giving up.
    STALE = 16

    async def _answer(self, op: Op, seq: int) -> tuple[int, bytes]:
        stale = 0
        while True:
            data = await self.transport.receive(self.timeout)
            if not data:
                unit = getattr(self.transport, "time_unit", "s")
                raise HostTimeout(op, f"after {self.timeout:g} {unit}")
            for frame in self._reader.feed(data):
                try:
                    status, got_seq, payload = hostlink.parse_frame(frame)
                except hostlink.FrameError as exc:
                    raise HostError(op, -1, f"corrupted answer ({exc})") from None
                if got_seq == seq:
                    return status, payload
                stale += 1
                if stale > self.STALE:
                    raise HostTimeout(op, f"{stale} answers, none with this command's "
                                          "sequence number")

    async def command(self, op: Op, payload: bytes = b"", *, check: bool = True
                      ) -> tuple[int, bytes]:
        """Send one command; return ``(status, payload)``; raise :class:`HostError` on a
        status other than OK when ``check``."""
        for attempt in range(self.retries + 1):
            self._seq = (self._seq + 1) & 0xFF
            seq = self._seq
            await self.transport.send(hostlink.stuff(hostlink.command_frame(op, seq, payload)))
            status, answer = await self._answer(op, seq)
            # Both mean the device did nothing: a corrupted frame, or no room for it.
            if status not in (Status.BAD_CRC, Status.QUEUE_FULL) or attempt == self.retries:
                break
        if check and status != Status.OK:
            raise HostError(op, status)
        return status, answer

    async def resync(self) -> None:
        """Send frame delimiters (ends any partial frame on the device) and forget partial
        answers."""
        await self.transport.send(bytes([FLAG, FLAG]))
        self._reader = FrameReader()

    # -- commands -------------------------------------------------------------------------------

    async def ping(self) -> dict[str, int]:
        """The device's identity; raises when it is not the accelerator of the sidecar."""
        _, p = await self.command(Op.PING)
        magic, version, tiles, word_bytes, config_hash = _unpack(Op.PING, "<IHBBI", p)
        found = {"magic": magic, "version": version, "tiles": tiles, "word_bytes": word_bytes,
                 "config_hash": config_hash}
        want = {"magic": self.sidecar["magic"], "version": self.sidecar["version"],
                "tiles": len(self.sidecar["tiles"]),
                "config_hash": self.sidecar["config_hash"]}
        wrong = {k: (found[k], v) for k, v in want.items() if found[k] != v}
        if wrong:
            raise HostError(Op.PING, Status.OK, "not the accelerator of this sidecar: "
                            + ", ".join(f"{k} {a:#x} != {b:#x}" for k, (a, b) in wrong.items()))
        return found

    def address(self, tile: int, local: int = 0) -> int:
        """The memory-map address of byte ``local`` of memory tile ``tile``."""
        for window in self.sidecar["memory_map"]:
            if window["tile"] == tile:
                return window["base"] + local
        raise ValueError(f"tile {tile} is not a memory tile")

    async def write_mem(self, addr: int, data: bytes, *,
                        progress: Callable[[int], None] | None = None) -> None:
        """Write ``data`` from memory-map address ``addr``, a frame at a time;
        ``progress(n)`` after each frame with the bytes it wrote."""
        if len(data) % 4 or addr % 4:
            raise ValueError("memory writes are whole 32-bit words at word addresses")
        step = hostlink.MAX_PAYLOAD - 4
        for off in range(0, len(data), step):
            chunk = data[off:off + step]
            await self.command(Op.WRITE_MEM, struct.pack("<I", addr + off) + chunk)
            if progress is not None:
                progress(len(chunk))

    async def read_mem(self, addr: int, nbytes: int, *,
                       progress: Callable[[int], None] | None = None) -> bytes:
        """``nbytes`` from memory-map address ``addr``, a frame at a time; ``progress(n)``
        after each frame with the bytes it read."""
        if nbytes % 4 or addr % 4:
            raise ValueError("memory reads are whole 32-bit words at word addresses")
        out = bytearray()
        for off in range(0, nbytes, hostlink.MAX_PAYLOAD):
            n = min(hostlink.MAX_PAYLOAD, nbytes - off)
            _, p = await self.command(Op.READ_MEM, struct.pack("<IH", addr + off, n))
            if len(p) != n:
                raise HostError(Op.READ_MEM, Status.OK, f"{len(p)} bytes for the {n} asked")
            out += p
            if progress is not None:
                progress(n)
        return bytes(out)

    async def write_program(self, words: Iterable[int], *, poll_limit: int = 100000) -> None:
        """Queue instruction words, in bursts, waiting for room when the queue is full."""
        words = list(words)
        step = hostlink.MAX_PAYLOAD // 4
        i = 0
        polls = 0
        while i < len(words):
            free = await self.read_reg(self.registers["queue_free"])
            n = min(step, len(words) - i, free)
            if n == 0:
                polls += 1
                if polls > poll_limit:
                    raise HostTimeout(Op.WRITE_PROG, "the program queue never drained")
                await self._pause()
                continue
            await self.command(Op.WRITE_PROG, struct.pack(f"<{n}I", *words[i:i + n]))
            i += n

    async def _pause(self) -> None:
        """Let the device work a while before polling again: the transport's ``pause()`` if
        it has one (the simulation's lets the simulator run free)."""
        pause = getattr(self.transport, "pause", None)
        if pause is not None:
            await pause()

    async def read_reg(self, reg: int) -> int:
        _, p = await self.command(Op.READ_REG, struct.pack("<H", reg))
        return _unpack(Op.READ_REG, "<I", p)[0]

    async def write_reg(self, reg: int, value: int) -> None:
        await self.command(Op.WRITE_REG, struct.pack("<HI", reg, value))

    async def status(self) -> dict[str, int]:
        r = self.registers
        names = ("status", "error", "retired", "last_id", "queue_free", "cycles")
        return {n: await self.read_reg(r[n]) for n in names}

    async def counters(self) -> list[dict[str, int]]:
        """Each tile's status word and counters."""
        tr = self.tile_registers
        out = []
        for t in self.sidecar["tiles"]:
            base = tr["base"] + t["index"] * tr["stride"]
            row = {"tile": t["index"], "kind": t["kind"]}
            for name in ("status", "busy", "stalled", "items", "last_id"):
                row[name] = await self.read_reg(base + tr[name])
            out.append(row)
        return out

    async def wait_idle(self, *, polls: int = 100000) -> dict[str, int]:
        """Poll until the program queue is empty and no instruction is in flight."""
        for _ in range(polls):
            st = await self.read_reg(self.registers["status"])
            if not st & 1:
                return await self.status()
        raise HostTimeout(Op.READ_REG, f"still running after {polls} polls")

    async def clear_errors(self) -> None:
        await self.write_reg(self.registers["error"], 0xFFFFFFFF)


def _unpack(op: Op, fmt: str, payload: bytes) -> tuple:
    """An OK answer's payload as ``fmt``; :class:`HostError` when it is not that long."""
    if len(payload) != struct.calcsize(fmt):
        raise HostError(op, Status.OK, f"an answer of {len(payload)} bytes, not "
                                       f"{struct.calcsize(fmt)}")
    return struct.unpack(fmt, payload)

"""cocotb testbench: ``heterotron host``, the board's command, run as its own process against
the accelerator in its simulation harness (:class:`heterotron.hdl.simtop.SimAccelerator`)
through a pseudo-terminal, so the serial code path (pyserial on a tty) is the one a board
sees.

The bridge opens a pty (raw), starts ``python -m heterotron.scripts.cli host --port <the
pty's slave> ...``, and moves bytes: what the command writes is read from the master without
blocking and pushed into the harness (:class:`~heterotron.tb.harness.HarnessTransport`),
answers pulled from the harness are written back to the master. The simulator runs while a
command frame is waiting for its answer (frames counted both ways); when none is, the bridge
waits on the pty in wall-clock time and the simulated board idles, unclocked. Each command
ends when its process exits.

Set-up from the runner (:mod:`heterotron.tb.env`, the mapping form of the bench settings):
``commands``, a list of ``{"argv": [...], "status": N, "expect": [regex, ...]}`` (the
arguments after ``host``, with ``{port}`` for the pty; the exit status and patterns its
standard output must match), ``wall_seconds`` (a command still running then is killed and
the test fails), ``stalls`` (the harness's host-link gaps and back-pressure and the tiles'
back-pressure, probabilities; none by default). Every command's transcript (arguments,
status, output, wall seconds, cycles simulated) goes to the bench output file as a JSON
line.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
import tty
from dataclasses import asdict, dataclass

import cocotb
from cocotb.utils import get_sim_time

from heterotron.sim.host.driver import FrameReader
from heterotron.tb import env
from heterotron.tb.common import CLOCK_NS, make_rng
from heterotron.tb.harness import HarnessTransport

#: Cycles the simulator runs per poll while an answer is owed (less when it comes sooner).
POLL_CYCLES = 4096
#: Seconds the bridge waits on the pty when no answer is owed.
IDLE_WAIT = 0.02
#: Wall-clock seconds a command may take by default.
WALL_SECONDS = 300.0


@dataclass
class Transcript:
    argv: list[str]
    status: int
    stdout: str
    stderr: str
    seconds: float
    cycles: int
    frames: int


class PtyBridge:
    """A pseudo-terminal whose master end is wired to the harness's host link."""

    def __init__(self, link: HarnessTransport):
        self.link = link
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line editing: bytes as they are
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)

    def _read(self, wait: float) -> bytes:
        """What the command wrote, waiting up to ``wait`` seconds for the first byte."""
        if wait and not select.select([self.master], [], [], wait)[0]:
            return b""
        out = bytearray()
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def _write(self, data: bytes, deadline: float) -> None:
        while data:
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:  # the command has not read the last answers yet
                if time.monotonic() > deadline:
                    raise AssertionError("the command stopped reading its answers") from None
                select.select([], [self.master], [], IDLE_WAIT)

    async def run(self, argv: list[str], wall_seconds: float) -> Transcript:
        """Run ``heterotron host`` with ``argv`` to its end, bridging its port."""
        args = [a.replace("{port}", self.port) for a in argv]
        sent, answered = FrameReader(), FrameReader()
        frames = answers = 0
        t0, c0 = time.monotonic(), get_sim_time("ns")
        deadline = t0 + wall_seconds
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            # Output to files, not pipes: a full pipe would stop the command mid-run.
            proc = subprocess.Popen([sys.executable, "-m", "heterotron.scripts.cli", "host",
                                     *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"heterotron host {' '.join(args)}: still "
                                             f"running after {wall_seconds} s")
                    owed = frames > answers
                    data = self._read(0 if owed else IDLE_WAIT)
                    if data:
                        frames += len(sent.feed(data))
                        await self.link.send(data)
                    if owed or data:
                        got = await self.link.receive(POLL_CYCLES)
                        if got:
                            answers += len(answered.feed(got))
                            self._write(got, deadline)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            out.seek(0)
            err.seek(0)
            return Transcript(args, proc.returncode, out.read().decode(errors="replace"),
                              err.read().decode(errors="replace"),
                              round(time.monotonic() - t0, 2),
                              int((get_sim_time("ns") - c0) // CLOCK_NS), frames)


@cocotb.test()
async def test_host_commands(dut):
    """Each command of the runner's list, in order, on one simulated board: its exit status
    and its standard output as the list says."""
    cfg = env.bench_config()
    link = HarnessTransport(dut, int(make_rng(1).integers(1 << 32)))
    await link.start()
    link.set_stalls(*cfg.get("stalls", (0.0, 0.0, 0.0)))
    bridge = PtyBridge(link)
    out_path = env.bench_out()
    try:
        for cmd in cfg.get("commands", []):
            t = await bridge.run(cmd["argv"], float(cfg.get("wall_seconds", WALL_SECONDS)))
            dut._log.info("heterotron host %s: status %d, %.1f s, %d cycles, %d frames\n%s%s",
                          " ".join(t.argv), t.status, t.seconds, t.cycles, t.frames,
                          t.stdout, t.stderr)
            if out_path:
                with open(out_path, "a") as f:
                    f.write(json.dumps(asdict(t)) + "\n")
            want = cmd.get("status", 0)
            assert t.status == want, (f"heterotron host {' '.join(t.argv)}: exit status "
                                      f"{t.status}, not {want}:\n{t.stdout}{t.stderr}")
            for pattern in cmd.get("expect", []):
                assert re.search(pattern, t.stdout, re.M), (
                    f"heterotron host {' '.join(t.argv)}: no line matching {pattern!r} in "
                    f"its output:\n{t.stdout}{t.stderr}")
    finally:
        bridge.close()

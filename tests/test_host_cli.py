"""``heterotron host``: the board's command over a real serial code path (pyserial on a
pseudo-terminal), against the accelerator in its simulation harness (:mod:`heterotron.tb.ptybridge`)
and, without a simulation, against boards that do not exist, do not answer or answer wrongly:
one line on stderr each, exit status 1, no traceback."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import tty
from pathlib import Path

import numpy as np
import pytest

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract import accel
from heterotron.hdl.contract.accel import TileKind
from heterotron.hdl.contract.hostlink import (
    Op,
    Status,
    parse_frame,
    response_frame,
    stuff,
)
from heterotron.hdl.contract.uart import DEFAULT_BAUD
from heterotron.scripts.cli import main
from heterotron.scripts.common import load_config
from heterotron.sim.golden.accel import read_tensor
from heterotron.sim.golden.jobs import compare, gemm_job
from heterotron.sim.host.driver import FrameReader

pytest.importorskip("serial", reason="heterotron host needs pyserial")


def accel_2d():
    return describe(load_config("accel-2d")[1]["accelerator"])


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The error, checked to be one line on stderr without a traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- on the simulated board, through a pty ----------------------------------------------------

#: Seconds each answer may take: the subprocess runs beside a simulation.
SIM_TIMEOUT = "60"


def test_host_command_on_the_harness_through_a_pty(tmp_path):
    """ping, status, a GEMM on each SA tile (one described by --config, one by the sidecar
    file the harness's generation wrote), a description the board does not run, counters:
    each ``heterotron host`` a process of its own on a pty bridged into the accel-2d
    harness, under random gaps and back-pressure. A few seconds once the harness model is
    built (the one ``test_cocotb_2d_in_the_harness`` builds)."""
    from conftest import declared_tests

    from heterotron.sim.flows.accel import generate_sim_accelerator
    from heterotron.sim.flows.runner import simulate_generated

    desc = accel_2d()
    gen = generate_sim_accelerator(desc)
    link = ["--port", "{port}", "--timeout", SIM_TIMEOUT]
    sas = [t.index for t in desc.of_kind(TileKind.SA)]
    commands = [
        {"argv": [*link, "--config", "accel-2d", "ping"], "expect": ["^PING "]},
        {"argv": [*link, "status"], "expect": [r"^running\s+no$"]},
        {"argv": [*link, "--config", "accel-2d", "gemm", "--m", "8", "--k", "12", "--n", "5",
                  "--seed", "3"], "expect": ["^PASS: "]},
        {"argv": [*link, "--sidecar", str(gen.sidecar), "gemm", "--m", "20", "--k", "9",
                  "--n", "16", "--seed", "4", "--tile", str(sas[1])], "expect": ["^PASS: "]},
        {"argv": [*link, "--config", "accel-3d", "ping"], "status": 1},
        {"argv": ["counters", *link]},
    ]
    out = tmp_path / "host.jsonl"
    result = simulate_generated(gen, "heterotron.tb.ptybridge", seed=5, fast_model=True,
                                quiet=True, bench={"commands": commands, "wall_seconds": 120,
                                                   "stalls": [0.3, 0.3, 0.3]},
                                bench_out=out)
    assert result.tests == declared_tests("heterotron.tb.ptybridge") and result.failed == 0, (
        f"pty bridge, seed {result.seed}: {result.failed} of {result.tests} failed; see "
        f"{result.results_xml.parent / 'sim.log'}")
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(runs) == len(commands)
    ping, status, gemm_os, gemm_ws, wrong, counters = runs
    for run in runs:
        assert "Traceback" not in run["stderr"], run["stderr"]
    # The board's identity is the description's.
    assert f"config hash {desc.config_hash:#010x}" in ping["stdout"]
    assert f"{len(desc.tiles)} tiles" in ping["stdout"]
    assert re.search(r"^retired\s+0 instructions$", status["stdout"], re.M)
    # Each GEMM: PASS (the CLI compares every byte with the golden interpreter), as many
    # instructions retired as the interpreter retires, and its SA tile busy.
    retired = {}
    for run, tile, (m, k, n, seed) in ((gemm_os, sas[0], (8, 12, 5, 3)),
                                       (gemm_ws, sas[1], (20, 9, 16, 4))):
        want = gemm_job(desc, m, k, n, seed, tile).result.retired
        assert re.search(rf"^PASS: .*, {want} instructions retired$", run["stdout"], re.M)
        row = re.search(rf"^\s+{tile}\s+sa\s+(\d+)\s+(\d+)\s+(\d+)\s+idle$", run["stdout"],
                        re.M)
        assert row and int(row[1]) > 0 and int(row[3]) == want, run["stdout"]
        retired[tile] = want
    # Another description's sidecar: the board is refused, by its config hash.
    line = one_line(wrong["stderr"])
    assert "not the accelerator of this sidecar" in line and "config_hash" in line
    # The tiles' cumulative counters: each SA tile finished what its GEMM retired.
    for tile, want in retired.items():
        row = re.search(rf"^\s+{tile}\s+sa\s+\d+\s+\d+\s+(\d+)\s", counters["stdout"], re.M)
        assert row and int(row[1]) == want, counters["stdout"]


@pytest.mark.slow  # the encoder-small harness (built by the scale model's RTL tests) and a layer
def test_host_runs_a_layer_on_the_harness_through_a_pty(tmp_path):
    """``heterotron host run small`` over the pty against the encoder-small harness, under
    random gaps and back-pressure: every tensor the program writes equals the program
    interpreter's (the command compares them; PASS), as many instructions retired as the
    interpreter retires, each compute tile busy; ``run minilm`` on a description without
    the layer's tiles is refused before the port is opened."""
    from conftest import declared_tests

    from heterotron.sim.flows.accel import generate_sim_accelerator
    from heterotron.sim.flows.runner import simulate_generated
    from heterotron.sim.golden.accel import Interpreter
    from heterotron.sim.scale.model import workload_of
    from heterotron.sim.scale.runs import compile_workload

    desc = describe(load_config("encoder-small")[1]["accelerator"])
    gen = generate_sim_accelerator(desc)
    link = ["--port", "{port}", "--timeout", SIM_TIMEOUT, "--config", "encoder-small"]
    commands = [{"argv": [*link, "run", "small", "--tokens", "3"], "expect": ["^PASS: "]}]
    out = tmp_path / "host.jsonl"
    result = simulate_generated(gen, "heterotron.tb.ptybridge", seed=6, fast_model=True,
                                quiet=True, bench={"commands": commands, "wall_seconds": 600,
                                                   "stalls": [0.2, 0.2, 0.2]},
                                bench_out=out)
    assert result.tests == declared_tests("heterotron.tb.ptybridge") and result.failed == 0, (
        f"pty bridge, seed {result.seed}: see {result.results_xml.parent / 'sim.log'}")
    (run,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "Traceback" not in run["stderr"], run["stderr"]
    comp, x, xr = compile_workload(desc, workload_of("small", 3))
    interp = Interpreter(desc, comp.memories(x, xr))
    interp.execute(comp.words)
    want = interp.result().retired
    assert re.search(rf"^PASS: all \d+ tensors .*, {want} instructions retired$", run["stdout"],
                     re.M), run["stdout"]
    for t in desc.tiles:
        if t.kind in (TileKind.SA, TileKind.SFU, TileKind.PIM):
            row = re.search(rf"^\s+{t.index}\s+{t.kind.name.lower()}\s+(\d+)\s", run["stdout"],
                            re.M)
            assert row and int(row[1]) > 0, run["stdout"]


# -- without a simulation -------------------------------------------------------------------

class Pty:
    """A pseudo-terminal for the command's ``--port``; :meth:`serve` answers its frames from
    a thread, as a board would."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.name = os.ttyname(self.slave)
        self.commands: list[tuple[int, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = None

    def serve(self, answer) -> None:
        """Answer each command frame with ``answer(op, seq, payload)`` (wire bytes, or
        ``None`` for no answer)."""
        def loop():
            reader = FrameReader()
            while not self._stop.is_set():
                if not select.select([self.master], [], [], 0.02)[0]:
                    continue
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    return
                for frame in reader.feed(data):
                    op, seq, payload = parse_frame(frame)
                    self.commands.append((op, seq, payload))
                    wire = answer(op, seq, payload)
                    if wire:
                        os.write(self.master, wire)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def received(self) -> list[tuple[int, int, bytes]]:
        """The command frames that came (when nothing serves them)."""
        reader = FrameReader()
        frames = []
        while select.select([self.master], [], [], 0)[0]:
            frames += reader.feed(os.read(self.master, 4096))
        return [parse_frame(f) for f in frames]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def ident_payload(desc) -> bytes:
    """``PING``'s answer for ``desc``, as the contract lays it out."""
    import struct

    return struct.pack("<IHBBI", accel.MAGIC, accel.VERSION, len(desc.tiles),
                       desc.word_bytes, desc.config_hash)


def test_a_port_that_does_not_exist():
    """A process of its own: exit status 1, one line naming the port and the reason."""
    port = "/nonexistent/ttyUSB9"
    run = subprocess.run([sys.executable, "-m", "heterotron.scripts.cli", "host", "--port",
                          port, "ping"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert one_line(run.stderr) == (f"heterotron: host link: cannot open serial port {port}: "
                                    "No such file or directory")


def test_not_a_serial_port(capsys, tmp_path):
    plain = tmp_path / "file"
    plain.write_text("")
    code, _, err = run_cli(capsys, "host", "--port", str(plain), "status")
    assert code == 1
    assert one_line(err).startswith(f"heterotron: host link: cannot open serial port {plain}: "
                                    "not a serial port")


def test_nothing_answers(capsys, pty):
    """A pty nobody serves: the command resynchronises, sends a well-formed PING, and gives up
    after its timeout."""
    code, _, err = run_cli(capsys, "host", "--port", pty.name, "--timeout", "0.2", "ping")
    assert code == 1
    assert one_line(err) == (f"heterotron: no answer from {pty.name} to PING within 0.2 s: is "
                             "the board programmed with the accelerator and connected, at "
                             f"{DEFAULT_BAUD} baud (--baud)?")
    frames = pty.received()
    assert frames and all(op == Op.PING and payload == b"" for op, _, payload in frames)


def test_a_corrupted_answer(capsys, pty):
    """An answer whose CRC does not match is reported as such, not retried into silence."""
    def answer(op, seq, payload):
        frame = bytearray(response_frame(Status.OK, seq, ident_payload(accel_2d())))
        frame[-1] ^= 0x01
        return stuff(bytes(frame))
    pty.serve(answer)
    code, _, err = run_cli(capsys, "host", "--port", pty.name, "--timeout", "2", "ping")
    assert code == 1
    assert one_line(err) == "heterotron: host error: PING: corrupted answer (CRC mismatch)"


def test_an_error_status(capsys, pty):
    """The board answers PING as accel-2d, then refuses every register read: the status is
    named, with the command."""
    desc = accel_2d()

    def answer(op, seq, payload):
        if op == Op.PING:
            return stuff(response_frame(Status.OK, seq, ident_payload(desc)))
        return stuff(response_frame(Status.BUS_ERROR, seq))
    pty.serve(answer)
    code, _, err = run_cli(capsys, "host", "--port", pty.name, "--config", "accel-2d",
                           "status")
    assert code == 1
    assert one_line(err) == "heterotron: host error: READ_REG: BUS_ERROR"
    assert [op for op, _, _ in pty.commands] == [Op.PING, Op.READ_REG]


def test_a_board_that_receives_garbage(capsys, pty):
    """Every frame answered BAD_CRC (as at a wrong baud rate): sent again twice (the device
    did nothing), then reported with the likely cause."""
    pty.serve(lambda op, seq, payload: stuff(response_frame(Status.BAD_CRC, seq)))
    code, _, err = run_cli(capsys, "host", "--port", pty.name, "--baud", "9600", "ping")
    assert code == 1
    assert one_line(err) == ("heterotron: host error: PING: BAD_CRC (the board received "
                             "corrupted frames, again and again: is --baud 9600 the board's "
                             "rate?)")
    assert [op for op, _, _ in pty.commands] == [Op.PING] * 3
    assert len({seq for _, seq, _ in pty.commands}) == 3  # each attempt its own seq


def test_a_board_that_stops_answering(capsys, pty):
    """PING answered, the next command not: a timeout naming that command."""
    desc = accel_2d()
    pty.serve(lambda op, seq, payload: stuff(response_frame(Status.OK, seq, ident_payload(
        desc))) if op == Op.PING else None)
    code, _, err = run_cli(capsys, "host", "--port", pty.name, "--timeout", "0.2", "counters")
    assert code == 1
    assert one_line(err) == (f"heterotron: {pty.name} stopped answering: READ_REG: no answer "
                             "(after 0.2 s)")


def test_without_pyserial(capsys, monkeypatch, pty):
    monkeypatch.setitem(sys.modules, "serial", None)  # import serial raises ImportError
    code, _, err = run_cli(capsys, "host", "--port", pty.name, "ping")
    assert code == 1
    assert one_line(err) == ("heterotron: host link: the serial transport needs pyserial: "
                             "pip install pyserial")


@pytest.mark.parametrize("argv, message", [
    (["ping"], "--port DEV is required"),
    (["--port", "X", "--config", "accel-2d", "--sidecar", "a.json", "ping"],
     "give --config or --sidecar, not both"),
    (["--port", "X", "--sidecar", "missing.json", "ping"], "sidecar missing.json not found"),
    (["--port", "X", "--timeout", "0", "ping"], "--timeout must be a positive number"),
    (["--port", "X", "gemm", "--m", "65"], "--m must be in [1, 64] (SA tile 2's max_m)"),
    (["--port", "X", "gemm", "--tile", "1"], "--tile 1 is not an SA tile; SA tiles: 2, 4"),
    (["--port", "X", "--config", "board", "run", "small"],
     "small does not compile for this description: the description has no PiM tile"),
    (["--port", "X", "--config", "encoder-small", "run", "small", "--tokens", "0"],
     "--tokens: tokens must be an integer in [1, 4096], not 0"),
])
def test_usage_errors(capsys, argv, message):
    """Mistakes in the arguments are found before the port is opened (``X`` is no port):
    status 2."""
    code, _, err = run_cli(capsys, "host", *argv)
    assert code == 2
    assert message in one_line(err)


def test_a_file_that_is_not_a_sidecar(capsys, tmp_path):
    bad = tmp_path / "accelerator.json"
    bad.write_text(json.dumps({"magic": 1}))
    code, _, err = run_cli(capsys, "host", "--port", "X", "--sidecar", str(bad), "ping")
    assert code == 2
    assert "is not an accelerator sidecar" in one_line(err)


def test_the_sidecar_file_is_the_one_generate_writes():
    """``--sidecar`` of the file ``generate accelerator`` writes (the cached one) gives the
    driver what ``--config`` computes: one definition."""
    from heterotron.scripts.host_cmd import load_sidecar
    from heterotron.sim.flows.accel import generate_accelerator

    side, desc = load_sidecar(str(generate_accelerator(accel_2d()).sidecar))
    want = json.loads(json.dumps(accel.sidecar(accel_2d())))
    # The file's "ports" is the Verilog module's port list (it replaces the contract's
    # operand ports of the same name); the driver reads neither.
    assert {k: side[k] for k in want if k != "ports"} == {k: v for k, v in want.items()
                                                          if k != "ports"}
    assert desc.config_hash == accel_2d().config_hash


# -- the GEMM the command runs, and its judgement ---------------------------------------------

def test_gemm_program_computes_the_product():
    """On the tile without requantisation, the interpreter's result of the command's program
    is A B, by NumPy; the image holds A and B where the program reads them."""
    desc = accel_2d()
    plain = [t for t in desc.of_kind(TileKind.SA) if not t.params["requant"]][0]
    job = gemm_job(desc, 7, 13, 6, seed=11, tile=plain.index)
    c = read_tensor(job.expected, job.c)
    assert np.array_equal(c, job.a.astype(np.int64) @ job.b.astype(np.int64))
    assert job.a.min() < -100 and job.a.max() > 100  # operands over the whole int8 range


def test_gemm_requantised_results_spread():
    """On the requantising tile the scale keeps most results off the rails (the check
    would be weak if every element saturated)."""
    desc = accel_2d()
    job = gemm_job(desc, 16, 64, 16, seed=2)
    assert job.params["requant"]
    c = read_tensor(job.expected, job.c)
    assert np.mean(np.abs(c) == 127) < 0.05 and np.std(c) > 8


def test_gemm_judgement_finds_every_difference():

    job = gemm_job(accel_2d(), 4, 4, 4, seed=1)
    assert compare(job, job.expected) == []
    wrong = bytearray(job.expected)
    at = job.c.row_start(2) + 3
    wrong[at] ^= 0x10
    problems = compare(job, bytes(wrong))
    assert problems == [f"1 of 16 result elements differ (first C[2][3]: board "
                        f"{np.int8(wrong[at])}, golden {np.int8(job.expected[at])})"]
    wrong = bytearray(job.expected)
    wrong[1] ^= 0xFF  # in A
    assert "1 bytes outside the result differ (first at byte 1" in compare(job, bytes(wrong))[0]


def test_command_is_registered():
    from heterotron.scripts import cli

    assert "host_cmd" in cli.COMMAND_MODULES
    assert Path(cli.__file__).with_name("host_cmd.py").is_file()
    parser = cli.build_parser()
    args = parser.parse_args(["host", "gemm", "--port", "P", "--m", "3"])
    assert (args.action, args.port, args.m, args.baud) == ("gemm", "P", 3, DEFAULT_BAUD)
    args = parser.parse_args(["host", "--port", "P", "--baud", "9600", "ping"])
    assert (args.action, args.port, args.baud) == ("ping", "P", 9600)

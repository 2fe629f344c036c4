"""``heterotron host``: the accelerator on a board, over its serial port, with the host driver
(:mod:`heterotron.sim.host.driver`) the simulation uses.

::

    heterotron host --port DEV [--baud N] [--config NAME|FILE | --sidecar FILE] [--timeout S]
                    ping | status | counters | gemm [--m M --k K --n N --seed S --tile T]
                    | run minilm|small [--tokens T]

The link options may also come after the action (``heterotron host ping --port DEV``). The
driver's constants (registers, tiles, memory map, config hash) come from the sidecar: the
``accelerator.json`` that ``heterotron generate accelerator`` wrote (``--sidecar``), or the same
one computed from the description (``--config``, as ``generate accelerator`` reads it). Every
action first checks that the board answers and runs that description (``PING``).

A failure of the link or of the board is one line on stderr and exit status 1 (a GEMM or a
model whose result differs from the golden interpreter's too); a mistake in the arguments, or
a model that does not compile for the description, status 2 (before the port is opened).

``run`` is what ``heterotron run`` does in simulation, over the link: one encoder layer
compiled for the board's description (``minilm``: all-MiniLM-L6-v2's layer 0 on the first
``T`` tokens of the shipped paragraphs; ``small``: the scale model's synthetic layer, hidden
32), the scratchpad images written, the program queued, and every tensor the program writes
read back and compared with the program interpreter's, bit for bit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from heterotron.hdl.contract.uart import DEFAULT_BAUD
from heterotron.scripts.common import (
    DEFAULT_CONFIG,
    Commands,
    ConfigError,
    UsageError,
    resolve_description,
)
from heterotron.sim.golden.jobs import GemmJob, compare, gemm_job

__all__ = ["add_commands", "cmd_host", "load_sidecar"]

#: Seconds the driver waits for each answer by default (a 1 KiB frame takes 10 ms at the
#: default 1 Mbaud, 90 ms at 115200; a board answers within microseconds of the frame's end).
DEFAULT_TIMEOUT = 2.0
#: Status polls before a program that does not finish counts as hung (each a register read,
#: well under a millisecond at the default baud rate).
WAIT_POLLS = 100_000
#: Models ``host run`` compiles, and their default token counts.
RUN_MODELS = ("minilm", "small")
RUN_TOKENS = {"minilm": 8, "small": 2}
#: The keys of a sidecar the driver and the GEMM need.
SIDECAR_KEYS = ("magic", "version", "config_hash", "description", "tiles", "registers",
                "tile_registers", "memory_map")


def add_commands(commands: Commands) -> None:
    p = commands.command(
        "host", "the accelerator on a board over its serial port: ping, status registers, "
        "tile counters, a random GEMM checked bit for bit against the golden interpreter",
        cmd_host)
    _link_args(p, after=False)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help in (
            ("ping", "check that the board runs the accelerator of the description"),
            ("status", "the control registers: running, errors, instructions retired, "
                       "program queue, cycles"),
            ("counters", "every tile's status, busy and stalled cycles, instructions")):
        _link_args(actions.add_parser(name, help=help), after=True)
    g = actions.add_parser("gemm", help="a random integer GEMM on an SA tile: operands "
                           "written, the program queued, the result read back and compared "
                           "with the golden interpreter; cycles and each tile's counters")
    _link_args(g, after=True)
    for dim, what in (("m", "rows of A and C"), ("k", "columns of A, rows of B"),
                      ("n", "columns of B and C")):
        g.add_argument(f"--{dim}", type=int, default=16,
                       help=f"{what} (default: %(default)s)")
    g.add_argument("--seed", type=int, default=None,
                   help="random seed of the operands (default: random, printed)")
    g.add_argument("--tile", type=int, default=None,
                   help="the SA tile's index (default: the description's first SA tile)")
    r = actions.add_parser("run", help="one encoder layer on the board: compiled for its "
                           "description, images written, program queued, every tensor it "
                           "writes read back and compared with the program interpreter")
    _link_args(r, after=True)
    r.add_argument("model", choices=RUN_MODELS,
                   help="minilm: all-MiniLM-L6-v2's layer 0 (needs a description with SFU "
                        "tiles and room for its weights); small: a synthetic layer of hidden "
                        "32 (fits configs/encoder-small.toml)")
    r.add_argument("--tokens", type=int, default=None,
                   help="tokens of the shipped paragraphs (default: 8 for minilm, 2 for "
                        "small)")


def _link_args(p: argparse.ArgumentParser, *, after: bool) -> None:
    """The link options, on ``host`` itself and again on each action (``after``: given
    there, they override; not given, they leave what came before the action)."""
    def default(value):
        return argparse.SUPPRESS if after else value
    p.add_argument("--port", default=default(None), metavar="DEV",
                   help="the serial device (/dev/ttyUSB1, COM3); required")
    p.add_argument("--baud", type=int, default=default(DEFAULT_BAUD),
                   help=f"bits per second (default: {DEFAULT_BAUD})")
    p.add_argument("--config", default=default(None), metavar="NAME|FILE.toml",
                   help="the accelerator description the board was built from (default: "
                        f"{DEFAULT_CONFIG}, as `heterotron generate accelerator`)")
    p.add_argument("--sidecar", default=default(None), metavar="FILE.json",
                   help="the accelerator.json `heterotron generate accelerator` wrote, "
                        "instead of --config")
    p.add_argument("--timeout", type=float, default=default(DEFAULT_TIMEOUT), metavar="S",
                   help=f"seconds to wait for each answer (default: {DEFAULT_TIMEOUT})")


# -- the sidecar ----------------------------------------------------------------------------------

def load_sidecar(path: str):
    """``(sidecar, description)`` of an ``accelerator.json``: the description parsed again
    from the sidecar and checked against its config hash."""
    from heterotron.hdl.accelerator import describe
    from heterotron.hdl.contract.accel import DescriptionError

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"sidecar {path} not found")
    try:
        side = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sidecar {path}: not JSON: {exc}") from None
    missing = [k for k in SIDECAR_KEYS if not isinstance(side, dict) or k not in side]
    if missing:
        raise ConfigError(f"{path} is not an accelerator sidecar (no {', '.join(missing)}); "
                          "`heterotron generate accelerator -o DIR` writes DIR/accelerator.json")
    canon = side["description"]
    try:
        desc = describe({**canon["params"], "planes": canon["planes"], "tile": canon["tiles"]})
    except (DescriptionError, KeyError, TypeError) as exc:
        raise ConfigError(f"sidecar {path}: its description does not parse: {exc}") from None
    if desc.config_hash != side["config_hash"]:
        raise ConfigError(f"sidecar {path}: config hash {side['config_hash']!r} is not its "
                          f"description's ({desc.config_hash}); written by another version "
                          "of heterotron? Generate it again")
    return side, desc


def _sidecar(args) -> tuple[str, dict[str, Any], Any]:
    """``(source, sidecar, description)`` from ``--sidecar`` or ``--config``."""
    from heterotron.hdl.contract import accel

    if args.sidecar is not None and args.config is not None:
        raise UsageError("give --config or --sidecar, not both")
    if args.sidecar is not None:
        side, desc = load_sidecar(args.sidecar)
        return args.sidecar, side, desc
    config = argparse.Namespace(config=args.config or DEFAULT_CONFIG, param=None)
    source, desc = resolve_description(config)
    return source, accel.sidecar(desc), desc


# -- the actions ------------------------------------------------------------------------------

def cmd_host(args) -> int:
    from heterotron.sim.host.driver import (
        Device,
        HostError,
        HostTimeout,
        LinkError,
        SerialTransport,
    )

    if not args.port:
        raise UsageError("host: --port DEV is required (the board's serial device, e.g. "
                         "/dev/ttyUSB1 or COM3)")
    if args.baud <= 0:
        raise UsageError(f"--baud must be a positive integer, not {args.baud}")
    if not args.timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    source, side, desc = _sidecar(args)
    job = None
    if args.action == "run":
        tokens = RUN_TOKENS[args.model] if args.tokens is None else args.tokens
        job = _compile_model(desc, args.model, tokens)
    if args.action == "gemm":
        if args.seed is None:
            args.seed = int.from_bytes(os.urandom(2), "little")
        try:
            job = gemm_job(desc, args.m, args.k, args.n, args.seed, args.tile)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def fail(msg: str) -> int:
        print(f"heterotron: {msg}", file=sys.stderr)
        return 1
    try:
        with SerialTransport(args.port, args.baud, write_timeout=max(args.timeout, 1.0)) \
                as link:
            dev = Device(link, side, timeout=args.timeout)
            try:
                ident, rtt = asyncio.run(_hello(dev))
            except HostTimeout as exc:
                return fail(f"no answer from {args.port} to {exc.op.name} within "
                            f"{args.timeout:g} s: is the board programmed with the "
                            f"accelerator and connected, at {args.baud} baud (--baud)?")
            if args.action == "ping":
                return _ping(args, source, ident, rtt)
            if args.action == "status":
                return _status(asyncio.run(dev.status()))
            if args.action == "counters":
                return _counters(asyncio.run(dev.counters()))
            if args.action == "run":
                return asyncio.run(_run_model(dev, job))
            return asyncio.run(_gemm(dev, job, args.seed))
    except LinkError as exc:
        return fail(f"host link: {exc}")
    except HostTimeout as exc:
        return fail(f"{args.port} stopped answering: {exc}")
    except HostError as exc:
        from heterotron.hdl.contract.hostlink import Status

        hint = (" (the board received corrupted frames, again and again: is --baud "
                f"{args.baud} the board's rate?)" if exc.status == Status.BAD_CRC else "")
        return fail(f"host error: {exc}{hint}")


async def _hello(dev) -> tuple[dict[str, int], float]:
    """Resynchronise (the board may hold a partial frame), then ``PING``."""
    await dev.resync()
    t0 = time.monotonic()
    ident = await dev.ping()
    return ident, time.monotonic() - t0


def _ping(args, source: str, ident: dict[str, int], rtt: float) -> int:
    print(f"PING {args.port}: the accelerator of {source}: {ident['tiles']} tiles, "
          f"{ident['word_bytes']}-byte words, contract version {ident['version']}, config "
          f"hash {ident['config_hash']:#010x} (answered in {rtt * 1e3:.1f} ms)")
    return 0


def _status(st: dict[str, int]) -> int:
    from heterotron.hdl.contract.accel import AccelError

    bits = st["status"]
    flags = AccelError(st["error"])
    rows = [("running", "yes" if bits & 1 else "no"),
            ("queue empty", "yes" if bits & 2 else "no"),
            ("error", f"{st['error']:#x} " + (" ".join(f.name for f in AccelError if f in flags)
                                             if st["error"] else "none")),
            ("retired", f"{st['retired']} instructions"),
            ("last id", str(st["last_id"])),
            ("queue free", f"{st['queue_free']} words"),
            ("cycles", f"{st['cycles']} since reset (low 32 bits)")]
    for name, value in rows:
        print(f"{name:<12} {value}")
    return 0


def _tile_status(word: int) -> str:
    flags = word >> 8
    return ("busy" if word & 1 else "idle") + (f", unit flags {flags:#x}" if flags else "")


def _counters(rows: list[dict[str, int]]) -> int:
    print(f"{'tile':>4}  {'kind':<8} {'busy':>12} {'stalled':>12} {'items':>8} {'last id':>8}"
          "  status")
    for r in rows:
        print(f"{r['tile']:>4}  {r['kind']:<8} {r['busy']:>12} {r['stalled']:>12} "
              f"{r['items']:>8} {r['last_id']:>8}  {_tile_status(r['status'])}")
    return 0


def _counter_deltas(tiles0: list[dict[str, int]], tiles1: list[dict[str, int]]) -> None:
    """Each tile's counters between two readings (modulo 2**32), and its status now."""
    print(f"  {'tile':>4}  {'kind':<8} {'busy':>10} {'stalled':>10} {'items':>6}  status")
    for t0, t1 in zip(tiles0, tiles1, strict=True):
        delta = {k: (t1[k] - t0[k]) & 0xFFFFFFFF for k in ("busy", "stalled", "items")}
        print(f"  {t1['tile']:>4}  {t1['kind']:<8} {delta['busy']:>10} {delta['stalled']:>10} "
              f"{delta['items']:>6}  {_tile_status(t1['status'])}")


async def _idle_board(dev):
    """Clear the error flags; ``(status, counters)`` of an idle board, or ``None`` (said on
    stderr) when it still runs a program."""
    await dev.clear_errors()
    before = await dev.status()
    if before["status"] & 1:
        print(f"heterotron: the board is still running a program (retired "
              f"{before['retired']}); wait, or reset it", file=sys.stderr)
        return None
    return before, await dev.counters()


async def _gemm(dev, job: GemmJob, seed: int) -> int:
    from tqdm import tqdm

    from heterotron.hdl.contract.accel import AccelError

    print(f"{job.describe()}, seed {seed}")
    addr = dev.address(job.mem)
    ready = await _idle_board(dev)
    if ready is None:
        return 1
    before, tiles0 = ready
    with tqdm(total=len(job.image), desc="writing operands", unit="B", unit_scale=True,
              leave=False, disable=None) as bar:
        await dev.write_mem(addr, job.image, progress=bar.update)
    start = await dev.read_reg(dev.registers["cycles"])
    await dev.write_program(job.words)
    after = await dev.wait_idle(polls=WAIT_POLLS)
    tiles1 = await dev.counters()
    with tqdm(total=len(job.image), desc="reading back", unit="B", unit_scale=True,
              leave=False, disable=None) as bar:
        got = await dev.read_mem(addr, len(job.image), progress=bar.update)
    cycles = (after["cycles"] - start) & 0xFFFFFFFF
    instructions = after["retired"] - before["retired"]
    print(f"  {len(job.image)} bytes written and read back, a program of {len(job.words)} "
          f"words ({job.result.retired} instructions)")
    print(f"  cycles {cycles} (CYCLES register, from queuing the program to reading it idle, "
          "the host link's polls included)")
    print("  during the GEMM:")
    _counter_deltas(tiles0, tiles1)
    problems = compare(job, got)
    if after["error"] != int(job.result.error):
        problems.append(f"error flags {AccelError(after['error'])!r}, golden "
                        f"{job.result.error!r}")
    if instructions != job.result.retired:
        problems.append(f"{instructions} instructions retired, golden {job.result.retired}")
    c = job.c
    if problems:
        print("FAIL: the board's GEMM differs from the golden interpreter's: "
              + "; ".join(problems))
        print(f"  again: gemm --m {job.m} --k {job.k} --n {job.n} --seed {seed} --tile "
              f"{job.sa.index}")
        return 1
    print(f"PASS: the {c.rows}x{c.cols} result and the {len(job.image)}-byte image equal the "
          "golden interpreter's, bit for bit; no error flags, "
          f"{instructions} instructions retired")
    return 0


def _compile_model(desc, model: str, tokens: int) -> dict[str, Any]:
    """One layer of ``model`` compiled for ``desc`` and run in the program interpreter:
    ``{model, tokens, comp, images, result}`` (the images and the interpreter's memories cut
    to what the program allocates). A model that does not compile, or a bad token count, is
    a :class:`UsageError`."""
    from heterotron.sim.golden.accel import Interpreter
    from heterotron.sim.golden.compiler import CompileError

    def say(msg):
        print(msg, file=sys.stderr, flush=True)
    try:
        if model == "minilm":
            from heterotron.sim.flows.encoder import EncoderRunError, inputs, load_encoder
            from heterotron.sim.golden.compiler import compile_encoder

            try:
                enc = load_encoder(None, say)
                _, _, x, xr, _ = inputs(enc, tokens=tokens)
            except EncoderRunError as exc:
                raise UsageError(str(exc)) from None
            comp = compile_encoder(enc, desc, x.shape[0], 1)
        else:
            from heterotron.sim.scale.model import workload_of
            from heterotron.sim.scale.runs import compile_workload

            try:
                wl = workload_of(model, tokens)
            except ValueError as exc:
                raise UsageError(f"--tokens: {exc}") from None
            comp, x, xr = compile_workload(desc, wl)
    except CompileError as exc:
        raise UsageError(f"{model} does not compile for this description: {exc}") from None
    images = comp.memories(x, xr)
    interp = Interpreter(desc, dict(images))
    interp.execute(comp.words)
    res = interp.result()
    extent = {t: -(-n // 4) * 4 for t, n in comp.allocated.items()}  # writes stay inside
    return {"model": model, "tokens": tokens, "comp": comp, "result": res,
            "images": {t: bytes(images[t][:n]) for t, n in extent.items()},
            "want": {t: bytes(res.memories[t][:n]) for t, n in extent.items()}}


async def _run_model(dev, job: dict[str, Any]) -> int:
    from tqdm import tqdm

    from heterotron.hdl.contract.accel import AccelError
    from heterotron.sim.flows.encoder import job_tensors

    comp, res, images = job["comp"], job["result"], job["images"]
    total = sum(len(b) for b in images.values())
    print(f"{job['model']}: one layer on {job['tokens']} tokens, {len(comp.words)} program "
          f"words ({res.retired} instructions), {total} bytes of scratchpad images")
    ready = await _idle_board(dev)
    if ready is None:
        return 1
    before, tiles0 = ready
    with tqdm(total=total, desc="writing images", unit="B", unit_scale=True, leave=False,
              disable=None) as bar:
        for t, data in images.items():
            await dev.write_mem(dev.address(t), data, progress=bar.update)
    start = await dev.read_reg(dev.registers["cycles"])
    await dev.write_program(comp.words)
    after = await dev.wait_idle(polls=WAIT_POLLS)
    tiles1 = await dev.counters()
    got = {}
    with tqdm(total=total, desc="reading back", unit="B", unit_scale=True, leave=False,
              disable=None) as bar:
        for t, data in images.items():
            got[t] = await dev.read_mem(dev.address(t), len(data), progress=bar.update)
    cycles = (after["cycles"] - start) & 0xFFFFFFFF
    instructions = after["retired"] - before["retired"]
    print(f"  cycles {cycles} (CYCLES register, from queuing the program to reading it idle, "
          "the host link's writes and polls included)")
    print("  during the layer:")
    _counter_deltas(tiles0, tiles1)
    problems = []
    tensors = job_tensors(comp)
    for tensor in tensors:
        have = comp.read(got, tensor["name"])
        want = comp.read(res.memories, tensor["name"])
        if not (have == want).all():
            bad = list(zip(*(have != want).nonzero(), strict=True))
            r, c = (int(v) for v in bad[0])
            problems.append(f"{tensor['name']} ({tensor['stage']}): {len(bad)} elements "
                            f"differ, first at [{r}, {c}]: {int(have[r, c])}, golden "
                            f"{int(want[r, c])}")
            break  # later stages read this one: the first difference is the one to chase
    stray = [t for t in images if got[t] != job["want"][t]]
    if stray and not problems:
        problems.append(f"bytes outside the tensors differ in memory tile(s) "
                        f"{', '.join(map(str, stray))}")
    if after["error"] != int(res.error):
        problems.append(f"error flags {AccelError(after['error'])!r}, golden {res.error!r}")
    if instructions != res.retired:
        problems.append(f"{instructions} instructions retired, golden {res.retired}")
    if problems:
        print("FAIL: the board's layer differs from the program interpreter's: "
              + "; ".join(problems))
        return 1
    print(f"PASS: all {len(tensors)} tensors the program writes and the {total}-byte images "
          "equal the program interpreter's, bit for bit; no error flags, "
          f"{instructions} instructions retired")
    return 0

"""``heterotron fpga synth|build|program``: out-of-context figures of one unit; the accelerator on
a board, description to bitstream; the bitstream onto the board."""

from __future__ import annotations

import json
from pathlib import Path

from heterotron.scripts.common import (
    Commands,
    UsageError,
    add_unit_args,
    fmt_params,
    resolve_description,
    resolve_unit,
)

__all__ = ["add_commands"]


def cmd_fpga_synth(args) -> int:
    from heterotron.sim.flows.build import generate
    from heterotron.sim.flows.fpga import fpga_synth

    unit, params = resolve_unit(args)
    gen = generate(unit, params)
    try:
        fig = fpga_synth(gen.verilog, gen.module, args.device, args.freq)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fig = {"unit": unit.name, "params": params, **fig}
    if args.json:
        print(json.dumps(fig, indent=2))
        return 0
    a = fig["available"]
    print(f"{unit.name} [{fmt_params(params)}] on {fig['device']} (out of context):")
    print(f"  Fmax        {fig['fmax_mhz']} MHz "
          f"({'meets' if fig['timing_met'] else 'misses'} {fig['constraint_mhz']:g} MHz)")
    print(f"  LUT4/logic  {fig['luts']} / {a['luts']}")
    print(f"  flip-flops  {fig['ffs']} / {a['ffs']}")
    print(f"  DSP (MULT18X18D) {fig['dsps']} / {a['dsps']}")
    print(f"  block RAM   {fig['brams']} / {a['brams']}")
    cp = fig.get("critical_path")
    if cp:
        print(f"  critical path {cp['total_ns']} ns ({cp['logic_ns']} logic, {cp['routing_ns']} "
              f"routing): {cp['from']} -> {cp['to']}")
    print(f"  tools: {fig['tools']}, LUT mapping {fig['lut_mapper']}; "
          f"synth {fig['synth_seconds']} s, place and route {fig['pnr_seconds']} s")
    return 0


def _build_dir(args, board) -> Path:
    from heterotron.sim.flows.build import build_root

    if args.output:
        return Path(args.output).resolve()
    config = Path(args.config).stem if args.config else board.config
    return build_root() / "fpga" / f"{board.name}-{config}"


def cmd_fpga_build(args) -> int:
    from heterotron.hdl.board import BOARDS
    from heterotron.sim.flows.board import build_board, format_report

    board = BOARDS[args.board]
    if args.config is None:
        args.config = board.config
    source, desc = resolve_description(args)
    out = _build_dir(args, board)
    try:
        report = build_board(board.name, desc, config=source, out_dir=out, freq_mhz=args.freq,
                             baud=args.baud, seed=args.seed, plan_only=args.plan)
    except ValueError as exc:  # a clock, baud rate or fit the board cannot make
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if not args.plan:
            print(f"  report      {out / 'report.txt'}")
    if args.plan:
        return 0
    return 0 if report["timing_met"] else 1


def cmd_fpga_program(args) -> int:
    import shutil
    import subprocess

    from heterotron.hdl.board import BOARDS

    board = BOARDS[args.board]
    if args.bitstream:
        bitstream = Path(args.bitstream)
    else:
        name = "top.bit" if board.family == "ecp5" else "top.bin"
        bitstream = _build_dir(args, board) / name
    if not bitstream.is_file():
        raise UsageError(f"no bitstream at {bitstream}: run heterotron fpga build --board "
                         f"{board.name} first (or give --bitstream FILE)")
    loader = shutil.which("openFPGALoader")
    if loader is None:
        raise UsageError("openFPGALoader is not installed: apt-get install openfpgaloader "
                         "(Debian/Ubuntu), brew install openfpgaloader (macOS), or build it from "
                         "https://github.com/trabucayre/openFPGALoader; then run this again. "
                         f"The bitstream is {bitstream}")
    cmd = [loader, *board.programmer, *(["-f"] if args.flash else []), str(bitstream)]
    print(" ".join(cmd))
    return subprocess.run(cmd).returncode


def add_commands(commands: Commands) -> None:
    from heterotron.sim.flows.fpga import DEVICES

    commands.group("fpga", "FPGA flows")
    p = commands.command("synth", "out-of-context synthesis and place and route of one unit: "
                         "LUTs, flip-flops, DSPs, block RAMs, Fmax", cmd_fpga_synth, group="fpga")
    add_unit_args(p)
    p.add_argument("--device", choices=tuple(DEVICES), default="ecp5-85f",
                   help="(default: %(default)s)")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock constraint for place and route (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    from heterotron.hdl.board import BOARDS
    from heterotron.hdl.contract.uart import DEFAULT_BAUD

    p = commands.command("build", "the accelerator on a board: synthesis, fit check, place and "
                         "route, bitstream (YoWASP tools from pip); utilisation, Fmax against "
                         "the target, critical path", cmd_fpga_build, group="fpga")
    p.add_argument("--board", choices=tuple(BOARDS), required=True)
    p.add_argument("--config", default=None,
                   help="accelerator description, a name or a TOML file (default: the "
                        "board's own: " + ", ".join(f"{b.name} -> {b.config}"
                                                    for b in BOARDS.values()) + ")")
    p.add_argument("--freq", type=float, default=None, metavar="MHZ",
                   help="the accelerator's clock (default: the board's, " + ", ".join(
                       f"{b.name} {b.default_mhz:g}" for b in BOARDS.values()) + " MHz)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help="UART baud rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="build folder (default: build/fpga/BOARD-CONFIG)")
    p.add_argument("--plan", action="store_true",
                   help="write the build files (RTLIL, Yosys script, pin and clock "
                        "constraints) and stop before running any tool")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = commands.command("program", "load a board's bitstream with openFPGALoader",
                         cmd_fpga_program, group="fpga")
    p.add_argument("--board", choices=tuple(BOARDS), required=True)
    p.add_argument("--config", default=None, help="the description it was built from (finds "
                   "the default build folder)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="the build folder given to fpga build")
    p.add_argument("--bitstream", default=None, metavar="FILE",
                   help="a bitstream file instead of the build folder's")
    p.add_argument("--flash", action="store_true",
                   help="write the configuration flash (kept after power-off) instead of SRAM")

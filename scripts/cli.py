"""``heterotron``: the command line.

Every unit-taking command has the same shape::

    heterotron <command> <unit> [--config NAME|FILE.toml] [--param k=v ...]

Parameters come from the unit's defaults, then the configuration's ``[<unit>]`` table, then
``--param``. A bad unit, parameter or configuration gives one line on stderr and exit status 2.

The commands live in the modules of :data:`COMMAND_MODULES`, each adding its own with
``add_commands`` (the protocol is in :mod:`heterotron.scripts.common`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from heterotron.hdl.contract.params import ParamError
from heterotron.scripts.common import Commands, ConfigError, UsageError
from heterotron.sim.flows.units import UnitError

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

#: The command modules, in the order ``heterotron --help`` lists their commands. A group
#: (``bench``, ``fpga``) is declared by the first module that uses it.
COMMAND_MODULES = ("unit_cmd", "run_cmd", "fpga_cmd", "accuracy_cmd", "bench_cmd", "noc_cmd",
                   "pim_cmd", "host_cmd", "model_cmd", "sweep_cmd")


def build_parser() -> argparse.ArgumentParser:
    try:
        version = metadata.version("heterotron")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    parser = argparse.ArgumentParser(
        prog="heterotron",
        description="RTL generator for a heterogeneous integer transformer accelerator.")
    parser.add_argument("--version", action="version", version=f"heterotron {version}")
    commands = Commands(parser.add_subparsers(dest="command", required=True,
                                              metavar="COMMAND"))
    for name in COMMAND_MODULES:
        importlib.import_module(f"heterotron.scripts.{name}").add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from heterotron.sim.flows.toolchain import ToolError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ParamError, UnitError, ConfigError, UsageError) as exc:
        print(f"heterotron: error: {exc}", file=sys.stderr)
        return 2
    except ToolError as exc:
        print(f"heterotron: tool error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("heterotron: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""What every ``heterotron`` command shares: the command protocol, configurations, and the
unit arguments (``<unit> [--config NAME|FILE.toml] [--param k=v ...]``).

**The command protocol.** A command module (``scripts/*_cmd.py``) has one entry point,
``add_commands(commands: Commands)``; in it, it declares each of its commands with
:meth:`Commands.command` (a name, a help line, the function that runs it, and the command
group for a sub-command such as ``bench gemm``), adds its arguments to the parser it gets
back, and nothing else. A run function takes the parsed arguments and returns the exit status.
It reports a user's mistake by raising :class:`UsageError`, :class:`ConfigError` or
``ParamError``; ``cli.main`` prints one line and exits with status 2. Command modules import
from here and from the flows, never from each other or from ``cli``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from heterotron.sim.flows.units import UNITS, Unit, get_unit

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["Commands", "ConfigError", "UsageError", "DEFAULT_CONFIG", "builtin_configs",
           "local_configs", "load_config", "parse_overrides", "add_unit_args", "resolve_unit",
           "param_pairs", "fmt_params"]

DEFAULT_CONFIG = "default"


class ConfigError(ValueError):
    """A configuration file is missing or malformed."""


class UsageError(ValueError):
    """A malformed command-line argument."""


class Commands:
    """The ``heterotron`` command tree that command modules add their commands to."""

    def __init__(self, sub: argparse._SubParsersAction):
        self._sub = sub
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def group(self, name: str, help: str) -> None:
        """Declare a command group (``heterotron <name> <command>``); declaring it again is a
        no-op, so several modules can add commands to one group."""
        if name not in self._groups:
            p = self._sub.add_parser(name, help=help)
            self._groups[name] = p.add_subparsers(dest=f"{name}_command", required=True,
                                                  metavar=f"{name.upper()}_COMMAND")

    def command(self, name: str, help: str, run: Callable[[argparse.Namespace], int],
                group: str | None = None) -> argparse.ArgumentParser:
        """Declare ``heterotron [group] name``, run by ``run(args)``; returns its parser."""
        if group is not None and group not in self._groups:
            raise KeyError(f"command group {group!r} is not declared")
        p = (self._groups[group] if group else self._sub).add_parser(name, help=help)
        p.set_defaults(run=run)
        return p


def builtin_configs() -> dict[str, Any]:
    """Configurations shipped with the package (``configs/*.toml``)."""
    found = {}
    for entry in resources.files("heterotron.configs").iterdir():
        if entry.name.endswith(".toml"):
            found[entry.name.removesuffix(".toml")] = entry
    return found


def local_configs() -> dict[str, Path]:
    local = Path("configs")
    return {p.stem: p for p in sorted(local.glob("*.toml"))} if local.is_dir() else {}


def load_config(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Read a configuration: a TOML path, or the name of one in ``./configs`` or built in."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"configuration file {name_or_path} not found")
        source, text = str(path), path.read_text()
    elif name_or_path in local_configs():
        source = str(local_configs()[name_or_path])
        text = local_configs()[name_or_path].read_text()
    elif name_or_path in builtin_configs():
        source, text = f"built-in {name_or_path}", builtin_configs()[name_or_path].read_text()
    else:
        names = sorted(set(builtin_configs()) | set(local_configs()))
        raise ConfigError(f"no configuration {name_or_path!r}; known: {', '.join(names)} "
                          "(or give a path to a .toml file)")
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for unit, table in config.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {unit!r} must be a table [{unit}] of parameters")
        if unit not in UNITS and unit not in (ACCELERATOR, MODEL):
            raise ConfigError(f"{source}: unknown unit [{unit}]; known units: {', '.join(UNITS)}")
    return source, config


#: The table of an accelerator description (``heterotron generate/sim accelerator``), and the
#: configuration used when the one given has none.
ACCELERATOR = "accelerator"
DEFAULT_ACCELERATOR = "accel-2d"
#: A description's assumptions for the scale model (``heterotron model``): clock, node, tile size.
MODEL = "model"


def resolve_description(args):
    """The checked accelerator description of ``--config`` (or of ``accel-2d`` when that
    configuration has no ``[accelerator]`` table); every problem listed."""
    from heterotron.hdl.accelerator import describe
    from heterotron.hdl.contract.accel import DescriptionError

    if getattr(args, "param", None):
        raise UsageError("--param does not apply to the accelerator: edit its description")
    source, config = load_config(args.config)
    if ACCELERATOR not in config:
        source, config = load_config(DEFAULT_ACCELERATOR)
    try:
        return source, describe(config[ACCELERATOR])
    except DescriptionError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param expects name=value, not {pair!r}")
        out[key.strip()] = value.strip()
    return out


def add_unit_args(p: argparse.ArgumentParser, unit: bool = True) -> None:
    """``<unit> --config --param``; without ``unit`` the command names its unit itself."""
    if unit:
        p.add_argument("unit", help=f"unit name ({', '.join(UNITS)}) or {ACCELERATOR} (the "
                       "whole accelerator of the configuration's [accelerator] description)")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="configuration name or TOML file (default: %(default)s)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter (repeatable)")


def resolve_unit(args, unit_name: str | None = None) -> tuple[Unit, dict[str, Any]]:
    """The unit and its parameters: defaults, then the configuration's table, then
    ``--param``; validated before any tool runs."""
    unit = get_unit(unit_name or args.unit)
    _, config = load_config(args.config)
    params = unit.resolve(config.get(unit.name, {}), parse_overrides(args.param))
    unit.validate(params)
    return unit, params


def param_pairs(params: dict[str, Any]) -> list[str]:
    """``name=value`` as a user types it (booleans as true/false)."""
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]


def fmt_params(params: dict[str, Any]) -> str:
    return " ".join(param_pairs(params))

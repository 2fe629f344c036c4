"""``heterotron sweep``: a design-space sweep of the architecture-scale model on Dask.

The space file (format in :mod:`heterotron.sim.scale.sweep`) names a base description; this
module reads both files (the base with :func:`~heterotron.scripts.common.load_config`) and
hands the tables down, runs the sweep on a local cluster or a running scheduler, and writes
``sweep.json`` and ``pareto.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from heterotron.scripts.common import (
    Commands,
    ConfigError,
    UsageError,
    load_config,
)

__all__ = ["add_commands", "load_space"]

#: Local cluster workers when --workers is not given.
DEFAULT_WORKERS = 2


def load_space(name_or_path: str):
    """The checked :class:`~heterotron.sim.scale.sweep.Space` of a space file.

    Parameters
    ----------
    name_or_path : str
        A ``.toml`` path or the name of a file under ``configs/``.

    Returns
    -------
    Space

    Raises
    ------
    ConfigError
        The file or its base is missing or malformed, or the space has problems (each named).
    """
    from heterotron.sim.scale.sweep import SpaceError, base_name, parse_space

    # the same lookup as a description's: a .toml path, or a name under configs/
    source, doc = load_config(name_or_path)
    path = Path(source)
    name = path.stem if path.is_file() else name_or_path
    folder = path.parent if path.is_file() else None
    try:
        base = base_name(doc, source)
    except SpaceError as exc:
        raise ConfigError(exc.problems[0]) from None
    # a relative base path is the space file's neighbour when it exists there
    if folder is not None and base.endswith(".toml") and not Path(base).is_absolute() \
            and (folder / base).is_file():
        base = str(folder / base)
    try:
        base_source, config = load_config(base)
    except ConfigError as exc:
        raise ConfigError(f"{source}: accelerator.base: {exc}") from None
    try:
        return parse_space(doc, config, name=name, source=source, base_source=base_source)
    except SpaceError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def cmd_sweep(args) -> int:
    from heterotron.sim.scale.sweep import (
        EVALUATORS,
        SchedulerError,
        format_sweep,
        run_sweep,
        write_outputs,
    )

    if args.scheduler and args.workers is not None:
        raise UsageError("--workers sizes the local cluster; with --scheduler the cluster's "
                         "own workers run the points")
    workers = DEFAULT_WORKERS if args.workers is None else args.workers
    if workers < 1:
        raise UsageError(f"--workers must be a positive integer, not {workers}")
    if args.tokens is not None and not 1 <= args.tokens <= 4096:
        raise UsageError(f"--tokens must be an integer in [1, 4096], not {args.tokens}")
    space = load_space(args.space)
    try:
        result = run_sweep(space, workload=args.workload, tokens=args.tokens,
                           evaluator=EVALUATORS[args.evaluator], scheduler=args.scheduler,
                           workers=workers, progress=True)
    except SchedulerError as exc:
        raise UsageError(f"--scheduler: {exc}") from None
    out = Path(args.output) if args.output else Path("build") / "sweep" / space.name
    paths = write_outputs(result, out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_sweep(result))
        print(f"  wrote {paths['json']}")
        print(f"  wrote {paths['png']}")
    if result["counts"]["errors"]:
        print(f"heterotron: {result['counts']['errors']} points failed in the evaluator (see "
              f"{paths['json']})", file=sys.stderr)
        return 1
    return 0


def add_commands(commands: Commands) -> None:
    from heterotron.sim.scale.model import WORKLOADS
    from heterotron.sim.scale.sweep import EVALUATORS

    p = commands.command("sweep", "design-space sweep on Dask: the scale model's latency, "
                         "energy and peak temperature over the product of a space file's axes, "
                         "with the Pareto front", cmd_sweep)
    p.add_argument("--space", required=True, metavar="FILE",
                   help="the space file (a .toml path or a name under configs/, e.g. "
                        "sweep-small): a base description and axes over its parameters")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://host:port); by default a local "
                        "cluster is started")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"local cluster worker processes (default: {DEFAULT_WORKERS})")
    p.add_argument("--workload", choices=tuple(WORKLOADS), default=None,
                   help="overrides the space's [model] workload")
    p.add_argument("--evaluator", choices=tuple(EVALUATORS), default="model",
                   help="model: the calibrated scale model (default); rtl: each point's layer "
                        "run on its RTL (Verilator; small points only, e.g. --workload small "
                        "--tokens 2), with the model's error beside it")
    p.add_argument("--tokens", type=int, default=None, metavar="T",
                   help="overrides the space's [model] tokens")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="where sweep.json and pareto.png go (default: build/sweep/<space>)")
    p.add_argument("--json", action="store_true", help="print the JSON document on stdout")

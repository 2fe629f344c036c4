"""``heterotron model`` and ``heterotron calibrate``: the architecture-scale model's projection of
a workload on a description, and its calibration against the RTL runs."""

from __future__ import annotations

import json

from heterotron.scripts.common import (
    MODEL,
    Commands,
    ConfigError,
    UsageError,
    load_config,
    resolve_description,
)

__all__ = ["add_commands"]


def cmd_model(args) -> int:
    from heterotron.sim.golden.compiler import CompileError
    from heterotron.sim.scale.model import (
        Assumptions,
        format_projection,
        project,
        project_rtl,
    )

    _, config = load_config(args.config)
    if "accelerator" not in config:
        raise ConfigError(f"{args.config}: no [accelerator] table: the model needs an "
                          "accelerator description (e.g. scale-2d, scale-3d, encoder)")
    source, desc = resolve_description(args)
    try:
        assume = Assumptions.from_table(config.get(MODEL), clock_mhz=args.clock_mhz,
                                        node_nm=args.node_nm, tile_mm=args.tile_mm)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        if args.rtl:
            r = project_rtl(desc, args.workload, tokens=args.tokens, assumptions=assume)
        else:
            r = project(desc, args.workload, tokens=args.tokens, assumptions=assume)
    except CompileError as exc:
        raise UsageError(f"{args.workload} does not compile for {source}: {exc}") from None
    except ValueError as exc:  # TooLargeForRtl too
        raise UsageError(str(exc)) from None
    r = {"config": source, **r}
    print(json.dumps(r, indent=2) if args.json else format_projection(r))
    return 0


def cmd_calibrate(args) -> int:
    from heterotron.sim.scale.calibration import COEFFICIENTS_PATH, format_calibration, run

    if args.scalesim:
        return _scalesim_check(args)
    report = run(write=args.write)
    print(json.dumps(report, indent=2) if args.json else format_calibration(report))
    if args.write:
        print(f"  wrote {COEFFICIENTS_PATH}")
    return 0


def _scalesim_check(args) -> int:
    """``heterotron calibrate --scalesim``: the SA model against SCALE-Sim."""
    from heterotron.sim.scale.scalesim_check import ScaleSimMissing, format_check, run

    if args.write:
        raise UsageError("--scalesim writes nothing: drop --write")
    try:
        report = run()
    except ScaleSimMissing as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(report, indent=2) if args.json else format_check(report), end="")
    return 0


def add_commands(commands: Commands) -> None:
    from heterotron.sim.scale.model import WORKLOADS

    p = commands.command("model", "architecture-scale model: latency, energy (a range) and "
                         "peak temperature of a workload on a description, from the "
                         "calibrated performance model", cmd_model)
    p.add_argument("--config", required=True,
                   help="accelerator description (a name or a TOML file); its [model] table "
                        "may set clock_mhz, node_nm, tile_mm")
    p.add_argument("--workload", choices=tuple(WORKLOADS), required=True)
    p.add_argument("--tokens", type=int, default=128, help="sequence length (default: "
                   "%(default)s)")
    p.add_argument("--clock-mhz", type=float, default=None, help="overrides [model] clock_mhz")
    p.add_argument("--node-nm", type=float, default=None, help="overrides [model] node_nm")
    p.add_argument("--tile-mm", type=float, default=None, help="overrides [model] tile_mm")
    p.add_argument("--rtl", action="store_true",
                   help="run the layer on the RTL (Verilator) and take its cycles, the model's "
                        "beside them; small layers only (e.g. --workload small --tokens 2)")
    p.add_argument("--json", action="store_true")

    p = commands.command("calibrate", "fit the performance model to the shipped RTL runs and "
                         "score it on the held-out ones (per tile kind and per layer)",
                         cmd_calibrate)
    p.add_argument("--write", action="store_true",
                   help="write the fitted costs to the shipped calibration file")
    p.add_argument("--scalesim", action="store_true",
                   help="instead: cross-check the SA tile's model and RTL cycles against "
                        "SCALE-Sim on the same GEMMs (needs the scalesim extra)")
    p.add_argument("--json", action="store_true")

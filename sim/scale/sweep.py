"""Design-space sweeps of the architecture-scale model on a Dask cluster (``heterotron sweep``).

A *space* is a base accelerator description and a few *axes* over its parameters; the sweep
is their Cartesian product. Every point is an ``[accelerator]`` table, evaluated by an
*evaluator* (by default :func:`evaluate`: :func:`~heterotron.sim.scale.model.project`'s
latency, energy, EDP and peak temperature; for small points, :func:`evaluate_rtl` runs each
on the RTL instead) on the workers of a ``distributed.LocalCluster`` or
of a running scheduler. The results are rows, one a point, and the Pareto front of the feasible
ones in latency and energy (the high end of the range).

**The space file** (TOML). Its two tables reuse the names a configuration has, ``[model]`` and
``[accelerator]`` (so ``heterotron list``, which reads every file under ``configs/``, accepts
it), but ``[accelerator]`` here is a *family* of descriptions, not one::

    [model]                  # what the scale model is asked (all optional)
    workload = "minilm"      # or "bert-base"; --workload overrides
    tokens = 16              # sequence length; --tokens overrides
    clock_mhz = 500.0        # clock_mhz, node_nm, tile_mm: over the base's own [model]

    [accelerator]
    base = "scale-2d"        # the base description: a configuration name or a .toml path

    [accelerator.axes]       # each axis: a non-empty list of values
    "pim.count" = [2, 11]
    "pim.enob" = [5, 7]
    tiers = [1, 2]

The axes (applied to the base in this order, whatever the order in the file):

``pim.count``
    Keep the first ``n`` PiM tiles (as :func:`heterotron.sim.flows.encoder.with_pim_tiles`);
    an integer in ``[1, the base's PiM tiles]``.
``<kind>.<parameter>``
    Set ``parameter`` on every tile of ``kind`` (``control``, ``memory``, ``sa``, ``pim``,
    ``sfu``; the base must have one): ``sa.rows``, ``pim.enob``, ``sfu.lanes``, ...
``accelerator.<parameter>``
    A description-wide parameter: ``flit_width``, ``buffer_depth``, ``max_packet``. The mesh
    (``nx``, ``ny``, ``nz``) follows the placement: sweep ``tiers`` instead.
``tiers``
    Re-place the same tiles, in their order, on ``nz`` tiers (:func:`place`).

An axis may be written quoted (``"pim.count" = [...]``) or dotted (``pim.count = [...]``,
a nested TOML table); both mean the same. :func:`parse_space` checks the file and every value
of every axis alone on the base with :func:`~heterotron.hdl.accelerator.describe`, and refuses
a bad one naming the key and what is allowed. A *combination* the description refuses, or a
workload that does not compile for a point (:class:`~heterotron.sim.golden.compiler.
CompileError`, e.g. an SFU ``max_row`` below the hidden size), is not an error: the point is
recorded as infeasible, with the message.

**Layers.** This module is in the flows layer: it takes the base configuration as a table
(the command layer, ``scripts/sweep_cmd.py``, reads the files) and never imports the
command layer.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heterotron.hdl.contract.noc import MESH_PARAMS
from heterotron.sim.scale.model import WORKLOADS, Assumptions

__all__ = [
    "KINDS", "ACCEL_AXES", "SpaceError", "SchedulerError", "Space", "Evaluator", "base_name",
    "parse_space", "apply_point", "place", "retier", "evaluate", "evaluate_rtl", "EVALUATORS",
    "run_sweep", "pareto_front",
    "plot_pareto", "write_outputs", "format_sweep",
]

#: Tile kinds an axis ``<kind>.<parameter>`` may name.
KINDS = ("control", "memory", "sa", "pim", "sfu")
#: Description-wide parameters an axis ``accelerator.<parameter>`` may name.
ACCEL_AXES = ("buffer_depth", "flit_width", "max_packet")
#: The mesh parameters, which ``tiers`` sets.
_MESH = ("nx", "ny", "nz")
#: The largest mesh a description may have along each axis (``MESH_PARAMS``: 8, 8, 4).
_MESH_LIMITS = {q.name: q.hi for q in MESH_PARAMS if q.name in _MESH}
#: Keys of a space's two tables.
_MODEL_KEYS = ("workload", "tokens", "clock_mhz", "node_nm", "tile_mm")
_ACCEL_KEYS = ("base", "axes")
_DEFAULT_WORKLOAD = "minilm"
_DEFAULT_TOKENS = 128


class SpaceError(ValueError):
    """A space file has problems; ``problems`` lists them, one line each, each naming the key.

    Parameters
    ----------
    problems : list of str
        One line a problem.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("space has " + (
            f"{len(self.problems)} problems:\n  " if len(self.problems) > 1 else "a problem: ")
            + "\n  ".join(self.problems))


class SchedulerError(RuntimeError):
    """The Dask scheduler given could not be reached."""


#: An evaluator: ``(point_table, workload, tokens, assumptions) -> result``. See
#: :func:`evaluate` for the result it returns.
Evaluator = Callable[[dict[str, Any], str, int, Assumptions], dict[str, Any]]


# --- the space -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """A checked design space: a base description and its axes.

    Attributes
    ----------
    name : str
        The space's name (its file's stem): the default output folder is
        ``build/sweep/<name>``.
    source : str
        Where the space came from (a path, for the reproduction command).
    base_source : str
        Where the base description came from.
    base : dict
        The base ``[accelerator]`` table.
    axes : dict of str to tuple
        Each axis and its values, in the file's order.
    assumptions : Assumptions
        The scale model's assumptions: the base's ``[model]``, then the space's.
    workload : str
        The default workload (one of :data:`~heterotron.sim.scale.model.WORKLOADS`).
    tokens : int
        The default sequence length.
    """

    name: str
    source: str
    base_source: str
    base: dict[str, Any]
    axes: dict[str, tuple[Any, ...]]
    assumptions: Assumptions = field(default_factory=Assumptions)
    workload: str = _DEFAULT_WORKLOAD
    tokens: int = _DEFAULT_TOKENS

    @property
    def size(self) -> int:
        """The number of points: the product of the axes' lengths."""
        return math.prod(len(v) for v in self.axes.values())

    def points(self) -> list[dict[str, Any]]:
        """Every point of the product, the last axis varying fastest.

        Returns
        -------
        list of dict
            One ``{axis: value}`` a point.
        """
        keys = list(self.axes)
        return [dict(zip(keys, values, strict=True))
                for values in itertools.product(*self.axes.values())]

    def table(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The ``[accelerator]`` table of a point (:func:`apply_point` on the base).

        Parameters
        ----------
        point : mapping
            Axis values; an axis left out keeps the base's value.

        Returns
        -------
        dict
            A new table; the base is not changed.

        Raises
        ------
        SpaceError
            The point names an axis the space does not have, or cannot be placed.
        """
        unknown = [k for k in point if k not in self.axes]
        if unknown:
            raise SpaceError(f"axes.{unknown[0]}: not an axis of this space (axes: "
                             f"{', '.join(self.axes)})")
        return apply_point(self.base, point)

    def summary(self) -> dict[str, Any]:
        """The space as JSON: names, sources, axes, the size and the base description."""
        return {"name": self.name, "source": self.source, "base": self.base_source,
                "axes": {k: list(v) for k, v in self.axes.items()}, "points": self.size,
                "base_description": self.base}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"pim": {"count": [...]}}`` -> ``("pim.count", [...])`` (dotted TOML keys)."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def base_name(doc: Mapping[str, Any], source: str = "space") -> str:
    """The base description a space document names (``[accelerator] base``).

    The command layer calls this to know which configuration to load before
    :func:`parse_space`.

    Parameters
    ----------
    doc : mapping
        The space file, parsed.
    source : str
        Where it came from, for the message.

    Returns
    -------
    str
        A configuration name or a ``.toml`` path.

    Raises
    ------
    SpaceError
        ``[accelerator]`` or its ``base`` is missing or not a string.
    """
    accel = doc.get("accelerator")
    base = accel.get("base") if isinstance(accel, Mapping) else None
    if not isinstance(base, str) or not base.strip():
        raise SpaceError(f"{source}: accelerator.base is required: the base description, a "
                         "configuration name or a .toml path (e.g. base = \"scale-2d\")")
    return base.strip()


def _tile_problems(exc: Exception) -> list[str]:
    """A DescriptionError's problems, a tile's index dropped and repeats merged (an axis sets
    every tile of a kind, so each would say the same)."""
    problems = getattr(exc, "problems", None) or [str(exc)]
    out: list[str] = []
    for p in problems:
        p = re.sub(r"^tile \d+ \((\w+)\): ", r"\1 tiles: ", p)
        if p not in out:
            out.append(p)
    return out


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str))


def parse_space(doc: Mapping[str, Any], base: Mapping[str, Any], *, name: str,
                source: str = "space", base_source: str = "base") -> Space:
    """Check a space document against its base and return the :class:`Space`.

    Parameters
    ----------
    doc : mapping
        The space file, parsed (format in the module documentation).
    base : mapping
        The base configuration, parsed: its ``[accelerator]`` table and optionally its
        ``[model]`` table (loaded by the command layer, e.g. ``load_config``).
    name : str
        The space's name (the file's stem).
    source, base_source : str
        Where the space and the base came from, for messages and the reproduction command.

    Returns
    -------
    Space

    Raises
    ------
    SpaceError
        Every problem found, each naming its key: an unknown table, key or axis, an empty or
        malformed list of values, a value out of range or refused by the description.
    """
    from heterotron.hdl.accelerator import describe
    from heterotron.hdl.contract.accel import DescriptionError

    problems: list[str] = []
    for key, value in doc.items():
        if key not in ("model", "accelerator"):
            problems.append(f"[{key}]: unknown table; a space has [model] "
                            f"({', '.join(_MODEL_KEYS)}) and [accelerator] "
                            f"({', '.join(_ACCEL_KEYS)})")
        elif not isinstance(value, Mapping):
            problems.append(f"{key} must be a table [{key}], not {value!r}")
    model = doc.get("model") if isinstance(doc.get("model"), Mapping) else {}
    accel = doc.get("accelerator") if isinstance(doc.get("accelerator"), Mapping) else {}
    problems += [f"model.{k}: unknown key; known: {', '.join(_MODEL_KEYS)}"
                 for k in model if k not in _MODEL_KEYS]
    problems += [f"accelerator.{k}: unknown key; known: {', '.join(_ACCEL_KEYS)}"
                 for k in accel if k not in _ACCEL_KEYS]
    try:
        base_name(doc, source)
    except SpaceError as exc:
        problems.append(exc.problems[0].removeprefix(f"{source}: "))

    # the model: workload, tokens and the assumptions over the base's
    workload = model.get("workload", _DEFAULT_WORKLOAD)
    if workload not in WORKLOADS:
        problems.append(f"model.workload must be one of {', '.join(WORKLOADS)}, not "
                        f"{workload!r}")
    tokens = model.get("tokens", _DEFAULT_TOKENS)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 4096:
        problems.append(f"model.tokens must be an integer in [1, 4096], not {tokens!r}")
    base_model = base.get("model") or {}
    assume = Assumptions()
    try:
        assume = Assumptions.from_table({**base_model, **{
            k: v for k, v in model.items() if k in ("clock_mhz", "node_nm", "tile_mm")}})
    except ValueError as exc:
        problems.append(str(exc))

    # the base description
    table = base.get("accelerator")
    if not isinstance(table, Mapping):
        raise SpaceError(problems + [f"accelerator.base: {base_source} has no [accelerator] "
                                     "description"])
    table = copy.deepcopy(dict(table))
    try:
        desc = describe(table)
    except DescriptionError as exc:
        raise SpaceError(problems + [f"accelerator.base: {base_source} is refused: {p}"
                                     for p in exc.problems]) from None
    known = {}
    for t in desc.tiles:
        known.setdefault(t.kind.name.lower(), set()).update(t.params)
    n_pim = sum(1 for t in table.get("tile", []) if t.get("kind") == "pim")

    # the axes
    raw_axes = accel.get("axes")
    if not isinstance(raw_axes, Mapping) or not raw_axes:
        problems.append("accelerator.axes is required: a table of at least one axis, e.g. "
                        "[accelerator.axes] \"pim.enob\" = [5, 7]")
        raw_axes = {}
    axes: dict[str, tuple[Any, ...]] = {}
    for key, values in _flatten(raw_axes):
        where = f"axes.{key}"
        problem = _axis_problem(key, known)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if not isinstance(values, list):
            problems.append(f"{where} must be a list of values, e.g. [{values!r}], not "
                            f"{values!r}")
            continue
        if not values:
            problems.append(f"{where} is an empty list: give at least one value")
            continue
        bad = [v for v in values if not _scalar(v)]
        if bad:
            problems.append(f"{where}: values must be numbers, strings or booleans, not "
                            f"{bad[0]!r}")
            continue
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            problems.append(f"{where} lists {twice[0]!r} twice")
            continue
        ok = True
        for v in values:
            if key == "pim.count" and (isinstance(v, bool) or not isinstance(v, int)
                                       or not 1 <= v <= n_pim):
                problems.append(f"{where} = {v!r}: must be an integer in [1, {n_pim}] (the "
                                "base's PiM tiles)")
                ok = False
                continue
            try:
                describe(apply_point(table, {key: v}))
            except SpaceError as exc:
                problems += [f"{where} = {v!r}: {p}" for p in exc.problems]
                ok = False
            except DescriptionError as exc:
                problems += [f"{where} = {v!r}: the description refuses it: {p}"
                             for p in _tile_problems(exc)]
                ok = False
        if ok:
            axes[key] = tuple(values)
    if problems:
        raise SpaceError(problems)
    return Space(name=name, source=source, base_source=base_source, base=table, axes=axes,
                 assumptions=assume, workload=workload, tokens=tokens)


def _axis_problem(key: str, known: dict[str, set[str]]) -> str | None:
    """Why ``key`` is not an axis of the base (``known``: each kind's parameters), or None."""
    if key in ("tiers", "pim.count"):
        if key == "pim.count" and "pim" not in known:
            return "the base description has no pim tile"
        return None
    head, dot, param = key.partition(".")
    if head == "accelerator" and dot and "." not in param:
        if param in _MESH:
            return (f"the mesh follows the placement: sweep tiers instead (accelerator axes: "
                    f"{', '.join(ACCEL_AXES)})")
        if param not in ACCEL_AXES:
            return f"unknown accelerator axis {param!r}; known: {', '.join(ACCEL_AXES)}"
        return None
    if head in KINDS and dot and "." not in param:
        if head not in known:
            present = ", ".join(sorted(known))
            return f"the base description has no {head} tile (it has {present})"
        if param not in known[head]:
            return (f"{head} tiles have no parameter {param!r}; known: "
                    f"{', '.join(sorted(known[head]))}")
        return None
    return ("unknown axis; axes are tiers, pim.count, accelerator.<"
            f"{'|'.join(ACCEL_AXES)}> and <kind>.<parameter> for a kind of the base's tiles "
            f"({', '.join(k for k in KINDS if k in known)})")


def apply_point(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """An ``[accelerator]`` table with a point's axis values applied.

    In order: ``pim.count`` (keep the first ``n`` PiM tiles), then ``<kind>.<parameter>`` on
    every tile of the kind, then ``accelerator.<parameter>``, then ``tiers`` (:func:`retier`).
    The result is not checked: :func:`~heterotron.hdl.accelerator.describe` does that.

    Parameters
    ----------
    base : mapping
        The base ``[accelerator]`` table (not changed).
    point : mapping
        ``{axis: value}``.

    Returns
    -------
    dict
        The point's table.

    Raises
    ------
    SpaceError
        An unknown axis, a PiM count out of range, or tiers that cannot hold the tiles.
    """
    table = copy.deepcopy(dict(base))
    if "pim.count" in point:
        from heterotron.sim.flows.encoder import with_pim_tiles

        n = point["pim.count"]
        have = sum(1 for t in table.get("tile", []) if t.get("kind") == "pim")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= have:
            raise SpaceError(f"pim.count must be an integer in [1, {have}] (the base's PiM "
                             f"tiles), not {n!r}")
        table = with_pim_tiles(table, n)
    for key, value in point.items():
        head, _, param = key.partition(".")
        if key in ("pim.count", "tiers"):
            continue
        if head in KINDS and param:
            for t in table.get("tile", []):
                if t.get("kind") == head:
                    t[param] = value
        elif head == "accelerator" and param:
            table[param] = value
        else:
            raise SpaceError(f"axes.{key}: unknown axis")
    if "tiers" in point:
        table = retier(table, point["tiers"])
    return table


def place(n_tiles: int, tiers: int) -> tuple[tuple[int, int, int], list[list[int]]]:
    """A mesh for ``n_tiles`` tiles on ``tiers`` tiers, and each tile's position.

    Each tier is ``nx`` x ``ny`` with room for ``ceil(n_tiles / tiers)`` tiles: of the shapes
    that hold them (within the mesh's limits, ``nx, ny <= 8``; ``nz <= 4``), the one with the
    least ``nx + ny`` (the shortest routes across a tier), then the fewest empty nodes, then
    the wider in x. The tiles are placed in their order filling x, then y, then z: tile ``i``
    at ``x = i mod nx``, ``y = (i div nx) mod ny``, ``z = i div (nx ny)``. So the first tiles
    (in the shipped descriptions the control, memory, SA and SFU tiles) sit on tier 0, next to
    the heat sink; 16 tiles on 1 tier are 4x4 (as ``scale-2d``), on 2 tiers 4x2x2 (the mesh of
    ``scale-3d``, which places its PiM tiles differently).

    Parameters
    ----------
    n_tiles : int
        How many tiles (at least 1).
    tiers : int
        The mesh's ``nz``, 1 to 4.

    Returns
    -------
    (nx, ny, nz), positions
        The mesh, and ``[x, y, z]`` for each tile in order.

    Raises
    ------
    SpaceError
        ``tiers`` is not an integer in [1, 4], a tier would need more than 8x8 nodes, or the
        tiles would leave a tier empty.
    """
    max_xy, max_z = (_MESH_LIMITS[k] for k in ("nx", "nz"))
    if isinstance(tiers, bool) or not isinstance(tiers, int) or not 1 <= tiers <= max_z:
        raise SpaceError(f"tiers must be an integer in [1, {max_z}] (the mesh's nz), not "
                         f"{tiers!r}")
    if n_tiles < 1:
        raise SpaceError("there are no tiles to place")
    per = -(-n_tiles // tiers)
    shapes = [(nx + ny, nx * ny - per, -nx, nx, ny)
              for nx in range(1, max_xy + 1) for ny in range(1, max_xy + 1)
              if nx * ny >= per]
    if not shapes:
        raise SpaceError(f"{n_tiles} tiles on {tiers} tiers need {per} nodes a tier, more "
                         f"than {max_xy}x{max_xy}")
    *_, nx, ny = min(shapes)
    used = -(-n_tiles // (nx * ny))
    if used < tiers:
        raise SpaceError(f"{n_tiles} tiles on tiers of {nx}x{ny} fill only {used} of "
                         f"{tiers}, leaving a tier empty")
    return (nx, ny, tiers), [[i % nx, (i // nx) % ny, i // (nx * ny)] for i in range(n_tiles)]


def retier(table: Mapping[str, Any], tiers: int) -> dict[str, Any]:
    """The same tiles, in the same order, re-placed on ``tiers`` tiers (:func:`place`).

    Parameters
    ----------
    table : mapping
        An ``[accelerator]`` table (not changed).
    tiers : int
        The new ``nz``.

    Returns
    -------
    dict
        The table with ``nx``, ``ny``, ``nz`` and every tile's ``at`` replaced.
    """
    out = copy.deepcopy(dict(table))
    tiles = out.get("tile", [])
    (nx, ny, nz), at = place(len(tiles), tiers)
    out.update(nx=nx, ny=ny, nz=nz)
    for t, pos in zip(tiles, at, strict=True):
        t["at"] = pos
    return out


# --- the evaluator ---------------------------------------------------------------------------


def _describe(point_table: dict[str, Any]):
    """``(description, None)``, or ``(None, infeasible result)`` when the point is refused."""
    from heterotron.hdl.accelerator import describe
    from heterotron.hdl.contract.accel import DescriptionError

    try:
        return describe(point_table), None
    except DescriptionError as exc:
        return None, {"feasible": False,
                      "error": "the description refuses it: " + "; ".join(_tile_problems(exc))}


def _result(r: dict[str, Any]) -> dict[str, Any]:
    """An evaluator's result from a projection."""
    return {"feasible": True, "latency_s": r["latency_s"],
            "energy_low_j": r["energy_j"][0], "energy_high_j": r["energy_j"][1],
            "edp_low_js": r["edp_js"][0], "edp_high_js": r["edp_js"][1],
            "peak_temperature_c": r["peak_temperature_c"], "tier_peak_c": r["tier_peak_c"],
            "power_w": r["power_w"], "cycles_per_layer": r["cycles_per_layer"],
            "bounding_tile": r["bounding_tile"]}


def evaluate(point_table: dict[str, Any], workload: str, tokens: int,
             assumptions: Assumptions) -> dict[str, Any]:
    """The scale model's projection of one point: the default evaluator of :func:`run_sweep`.

    An evaluator is any picklable, module-level function with this signature; it runs on a
    Dask worker (so, with ``--scheduler``, its module must be importable there). Another
    evaluator runs through the same sweep by passing it as ``run_sweep(..., evaluator=f)``;
    :func:`evaluate_rtl` is the RTL-simulation one (:data:`EVALUATORS`).

    Parameters
    ----------
    point_table : dict
        The point's ``[accelerator]`` table (unchecked).
    workload : str
        One of :data:`~heterotron.sim.scale.model.WORKLOADS`.
    tokens : int
        The sequence length.
    assumptions : Assumptions
        Clock, node and tile size.

    Returns
    -------
    dict
        ``feasible`` (bool). When feasible: ``latency_s``, ``energy_low_j``,
        ``energy_high_j``, ``edp_low_js``, ``edp_high_js``, ``peak_temperature_c``,
        ``tier_peak_c``, ``power_w``, ``cycles_per_layer`` and ``bounding_tile`` (``{tile,
        kind, busy_cycles}`` or None); the sweep needs ``latency_s`` and ``energy_high_j``
        and plots ``peak_temperature_c`` when present. When not: ``error``, the message (the
        description refuses the point, or the workload does not compile for it).
    """
    from heterotron.sim.golden.compiler import CompileError
    from heterotron.sim.scale.model import project

    desc, refused = _describe(point_table)
    if refused:
        return refused
    try:
        r = project(desc, workload, tokens=tokens, assumptions=assumptions)
    except CompileError as exc:
        return {"feasible": False, "error": f"{workload} does not compile: {exc}"}
    return _result(r)


def evaluate_rtl(point_table: dict[str, Any], workload: str, tokens: int,
                 assumptions: Assumptions) -> dict[str, Any]:
    """The RTL-simulation evaluator (``heterotron sweep --evaluator rtl``), for small points:
    one layer of the workload compiled for the point and run on its RTL
    (:func:`~heterotron.sim.scale.model.measure`: Verilator, every tensor checked bit-exact
    against the program interpreter), its cycles and tiles' busy cycles priced for energy
    and temperature as the model prices its own (:func:`~heterotron.sim.scale.model.project`
    with ``measured``). The result is :func:`evaluate`'s, with ``model_cycles_per_layer``
    and ``model_error`` (the model's prediction for the same point, and its relative error
    against the RTL). A point whose layer the model predicts at more than
    :data:`~heterotron.sim.scale.model.RTL_MAX_CYCLES` is not simulated: infeasible, with
    that reason. Each new description costs a Verilator build (about a minute) on the
    worker."""
    from heterotron.sim.golden.compiler import CompileError
    from heterotron.sim.scale.model import TooLargeForRtl, project_rtl

    desc, refused = _describe(point_table)
    if refused:
        return refused
    try:
        r = project_rtl(desc, workload, tokens=tokens, assumptions=assumptions)
    except CompileError as exc:
        return {"feasible": False, "error": f"{workload} does not compile: {exc}"}
    except TooLargeForRtl as exc:
        return {"feasible": False, "error": str(exc)}
    model = r["model_cycles_per_layer"]
    return {**_result(r), "model_cycles_per_layer": model,
            "model_error": model / r["cycles_per_layer"] - 1}


#: The evaluators ``heterotron sweep --evaluator`` names.
EVALUATORS: dict[str, Evaluator] = {"model": evaluate, "rtl": evaluate_rtl}


# --- the run ---------------------------------------------------------------------------------


@contextmanager
def _client(scheduler: str | None, workers: int) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A ``distributed.Client``: on a running scheduler, or on a LocalCluster of ``workers``
    single-threaded processes, closed on exit. Its HTTP server takes a free port (``":0"``):
    ``dashboard_address=None`` still binds 8787, so two clusters at once (two sweeps, or
    tests on two xdist workers) collided."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s", set_as_default=False)
        except (OSError, ValueError) as exc:
            raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler}: "
                                 f"{exc}") from None
        with client:
            yield client, {"scheduler": scheduler,
                           "workers": len(client.scheduler_info(n_workers=-1)["workers"])}
    else:
        with (LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0") as cluster,
              Client(cluster, set_as_default=False) as client):
            yield client, {"scheduler": "local", "workers": workers}


def _name_of(f: Callable) -> str:
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def _checked(result: Any) -> str | None:
    """What is wrong with an evaluator's result, or None."""
    if not isinstance(result, dict) or not isinstance(result.get("feasible"), bool):
        return f"the evaluator returned {result!r}, not a dict with a boolean 'feasible'"
    if result["feasible"]:
        for key in ("latency_s", "energy_high_j"):
            v = result.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                return f"the evaluator's {key} is {v!r}, not a positive number"
    elif not isinstance(result.get("error"), str):
        return "the evaluator's infeasible result has no 'error' message"
    return None


def run_sweep(space: Space, *, workload: str | None = None, tokens: int | None = None,
              evaluator: Evaluator = evaluate, scheduler: str | None = None, workers: int = 2,
              progress: bool = True) -> dict[str, Any]:
    """Evaluate every point of ``space`` on a Dask cluster.

    Each point's table (:meth:`Space.table`) goes to a worker with ``client.submit``; a tqdm
    bar advances as the results come back (``distributed.as_completed``). A point that cannot
    be placed, that the description refuses or that does not compile is a row with
    ``feasible`` false and its ``error``; an evaluator that raises (a bug, not an infeasible
    point) gives a row with ``status`` ``"error"``, and the other points still run.

    Parameters
    ----------
    space : Space
        The space (:func:`parse_space`).
    workload, tokens : optional
        Override the space's defaults.
    evaluator : Evaluator
        ``evaluator(point_table, workload, tokens, assumptions) -> dict``; default
        :func:`evaluate` (the scale model); :func:`evaluate_rtl` runs small points on the
        RTL. Must be picklable and importable on the workers.
    scheduler : str, optional
        The address of a running scheduler (``tcp://host:port``), used with
        ``Client(address)``; by default a ``LocalCluster`` is started and closed.
    workers : int
        The LocalCluster's worker processes (one thread each; at most one a point); ignored
        with ``scheduler``.
    progress : bool
        Show the tqdm bar (on stderr).

    Returns
    -------
    dict
        The sweep document written to ``sweep.json``: ``space``, ``workload``, ``tokens``,
        ``assumptions``, ``evaluator``, ``cluster``, ``elapsed_s``, ``counts``, ``rows`` (one a
        point, in the product's order: ``index``, ``point``, ``status`` (``ok``,
        ``infeasible`` or ``error``), ``feasible`` and the evaluator's result), ``front``
        (the indices of the Pareto front, :func:`pareto_front`) and ``reproduce``.

    Raises
    ------
    ValueError
        A bad workload, token count or worker count.
    SchedulerError
        The scheduler cannot be reached.
    """
    from distributed import as_completed
    from tqdm import tqdm

    workload = space.workload if workload is None else workload
    tokens = space.tokens if tokens is None else tokens
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, not {workload!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 4096:
        raise ValueError(f"tokens must be an integer in [1, 4096], not {tokens!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, not {workers!r}")

    points = space.points()
    rows: list[dict[str, Any] | None] = [None] * len(points)
    jobs = []
    for i, p in enumerate(points):
        try:
            jobs.append((i, space.table(p)))
        except SpaceError as exc:
            rows[i] = {"index": i, "point": p, "status": "infeasible", "feasible": False,
                       "error": "; ".join(exc.problems)}
    start = time.perf_counter()
    cluster: dict[str, Any] = {"scheduler": scheduler or "local", "workers": 0}
    with tqdm(total=len(points), initial=len(points) - len(jobs), unit="point",
              desc=f"sweep {space.name}", disable=not progress) as bar:
        if jobs:
            with _client(scheduler, min(workers, len(jobs))) as (client, cluster):
                futures = {client.submit(evaluator, table, workload, tokens, space.assumptions,
                                         pure=False): i for i, table in jobs}
                for fut in as_completed(list(futures), loop=client.loop):
                    i = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as exc:  # the evaluator's bug: recorded, the rest run
                        row = {"status": "error", "feasible": False,
                               "error": f"the evaluator raised {type(exc).__name__}: {exc}"}
                    else:
                        bad = _checked(result)
                        row = ({"status": "error", "feasible": False, "error": bad} if bad else
                               {"status": "ok" if result["feasible"] else "infeasible",
                                **result})
                    rows[i] = {"index": i, "point": points[i], **row}
                    bar.set_postfix(feasible=sum(1 for r in rows if r and r["feasible"]),
                                    refresh=False)
                    bar.update(1)
    done = [r for r in rows if r is not None]
    counts = {"points": len(done),
              "feasible": sum(1 for r in done if r["status"] == "ok"),
              "infeasible": sum(1 for r in done if r["status"] == "infeasible"),
              "errors": sum(1 for r in done if r["status"] == "error")}
    command = ["heterotron", "sweep", "--space", space.source, "--workload", workload,
               "--tokens", str(tokens)]
    named = [k for k, f in EVALUATORS.items() if f is evaluator]
    if named and named[0] != "model":
        command += ["--evaluator", named[0]]
    try:
        from importlib import metadata

        version = metadata.version("heterotron")
    except Exception:  # pragma: no cover - a bare checkout
        version = "unknown"
    return {
        "space": space.summary(),
        "workload": workload, "tokens": tokens,
        "assumptions": {"clock_mhz": space.assumptions.clock_mhz,
                        "node_nm": space.assumptions.node_nm,
                        "tile_mm": space.assumptions.tile_mm},
        "evaluator": _name_of(evaluator),
        "cluster": cluster,
        "elapsed_s": round(time.perf_counter() - start, 3),
        "counts": counts,
        "rows": done,
        "front": pareto_front(done),
        "reproduce": {
            "command": shlex.join(command),
            "note": ("every point is deterministic: the same space, base description, "
                     "assumptions and heterotron version give the same rows; "
                     "space.base_description is the base as swept, and a row's point table "
                     "is heterotron.sim.scale.sweep.apply_point(base_description, point)"),
            "heterotron": version,
        },
    }


def pareto_front(rows: Sequence[Mapping[str, Any]], x: str = "latency_s",
                 y: str = "energy_high_j") -> list[int]:
    """The feasible rows no other feasible row dominates in ``x`` and ``y`` (both minimised).

    Row ``q`` dominates ``p`` when ``q[x] <= p[x]`` and ``q[y] <= p[y]``, one strictly; equal
    points do not dominate each other, so both stay on the front.

    Parameters
    ----------
    rows : sequence of mapping
        Sweep rows (``index``, ``feasible`` and the two keys).
    x, y : str
        The objectives; by default latency and the high end of the energy range.

    Returns
    -------
    list of int
        The front's ``index`` values, by increasing ``x``.
    """
    pts = sorted((r[x], r[y], r["index"]) for r in rows if r.get("feasible"))
    front, best = [], math.inf
    for _, group in itertools.groupby(pts, key=lambda p: p[0]):
        group = list(group)
        low = group[0][1]
        if low < best:
            front += [i for _, yv, i in group if yv == low]
            best = low
    return front


# --- outputs ---------------------------------------------------------------------------------


def _label(point: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items())


def plot_pareto(result: Mapping[str, Any], path: Path) -> None:
    """Latency against energy (the high end) of the feasible points, coloured by peak
    temperature, the Pareto front marked and labelled; log axes where a range spans more
    than a decade. Infeasible points are left out (the title counts them).

    Parameters
    ----------
    result : mapping
        A sweep document (:func:`run_sweep`).
    path : Path
        The PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("feasible")]
    front = set(result["front"])
    c = result["counts"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.set_title(f"{result['space']['name']}: {result['workload']} at {result['tokens']} "
                 f"tokens; {c['feasible']} of {c['points']} points feasible", fontsize=10)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("energy, high end of the range (mJ)")
    if not rows:
        ax.text(0.5, 0.5, "no feasible point", ha="center", va="center",
                transform=ax.transAxes)
    else:
        xs = [r["latency_s"] * 1e3 for r in rows]
        ys = [r["energy_high_j"] * 1e3 for r in rows]
        temps = [r.get("peak_temperature_c") for r in rows]
        if all(isinstance(t, (int, float)) for t in temps):
            sc = ax.scatter(xs, ys, c=temps, cmap="plasma", s=40, zorder=3)
            fig.colorbar(sc, ax=ax, label="peak temperature (°C)")
        else:
            ax.scatter(xs, ys, s=40, zorder=3)
        fr = sorted((r["latency_s"] * 1e3, r["energy_high_j"] * 1e3, r) for r in rows
                    if r["index"] in front)
        fx, fy = [p[0] for p in fr], [p[1] for p in fr]
        ax.step(fx, fy, where="post", color="k", lw=1, alpha=0.6, zorder=2)
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="k", lw=1.5, zorder=4,
                   label=f"Pareto front ({len(fr)})")
        for px, py, r in fr:
            ax.annotate(_label(r["point"]), (px, py), textcoords="offset points",
                        xytext=(6, 6), fontsize=7)
        for axis, vals in (("x", xs), ("y", ys)):
            if min(vals) > 0 and max(vals) / min(vals) > 10:
                (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``sweep.json`` (the document) and ``pareto.png`` (:func:`plot_pareto`).

    Parameters
    ----------
    result : mapping
        A sweep document (:func:`run_sweep`).
    out_dir : Path
        The folder (made if missing).

    Returns
    -------
    dict
        ``{"json": path, "png": path}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "sweep.json", "png": out_dir / "pareto.png"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    plot_pareto(result, paths["png"])
    return paths


def format_sweep(result: Mapping[str, Any]) -> str:
    """A sweep's summary, its Pareto front as a table, and the infeasible points.

    Parameters
    ----------
    result : mapping
        A sweep document (:func:`run_sweep`).

    Returns
    -------
    str
    """
    c, s, a = result["counts"], result["space"], result["assumptions"]
    axes = list(s["axes"])
    lines = [f"{s['name']}: {result['workload']} at {result['tokens']} tokens over {s['base']} "
             f"({a['clock_mhz']:g} MHz, {a['node_nm']:g} nm, tiles {a['tile_mm']:g} mm); "
             f"{c['points']} points, {c['feasible']} feasible, {c['infeasible']} infeasible"
             + (f", {c['errors']} evaluator errors" if c["errors"] else "")
             + f"; {result['elapsed_s']:.1f} s on {result['cluster']['workers']} workers "
             f"({result['cluster']['scheduler']})"]
    by_index = {r["index"]: r for r in result["rows"]}
    front = [by_index[i] for i in result["front"]]
    head = [*axes, "latency ms", "energy mJ", "EDP J s (high)", "peak C", "bounding tile"]
    body = []
    for r in front:
        b = r.get("bounding_tile")
        t = r.get("peak_temperature_c")
        body.append([*(str(r["point"][k]) for k in axes), f"{r['latency_s'] * 1e3:.3f}",
                     f"{r.get('energy_low_j', math.nan) * 1e3:.3f} - "
                     f"{r['energy_high_j'] * 1e3:.3f}",
                     f"{r['edp_high_js']:.3e}" if "edp_high_js" in r else "-",
                     f"{t:.1f}" if isinstance(t, (int, float)) else "-",
                     f"{b['kind']} {b['tile']}" if b else "-"])
    lines.append(f"Pareto front (latency against energy, high end): {len(front)} of "
                 f"{c['feasible']} feasible points")
    if body:
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        for line in (head, *body):
            lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(line, widths,
                                                                    strict=True)).rstrip())
    checked = [r for r in result["rows"] if r["feasible"] and "model_error" in r]
    if checked:
        worst = max(abs(r["model_error"]) for r in checked)
        lines.append(f"the model against the RTL: worst cycle error {worst:.1%} over "
                     f"{len(checked)} points")
        lines += [f"  #{r['index']} {_label(r['point'])}: RTL {r['cycles_per_layer']:,} cycles "
                  f"a layer, model {r['model_cycles_per_layer']:,} ({r['model_error']:+.1%})"
                  for r in checked]
    bad = [r for r in result["rows"] if not r["feasible"]]
    if bad:
        lines.append("not feasible:")
        lines += [f"  #{r['index']} {_label(r['point'])} ({r['status']}): {r['error']}"
                  for r in bad]
    return "\n".join(lines)

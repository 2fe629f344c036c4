"""``heterotron model``: latency, energy and temperature of a workload on a description, from the
calibrated performance model, the energy table and the thermal model.

For a workload (:data:`WORKLOADS`: MiniLM's or BERT-base's layer sizes, synthetic weights of
those sizes, since the cycles and the actions depend on the sizes, not the values) the
compiler emits one layer's program for the description; the model composes it
(:mod:`~heterotron.sim.scale.perf`, with the shipped calibration
:mod:`~heterotron.sim.scale.calibration`) and counts its actions
(:mod:`~heterotron.sim.scale.actions`). Every layer of an encoder is the same program on
other weights, so the encoder is ``layers`` times one layer. Without the program interpreter
(too slow at these sizes) every PiM input bit-plane is counted as converted: zero-plane
skipping is not credited.

* **Latency** = cycles / clock. **Energy** = the actions priced by
  :mod:`~heterotron.sim.scale.energy` at the node: a (low, high) range.
* **Power** per tile = its energy (the high end: the thermal result is a bound) over the
  layer's latency; the tiles sit on the thermal model's grid by their ``at`` position, tier
  ``z`` (tier 0 next to the heat sink), one cell of ``tile_mm`` a side per mesh node; a node
  without a tile dissipates nothing. **Peak temperature** from
  :func:`~heterotron.sim.scale.thermal.steady`: inferences back to back, at the average
  power.
* **Power over time** (:data:`TRACE_STEPS` steps a layer): a tile with instructions spends
  its layer's energy while it has one outstanding, spread over the schedule's intervals
  (scaled to the RTL's cycles when those are measured); the others (the control and memory
  tiles) at a constant rate. :func:`~heterotron.sim.scale.thermal.transient` runs the trace
  of one inference (every layer) twice: from ambient (one inference on a cold chip) and
  from the steady state (the peak in continuous operation, the steady peak plus the ripple
  of the layer's phases).

The assumptions (clock, node, tile size) come from the description file's ``[model]`` table,
else from :data:`DEFAULTS`, and are printed with the result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from heterotron.hdl.contract.accel import Description, TileKind

__all__ = ["WORKLOADS", "DEFAULTS", "Assumptions", "workload_of", "project", "measure",
           "project_rtl",
           "RTL_MAX_CYCLES", "TooLargeForRtl", "format_projection"]

#: The encoders a projection runs: layer sizes and layer count (sequence length apart).
#: ``small`` is the synthetic layer of the calibration runs (:mod:`~heterotron.sim.scale.runs`,
#: seed 7), small enough to run on the RTL (:func:`measure`) at a few tokens.
WORKLOADS = {
    "minilm": {"hidden": 384, "heads": 12, "intermediate": 1536, "layers": 6},
    "bert-base": {"hidden": 768, "heads": 12, "intermediate": 3072, "layers": 12},
    "small": {"hidden": 32, "heads": 2, "intermediate": 32, "layers": 1},
}

#: Steps of the power trace a layer (:func:`project`'s transient).
TRACE_STEPS = 100

#: The assumptions a description's ``[model]`` table may set.
DEFAULTS = {"clock_mhz": 500.0, "node_nm": 22.0, "tile_mm": 1.0}
_LIMITS = {"clock_mhz": (1.0, 5000.0), "node_nm": (7.0, 130.0), "tile_mm": (0.05, 20.0)}


@dataclass(frozen=True)
class Assumptions:
    clock_mhz: float = DEFAULTS["clock_mhz"]
    node_nm: float = DEFAULTS["node_nm"]
    tile_mm: float = DEFAULTS["tile_mm"]

    @classmethod
    def from_table(cls, table: dict[str, Any] | None, **override) -> Assumptions:
        values = dict(DEFAULTS)
        for key, v in {**(table or {}), **{k: v for k, v in override.items()
                                           if v is not None}}.items():
            if key not in DEFAULTS:
                raise ValueError(f"model.{key}: unknown assumption (known: "
                                 f"{', '.join(DEFAULTS)})")
            lo, hi = _LIMITS[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"model.{key} must be a number in [{lo:g}, {hi:g}], not {v!r}")
            values[key] = float(v)
        return cls(**values)


def workload_of(workload: str, tokens: int):
    """The :class:`~heterotron.sim.scale.runs.Workload` of ``workload``'s layer at ``tokens``
    (its synthetic weights, seed 7); ``ValueError`` for an unknown one or a bad count."""
    from heterotron.sim.scale.runs import Workload

    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, not {workload!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 4096:
        raise ValueError(f"tokens must be an integer in [1, 4096], not {tokens!r}")
    w = WORKLOADS[workload]
    return Workload(hidden=w["hidden"], heads=w["heads"], intermediate=w["intermediate"],
                    tokens=tokens)


def measure(desc: Description, workload: str, *, tokens: int) -> dict[str, Any]:
    """One layer of ``workload`` at ``tokens`` on the RTL of ``desc`` (Verilator, the
    simulation harness: :func:`~heterotron.sim.scale.runs.run_workload`, which checks every
    tensor bit-exact against the program interpreter first): ``{"cycles", "busy": {tile:
    cycles}}``, the layer's cycles and each tile's BUSY counter. Minutes for a small layer;
    the RTL runs about 30k cycles a second."""
    import tempfile
    from pathlib import Path

    from heterotron.sim.scale.runs import run_workload

    with tempfile.TemporaryDirectory(prefix="heterotron-measure-") as tmp:
        got = run_workload(desc, workload_of(workload, tokens), Path(tmp))
    return {"cycles": got["cycles"], "busy": {t["tile"]: t["busy"] for t in got["tiles"]}}


def project(desc: Description, workload: str, *, tokens: int = 128,
            assumptions: Assumptions = Assumptions(), calibration=None,
            measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """The projection of ``workload`` at ``tokens`` on ``desc`` (module docstring).

    With ``measured`` (:func:`measure`'s result for the same description, workload and
    tokens) the layer's cycles and the tiles' busy cycles are the RTL's, not the model's;
    the energy and the temperature are priced the same way, and the model's own cycles are
    kept beside them (``model_cycles_per_layer``)."""
    from heterotron.sim.scale.actions import count_actions
    from heterotron.sim.scale.calibration import load_calibration, program
    from heterotron.sim.scale.energy import default_table
    from heterotron.sim.scale.perf import schedule
    from heterotron.sim.scale.thermal import Stack, steady, transient

    wl = workload_of(workload, tokens)
    w = WORKLOADS[workload]
    cal = calibration or load_calibration()
    words, instrs = program(desc, wl, interpret=False)
    sched = schedule(instrs, cal.coef)
    model_cycles = cal.layer_cycles(sched, words)
    if measured is None:
        cycles_layer, busy_of, span = model_cycles, sched.busy, sched.cycles
    else:
        cycles_layer = span = measured["cycles"]
        busy_of = measured["busy"]
    layers = w["layers"]
    f_hz = assumptions.clock_mhz * 1e6
    latency = layers * cycles_layer / f_hz
    table = default_table()
    per_tile = count_actions(desc, instrs)
    e_low = e_high = 0.0
    tiles, totals, tile_power = [], Counter(), {}
    power = np.zeros((desc.params["nz"], desc.params["ny"], desc.params["nx"]))
    for t in desc.tiles:
        counts = per_tile.get(t.index, Counter())
        totals.update(counts)
        enob = t.params["enob"] if t.kind == TileKind.PIM else None
        rep = table.energy(dict(counts), assumptions.node_nm, enob=enob)
        lo, hi = rep.low_j * layers, rep.high_j * layers
        e_low, e_high = e_low + lo, e_high + hi
        x, y, z = t.at
        power[z, y, x] += hi / latency
        busy = busy_of.get(t.index, 0.0)
        tiles.append({"tile": t.index, "kind": t.kind.name.lower(), "at": list(t.at),
                      "busy_cycles": round(busy), "utilisation": round(busy / span, 4)
                      if span else 0.0, "energy_j": [lo, hi],
                      "power_w": round(hi / latency, 4)})
        tile_power[t.index] = hi / latency
    size = assumptions.tile_mm * 1e-3
    stack = Stack(tiers=power.shape[0], nx=power.shape[2], ny=power.shape[1], tile_w=size,
                  tile_h=size)
    th = steady(stack, power)
    trace = _power_trace(desc, instrs, sched, power.shape, tile_power,
                         span / max(sched.cycles, 1.0))
    dt = latency / layers / TRACE_STEPS
    whole = np.concatenate([trace] * layers)
    cold = transient(stack, whole, dt)
    hot = transient(stack, whole, dt, t0=th.temperature)
    work = [r for r in tiles if r["kind"] not in ("control", "memory")]
    bound = max(work, key=lambda r: r["busy_cycles"]) if work else None
    return {
        "workload": workload, "tokens": tokens, "layers": layers,
        "sizes": {k: w[k] for k in ("hidden", "heads", "intermediate")},
        "assumptions": {"clock_mhz": assumptions.clock_mhz, "node_nm": assumptions.node_nm,
                        "tile_mm": assumptions.tile_mm,
                        "pim_planes": "every input bit-plane converted (no zero-plane skipping)"},
        "mesh": [desc.params["nx"], desc.params["ny"], desc.params["nz"]],
        "program": {"words": words, "instructions": len(instrs)},
        "cycles_from": "model" if measured is None else "rtl",
        "cycles_per_layer": round(cycles_layer),
        "model_cycles_per_layer": round(model_cycles),
        "latency_s": latency,
        "energy_j": [e_low, e_high],
        "edp_js": [e_low * latency, e_high * latency],
        "power_w": float(power.sum()),
        "peak_temperature_c": th.peak - 273.15,
        "tier_peak_c": [float(v) - 273.15 for v in th.tier_peak],
        "transient": {
            "dt_s": dt, "steps": int(whole.shape[0]),
            "one_inference_peak_c": float(cold.peak.max()) - 273.15,
            "continuous_peak_c": float(max(hot.peak.max(), th.peak)) - 273.15,
            "continuous_tier_peak_c": [float(v) - 273.15 for v in
                                       np.maximum(hot.tier_peak.max(axis=0), th.tier_peak)],
            "layer_power_w": [round(float(p.sum()), 6) for p in trace],
        },
        "bounding_tile": bound and {"tile": bound["tile"], "kind": bound["kind"],
                                    "busy_cycles": bound["busy_cycles"]},
        "tiles": tiles,
        "actions": {k: float(v * layers) for k, v in sorted(totals.items())},
    }


def _power_trace(desc: Description, instrs, sched, shape: tuple, tile_power: dict[int, float],
                 scale: float) -> np.ndarray:
    """``[TRACE_STEPS, *shape]`` watts over one layer: each tile's average power
    (``tile_power``, placed by its ``at``) redistributed over the steps in proportion to the
    cycles it has an instruction outstanding (the schedule's intervals times ``scale``); a
    tile with no interval at its average. Each tile's energy over the layer is kept
    exactly."""
    span = max(sched.cycles * scale, 1.0)
    edges = np.linspace(0.0, span, TRACE_STEPS + 1)
    trace = np.zeros((TRACE_STEPS, *shape))
    spans: dict[int, list[tuple[float, float]]] = {}
    for ins, a, b in zip(instrs, sched.issue, sched.done, strict=True):
        if b > a and ins.tile != desc.control.index:
            spans.setdefault(ins.tile, []).append((a * scale, b * scale))
    for t in desc.tiles:
        x, y, z = t.at
        iv = np.asarray(spans.get(t.index, []), dtype=float).reshape(-1, 2)
        # cycles busy before each edge: sum over intervals of clip(edge - a, 0, b - a)
        before = np.clip(edges[:, None] - iv[:, 0], 0.0, iv[:, 1] - iv[:, 0]).sum(axis=1)
        busy = np.diff(before)
        share = busy / before[-1] if before[-1] > 0 else np.full(TRACE_STEPS,
                                                                 1.0 / TRACE_STEPS)
        # the tile's power over the layer is row["power_w"]; per step, its share of the energy
        trace[:, z, y, x] += share * TRACE_STEPS * tile_power[t.index]
    return trace


#: The most cycles a layer may take, as the model predicts them, for :func:`project_rtl` to run
#: it on the RTL: about a minute of Verilator at ~30k cycles a second.
RTL_MAX_CYCLES = 2_000_000


class TooLargeForRtl(ValueError):
    """The layer is too long to simulate (:data:`RTL_MAX_CYCLES`)."""


def project_rtl(desc: Description, workload: str, *, tokens: int,
                assumptions: Assumptions = Assumptions(), calibration=None) -> dict[str, Any]:
    """:func:`project` with the layer run on the RTL (:func:`measure`) for its cycles; the
    model's prediction stays beside them (``model_cycles_per_layer``). Raises
    :class:`TooLargeForRtl` before simulating when the model predicts more than
    :data:`RTL_MAX_CYCLES` cycles a layer."""
    predicted = project(desc, workload, tokens=tokens, assumptions=assumptions,
                        calibration=calibration)
    if predicted["cycles_per_layer"] > RTL_MAX_CYCLES:
        raise TooLargeForRtl(
            f"{workload} at {tokens} tokens is too large for the RTL: the model predicts "
            f"{predicted['cycles_per_layer']:,} cycles a layer, the limit is "
            f"{RTL_MAX_CYCLES:,} (about a minute of simulation)")
    return project(desc, workload, tokens=tokens, assumptions=assumptions,
                   calibration=calibration, measured=measure(desc, workload, tokens=tokens))


def _energy_range(lo: float, hi: float) -> str:
    """``lo - hi`` in the largest of J, mJ, uJ, nJ that shows ``hi`` at 1 or more."""
    scale, unit = next(((k, u) for k, u in ((1.0, "J"), (1e3, "mJ"), (1e6, "uJ"))
                        if hi * k >= 1), (1e9, "nJ"))
    return f"{lo * scale:.3f} - {hi * scale:.3f} {unit}"


def format_projection(r: dict[str, Any]) -> str:
    a, tr = r["assumptions"], r["transient"]
    lo, hi = r["energy_j"]
    lines = [
        f"{r['workload']} ({r['sizes']['hidden']} hidden, {r['sizes']['heads']} heads, "
        f"{r['layers']} layers) at {r['tokens']} tokens on a "
        f"{'x'.join(map(str, r['mesh']))} mesh:",
        f"  assumptions   {a['clock_mhz']:g} MHz, {a['node_nm']:g} nm, tiles "
        f"{a['tile_mm']:g} mm a side; {a['pim_planes']}",
        f"  program       {r['program']['instructions']} instructions "
        f"({r['program']['words']} words) a layer",
        f"  latency       {r['latency_s'] * 1e3:.3f} ms ({r['cycles_per_layer']:,} cycles a "
        "layer" + ("" if r["cycles_from"] == "model" else
                   f", measured on the RTL; the model predicts {r['model_cycles_per_layer']:,}"
                   f" ({r['model_cycles_per_layer'] / r['cycles_per_layer'] - 1:+.1%})")
        + ")",
        "  energy        " + _energy_range(lo, hi),
        f"  EDP           {r['edp_js'][0]:.3e} - {r['edp_js'][1]:.3e} J s",
        f"  power         {r['power_w']:.3f} W (the high energy over the latency)",
        f"  temperature   peak {r['peak_temperature_c']:.1f} C; per tier "
        + ", ".join(f"{t:.1f}" for t in r["tier_peak_c"]) + " C (tier 0 next to the sink), "
        "inferences back to back",
        f"  over time     {tr['steps']} steps of {tr['dt_s'] * 1e6:.3g} us (layer power "
        f"{min(tr['layer_power_w']):.3g} - {max(tr['layer_power_w']):.3g} W): one inference "
        f"from cold peaks at {tr['one_inference_peak_c']:.2f} C; in continuous operation at "
        f"{tr['continuous_peak_c']:.2f} C",
    ]
    if r["bounding_tile"]:
        b = r["bounding_tile"]
        lines.append(f"  bounding tile {b['kind']} {b['tile']} ({b['busy_cycles']:,} busy "
                     "cycles a layer)")
    lines.append("  tile  kind     at         util   power W")
    for t in r["tiles"]:
        lines.append(f"  {t['tile']:<5} {t['kind']:<8} {str(t['at']):<10} "
                     f"{t['utilisation']:6.1%} {t['power_w']:8.4f}")
    return "\n".join(lines)

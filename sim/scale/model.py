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
  :func:`~heterotron.sim.scale.thermal.steady`.

The assumptions (clock, node, tile size) come from the description file's ``[model]`` table,
else from :data:`DEFAULTS`, and are printed with the result.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from heterotron.hdl.contract.accel import Description, TileKind

__all__ = ["WORKLOADS", "DEFAULTS", "Assumptions", "project", "format_projection"]

#: The encoders a projection runs: layer sizes and layer count (sequence length apart).
WORKLOADS = {
    "minilm": {"hidden": 384, "heads": 12, "intermediate": 1536, "layers": 6},
    "bert-base": {"hidden": 768, "heads": 12, "intermediate": 3072, "layers": 12},
}

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


def project(desc: Description, workload: str, *, tokens: int = 128,
            assumptions: Assumptions = Assumptions(), calibration=None) -> dict[str, Any]:
    """The projection of ``workload`` at ``tokens`` on ``desc`` (module docstring)."""
    from heterotron.sim.scale.actions import count_actions
    from heterotron.sim.scale.calibration import load_calibration, program
    from heterotron.sim.scale.energy import default_table
    from heterotron.sim.scale.perf import schedule
    from heterotron.sim.scale.runs import Workload
    from heterotron.sim.scale.thermal import Stack, steady

    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, not {workload!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 4096:
        raise ValueError(f"tokens must be an integer in [1, 4096], not {tokens!r}")
    w = WORKLOADS[workload]
    cal = calibration or load_calibration()
    wl = Workload(hidden=w["hidden"], heads=w["heads"], intermediate=w["intermediate"],
                  tokens=tokens)
    words, instrs = program(desc, wl, interpret=False)
    sched = schedule(instrs, cal.coef)
    cycles_layer = cal.layer_cycles(sched, words)
    layers = w["layers"]
    f_hz = assumptions.clock_mhz * 1e6
    latency = layers * cycles_layer / f_hz
    table = default_table()
    per_tile = count_actions(desc, instrs)
    e_low = e_high = 0.0
    tiles, totals = [], Counter()
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
        busy = sched.busy.get(t.index, 0.0)
        tiles.append({"tile": t.index, "kind": t.kind.name.lower(), "at": list(t.at),
                      "busy_cycles": round(busy), "utilisation": round(busy / sched.cycles, 4)
                      if sched.cycles else 0.0, "energy_j": [lo, hi],
                      "power_w": round(hi / latency, 4)})
    size = assumptions.tile_mm * 1e-3
    stack = Stack(tiers=power.shape[0], nx=power.shape[2], ny=power.shape[1], tile_w=size,
                  tile_h=size)
    th = steady(stack, power)
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
        "cycles_per_layer": round(cycles_layer),
        "latency_s": latency,
        "energy_j": [e_low, e_high],
        "edp_js": [e_low * latency, e_high * latency],
        "power_w": float(power.sum()),
        "peak_temperature_c": th.peak - 273.15,
        "tier_peak_c": [float(v) - 273.15 for v in th.tier_peak],
        "bounding_tile": bound and {"tile": bound["tile"], "kind": bound["kind"],
                                    "busy_cycles": bound["busy_cycles"]},
        "tiles": tiles,
        "actions": {k: float(v * layers) for k, v in sorted(totals.items())},
    }


def format_projection(r: dict[str, Any]) -> str:
    a = r["assumptions"]
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
        "layer)",
        f"  energy        {lo * 1e3:.3f} - {hi * 1e3:.3f} mJ",
        f"  EDP           {r['edp_js'][0]:.3e} - {r['edp_js'][1]:.3e} J s",
        f"  power         {r['power_w']:.3f} W (the high energy over the latency)",
        f"  temperature   peak {r['peak_temperature_c']:.1f} C; per tier "
        + ", ".join(f"{t:.1f}" for t in r["tier_peak_c"]) + " C (tier 0 next to the sink)",
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

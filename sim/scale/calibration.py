"""Calibration of the performance model (:mod:`heterotron.sim.scale.perf`) against the RTL, and
its error on runs it was not fitted on.

The runs (:mod:`heterotron.sim.scale.runs`, ``sim/data/calibration_runs.json``) are split by
a fixed rule, :func:`is_training`: the model is fitted on the base description
(``encoder-small``) at some token counts and scored on everything else, that is other token
counts, other array shapes, another dataflow, other SFU lanes and PiM columns, the traffic
those make. The fit has two parts:

* each opcode's costs from the tiles' ``BUSY`` counters (:func:`~heterotron.sim.scale.perf.fit`);
* the layer's cycles beyond the composed schedule, ``cycles - schedule = a + b * words``
  (the host link feeding the program queue, the first fetch, the final status read), by least
  squares on the training runs.

The score is, per tile kind, the worst relative error of the predicted ``BUSY`` over the
held-out runs; the worst relative error of the layer's cycles; and the per-tile instruction
counts (``ITEMS``), which must equal the RTL's exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heterotron.sim.scale.perf import (
    Coefficients,
    Instr,
    Schedule,
    decode_program,
    fit,
    schedule,
)

__all__ = ["Sample", "Calibration", "program", "samples", "run", "format_calibration",
           "score_minilm", "is_training", "calibrate", "score",
           "COEFFICIENTS_PATH", "load_calibration"]

#: The shipped calibration (``heterotron model`` uses it).
COEFFICIENTS_PATH = Path(__file__).resolve().parent.parent / "data" / "perf_calibration.json"

#: The training runs: every description's runs at these token counts.
TRAIN_TOKENS = (2, 3, 6, 12, 16)
#: MiniLM's layer on ``configs/encoder.toml`` (64 x 8 crossbars, 8 x 8 arrays), measured by
#: ``heterotron bench minilm``: the held-out check at scale.
MINILM_RUNS_PATH = COEFFICIENTS_PATH.parent / "minilm_rtl_runs.json"


@dataclass
class Sample:
    run: dict[str, Any]
    desc: Any
    instrs: list[Instr]

    @property
    def busy(self) -> dict[int, int]:
        return {t["tile"]: t["busy"] for t in self.run["tiles"]}


@dataclass
class Calibration:
    coef: Coefficients
    overhead: tuple[float, float]  # a + b * program words

    def layer_cycles(self, sch: Schedule, words: int) -> float:
        """The layer's cycles: the composed schedule's and the overhead of ``words``."""
        a, b = self.overhead
        return sch.cycles + a + b * words

    def to_json(self) -> dict[str, Any]:
        return {"coefficients": self.coef.to_json(),
                "overhead": {"a": round(self.overhead[0], 2), "b": round(self.overhead[1], 4)}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Calibration:
        return cls(Coefficients({op: dict(cs) for op, cs in d["coefficients"].items()}),
                   (d["overhead"]["a"], d["overhead"]["b"]))


def load_calibration(path: Path | None = None) -> Calibration:
    data = json.loads((Path(path) if path else COEFFICIENTS_PATH).read_text())
    return Calibration.from_json(data)


def program(desc, wl, interpret: bool = True) -> tuple[int, list[Instr]]:
    """``(words, instructions)`` of workload ``wl`` on ``desc``: the compiler's program,
    decoded, with the bit-planes its MVMs convert from the program interpreter (without
    ``interpret``, every plane)."""
    from heterotron.sim.flows.bound import converted_planes
    from heterotron.sim.golden.accel import Interpreter
    from heterotron.sim.scale.runs import compile_workload

    comp, x, xr = compile_workload(desc, wl)
    if not interpret:
        return len(comp.words), decode_program(desc, comp.words)
    params = {t.index: t.params for t in desc.tiles}
    planes: list[np.ndarray] = []
    interp = Interpreter(desc, comp.memories(x, xr))
    interp.on_mvm = lambda tile, xx, _cols: planes.append(converted_planes(params[tile], xx))
    interp.execute(comp.words)
    return len(comp.words), decode_program(desc, comp.words, planes)


def samples(runs: list[dict[str, Any]]) -> list[Sample]:
    """Each run's program rebuilt (the same compiler, the same seeds) and decoded."""
    from heterotron.hdl.accelerator import describe
    from heterotron.sim.scale.runs import Workload

    out = []
    for r in runs:
        desc = describe(r["description"])
        if f"{desc.config_hash:#010x}" != r["config_hash"]:
            raise ValueError(f"run on {r['config']}: its description hashes to "
                             f"{desc.config_hash:#010x}, the run says {r['config_hash']}")
        words, instrs = program(desc, Workload(**r["workload"]))
        if words != r["words"]:
            raise ValueError(f"run on {r['config']} {r['workload']}: the compiler now emits "
                             f"{words} words, the run had {r['words']}")
        out.append(Sample(r, desc, instrs))
    return out


def is_training(run: dict[str, Any]) -> bool:
    return run["workload"]["tokens"] in TRAIN_TOKENS


def _queued(s: Sample, coef: Coefficients) -> dict[int, float]:
    """Cycles each tile's instructions waited for a read engine in the composed schedule."""
    sch = schedule(s.instrs, coef)
    out: dict[int, float] = {}
    tile_instrs = [i for i in s.instrs if i.op not in ("NOP", "WAIT")]
    for ins, q in zip(tile_instrs, sch.queued, strict=True):
        out[ins.tile] = out.get(ins.tile, 0.0) + q
    return out


def calibrate(train: list[Sample], rounds: int = 4) -> Calibration:
    """The opcodes' uncontended costs: fitted to ``BUSY`` less the read-engine waits the
    composed schedule gives them, the waits recomputed with each round's costs."""
    coef = fit([(s.instrs, s.busy) for s in train])
    for _ in range(rounds):
        adjusted = []
        for s in train:
            q = _queued(s, coef)
            adjusted.append((s.instrs, {t: b - q.get(t, 0.0) for t, b in s.busy.items()}))
        coef = fit(adjusted)
    gap = [s.run["cycles"] - schedule(s.instrs, coef).cycles for s in train]
    words = [s.run["words"] for s in train]
    a_mat = np.column_stack([np.ones(len(train)), words])
    (a, b), *_ = np.linalg.lstsq(a_mat, np.array(gap, float), rcond=None)
    return Calibration(coef, (float(a), float(b)))


def score(group: list[Sample], cal: Calibration) -> dict[str, Any]:
    """Worst relative errors over ``group``: per tile kind (``BUSY``) and of the layer's
    cycles; the instruction counts per tile compared exactly."""
    worst: dict[str, float] = {}
    layer = []
    items_equal = True
    rows = []
    for s in group:
        sch = schedule(s.instrs, cal.coef)
        pred = cal.layer_cycles(sch, s.run["words"])
        e = pred / s.run["cycles"] - 1
        layer.append(e)
        per = {}
        for t in s.run["tiles"]:
            if t["busy"]:
                err = sch.busy.get(t["tile"], 0.0) / t["busy"] - 1
                per[f"{t['kind']}{t['tile']}"] = round(err, 4)
                worst[t["kind"]] = max(worst.get(t["kind"], 0.0), abs(err))
            if sch.items.get(t["tile"], 0) != t["items"]:
                items_equal = False
        rows.append({"config": s.run["config"], "workload": s.run["workload"],
                     "cycles": s.run["cycles"], "predicted": round(pred),
                     "error": round(e, 4), "busy_error": per})
    return {"runs": len(group), "worst_busy_error": {k: round(v, 4) for k, v in worst.items()},
            "worst_layer_error": round(max(map(abs, layer)), 4) if layer else None,
            "mean_layer_error": round(float(np.mean(layer)), 4) if layer else None,
            "items_equal": items_equal, "rows": rows}


def score_minilm(cal: Calibration, path: Path | None = None) -> dict[str, Any]:
    """The model against MiniLM's layer on the RTL at scale (:data:`MINILM_RUNS_PATH`): the
    layer's cycles and the busiest tile's ``BUSY``, on synthetic weights of MiniLM's sizes
    (the program's instructions and, with every plane converted in two's complement as the
    real inputs convert them, its cycles do not depend on the values)."""
    from heterotron.hdl.accelerator import describe
    from heterotron.sim.scale.perf import schedule
    from heterotron.sim.scale.runs import Workload

    data = json.loads(Path(path or MINILM_RUNS_PATH).read_text())
    rows = []
    for r in data["runs"]:
        desc = describe(r["description"])
        if f"{desc.config_hash:#010x}" != r["config_hash"]:
            raise ValueError(f"MiniLM run on {r['config']} ({r['pim_tiles']} PiM tiles): its "
                             f"description hashes to {desc.config_hash:#010x}, the run says "
                             f"{r['config_hash']}")
        words, instrs = program(desc, Workload(hidden=384, heads=12, intermediate=1536,
                                               tokens=r["tokens"]), interpret=False)
        if len(instrs) != r["instructions"]:
            raise ValueError(f"MiniLM on {r['config']}: {len(instrs)} instructions now, "
                             f"{r['instructions']} when measured")
        sch = schedule(instrs, cal.coef)
        pred = cal.layer_cycles(sch, words)
        b = r["busiest"]
        rows.append({"tokens": r["tokens"], "pim_tiles": r["pim_tiles"], "cycles": r["cycles"],
                     "predicted": round(pred), "error": round(pred / r["cycles"] - 1, 4),
                     "busiest": b["kind"], "busy": b["busy"],
                     "busy_predicted": round(sch.busy.get(b["tile"], 0.0)),
                     "busy_error": round(sch.busy.get(b["tile"], 0.0) / b["busy"] - 1, 4)})
    return {"source": data["source"], "rows": rows,
            "worst_layer_error": max(abs(x["error"]) for x in rows),
            "worst_busy_error": max(abs(x["busy_error"]) for x in rows)}


def run(write: bool = False) -> dict[str, Any]:
    """Fit on the training runs, score the training and held-out runs and MiniLM at scale;
    with ``write``, ship the fitted costs (:data:`COEFFICIENTS_PATH`)."""
    from heterotron.sim.scale.runs import load_runs

    every = samples(load_runs())
    train = [x for x in every if is_training(x.run)]
    held = [x for x in every if not is_training(x.run)]
    cal = calibrate(train)
    if write:
        COEFFICIENTS_PATH.write_text(json.dumps(cal.to_json(), indent=1) + "\n")
    return {"split": f"training: every description's runs at {list(TRAIN_TOKENS)} tokens; "
                     "held-out: the others, and MiniLM at scale",
            "calibration": cal.to_json(), "train": score(train, cal),
            "held_out": score(held, cal), "minilm": score_minilm(cal)}


def format_calibration(r: dict[str, Any]) -> str:
    def kinds(s):
        return ", ".join(f"{k} {v:.1%}" for k, v in sorted(s["worst_busy_error"].items()))
    lines = [f"performance model calibration ({r['split']}):"]
    for name in ("train", "held_out"):
        s = r[name]
        lines.append(f"  {name.replace('_', '-'):<9} {s['runs']:>3} runs: worst BUSY error "
                     f"per tile kind {kinds(s)}; layer cycles worst "
                     f"{s['worst_layer_error']:.1%} (mean {s['mean_layer_error']:+.1%}); "
                     f"instructions per tile {'equal' if s['items_equal'] else 'DIFFER'}")
    m = r["minilm"]
    lines.append(f"  MiniLM at scale (configs/encoder.toml): worst layer error "
                 f"{m['worst_layer_error']:.1%}, worst busiest-tile error "
                 f"{m['worst_busy_error']:.1%}")
    for x in m["rows"]:
        lines.append(f"    {x['tokens']:>4} tokens, {x['pim_tiles']} PiM tiles: RTL "
                     f"{x['cycles']:>11,} predicted {x['predicted']:>11,} ({x['error']:+.1%}); "
                     f"busiest {x['busiest']} {x['busy']:,} vs {x['busy_predicted']:,} "
                     f"({x['busy_error']:+.1%})")
    return "\n".join(lines)

"""The RTL runs the scale model is calibrated and scored on: synthetic encoder layers compiled
for a description, run on the RTL (Verilator, the simulation harness), their cycles and
per-tile counters recorded.

A run is named by a :class:`Workload` (the layer's sizes, its token count and a seed) and the
description it ran on; everything else (the weights, the inputs, the program) is rebuilt from
those, deterministically, by :func:`compile_workload`, so the model can be run on the same
program later without storing it. :func:`collect` appends the runs to a JSON file
(``sim/data/calibration_runs.json`` is the shipped set).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from heterotron.hdl.contract.accel import Description

__all__ = ["Workload", "compile_workload", "run_workload", "collect", "load_runs",
           "RUNS_PATH"]

#: The shipped calibration runs.
RUNS_PATH = Path(__file__).resolve().parent.parent / "data" / "calibration_runs.json"


@dataclass(frozen=True)
class Workload:
    """One synthetic encoder layer (:func:`~heterotron.sim.golden.bert_float.synthetic_weights`)
    on ``tokens`` random tokens."""

    hidden: int = 32
    heads: int = 2
    intermediate: int = 64
    tokens: int = 6
    seed: int = 7

    def __post_init__(self):
        for name in ("hidden", "heads", "intermediate", "tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"workload {name} must be a positive integer, not {v!r}")
        if self.hidden % self.heads:
            raise ValueError(f"workload hidden = {self.hidden} must be a multiple of heads = "
                             f"{self.heads}")


def compile_workload(desc: Description, wl: Workload):
    """``(compiled program, x, xr)`` of ``wl`` on ``desc`` (``CompileError`` when the layer
    does not fit the description)."""
    from heterotron.sim.golden import bert_float as bf
    from heterotron.sim.golden import bert_int as bi
    from heterotron.sim.golden.compiler import compile_encoder

    w = bf.synthetic_weights(hidden=wl.hidden, heads=wl.heads, layers=1,
                             intermediate=wl.intermediate, seed=wl.seed)
    enc = bi.build(w, bf.random_tokens(12, 16, seed=wl.seed + 1))
    x, xr = bi.quantize_input(enc, bf.embed(w, bf.random_tokens(1, wl.tokens,
                                                                seed=wl.seed + 2)[0]))
    return compile_encoder(enc, desc, wl.tokens, layers=1), x, xr


def run_workload(desc: Description, wl: Workload, job_dir: Path) -> dict[str, Any]:
    """``wl`` on the RTL of ``desc`` (images poked in, no back-pressure): its cycles and
    each tile's counters, after checking every tensor bit-exact against the interpreter."""
    from heterotron.sim.flows.encoder import run_job, write_compiled_job
    from heterotron.sim.golden.accel import Interpreter

    comp, x, xr = compile_workload(desc, wl)
    interp = Interpreter(desc, comp.memories(x, xr))
    interp.execute(comp.words)
    res = interp.result()
    if res.error:
        raise RuntimeError(f"{wl}: the interpreter reports error {res.error:#x}")
    job_dir.mkdir(parents=True, exist_ok=True)
    job = (job_dir / "calibration-job.npz").resolve()
    write_compiled_job(job, comp, x, xr, res)
    fig = run_job(desc, job, load="backdoor", whole_memory=False)
    if not fig.get("passed") or fig.get("mismatch") is not None:
        raise RuntimeError(f"{wl}: the RTL run failed or differs from the interpreter: "
                           f"{fig.get('mismatch')}")
    return {"cycles": fig["cycles"], "retired": fig["retired"], "words": len(
        comp.words), "tiles": [{k: t[k] for k in ("tile", "kind", "busy", "stalled", "items")}
                               for t in fig["tiles"]]}


def load_runs(path: Path | None = None) -> list[dict[str, Any]]:
    path = Path(path) if path else RUNS_PATH
    return json.loads(path.read_text()) if path.exists() else []


def collect(config: str, desc: Description, workloads: list[Workload], path: Path,
            job_dir: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Run each workload not yet in ``path`` for ``config`` and append it there."""
    from tqdm import tqdm

    from heterotron.sim.golden.compiler import CompileError

    runs = load_runs(path)
    have = {(r["config"], json.dumps(r["workload"], sort_keys=True)) for r in runs}
    todo = [wl for wl in workloads
            if (config, json.dumps(asdict(wl), sort_keys=True)) not in have]
    for wl in tqdm(todo, desc=f"RTL runs on {config}", unit="run", disable=not progress):
        try:
            got = run_workload(desc, wl, job_dir)
        except CompileError as exc:
            tqdm.write(f"skipped {wl}: {exc}")
            continue
        runs.append({"config": config, "config_hash": f"{desc.config_hash:#010x}",
                     "description": desc.table(), "workload": asdict(wl), **got})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(runs, indent=1) + "\n")
    return runs

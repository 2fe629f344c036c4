"""The environment contract between the runner (``heterotron.sim.flows.runner``) and the cocotb
testbenches: the variable names, :func:`encode` on the runner's side, the readers on the
testbench's side. Nothing else names these variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PARAMS", "VECTORS", "STALLS", "BENCH", "BENCH_OUT", "encode", "params_from_env",
           "vectors_from_env", "stalls_from_env", "benching", "bench_sizes", "bench_config",
           "bench_out"]

PARAMS = "HETEROTRON_PARAMS"  # JSON object: the generator parameters the model was built with
VECTORS = "HETEROTRON_VECTORS"  # random vectors (rows, packets, beats) per random test
STALLS = "HETEROTRON_STALLS"  # "0": no random valid gaps or back-pressure
BENCH = "HETEROTRON_BENCH"  # the bench test's set-up; the bench test runs only when it is set
BENCH_OUT = "HETEROTRON_BENCH_OUT"  # the file the bench test writes its figures to


def encode(params: dict[str, Any], *, vectors: int | None = None, stalls: bool = True,
           bench: Sequence[int] | Mapping[str, Any] | None = None,
           bench_out: Path | str | None = None) -> dict[str, str]:
    """The testbench's environment: ``bench`` is a list of sizes (row lengths, matrix sizes)
    or a mapping of settings (the mesh's loads and patterns)."""
    env = {PARAMS: json.dumps(params), STALLS: "1" if stalls else "0"}
    if vectors is not None:
        env[VECTORS] = str(vectors)
    if isinstance(bench, Mapping):
        env[BENCH] = json.dumps(dict(bench))
    elif bench is not None:
        env[BENCH] = ",".join(str(int(v)) for v in bench)
    if bench_out is not None:
        env[BENCH_OUT] = str(bench_out)
    return env


def params_from_env(defaults: dict[str, Any]) -> dict[str, Any]:
    """The generator parameters the runner built this model with."""
    params = dict(defaults)
    raw = os.environ.get(PARAMS)
    if raw:
        params.update(json.loads(raw))
    return params


def vectors_from_env(default: int) -> int:
    return int(os.environ.get(VECTORS, default))


def stalls_from_env() -> bool:
    """Random valid gaps and back-pressure are on unless the runner switched them off."""
    return os.environ.get(STALLS, "1") != "0"


def benching() -> bool:
    """Whether the runner asked for the bench test."""
    return BENCH in os.environ


def bench_sizes() -> list[int]:
    """The sizes of a bench run (:func:`encode`'s list form)."""
    return [int(v) for v in os.environ[BENCH].split(",")]


def bench_config() -> dict[str, Any]:
    """The settings of a bench run (:func:`encode`'s mapping form); empty when not benching."""
    return json.loads(os.environ.get(BENCH) or "{}")


def bench_out() -> str | None:
    """Where the bench test writes its figures, if the runner said."""
    return os.environ.get(BENCH_OUT)

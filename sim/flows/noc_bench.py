"""``heterotron bench noc``: the mesh's latency against offered load, in RTL simulation."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from heterotron.hdl.contract.noc import Topology
from heterotron.sim.flows.build import generate
from heterotron.sim.flows.fpga import fpga_synth
from heterotron.sim.flows.runner import run_sim
from heterotron.sim.flows.toolchain import ToolError
from heterotron.sim.flows.units import get_unit
from heterotron.sim.golden.noc import PATTERNS, PER_HOP, mean_zero_load

__all__ = ["bench_noc", "plot_noc"]

WARMUP = 300
DEFAULT_RATES = [0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]


def _log(msg: str) -> None:
    print(f"[heterotron] bench noc: {msg}", file=sys.stderr, flush=True)


def bench_noc(mesh: str = "4x4", rates: list[float] | None = None,
              patterns: list[str] | None = None, beats: int = 4, cycles: int = 1500,
              fpga: bool = True, seed: int = 1) -> dict[str, Any]:
    dims = [int(v) for v in mesh.split("x")] + [1]
    unit = get_unit("mesh")
    params = unit.resolve(overrides={"nx": str(dims[0]), "ny": str(dims[1]),
                                     "nz": str(dims[2])})
    unit.validate(params)
    if not 1 <= beats <= 64:
        raise ValueError(f"beats must be in [1, 64], not {beats}")
    if not 100 <= cycles <= 100000:
        raise ValueError(f"cycles must be in [100, 100000], not {cycles}")
    rates = sorted(rates or DEFAULT_RATES)
    patterns = patterns or list(PATTERNS)
    topo = Topology.of(params)
    points = []
    for pattern in patterns:
        _log(f"{pattern}: {len(rates)} loads x {WARMUP + cycles} cycles on "
             f"{'x'.join(map(str, dims))} ...")
        cfg = {"patterns": [pattern], "rates": rates, "beats": beats, "cycles": cycles,
               "warmup": WARMUP}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "noc.json"
            result = run_sim(unit, params, seed=seed, stalls=False, testcase="test_bench",
                             quiet=True, bench=cfg, bench_out=out)
            if not result.ok:
                raise ToolError(f"bench simulation failed for {pattern}; see "
                                f"{result.results_xml.parent / 'sim.log'}")
            points += json.loads(out.read_text())
    summary = []
    for pattern in patterns:
        mine = [p for p in points if p["pattern"] == pattern and p["packets"]]
        lowest = min(mine, key=lambda p: p["offered"])
        summary.append({
            "pattern": pattern,
            # the most it accepted; a saturation figure only if some load was refused
            "saturation_throughput": max(p["accepted"] for p in mine),
            "saturated": any(p["saturated"] for p in mine),
            "zero_load_measured": lowest["avg_latency"],
            "zero_load_offered": lowest["offered"],
            "zero_load_analytic": round(mean_zero_load(pattern, topo, beats), 2),
        })
    resources = []
    if fpga:
        router = get_unit("router")
        rparams = router.resolve(overrides={"nx": str(dims[0]), "ny": str(dims[1]),
                                            "nz": str(dims[2]), "x": "1", "y": "1",
                                            "z": str(min(1, dims[2] - 1))})
        _log("one router: synthesis and place and route on ECP5-85F ...")
        gen = generate(router, rparams)
        fig = fpga_synth(gen.verilog, gen.module)
        ports = len(Topology.of(rparams).ports((1, 1, rparams["z"])))
        resources.append({"params": rparams, "ports": ports, **fig})
    return {"mesh": {k: params[k] for k in ("nx", "ny", "nz", "flit_width", "buffer_depth",
                                            "order")},
            "beats": beats, "per_hop": PER_HOP, "warmup": WARMUP, "cycles": cycles,
            "seed": seed, "rates": rates, "points": points, "patterns": summary, "fpga": resources}


def plot_noc(res: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in res["patterns"]:
        pts = [p for p in res["points"] if p["pattern"] == s["pattern"] and p["packets"]]
        ax.plot([p["accepted"] for p in pts], [p["avg_latency"] for p in pts], "o-",
                label=f"{s['pattern']} (sat. {s['saturation_throughput']:.2f})")
    m = res["mesh"]
    ax.set_xlabel("accepted load (flits/node/cycle)")
    ax.set_ylabel("average packet latency (cycles)")
    ax.set_yscale("log")
    ax.set_title(f"{m['nx']}x{m['ny']}x{m['nz']} mesh, {m['order']} routing, "
                 f"{res['beats'] + 1}-flit packets, {m['buffer_depth']}-flit buffers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

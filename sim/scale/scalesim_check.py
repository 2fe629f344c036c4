"""Cross-check of the SA tile's cycles against SCALE-Sim (the ``scalesim`` package).

For each SA GEMM (``M x K`` by ``K x N`` on an ``R x C`` array) this puts side by side:

* **SCALE-Sim**: its "Total Cycles" for the GEMM as one layer (``M, N, K`` in its GEMM
  topology form), run through its Python classes (``single_layer_sim``) with its own
  dataflow of the same name as ours: ``os`` for an output-stationary tile (A's rows and B's
  columns stream in, each PE keeps one output), ``ws`` for a weight-stationary one (a
  ``R x C`` tile of B stays in the array, A's ``M`` rows stream past it), the same two
  dataflows :class:`~heterotron.hdl.gemm.GemmEngine` implements. Its memory is ideal: SRAMs
  large enough for the layer, "CALC" interface bandwidth (the bandwidth needed is estimated,
  never a stall), so its cycles are its compute cycles. From its source
  (``compute/systolic_compute_{os,ws}.py``: one demand-matrix row per cycle) they are, with
  ``F`` folds::

      os: F = ceil(M/R) ceil(N/C),  F (K + R + C - 2) - 1
      ws: F = ceil(K/R) ceil(N/C),  F (M + 2R + C - 2) - 1

  (:func:`closed_form`; the check asserts SCALE-Sim gives exactly that).
* **The model** (:mod:`heterotron.sim.scale.perf` with the shipped calibration): the
  instructions the compiler emits for the GEMM on its tile, composed by
  :func:`~heterotron.sim.scale.perf.schedule` (read-engine waits included): ``LOAD`` A, B
  (and any ``SCALE`` writes issued before them) and the ``RUN``; beside it the array's own
  work (:func:`array_work`, OS: ``F K``, WS: ``F (R + M)``), the issue cycles the model's
  beat-by-beat RUN replay starts from.
* **The RTL** where a shipped run holds the GEMM (``sim/data/calibration_runs.json``): the SA
  tile's ``BUSY`` counter divided by the GEMMs it ran, when they all have the same shape
  (the heads' GEMMs do).

The shapes are the SA GEMMs of the shipped RTL runs' programs, and larger ones: MiniLM's
attention GEMMs on ``configs/encoder.toml`` (8 x 8 arrays) at 32 and 128 tokens, and the same
description with weight-stationary arrays.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

__all__ = ["INSTALL_HINT", "ScaleSimMissing", "Gemm", "DIFFERENCES", "closed_form",
           "scalesim_cycles", "array_work", "program_gemms", "shipped_gemms", "larger_gemms", "run",
           "format_check"]

#: How to get SCALE-Sim (the ``scalesim`` extra of this package, or the package itself).
INSTALL_HINT = "pip install 'heterotron[scalesim]' (or: pip install scalesim)"

#: The MiniLM layer of the larger shapes, and its token counts.
LARGER_WORKLOAD = {"hidden": 384, "heads": 12, "intermediate": 1536}
LARGER_TOKENS = (32, 128)

#: The systematic differences, one line each, keyed as :func:`run` names them.
DIFFERENCES = {
    "fill": "SCALE-Sim charges every fold the array's skew fill and drain (R + C - 2 cycles) "
            "and lets a fold's outputs leave before the next fold starts; our engine overlaps "
            "them (OS: a tile's readout runs under the next tile's products; WS: shadow "
            "weights), so SCALE-Sim = the model's array count + F (R + C - 2) - 1 exactly",
    "loads": "SCALE-Sim's operands are already in its SRAM (prefetched, never a stall); our "
             "tile LOADs A and B for every GEMM from the memory tile over the NoC: a word a "
             "cycle in the fast direction, an element a cycle in the slow one, 3 header beats "
             "a packet, plus the request's and the DONE's trips",
    "drain": "SCALE-Sim writes C outputs a cycle into an output SRAM for free; our RUN sends "
             "every result beat (a row of a column tile) as its own packet of 3 + "
             "ceil(C * out_bytes / word_bytes) beats to the memory tile, so a RUN takes at "
             "least M ceil(N/C) such packets, more than the array's work when K is small",
    "queue": "our LOADs share the memory tile's one read engine with the other tiles' jobs "
             "(PiM weights and vectors, SFU streams) and wait for it; SCALE-Sim's array has "
             "private SRAMs (the model's LOAD cycles include these waits, its links do not)",
    "fixed": "per instruction, our tile pays the command's trip, the engine's checks and the "
             "DONE's trip (the fitted constant of a LOAD, ~65 cycles); SCALE-Sim has no "
             "instructions",
}


class ScaleSimMissing(ImportError):
    """SCALE-Sim is not installed."""

    def __init__(self):
        super().__init__(f"the SCALE-Sim cross-check needs SCALE-Sim (the scalesim package), "
                         f"which is not installed: {INSTALL_HINT}")


def _scalesim():
    """SCALE-Sim's classes: ``(scale_config, topologies, layouts, single_layer_sim,
    scratchpad)`` where ``scratchpad`` is its double-buffered memory with a fix for NumPy
    2.4 (scalesim 3.0.0 converts a one-element array with ``int()`` once, after the whole
    simulation; then the same maximum is taken from the trace it has just written)."""
    try:
        from scalesim.layout_utils import layouts
        from scalesim.memory.double_buffered_scratchpad_mem import double_buffered_scratchpad
        from scalesim.scale_config import scale_config
        from scalesim.single_layer_sim import single_layer_sim
        from scalesim.topology_utils import topologies
    except ImportError as exc:
        raise ScaleSimMissing() from exc

    class Scratchpad(double_buffered_scratchpad):
        def service_memory_requests(self, ifmap_demand, filter_demand, ofmap_demand):
            try:
                super().service_memory_requests(ifmap_demand, filter_demand, ofmap_demand)
            except TypeError:
                if getattr(self, "ofmap_trace_matrix", None) is None or not len(
                        self.ofmap_trace_matrix):
                    raise
                self.total_cycles = int(self.ofmap_trace_matrix[:, 0].max())
                self.traces_valid = True

    return scale_config, topologies, layouts, single_layer_sim, Scratchpad


def closed_form(rows: int, cols: int, dataflow: str, m: int, k: int, n: int) -> int:
    """SCALE-Sim's cycles for the GEMM with ideal memory, read from its source (module
    docstring)."""
    if dataflow == "os":
        return math.ceil(m / rows) * math.ceil(n / cols) * (k + rows + cols - 2) - 1
    if dataflow == "ws":
        return math.ceil(k / rows) * math.ceil(n / cols) * (m + 2 * rows + cols - 2) - 1
    raise ValueError(f"dataflow must be 'os' or 'ws', not {dataflow!r}")


def folds(rows: int, cols: int, dataflow: str, m: int, k: int, n: int) -> int:
    """The folds (our engine's tiles): output tiles (OS) or weight tiles (WS)."""
    first = m if dataflow == "os" else k
    return math.ceil(first / rows) * math.ceil(n / cols)


def scalesim_cycles(shapes) -> dict[tuple, dict[str, int]]:
    """SCALE-Sim on each ``(rows, cols, dataflow, m, k, n)`` of ``shapes``: ``{shape:
    {"cycles": total, "stalls": stall cycles}}``."""
    scale_config, topologies, layouts, single_layer_sim, scratchpad = _scalesim()
    by_array: dict[tuple, list[tuple]] = defaultdict(list)
    for s in sorted(set(shapes)):
        by_array[s[:3]].append(s)
    out = {}
    for (rows, cols, dataflow), group in by_array.items():
        cfg = scale_config()
        cfg.array_rows, cfg.array_cols, cfg.df = rows, cols, dataflow
        # the operands and results fit (its SRAMs are of int8 words); no user bandwidth:
        # SCALE-Sim estimates what the layer needs, so nothing stalls
        kb = max(1, -(-4 * max(max(m * k, k * n, m * n) for *_, m, k, n in group) // 1024))
        cfg.ifmap_sz_kb = cfg.filter_sz_kb = cfg.ofmap_sz_kb = kb
        cfg.force_valid()
        topo = topologies()
        for i, (*_, m, k, n) in enumerate(group):
            # its GEMM form (topology_utils.load_arrays_gemm): an M x K "ifmap" of one
            # channel, N filters of 1 x K
            topo.load_layer_params_from_list(f"g{i}", [f"g{i}", m, k, 1, k, 1, n, 1, 1, 1, 1])
        layout = layouts()   # no custom layout: SCALE-Sim's default operand order
        for i, s in enumerate(group):
            layer = single_layer_sim()
            layer.set_params(layer_id=i, config_obj=cfg, topology_obj=topo,
                             layout_obj=layout, verbose=False)
            layer.memory_system = scratchpad()
            layer.run()
            items = layer.get_compute_report_items()
            out[s] = {"cycles": int(items[1]), "stalls": int(items[2])}
    return out


@dataclass
class Gemm:
    """One SA GEMM of a program, with the model's cycles for its instructions."""

    source: str        # where the shape comes from
    tile: int
    rows: int
    cols: int
    dataflow: str
    out_bytes: int     # a result element's container (requantised or the accumulator)
    m: int
    k: int
    n: int
    compute: float     # the array's own work (:func:`array_work`)
    packets: float     # the result packets' link cycles (perf's "packet_cycles")
    links: float       # the LOADs' link cycles (perf's "load_cycles")
    loads: float       # the model's cycles for the LOADs (and SCALE writes before them)
    run: float         # the model's cycles for the RUN
    instructions: int  # the tile's instructions for it (SCALE writes, LOADs, the RUN)
    rtl: float | None = None   # the RTL's BUSY for one GEMM of its tile

    @property
    def shape(self) -> tuple:
        return (self.rows, self.cols, self.dataflow, self.m, self.k, self.n)

    @property
    def model(self) -> float:
        return self.loads + self.run


def program_gemms(desc, instrs, coef, source: str) -> list[Gemm]:
    """The SA GEMMs of a decoded program (:func:`~heterotron.sim.scale.perf.decode_program`),
    each with the model's cycles from the composed schedule."""
    from heterotron.hdl.contract.accel import Port, elem_bytes
    from heterotron.sim.scale.perf import schedule

    sch = schedule(instrs, coef)
    params = {t.index: t.params for t in desc.tiles}
    dims: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)
    pending: dict[int, float] = defaultdict(float)
    links: dict[int, float] = defaultdict(float)
    count: dict[int, int] = defaultdict(int)
    out = []
    for ins, t0, t1 in zip(instrs, sch.issue, sch.done, strict=True):
        if ins.op in ("SCALE", "LOAD"):
            pending[ins.tile] += t1 - t0
            count[ins.tile] += 1
        if ins.op == "LOAD":
            links[ins.tile] += ins.features["load_cycles"]
            s = ins.args["src"]
            dims[ins.tile][ins.args["port"]] = ((s["cols"], s["rows"]) if ins.args["trans"]
                                                else (s["rows"], s["cols"]))
        elif ins.op == "RUN":
            p = params[ins.tile]
            m, k = dims[ins.tile][Port.A]
            _, n = dims[ins.tile][Port.B]
            ob = elem_bytes(p["out_width"] if p["requant"] else p["acc_width"])
            out.append(Gemm(source, ins.tile, p["rows"], p["cols"], p["dataflow"], ob, m, k, n,
                            array_work(p["dataflow"], p["rows"], p["cols"], m, k, n),
                            ins.features["packet_cycles"],
                            links.pop(ins.tile, 0.0), pending.pop(ins.tile, 0.0), t1 - t0,
                            count.pop(ins.tile, 0) + 1))
    return out


def array_work(dataflow: str, r: int, c: int, m: int, k: int, n: int) -> int:
    """The array's own cycles for a GEMM, with ``F`` folds as SCALE-Sim counts them: OS, ``F =
    ceil(M/R) ceil(N/C)`` output tiles of ``K`` products each; WS, ``F = ceil(K/R)
    ceil(N/C)`` weight tiles of ``R`` rows of weights and then the ``M`` rows of A."""
    if dataflow == "os":
        return math.ceil(m / r) * math.ceil(n / c) * k
    return math.ceil(k / r) * math.ceil(n / c) * (r + m)


def shipped_gemms(coef) -> list[Gemm]:
    """The SA GEMMs of the shipped RTL runs, each with its tile's measured ``BUSY`` per GEMM
    (when every GEMM of that tile in the run has the same shape)."""
    from heterotron.hdl.accelerator import describe
    from heterotron.sim.scale.calibration import program
    from heterotron.sim.scale.runs import Workload, load_runs

    out = []
    for r in load_runs():
        desc = describe(r["description"])
        words, instrs = program(desc, Workload(**r["workload"]), interpret=False)
        if words != r["words"]:
            raise ValueError(f"run on {r['config']} {r['workload']}: the compiler now emits "
                             f"{words} words, the run had {r['words']}")
        gemms = program_gemms(desc, instrs, coef, r["config"])
        busy = {t["tile"]: t["busy"] for t in r["tiles"]}
        per_tile: dict[int, list[Gemm]] = defaultdict(list)
        for g in gemms:
            per_tile[g.tile].append(g)
        for tile, gs in per_tile.items():
            if len({g.shape for g in gs}) == 1:
                for g in gs:
                    g.rtl = busy[tile] / len(gs)
        out += gemms
    return out


def larger_gemms(coef, tokens=LARGER_TOKENS) -> list[Gemm]:
    """MiniLM's SA GEMMs on ``configs/encoder.toml`` (8 x 8 output-stationary arrays) and on
    the same description with weight-stationary arrays, at each token count: the model only
    (no RTL run records these tiles)."""
    import json

    from heterotron.hdl.accelerator import describe
    from heterotron.sim.scale.calibration import MINILM_RUNS_PATH, program
    from heterotron.sim.scale.runs import Workload

    # configs/encoder.toml as its MiniLM RTL runs recorded it, with all its PiM tiles (the
    # flows layer does not read the command layer's configuration files)
    runs = json.loads(MINILM_RUNS_PATH.read_text())["runs"]
    table = max((r for r in runs if r["config"] == "encoder"),
                key=lambda r: r["pim_tiles"])["description"]
    out = []
    for dataflow in ("os", "ws"):
        t = {**table, "tile": [{**x, "dataflow": dataflow} if x["kind"] == "sa" else x
                               for x in table["tile"]]}
        desc = describe(t)
        for n in tokens:
            _, instrs = program(desc, Workload(**LARGER_WORKLOAD, tokens=n), interpret=False)
            out += program_gemms(desc, instrs, coef, f"MiniLM, {n} tokens")
    return out


def _rows(gemms: list[Gemm], ss: dict[tuple, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per distinct (source kind, array, result width, shape): means over the GEMMs."""
    groups: dict[tuple, list[Gemm]] = defaultdict(list)
    for g in gemms:
        kind = "rtl runs" if g.rtl is not None else g.source
        groups[(kind, g.rows, g.cols, g.dataflow, g.out_bytes, g.m, g.k, g.n)].append(g)
    rows = []
    for key, gs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "rtl runs", kv[0])):
        kind, r, c, df, ob, m, k, n = key
        s = ss[(r, c, df, m, k, n)]

        def mean(f, gs=gs):
            return sum(f(g) for g in gs) / len(gs)

        model = mean(lambda g: g.model)
        rtl = mean(lambda g: g.rtl) if gs[0].rtl is not None else None
        array, links, packets = (mean(lambda g: g.compute), mean(lambda g: g.links),
                                 mean(lambda g: g.packets))
        rows.append({
            "source": kind, "configs": sorted({g.source for g in gs}), "gemms": len(gs),
            "rows": r, "cols": c, "dataflow": df, "out_bytes": ob, "m": m, "k": k, "n": n,
            "folds": folds(r, c, df, m, k, n),
            "scalesim": s["cycles"], "scalesim_stalls": s["stalls"],
            "closed_form": closed_form(r, c, df, m, k, n),
            "array": array, "links": links, "packets": packets,
            "instructions": mean(lambda g: g.instructions),
            "loads": mean(lambda g: g.loads), "run": mean(lambda g: g.run),
            "model": model, "rtl": rtl,
            # the RTL's cycles beyond the links and the longer of the array and the result
            # packets: the per-instruction trips and checks ("fixed")
            "overhead": rtl - links - max(array, packets) if rtl is not None else None,
            "model_ratio": model / s["cycles"],
            "rtl_ratio": rtl / s["cycles"] if rtl is not None else None,
            "model_vs_rtl": model / rtl - 1 if rtl else None,
        })
    return rows


def run(larger: bool = True) -> dict[str, Any]:
    """The cross-check: SCALE-Sim, the model and the RTL on the shipped runs' SA GEMMs (and,
    with ``larger``, MiniLM's). Raises :class:`ScaleSimMissing` without SCALE-Sim."""
    from importlib import metadata

    from heterotron.sim.scale.calibration import load_calibration

    _scalesim()   # fail before any work when it is missing
    coef = load_calibration().coef
    gemms = shipped_gemms(coef) + (larger_gemms(coef) if larger else [])
    rows = _rows(gemms, scalesim_cycles(g.shape for g in gemms))

    def spread(values):
        v = [x for x in values if x is not None]
        return (round(min(v), 3), round(max(v), 3)) if v else None

    summary = {}
    for df in ("os", "ws"):
        for kind in ("rtl runs", "larger"):
            sel = [x for x in rows if x["dataflow"] == df
                   and (x["source"] == "rtl runs") == (kind == "rtl runs")]
            if sel:
                summary[f"{df}, {kind}"] = {
                    "shapes": len(sel),
                    "rtl/scalesim": spread(x["rtl_ratio"] for x in sel),
                    "model/scalesim": spread(x["model_ratio"] for x in sel),
                    "model vs rtl": spread(x["model_vs_rtl"] for x in sel),
                    "loads share": spread(x["loads"] / x["model"] for x in sel),
                    "overhead": spread(x["overhead"] for x in sel),
                }
    return {"scalesim": metadata.version("scalesim"),
            "memory": "ideal: SRAMs holding the whole layer, estimated (CALC) interface "
                      "bandwidth, so no stall",
            "rows": rows, "summary": summary, "differences": DIFFERENCES}


def format_check(r: dict[str, Any]) -> str:
    """The table and the differences, for a person."""
    def ratio(v):
        return f"{v:6.2f}" if v is not None else "     -"

    def rng(v, fmt=".2f"):
        return f"{v[0]:{fmt}} .. {v[1]:{fmt}}" if v is not None else "-"

    lines = [
        f"SA tile vs SCALE-Sim {r['scalesim']}: cycles of one GEMM, M x K by K x N on an "
        "R x C array, the same dataflow (os/ws)",
        f"  SCALE-Sim: its total cycles, its memory {r['memory']}",
        "  array: the array's own work (OS: F K, WS: F (R + M), F folds); "
        "links: the LOADs' link cycles; packets: the RUN's result packets' link cycles",
        "  model: the calibrated scale model's cycles for the GEMM's instructions (LOADs, "
        "RUN); RTL: the SA tile's BUSY / its GEMMs in the shipped runs (mean over them)",
        "  out: the result element's bytes (1: requantised, 4: the int32 accumulator)", ""]
    head = (f"  {'source':<18} {'array':>6} {'M':>4} {'K':>4} {'N':>4} {'out':>3} "
            f"{'SCALE-Sim':>9} {'array':>6} {'links':>6} {'packets':>7} {'model':>6} "
            f"{'RTL':>6} {'mdl/SS':>6} {'RTL/SS':>6} {'mdl/RTL':>7}")
    lines += [head, "  " + "-" * (len(head) - 2)]
    for x in r["rows"]:
        rtl = f"{x['rtl']:6.0f}" if x["rtl"] is not None else "     -"
        mr = f"{x['model_vs_rtl']:+7.1%}" if x["model_vs_rtl"] is not None else "      -"
        arr = f"{x['rows']}x{x['cols']} {x['dataflow']}"
        lines.append(
            f"  {x['source']:<18} {arr:>6} {x['m']:>4} {x['k']:>4} {x['n']:>4} "
            f"{x['out_bytes']:>2}B {x['scalesim']:>9} {x['array']:>6.0f} {x['links']:>6.0f} "
            f"{x['packets']:>7.0f} {x['model']:>6.0f} {rtl} {ratio(x['model_ratio'])} "
            f"{ratio(x['rtl_ratio'])} {mr}")
    lines += ["", "  summary (min .. max over the shapes; overhead: RTL - links - max(array, "
              "packets), the instructions' fixed costs):"]
    for name, s in r["summary"].items():
        lines.append(f"    {name:<13} {s['shapes']:>3} shapes: RTL/SCALE-Sim "
                     f"{rng(s['rtl/scalesim'])}, model/SCALE-Sim {rng(s['model/scalesim'])}, "
                     f"model vs RTL {rng(s['model vs rtl'], '+.1%')}, LOADs "
                     f"{rng(s['loads share'])} of the model's cycles, overhead "
                     f"{rng(s['overhead'], '.0f')}")
    lines += ["", "  where and why they differ:"]
    for name, text in r["differences"].items():
        lines.append(f"    {name}: {text}")
    return "\n".join(lines) + "\n"

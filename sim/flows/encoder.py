"""``heterotron run minilm``: compile MiniLM layers for a description, run the program, and
report every stage against the integer encoder (``bert_int.run_layer``).

The program runs in the program interpreter (``golden=True``) or, by default, also on the
RTL (Verilator, :mod:`heterotron.tb.encoder`), judged against the interpreter tensor by
tensor, in the simulation harness (:mod:`heterotron.hdl.simtop`) as a fast model: about
30k cycles a second on ``configs/encoder.toml``, where MiniLM's layer 0 on 8 tokens is
3.9M cycles after 2.1M of image loading.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from heterotron.hdl.contract.accel import Description, TileKind, decode_instr
from heterotron.sim.flows.bound import PimFloors
from heterotron.sim.golden import bert_int as bi
from heterotron.sim.golden.accel import Interpreter
from heterotron.sim.golden.compiler import STAGES, Compiled, compile_encoder

__all__ = ["EncoderRunError", "load_encoder", "inputs", "run_minilm", "program_stats",
           "format_report", "job_tensors", "write_compiled_job", "run_job"]

#: Where the integer parameter set built from the shipped calibration is kept between runs.
CACHE = Path("build") / "run" / "minilm-int.npz"


class EncoderRunError(ValueError):
    """The run cannot be done as asked (the message says why)."""


def load_encoder(params: str | Path | None = None, progress=print) -> bi.IntEncoder:
    """The integer MiniLM: from ``params`` (a ``minilm-int.npz`` of ``heterotron accuracy``),
    else built from the shipped calibration sets once and cached under ``build/run``."""
    if params is not None:
        return bi.load(params)
    if CACHE.exists():
        try:
            return bi.load(CACHE)
        except ValueError:
            pass  # an older format: build it again
    from heterotron.sim.golden import bert_float as bf
    from heterotron.sim.studies.accuracy import shipped_sentences

    progress("building the integer MiniLM from the shipped calibration sets (once, ~20 s)")
    w = bf.load_minilm()
    enc = bi.build(w, bf.tokenize([s for name in ("calibration", "calibration_paragraphs")
                                   for s in shipped_sentences(name)]))
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    bi.save(enc, CACHE)
    return enc


def inputs(enc: bi.IntEncoder, *, tokens: int | None = None, sentence: str | None = None):
    """``(text, tokenized, x, xr, float embedding)`` for a sentence, or for the first
    ``tokens`` tokens of the shipped paragraphs, one after another ([CLS] ... [SEP] kept;
    up to 86 tokens, the first paragraph alone)."""
    from heterotron.sim.golden import bert_float as bf
    from heterotron.sim.studies.accuracy import shipped_sentences

    if sentence is None:
        if tokens is None or not 3 <= tokens <= 128:
            raise EncoderRunError(f"--tokens must be in [3, 128], not {tokens}")
        sentence = " ".join(shipped_sentences("paragraphs"))
        tok = bf.tokenize([sentence], max_len=tokens)[0]
        if len(tok.ids) < tokens:
            raise EncoderRunError(f"the shipped paragraphs have only {len(tok.ids)} tokens")
    else:
        tok = bf.tokenize([sentence])[0]
    w = bf.load_minilm()
    emb = bf.embed(w, tok)
    x, xr = bi.quantize_input(enc, emb)
    return sentence, tok, x, xr, w


def program_stats(comp: Compiled) -> dict[str, Any]:
    """Instructions per tile and opcode, and the PiM tiles' programming: crossbar blocks
    written, weight bytes moved, and the crossbars that would hold every weight at once."""
    desc = comp.desc
    kinds = {t.index: t for t in desc.tiles}
    per_tile: dict[int, Counter] = {t.index: Counter() for t in desc.tiles}
    words, pos = comp.words, 0
    while pos < len(words):
        op, head, args = decode_instr(words[pos:])
        per_tile[head["tile"]][op.name] += 1
        pos += 1 + op.words
    pims = desc.of_kind(TileKind.PIM)
    blocks = sum(per_tile[t.index]["PROGRAM"] for t in pims)
    resident = 0
    if pims:
        p = pims[0].params
        for i in comp.layers:
            for key in ("q", "k", "v", "o", "fc1", "fc2"):
                n, k = comp.enc.params[f"layer{i}.{key}.w"].shape
                resident += math.ceil(n / p["cols"]) * math.ceil(k / p["rows"])
    return {
        "words": len(words),
        "instructions": sum(sum(c.values()) for c in per_tile.values()),
        "tiles": [{"tile": i, "kind": kinds[i].kind.name.lower(), **dict(sorted(c.items()))}
                  for i, c in per_tile.items() if c],
        "pim_blocks_programmed": blocks,
        "pim_crossbars_to_hold_all_weights": resident,
        "pim_tiles": len(pims),
    }


def _compare(enc, comp: Compiled, memories, x, xr, layer: int) -> tuple[list[dict], Any, Any]:
    """Each stage of ``layer``: bit-exact, or its first mismatching tensor and position."""
    nh, T = enc.meta["heads"], comp.tokens
    taps: dict = {}
    out, outr = bi.run_layer(enc, layer, x, xr, taps)
    taps["outr"] = outr
    taps["h1r"] = bi._run_layernorm(enc, layer, "ln1", taps["h1_in"])[1]
    rows = []
    for stage, names in STAGES:
        first = None
        for name in names:
            if name.endswith("_acc"):
                continue  # no run_layer tap: judged through the requantised tensor
            got = comp.read(memories, f"layer{layer}.{name}")
            want = taps[name]
            if name in ("scores", "probs"):
                want = want.reshape(nh * T, T)
            if not np.array_equal(got, want):
                at = np.argwhere(got != want)[0].tolist()
                first = {"tensor": name, "at": at, "got": int(got[tuple(at)]),
                         "want": int(want[tuple(at)])}
                break
        rows.append({"layer": layer, "stage": stage, "bit_exact": first is None,
                     **({"first_mismatch": first} if first else {})})
    return rows, out, outr


def run_minilm(desc: Description, *, layers: int = 1, tokens: int | None = 8,
               sentence: str | None = None, params: str | Path | None = None,
               golden: bool = False, whole_memory: bool = False, load: str = "backdoor",
               progress=print) -> dict[str, Any]:
    """Compile ``layers`` MiniLM layers for ``desc``, run them (the RTL in Verilator, or the
    program interpreter with ``golden``) and judge every stage. On the RTL, the images are
    loaded through the harness's backdoor (``load = "backdoor"``, a scratchpad word a
    cycle) or through the host link (``"host"``, a byte a cycle, as on a board); the tensors
    the program writes are read back, and with ``whole_memory`` every byte of the images too
    (nothing written where it should not be: about 2M more cycles a layer, the weights).
    ``progress`` takes the messages; ``None`` runs quietly (no messages, no bars)."""
    if load not in LOADS:
        raise EncoderRunError(f"--load must be one of {', '.join(LOADS)}, not {load!r}")
    say = progress if progress is not None else (lambda _message: None)
    enc = load_encoder(params, say)
    if not 1 <= layers <= enc.layers:
        raise EncoderRunError(f"--layers must be in [1, {enc.layers}], not {layers}")
    text, tok, x, xr, w = inputs(enc, tokens=tokens, sentence=sentence)
    T = x.shape[0]
    t0 = time.monotonic()
    comp = compile_encoder(enc, desc, T, layers)
    compile_s = time.monotonic() - t0
    stats = program_stats(comp)
    say(f"compiled {layers} layer(s) for {T} tokens: {stats['words']} words, "
        f"{stats['instructions']} instructions ({compile_s:.1f} s)")
    from tqdm import tqdm

    interp = Interpreter(desc, comp.memories(x, xr))
    floors = PimFloors(desc)
    interp.on_mvm = floors.on_mvm
    t0 = time.monotonic()
    with tqdm(total=len(comp.stage_words), desc="interpreter", unit="stage",
              disable=progress is None) as bar:
        for layer, stage, lo, hi in comp.stage_words:
            bar.set_postfix_str(f"layer {layer} {stage}")
            interp.execute(comp.words[lo:hi])
            bar.update()
    run_s = time.monotonic() - t0
    interp.on_mvm = None
    res = interp.result()
    floor = floors.result(comp.words)
    rows = []
    xi, xri = x, xr
    for i in comp.layers:
        stage_rows, xi, xri = _compare(enc, comp, res.memories, xi, xri, i)
        rows += stage_rows
    rtl = None
    if not golden:
        rtl = _run_rtl(desc, comp, x, xr, res, progress, whole_memory, load)
        bad = rtl.get("mismatch")
        for r in rows:  # the RTL against the interpreter: stages before the first mismatch
            if bad and (r["layer"], r["stage"]) == (bad["layer"], bad["stage"]):
                r["bit_exact"] = False
                r["first_mismatch"] = {"tensor": bad["tensor"], "at": [bad["row"], bad["col"]],
                                       "got": bad["got"], "want": bad["want"], "rtl": True}
            elif bad and _after(r, bad):
                r["bit_exact"] = None  # not judged: an earlier stage already differs
        if not rtl["passed"] and not bad:  # failed, but no tensor differs: say where to look
            rows[-1]["bit_exact"] = False
            rows[-1]["first_mismatch"] = {"rtl": True, "failed": rtl.get("results")}
    report: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2", "layers": layers, "tokens": T,
        "input": text if sentence is not None
        else f"first {T} tokens of the shipped paragraphs",
        "engine": "program interpreter (golden)" if golden else "RTL (Verilator)",
        "description": desc.canonical(),
        "bit_exact": all(r["bit_exact"] is True for r in rows), "stages": rows,
        "errors": [{"id": i, "flags": int(f), "message": m} for i, f, m in res.errors],
        "retired": res.retired, "program": stats,
        "seconds": {"compile": round(compile_s, 2), "run": round(run_s, 2)},
    }
    if floor:
        report["pim_floor"] = {str(t): c for t, c in floor.items()}
    if rtl is not None:
        report["rtl"] = _utilisation(rtl, floor)
    if layers == enc.layers:
        from heterotron.sim.golden import bert_float as bf

        _, outr = comp.output(res.memories)
        got = bf.mean_pool(outr * enc.meta["scales"][-1]["outr"], tok.mask)
        ref = bf.mean_pool(bf.encode(w, tok)[-1], tok.mask)
        states = bi.run(enc, bf.embed(w, tok))
        int_ref = bf.mean_pool(states[-1], tok.mask)
        report["embedding"] = {
            "cosine_vs_float": round(float(got @ ref), 6),
            "equals_integer_encoder": bool(np.array_equal(got, int_ref)),
        }
    return report


_STAGE_ORDER = [name for name, _ in STAGES]


def _after(row: dict, bad: dict) -> bool:
    return ((row["layer"], _STAGE_ORDER.index(row["stage"]))
            > (bad["layer"], _STAGE_ORDER.index(bad["stage"])))


def write_compiled_job(path: Path, comp: Compiled, x, xr, res,
                       stalls: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> int:
    """The job of ``comp`` run from input ``x, xr``, judged against the interpreter's result
    ``res`` (:func:`heterotron.tb.encoder.write_job`); returns the image bytes."""
    from heterotron.tb.encoder import write_job

    extent = {t: -(-n // 4) * 4 for t, n in comp.allocated.items()}  # writes stay inside
    images = comp.memories(x, xr)
    write_job(path, comp.words, {t: images[t][:n] for t, n in extent.items()},
              {t: res.memories[t][:n] for t, n in extent.items()}, job_tensors(comp),
              res.retired, stalls)
    return sum(extent.values())


def _run_rtl(desc: Description, comp: Compiled, x, xr, res, progress,
             whole_memory: bool, load: str) -> dict[str, Any]:
    """The compiled program on the RTL, judged against the interpreter's result ``res``."""
    # Per process: two runs at once (two terminals, test workers) must not share the job,
    # its result or its progress file.
    job = (Path("build") / "run" / f"job-{desc.config_hash:08x}-{os.getpid()}.npz").resolve()
    job.parent.mkdir(parents=True, exist_ok=True)
    nbytes = write_compiled_job(job, comp, x, xr, res)
    if progress is not None:
        progress(f"simulating the RTL (Verilator): {nbytes} bytes of scratchpad images "
                 f"(loaded through the {'harness backdoor' if load == 'backdoor' else 'host link'}"
                 f"), {len(comp.words)} program words")
    try:
        return run_job(desc, job, progress=progress is not None, whole_memory=whole_memory,
                       load=load)
    finally:
        for done in (job, job.with_suffix(".json"), job.with_suffix(".progress")):
            done.unlink(missing_ok=True)


def _utilisation(rtl: dict[str, Any], floor: dict[int, int]) -> dict[str, Any]:
    """Each tile's use; the bounding tile (the busiest) and, where the tile has a floor
    (:mod:`heterotron.sim.flows.bound`, the PiM tiles), the layer's ratio to the highest
    floor: the bound."""
    cycles = rtl.get("cycles", 0)
    tiles = [{**t, "utilisation": round(t["busy"] / cycles, 4) if cycles else 0.0,
              **({"floor": floor[t["tile"]]} if t["tile"] in floor else {})}
             for t in rtl.get("tiles", [])]
    work = [t for t in tiles if t["kind"] not in ("control", "memory")]
    busiest = max(work, key=lambda t: t["busy"]) if work else None
    top = max(floor, key=floor.get) if floor else None
    return {"cycles": cycles, "tiles": tiles,
            "bounding_tile": busiest and {"tile": busiest["tile"], "kind": busiest["kind"],
                                          "busy": busiest["busy"]},
            "bound": top is not None and {"tile": top, "floor": floor[top]} or None,
            "ratio_to_bound": round(cycles / floor[top], 3) if top is not None and floor[top]
            else None,
            "cycles_per_second": rtl.get("cycles_per_second"),
            "seconds": {"load": rtl.get("load_seconds"), "run": rtl.get("run_seconds"),
                        "build": rtl.get("build_seconds")}}


def format_report(r: dict[str, Any]) -> str:
    lines = [f"MiniLM, {r['layers']} layer(s), {r['tokens']} tokens ({r['input']}), on "
             f"{r['engine']}:"]
    for s in r["stages"]:
        if s["bit_exact"] is None:
            mark = "not judged (an earlier stage differs)"
        elif s["bit_exact"]:
            mark = "bit-exact"
        else:
            mm = s["first_mismatch"]
            if "failed" in mm:
                mark = f"FAILED on the RTL, no tensor differs: see {mm['failed']}"
            else:
                mark = (f"MISMATCH: {mm['tensor']}{mm['at']} = {mm['got']}, run_layer "
                        f"{mm['want']}")
        lines.append(f"  layer {s['layer']} {s['stage']:<10} {mark}")
    p = r["program"]
    lines.append(f"program: {p['words']} words, {p['instructions']} instructions, "
                 f"{r['retired']} retired, {len(r['errors'])} errors")
    for t in p["tiles"]:
        ops = ", ".join(f"{k} {v}" for k, v in t.items() if k not in ("tile", "kind"))
        lines.append(f"  tile {t['tile']} ({t['kind']}): {ops}")
    if p["pim_tiles"]:
        lines.append(f"PiM: {p['pim_blocks_programmed']} crossbar blocks programmed on "
                     f"{p['pim_tiles']} tiles; holding every weight at once would take "
                     f"{p['pim_crossbars_to_hold_all_weights']} crossbars")
    if "embedding" in r:
        e = r["embedding"]
        lines.append(f"sentence embedding: cosine {e['cosine_vs_float']:.6f} against float "
                     f"MiniLM; {'equal to' if e['equals_integer_encoder'] else 'DIFFERENT from'}"
                     " the integer encoder's, bit for bit")
    lines.append(f"{'PASS' if r['bit_exact'] else 'FAIL'}: every stage "
                 f"{'bit-exact' if r['bit_exact'] else 'NOT bit-exact'} "
                 f"(compile {r['seconds']['compile']} s, run {r['seconds']['run']} s)")
    if "rtl" in r:
        u = r["rtl"]
        lines.append(f"cycles: {u['cycles']} ({u['cycles_per_second']} simulated cycles/s)")
        for t in u["tiles"]:
            fl = f", floor {t['floor']}" if "floor" in t else ""
            lines.append(f"  tile {t['tile']} ({t['kind']}): busy {t['busy']} "
                         f"({100 * t['utilisation']:.1f}%), items {t['items']}{fl}")
        b, fl = u["bounding_tile"], u["bound"]
        if b:
            lines.append(f"busiest: tile {b['tile']} ({b['kind']}), busy {b['busy']} cycles "
                         f"(issue to done, waiting for its data included)")
        if fl:
            lines.append(f"bound: tile {fl['tile']} (pim), floor {fl['floor']} cycles (a weight "
                         f"a cycle, its conversions, its rescales); the run took "
                         f"{u['ratio_to_bound']}x that")
    return "\n".join(lines)


#: How a job's images reach the scratchpads: the simulation harness's backdoor (a
#: scratchpad word a cycle), or the host link (a byte a cycle, as on a board).
LOADS = ("backdoor", "host")

#: The testbench that runs a job on the RTL (:mod:`heterotron.tb.encoder`).
JOB_TESTBENCH = "heterotron.tb.encoder"


def job_tensors(comp: Compiled) -> list[dict]:
    """Every tensor the program writes, in program order, with its layer and stage."""
    out = []
    for layer in comp.layers:
        for stage, names in STAGES:
            for name in names:
                r = comp.tensors[f"layer{layer}.{name}"]
                out.append({"name": f"layer{layer}.{name}", "layer": layer, "stage": stage,
                            "mem": r.mem, "addr": r.addr, "rows": r.rows, "cols": r.cols,
                            "stride": r.stride, "ebytes": r.ebytes})
    return out


def run_job(desc: Description, job: Path, *, seed: int = 1, quiet: bool = True,
            progress: bool = False, whole_memory: bool = True,
            load: str = "host") -> dict[str, Any]:
    """Run a job file (:func:`heterotron.tb.encoder.write_job`) on the RTL (Verilator) and
    return the testbench's figures, with ``passed``; with ``progress``, a tqdm bar per phase
    (loading the images, running the program, reading the scratchpads back). The testbench
    reads back every byte of the images (``whole_memory``: nothing written where it should
    not be), or only the bytes of the tensors the program writes. ``load``: the images go
    through the host link (``"host"``) or the harness's backdoor (``"backdoor"``)."""
    if load not in LOADS:
        raise ValueError(f"load must be one of {', '.join(LOADS)}, not {load!r}")
    import json
    import threading

    from heterotron.sim.flows.accel import generate_sim_accelerator
    from heterotron.sim.flows.runner import simulate_generated

    out = job.with_suffix(".json")
    out.unlink(missing_ok=True)
    ticks = job.with_suffix(".progress")
    ticks.unlink(missing_ok=True)
    bench = {"job": str(job), "read_back": "all" if whole_memory else "written", "load": load,
             **({"progress": str(ticks)} if progress else {})}
    done: dict[str, Any] = {}

    def simulate():
        try:
            done["res"] = simulate_generated(
                generate_sim_accelerator(desc), JOB_TESTBENCH, seed=seed, bench=bench,
                bench_out=out, testcase="test_job", quiet=quiet, fast_model=True)
        except BaseException as exc:  # handed to the caller's thread
            done["exc"] = exc

    worker = threading.Thread(target=simulate)
    worker.start()
    if progress:
        _follow(ticks, worker)
    worker.join()
    if "exc" in done:
        raise done["exc"]
    res = done["res"]
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    figures = rows[-1] if rows else {}
    return {**figures, "passed": res.tests == 1 and res.failed == 0,
            "results": str(res.results_xml), "build_seconds": round(res.build_seconds, 1)}


_PHASES = {"load": ("loading images", "B"), "run": ("running the program", "instr"),
           "read": ("reading back", "B")}


def _follow(ticks: Path, worker) -> None:
    """A tqdm bar per phase from the testbench's progress lines, until ``worker`` ends."""
    import json

    from tqdm import tqdm

    bar, phase, seen = None, None, 0
    while worker.is_alive():
        worker.join(0.5)
        if not ticks.exists():
            continue
        lines = ticks.read_text().splitlines()
        for line in lines[seen:]:
            try:
                tick = json.loads(line)
            except ValueError:  # a line being written
                break
            seen += 1
            if tick["phase"] != phase:
                if bar is not None:
                    bar.close()
                phase = tick["phase"]
                what, unit = _PHASES[phase]
                bar = tqdm(total=tick["total"], desc=what, unit=unit,
                           unit_scale=unit == "B")
            bar.update(tick["done"] - bar.n)
    if bar is not None:
        bar.close()


def with_pim_tiles(table: dict[str, Any], n: int) -> dict[str, Any]:
    """An ``[accelerator]`` table keeping only its first ``n`` PiM tiles (the compiler spreads
    the static-weight blocks over the PiM tiles there are)."""
    import copy

    tiles = table.get("tile", [])
    have = sum(1 for t in tiles if t.get("kind") == "pim")
    if not 1 <= n <= have:
        raise EncoderRunError(f"--pim-tiles must be in [1, {have}] (the description's PiM "
                              f"tiles), not {n}")
    out = copy.deepcopy(table)
    kept, seen = [], 0
    for t in out["tile"]:
        if t.get("kind") == "pim":
            seen += 1
            if seen > n:
                continue
        kept.append(t)
    out["tile"] = kept
    return out


def bench_minilm(table: dict[str, Any], tokens: list[int], pim_tiles: list[int], *,
                 params: str | Path | None = None, progress=print) -> list[dict[str, Any]]:
    """MiniLM's layer 0 on the RTL: its cycles against its bound (the highest PiM floor) for
    each token count on the description of ``table``, then for each PiM tile count at the
    first token count. Every run is judged stage by stage as ``run minilm`` judges it."""
    from heterotron.hdl.accelerator import describe

    have = sum(1 for t in table.get("tile", []) if t.get("kind") == "pim")
    points = [(t, have) for t in tokens] + [(tokens[0], n) for n in pim_tiles if n != have]
    rows = []
    for t, n in points:
        desc = describe(with_pim_tiles(table, n))
        if progress is not None:
            progress(f"layer 0 on {t} tokens, {n} PiM tiles")
        r = run_minilm(desc, layers=1, tokens=t, params=params, progress=progress)
        u = r["rtl"]
        rows.append({"tokens": r["tokens"], "pim_tiles": n, "bit_exact": r["bit_exact"],
                     "cycles": u["cycles"], "bound": u["bound"] and u["bound"]["floor"],
                     "ratio_to_bound": u["ratio_to_bound"],
                     "busiest": u["bounding_tile"], "cycles_per_second":
                     u["cycles_per_second"], "instructions": r["program"]["instructions"]})
    return rows


def plot_bench(rows: list[dict[str, Any]], path: Path) -> None:
    """Cycles and bound against tokens (all PiM tiles) and against PiM tiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    most = max(r["pim_tiles"] for r in rows)
    by_t = sorted((r for r in rows if r["pim_tiles"] == most), key=lambda r: r["tokens"])
    t0 = rows[0]["tokens"]
    by_p = sorted((r for r in rows if r["tokens"] == t0), key=lambda r: r["pim_tiles"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, pts, key, label in ((axes[0], by_t, "tokens", f"tokens ({most} PiM tiles)"),
                                (axes[1], by_p, "pim_tiles", f"PiM tiles ({t0} tokens)")):
        xs = [r[key] for r in pts]
        ax.plot(xs, [r["cycles"] for r in pts], "o-", label="RTL cycles")
        ax.plot(xs, [r["bound"] for r in pts], "s--", label="bound (highest PiM floor)")
        for r in pts:
            ax.annotate(f"{r['ratio_to_bound']}x", (r[key], r["cycles"]),
                        textcoords="offset points", xytext=(4, 6), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("cycles, MiniLM layer 0")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("MiniLM layer 0 on the RTL against its bound")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

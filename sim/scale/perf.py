"""The performance model: the cycles of a program on a description, from per-instruction
cost models fitted to the RTL's counters, composed by the control tile's own issue rules.

**The same program.** The model reads the words the compiler emits
(:func:`~heterotron.sim.golden.compiler.compile_encoder`), decoded with the contract's
:func:`~heterotron.hdl.contract.accel.decode_instr`; a PiM ``MVM``'s converted bit-planes
come from the program interpreter's ``on_mvm`` hook when it runs (skipped planes depend on
the data), else every plane is counted.

**A tile instruction's cost** is linear in a few work figures of the instruction
(:data:`FEATURES`: its words moved, its elements, the systolic array's passes, the PiM
tile's floor of :mod:`heterotron.sim.flows.bound`, ...)::

    busy_i = sum_f  c[op, f] * feature_f(i)

``busy_i`` is what the RTL's per-tile ``BUSY`` counter counts for it: from its issue to its
``DONE`` (the command's trip, waiting for its data, the work, the result's write, the
``DONE``'s trip). The coefficients ``c`` are fitted, non-negative, to the RTL runs' ``BUSY``
counters (:func:`fit`): ``BUSY_t = sum over t's instructions of busy_i``, one equation per
tile and run.

**Composition** (the control tile's documented rules, ``hdl/tiles/control.py``): one
instruction at a time, in order; fetching takes two cycles a word, the checks two cycles a
region (at least one round), then a ``NOP`` retires, a ``WAIT`` waits until no tile of its
mask has an instruction outstanding, and a tile instruction waits until its own tile has
none outstanding, is issued and sent (``words + 2`` cycles), and the executor goes on. The
layer's latency is the last ``DONE``. What the model leaves out: contention between tiles
for the scratchpad's read engine and the network beyond what the fitted costs absorb at the
calibration runs' mix; :func:`score` measures what that costs on held-out runs.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from heterotron.hdl.contract.accel import (
    EBYTES,
    Description,
    decode_instr,
    elem_bytes,
)
from heterotron.hdl.tiles.control import CHECKED_REGIONS

__all__ = ["FEATURES", "Instr", "decode_program", "region_words", "Coefficients", "Schedule",
           "schedule", "fit", "predict_busy"]

#: The work figures each opcode's cost is linear in ("one": a constant per instruction).
FEATURES: dict[str, tuple[str, ...]] = {
    "COPY": ("one", "words"),
    "LOAD": ("one", "load_cycles"),
    "SCALE": ("one",),
    "RUN": ("one", "run_cycles", "packet_cycles"),
    "ADC": ("one",),
    "PROGRAM": ("one", "weights"),
    "MVM": ("one", "floor", "out_elems"),
    "TABLE": ("one", "elems"),
    "REQUANT": ("one", "stream", "out_words", "rows"),
    "SOFTMAX": ("one", "stream", "beats", "out_words", "rows"),
    "GELU": ("one", "stream", "out_words", "rows"),
    "LAYERNORM": ("one", "stream", "beats", "out_words", "rows"),
}
#: Opcodes the control tile runs itself.
CONTROL_OPS = ("NOP", "WAIT")


class Instr(NamedTuple):
    """One instruction of a program, as the model sees it."""

    index: int          # position in the program (instructions)
    op: str             # opcode name
    tile: int
    words: int          # 1 + argument words
    regions: int        # regions the checks look at (ADDRESS slots)
    mask: int           # WAIT: the tiles it waits for (all bits for 0)
    features: dict[str, float]
    args: dict          # its decoded argument fields
    planes: tuple = ()  # MVM: the bit-planes each vector converts
    reads: tuple = ()   # (memory tile, cycles its read engine is held) per read job


def region_words(region: dict, word_bytes: int) -> int:
    """Scratchpad words a region's rows take, whole words a row (decoded ``REGION`` fields)."""
    return region["rows"] * -(-region["cols"] * EBYTES[region["ebytes"]] // word_bytes)


def _sa_load_cycles(desc: Description, p: dict, args: dict) -> float:
    """A LOAD's data cycles as ``hdl/tiles/sa.py`` and ``hdl/gemm.py`` take them, from the
    first data word to the last element in the engine's buffer. In the engine's fast
    direction a stored row goes in chunks of up to ``min(elements a word, lanes)`` elements,
    one a cycle; in the slow direction an element a cycle. The tile takes a packet's three
    header beats while the engine still works on the previous packet's last word, so a packet
    after the first costs ``max(0, 4 - c)`` more cycles for ``c`` cycles a word (three for a
    word a cycle, none at an element a cycle of a full 4-element word)."""
    from heterotron.hdl.contract.accel import Port

    s, wb = args["src"], desc.word_bytes
    port, trans = args["port"], args["trans"]
    per_word = max(1, wb // EBYTES[s["ebytes"]])
    words = region_words(s, wb)
    if port == Port.A:
        fast, lanes = (trans == 1) if p["dataflow"] == "os" else (trans == 0), p["rows"]
    elif port == Port.B:
        fast, lanes = trans == 0, p["cols"]
    else:
        fast, lanes = True, p["cols"]
    body = s["rows"] * (-(-s["cols"] // min(per_word, lanes)) if fast else s["cols"])
    if not words:
        return 0.0
    packets = math.ceil(words / desc.params["max_packet"])
    return body + max(0.0, 4 - body / words) * (packets - 1)


def _ws_result_latency(r: int, c: int) -> int:
    """WS: cycles from a row's issue to its result being counted (the array's ``rows + cols +
    1`` and the buffer read)."""
    return r + c + 2


def _ws_swap_gap(r: int, c: int) -> int:
    """WS: cycles from a weight swap until the next tile's ``rows`` shadow rows are in
    (``cols`` cycles of guard, then a row a cycle)."""
    return r + c + 1


@functools.lru_cache(maxsize=4096)
def _sa_run_cycles(dataflow: str, r: int, c: int, depth: int, latency: int, ob: int,
                   wb: int, m: int, k: int, n: int) -> float:
    """A RUN's cycles on an SA tile from its engine's start to the last result packet's last
    beat, beat by beat (``hdl/gemm.py``, ``hdl/systolic.py``, ``hdl/tiles/sa.py``):

    * OS: per column tile (``c`` columns), per row tile (``r`` rows), ``max(K, r)`` cycles
      of issue (a shorter tile is spaced to ``r`` cycles); the tile's rows below ``M`` leave
      the array one a cycle ``latency`` after its issue, while the next tile is issued.
    * WS: per column tile, per K tile of ``r`` rows, the ``M`` rows of A one a cycle; a K
      tile's first row waits for its weights (:func:`_ws_swap_gap` after the last swap), a
      row of a later K tile for its partial sum from the previous one
      (:func:`_ws_result_latency`); the last K tile's rows are the results.
    * Each result beat goes through the ``depth``-beat result buffer to one packet of ``3 +
      ceil(valid columns * ob / wb)`` beats, back to back; when the buffer is full the array
      stops (its results are held), and so does the issue.
    """
    emits: list[float] = []   # when each kept result beat leaves the array, unstalled
    beats: list[int] = []     # its packet's beats
    lat, gap = _ws_result_latency(r, c), _ws_swap_gap(r, c)
    # WS: the last weight swap (the first tile's r rows of weights take r + 2 cycles to load)
    t, swap = 0.0, r + 2.0 - gap
    for c0 in range(0, n, c):
        packet = 3 + max(1, -(-min(c, n - c0) * ob // wb))
        if dataflow == "os":
            for r0 in range(0, m, r):
                t += max(k, r)
                emits += [t + latency + i for i in range(min(r, m - r0))]
                beats += [packet] * min(r, m - r0)
            continue
        prev: list[float] = []
        for j in range(-(-k // r)):
            out = []
            for row in range(m):
                s = max(t, prev[row] + 1) if j else t
                if row == 0:
                    s = swap = max(s, swap + gap)
                out.append(s + lat)
                t = s + 1
            prev = out
        emits += prev
        beats += [packet] * m
    shift, taken = 0.0, []
    end = 0.0
    for i, (e, b) in enumerate(zip(emits, beats, strict=True)):
        e += shift
        if i >= depth and e < taken[i - depth] + 1:   # the buffer is full: the array waits
            shift += taken[i - depth] + 1 - e
            e = taken[i - depth] + 1
        taken.append(max(e + 1, end))
        end = taken[-1] + b
    return end


def _engine_latency(p: dict) -> int:
    """The GEMM engine's documented latency (:attr:`GemmEngine.latency`) for SA tile
    parameters ``p``."""
    from heterotron.hdl.gemm import GemmEngine

    names = {q.name for q in GemmEngine.PARAMS} - {"data_lanes"}
    return _latency(tuple(sorted((k, v) for k, v in p.items() if k in names)))


@functools.lru_cache(maxsize=256)
def _latency(params: tuple) -> int:
    from heterotron.hdl.contract.params import inspect_only
    from heterotron.hdl.gemm import GemmEngine

    return inspect_only(GemmEngine(**dict(params))).latency


def _read_jobs(desc: Description, p: dict, name: str, args: dict, f: dict) -> tuple:
    """The read jobs an instruction gives a memory tile's read engine, which serves one job
    at a time: ``(memory tile, cycles the engine is held)``. A job leaves at a word a cycle
    plus three header beats a packet, or at the consumer's rate when that is slower: an SA
    LOAD's documented rate, a PiM tile's element a cycle (weights while programming, vector
    elements while loading) less the elements its receive buffer takes ahead, an SFU's
    ``lanes`` elements a cycle."""
    from heterotron.hdl.tiles.pim import RX_BUFFER_BYTES

    wb, mp = desc.word_bytes, desc.params["max_packet"]

    def link(region: dict) -> int:
        w = region_words(region, wb)
        return w + 3 * math.ceil(w / mp)

    def job(region: dict, consume: float = 0.0, ahead: int = 0):
        """``consume``: the consumer's cycles for the region; ``ahead``: the cycles of it a
        receive buffer takes before the consumer holds the engine back."""
        return (region["mem"], max(link(region), consume - ahead))
    if name == "LOAD":
        return (job(args["src"], f["load_cycles"]),)
    if name in ("COPY", "TABLE"):
        return (job(args["src"]),)
    if name in ("PROGRAM", "MVM"):
        s = args["src"]
        # PROGRAM takes a weight a cycle; MVM its vectors at the pace of its floor (the
        # loader's element a cycle or the unit's conversions, whichever is slower); the
        # buffer holds RX_BUFFER_BYTES of the elements ahead of that pace
        elems = s["rows"] * s["cols"]
        consume = elems if name == "PROGRAM" else f["floor"]
        ahead = consume * min(1.0, RX_BUFFER_BYTES // EBYTES[s["ebytes"]] / elems)
        return (job(s, consume, ahead),)
    if name in ("REQUANT", "SOFTMAX", "GELU", "LAYERNORM"):
        s = args["src"]
        jobs = [job(s, s["rows"] * -(-s["cols"] // p["lanes"]))]
        if name == "REQUANT" and args["res"]:
            jobs.append(job(args["y"], f["beats"]))
        return tuple(jobs)
    return ()



def decode_program(desc: Description, words, mvm_planes: list[np.ndarray] | None = None
                   ) -> list[Instr]:
    """The instructions of ``words`` with their work figures. ``mvm_planes``: for each MVM
    in program order, the bit-planes each of its vectors converts (the interpreter's
    ``on_mvm``); without it every plane counts."""
    tiles = {t.index: t for t in desc.tiles}
    wb = desc.word_bytes
    sa_dims: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)  # tile -> port -> dims
    out, pos, n, mvm_k = [], 0, len(words), 0
    while pos < n:
        op, head, args = decode_instr(list(words[pos:pos + 16]))
        if op is None:
            raise ValueError(f"program word {pos}: unknown opcode (class {head['cls']}, code "
                             f"{head['code']})")
        tile = tiles.get(head["tile"])
        if tile is None or tile.kind != op.cls:
            raise ValueError(f"program word {pos}: {op.name} names tile {head['tile']}, "
                             "which is not a tile of its kind")
        p = tile.params
        f: dict[str, float] = {"one": 1.0}
        name = op.name
        planes: np.ndarray | tuple = ()
        mask = 0
        if name == "WAIT":
            mask = args["mask"] or (1 << len(desc.tiles)) - 1
        elif name == "COPY":
            f["words"] = region_words(args["src"], wb)
        elif name == "LOAD":
            f["load_cycles"] = _sa_load_cycles(desc, p, args)
            s = args["src"]
            dims = (s["cols"], s["rows"]) if args["trans"] else (s["rows"], s["cols"])
            sa_dims[tile.index][args["port"]] = dims
        elif name == "RUN":
            m, k = sa_dims[tile.index].get(1, (1, 1))
            _, nn = sa_dims[tile.index].get(2, (1, 1))
            ob = elem_bytes(p["out_width"] if p["requant"] else p["acc_width"])
            c = p["cols"]
            f["run_cycles"] = _sa_run_cycles(p["dataflow"], p["rows"], c, p["result_depth"],
                                             _engine_latency(p), ob, wb, m, k, nn)
            # the result packets' beats, which the memory tile's one write port takes
            # interleaved with other tiles' results (the schedule does not queue writes)
            f["packet_cycles"] = sum(m * (3 + max(1, -(-min(c, nn - c0) * ob // wb)))
                                     for c0 in range(0, nn, c))
        elif name == "PROGRAM":
            f["weights"] = p["rows"] * p["cols"]
        elif name == "MVM":
            s = args["src"]
            m, k = s["rows"], s["cols"]
            ib = p["input_bits"]
            full = 2 * ib if p["input_code"] == "signmag" else ib
            planes = np.asarray(mvm_planes[mvm_k] if mvm_planes is not None
                                else np.full(m, full))
            mvm_k += 1
            load = k + p["rows"] // p["lanes"]
            units = np.maximum(1, np.asarray(planes) * p["adc_share"])
            f["floor"] = max(load + float(units.sum()), m * load + float(units[-1]))
            f["out_elems"] = args["dest"]["rows"] * args["dest"]["cols"] if args["out"] else 0
        elif name == "TABLE":
            f["elems"] = args["src"]["cols"]
        elif name in ("REQUANT", "SOFTMAX", "GELU", "LAYERNORM"):
            # the input streams at the slower of the link (a word a cycle, three header
            # beats a packet) and the unit (lanes elements a cycle); the results leave a
            # word a cycle
            s = args["src"]
            f["beats"] = s["rows"] * -(-s["cols"] // p["lanes"])
            f["rows"] = s["rows"]
            ins = [s] + ([args["y"]] if name == "REQUANT" and args["res"] else [])
            link = sum(region_words(r, wb) for r in ins)
            link += 3 * math.ceil(link / desc.params["max_packet"])
            f["stream"] = max(link, f["beats"])
            outs = [args["dest"]] + ([args["res"]] if name == "LAYERNORM" else [])
            f["out_words"] = sum(region_words(r, wb) for r in outs)
        out.append(Instr(len(out), name, tile.index, 1 + op.words,
                         len(CHECKED_REGIONS.get(name, ())), mask, f, args,
                         tuple(int(v) for v in planes) if name == "MVM" else (),
                         _read_jobs(desc, p, name, args, f)))
        pos += 1 + op.words
    if mvm_planes is not None and mvm_k != len(mvm_planes):
        raise ValueError(f"mvm_planes has {len(mvm_planes)} entries for {mvm_k} MVMs")
    return out


@dataclass
class Coefficients:
    """Fitted cycle costs: ``c[op][feature]``."""

    c: dict[str, dict[str, float]] = field(default_factory=dict)

    def busy(self, ins: Instr) -> float:
        cs = self.c.get(ins.op)
        if cs is None:
            raise KeyError(f"no fitted cost for {ins.op}: the calibration runs had none")
        return sum(cs.get(k, 0.0) * v for k, v in ins.features.items())

    def to_json(self) -> dict[str, Any]:
        return {op: {k: round(v, 4) for k, v in cs.items()} for op, cs in self.c.items()}


def predict_busy(instrs: list[Instr], coef: Coefficients) -> dict[int, float]:
    """Each tile's ``BUSY`` (cycles with an instruction outstanding) and nothing else."""
    busy: dict[int, float] = defaultdict(float)
    for ins in instrs:
        if ins.op not in CONTROL_OPS:
            busy[ins.tile] += coef.busy(ins)
    return dict(busy)


@dataclass
class Schedule:
    """The composed run: the layer's cycles and each tile's busy and stalled cycles."""

    cycles: float
    busy: dict[int, float]
    stalled: dict[int, float]
    items: dict[int, int]
    issue: list[float]   # per instruction: when it was issued (or retired, control ops)
    done: list[float]    # per instruction: when it retired
    queued: list[float]  # per tile instruction: cycles its read jobs waited for an engine


#: Cycles from an instruction's issue to its read request reaching the memory tile.
REQ_LATENCY = 8


def schedule(instrs: list[Instr], coef: Coefficients, contention: bool = True) -> Schedule:
    """Compose the instructions by the control tile's rules (module docstring). With
    ``contention``, each memory tile's read engine serves the read jobs one at a time in
    the order they reach it; an instruction whose job waits there is that much longer than
    its fitted (uncontended) cost."""
    free_at: dict[int, float] = defaultdict(float)   # a tile's outstanding one retires then
    engine: dict[int, float] = defaultdict(float)    # a read engine is free from then
    queued: list[float] = []
    busy: dict[int, float] = defaultdict(float)
    stalled: dict[int, float] = defaultdict(float)
    items: dict[int, int] = defaultdict(int)
    issue, done = [], []
    t = 0.0
    for ins in instrs:
        t += 2 * ins.words + 2 * max(1, ins.regions)   # fetch, checks
        if ins.op == "NOP":
            issue.append(t)
            done.append(t)
            continue
        if ins.op == "WAIT":
            t = max([t] + [free_at[j] for j in free_at if ins.mask >> j & 1])
            issue.append(t)
            done.append(t)
            continue
        start = max(t, free_at[ins.tile])
        if start > t:
            stalled[ins.tile] += start - t
        wait = 0.0
        if contention:
            for mem, held in ins.reads:
                arrive = start + REQ_LATENCY + wait
                begin = max(arrive, engine[mem])
                wait += begin - arrive
                engine[mem] = begin + held
        queued.append(wait)
        d = coef.busy(ins) + wait
        free_at[ins.tile] = start + d
        busy[ins.tile] += d
        items[ins.tile] += 1
        issue.append(start)
        done.append(start + d)
        t = start + ins.words + 2   # SEND
    end = max([t] + done)
    return Schedule(end, dict(busy), dict(stalled), dict(items), issue, done, queued)


def fit(samples: list[tuple[list[Instr], dict[int, float]]]) -> Coefficients:
    """Non-negative least squares of every opcode's costs on ``(instructions, measured BUSY
    per tile)`` samples: one equation per tile and sample, relative (each row divided by its
    measured BUSY), so small tiles count as much as big ones."""
    from scipy.optimize import nnls

    cols = [(op, f) for op, fs in FEATURES.items() for f in fs]
    index = {cf: k for k, cf in enumerate(cols)}
    rows, rhs = [], []
    for instrs, measured in samples:
        per_tile: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(len(cols)))
        for ins in instrs:
            if ins.op in CONTROL_OPS:
                continue
            row = per_tile[ins.tile]
            for k in FEATURES[ins.op]:
                row[index[(ins.op, k)]] += ins.features.get(k, 0.0)
        for tile, row in per_tile.items():
            b = measured.get(tile, 0)
            if b > 0:
                rows.append(row / b)
                rhs.append(1.0)
    a = np.array(rows)
    used = a.any(axis=0)
    x, _ = nnls(a[:, used], np.array(rhs))
    coef: dict[str, dict[str, float]] = defaultdict(dict)
    for (op, f), v in zip([c for c, u in zip(cols, used, strict=True) if u], x, strict=True):
        coef[op][f] = float(v)
    return Coefficients(dict(coef))

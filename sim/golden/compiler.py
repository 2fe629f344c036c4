"""The compiler: an integer encoder (:mod:`heterotron.sim.golden.bert_int`) and an accelerator
description in, a program and the scratchpad images out.

The program runs layer after layer on the tiles the description places; the program
interpreter (:class:`heterotron.sim.golden.accel.Interpreter`) running it leaves every tensor
:func:`~heterotron.sim.golden.bert_int.run_layer` computes, bit for bit, when ``run_layer``'s
static matmuls are the ones the PiM tiles compute (:func:`pim_matmul`; with exact PiM tiles,
the exact product). One layer, stage by stage (``WAIT`` for every tile between stages):

=========  ===========================================================================
stage      what runs where
=========  ===========================================================================
qkv        PiM: ``x @ Wq^T`` (and K, V) as int32 sums; SFU: ``REQUANT`` + bias to int8
attention  per head, pipelined: SA ``Q_h K_h^T`` (int32), SFU ``SOFTMAX`` (uint8), SA
           ``P_h V_h`` requantised into the head's columns of the context
o          PiM: ``ctx @ Wo^T``; SFU: ``REQUANT`` + bias + the residual ``xr`` (``ln_bits``)
ln1        SFU: ``LAYERNORM`` to the int8 copy ``h1`` and the residual copy ``h1r``
fc1        PiM: ``h1 @ W1^T``; SFU: ``REQUANT`` + bias to ``gelu_bits``
gelu       SFU: ``GELU`` (``ffn_bits``)
fc2        PiM: ``f @ W2^T``; SFU: ``REQUANT`` + bias + the residual ``h1r``
ln2        SFU: ``LAYERNORM`` to ``out`` (the next layer's ``x``) and ``outr`` (its ``xr``)
=========  ===========================================================================

**Static matmuls on PiM tiles.** A weight matrix ``W`` [N, K] is cut into blocks of ``cols x
rows`` (the crossbar). Column block ``j`` goes to PiM tile ``j mod P``; that tile programs
block ``(i, j)`` for each K block ``i`` in turn and runs ``MVM`` on the matching columns of
the input, summing the K blocks in its accumulator; the last writes the rescaled sums. Block
``t = i * nb + j`` gets noise seed ``noise_seed(name) + t`` and fault seed ``fault_seed(name)
+ t``, as :class:`~heterotron.sim.golden.pim.PimMatrix` gives its tile ``t``, so the two agree
bit for bit. With noise (``sigma > 0``) every block restarts its ADCs' LFSRs (``ADC``), so
the sequence length may not exceed the tile's ``max_m`` (an MVM per block).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from heterotron.hdl.contract.accel import Description, SfuTable, Tile, TileKind, elem_bytes
from heterotron.hdl.contract.pim import M32
from heterotron.sim.golden.accel import (
    Program,
    Region,
    pim_params,
    read_tensor,
    sa_params,
    write_tensor,
)
from heterotron.sim.golden.bert_int import IntEncoder
from heterotron.sim.golden.pim import PimMatrix

__all__ = ["CompileError", "PimSettings", "Compiled", "compile_encoder", "pim_matmul",
           "noise_seed", "fault_seed", "STAGES", "TENSORS"]

#: The stages of a layer, in order, and the tensors each writes (``layer{i}.<name>``).
STAGES = (
    ("qkv", ("q_acc", "k_acc", "v_acc", "q", "k", "v")),
    ("attention", ("scores", "probs", "ctx")),
    ("o", ("o_acc", "h1_in")),
    ("ln1", ("h1", "h1r")),
    ("fc1", ("fc1_acc", "f_in")),
    ("gelu", ("f",)),
    ("fc2", ("fc2_acc", "h2_in")),
    ("ln2", ("out", "outr")),
)
TENSORS = tuple(name for _, names in STAGES for name in names)
STATIC = ("q", "k", "v", "o", "fc1", "fc2")


class CompileError(ValueError):
    """The encoder cannot run on the description as asked (the message says what is
    missing)."""


@dataclass(frozen=True)
class PimSettings:
    """The ADC and fault settings the program writes to every PiM tile (``ADC``,
    ``PROGRAM``): ``gain`` 0 keeps the tile's reset gain (its ``adc_max``)."""

    gain: int = 0
    offset: int = 0
    sigma: int = 0
    fault_rate: int = 0


def noise_seed(name: str) -> int:
    """Base noise seed of static matmul ``name`` (``layer{i}.q`` ...)."""
    return zlib.crc32(name.encode()) & M32


def fault_seed(name: str) -> int:
    return zlib.crc32((name + "/faults").encode()) & M32


def pim_matmul(params: dict, settings: PimSettings = PimSettings()):
    """The ``matmul`` hook of :func:`~heterotron.sim.golden.bert_int.run_layer` that computes
    what PiM tiles of crossbar ``params`` compute for the compiled program: ``x @ w.T`` on a
    :class:`~heterotron.sim.golden.pim.PimMatrix` with the program's seeds and settings."""
    def matmul(name: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        m = PimMatrix(w, fault_seed=fault_seed(name), noise_seed=noise_seed(name), **params)
        m.set_adc(gain=settings.gain or None, offset=settings.offset, sigma_q=settings.sigma)
        m.program(settings.fault_rate)
        return m.matmul(x)
    return matmul


@dataclass
class Compiled:
    """A compiled encoder: the program, the scratchpad images of its constants, and where
    every tensor lives (``tensors[name]``; ``layer{i}.<name>`` of :data:`TENSORS`, and
    ``input.x``/``input.xr``)."""

    desc: Description
    enc: IntEncoder
    tokens: int
    layers: tuple[int, ...]
    words: list[int]
    images: dict[int, bytearray]
    tensors: dict[str, Region]
    #: Signedness of each tensor as stored (the Softmax output is unsigned).
    signed: dict[str, bool] = field(default_factory=dict)
    #: ``(layer, stage, first word, end word)`` of the program.
    stage_words: list[tuple[int, str, int, int]] = field(default_factory=list)
    #: Bytes of each memory tile the program uses, from address 0 (constants and tensors).
    allocated: dict[int, int] = field(default_factory=dict)

    def memories(self, x: np.ndarray, xr: np.ndarray) -> dict[int, bytes]:
        """The images with the first layer's input written: ``x`` int8 and ``xr`` the
        residual copy, [tokens, hidden]."""
        images = {i: bytearray(m) for i, m in self.images.items()}
        for name, a in (("input.x", x), ("input.xr", xr)):
            r = self.tensors[name]
            a = np.asarray(a)
            if a.shape != (r.rows, r.cols):
                raise ValueError(f"{name} must be {r.rows} x {r.cols}, not {list(a.shape)}")
            write_tensor(images[r.mem], r, a)
        return {i: bytes(m) for i, m in images.items()}

    def read(self, memories: dict[int, bytes], name: str) -> np.ndarray:
        r = self.tensors[name]
        return read_tensor(memories[r.mem], r, self.signed.get(name, True))

    def output(self, memories: dict[int, bytes]) -> tuple[np.ndarray, np.ndarray]:
        """The last layer's ``(out, outr)``."""
        last = self.layers[-1]
        return (self.read(memories, f"layer{last}.out"),
                self.read(memories, f"layer{last}.outr"))


class _Memory:
    """Allocates regions over the memory tiles, each on the tile with the most room."""

    def __init__(self, prog: Program, mems: list[Tile]):
        self.prog, self.mems = prog, mems

    def alloc(self, rows: int, cols: int, ebytes: int) -> Region:
        need = rows * (-(-cols * ebytes // self.prog.desc.word_bytes)) * self.prog.desc.word_bytes
        best = max(self.mems, key=lambda t: self.prog.free_bytes(t))
        if need > self.prog.free_bytes(best):
            total = sum(t.params["kbytes"] for t in self.mems)
            used = sum(self.prog.allocated().values())
            raise CompileError(
                f"the scratchpads are full: a {rows} x {cols} tensor of {ebytes}-byte elements "
                f"({need} bytes) does not fit any memory tile ({used} of {total * 1024} bytes "
                "used); give the memory tiles more kbytes, or run fewer tokens or layers")
        return self.prog.alloc(best, rows, cols, ebytes)


def _sub(r: Region, row0: int, rows: int, col0: int, cols: int) -> Region:
    """Rows ``row0 ..`` and columns ``col0 ..`` of ``r`` (same stride)."""
    return Region(r.mem, r.row_start(row0) + col0 * r.ebytes, rows, cols, r.stride, r.ebytes)


def _aligned(r: Region, word: int, what: str) -> Region:
    if r.addr % word or (r.rows > 1 and r.stride * r.ebytes % word):
        raise CompileError(f"{what}: rows at byte {r.addr}, {r.stride * r.ebytes} bytes apart, "
                           f"do not start on {word}-byte words (the flit width); choose block "
                           "and head sizes that are whole words")
    return r


class _Compiler:
    def __init__(self, enc: IntEncoder, desc: Description, tokens: int, settings: PimSettings):
        self.enc, self.desc, self.T, self.settings = enc, desc, tokens, settings
        self.prec = enc.meta["precision"]
        self.prog = Program(desc)
        mems = desc.of_kind(TileKind.MEMORY)
        self.mem = _Memory(self.prog, mems)
        self.images: dict[int, bytearray] = {t.index: bytearray(t.params["kbytes"] * 1024)
                                             for t in mems}
        self.tensors: dict[str, Region] = {}
        self.signed: dict[str, bool] = {}
        self.stage_words: list[tuple[int, str, int, int]] = []
        self.word = desc.word_bytes
        self._tiles()

    # -- which tile does what ------------------------------------------------------------------

    def _tiles(self) -> None:
        d, T = self.desc, self.T
        H, hd = self.enc.meta["hidden"], self.enc.meta["head_dim"]
        ffn = self.enc.params["layer0.fc1.w"].shape[0]
        self.pims = d.of_kind(TileKind.PIM)
        self.sfus = d.of_kind(TileKind.SFU)
        if not self.pims:
            raise CompileError("the description has no PiM tile: the static-weight matmuls run "
                               "on PiM tiles (on SA tiles: not compiled yet)")
        if not self.sfus:
            raise CompileError("the description has no SFU tile (Softmax, GELU, LayerNorm, "
                               "requantisation)")
        crossbars = {tuple(sorted(pim_params(t).items())) for t in self.pims}
        if len(crossbars) > 1:
            raise CompileError("the PiM tiles have different crossbar parameters; the compiler "
                               "maps a matrix onto one kind of crossbar")
        self.pim_p = pim_params(self.pims[0])
        self.max_m = min(t.params["max_m"] for t in self.pims)
        need_in = max(self.prec["act_bits"], self.prec["ffn_bits"])
        if self.pim_p["input_bits"] < need_in:
            raise CompileError(f"PiM input_bits = {self.pim_p['input_bits']}: the FFN's second "
                               f"matmul takes {need_in}-bit inputs (ffn_bits)")
        if self.pim_p["weight_bits"] < 8:
            raise CompileError(f"PiM weight_bits = {self.pim_p['weight_bits']}: the weights are "
                               "int8")
        if self.settings.sigma and T > self.max_m:
            raise CompileError(f"with ADC noise, {T} tokens must fit one MVM (max_m = "
                               f"{self.max_m}), so each block's noise runs as PimMatrix's")
        for t in self.sfus:
            p = t.params
            if p["max_row"] < max(T, H) or p["channels"] < max(H, ffn):
                raise CompileError(
                    f"SFU tile {t.index}: rows of {max(T, H)} (tokens, hidden) and tables of "
                    f"{max(H, ffn)} channels need max_row >= {max(T, H)} and channels >= "
                    f"{max(H, ffn)} (it has {p['max_row']}, {p['channels']})")
            if p["variant"] != self.prec["softmax"]:
                raise CompileError(f"SFU tile {t.index}: its Softmax is {p['variant']}, the "
                                   f"encoder's {self.prec['softmax']}")
        self.qk, self.av = [], []
        for t in d.of_kind(TileKind.SA):
            p = sa_params(t)
            fits = p["max_m"] >= T
            if (not p["requant"] and p["a_signed"] and p["b_signed"] and p["a_width"] >= 8
                    and elem_bytes(p["a_width"]) == 1 and elem_bytes(p["b_width"]) == 1
                    and elem_bytes(p["acc_width"]) == 4 and fits and p["max_k"] >= hd
                    and p["max_n"] >= T):
                self.qk.append(t)
            if (p["requant"] and not p["a_signed"] and p["a_width"] == 8 and p["b_signed"]
                    and elem_bytes(p["b_width"]) == 1 and p["out_width"] == self.prec["act_bits"]
                    and fits and p["max_k"] >= T and p["max_n"] >= hd):
                self.av.append(t)
        if not self.qk:
            raise CompileError(f"no SA tile for Q K^T: one needs signed 8-bit A and B, "
                               f"requant = false, 32-bit results, max_m and max_n >= {T} "
                               f"tokens, max_k >= {hd} (the head size)")
        if not self.av:
            raise CompileError(f"no SA tile for P V: one needs unsigned 8-bit A (a_width = 8, "
                               f"a_signed = false), signed 8-bit B, requant = true with "
                               f"out_width = {self.prec['act_bits']}, max_m and max_k >= {T} "
                               f"tokens, max_n >= {hd}")

    # -- memory --------------------------------------------------------------------------------

    def tensor(self, name: str, cols: int, ebytes: int, rows: int | None = None,
               signed: bool = True) -> Region:
        r = self.mem.alloc(self.T if rows is None else rows, cols, ebytes)
        self.tensors[name], self.signed[name] = r, signed
        return r

    def const(self, values: np.ndarray, ebytes: int) -> Region:
        values = np.atleast_2d(np.asarray(values))
        r = self.mem.alloc(*values.shape, ebytes)
        write_tensor(self.images[r.mem], r, values)
        return r

    def table(self, values: np.ndarray, words: int = 1) -> Region:
        v = np.asarray(values, dtype=np.int64)
        if words == 2:
            v = np.stack([v & M32, v >> 32], axis=1).reshape(-1)
        return self.const(v[None, :], 4)

    # -- stages --------------------------------------------------------------------------------

    def static(self, name: str, x: Region, w: np.ndarray, out: Region) -> None:
        """``out = x @ w.T`` (int32 sums, rescaled) on the PiM tiles.

        Output-column block ``j`` goes to PiM tile ``j mod tiles``, its K blocks summed in
        the tile's accumulator (PROGRAM then MVM, block after block). The tiles' blocks are
        emitted in rounds, every tile's PROGRAM of a round before every tile's MVM of it:
        the control tile issues in order and holds the queue while the head's tile is busy,
        so a tile's chain written out whole would keep the other tiles idle."""
        prog, p, s = self.prog, self.pim_p, self.settings
        rows, cols = p["rows"], p["cols"]
        N, K = w.shape
        wr = self.const(w, elem_bytes(p["weight_bits"]))
        kb, nb = -(-K // rows), -(-N // cols)
        ns, fs = noise_seed(name), fault_seed(name)
        chunks = [(m0, min(self.max_m, self.T - m0)) for m0 in range(0, self.T, self.max_m)]
        blocks: dict[int, list] = {t.index: [] for t in self.pims}  # per tile, in its order
        for j in range(nb):
            tile = self.pims[j % len(self.pims)]
            n0, nn = j * cols, min(cols, N - j * cols)
            for m0, mm in chunks:
                for i in range(kb):
                    k0, kk = i * rows, min(rows, K - i * rows)
                    t = i * nb + j
                    weights = _aligned(_sub(wr, n0, nn, k0, kk), self.word,
                                       f"{name} weight block")
                    src = _aligned(_sub(x, m0, mm, k0, kk), self.word, f"{name} input block")
                    dest = (_aligned(_sub(out, m0, mm, n0, nn), self.word, f"{name} output")
                            if i == kb - 1 else None)
                    blocks[tile.index].append((tile, t, weights, src, dest, i > 0))
        for r in range(max(len(b) for b in blocks.values())):
            round_ = [b[r] for b in blocks.values() if r < len(b)]
            for tile, t, weights, _, _, _ in round_:
                if s.sigma:
                    prog.adc(tile, s.gain, s.offset, s.sigma, (ns + t) & M32)
                prog.program(tile, weights, s.fault_rate, (fs + t) & M32)
            for tile, _, _, src, dest, acc in round_:
                prog.mvm(tile, src, dest, acc=acc)

    def split_rows(self, *regions: Region):
        """Per SFU tile, its share of the rows of every region."""
        n = len(self.sfus)
        step = -(-self.T // n)
        for k, t in enumerate(self.sfus):
            r0 = k * step
            if r0 >= self.T:
                break
            rr = min(step, self.T - r0)
            yield t, [_sub(r, r0, rr, 0, r.cols) for r in regions]

    def requant(self, layer: int, key: str, src: Region, dest: Region, bits: int,
                y: Region | None = None) -> None:
        """``dest`` = matmul ``key``'s sums ``src`` + its bias, requantised to ``bits`` (plus
        the residual ``y`` by the matmul's ``my, ey``)."""
        enc = self.enc
        P = f"layer{layer}.{key}"
        bias, m, e = (self.table(enc.params[P + s]) for s in (".b", ".m", ".e"))
        res = {}
        if y is not None:
            res = dict(m_y=int(enc.params[P + ".my"]), e_y=int(enc.params[P + ".ey"]))
        for t, regs in self.split_rows(src, dest, *([y] if y is not None else [])):
            self.prog.table(t, SfuTable.RQ_BIAS, bias)
            self.prog.table(t, SfuTable.RQ_M, m)
            self.prog.table(t, SfuTable.RQ_E, e)
            self.prog.requant(t, regs[0], regs[1], bits, bias=True,
                              y=regs[2] if y is not None else None, **res)

    def layernorm(self, layer: int, key: str, src: Region, out: Region, res: Region) -> None:
        p = lambda s: self.enc.params[f"layer{layer}.{key}.{s}"]  # noqa: E731
        tables = [(SfuTable.LN_BIAS, self.table(p("bias"), 2)),
                  (SfuTable.LN_SIGN, self.table(p("sign"))),
                  (SfuTable.LN_OUT_M, self.table(p("out_m"))),
                  (SfuTable.LN_OUT_E, self.table(p("out_e"))),
                  (SfuTable.LN_RES_M, self.table(p("res_m"))),
                  (SfuTable.LN_RES_E, self.table(p("res_e")))]
        for t, (s, o, r) in self.split_rows(src, out, res):
            for which, region in tables:
                self.prog.table(t, which, region)
            self.prog.layernorm(t, s, o, r, int(p("shift")), self.prec["act_bits"],
                                self.prec["residual_bits"])

    def attention(self, layer: int, q: Region, k: Region, v: Region, ctx: Region) -> None:
        prog, enc, T = self.prog, self.enc, self.T
        nh, hd = enc.meta["heads"], enc.meta["head_dim"]
        P = f"layer{layer}."
        x0, b, c = (int(t) for t in enc.params[P + "exp"])
        cm, ce = int(enc.params[P + "ctx.m"]), int(enc.params[P + "ctx.e"])
        for t in self.av:
            for lane in range(sa_params(t)["cols"]):
                prog.scale(t, lane, cm, ce)
        scores = self.tensor(P + "scores", T, 4, rows=nh * T)
        probs = self.tensor(P + "probs", T, 1, rows=nh * T, signed=False)
        w = self.word

        def head(h, r):
            return _aligned(_sub(r, 0, T, h * hd, hd), w, f"head {h} of layer {layer}")

        def rows(r, h):
            return _sub(r, h * T, T, 0, T)
        # Step h: Q_h K_h^T, the Softmax of head h - 1 and P V of head h - 2 at once; each
        # step first waits for the QK and SFU tiles' work of the step before.
        for h in range(nh + 2):
            if h:
                prog.wait(*self.qk, *self.sfus)
            if h < nh:
                t = self.qk[h % len(self.qk)]
                prog.load(t, 1, head(h, q))
                prog.load(t, 2, head(h, k), trans=True)
                prog.run(t, rows(scores, h))
            if 1 <= h <= nh:
                g = h - 1
                prog.softmax(self.sfus[g % len(self.sfus)], rows(scores, g), rows(probs, g),
                             x0, b, c, 8)
            if h >= 2:
                g = h - 2
                t = self.av[g % len(self.av)]
                prog.load(t, 1, rows(probs, g))
                prog.load(t, 2, head(g, v))
                prog.run(t, head(g, ctx))

    def linear(self, layer: int, key: str, x: Region, name: str, bits: int,
               y: Region | None = None) -> Region:
        """Static matmul ``key`` of ``x`` on the PiM tiles (``<key>_acc``), then its bias
        and requantisation to ``bits`` on the SFU tiles (tensor ``name``)."""
        P = f"layer{layer}."
        w = self.enc.params[P + key + ".w"]
        acc = self.tensor(P + key + "_acc", w.shape[0], 4)
        self.static(P + key, x, w, acc)
        self.prog.wait()
        out = self.tensor(P + name, w.shape[0], elem_bytes(bits))
        self.requant(layer, key, acc, out, bits, y=y)
        return out

    def layer(self, i: int, x: Region, xr: Region) -> tuple[Region, Region]:
        enc, prec, prog = self.enc, self.prec, self.prog
        H = enc.meta["hidden"]
        P = f"layer{i}."
        W = lambda key: enc.params[P + key + ".w"]  # noqa: E731
        ffn = W("fc1").shape[0]
        a8 = prec["act_bits"]
        start = len(prog.words)

        def stage(name):
            nonlocal start
            prog.wait()
            self.stage_words.append((i, name, start, len(prog.words)))
            start = len(prog.words)

        accs = {key: self.tensor(P + key + "_acc", H, 4) for key in ("q", "k", "v")}
        for key in ("q", "k", "v"):
            self.static(P + key, x, W(key), accs[key])
        prog.wait()
        qkv = {key: self.tensor(P + key, H, 1) for key in ("q", "k", "v")}
        for key in ("q", "k", "v"):
            self.requant(i, key, accs[key], qkv[key], a8)
        stage("qkv")
        ctx = self.tensor(P + "ctx", H, 1)
        self.attention(i, qkv["q"], qkv["k"], qkv["v"], ctx)
        stage("attention")
        h1_in = self.linear(i, "o", ctx, "h1_in", prec["ln_bits"], y=xr)
        stage("o")
        h1 = self.tensor(P + "h1", H, elem_bytes(a8))
        h1r = self.tensor(P + "h1r", H, elem_bytes(prec["residual_bits"]))
        self.layernorm(i, "ln1", h1_in, h1, h1r)
        stage("ln1")
        f_in = self.linear(i, "fc1", h1, "f_in", prec["gelu_bits"])
        stage("fc1")
        f = self.tensor(P + "f", ffn, elem_bytes(prec["ffn_bits"]))
        gb, gc, gone = (int(t) for t in enc.params[P + "gelu"])
        for t, (s, d) in self.split_rows(f_in, f):
            prog.gelu(t, s, d, gb, gc, gone, int(enc.params[P + "gelu.m"]),
                      int(enc.params[P + "gelu.e"]), prec["ffn_bits"])
        stage("gelu")
        h2_in = self.linear(i, "fc2", f, "h2_in", prec["ln_bits"], y=h1r)
        stage("fc2")
        out = self.tensor(P + "out", H, elem_bytes(a8))
        outr = self.tensor(P + "outr", H, elem_bytes(prec["residual_bits"]))
        self.layernorm(i, "ln2", h2_in, out, outr)
        stage("ln2")
        return out, outr


def compile_encoder(enc: IntEncoder, desc: Description, tokens: int,
                    layers: int | range | tuple[int, ...] | None = None,
                    settings: PimSettings = PimSettings()) -> Compiled:
    """Compile ``layers`` (a count from layer 0, or the layer indices, consecutive; default
    all) of ``enc`` for ``tokens`` tokens on ``desc`` (:class:`CompileError` when it cannot
    run there)."""
    n = enc.layers
    if layers is None:
        layers = range(n)
    elif isinstance(layers, int):
        if not 1 <= layers <= n:
            raise CompileError(f"layers must be in [1, {n}], not {layers}")
        layers = range(layers)
    layers = tuple(layers)
    if not layers or any(b != a + 1 for a, b in zip(layers, layers[1:], strict=False)) or not (
            0 <= layers[0] and layers[-1] < n):
        raise CompileError(f"layers must be consecutive indices in [0, {n - 1}], not "
                           f"{list(layers)}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise CompileError(f"tokens must be a positive integer, not {tokens!r}")
    c = _Compiler(enc, desc, tokens, settings)
    H = enc.meta["hidden"]
    prec = enc.meta["precision"]
    x = c.tensor("input.x", H, elem_bytes(prec["act_bits"]))
    xr = c.tensor("input.xr", H, elem_bytes(prec["residual_bits"]))
    for i in layers:
        x, xr = c.layer(i, x, xr)
    return Compiled(desc, enc, tokens, layers, c.prog.words, c.images, c.tensors, c.signed,
                    c.stage_words, c.prog.allocated())

"""Golden model of the accelerator's programs: what a program does to the scratchpads, cycle free.

The RTL (control tile, memory tiles, SA tiles on the network) must leave the scratchpads, the
error flags and the retire counters exactly as :func:`run_program` does, bit for bit. The
encodings are the contract's (:mod:`heterotron.hdl.contract.accel`); this module gives them
their meaning, builds programs (:class:`Program`), moves tensors in and out of scratchpad
bytes, encodes packets, and generates random hazard-free programs for tests.

**Execution.** Instructions run in program order; an instruction's argument words follow its
head. Each is checked in stages, and the first stage that finds a problem makes it *fail*: it
then does nothing but report (its flags are OR-ed into :attr:`Result.error`, one entry in
:attr:`Result.errors`), and it still retires (``retired`` counts it, ``last_id`` is its id).
Execution goes on with the next instruction.

1. *Decode* (``ILLEGAL``): an unknown ``(cls, code)`` (it is taken as one word long), a tile
   index not in the description, a tile of the wrong kind for the opcode's class (``NOP`` and
   ``WAIT`` go to the control tile, ``COPY`` to a memory tile, ``LOAD``/``SCALE``/``RUN`` to
   an SA tile), any ``rsv`` field (regions' included) not zero. An instruction cut off by the
   end of the program is not executed and is no error: the control tile waits for the rest
   of its words (:attr:`Result.pending` counts them); execution stops there.
2. *Fields*: what the instruction and the description alone decide, as the control tile
   checks before it issues. ``ILLEGAL`` problems win: when there is one, the instruction
   reports ``ILLEGAL`` (all its ``ILLEGAL`` problems) and no ``ADDRESS``; only an instruction
   whose fields are otherwise legal reports ``ADDRESS``. A region (:class:`Region`) whose
   ``ebytes`` code is 3 is ``ILLEGAL``. Region checks, ``ADDRESS`` on failure: ``mem`` is a
   memory tile; ``rows >= 1`` and ``cols >= 1``; ``addr`` is word aligned (``word_bytes =
   flit_width / 8``); with ``rows > 1``, ``stride * ebytes`` is whole words and ``stride >=
   cols``; the last byte, ``addr + ((rows - 1) * stride + cols) * ebytes - 1``, lies in the
   scratchpad (``kbytes * 1024`` bytes).
3. *Tile* (SA tiles, ``ILLEGAL`` and the tile's ``DIMS`` unit flag): what depends on the
   tile's state, see ``RUN``.

A unit error of an instruction that otherwise succeeds (``RANGE``) sets the tile's unit flag
(:attr:`Result.tile_errors`) and ``UNIT`` (an entry in :attr:`Result.errors` with its id), and
the instruction takes effect. An engine refusal reports ``ILLEGAL`` only, not ``UNIT``, though
it sets the tile's ``DIMS``. Unit flags are sticky over the program.

**Opcodes.**

* ``NOP``: nothing. ``WAIT mask``: nothing but ordering (see hazards); mask bits naming tiles
  that do not exist are ``ILLEGAL``.
* ``COPY src, dest_tile, dest_addr`` on memory tile ``t``: ``src.mem == t``, ``dest_tile`` a
  memory tile, ``dest_addr`` word aligned and the whole destination in its scratchpad (else
  ``ADDRESS``). Row ``r`` of ``src`` is copied as whole words, ``row_words = ceil(cols *
  ebytes / word_bytes)`` from its row start (bytes past ``cols`` elements ride along), to
  ``dest_addr + r * row_words * word_bytes``: rows packed. The write recorded is ``Region(
  dest_tile, dest_addr, rows, w, w, ebytes)`` with ``w = row_words * word_bytes / ebytes``.
* ``LOAD port, trans, src`` on an SA tile: ``port`` is ``A``, ``B`` or ``BIAS`` (``1..3``,
  else ``ILLEGAL``); ``src.ebytes`` must be ``elem_bytes`` of the port's width (``a_width``,
  ``b_width``, ``bias_width``); a bias has one row and no transpose (else ``ILLEGAL``). The
  stored matrix is ``rows x cols``: A is ``M x K`` (``trans``: stored ``K x M``, A its
  transpose), B is ``K x N`` (``trans``: stored ``N x K``), the bias is ``1 x N``; ``1 <= M
  <= max_m``, ``1 <= K <= max_k``, ``1 <= N <= max_n``, else ``ILLEGAL`` (a fields check:
  nothing changes, the port keeps what it held). Elements are
  read little-endian, sign-extended when the operand is signed (``a_signed``, ``b_signed``; a
  bias always is), zero-extended otherwise; a value outside the operand's range
  (:func:`~heterotron.sim.golden.systolic.operand_range`) is wrapped to the width (two's
  complement, or modulo ``2^width`` unsigned), as the engine writes it truncated, and raises
  ``RANGE``/``UNIT``. A load replaces that port's operand; the others stay.
* ``SCALE lane, m, e`` on an SA tile with ``requant``: ``lane < cols``, ``e <= max_shift``
  (63), ``m < 2^m_width`` (``2^31``), else ``ILLEGAL`` (always on a tile without
  ``requant``). Sets the lane's ``(m, e)``; the table starts all ``(0, 0)``.
* ``RUN bias, dest`` on an SA tile: ``dest.ebytes`` is ``elem_bytes(out_width)`` with
  ``requant``, ``elem_bytes(acc_width)`` without (else ``ILLEGAL``). Engine stage: A and B
  loaded with the same K and, with ``bias``, a bias of B's N, else ``ILLEGAL`` and ``DIMS``
  (the tile stage). Then ``dest`` must be ``M x N`` (else ``ILLEGAL``). ``C = A B (+ bias)`` as
  :func:`~heterotron.sim.golden.systolic.gemm` computes it (with ``requant``, column ``j``
  requantised with the scale of lane ``j mod cols``; without, the ``acc_width`` sums),
  written as two's complement little-endian elements of ``dest`` (its ``N`` columns only; the
  bytes between rows stay).

**Hazards.** The RTL runs instructions of different tiles at once: each tile runs its own in
order, and the control tile issues an instruction to a tile only once the tile's previous one
finished. So an instruction on tile ``T`` is *in flight* from its issue until the next
instruction that succeeds on ``T``, or a ``WAIT`` that covers ``T``. A program whose
instruction reads bytes an in-flight instruction of another tile writes, or writes bytes one
reads or writes, has a race: :class:`HazardError` (so has a ``COPY`` whose source and
destination overlap). ``COPY`` reads its source's whole row words and writes its destination,
``LOAD`` reads its region's bytes, ``RUN`` writes its region's bytes. Failed instructions read
and write nothing, and do not end the tile's instruction in flight (so the check is the
conservative one whichever way the RTL issues them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from heterotron.hdl.contract.accel import (
    DATA_INFO,
    EBYTES,
    MSG_HEADER,
    SFU_GELU_IN_BITS,
    SFU_LN_IN_BITS,
    SFU_LN_MAX_SHIFT,
    SFU_OUT_BITS,
    SFU_TABLE_WORDS,
    AccelError,
    Description,
    MsgClass,
    Opcode,
    Port,
    SfuTable,
    Tile,
    TileKind,
    decode_instr,
    elem_bytes,
    encode_instr,
    pack,
    unpack,
)
from heterotron.hdl.contract.numerics import gelu_consts_problem
from heterotron.hdl.contract.params import ParamError
from heterotron.hdl.contract.pim import ADC_FRAC, PIM_PARAMS, RATE_BITS, SIGMA_BITS
from heterotron.sim.golden.intops import (
    ExpConsts,
    GeluConsts,
    LayerNormConsts,
    check_exp_consts,
    i_gelu,
    layernorm_core,
    softmax_int,
)
from heterotron.sim.golden.pim import PimTileModel
from heterotron.sim.golden.requantizer import requantize
from heterotron.sim.golden.systolic import gemm, operand_range

__all__ = [
    "UNIT_DIMS", "UNIT_RANGE", "SA_PARAMS", "M_WIDTH", "MAX_SHIFT", "check_sa_params",
    "sa_params", "Region", "Program", "Expect", "to_bytes", "write_tensor", "read_tensor",
    "PIM_DIMS", "PIM_RANGE", "SFU_CONFIG", "SFU_RANGE", "pim_params", "signed32",
    "HazardError", "Write", "Result", "Interpreter", "run_program", "encode_packet",
    "decode_packet", "split_data", "join_data", "random_program",
]

#: An SA tile's unit flags (:attr:`Result.tile_errors`): the GEMM engine's sticky ``error``
#: bits, ``GemmError`` of ``hdl/gemm.py`` (which a golden model may not import).
UNIT_DIMS = 1
UNIT_RANGE = 2
#: A PiM tile's unit flags: ``PIM_DIMS`` (an MVM that adds to an accumulator holding another
#: number of rows), ``PIM_RANGE`` (a refused weight, an input outside ``input_bits``, a result
#: outside 32 bits).
PIM_DIMS = 1
PIM_RANGE = 2
#: An SFU tile's unit flags: ``SFU_CONFIG`` (constants or table entries a unit refuses),
#: ``SFU_RANGE`` (an input wider than the unit takes, or a LayerNorm row whose variance could
#: overflow).
SFU_CONFIG = 1
SFU_RANGE = 2

#: The GEMM engine's parameters an SA tile's ``params`` must hold (the golden model assumes
#: no defaults: a description parsed with the engine's own check has them all).
SA_PARAMS = ("rows", "cols", "dataflow", "a_width", "a_signed", "b_width", "b_signed",
             "acc_width", "bias_width", "max_k", "max_m", "max_n", "requant", "out_width")
#: The engine's requantizer keeps the :class:`~heterotron.hdl.requantizer.Requantizer`
#: defaults for these (``m_width`` bits of multiplier, shifts up to ``max_shift``); an SA
#: tile's ``params`` may override them.
M_WIDTH = 31
MAX_SHIFT = 63

_WORD_MASK = (1 << 32) - 1


def check_sa_params(given: dict[str, Any]) -> dict[str, Any]:
    """A unit check for :func:`~heterotron.hdl.contract.accel.parse_description` that needs
    every :data:`SA_PARAMS` given (and allows ``m_width``, ``max_shift``); for descriptions
    built without the components, e.g. in tests."""
    missing = [k for k in SA_PARAMS if k not in given]
    unknown = [k for k in given if k not in SA_PARAMS and k not in ("m_width", "max_shift")]
    if missing or unknown:
        raise ParamError("; ".join(
            ([f"missing parameters {', '.join(missing)}"] if missing else [])
            + ([f"unknown parameters {', '.join(unknown)}"] if unknown else [])))
    return dict(given)


def sa_params(tile: Tile) -> dict[str, Any]:
    """An SA tile's engine parameters, with ``m_width`` and ``max_shift``; refuses a tile whose
    ``params`` lack one (:class:`ValueError`)."""
    missing = [k for k in SA_PARAMS if k not in tile.params]
    if missing:
        raise ValueError(f"SA tile {tile.index} lacks parameters {', '.join(missing)} (parse "
                         "the description with the GEMM engine's unit check)")
    p = {k: tile.params[k] for k in SA_PARAMS}
    p["m_width"] = tile.params.get("m_width", M_WIDTH)
    p["max_shift"] = tile.params.get("max_shift", MAX_SHIFT)
    return p


def pim_params(tile: Tile) -> dict[str, Any]:
    """A PiM tile's crossbar parameters (those of :class:`~.pim.PimTileModel`)."""
    return {q.name: tile.params[q.name] for q in PIM_PARAMS}


def signed32(v: int) -> int:
    """A 32-bit field read as two's complement."""
    v = int(v) & _WORD_MASK
    return v - (1 << 32) if v >> 31 else v


def _u32(v: int) -> int:
    """A signed value as its 32-bit two's-complement field (:class:`ValueError` outside)."""
    v = int(v)
    if not -(1 << 31) <= v < 1 << 32:
        raise ValueError(f"{v} does not fit a 32-bit field")
    return v & _WORD_MASK


def _index(tile: Tile | int) -> int:
    return tile.index if isinstance(tile, Tile) else int(tile)


def _mem_bytes(desc: Description, index: int) -> int:
    return next(t for t in desc.tiles if t.index == index).params["kbytes"] * 1024


# -- regions ------------------------------------------------------------------------------------

Spans = dict[int, list[tuple[int, int]]]  # memory tile -> sorted, disjoint [lo, hi) byte spans


def _merge(spans: Iterable[tuple[int, int, int]]) -> Spans:
    out: Spans = {}
    for mem, lo, hi in sorted(spans):
        runs = out.setdefault(mem, [])
        if runs and lo <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(hi, runs[-1][1]))
        else:
            runs.append((lo, hi))
    return out


def _union(spans: Iterable[Spans]) -> Spans:
    return _merge((mem, lo, hi) for sp in spans for mem, runs in sp.items() for lo, hi in runs)


def _overlap(x: Spans, y: Spans) -> tuple[int, int, int] | None:
    """The first ``(mem, lo, hi)`` bytes both footprints touch, or ``None``."""
    for mem in sorted(x.keys() & y.keys()):
        a, b = x[mem], y[mem]
        i = j = 0
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if lo < hi:
                return mem, lo, hi
            if a[i][1] <= b[j][1]:
                i += 1
            else:
                j += 1
    return None


@dataclass(frozen=True)
class Region:
    """A tensor in memory tile ``mem``: ``rows`` rows of ``cols`` elements of ``ebytes`` bytes
    (1, 2 or 4; the encoding holds the index into ``EBYTES``); row ``r`` starts at byte
    ``addr + r * stride * ebytes`` (``stride`` in elements)."""

    mem: int
    addr: int
    rows: int
    cols: int
    stride: int
    ebytes: int

    def __post_init__(self):
        if self.ebytes not in EBYTES:
            raise ValueError(f"ebytes must be one of {EBYTES}, not {self.ebytes}")

    def fields(self) -> dict[str, int]:
        """The fields of :data:`~heterotron.hdl.contract.accel.REGION`."""
        return {"addr": self.addr, "rows": self.rows, "cols": self.cols, "stride": self.stride,
                "ebytes": EBYTES.index(self.ebytes), "mem": self.mem}

    @classmethod
    def from_fields(cls, f: dict[str, int]) -> Region:
        """The region of decoded ``REGION`` fields (:class:`ValueError` for ``ebytes`` 3)."""
        if f["ebytes"] >= len(EBYTES):
            raise ValueError(f"element size code {f['ebytes']} is not one of 0..2")
        return cls(f["mem"], f["addr"], f["rows"], f["cols"], f["stride"], EBYTES[f["ebytes"]])

    def row_start(self, r: int) -> int:
        return self.addr + r * self.stride * self.ebytes

    @property
    def end(self) -> int:
        """One past the region's last byte."""
        return self.addr + ((self.rows - 1) * self.stride + self.cols) * self.ebytes

    def spans(self, word_bytes: int | None = None) -> Spans:
        """The bytes of the rows' elements; with ``word_bytes``, of the rows' whole words."""
        n = self.cols * self.ebytes
        if word_bytes:
            n = -(-n // word_bytes) * word_bytes
        return _merge((self.mem, s, s + n) for s in map(self.row_start, range(self.rows)))


# -- tensors in scratchpad bytes ---------------------------------------------------------------

def to_bytes(array, ebytes: int) -> bytes:
    """``array``'s elements, row-major, as little-endian ``ebytes``-byte two's complement
    (values from ``-2^(8 ebytes - 1)`` to ``2^(8 ebytes) - 1``: signed or unsigned)."""
    a = np.asarray(array)
    if a.dtype != object and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"integer array expected, not {a.dtype}")
    bits = 8 * ebytes
    if a.size and not (-(1 << (bits - 1)) <= int(a.min()) and int(a.max()) < 1 << bits):
        raise ValueError(f"values in [{int(a.min())}, {int(a.max())}] do not fit {ebytes} "
                         "bytes")
    u = (a.astype(np.int64) & ((1 << bits) - 1)).astype(f"<u{ebytes}")
    return u.tobytes()


def write_tensor(mem: bytearray, region: Region, array) -> None:
    """Write ``array`` (``rows x cols``) into ``mem`` at the region's rows (only ``cols``
    elements per row; the bytes between rows stay)."""
    a = np.asarray(array)
    if a.shape != (region.rows, region.cols):
        raise ValueError(f"a {a.shape} array for a {region.rows} x {region.cols} region")
    if region.end > len(mem):
        raise ValueError(f"region ends at byte {region.end}, past the {len(mem)} bytes")
    n = region.cols * region.ebytes
    for r in range(region.rows):
        s = region.row_start(r)
        mem[s:s + n] = to_bytes(a[r], region.ebytes)


def read_tensor(mem: bytes | bytearray, region: Region, signed: bool = True) -> np.ndarray:
    """The region's ``rows x cols`` elements of ``mem`` (int64; sign- or zero-extended)."""
    if region.end > len(mem):
        raise ValueError(f"region ends at byte {region.end}, past the {len(mem)} bytes")
    dt = f"<{'i' if signed else 'u'}{region.ebytes}"
    out = np.zeros((region.rows, region.cols), dtype=np.int64)
    for r in range(region.rows):
        out[r] = np.frombuffer(mem, dtype=dt, count=region.cols, offset=region.row_start(r))
    return out


def _wrap(x: np.ndarray, width: int, signed: bool) -> np.ndarray:
    """``x`` truncated to ``width`` bits and read back two's complement or unsigned."""
    if x.dtype == object:
        return np.array([_wrap_int(int(v), width, signed) for v in x.flat],
                        dtype=np.int64).reshape(x.shape)
    u = x.astype(np.int64) & ((1 << width) - 1)
    return u - (((u >> (width - 1)) & 1) << width) if signed else u


def _wrap_int(v: int, width: int, signed: bool) -> int:
    u = v & ((1 << width) - 1)
    return u - (1 << width) if signed and u >> (width - 1) else u


# -- programs -----------------------------------------------------------------------------------

class Expect(NamedTuple):
    """What a generator expects instruction ``id`` to leave at ``region`` (read ``signed``)."""

    id: int
    region: Region
    values: np.ndarray
    signed: bool


class Program:
    """Builds a program for ``desc``: each method appends one instruction and returns its id
    (from 1 up, wrapping in 16 bits and skipping 0).

    Only what the encoding cannot hold is refused (:class:`ValueError` naming the field): the
    builder emits semantically bad instructions (out-of-range or misaligned regions, wrong
    sizes, absent tiles) as readily as good ones, and :meth:`raw` appends any words.
    """

    def __init__(self, desc: Description):
        self.desc = desc
        self.words: list[int] = []
        #: Expectations a generator recorded (:func:`random_program`); empty otherwise.
        self.expected: list[Expect] = []
        self._next_id = 1
        self._free = {t.index: 0 for t in desc.of_kind(TileKind.MEMORY)}

    def _emit(self, cls: TileKind, name: str, tile: Tile | int, **args) -> int:
        id = self._next_id
        self.words += encode_instr(cls, name, _index(tile), id, **args)
        self._next_id = id % 0xFFFF + 1
        return id

    def nop(self) -> int:
        return self._emit(TileKind.CONTROL, "NOP", self.desc.control)

    def wait(self, *tiles: Tile | int) -> int:
        """Wait for the tiles (none: all of them, mask 0)."""
        mask = 0
        for t in tiles:
            i = _index(t)
            if not 0 <= i < 32:
                raise ValueError(f"field mask: tile {i} has no bit in the 32-bit mask")
            mask |= 1 << i
        return self._emit(TileKind.CONTROL, "WAIT", self.desc.control, mask=mask)

    def copy(self, mem_tile: Tile | int, src: Region, dest_tile: Tile | int,
             dest_addr: int) -> int:
        return self._emit(TileKind.MEMORY, "COPY", mem_tile, src=src.fields(),
                          dest_tile=_index(dest_tile), dest_addr=dest_addr)

    def load(self, sa_tile: Tile | int, port: Port | int, src: Region,
             trans: bool = False) -> int:
        return self._emit(TileKind.SA, "LOAD", sa_tile, port=int(port), trans=int(trans),
                          src=src.fields())

    def scale(self, sa_tile: Tile | int, lane: int, m: int, e: int) -> int:
        return self._emit(TileKind.SA, "SCALE", sa_tile, lane=lane, m=m, e=e)

    def run(self, sa_tile: Tile | int, dest: Region, bias: bool = False) -> int:
        return self._emit(TileKind.SA, "RUN", sa_tile, bias=int(bias), dest=dest.fields())

    # PiM tile (signed fields take negative values)
    def adc(self, pim_tile: Tile | int, gain: int = 0, offset: int = 0, sigma: int = 0,
            noise_seed: int = 0) -> int:
        return self._emit(TileKind.PIM, "ADC", pim_tile, gain=gain, offset=_u32(offset),
                          sigma=sigma, noise_seed=noise_seed & _WORD_MASK)

    def program(self, pim_tile: Tile | int, src: Region, fault_rate: int = 0,
                fault_seed: int = 0) -> int:
        return self._emit(TileKind.PIM, "PROGRAM", pim_tile, fault_rate=fault_rate,
                          fault_seed=fault_seed & _WORD_MASK, src=src.fields())

    def mvm(self, pim_tile: Tile | int, src: Region, dest: Region | None = None,
            acc: bool = False) -> int:
        """Without ``dest`` the sums stay in the accumulator (``out`` 0)."""
        return self._emit(TileKind.PIM, "MVM", pim_tile, acc=int(acc), out=int(dest is not None),
                          src=src.fields(), dest=dest.fields() if dest is not None else 0)

    # SFU tile
    def table(self, sfu_tile: Tile | int, which: SfuTable | int, src: Region) -> int:
        return self._emit(TileKind.SFU, "TABLE", sfu_tile, which=int(which), src=src.fields())

    def requant(self, sfu_tile: Tile | int, src: Region, dest: Region, out_bits: int, *,
                bias: bool = False, y: Region | None = None, m_y: int = 0, e_y: int = 0) -> int:
        return self._emit(TileKind.SFU, "REQUANT", sfu_tile, out_bits=out_bits,
                          bias=int(bias), res=int(y is not None), m_y=m_y, e_y=e_y,
                          src=src.fields(), y=y.fields() if y is not None else 0,
                          dest=dest.fields())

    def softmax(self, sfu_tile: Tile | int, src: Region, dest: Region, x0: int, b: int, c: int,
                out_bits: int = 8, valid: int | None = None) -> int:
        return self._emit(TileKind.SFU, "SOFTMAX", sfu_tile, out_bits=out_bits,
                          valid=src.cols if valid is None else valid, x0=_u32(x0), b=_u32(b),
                          c=_u32(c), src=src.fields(), dest=dest.fields())

    def gelu(self, sfu_tile: Tile | int, src: Region, dest: Region, b: int, c: int, one: int,
             m: int, e: int, out_bits: int) -> int:
        return self._emit(TileKind.SFU, "GELU", sfu_tile, out_bits=out_bits, e=e, m=m,
                          b=_u32(b), c=_u32(c), one=_u32(one), src=src.fields(),
                          dest=dest.fields())

    def layernorm(self, sfu_tile: Tile | int, src: Region, dest: Region, res: Region,
                  shift: int, out_bits: int, res_bits: int) -> int:
        return self._emit(TileKind.SFU, "LAYERNORM", sfu_tile, shift=shift, out_bits=out_bits,
                          res_bits=res_bits, src=src.fields(), dest=dest.fields(),
                          res=res.fields())

    def raw(self, words: Iterable[int]) -> None:
        """Append arbitrary 32-bit words (e.g. an illegal instruction)."""
        words = [int(w) for w in words]
        bad = [w for w in words if not 0 <= w <= _WORD_MASK]
        if bad:
            raise ValueError(f"words {bad} are not 32-bit")
        self.words += words

    def allocated(self) -> dict[int, int]:
        """Bytes :meth:`alloc` has handed out so far, per memory tile (from address 0)."""
        return dict(self._free)

    def free_bytes(self, mem_tile: Tile | int) -> int:
        i = _index(mem_tile)
        return _mem_bytes(self.desc, i) - self._free[i]

    def alloc(self, mem_tile: Tile | int, rows: int, cols: int, ebytes: int) -> Region:
        """A fresh ``rows x cols`` region of memory tile ``mem_tile`` at its next free word,
        each row starting on a word (the stride rounded up); :class:`ValueError` when it is
        not a memory tile or the region does not fit."""
        i = _index(mem_tile)
        if i not in self._free:
            raise ValueError(f"tile {i} is not a memory tile")
        if ebytes not in EBYTES or rows < 1 or cols < 1:
            raise ValueError(f"cannot allocate {rows} x {cols} elements of {ebytes} bytes")
        wb = self.desc.word_bytes
        stride = -(-cols * ebytes // wb) * wb // ebytes
        size = rows * stride * ebytes
        if size > self.free_bytes(i):
            raise ValueError(f"memory tile {i}: {size} bytes do not fit the "
                             f"{self.free_bytes(i)} left")
        region = Region(i, self._free[i], rows, cols, stride, ebytes)
        self._free[i] += size
        return region


# -- interpreter --------------------------------------------------------------------------------

class HazardError(ValueError):
    """A program races: instruction ``second`` touches bytes in-flight instruction ``first``
    of another tile writes (or reads, when ``second`` writes)."""

    def __init__(self, message: str, first: int, second: int):
        super().__init__(message)
        self.first, self.second = first, second


class Write(NamedTuple):
    """Instruction ``id`` on ``tile`` wrote ``region`` of memory tile ``mem``."""

    id: int
    tile: int
    mem: int
    region: Region


@dataclass
class Result:
    """What a program left: the scratchpads, every write in program order, the control's flags
    (:attr:`error`, OR-ed over the program, and each failure in :attr:`errors`), the retire
    counters and every tile's unit flags (SA: :data:`UNIT_DIMS`, :data:`UNIT_RANGE`)."""

    memories: dict[int, bytes]
    writes: list[Write]
    error: AccelError
    errors: list[tuple[int | None, AccelError, str]]
    retired: int
    last_id: int
    tile_errors: dict[int, int]
    #: Words of an instruction cut off by the end of the program (not executed).
    pending: int = 0


@dataclass
class _Access:
    id: int
    reads: Spans
    writes: Spans


@dataclass
class _Sa:
    """An SA tile's engine state: its operands in logical orientation (A ``M x K``, B ``K x
    N``, bias ``N``), the scale table and the unit flags."""

    p: dict[str, Any]
    ops: dict[Port, np.ndarray | None]
    scale_m: np.ndarray
    scale_e: np.ndarray
    flags: int = 0


@dataclass
class _Pim:
    """A PiM tile's state: the crossbar's golden model (registers, cells, LFSRs), the
    weights it was last written with, and the accumulator."""

    p: dict[str, Any]
    max_m: int
    model: PimTileModel
    weights: np.ndarray
    acc: np.ndarray | None = None
    flags: int = 0


@dataclass
class _Sfu:
    """An SFU tile's state: its per-channel tables and unit flags."""

    p: dict[str, Any]
    tables: dict[SfuTable, np.ndarray]
    flags: int = 0


_ILL, _ADDR = AccelError.ILLEGAL, AccelError.ADDRESS
Problems = list[tuple[AccelError, str]]


class _Failed(Exception):
    def __init__(self, problems: Problems):
        self.problems = problems


def _reserved(args: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in args.items():
        if isinstance(v, dict):
            out += _reserved(v, f"{prefix}{k}.")
        elif k == "rsv" and v:
            out.append(f"{prefix}{k}")
    return out


class Interpreter:
    """Runs programs on ``desc`` from the given scratchpad contents (see the module
    documentation); state carries over from one :meth:`execute` to the next.

    ``memories`` maps a memory tile's index to its initial bytes (shorter: zeros follow;
    missing: all zeros). With ``hazards`` false, races are not checked.
    """

    def __init__(self, desc: Description, memories: dict[int, bytes] | None = None, *,
                 hazards: bool = True):
        self.desc = desc
        self.hazards = hazards
        self.tiles = {t.index: t for t in desc.tiles}
        self.mem: dict[int, bytearray] = {}
        for t in desc.of_kind(TileKind.MEMORY):
            size = _mem_bytes(desc, t.index)
            init = bytes((memories or {}).get(t.index, b""))
            if len(init) > size:
                raise ValueError(f"memory tile {t.index}: {len(init)} bytes of contents for "
                                 f"a {size}-byte scratchpad")
            self.mem[t.index] = bytearray(init) + bytearray(size - len(init))
        unknown = set(memories or {}) - set(self.mem)
        if unknown:
            raise ValueError(f"contents for tiles {sorted(unknown)}, which are not memories")
        self.sa: dict[int, _Sa] = {}
        for t in desc.of_kind(TileKind.SA):
            p = sa_params(t)
            self.sa[t.index] = _Sa(p, {Port.A: None, Port.B: None, Port.BIAS: None},
                                   np.zeros(p["cols"], np.int64), np.zeros(p["cols"], np.int64))
        self.pim: dict[int, _Pim] = {}
        for t in desc.of_kind(TileKind.PIM):
            model = PimTileModel(tiles=1, **pim_params(t))
            self.pim[t.index] = _Pim(model.p, t.params["max_m"], model,
                                     np.zeros((model.cols, model.rows), np.int64))
        self.sfu: dict[int, _Sfu] = {}
        for t in desc.of_kind(TileKind.SFU):
            n = t.params["channels"]
            self.sfu[t.index] = _Sfu(dict(t.params), {
                w: np.zeros(n, object if w == SfuTable.LN_BIAS else np.int64)
                for w in SfuTable})
        self.error = AccelError(0)
        self.errors: list[tuple[int | None, AccelError, str]] = []
        self.retired = 0
        self.last_id = 0
        self.writes: list[Write] = []
        self._inflight: dict[int, _Access] = {}
        self.pending = 0
        #: Called as ``on_mvm(tile, x, dest_cols)`` for every PiM MVM that runs, with its
        #: ``M x K`` inputs as the tile takes them (wrapped) and the result columns it
        #: writes (0 without ``out``): how :mod:`heterotron.sim.flows.bound` sees the data a
        #: tile's conversions depend on. The interpreter itself counts no cycles.
        self.on_mvm = None

    # -- the program loop ----------------------------------------------------------------------

    def execute(self, words: Sequence[int]) -> None:
        words = [int(w) for w in words]
        bad = [w for w in words if not 0 <= w <= _WORD_MASK]
        if bad:
            raise ValueError(f"words {bad[:4]} are not 32-bit")
        pos = 0
        while pos < len(words):
            op, head, _ = decode_instr(words[pos:pos + 1])
            if op is None:
                self._retire(head["id"], [(_ILL, f"unknown opcode class {head['cls']} code "
                                                 f"{head['code']}")])
                pos += 1
                continue
            end = pos + 1 + op.words
            if end > len(words):  # the control tile waits for the rest
                self.pending = len(words) - pos
                break
            self._instruction(*decode_instr(words[pos:end]))
            pos = end

    def new_program(self, contents: dict[int, bytes] | None = None) -> None:
        """Start another program on the same tiles (their operands and scales stay, as the
        hardware's do): writes, errors and counters cleared, nothing in flight (the host
        waited for the last one), and ``contents`` (tile -> bytes from address 0) copied
        into the scratchpads."""
        for t, data in (contents or {}).items():
            self.mem[t][:len(data)] = data
        self.writes, self.errors, self.error, self.retired = [], [], AccelError(0), 0
        self._inflight = {}
        self.pending = 0

    def result(self) -> Result:
        return Result(
            memories={i: bytes(m) for i, m in self.mem.items()}, writes=list(self.writes),
            error=self.error, errors=list(self.errors), retired=self.retired,
            last_id=self.last_id,
            tile_errors={t.index: self._unit(t.index).flags if self._unit(t.index) else 0
                         for t in self.desc.tiles}, pending=self.pending)

    def _unit(self, index: int):
        return self.sa.get(index) or self.pim.get(index) or self.sfu.get(index)

    def _report(self, id: int | None, problems: Problems) -> None:
        flags = AccelError(0)
        for f, _ in problems:
            flags |= f
        self.error |= flags
        self.errors.append((id, flags, "; ".join(m for _, m in problems)))

    def _retire(self, id: int, problems: Problems = ()) -> None:
        if problems:
            self._report(id, list(problems))
        self.retired += 1
        self.last_id = id

    def _instruction(self, op: Opcode, head: dict, args: dict) -> None:
        id, t = head["id"], head["tile"]
        tile = self.tiles.get(t)
        problems: Problems = []
        if tile is None:
            problems.append((_ILL, f"{op.name}: tile {t} is not in the description"))
        elif tile.kind != op.cls:
            problems.append((_ILL, f"{op.name} is a {op.cls.name.lower()} opcode, but tile "
                                   f"{t} is a {tile.kind.name.lower()} tile"))
        rsv = _reserved(args)
        if rsv:
            problems.append((_ILL, f"{op.name}: reserved fields {', '.join(rsv)} are not 0"))
        if not problems:
            try:
                getattr(self, f"_{op.name.lower()}")(id, tile, args)
            except _Failed as failed:
                problems = failed.problems
        self._retire(id, problems)

    # -- hazards -------------------------------------------------------------------------------

    def _issue(self, id: int, tile: int, reads: Spans, writes: Spans) -> None:
        """Instruction ``id`` starts on ``tile``: it ends the tile's previous one; check it
        against those in flight elsewhere."""
        self._inflight.pop(tile, None)
        if not self.hazards:
            return
        for other, acc in sorted(self._inflight.items()):
            for mine, theirs, mine_do, theirs_do in ((reads, acc.writes, "reads", "writes"),
                                                     (writes, acc.writes, "writes", "writes"),
                                                     (writes, acc.reads, "writes", "reads")):
                hit = _overlap(mine, theirs)
                if hit:
                    mem, lo, hi = hit
                    raise HazardError(
                        f"race: instruction {id} (tile {tile}) {mine_do} bytes [{lo}, {hi}) "
                        f"of memory tile {mem}, which in-flight instruction {acc.id} (tile "
                        f"{other}) {theirs_do}; WAIT on tile {other} first", acc.id, id)
        self._inflight[tile] = _Access(id, reads, writes)

    # -- checks --------------------------------------------------------------------------------

    def _region(self, f: dict, what: str, problems: Problems) -> Region | None:
        """The region of fields ``f``, its problems appended to ``problems`` (``None`` when
        the fields do not make a region: an ``ebytes`` code of 3)."""
        try:
            r = Region.from_fields(f)
        except ValueError as exc:
            problems.append((_ILL, f"{what}: {exc}"))
            return None
        mt = self.tiles.get(r.mem)
        if mt is None or mt.kind != TileKind.MEMORY:
            problems.append((_ADDR, f"{what}: tile {r.mem} is not a memory tile"))
            return r
        wb = self.desc.word_bytes
        if r.rows < 1 or r.cols < 1:
            problems.append((_ADDR, f"{what}: {r.rows} x {r.cols} elements is empty"))
        if r.addr % wb:
            problems.append((_ADDR, f"{what}: address {r.addr} is not {wb}-byte aligned"))
        if r.rows > 1 and (r.stride * r.ebytes) % wb:
            problems.append((_ADDR, f"{what}: rows {r.stride * r.ebytes} bytes apart do not "
                                    f"start on {wb}-byte words"))
        if r.rows > 1 and r.stride < r.cols:
            problems.append((_ADDR, f"{what}: stride {r.stride} below cols {r.cols}"))
        size = _mem_bytes(self.desc, r.mem)
        if r.rows >= 1 and r.cols >= 1 and r.end > size:
            problems.append((_ADDR, f"{what}: ends at byte {r.end}, past the {size} bytes of "
                                    f"memory tile {r.mem}"))
        return r

    @staticmethod
    def _check(problems: Problems) -> None:
        """Fail with ``problems``: the ``ILLEGAL`` ones alone when there are any."""
        illegal = [pr for pr in problems if pr[0] == _ILL]
        if problems:
            raise _Failed(illegal or problems)

    # -- opcodes -------------------------------------------------------------------------------

    def _nop(self, id: int, tile: Tile, args: dict) -> None:
        pass

    def _wait(self, id: int, tile: Tile, args: dict) -> None:
        mask = args["mask"]
        absent = [i for i in range(32) if mask >> i & 1 and i not in self.tiles]
        self._check([(_ILL, f"WAIT: tiles {absent} do not exist")] if absent else [])
        if mask == 0:
            self._inflight.clear()
        for i in range(32):
            if mask >> i & 1:
                self._inflight.pop(i, None)

    def _copy(self, id: int, tile: Tile, args: dict) -> None:
        problems: Problems = []
        wb = self.desc.word_bytes
        src = self._region(args["src"], "COPY src", problems)
        if src is not None and src.mem != tile.index:
            problems.append((_ADDR, f"COPY src is on tile {src.mem}, not on memory tile "
                                    f"{tile.index} that runs it"))
        dt, addr = args["dest_tile"], args["dest_addr"]
        row_words = -(-src.cols * src.ebytes // wb) if src is not None else 0
        nbytes = src.rows * row_words * wb if src is not None else 0
        if dt not in self.tiles or self.tiles[dt].kind != TileKind.MEMORY:
            problems.append((_ADDR, f"COPY dest_tile {dt} is not a memory tile"))
        elif addr + nbytes > _mem_bytes(self.desc, dt):
            problems.append((_ADDR, f"COPY destination ends at byte {addr + nbytes}, past "
                                    f"the {_mem_bytes(self.desc, dt)} bytes of memory tile "
                                    f"{dt}"))
        if addr % wb:
            problems.append((_ADDR, f"COPY dest_addr {addr} is not {wb}-byte aligned"))
        self._check(problems)
        reads, writes = src.spans(wb), _merge([(dt, addr, addr + nbytes)])
        if self.hazards:
            hit = _overlap(reads, writes)
            if hit:
                raise HazardError(f"COPY {id}: its source and destination overlap at bytes "
                                  f"[{hit[1]}, {hit[2]}) of memory tile {hit[0]}", id, id)
        self._issue(id, tile.index, reads, writes)
        row = row_words * wb
        payload = b"".join(bytes(self.mem[src.mem][s:s + row])
                           for s in map(src.row_start, range(src.rows)))
        self.mem[dt][addr:addr + nbytes] = payload
        w = row // src.ebytes
        self.writes.append(Write(id, tile.index, dt,
                                 Region(dt, addr, src.rows, w, w, src.ebytes)))

    def _load(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sa[tile.index]
        p = st.p
        problems: Problems = []
        src = self._region(args["src"], "LOAD src", problems)
        port, trans = args["port"], args["trans"]
        if port not in (Port.A, Port.B, Port.BIAS):
            problems.append((_ILL, f"LOAD port {port} is not A (1), B (2) or BIAS (3)"))
            self._check(problems)
        port = Port(port)
        width, signed = {Port.A: (p["a_width"], p["a_signed"]),
                         Port.B: (p["b_width"], p["b_signed"]),
                         Port.BIAS: (p["bias_width"], True)}[port]
        eb = elem_bytes(width)
        if src is not None and src.ebytes != eb:
            problems.append((_ILL, f"LOAD {port.name}: {src.ebytes}-byte elements, but "
                                   f"{width}-bit operands are held in {eb} bytes"))
        if port == Port.BIAS:
            if trans:
                problems.append((_ILL, "LOAD BIAS cannot transpose"))
            if src is not None and src.rows != 1:
                problems.append((_ILL, f"LOAD BIAS: {src.rows} rows, not 1"))
        if src is not None:  # the sizes, against the engine's maxima
            r, c = src.rows, src.cols
            dims = {Port.A: {"max_m": c if trans else r, "max_k": r if trans else c},
                    Port.B: {"max_k": c if trans else r, "max_n": r if trans else c},
                    Port.BIAS: {"max_n": c}}[port]
            bad = [f"{v} not in [1, {k} = {p[k]}]" for k, v in dims.items()
                   if not 1 <= v <= p[k]]
            if bad:
                problems.append((_ILL, f"LOAD {port.name}: sizes {', '.join(bad)}"))
        self._check(problems)
        self._issue(id, tile.index, src.spans(), {})
        stored = read_tensor(self.mem[src.mem], src, signed)
        wrapped = _wrap(stored, width, signed)
        if (wrapped != stored).any():
            lo, hi = operand_range(width, signed)
            st.flags |= UNIT_RANGE
            self._report(id, [(AccelError.UNIT, f"LOAD {port.name}: "
                                                f"{int((wrapped != stored).sum())} elements "
                                                f"outside [{lo}, {hi}], loaded truncated")])
        st.ops[port] = wrapped[0] if port == Port.BIAS else (wrapped.T if trans else wrapped)

    def _scale(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sa[tile.index]
        p = st.p
        lane, m, e = args["lane"], args["m"], args["e"]
        if not p["requant"]:
            self._check([(_ILL, f"SCALE: SA tile {tile.index} does not requantize")])
        problems: Problems = []
        if lane >= p["cols"]:
            problems.append((_ILL, f"SCALE lane {lane} >= cols = {p['cols']}"))
        if e > p["max_shift"]:
            problems.append((_ILL, f"SCALE e = {e} > max_shift = {p['max_shift']}"))
        if m >> p["m_width"]:
            problems.append((_ILL, f"SCALE m = {m} does not fit m_width = {p['m_width']} "
                                   "bits"))
        self._check(problems)
        self._issue(id, tile.index, {}, {})
        st.scale_m[lane], st.scale_e[lane] = m, e

    def _run(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sa[tile.index]
        p = st.p
        problems: Problems = []
        dest = self._region(args["dest"], "RUN dest", problems)
        out_w = p["out_width"] if p["requant"] else p["acc_width"]
        eb = elem_bytes(out_w)
        if dest is not None and dest.ebytes != eb:
            problems.append((_ILL, f"RUN dest: {dest.ebytes}-byte elements, but {out_w}-bit "
                                   f"results are held in {eb} bytes"))
        self._check(problems)
        a, b, bias = st.ops[Port.A], st.ops[Port.B], st.ops[Port.BIAS]
        use_bias = bool(args["bias"])
        refused = ("A is not loaded" if a is None else "B is not loaded" if b is None
                   else f"K of A ({a.shape[1]}) and B ({b.shape[0]}) differ"
                   if a.shape[1] != b.shape[0]
                   else "no bias is loaded" if use_bias and bias is None
                   else f"the bias has {bias.shape[0]} columns, B {b.shape[1]}"
                   if use_bias and bias.shape[0] != b.shape[1] else None)
        if refused:
            st.flags |= UNIT_DIMS
            self._check([(_ILL, f"RUN: the engine refuses: {refused}")])
        m, n = a.shape[0], b.shape[1]
        if (dest.rows, dest.cols) != (m, n):
            self._check([(_ILL, f"RUN dest is {dest.rows} x {dest.cols}, the result "
                                f"{m} x {n}")])
        self._issue(id, tile.index, {}, dest.spans())
        cols = p["cols"]
        scale = (dict(scale_m=st.scale_m, scale_e=st.scale_e, out_width=p["out_width"])
                 if p["requant"] else {})
        beats = np.asarray(gemm(a, b, cols=cols, bias=bias if use_bias else None, **scale))
        nt = -(-n // cols)
        c = beats.reshape(nt, m, cols).transpose(1, 0, 2).reshape(m, nt * cols)[:, :n]
        c = _wrap(c, out_w, True)  # a no-op for a description whose accumulator cannot wrap
        write_tensor(self.mem[dest.mem], dest, c)
        self.writes.append(Write(id, tile.index, dest.mem, dest))

    # -- PiM tile --------------------------------------------------------------------------------

    def _unit_error(self, id: int, unit, flag: int, message: str) -> None:
        unit.flags |= flag
        self._report(id, [(AccelError.UNIT, message)])

    def _adc(self, id: int, tile: Tile, args: dict) -> None:
        st = self.pim[tile.index]
        p = st.p
        gain, offset, sigma = args["gain"], signed32(args["offset"]), args["sigma"]
        problems: Problems = []
        if gain and p["adc_range"] == "fixed":
            problems.append((_ILL, "ADC: the gain is fixed (adc_range = fixed): gain must be "
                                   "0 (keep)"))
        lim = 1 << (ADC_FRAC + p["enob"])
        if gain >= lim:
            problems.append((_ILL, f"ADC gain {gain} >= 2^{ADC_FRAC + p['enob']}"))
        if not -lim <= offset < lim:
            problems.append((_ILL, f"ADC offset {offset} outside [-2^{ADC_FRAC + p['enob']}, "
                                   f"2^{ADC_FRAC + p['enob']})"))
        if sigma and not p["noise"]:
            problems.append((_ILL, "ADC sigma must be 0: the tile has no noise (noise = "
                                   "false)"))
        if sigma >> SIGMA_BITS:
            problems.append((_ILL, f"ADC sigma {sigma} does not fit {SIGMA_BITS} bits"))
        self._check(problems)
        self._issue(id, tile.index, {}, {})
        st.model.configure(gain=gain or None, offset=offset, sigma_q=sigma,
                           noise_seed=args["noise_seed"])

    def _program(self, id: int, tile: Tile, args: dict) -> None:
        st = self.pim[tile.index]
        p, model = st.p, st.model
        problems: Problems = []
        src = self._region(args["src"], "PROGRAM src", problems)
        rate = args["fault_rate"]
        if rate and not p["faults"]:
            problems.append((_ILL, "PROGRAM fault_rate must be 0: the tile has no fault "
                                   "injection (faults = false)"))
        if rate >> RATE_BITS:
            problems.append((_ILL, f"PROGRAM fault_rate {rate} does not fit {RATE_BITS} bits"))
        eb = elem_bytes(p["weight_bits"])
        if src is not None:
            if src.ebytes != eb:
                problems.append((_ILL, f"PROGRAM src: {src.ebytes}-byte elements, but "
                                       f"{p['weight_bits']}-bit weights are held in {eb}"))
            if not (1 <= src.rows <= model.cols and 1 <= src.cols <= model.rows):
                problems.append((_ILL, f"PROGRAM src: {src.rows} x {src.cols} weights do not "
                                       f"fit the {model.cols} x {model.rows} crossbar (N x K)"))
        self._check(problems)
        self._issue(id, tile.index, src.spans(), {})
        w = np.zeros((model.cols, model.rows), np.int64)
        w[:src.rows, :src.cols] = read_tensor(self.mem[src.mem], src, True)
        lim = (1 << (p["weight_bits"] - 1)) - 1
        refused = np.abs(w) > lim
        w = np.where(refused, st.weights, w)  # a refused weight keeps its cells
        model.configure(fault_rate=rate, fault_seed=args["fault_seed"])
        old = model.cells.copy()
        model.program(w)
        if refused.any():  # ... including the faults they were drawn with
            S = model.S
            keep = np.repeat(refused.T, 2 * S, axis=1)  # [rows, J]: bit-line j of column j // 2S
            model.cells[0] = np.where(keep, old[0], model.cells[0])
            self._unit_error(id, st, PIM_RANGE, f"PROGRAM: {int(refused.sum())} weights "
                                                f"outside [-{lim}, {lim}] refused")
        st.weights = w

    def _mvm(self, id: int, tile: Tile, args: dict) -> None:
        st = self.pim[tile.index]
        p, model = st.p, st.model
        problems: Problems = []
        src = self._region(args["src"], "MVM src", problems)
        out, acc = args["out"], args["acc"]
        eb = elem_bytes(p["input_bits"])
        if src is not None:
            if src.ebytes > eb:
                problems.append((_ILL, f"MVM src: {src.ebytes}-byte elements, but inputs are "
                                       f"{p['input_bits']} bits ({eb} bytes at most)"))
            if not (1 <= src.rows <= st.max_m and 1 <= src.cols <= model.rows):
                problems.append((_ILL, f"MVM src: {src.rows} x {src.cols} inputs; M must be "
                                       f"in [1, max_m = {st.max_m}], K in [1, rows = "
                                       f"{model.rows}]"))
        dest = None
        if out:
            dest = self._region(args["dest"], "MVM dest", problems)
            if dest is not None and src is not None and (
                    dest.rows != src.rows or not 1 <= dest.cols <= model.cols
                    or dest.ebytes != 4):
                problems.append((_ILL, f"MVM dest: {dest.rows} x {dest.cols} elements of "
                                       f"{dest.ebytes} bytes; it must be M = {src.rows} rows "
                                       f"of at most cols = {model.cols} 4-byte sums"))
        self._check(problems)
        if acc and (st.acc is None or st.acc.shape[0] != src.rows):
            st.flags |= PIM_DIMS
            held = "nothing" if st.acc is None else f"{st.acc.shape[0]} rows"
            self._check([(_ILL, f"MVM acc: the accumulator holds {held}, not {src.rows}")])
        self._issue(id, tile.index, src.spans(), dest.spans() if dest is not None else {})
        x = np.zeros((src.rows, model.rows), np.int64)
        stored = read_tensor(self.mem[src.mem], src, True)
        wrapped = _wrap(stored, p["input_bits"], True)
        x[:, :src.cols] = wrapped
        if self.on_mvm is not None:
            self.on_mvm(tile.index, wrapped, dest.cols if dest is not None else 0)
        if (wrapped != stored).any():
            self._unit_error(id, st, PIM_RANGE, f"MVM: {int((wrapped != stored).sum())} inputs "
                                                f"outside {p['input_bits']} signed bits, "
                                                "taken truncated")
        sums = model.mvm(x)
        st.acc = sums if not acc else st.acc + sums
        if dest is not None:
            g = model.gain
            y = (st.acc[:, :dest.cols] * (1 << ADC_FRAC) + g // 2) // g
            wrapped = _wrap(y, 32, True)
            if (wrapped != y).any():
                self._unit_error(id, st, PIM_RANGE, "MVM: sums outside 32 bits, written "
                                                    "truncated")
            write_tensor(self.mem[dest.mem], dest, wrapped)
            self.writes.append(Write(id, tile.index, dest.mem, dest))

    # -- SFU tile --------------------------------------------------------------------------------

    def _sfu_region(self, f: dict, what: str, problems: Problems, rows: int | None = None,
                    cols: int | None = None, out_bits: int | None = None) -> Region | None:
        """A region the SFU reads or writes: ``rows x cols`` when given, and for an output
        ``ebytes = elem_bytes(out_bits)``."""
        r = self._region(f, what, problems)
        if r is None:
            return None
        if rows is not None and (r.rows, r.cols) != (rows, cols):
            problems.append((_ILL, f"{what} is {r.rows} x {r.cols}, not {rows} x {cols}"))
        if out_bits is not None and r.ebytes != elem_bytes(out_bits):
            problems.append((_ILL, f"{what}: {r.ebytes}-byte elements, but {out_bits}-bit "
                                   f"results are held in {elem_bytes(out_bits)}"))
        return r

    def _out_bits(self, op: str, bits: int, problems: Problems, lo: int = 2) -> None:
        hi = SFU_OUT_BITS[op]
        if not lo <= bits <= hi:
            problems.append((_ILL, f"{op} out_bits {bits} outside [{lo}, {hi}]"))

    def _write(self, id: int, tile: Tile, dest: Region, values: np.ndarray) -> None:
        write_tensor(self.mem[dest.mem], dest, values)
        self.writes.append(Write(id, tile.index, dest.mem, dest))

    def _table(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sfu[tile.index]
        problems: Problems = []
        which = args["which"]
        if which >= len(SfuTable):
            problems.append((_ILL, f"TABLE which {which} is not a table (0..{len(SfuTable) - 1})"))
            self._check(problems)
        which = SfuTable(which)
        words = SFU_TABLE_WORDS[which]
        src = self._region(args["src"], "TABLE src", problems)
        n = st.p["channels"]
        if src is not None and (src.rows != 1 or src.ebytes != 4 or src.cols % words
                                or src.cols // words > n):
            problems.append((_ILL, f"TABLE {which.name}: src must be one row of 4-byte "
                                   f"elements, {words} per entry, at most channels = {n} "
                                   f"entries; it is {src.rows} x {src.cols} of {src.ebytes}"))
        self._check(problems)
        self._issue(id, tile.index, src.spans(), {})
        raw = read_tensor(self.mem[src.mem], src, False)[0]  # unsigned words
        signed = np.where(raw >> 31, raw - (1 << 32), raw)
        if words == 2:  # low word unsigned, high word signed
            vals = np.asarray(raw[0::2].astype(object) + signed[1::2].astype(object) * (1 << 32),
                              dtype=object)
            ok = np.array([abs(int(v)) < 1 << 47 for v in vals], bool)
        else:
            vals = signed if which == SfuTable.RQ_BIAS else raw
            ok = {SfuTable.RQ_BIAS: np.ones(len(vals), bool),
                  SfuTable.RQ_M: vals < 1 << 31, SfuTable.LN_OUT_M: vals < 1 << 31,
                  SfuTable.LN_RES_M: vals < 1 << 31, SfuTable.RQ_E: vals <= 63,
                  SfuTable.LN_OUT_E: vals <= 63, SfuTable.LN_RES_E: vals <= 63,
                  SfuTable.LN_SIGN: (vals == 1) | (vals == (1 << 32) - 1)}[which]
            if which == SfuTable.LN_SIGN:
                vals = np.where(vals == 1, 1, -1)
        if not ok.all():
            self._unit_error(id, st, SFU_CONFIG, f"TABLE {which.name}: "
                                                 f"{int((~ok).sum())} entries out of range; "
                                                 "the table is unchanged")
            return
        st.tables[which][:len(vals)] = vals

    def _requant(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sfu[tile.index]
        problems: Problems = []
        bits = args["out_bits"]
        self._out_bits("REQUANT", bits, problems)
        src = self._sfu_region(args["src"], "REQUANT src", problems)
        shape = (src.rows, src.cols) if src is not None else (None, None)
        dest = self._sfu_region(args["dest"], "REQUANT dest", problems, *shape, out_bits=bits)
        y = (self._sfu_region(args["y"], "REQUANT y", problems, *shape)
             if args["res"] else None)
        if src is not None and src.cols > st.p["channels"]:
            problems.append((_ILL, f"REQUANT: {src.cols} columns, more than channels = "
                                   f"{st.p['channels']}"))
        if args["m_y"] >> 31 or args["e_y"] > 63:
            problems.append((_ILL, f"REQUANT: m_y {args['m_y']} must be below 2^31, e_y "
                                   f"{args['e_y']} at most 63"))
        self._check(problems)
        reads = [src.spans()] + ([y.spans()] if y is not None else [])
        self._issue(id, tile.index, _union(reads), dest.spans())
        n = src.cols
        z = read_tensor(self.mem[src.mem], src, True)
        if args["bias"]:
            z = z + st.tables[SfuTable.RQ_BIAS][:n]
        t = st.tables
        res = {} if y is None else dict(y=read_tensor(self.mem[y.mem], y, True),
                                        m_y=args["m_y"], e_y=args["e_y"])
        self._write(id, tile, dest, requantize(z, t[SfuTable.RQ_M][:n], t[SfuTable.RQ_E][:n],
                                               bits, **res))

    def _softmax(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sfu[tile.index]
        problems: Problems = []
        bits = args["out_bits"]
        self._out_bits("SOFTMAX", bits, problems)
        src = self._sfu_region(args["src"], "SOFTMAX src", problems)
        shape = (src.rows, src.cols) if src is not None else (None, None)
        dest = self._sfu_region(args["dest"], "SOFTMAX dest", problems, *shape, out_bits=bits)
        if src is not None:
            if src.cols > st.p["max_row"]:
                problems.append((_ILL, f"SOFTMAX: rows of {src.cols}, longer than max_row = "
                                       f"{st.p['max_row']}"))
            if args["valid"] > src.cols:
                problems.append((_ILL, f"SOFTMAX valid {args['valid']} > {src.cols} columns"))
        self._check(problems)
        k = ExpConsts(signed32(args["x0"]), signed32(args["b"]), signed32(args["c"]), 0.0)
        try:
            check_exp_consts(k)
        except ValueError as exc:
            st.flags |= SFU_CONFIG
            raise _Failed([(AccelError.UNIT, f"SOFTMAX: the unit refuses its constants: "
                                             f"{exc}")]) from None
        self._issue(id, tile.index, src.spans(), dest.spans())
        x = read_tensor(self.mem[src.mem], src, True)
        mask = np.arange(src.cols) < args["valid"]
        self._write(id, tile, dest, softmax_int(x, k, variant=st.p["variant"], out_bits=bits,
                                                mask=mask))

    def _gelu(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sfu[tile.index]
        problems: Problems = []
        bits = args["out_bits"]
        self._out_bits("GELU", bits, problems)
        src = self._sfu_region(args["src"], "GELU src", problems)
        shape = (src.rows, src.cols) if src is not None else (None, None)
        dest = self._sfu_region(args["dest"], "GELU dest", problems, *shape, out_bits=bits)
        if args["m"] >> 31 or args["e"] > 63:
            problems.append((_ILL, f"GELU: m {args['m']} must be below 2^31, e {args['e']} "
                                   "at most 63"))
        self._check(problems)
        b, c, one = signed32(args["b"]), signed32(args["c"]), signed32(args["one"])
        why = gelu_consts_problem(b, c, one, SFU_GELU_IN_BITS)
        if why:
            st.flags |= SFU_CONFIG
            raise _Failed([(AccelError.UNIT, f"GELU: the unit refuses its constants: {why}")])
        self._issue(id, tile.index, src.spans(), dest.spans())
        stored = read_tensor(self.mem[src.mem], src, True)
        x = _wrap(stored, SFU_GELU_IN_BITS, True)
        if (x != stored).any():
            self._unit_error(id, st, SFU_RANGE, f"GELU: inputs outside {SFU_GELU_IN_BITS} "
                                                "signed bits, taken truncated")
        k = GeluConsts(b, c, one, 0.0)
        g = i_gelu(np.asarray(x, dtype=object), k)
        self._write(id, tile, dest, requantize(g, args["m"], args["e"], bits))

    def _layernorm(self, id: int, tile: Tile, args: dict) -> None:
        st = self.sfu[tile.index]
        problems: Problems = []
        bits, rbits = args["out_bits"], args["res_bits"]
        self._out_bits("LAYERNORM", bits, problems)
        self._out_bits("LAYERNORM", rbits, problems)
        src = self._sfu_region(args["src"], "LAYERNORM src", problems)
        shape = (src.rows, src.cols) if src is not None else (None, None)
        dest = self._sfu_region(args["dest"], "LAYERNORM dest", problems, *shape,
                                out_bits=bits)
        res = self._sfu_region(args["res"], "LAYERNORM res", problems, *shape, out_bits=rbits)
        if args["shift"] > SFU_LN_MAX_SHIFT:
            problems.append((_ILL, f"LAYERNORM shift {args['shift']} > {SFU_LN_MAX_SHIFT}"))
        if dest is not None and res is not None and dest.mem != res.mem:
            problems.append((_ILL, f"LAYERNORM: dest (tile {dest.mem}) and res (tile "
                                   f"{res.mem}) must be on one memory tile (its ack of the "
                                   "last packet covers both)"))
        limit = min(st.p["max_row"], st.p["channels"])
        if src is not None and src.cols > limit:
            problems.append((_ILL, f"LAYERNORM: rows of {src.cols}, longer than max_row and "
                                   f"channels allow ({limit})"))
        self._check(problems)
        if self.hazards:
            hit = _overlap(dest.spans(), res.spans())
            if hit:
                raise HazardError(f"LAYERNORM {id}: its two outputs overlap", id, id)
        self._issue(id, tile.index, src.spans(), _union([dest.spans(), res.spans()]))
        stored = read_tensor(self.mem[src.mem], src, True)
        x = _wrap(stored, SFU_LN_IN_BITS, True)
        if (x != stored).any():
            self._unit_error(id, st, SFU_RANGE, f"LAYERNORM: inputs outside {SFU_LN_IN_BITS} "
                                                "signed bits, taken truncated")
        n, t = src.cols, st.tables
        bias = np.asarray([int(v) for v in t[SfuTable.LN_BIAS][:n]], dtype=np.int64)
        k = LayerNormConsts(args["shift"], bias, t[SfuTable.LN_SIGN][:n],
                            t[SfuTable.LN_OUT_M][:n], t[SfuTable.LN_OUT_E][:n], bits)
        try:
            core = layernorm_core(x, k)
        except ValueError as exc:
            st.flags |= SFU_RANGE
            self._report(id, [(AccelError.UNIT, f"LAYERNORM: {exc}; nothing written")])
            return
        self._write(id, tile, dest, requantize(core, k.m, k.e, bits))
        self._write(id, tile, res, requantize(core, t[SfuTable.LN_RES_M][:n],
                                              t[SfuTable.LN_RES_E][:n], rbits))


def run_program(desc: Description, memories: dict[int, bytes] | None, words: Sequence[int],
                *, hazards: bool = True) -> Result:
    """Run ``words`` on ``desc`` from scratchpads ``memories`` (tile index -> initial bytes;
    missing: zeros) and return what it left (:class:`Result`); raises :class:`HazardError`
    for a racy program (unless ``hazards`` is false)."""
    interp = Interpreter(desc, memories, hazards=hazards)
    interp.execute(words)
    return interp.result()


# -- packets ------------------------------------------------------------------------------------

def encode_packet(cls: MsgClass | int, port: Port | int, owner: int, ack: bool,
                  body_words: Iterable[int]) -> list[int]:
    """A packet's words: the :data:`~heterotron.hdl.contract.accel.MSG_HEADER` (``length`` the
    body's), then the body."""
    body = [int(w) for w in body_words]
    head = pack(MSG_HEADER, cls=int(cls), port=int(port), ack=int(ack), owner=owner,
                length=len(body))
    return [head, *body]


def decode_packet(words: Sequence[int]) -> tuple[dict[str, int], list[int]]:
    """``(header fields, body)`` of one whole packet (the header in the first word's low 32
    bits); :class:`ValueError` when the words are not as many as the header says."""
    if not words:
        raise ValueError("an empty packet")
    header = unpack(MSG_HEADER, int(words[0]) & _WORD_MASK)
    if len(words) != 1 + header["length"]:
        raise ValueError(f"header says {header['length']} words follow, {len(words) - 1} do")
    return header, [int(w) for w in words[1:]]


def split_data(id: int, dest_addr: int, payload: bytes, word_bytes: int, max_packet: int,
               port: Port | int, owner: int, ack_last: bool) -> list[list[int]]:
    """The DATA packets a sender emits for ``payload`` to word-aligned ``dest_addr``: each a
    header, a :data:`~heterotron.hdl.contract.accel.DATA_INFO` beat (``id``, the packet's
    bytes), the address beat (``dest_addr`` plus the packet's offset for ``Port.MEM``, else
    0) and at most ``max_packet`` data beats of ``word_bytes`` bytes (little-endian; the last
    one zero-padded); only the last packet asks for an acknowledgement, when ``ack_last``."""
    if dest_addr % word_bytes:
        raise ValueError(f"dest_addr {dest_addr} is not {word_bytes}-byte aligned")
    if not payload:
        raise ValueError("nothing to send")
    chunk = max_packet * word_bytes
    packets = []
    for off in range(0, len(payload), chunk):
        part = bytes(payload[off:off + chunk])
        beats = [int.from_bytes(part[i:i + word_bytes], "little")
                 for i in range(0, len(part), word_bytes)]
        info = pack(DATA_INFO, id=id, nbytes=len(part))
        addr = dest_addr + off if int(port) == Port.MEM else 0
        last = off + chunk >= len(payload)
        packets.append(encode_packet(MsgClass.DATA, port, owner, ack_last and last,
                                     [info, addr, *beats]))
    return packets


def join_data(packets: Iterable[Sequence[int]], word_bytes: int) -> tuple[int, int, bytes]:
    """``(id, first address, payload)`` of DATA packets :func:`split_data` made (a monitor's
    inverse); :class:`ValueError` when they are not one contiguous transfer."""
    id = addr = None
    payload = bytearray()
    for words in packets:
        header, body = decode_packet(words)
        info = unpack(DATA_INFO, body[0] & _WORD_MASK)
        beats = body[2:]
        if header["cls"] != MsgClass.DATA or len(beats) != -(-info["nbytes"] // word_bytes):
            raise ValueError(f"not a DATA packet of {info['nbytes']} bytes: {header}")
        if id is None:
            id, addr = info["id"], body[1]
        elif info["id"] != id or (header["port"] == Port.MEM
                                  and body[1] != addr + len(payload)):
            raise ValueError("packets of different transfers")
        data = b"".join(int(b).to_bytes(word_bytes, "little") for b in beats)
        payload += data[:info["nbytes"]]
    if id is None:
        raise ValueError("no packets")
    return id, addr, bytes(payload)


# -- random programs ----------------------------------------------------------------------------

@dataclass
class _Tensor:
    region: Region
    values: np.ndarray  # as written (signed or unsigned per ``signed``)
    signed: bool
    producer: tuple[int, int] | None = None  # (tile, id) of the instruction that wrote it


@dataclass
class _Gen:
    desc: Description
    rng: np.random.Generator
    prog: Program
    mems: dict[int, bytearray]
    max_dim: int
    tensors: list[_Tensor] = field(default_factory=list)
    inflight: dict[int, int] = field(default_factory=dict)  # tile -> id of its last instruction
    scales: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def emitted(self, tile: int, id: int) -> None:
        self.inflight[tile] = id

    def settle(self, t: _Tensor, reader: int) -> None:
        """WAIT, if ``t``'s producer on another tile than ``reader`` may still be running."""
        if t.producer is None:
            return
        ptile, pid = t.producer
        if ptile != reader and self.inflight.get(ptile) == pid:
            self.wait_for(ptile)

    def wait_for(self, ptile: int) -> None:
        if self.rng.random() < 0.3:
            self.prog.wait()
            self.inflight.clear()
        else:
            others = [i for i in self.inflight if i != ptile and self.rng.random() < 0.3]
            self.prog.wait(ptile, *others)
            for i in (ptile, *others):
                self.inflight.pop(i, None)

    def memory(self, nbytes: int) -> int:
        fits = [t.index for t in self.desc.of_kind(TileKind.MEMORY)
                if self.prog.free_bytes(t) >= nbytes]
        if not fits:
            raise ValueError("random_program: the scratchpads are full (fewer operations or "
                             "more kbytes)")
        return int(self.rng.choice(fits))

    def alloc(self, rows: int, cols: int, ebytes: int) -> Region:
        wb = self.desc.word_bytes
        need = rows * -(-cols * ebytes // wb) * wb
        return self.prog.alloc(self.memory(need), rows, cols, ebytes)

    def fresh(self, rows: int, cols: int, width: int, signed: bool,
              limit: int | None = None) -> _Tensor:
        lo, hi = operand_range(width, signed)
        if limit is not None:
            lo, hi = max(lo, -limit), min(hi, limit)
        values = self.rng.integers(lo, hi + 1, (rows, cols))
        region = self.alloc(rows, cols, elem_bytes(width))
        write_tensor(self.mems[region.mem], region, values)
        t = _Tensor(region, values, signed)
        self.tensors.append(t)
        return t


def _as_operand(t: _Tensor, width: int, signed: bool) -> np.ndarray | None:
    """``t``'s elements as a ``width``-bit operand reads them, or ``None`` if one is out of
    range (a chained operand must not raise ``RANGE``)."""
    bits = 8 * t.region.ebytes
    u = t.values.astype(np.int64) & ((1 << bits) - 1)
    v = u - (((u >> (bits - 1)) & 1) << bits) if signed else u
    lo, hi = operand_range(width, signed)
    return v if v.size and lo <= v.min() and v.max() <= hi else None


def _pick_chain(g: _Gen, width: int, signed: bool, fits) -> tuple[_Tensor, np.ndarray] | None:
    """A recent tensor usable as an operand (``fits(rows, cols)``), most recent likeliest."""
    eb = elem_bytes(width)
    cands = []
    for t in g.tensors:
        if t.region.ebytes == eb and fits(t.region.rows, t.region.cols):
            v = _as_operand(t, width, signed)
            if v is not None:
                cands.append((t, v))
    if not cands:
        return None
    w = np.arange(1, len(cands) + 1, dtype=float) ** 2
    return cands[int(g.rng.choice(len(cands), p=w / w.sum()))]


def _logical(rows: int, cols: int, trans: bool) -> tuple[int, int]:
    return (cols, rows) if trans else (rows, cols)


def _fits(shape: tuple[int, int], limit: tuple[int, int]) -> bool:
    return shape[0] <= limit[0] and shape[1] <= limit[1]


def _gemm_op(g: _Gen, sa: Tile) -> None:
    p, rng, prog = sa_params(sa), g.rng, g.prog
    lim = {k: min(g.max_dim, p[k]) for k in ("max_m", "max_k", "max_n")}
    s = sa.index
    # A: chained (a previous tensor that fits), else fresh; stored transposed or not.
    trans_a = bool(rng.random() < 0.4)
    chain = None
    if rng.random() < 0.6:
        chain = _pick_chain(g, p["a_width"], p["a_signed"], lambda r, c: _fits(
            _logical(r, c, trans_a), (lim["max_m"], lim["max_k"])))
    if chain is None:
        m, k = int(rng.integers(1, lim["max_m"] + 1)), int(rng.integers(1, lim["max_k"] + 1))
        ta = g.fresh(*_logical(m, k, trans_a), p["a_width"], p["a_signed"])
        a_stored = ta.values
    else:
        ta, a_stored = chain
    a = a_stored.T if trans_a else a_stored
    m, k = a.shape
    trans_b = bool(rng.random() < 0.4)
    chain = None
    if rng.random() < 0.2:
        chain = _pick_chain(g, p["b_width"], p["b_signed"], lambda r, c: _fits(
            _logical(r, c, trans_b), (k, lim["max_n"])) and _logical(r, c, trans_b)[0] == k)
    if chain is None:
        n = int(rng.integers(1, lim["max_n"] + 1))
        tb = g.fresh(*_logical(k, n, trans_b), p["b_width"], p["b_signed"])
        b_stored = tb.values
    else:
        tb, b_stored = chain
    b = b_stored.T if trans_b else b_stored
    n = b.shape[1]
    use_bias = bool(rng.random() < 0.5)
    if use_bias:
        tbias = g.fresh(1, n, p["bias_width"], True, limit=4096)
    for t, port, tr in ((ta, Port.A, trans_a), (tb, Port.B, trans_b),
                        *(((tbias, Port.BIAS, False),) if use_bias else ())):
        g.settle(t, s)
        g.emitted(s, prog.load(s, port, t.region, tr))
    c = a.astype(np.int64) @ b.astype(np.int64)
    if use_bias:
        c = c + tbias.values[0][None, :]
    if p["requant"]:
        cols = p["cols"]
        if s not in g.scales:
            g.scales[s] = (np.zeros(cols, np.int64), np.zeros(cols, np.int64))
            lanes = range(cols)
        else:
            lanes = [j for j in range(cols) if rng.random() < 0.2]
        sm, se = g.scales[s]
        for j in lanes:
            # Ratios m / 2^e near 2^-8 keep most results of small GEMMs off the rails.
            se[j] = int(rng.integers(8, 21))
            sm[j] = int(rng.integers(0, 1 << (se[j] - 6)))
            g.emitted(s, prog.scale(s, j, int(sm[j]), int(se[j])))
        lane = np.arange(n) % cols
        c = requantize(c, sm[lane][None, :], se[lane][None, :], p["out_width"])
        out_w = p["out_width"]
    else:
        out_w = p["acc_width"]
    dest = g.alloc(m, n, elem_bytes(out_w))
    id = prog.run(s, dest, use_bias)
    g.emitted(s, id)
    g.tensors.append(_Tensor(dest, c, True, (s, id)))
    prog.expected.append(Expect(id, dest, c, True))


def _copy_op(g: _Gen) -> None:
    rng, prog, wb = g.rng, g.prog, g.desc.word_bytes
    t = g.tensors[int(rng.integers(len(g.tensors)))]
    r = t.region
    # A slice: rows r0.., columns c0.. with c0 on a word (rows must start on words).
    per_word = wb // r.ebytes
    r0 = int(rng.integers(r.rows))
    c0 = int(rng.integers(-(-r.cols // per_word))) * per_word if rng.random() < 0.5 else 0
    rows = int(rng.integers(1, r.rows - r0 + 1))
    cols = int(rng.integers(1, r.cols - c0 + 1))
    src = Region(r.mem, r.row_start(r0) + c0 * r.ebytes, rows, cols, r.stride, r.ebytes)
    g.settle(t, r.mem)
    dest = g.alloc(rows, cols, r.ebytes)
    id = prog.copy(r.mem, src, dest.mem, dest.addr)
    g.emitted(r.mem, id)
    values = t.values[r0:r0 + rows, c0:c0 + cols]
    g.tensors.append(_Tensor(dest, values, t.signed, (r.mem, id)))
    prog.expected.append(Expect(id, dest, values, t.signed))


def random_program(desc: Description, rng: np.random.Generator, n_ops: int, *,
                   max_dim: int = 16) -> tuple[Program, dict[int, bytes]]:
    """A random hazard-free program of ``n_ops`` operations and the scratchpads it starts from.

    Operations are GEMMs (``LOAD``s, ``SCALE``s on requantizing tiles - every lane before the
    tile's first ``RUN``, ``e`` in [8, 20], ``m < 2^(e - 6)`` - and a ``RUN``) on random SA
    tiles, with M, K, N up to ``max_dim`` and the tiles' maxima, random transposes and
    biases, whose operands are often earlier results (chains); ``COPY``s of random slices of
    tensors between memory tiles; a few ``NOP``s and ``WAIT``s. ``WAIT``s come where a reader
    would race the producer of its operand, so several tiles run at once. Scratchpads hold
    random bytes, operands random values in their ranges. Each ``RUN`` and ``COPY`` appends to
    ``program.expected`` what it must leave (computed here with plain NumPy).
    """
    sas = desc.of_kind(TileKind.SA)
    if not sas:
        raise ValueError("random_program needs an SA tile")
    mems = {t.index: bytearray(rng.integers(0, 256, _mem_bytes(desc, t.index),
                                            dtype=np.uint8).tobytes())
            for t in desc.of_kind(TileKind.MEMORY)}
    g = _Gen(desc, rng, Program(desc), mems, max_dim)
    for _ in range(n_ops):
        x = rng.random()
        if x < 0.25 and g.tensors:
            _copy_op(g)
        elif x < 0.3:
            if rng.random() < 0.5:
                g.prog.nop()
            else:
                g.wait_for(int(rng.choice([t.index for t in desc.tiles
                                           if t.kind != TileKind.CONTROL])))
        else:
            _gemm_op(g, sas[int(rng.integers(len(sas)))])
    return g.prog, {i: bytes(m) for i, m in mems.items()}

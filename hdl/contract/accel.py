"""The accelerator's contract: its description, message classes and planes, packet and
instruction encodings, registers and memory map.

Written once, here, and imported by the RTL (as ``data.StructLayout`` members), the golden
program interpreter and builder, the testbench and the host driver (through the generated
sidecar, :func:`sidecar`). ``docs/isa.md`` explains it for people.

**Description.** An ``[accelerator]`` table: the mesh (``nx, ny, nz``), ``flit_width`` (the
data plane's width and the scratchpad word), ``buffer_depth``, ``max_packet``, the mapping of
message classes onto physical planes (``planes``) and a list of placed tiles
(``[[accelerator.tile]]``: ``kind``, ``at = [x, y, z]`` and the kind's own parameters, for an
``sa`` tile the :class:`~heterotron.hdl.gemm.GemmEngine` parameters). :func:`parse_description`
checks it and reports every problem, one line each.

**Message classes** (:class:`MsgClass`) and what each endpoint does with them:

=======  ==============================  =====================================================
class    from -> to                      sunk by
=======  ==============================  =====================================================
CMD      control -> any tile             the tile's instruction register; the control tile has
                                         at most one instruction outstanding per tile (a
                                         credit), so there is always room
REQ      a tile -> a memory tile         the memory's read engine, which answers with DATA
DATA     memory -> tile (operands,       memory: its write port, which has priority over reads
         host reads); tile -> memory     and waits on nothing but DONE; a tile: only data it
         (results, host writes)          asked for, into a unit already waiting for it; the
                                         control tile: host reads into a buffer they fit
DONE     any tile -> control             the control tile, always (a register per tile)
=======  ==============================  =====================================================

So REQ waits on DATA (a request is finished by sending data), DATA waits on DONE (a memory
acknowledges the last write of an instruction), DONE waits on nothing. Classes that share a
plane wait on each other's traffic, so the planes must keep this chain acyclic: the default
puts CMD and REQ on plane 0, DATA on plane 1, DONE on plane 2 (OpenPiton's three networks).
:func:`plane_problems` refuses a mapping with a cycle, and one that puts CMD or DONE behind
bulk DATA. Within a plane, dimension-order routing has no cyclic channel dependency
(:meth:`~heterotron.hdl.contract.noc.Topology.check_deadlock_free`), so every packet reaches
an endpoint that sinks it: no deadlock. The argument in full is in ``docs/architecture.md``.
"""

from __future__ import annotations

import enum
import functools
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amaranth.hdl import unsigned
from amaranth.lib import data

from heterotron.hdl.contract import hostlink
from heterotron.hdl.contract.noc import MESH_PARAMS, Topology, coord_bits
from heterotron.hdl.contract.params import Param, ParamError, defaults
from heterotron.hdl.contract.pim import PIM_PARAMS, check_pim_params

__all__ = [
    "VERSION", "MAGIC", "WORD", "TileKind", "MsgClass", "DEPENDS", "DEFAULT_PLANES",
    "ACCEL_PARAMS", "TILE_PARAMS", "MAX_TILES", "Tile", "Description", "DescriptionError",
    "parse_description", "plane_problems", "sa_link_problems", "opcode", "RESERVED_CLASSES",
    "elem_bytes", "EBYTES", "MSG_HEADER", "DONE_WORD",
    "DATA_INFO", "REQ_ARGS", "REGION", "INSTR_HEAD", "Opcode", "OPCODES", "Port", "AccelError",
    "Reg", "TileReg", "SfuTable", "SFU_TABLE_WORDS", "SFU_OUT_BITS", "SFU_LN_IN_BITS",
    "SFU_LN_MAX_SHIFT",
    "SFU_GELU_IN_BITS",
    "TILE_REG_BASE", "TILE_REG_STRIDE", "MEM_WINDOW_BITS", "memory_map", "pack", "unpack",
    "words_of", "from_words", "encode_instr", "decode_instr", "sidecar",
]

#: Version of this contract (the ``VERSION`` register and ``PING``); bump on any change of an
#: encoding below.
VERSION = 2  # 2: the PiM and SFU opcodes, MSG_HEADER.unit
#: The ``ID`` register's value: ``"HTRN"``.
MAGIC = 0x4E525448
#: Bits of one instruction or control-plane word.
WORD = 32
#: Most tiles an accelerator may have (``WAIT`` names tiles in a 32-bit mask).
MAX_TILES = 32


class TileKind(enum.IntEnum):
    """Tile kinds; each owns the opcode class of the same number."""

    CONTROL = 0
    MEMORY = 1
    SA = 2
    PIM = 3
    SFU = 4
    # 5-7 are free.


#: Opcode classes reserved for tiles not yet placeable (none today; 5-7 are unassigned).
RESERVED_CLASSES: dict[int, str] = {}


class MsgClass(enum.IntEnum):
    CMD = 0
    REQ = 1
    DATA = 2
    DONE = 3


#: Which class's progress each class waits on (see the module documentation).
DEPENDS = {MsgClass.CMD: set(), MsgClass.REQ: {MsgClass.DATA}, MsgClass.DATA: {MsgClass.DONE},
           MsgClass.DONE: set()}
DEFAULT_PLANES = {"cmd": 0, "req": 0, "data": 1, "done": 2}


def _mesh_param(name: str) -> Param:
    return next(q for q in MESH_PARAMS if q.name == name)


ACCEL_PARAMS = (
    _mesh_param("nx"), _mesh_param("ny"), _mesh_param("nz"),
    Param("flit_width", int, 32, "data-plane bits per flit and scratchpad word bits (a power "
          "of two)", 32, 256),
    _mesh_param("buffer_depth"),
    Param("max_packet", int, 64, "most data beats in one packet (longer transfers are split, "
          "so no packet holds a path for long)", 1, 1024),
)

TILE_PARAMS = {
    TileKind.CONTROL: (
        Param("queue_depth", int, 256, "program queue, in 32-bit words", 16, 4096),
        Param("watchdog", int, 1 << 16, "cycles without progress before the watchdog flag",
              256, 1 << 24),
        Param("host_timeout", int, 1 << 16, "cycles a host frame may pause before it is "
              "dropped with TIMEOUT", 16, 1 << 24),
    ),
    TileKind.MEMORY: (
        Param("kbytes", int, 64, "scratchpad size in KiB", 1, 1 << (24 - 10)),
    ),
    TileKind.SA: (),  # the GemmEngine's parameters, checked by the component's own rules
    # The crossbar's parameters (the PimTile's, with their rules in check_pim_params) and the
    # socket's accumulator: the K blocks of a matmul are summed there, vector by vector.
    TileKind.PIM: PIM_PARAMS + (
        Param("max_m", int, 128, "most input vectors one MVM takes (accumulator rows)", 1,
              4096),
    ),
    TileKind.SFU: (
        Param("lanes", int, 4, "elements per cycle of every unit", 1, 16),
        Param("max_row", int, 512, "longest row (LayerNorm: the hidden size; Softmax: the "
              "sequence length)", 1, 1024),
        Param("channels", int, 1536, "entries of each per-channel table (the widest row a "
              "per-channel requantisation takes)", 1, 4096),
        Param("variant", str, "ibert", "the Softmax unit's reciprocal",
              choices=("ibert", "divfree")),
    ),
}

#: Widest output an SFU operation writes (``out_bits``), per operation (the units' limits:
#: Softmax 16 unsigned, GELU and LayerNorm 24, the requantizer 32).
SFU_OUT_BITS = {"SOFTMAX": 16, "GELU": 24, "LAYERNORM": 24, "REQUANT": 32}
#: Largest LayerNorm deviation pre-shift (``LAYERNORM shift``; the unit's field).
SFU_LN_MAX_SHIFT = 15
#: Widest LayerNorm input (the unit's ``in_width``), and widest GELU input.
SFU_LN_IN_BITS = 24
SFU_GELU_IN_BITS = 24


class SfuTable(enum.IntEnum):
    """The SFU tile's per-channel tables (``TABLE which``), ``channels`` entries each; a
    ``LN_BIAS`` entry is two words (low, then high: a signed 64-bit value), the rest one."""

    RQ_BIAS = 0  #: REQUANT: added to the input before scaling (signed 32-bit)
    RQ_M = 1  #: REQUANT: multiplier (below 2^31)
    RQ_E = 2  #: REQUANT: shift (0..63)
    LN_BIAS = 3  #: LayerNorm: the folded bias (signed, below 2^47 in magnitude)
    LN_SIGN = 4  #: LayerNorm: the sign of gamma (1 or -1)
    LN_OUT_M = 5  #: LayerNorm: the matmul copy's multiplier
    LN_OUT_E = 6  #: LayerNorm: the matmul copy's shift
    LN_RES_M = 7  #: LayerNorm: the residual copy's multiplier
    LN_RES_E = 8  #: LayerNorm: the residual copy's shift


#: Words per table entry.
SFU_TABLE_WORDS = {t: 2 if t == SfuTable.LN_BIAS else 1 for t in SfuTable}

#: Element container sizes in memory: code -> bytes.
EBYTES = (1, 2, 4)
#: Address bits of one memory tile's window in the host's memory map.
MEM_WINDOW_BITS = 24


def elem_bytes(width: int) -> int | None:
    """The smallest container (1, 2 or 4 bytes) holding a ``width``-bit element, or ``None``."""
    return next((b for b in EBYTES if 8 * b >= width), None)


class DescriptionError(ParamError):
    """An accelerator description has problems; ``problems`` lists them, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("accelerator description has " + (
            f"{len(problems)} problems:\n  " if len(problems) > 1 else "a problem: ")
            + "\n  ".join(problems))


@dataclass(frozen=True)
class Tile:
    index: int
    kind: TileKind
    at: tuple[int, int, int]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind.name.lower()}{self.index}"


@dataclass(frozen=True)
class Description:
    """A checked accelerator description (build one with :func:`parse_description`)."""

    params: dict[str, Any]
    planes: dict[str, int]
    tiles: tuple[Tile, ...]

    @property
    def topology(self) -> Topology:
        p = self.params
        return Topology(p["nx"], p["ny"], p["nz"])

    @property
    def word_bytes(self) -> int:
        return self.params["flit_width"] // 8

    def of_kind(self, kind: TileKind) -> list[Tile]:
        return [t for t in self.tiles if t.kind == kind]

    @property
    def control(self) -> Tile:
        return self.of_kind(TileKind.CONTROL)[0]

    def node(self, tile: Tile) -> int:
        return self.topology.index(tile.at)

    @property
    def n_planes(self) -> int:
        return max(self.planes.values()) + 1

    def table(self) -> dict:
        """The description as an ``[accelerator]`` table again (defaults filled in), so it can
        travel as JSON and be checked once more on the other side."""
        return {**self.params, "planes": dict(self.planes),
                "tile": [{"kind": t.kind.name.lower(), "at": list(t.at), **t.params}
                         for t in self.tiles]}

    def canonical(self) -> dict:
        return {"params": self.params, "planes": self.planes,
                "tiles": [{"kind": t.kind.name.lower(), "at": list(t.at), **t.params}
                          for t in self.tiles]}

    @property
    def config_hash(self) -> int:
        """CRC-32 of the canonical description (the ``CONFIG_HASH`` register): the host
        driver checks that the device runs the description its sidecar came from."""
        return zlib.crc32(json.dumps(self.canonical(), sort_keys=True).encode())


def plane_problems(planes: dict[str, int]) -> list[str]:
    """Why a mapping of message classes onto planes can deadlock or lets control queue behind
    bulk data (empty when it is sound)."""
    problems = []
    names = {c.name.lower(): c for c in MsgClass}
    for key in planes:
        if key not in names:
            problems.append(f"planes: unknown message class {key!r} (known: "
                            f"{', '.join(names)})")
    missing = [n for n in names if n not in planes]
    if missing:
        problems.append(f"planes: no plane for {', '.join(missing)}")
    for key, plane in planes.items():
        if isinstance(plane, bool) or not isinstance(plane, int) or not 0 <= plane <= 3:
            problems.append(f"planes.{key} must be a plane number in [0, 3], not {plane!r}")
    if problems:
        return problems
    plane_of = {names[k]: v for k, v in planes.items()}
    # Plane a waits on plane b when a class on a waits on a class on b.
    waits: dict[int, set[int]] = {}
    for cls, deps in DEPENDS.items():
        for dep in deps:
            if plane_of[cls] == plane_of[dep]:
                problems.append(
                    f"planes: {cls.name.lower()} and {dep.name.lower()} share plane "
                    f"{plane_of[cls]}, but {cls.name.lower()} waits on {dep.name.lower()} (a "
                    f"blocked {cls.name.lower()} packet could hold up the {dep.name.lower()} "
                    "it waits for): put them on different planes")
            else:
                waits.setdefault(plane_of[cls], set()).add(plane_of[dep])
    for quiet in (MsgClass.CMD, MsgClass.DONE):
        if plane_of[quiet] == plane_of[MsgClass.DATA]:
            problems.append(f"planes: {quiet.name.lower()} shares plane "
                            f"{plane_of[quiet]} with data: control must not queue behind "
                            "bulk data")

    def reach(a: int, seen: set[int]) -> bool:
        return any(b == start or (b not in seen and reach(b, seen | {b}))
                   for b in waits.get(a, ()))
    for start in sorted(waits):
        if reach(start, {start}):
            problems.append(f"planes: plane {start} waits on itself through the classes "
                            "mapped onto the planes (a cycle of dependencies)")
            break
    used = sorted(set(planes.values()))
    if used != list(range(len(used))):
        problems.append(f"planes: use planes 0 .. n - 1 without gaps, not {used}")
    return problems


UnitCheck = Callable[[dict[str, Any]], dict[str, Any]]


def _check_params(params: tuple[Param, ...], given: dict, where: str) -> tuple[dict, list[str]]:
    known = {q.name for q in params}
    problems = [f"{where}: unknown parameter {k!r}" + (
        f" (known: {', '.join(sorted(known))})" if known else " (it takes none)")
        for k in given if k not in known]
    values = defaults(params, {k: v for k, v in given.items() if k in known})
    for q in params:
        try:
            q.validate(values[q.name], values)
        except ParamError as exc:
            problems.append(f"{where}: {exc}")
    return values, problems


def parse_description(table: dict[str, Any], unit_checks: dict[TileKind, UnitCheck] | None = None
                      ) -> Description:
    """Check an ``[accelerator]`` table and return the :class:`Description`.

    ``unit_checks`` maps a tile kind to the function that validates its unit's parameters and
    returns them with defaults filled in (the components' ``validate_params``; the contract
    does not know the components). Raises :class:`DescriptionError` listing every problem.
    """
    unit_checks = unit_checks or {}
    problems: list[str] = []
    if not isinstance(table, dict):
        raise DescriptionError(["[accelerator] must be a table"])
    given = {k: v for k, v in table.items() if k not in ("tile", "planes")}
    params, probs = _check_params(ACCEL_PARAMS, given, "accelerator")
    problems += probs
    fw = params["flit_width"]
    width_ok = not probs and not fw & (fw - 1)
    if not probs and not width_ok:
        problems.append(f"accelerator: flit_width must be a power of two in [32, 256], not {fw}")
    dims = (params["nx"], params["ny"], params["nz"])
    if not probs and dims[0] * dims[1] * dims[2] < 2:
        problems.append("accelerator: nx * ny * nz must be at least 2")
    planes = table.get("planes", DEFAULT_PLANES)
    if not isinstance(planes, dict):
        problems.append("accelerator: planes must be a table {cmd, req, data, done}")
        planes = DEFAULT_PLANES
    problems += plane_problems(planes)

    raw_tiles = table.get("tile", [])
    if not isinstance(raw_tiles, list) or not all(isinstance(t, dict) for t in raw_tiles):
        raise DescriptionError(problems + ["accelerator: tile must be an array of tables "
                                           "[[accelerator.tile]]"])
    if len(raw_tiles) > MAX_TILES:
        problems.append(f"accelerator: at most {MAX_TILES} tiles, not {len(raw_tiles)}")
    kinds = {k.name.lower(): k for k in TileKind}
    tiles, taken = [], {}
    for i, raw in enumerate(raw_tiles):
        where = f"tile {i}"
        kind_name = raw.get("kind")
        if kind_name not in kinds:
            extra = (f" ({kind_name!r} tiles are not placeable yet)"
                     if kind_name in RESERVED_CLASSES.values() else "")
            problems.append(f"{where}: unknown kind {kind_name!r}{extra}; known: "
                            f"{', '.join(kinds)}")
            continue
        kind = kinds[kind_name]
        where = f"tile {i} ({kind_name})"
        at = raw.get("at")
        if (not isinstance(at, list) or len(at) not in (2, 3)
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in at)):
            problems.append(f"{where}: at must be [x, y] or [x, y, z] integers, not {at!r}")
            continue
        at = tuple(at) + (0,) * (3 - len(at))
        if not all(0 <= c < n for c, n in zip(at, dims, strict=True)):
            problems.append(f"{where}: at {list(at)} is outside the {dims[0]}x{dims[1]}x"
                            f"{dims[2]} mesh")
        elif at in taken:
            problems.append(f"{where}: node {list(at)} already holds tile {taken[at]}")
        else:
            taken[at] = i
        unit = {k: v for k, v in raw.items() if k not in ("kind", "at")}
        if kind in unit_checks:
            try:
                values = unit_checks[kind](unit)
            except ParamError as exc:
                problems.append(f"{where}: {exc}")
                continue
        else:
            values, probs = _check_params(TILE_PARAMS[kind], unit, where)
            problems += probs
            if kind == TileKind.PIM and not probs:
                try:
                    check_pim_params({q.name: values[q.name] for q in PIM_PARAMS})
                except ParamError as exc:
                    problems.append(f"{where}: {exc}")
        tiles.append(Tile(i, kind, at, values))
    for kind in (TileKind.CONTROL, TileKind.MEMORY):
        count = sum(t.kind == kind for t in tiles)
        if count == 0:
            problems.append(f"accelerator: no {kind.name.lower()} tile")
    if sum(t.kind == TileKind.CONTROL for t in tiles) > 1:
        problems.append("accelerator: more than one control tile (the host port has one)")
    if width_ok:  # (what a link carries is measured in its words)
        for t in tiles:
            problems += _link_problems(t, params)
    if problems:
        raise DescriptionError(problems)
    return Description(params, dict(planes), tuple(tiles))


def sa_link_problems(p: dict, flit_width: int, max_packet: int) -> list[str]:
    """What an SA tile with unit parameters ``p`` needs that ``flit_width``-bit links and
    scratchpad words, and packets of ``max_packet`` beats, cannot carry (the one statement of
    these rules: the description and :class:`~heterotron.hdl.tiles.sa.SaTile` both ask it)."""
    word = flit_width // 8
    problems = []
    for name in ("a_width", "b_width", "bias_width"):
        if elem_bytes(p[name]) is None:
            problems.append(f"{name} = {p[name]} does not fit a 32-bit memory element")
    out = p["out_width"] if p["requant"] else p["acc_width"]
    ob = elem_bytes(out)
    if ob is None:
        problems.append(f"results of {out} bits do not fit a 32-bit memory element (set "
                        "requant = true or acc_width <= 32)")
        return problems
    beat = p["cols"] * ob
    if beat % word and (beat & (beat - 1) or beat > word):
        problems.append(f"a result beat of cols x {ob} bytes = {beat} bytes must be a power of "
                        f"two below or a multiple of the {word}-byte word, so a beat never "
                        "straddles two words")
    elif -(-beat // word) > max_packet:
        problems.append(f"a result beat of {beat} bytes needs {-(-beat // word)} data beats, "
                        f"more than max_packet = {max_packet} (a result beat is one packet)")
    for name in ("max_m", "max_k", "max_n"):
        if p[name] > 0xFFFF:
            problems.append(f"{name} must fit the 16-bit region fields")
    return problems


def _link_problems(t: Tile, params: dict) -> list[str]:
    """What a tile's unit needs that the links and the scratchpad cannot carry."""
    where = f"tile {t.index} ({t.kind.name.lower()})"
    word = params["flit_width"] // 8
    problems = []
    if t.kind == TileKind.MEMORY:
        if t.params["kbytes"] * 1024 % word:
            problems.append(f"{where}: kbytes must hold whole {word}-byte words")
    if t.kind == TileKind.PIM:
        beats = -(-t.params["cols"] * 4 // word)
        if beats > params["max_packet"]:
            problems.append(f"{where}: a result row of cols = {t.params['cols']} int32 sums "
                            f"needs {beats} data beats, more than max_packet = "
                            f"{params['max_packet']} (a row is one packet)")
    if t.kind == TileKind.SA and t.params:
        problems += [f"{where}: {msg}" for msg in
                     sa_link_problems(t.params, params["flit_width"], params["max_packet"])]
    return problems


# -- layouts ------------------------------------------------------------------------------------

#: First word of every packet (after the network's routing flit): message class, tile-local
#: port, whether the receiver acknowledges with DONE when the packet is sunk, ``unit``: on a
#: packet with ``ack``, the instruction it finishes raised a unit error (the receiver's DONE
#: carries ``UNIT``; 0 otherwise), the tile that owns the instruction the packet serves, and
#: the number of words or beats that follow.
MSG_HEADER = data.StructLayout({
    "cls": unsigned(2), "port": unsigned(4), "ack": unsigned(1), "unit": unsigned(1),
    "owner": unsigned(8), "length": unsigned(16),
})


class Port(enum.IntEnum):
    """Tile-local ports a DATA packet is addressed to."""

    MEM = 0  #: a memory tile's scratchpad (the packet's second word is the byte address)
    A = 1
    B = 2
    BIAS = 3
    HOST = 4  #: the control tile's host-read buffer


#: A DONE packet's word: the finished instruction's id, its tile, and error flags
#: (:class:`AccelError`; ``UNIT`` when the tile's unit raised one of its own flags).
DONE_WORD = data.StructLayout({"id": unsigned(16), "tile": unsigned(8), "error": unsigned(8)})

#: A DATA packet's second beat (low 32 bits): the instruction it serves and the bytes it
#: carries; the third beat is the destination byte address (``Port.MEM``: in the receiving
#: scratchpad, word aligned for the first beat's lane 0; other ports: 0). Data beats follow,
#: each one scratchpad word, bytes at their lanes of the destination words.
DATA_INFO = data.StructLayout({"id": unsigned(16), "nbytes": unsigned(16)})

#: A tensor region in a memory tile: ``rows`` rows of ``cols`` elements of ``EBYTES[ebytes]``
#: bytes; row ``r`` starts at byte ``addr + r * stride * bytes``. Rows must start on word
#: boundaries. Three words.
REGION = data.StructLayout({
    "addr": unsigned(32),
    "rows": unsigned(16), "cols": unsigned(16),
    "stride": unsigned(16), "ebytes": unsigned(2), "rsv": unsigned(6), "mem": unsigned(8),
})

#: First word of every instruction.
INSTR_HEAD = data.StructLayout({"code": unsigned(5), "cls": unsigned(3), "tile": unsigned(8),
                                "id": unsigned(16)})


#: A REQ packet's words: read region ``src`` of the receiving memory tile and send it, rows
#: packed one after another (each row a whole number of words), to ``port`` of ``dest_tile``
#: at ``dest_addr`` (for ``Port.MEM``), in DATA packets of at most ``max_packet`` beats; the
#: last one asks for an acknowledgement (DONE with ``id``) when ``ack`` is set.
REQ_ARGS = data.StructLayout({
    "src": REGION, "dest_tile": unsigned(8), "port": unsigned(4), "ack": unsigned(1),
    "rsv": unsigned(3), "id": unsigned(16), "dest_addr": unsigned(32),
})


@dataclass(frozen=True)
class Opcode:
    cls: TileKind
    code: int
    name: str
    args: data.StructLayout
    doc: str

    @property
    def words(self) -> int:
        """Argument words after the head."""
        size = sum(w for _, _, w, _ in _fields(self.args))
        return -(-size // WORD)


def _args(fields: dict) -> data.StructLayout:
    layout = data.StructLayout(fields)
    assert layout.size % WORD == 0, "argument layouts fill whole words"
    return layout


OPCODES = (
    Opcode(TileKind.CONTROL, 0, "NOP", _args({}), "does nothing; retires in order"),
    Opcode(TileKind.CONTROL, 1, "WAIT", _args({"mask": unsigned(32)}),
           "waits until every tile in mask (bit i: tile i; 0: all tiles) has finished what "
           "it was given"),
    Opcode(TileKind.MEMORY, 0, "COPY", _args({
        "src": REGION, "dest_tile": unsigned(8), "rsv": unsigned(24), "dest_addr": unsigned(32),
    }), "copies region src of this memory tile, rows packed one after another, to byte "
        "dest_addr of memory tile dest_tile (word aligned)"),
    Opcode(TileKind.SA, 0, "LOAD", _args({
        "port": unsigned(2), "trans": unsigned(1), "rsv": unsigned(29), "src": REGION,
    }), "loads operand port (1: A, 2: B, 3: bias) from region src: A is rows x cols = M x K "
        "(trans: K x M), B is K x N (trans: N x K), bias is 1 x N"),
    Opcode(TileKind.SA, 1, "SCALE", _args({
        "lane": unsigned(16), "e": unsigned(8), "rsv": unsigned(8), "m": unsigned(32),
    }), "writes the requantizer's (m, e) for result lane `lane` (tiles with requant only)"),
    Opcode(TileKind.SA, 2, "RUN", _args({
        "bias": unsigned(1), "rsv": unsigned(31), "dest": REGION,
    }), "C = A B (+ bias) into region dest (rows, cols must be M, N; ebytes the result "
        "container)"),
)


# PiM tile (docs/isa.md, "PiM tile"): the crossbar holds one block of a weight matrix at a
# time; MVM sums a matmul's K blocks in the tile's accumulator and writes the rescaled sums.
OPCODES += (
    Opcode(TileKind.PIM, 0, "ADC", _args({
        "gain": unsigned(32), "offset": unsigned(32), "sigma": unsigned(16),
        "rsv": unsigned(16), "noise_seed": unsigned(32),
    }), "sets the ADC's gain (1 .. 2^(12 + enob) - 1), offset (signed, in 2^-12 LSB), noise "
        "sigma (0 without noise) and restarts every ADC's noise LFSR from noise_seed"),
    Opcode(TileKind.PIM, 1, "PROGRAM", _args({
        "fault_rate": unsigned(16), "rsv": unsigned(16), "fault_seed": unsigned(32),
        "src": REGION,
    }), "writes the crossbar from region src (N x K weights, N <= cols, K <= rows; the rest "
        "of the array 0), stuck-at faults drawn at fault_rate / 2^16 from fault_seed"),
    Opcode(TileKind.PIM, 2, "MVM", _args({
        "acc": unsigned(1), "out": unsigned(1), "rsv": unsigned(30), "src": REGION,
        "dest": REGION,
    }), "multiplies every row of src (M x K inputs) by the crossbar: the accumulator takes "
        "the sums (acc: adds them to the M rows it holds); with out, the accumulator rescaled "
        "to the exact product's scale goes to dest (M x N int32)"),
)

# SFU tile (docs/isa.md, "SFU tile"): row-wise units behind one socket, constants in the
# instruction, per-channel tables loaded from memory (SfuTable).
OPCODES += (
    Opcode(TileKind.SFU, 0, "TABLE", _args({
        "which": unsigned(4), "rsv": unsigned(28), "src": REGION,
    }), "loads per-channel table which (SfuTable) from region src (1 x n * words, 4-byte "
        "elements; entries past n keep their values)"),
    Opcode(TileKind.SFU, 1, "REQUANT", _args({
        "out_bits": unsigned(6), "bias": unsigned(1), "res": unsigned(1), "e_y": unsigned(8),
        "rsv": unsigned(16), "m_y": unsigned(32), "src": REGION, "y": REGION, "dest": REGION,
    }), "dest = requantize(src + bias[c], m[c], e[c], out_bits), plus y by (m_y, e_y) with "
        "res; c the column"),
    Opcode(TileKind.SFU, 2, "SOFTMAX", _args({
        "out_bits": unsigned(5), "rsv": unsigned(11), "valid": unsigned(16),
        "x0": unsigned(32), "b": unsigned(32), "c": unsigned(32), "src": REGION,
        "dest": REGION,
    }), "dest = softmax_int of every row of src with i-exp constants (x0, b, c), unsigned "
        "out_bits; columns from valid on are masked (0, out of the sum)"),
    Opcode(TileKind.SFU, 3, "GELU", _args({
        "out_bits": unsigned(6), "rsv": unsigned(18), "e": unsigned(8), "m": unsigned(32),
        "b": unsigned(32), "c": unsigned(32), "one": unsigned(32), "src": REGION,
        "dest": REGION,
    }), "dest = requantize(i_gelu(src; b, c, one), m, e, out_bits)"),
    Opcode(TileKind.SFU, 4, "LAYERNORM", _args({
        "shift": unsigned(6), "out_bits": unsigned(6), "res_bits": unsigned(6),
        "rsv": unsigned(14), "src": REGION, "dest": REGION, "res": REGION,
    }), "LayerNorm of every row of src (tables LN_*): dest the out copy (LN_OUT_M/E, "
        "out_bits), res the residual copy (LN_RES_M/E, res_bits), both on one memory tile"),
)


class AccelError(enum.IntFlag):
    """The control tile's sticky error flags (the ``ERROR`` register; write 1s to clear)."""

    ILLEGAL = 1  #: an unknown opcode or tile, a reserved field not zero, or a bad operand size
    ADDRESS = 2  #: a region outside its scratchpad, not word aligned, or on a non-memory tile
    UNIT = 4  #: a tile's unit raised an error (its tile status says which)
    WATCHDOG = 8  #: no instruction retired and no packet moved for ``watchdog`` cycles
    QUEUE = 16  #: a program burst did not fit the queue (refused whole)


class Reg(enum.IntEnum):
    """Control registers (host ``READ_REG``/``WRITE_REG``)."""

    ID = 0x00  #: :data:`MAGIC`
    VERSION = 0x01  #: :data:`VERSION`
    CONFIG_HASH = 0x02  #: :attr:`Description.config_hash`
    STATUS = 0x03  #: bit 0 running, bit 1 queue empty, bit 2 error (any flag)
    ERROR = 0x04  #: :class:`AccelError` flags; write 1s to clear
    RETIRED = 0x05  #: instructions retired since reset
    LAST_ID = 0x06  #: id of the last retired instruction
    QUEUE_FREE = 0x07  #: free words in the program queue
    CYCLES = 0x08  #: cycles since reset (low 32 bits)


#: Tile ``i``'s registers are at ``TILE_REG_BASE + i * TILE_REG_STRIDE + TileReg``.
TILE_REG_BASE = 0x100
TILE_REG_STRIDE = 0x10


class TileReg(enum.IntEnum):
    STATUS = 0  #: bit 0 busy; bits 8.. the unit's sticky error flags
    BUSY = 1  #: cycles busy
    STALLED = 2  #: cycles busy but waiting on the network
    ITEMS = 3  #: instructions finished
    LAST_ID = 4  #: id of the tile's last finished instruction


def memory_map(desc: Description) -> list[dict]:
    """The host's view of the scratchpads: memory tile ``j`` (in description order) at
    ``j << MEM_WINDOW_BITS``."""
    return [{"tile": t.index, "base": j << MEM_WINDOW_BITS, "bytes": t.params["kbytes"] * 1024}
            for j, t in enumerate(desc.of_kind(TileKind.MEMORY))]


# -- encoding from the layouts ----------------------------------------------------------------

@functools.cache
def _fields(layout: data.StructLayout) -> tuple:
    """``(name, offset, width, nested layout or None)`` of each field, computed once per
    layout (Amaranth recomputes widths on every access)."""
    return tuple((name, fld.offset, fld.width,
                  fld.shape if isinstance(fld.shape, data.StructLayout) else None)
                 for name, fld in layout)


def pack(layout: data.StructLayout, **values) -> int:
    """The integer of ``layout`` with the given fields (nested layouts take a dict; missing
    fields are 0); a value that does not fit its field raises :class:`ValueError`."""
    out = 0
    for name, offset, width, sub in _fields(layout):
        v = values.pop(name, 0)
        if sub is not None:
            v = pack(sub, **v) if isinstance(v, dict) else int(v)
        v = int(v)
        if not 0 <= v < 1 << width:
            raise ValueError(f"field {name} = {v} does not fit {width} bits")
        out |= v << offset
    if values:
        raise ValueError(f"unknown fields {sorted(values)}; layout has "
                         f"{[n for n, *_ in _fields(layout)]}")
    return out


def unpack(layout: data.StructLayout, value: int) -> dict:
    out = {}
    for name, offset, width, sub in _fields(layout):
        v = (value >> offset) & ((1 << width) - 1)
        out[name] = unpack(sub, v) if sub is not None else v
    return out


def words_of(value: int, n: int) -> list[int]:
    return [(value >> (WORD * i)) & 0xFFFFFFFF for i in range(n)]


def from_words(words) -> int:
    return sum(int(w) << (WORD * i) for i, w in enumerate(words))


_BY_NAME = {(op.cls, op.name): op for op in OPCODES}
_BY_CODE = {(int(op.cls), op.code): op for op in OPCODES}


def opcode(cls: TileKind, name: str) -> Opcode:
    return _BY_NAME[(cls, name)]


def encode_instr(cls: TileKind, name: str, tile: int, id: int, **args) -> list[int]:
    """An instruction's words: the head, then its arguments."""
    op = opcode(cls, name)
    head = pack(INSTR_HEAD, code=op.code, cls=int(cls), tile=tile, id=id)
    return [head, *words_of(pack(op.args, **args), op.words)]


def decode_instr(words) -> tuple[Opcode | None, dict, dict]:
    """``(opcode or None if unknown, head fields, argument fields)`` of an instruction whose
    words start at ``words[0]`` (``words`` must hold its arguments too)."""
    head = unpack(INSTR_HEAD, words[0])
    op = _BY_CODE.get((head["cls"], head["code"]))
    if op is None:
        return None, head, {}
    return op, head, unpack(op.args, from_words(words[1:1 + op.words]))


def _layout_doc(layout: data.StructLayout) -> list[dict]:
    out = []
    for name, fld in layout:
        item = {"name": name, "offset": fld.offset, "width": fld.width}
        if isinstance(fld.shape, data.StructLayout):
            item["fields"] = _layout_doc(fld.shape)
        out.append(item)
    return out


def sidecar(desc: Description) -> dict:
    """Everything the host driver needs, generated from this module and the description."""
    topo = desc.topology
    return {
        "version": VERSION, "magic": MAGIC, "config_hash": desc.config_hash,
        "description": desc.canonical(),
        "tiles": [{"index": t.index, "kind": t.kind.name.lower(), "at": list(t.at),
                   "node": topo.index(t.at)} for t in desc.tiles],
        "coord_bits": [coord_bits(n) for n in topo.dims],
        "planes": desc.planes,
        "layouts": {name: _layout_doc(lay) for name, lay in (
            ("msg_header", MSG_HEADER), ("done_word", DONE_WORD), ("data_info", DATA_INFO),
            ("req_args", REQ_ARGS), ("region", REGION),
            ("instr_head", INSTR_HEAD))},
        "opcodes": [{"class": op.cls.name.lower(), "code": op.code, "name": op.name,
                     "words": 1 + op.words, "args": _layout_doc(op.args), "doc": op.doc}
                    for op in OPCODES],
        "reserved_classes": RESERVED_CLASSES,
        "ports": {p.name.lower(): int(p) for p in Port},
        "errors": {f.name.lower(): int(f) for f in AccelError},
        "registers": {r.name.lower(): int(r) for r in Reg},
        "tile_registers": {"base": TILE_REG_BASE, "stride": TILE_REG_STRIDE,
                           **{r.name.lower(): int(r) for r in TileReg}},
        "memory_map": memory_map(desc),
        "ebytes": list(EBYTES),
        "hostlink": {"flag": hostlink.FLAG, "esc": hostlink.ESC, "esc_xor": hostlink.ESC_XOR,
                     "max_payload": hostlink.MAX_PAYLOAD, "crc_poly": hostlink.CRC_POLY,
                     "crc_init": hostlink.CRC_INIT,
                     "ops": {o.name.lower(): int(o) for o in hostlink.Op},
                     "status": {s.name.lower(): int(s) for s in hostlink.Status}},
    }

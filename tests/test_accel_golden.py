"""The accelerator's golden program model (``sim/golden/accel.py``): programs built with
:class:`Program` and run by the interpreter, checked against plain NumPy on random data; every
error path; races; the packet codec; and random programs."""

from __future__ import annotations

import numpy as np
import pytest

from heterotron.hdl.contract.accel import (
    DATA_INFO,
    INSTR_HEAD,
    AccelError,
    MsgClass,
    Port,
    TileKind,
    decode_instr,
    encode_instr,
    pack,
    parse_description,
    unpack,
)
from heterotron.sim.golden.accel import (
    UNIT_DIMS,
    UNIT_RANGE,
    HazardError,
    Program,
    Region,
    check_sa_params,
    decode_packet,
    encode_packet,
    join_data,
    random_program,
    read_tensor,
    run_program,
    split_data,
    to_bytes,
    write_tensor,
)
from heterotron.sim.golden.requantizer import requantize
from heterotron.sim.golden.systolic import operand_range

# -- descriptions -------------------------------------------------------------------------------

#: Every GemmEngine parameter, explicitly (the golden model assumes no defaults).
SA = dict(rows=4, cols=4, dataflow="os", a_width=8, a_signed=True, b_width=8, b_signed=True,
          acc_width=32, bias_width=24, max_k=32, max_m=32, max_n=32, requant=False,
          out_width=8)


def describe(*sas: dict, mems: int = 1, kbytes: int = 16, flit_width: int = 32):
    """Control tile 0, memory tiles 1..mems, then the SA tiles (each ``SA`` updated by its
    dict), on a 2x2 or 3x2 mesh."""
    n = 1 + mems + len(sas)
    nx = 2 if n <= 4 else 3
    at = [[i % nx, i // nx] for i in range(n)]
    tiles = [{"kind": "control", "at": at[0]}]
    tiles += [{"kind": "memory", "at": at[1 + j], "kbytes": kbytes} for j in range(mems)]
    tiles += [{"kind": "sa", "at": at[1 + mems + j], **{**SA, **p}} for j, p in enumerate(sas)]
    return parse_description({"nx": nx, "ny": 2, "flit_width": flit_width, "tile": tiles},
                             {TileKind.SA: check_sa_params})


def put(prog: Program, mems: dict, mem: int, stored: np.ndarray, ebytes: int) -> Region:
    """Allocate a region for ``stored`` and write it into the initial scratchpad."""
    region = prog.alloc(mem, *stored.shape, ebytes)
    buf = mems.setdefault(mem, bytearray(prog.desc.tiles[mem].params["kbytes"] * 1024))
    write_tensor(buf, region, stored)
    return region


def lanes_of(n: int, cols: int) -> np.ndarray:
    return np.arange(n) % cols


def wrap(x: np.ndarray, width: int, signed: bool) -> np.ndarray:
    u = np.asarray(x, dtype=np.int64) % (1 << width)
    return np.where(signed & (u >= 1 << (width - 1)), u - (1 << width), u)


# -- tensors and the builder ---------------------------------------------------------------------

def test_tensor_bytes_round_trip():
    rng = np.random.default_rng(1)
    mem = bytearray(rng.integers(0, 256, 256, dtype=np.uint8).tobytes())
    before = bytes(mem)
    region = Region(1, 16, 3, 5, 8, 2)  # rows 16 bytes apart, 10 bytes each
    x = rng.integers(-2**15, 2**15, (3, 5))
    write_tensor(mem, region, x)
    assert (read_tensor(mem, region) == x).all()
    assert (read_tensor(mem, region, signed=False) == x % 2**16).all()
    # Little-endian two's complement at the row starts; the bytes between rows untouched.
    assert mem[16:18] == int(x[0, 0] % 2**16).to_bytes(2, "little")
    assert mem[32 + 2:32 + 4] == int(x[1, 1] % 2**16).to_bytes(2, "little")
    assert mem[26:32] == before[26:32] and mem[:16] == before[:16]
    assert to_bytes(np.array([[-1, 255]]), 1) == b"\xff\xff"
    with pytest.raises(ValueError):
        to_bytes(np.array([256]), 1)


def test_alloc_gives_word_aligned_disjoint_regions():
    desc = describe(SA, mems=2, flit_width=64)
    prog = Program(desc)
    regions = [prog.alloc(1 + i % 2, 3, c, eb) for i, (c, eb) in
               enumerate([(3, 1), (5, 2), (9, 4), (1, 1), (8, 1)])]
    for r in regions:
        assert r.addr % 8 == 0 and r.stride * r.ebytes % 8 == 0 and r.stride >= r.cols
        assert r.stride * r.ebytes - r.cols * r.ebytes < 8  # no more than a word of padding
    for mem in (1, 2):
        mine = sorted((r.addr, r.addr + r.rows * r.stride * r.ebytes)
                      for r in regions if r.mem == mem)
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:], strict=False))
    with pytest.raises(ValueError):
        prog.alloc(0, 1, 1, 1)  # the control tile has no memory
    with pytest.raises(ValueError):
        prog.alloc(1, 1024, 64, 1)  # 64 KiB do not fit 16


def test_builder_ids_and_encodings():
    desc = describe(SA)
    prog = Program(desc)
    src = Region(1, 0, 2, 3, 4, 1)
    ids = [prog.nop(), prog.wait(3), prog.wait(), prog.load(3, Port.B, src, trans=True),
           prog.copy(1, src, 1, 64), prog.run(3, src, bias=True), prog.scale(3, 1, 5, 6)]
    assert ids == list(range(1, 8))
    # Decode the words independently: each instruction's head and arguments.
    pos, seen = 0, []
    while pos < len(prog.words):
        op, head, args = decode_instr(prog.words[pos:])
        seen.append((op.name, head["tile"], head["id"]))
        if op.name == "LOAD":
            assert (args["port"], args["trans"]) == (2, 1)
            assert {k: args["src"][k] for k in ("rows", "cols", "stride", "ebytes", "mem")} \
                == {"rows": 2, "cols": 3, "stride": 4, "ebytes": 0, "mem": 1}
        if op.name == "WAIT":
            assert args["mask"] in (1 << 3, 0)
        pos += 1 + op.words
    assert [s[0] for s in seen] == ["NOP", "WAIT", "WAIT", "LOAD", "COPY", "RUN", "SCALE"]
    assert [s[1] for s in seen] == [0, 0, 0, 3, 1, 3, 3]
    # Only what the fields cannot hold is refused, naming the field.
    with pytest.raises(ValueError, match="rows"):
        prog.load(3, Port.A, Region(1, 0, 70000, 1, 1, 1))
    with pytest.raises(ValueError, match="tile"):
        prog.run(300, src)
    with pytest.raises(ValueError, match="field m ="):
        prog.scale(3, 0, 1 << 32, 0)
    assert prog.load(3, Port.A, Region(9, 3, 0, 0, 0, 4)) == 8  # nonsense, but encodable


def test_ids_wrap_skipping_zero():
    prog = Program(describe(SA))
    ids = [prog.nop() for _ in range(0xFFFF + 2)]
    assert ids[0xFFFE] == 0xFFFF and ids[0xFFFF] == 1 and ids[-1] == 2 and 0 not in ids


# -- GEMMs against NumPy -------------------------------------------------------------------------

def gemm_case(params: dict, m: int, k: int, n: int, trans_a: bool, trans_b: bool,
              bias: bool, seed: int):
    """Run one GEMM through a program and return (got, expected)."""
    desc = describe(params)
    p = {**SA, **params}
    rng = np.random.default_rng(seed)
    a = rng.integers(*operand_range(p["a_width"], p["a_signed"]), (m, k), endpoint=True)
    b = rng.integers(*operand_range(p["b_width"], p["b_signed"]), (k, n), endpoint=True)
    bv = rng.integers(-5000, 5000, n)
    prog, mems = Program(desc), {}
    ra = put(prog, mems, 1, a.T if trans_a else a, 1)
    rb = put(prog, mems, 1, b.T if trans_b else b, 1)
    rbias = put(prog, mems, 1, bv[None, :], 4)
    prog.load(2, Port.A, ra, trans=trans_a)
    prog.load(2, Port.B, rb, trans=trans_b)
    if bias:
        prog.load(2, Port.BIAS, rbias)
    expected = a @ b + (bv if bias else 0)
    if p["requant"]:
        sm = rng.integers(0, 1 << 16, p["cols"])
        se = rng.integers(10, 22, p["cols"])
        for j in range(p["cols"]):
            prog.scale(2, j, int(sm[j]), int(se[j]))
        lane = lanes_of(n, p["cols"])
        expected = requantize(expected, sm[lane][None, :], se[lane][None, :], p["out_width"])
        eb = 1 if p["out_width"] <= 8 else 2 if p["out_width"] <= 16 else 4
    else:
        eb = 4
    dest = prog.alloc(1, m, n, eb)
    run_id = prog.run(2, dest, bias=bias)
    res = run_program(desc, mems, prog.words)
    assert res.error == 0 and res.errors == []
    assert res.retired == run_id and res.last_id == run_id
    assert res.writes[-1] == (run_id, 2, 1, dest)
    return read_tensor(res.memories[1], dest), expected


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_equals_numpy(dataflow, trans_a, trans_b, bias):
    seed = 8 * (dataflow == "ws") + 4 * trans_a + 2 * trans_b + bias
    got, expected = gemm_case({"dataflow": dataflow}, 7, 9, 6, trans_a, trans_b, bias, seed)
    assert (got == expected).all()


@pytest.mark.parametrize("params", [
    {"a_signed": False},
    {"b_signed": False, "cols": 2},
    {"a_signed": False, "b_signed": False, "rows": 2, "cols": 8},
    {"requant": True, "out_width": 8},
    {"requant": True, "out_width": 12, "cols": 2, "dataflow": "ws", "a_signed": False},
])
def test_gemm_signedness_and_requant(params):
    for seed, (m, k, n) in enumerate([(5, 3, 9), (1, 17, 1), (12, 8, 4)]):
        got, expected = gemm_case(params, m, k, n, seed % 2 == 0, seed == 1, seed > 0, seed)
        assert (got == expected).all(), (params, m, k, n)


def test_unsigned_operand_reads_bytes_zero_extended():
    """An unsigned A element stored as 0xF0 is 240, not -16."""
    desc = describe({"a_signed": False})
    prog, mems = Program(desc), {}
    ra = put(prog, mems, 1, np.array([[240, 1]]), 1)
    rb = put(prog, mems, 1, np.array([[1], [-2]]), 1)
    dest = prog.alloc(1, 1, 1, 4)
    prog.load(2, Port.A, ra)
    prog.load(2, Port.B, rb)
    prog.run(2, dest)
    res = run_program(desc, mems, prog.words)
    assert read_tensor(res.memories[1], dest)[0, 0] == 240 - 2


def test_chained_gemm_feeds_requantised_output_as_a():
    """C1 = rq(A B) on one tile (int8) is the A of a GEMM on the other, after a WAIT."""
    desc = describe({"requant": True}, {"dataflow": "ws", "requant": True, "cols": 2}, mems=2)
    rng = np.random.default_rng(5)
    a, b1 = rng.integers(-128, 128, (6, 10)), rng.integers(-128, 128, (10, 7))
    b2 = rng.integers(-128, 128, (7, 5))
    prog, mems = Program(desc), {}
    ra, rb1, rb2 = put(prog, mems, 1, a, 1), put(prog, mems, 1, b1, 1), put(prog, mems, 2, b2, 1)
    c1 = prog.alloc(2, 6, 7, 1)
    c2 = prog.alloc(1, 6, 5, 1)
    sm1, se1 = rng.integers(1, 1 << 12, 4), rng.integers(14, 18, 4)
    sm2, se2 = rng.integers(1, 1 << 12, 2), rng.integers(14, 18, 2)
    prog.load(3, Port.A, ra)
    prog.load(3, Port.B, rb1)
    for j in range(4):
        prog.scale(3, j, int(sm1[j]), int(se1[j]))
    prog.run(3, c1)
    prog.load(4, Port.B, rb2)  # tile 4 loads B while tile 3 runs
    for j in range(2):
        prog.scale(4, j, int(sm2[j]), int(se2[j]))
    prog.wait(3)
    prog.load(4, Port.A, c1)
    last = prog.run(4, c2)
    res = run_program(desc, mems, prog.words)
    assert res.error == 0
    l1, l2 = lanes_of(7, 4), lanes_of(5, 2)
    e1 = requantize(a @ b1, sm1[l1][None, :], se1[l1][None, :], 8)
    e2 = requantize(e1 @ b2, sm2[l2][None, :], se2[l2][None, :], 8)
    assert len(np.unique(e1)) > 5 and len(np.unique(e2)) > 3  # not all saturated
    assert (read_tensor(res.memories[2], c1) == e1).all()
    assert (read_tensor(res.memories[1], c2) == e2).all()
    assert res.last_id == last


def test_copy_head_slice_then_load():
    """COPY rows 1..4, columns 4..9 of a 6 x 13 int8 tensor (stride 16) from memory 1 to
    memory 2 (rows packed), then LOAD it as A: the product is NumPy's on the slice."""
    desc = describe(SA, mems=2)
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (6, 13))
    b = rng.integers(-128, 128, (6, 3))
    prog, mems = Program(desc), {}
    rx = put(prog, mems, 1, x, 1)
    assert rx.stride == 16
    rb = put(prog, mems, 2, b, 1)
    head = Region(1, rx.row_start(1) + 4, 4, 6, rx.stride, 1)
    dest_addr = prog.alloc(2, 4, 8, 1).addr
    copy_id = prog.copy(1, head, 2, dest_addr)
    prog.wait(1)
    packed = Region(2, dest_addr, 4, 6, 8, 1)  # 6 bytes -> 2 words per row
    prog.load(3, Port.A, packed)
    prog.load(3, Port.B, rb)
    out = prog.alloc(1, 4, 3, 4)
    prog.run(3, out)
    res = run_program(desc, mems, prog.words)
    assert res.error == 0
    assert res.writes[0] == (copy_id, 1, 2, Region(2, dest_addr, 4, 8, 8, 1))
    assert (read_tensor(res.memories[2], packed) == x[1:5, 4:10]).all()
    # Whole words travel: each row's 8 bytes from the source row start.
    for r in range(4):
        s = rx.row_start(1 + r) + 4
        assert res.memories[2][dest_addr + 8 * r:dest_addr + 8 * r + 8] == bytes(mems[1][s:s + 8])
    assert (read_tensor(res.memories[1], out) == x[1:5, 4:10] @ b).all()


# -- errors ---------------------------------------------------------------------------------------

def good_gemm(prog: Program, mems: dict, tile: int, rng, m=3, k=5, n=4):
    """Append a correct GEMM; returns (dest, expected)."""
    a, b = rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n))
    ra, rb = put(prog, mems, 1, a, 1), put(prog, mems, 1, b, 1)
    dest = prog.alloc(1, m, n, 4)
    prog.load(tile, Port.A, ra)
    prog.load(tile, Port.B, rb)
    prog.run(tile, dest)
    return dest, a @ b


def error_case(build, params=None, extra_writes=0):
    """A program of a good GEMM, the bad instructions ``build(prog, mems)`` adds (returning
    their ids), then another good GEMM; returns the result and the bad ids. Checks that the
    bad instructions retired, that the GEMMs after them are right and that nothing but the
    GEMMs wrote."""
    desc = describe(params or SA, {"requant": True}, mems=2)
    rng = np.random.default_rng(3)
    prog, mems = Program(desc), {1: bytearray(rng.integers(0, 256, 16384, dtype=np.uint8)
                                              .tobytes())}
    d1, e1 = good_gemm(prog, mems, 3, rng)
    bad = build(prog, mems)
    prog.wait()
    d2, e2 = good_gemm(prog, mems, 3, rng, 4, 6, 2)
    last = prog.nop()
    res = run_program(desc, {i: bytes(v) for i, v in mems.items()}, prog.words)
    assert res.retired == count_instructions(prog.words) and res.last_id == last
    assert (read_tensor(res.memories[1], d1) == e1).all()
    assert (read_tensor(res.memories[1], d2) == e2).all()
    assert len(res.writes) == 2 + extra_writes
    assert res.writes[0].region == d1 and res.writes[-1].region == d2
    assert [e[0] for e in res.errors] == bad
    return res, bad


def count_instructions(words) -> int:
    """Instructions in ``words``, an unknown opcode taken as one word."""
    pos = n = 0
    while pos < len(words):
        op, _, _ = decode_instr(words[pos:])
        pos += 1 + (op.words if op else 0)
        n += 1
    return n


def flags(res) -> list[AccelError]:
    return [e[1] for e in res.errors]


def test_unknown_opcode_is_illegal():
    def build(prog, mems):
        prog.raw([pack(INSTR_HEAD, cls=2, code=7, tile=3, id=900)])  # SA code 7: none
        prog.raw([pack(INSTR_HEAD, cls=5, code=0, tile=3, id=901)])  # class 5: free
        prog.raw([pack(INSTR_HEAD, cls=0, code=2, tile=0, id=902)])
        return [900, 901, 902]
    res, _ = error_case(build)
    assert flags(res) == [AccelError.ILLEGAL] * 3 and res.error == AccelError.ILLEGAL


def test_bad_tile_is_illegal():
    def build(prog, mems):
        r = prog.alloc(1, 2, 2, 1)
        ids = [prog.load(9, Port.A, r),  # no tile 9
               prog.load(1, Port.A, r),  # a memory tile
               prog.run(0, r),  # the control tile
               prog.copy(3, r, 2, 0),  # COPY on an SA tile
               prog.wait(7)]  # WAIT for a tile that does not exist
        prog.raw(encode_instr(TileKind.CONTROL, "NOP", 2, 600))  # NOP to an SA tile
        return [*ids, 600]
    res, _ = error_case(build)
    assert flags(res) == [AccelError.ILLEGAL] * 6


def test_nonzero_reserved_fields_are_illegal():
    def build(prog, mems):
        r = prog.alloc(1, 3, 5, 1)
        ids = []
        for args in ({"rsv": 1, "src": r.fields()}, {"src": {**r.fields(), "rsv": 2}}):
            ids.append(800 + len(ids))
            prog.raw(encode_instr(TileKind.SA, "LOAD", 3, ids[-1], port=1, **args))
        ids.append(802)
        prog.raw(encode_instr(TileKind.SA, "SCALE", 4, 802, lane=0, m=1, e=1, rsv=1))
        ids.append(803)
        prog.raw(encode_instr(TileKind.MEMORY, "COPY", 1, 803, src=r.fields(), dest_tile=2,
                              rsv=1 << 23))
        return ids
    res, _ = error_case(build)
    assert flags(res) == [AccelError.ILLEGAL] * 4


def test_bad_operand_sizes_are_illegal():
    def build(prog, mems):
        r = prog.alloc(1, 2, 3, 1)
        r4 = prog.alloc(1, 2, 3, 4)
        r3 = {**r.fields(), "ebytes": 3}
        ids = [prog.load(3, 0, r),  # port 0
               prog.load(3, Port.A, r4),  # 4-byte elements for an 8-bit A
               prog.load(3, Port.BIAS, r4),  # two rows of bias
               prog.load(3, Port.BIAS, Region(1, r4.addr, 1, 3, 3, 4), trans=True),
               prog.run(3, r),  # 1-byte results of a 32-bit accumulator
               prog.run(4, r4)]  # 4-byte results of an 8-bit requantizer
        prog.raw(encode_instr(TileKind.SA, "LOAD", 3, 700, port=1, src=r3))  # ebytes code 3
        return [*ids, 700]
    res, _ = error_case(build)
    assert flags(res) == [AccelError.ILLEGAL] * 7
    assert res.tile_errors[3] == 0  # refused by the tile, not the engine


def test_oversize_dims_and_missing_operands_are_refused():
    """Sizes above the engine's maxima are refused before the tile sees them (the operand
    loaded before stays); RUN without matching operands is refused by the tile (DIMS)."""
    def build(prog, mems):
        big = prog.alloc(1, 33, 2, 1)  # M = 33 > max_m = 32
        wide = prog.alloc(1, 2, 33, 1)
        small = prog.alloc(1, 2, 2, 1)
        out = prog.alloc(1, 2, 2, 4)
        bad = [prog.load(3, Port.A, big),
               prog.run(3, out)]  # no A was ever loaded
        prog.load(3, Port.B, small)
        prog.load(3, Port.A, small)
        bad += [prog.load(3, Port.A, wide, trans=True)]  # stored 2 x 33: M = 33
        prog.run(3, out)  # the refused load left the small A: this RUN works
        prog.load(3, Port.A, prog.alloc(1, 2, 3, 1))
        bad.append(prog.run(3, out))  # K 3 and 2 differ
        prog.load(3, Port.A, small)
        bad.append(prog.run(3, out, bias=True))  # no bias loaded
        prog.load(3, Port.BIAS, put(prog, mems, 1, np.arange(3)[None, :], 4))
        bad.append(prog.run(3, out, bias=True))  # bias N = 3, B's N = 2
        prog.load(3, Port.BIAS, put(prog, mems, 1, np.arange(2)[None, :], 4))
        bad.append(prog.run(3, prog.alloc(1, 2, 3, 4), bias=True))  # dest 2 x 3 for 2 x 2
        bad.append(prog.load(3, Port.BIAS, Region(1, wide.addr, 1, 33, 33, 4)))  # N > max_n
        prog.run(3, out)  # A and B are still loaded
        return bad
    res, _ = error_case(build, extra_writes=2)
    assert flags(res) == [AccelError.ILLEGAL] * 8
    assert res.tile_errors[3] == UNIT_DIMS and res.tile_errors[4] == 0


def test_scale_checks():
    def build(prog, mems):
        return [prog.scale(3, 0, 1, 1),  # tile 3 does not requantize
                prog.scale(4, 4, 1, 1),  # lane 4 of 4 columns
                prog.scale(4, 0, 1, 64),  # e above max_shift 63
                prog.scale(4, 0, 1 << 31, 1)]  # m above 31 bits
    res, _ = error_case(build)
    assert flags(res) == [AccelError.ILLEGAL] * 4


def test_bad_regions_are_address_errors():
    def build(prog, mems):
        end = 16384
        ids = [prog.load(3, Port.A, Region(1, end - 8, 2, 5, 8, 1)),  # one byte past the end
               prog.load(3, Port.A, Region(1, 2, 2, 2, 4, 1)),  # misaligned address
               prog.load(3, Port.A, Region(1, 0, 2, 2, 2, 1)),  # rows 2 bytes apart
               prog.load(3, Port.A, Region(1, 0, 2, 8, 4, 1)),  # stride below cols
               prog.load(3, Port.A, Region(3, 0, 2, 2, 4, 1)),  # an SA tile's "memory"
               prog.run(3, Region(1, 0, 0, 2, 4, 4)),  # no rows
               prog.run(3, Region(1, end, 3, 4, 4, 4)),
               prog.copy(1, Region(2, 0, 1, 4, 4, 1), 2, 64),  # src on the other memory
               prog.copy(1, Region(1, 0, 1, 4, 4, 1), 2, 66),  # dest misaligned
               prog.copy(1, Region(1, 0, 2, 4, 4, 1), 2, end - 4),  # dest past the end
               prog.copy(1, Region(1, 0, 1, 4, 4, 1), 3, 0)]  # dest not a memory
        return ids
    res, _ = error_case(build)
    assert flags(res) == [AccelError.ADDRESS] * 11
    assert res.error == AccelError.ADDRESS


def test_an_aligned_region_ending_on_the_last_byte_is_fine():
    desc = describe(SA)
    mems = {1: bytes(range(256)) * 64}
    prog = Program(desc)
    last = Region(1, 16384 - 8, 2, 3, 4, 1)  # rows at the last two words, 3 bytes each
    prog.copy(1, last, 1, 0)
    res = run_program(desc, mems, prog.words)
    assert res.error == 0 and res.memories[1][:8] == mems[1][-8:]


def test_illegal_problems_win_over_address_problems():
    """One flag per failed instruction, as the control tile checks: ILLEGAL before ADDRESS
    (an empty LOAD is an illegal size, an empty RUN destination a bad region)."""
    def build(prog, mems):
        return [prog.load(3, Port.A, Region(1, 3, 2, 2, 4, 4)),  # 4-byte A, misaligned
                prog.load(3, Port.A, Region(1, 0, 0, 2, 4, 1))]  # no rows
    res, _ = error_case(build)
    assert flags(res) == [AccelError.ILLEGAL, AccelError.ILLEGAL]


def test_truncated_tail_waits():
    """An instruction cut off by the end of the program is not executed and is no error:
    the control tile waits for the rest of its words."""
    desc = describe(SA)
    prog = Program(desc)
    prog.nop()
    words = encode_instr(TileKind.SA, "RUN", 2, 5, dest=Region(1, 0, 1, 1, 1, 4).fields())
    prog.raw(words[:-1])
    res = run_program(desc, {}, prog.words)
    assert res.retired == 1 and res.last_id == 1
    assert res.errors == [] and res.error == 0 and res.writes == []
    assert res.pending == len(words) - 1


def test_out_of_range_operands_wrap_and_raise_range():
    """b_width = 4: int8 elements of B outside [-8, 7] are loaded truncated (two's
    complement of 4 bits) and raise RANGE / UNIT; A unsigned 4-bit likewise modulo 16."""
    desc = describe({"b_width": 4, "a_width": 4, "a_signed": False})
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (5, 6))
    b = rng.integers(-128, 128, (6, 3))
    prog, mems = Program(desc), {}
    ra, rb = put(prog, mems, 1, a, 1), put(prog, mems, 1, b, 1)
    la = prog.load(2, Port.A, ra)
    lb = prog.load(2, Port.B, rb)
    dest = prog.alloc(1, 5, 3, 4)
    prog.run(2, dest)
    res = run_program(desc, mems, prog.words)
    assert res.error == AccelError.UNIT
    assert [e[:2] for e in res.errors] == [(la, AccelError.UNIT), (lb, AccelError.UNIT)]
    assert res.tile_errors[2] == UNIT_RANGE
    expected = wrap(a, 4, False) @ wrap(b, 4, True)
    assert (read_tensor(res.memories[1], dest) == expected).all()
    # In range: no flag.
    prog2, mems2 = Program(desc), {}
    ra = put(prog2, mems2, 1, a % 16, 1)
    prog2.load(2, Port.A, ra)
    assert run_program(desc, mems2, prog2.words).tile_errors[2] == 0


def test_bias_range_is_its_width():
    desc = describe({"bias_width": 12})  # held in 2 bytes
    prog, mems = Program(desc), {}
    rbias = put(prog, mems, 1, np.array([[2047, -2048, 2048, -3000]]), 2)
    ra, rb = put(prog, mems, 1, np.ones((1, 1), int), 1), put(prog, mems, 1,
                                                              np.zeros((1, 4), int), 1)
    for port, r in ((Port.A, ra), (Port.B, rb), (Port.BIAS, rbias)):
        prog.load(2, port, r)
    dest = prog.alloc(1, 1, 4, 4)
    prog.run(2, dest, bias=True)
    res = run_program(desc, mems, prog.words)
    assert res.tile_errors[2] == UNIT_RANGE
    assert read_tensor(res.memories[1], dest).tolist() == [[2047, -2048, 2048 - 4096,
                                                            -3000 + 4096]]


# -- hazards ---------------------------------------------------------------------------------------

def two_tile_program(wait: bool, *, same_tile_next: bool = False):
    """Tile 2 computes C (int8); tile 3 loads C as its B (with or without a WAIT between)."""
    desc = describe({"requant": True}, SA)
    rng = np.random.default_rng(2)
    prog, mems = Program(desc), {}
    a, b = rng.integers(-128, 128, (4, 4)), rng.integers(-128, 128, (4, 4))
    ra, rb = put(prog, mems, 1, a, 1), put(prog, mems, 1, b, 1)
    c = prog.alloc(1, 4, 4, 1)
    prog.load(2, Port.A, ra)
    prog.load(2, Port.B, rb)
    run = prog.run(2, c)
    if wait:
        prog.wait(2)
    if same_tile_next:
        prog.load(2, Port.A, ra)  # tile 2's next instruction: the RUN has finished
    load = prog.load(3, Port.B, Region(1, c.addr + 8, 2, 4, 4, 1))  # rows 2, 3 of C
    return desc, mems, prog, run, load


def test_missing_wait_is_a_race():
    desc, mems, prog, run, load = two_tile_program(wait=False)
    with pytest.raises(HazardError, match=f"instruction {load}.*instruction {run}") as exc:
        run_program(desc, mems, prog.words)
    assert (exc.value.first, exc.value.second) == (run, load)
    assert isinstance(exc.value, ValueError)
    # Not checked on request: the golden result is still defined.
    assert run_program(desc, mems, prog.words, hazards=False).error == 0


@pytest.mark.parametrize("wait,same", [(True, False), (False, True)])
def test_a_wait_or_the_tiles_next_instruction_ends_the_race(wait, same):
    desc, mems, prog, run, load = two_tile_program(wait, same_tile_next=same)
    res = run_program(desc, mems, prog.words)
    assert res.error == 0 and res.retired == load


def test_write_after_read_and_failed_instructions():
    """A COPY that overwrites what another tile's LOAD in flight reads races; a failed
    instruction neither reads nor ends its tile's instruction in flight."""
    desc = describe(SA, mems=2)
    prog, mems = Program(desc), {}
    src = put(prog, mems, 1, np.ones((4, 4), int), 1)
    load = prog.load(3, Port.A, src)
    copy = prog.copy(2, Region(2, 0, 4, 4, 4, 1), 1, src.addr)
    with pytest.raises(HazardError) as exc:
        run_program(desc, mems, prog.words)
    assert (exc.value.first, exc.value.second) == (load, copy)
    # A failed instruction on tile 3 does not end the LOAD.
    prog2, mems2 = Program(desc), {}
    src = put(prog2, mems2, 1, np.ones((4, 4), int), 1)
    prog2.load(3, Port.A, src)
    prog2.load(3, Port.A, Region(1, 1, 1, 1, 1, 1))  # misaligned: fails
    prog2.copy(2, Region(2, 0, 4, 4, 4, 1), 1, src.addr)
    with pytest.raises(HazardError):
        run_program(desc, mems2, prog2.words)
    # A failed COPY does not write: no race.
    prog3, mems3 = Program(desc), {}
    src = put(prog3, mems3, 1, np.ones((4, 4), int), 1)
    prog3.load(3, Port.A, src)
    prog3.copy(2, Region(2, 0, 4, 4, 4, 1), 1, src.addr + 1)
    assert flags(run_program(desc, mems3, prog3.words)) == [AccelError.ADDRESS]


def test_copy_onto_its_own_source_is_a_race():
    desc = describe(SA)
    prog = Program(desc)
    prog.copy(1, Region(1, 0, 4, 8, 8, 1), 1, 16)
    with pytest.raises(HazardError):
        run_program(desc, {}, prog.words)


# -- packets ---------------------------------------------------------------------------------------

def test_packet_round_trip():
    rng = np.random.default_rng(4)
    for _ in range(20):
        body = [int(w) for w in rng.integers(0, 2**32, int(rng.integers(0, 9)), dtype=np.uint64)]
        cls, port, owner, ack = (int(rng.integers(4)), int(rng.integers(5)),
                                 int(rng.integers(32)), bool(rng.integers(2)))
        words = encode_packet(cls, port, owner, ack, body)
        header, got = decode_packet(words)
        assert got == body
        assert (header["cls"], header["port"], header["owner"], header["ack"],
                header["length"]) == (cls, port, owner, ack, len(body))
        assert words[0] >> 16 == len(body)  # length is the top half of the header word
    with pytest.raises(ValueError):
        decode_packet(encode_packet(MsgClass.DONE, 0, 1, False, [5])[:-1])


@pytest.mark.parametrize("word_bytes", [4, 16])
def test_split_data_at_max_packet(word_bytes):
    rng = np.random.default_rng(word_bytes)
    payload = rng.integers(0, 256, 10 * word_bytes + 3, dtype=np.uint8).tobytes()
    packets = split_data(77, 64, payload, word_bytes, 4, Port.MEM, 3, True)
    assert len(packets) == 3
    for i, words in enumerate(packets):
        header, body = decode_packet(words)
        info = unpack(DATA_INFO, body[0])
        beats = body[2:]
        assert header["cls"] == MsgClass.DATA and header["owner"] == 3
        assert header["ack"] == (i == 2) and header["port"] == Port.MEM
        assert len(beats) == [4, 4, 3][i] and header["length"] == 2 + len(beats)
        assert info == {"id": 77, "nbytes": [4 * word_bytes, 4 * word_bytes,
                                             2 * word_bytes + 3][i]}
        assert body[1] == 64 + 4 * word_bytes * i
        chunk = payload[4 * word_bytes * i:4 * word_bytes * (i + 1)]
        assert b"".join(int(b).to_bytes(word_bytes, "little") for b in beats)[:len(chunk)] \
            == chunk
    assert join_data(packets, word_bytes) == (77, 64, payload)
    # Not to a memory: the address beat is 0; no ack asked.
    other = split_data(5, 0, payload[:word_bytes], word_bytes, 4, Port.B, 2, False)
    assert len(other) == 1 and other[0][2] == 0 and not decode_packet(other[0])[0]["ack"]
    with pytest.raises(ValueError):
        split_data(1, 2, payload, word_bytes, 4, Port.MEM, 0, False)


# -- random programs -------------------------------------------------------------------------------

RANDOM_DESC = dict(
    sas=({"requant": True}, {"dataflow": "ws", "cols": 2, "a_signed": False},
         {"requant": True, "rows": 2, "cols": 8, "out_width": 6, "max_m": 8}),
    mems=2, kbytes=64)


def instructions(words):
    pos = 0
    while pos < len(words):
        op, head, args = decode_instr(words[pos:])
        yield op, head, args, words[pos:pos + 1 + op.words]
        pos += 1 + op.words


@pytest.mark.parametrize("seed", range(6))
def test_random_programs_are_hazard_free_and_right(seed):
    desc = describe(*RANDOM_DESC["sas"], mems=RANDOM_DESC["mems"],
                    kbytes=RANDOM_DESC["kbytes"])
    rng = np.random.default_rng(seed)
    prog, mems = random_program(desc, rng, 40)
    res = run_program(desc, mems, prog.words)  # raises HazardError on a race
    assert res.error == 0 and res.errors == []
    assert [w.id for w in res.writes] == [e.id for e in prog.expected]
    ops = [(op.name, head["tile"]) for op, head, _, _ in instructions(prog.words)]
    assert res.retired == len(ops)
    for e in prog.expected:
        assert (read_tensor(res.memories[e.region.mem], e.region, e.signed) == e.values).all()
    # Independently of the generator: the last RUN is NumPy on the operands its tile loaded
    # last, read from the final memories (nothing is overwritten).
    last_run = max(i for i, (name, _) in enumerate(ops) if name == "RUN")
    decoded = list(instructions(prog.words))
    tile = decoded[last_run][1]["tile"]
    p = {**SA, **RANDOM_DESC["sas"][tile - 3]}
    loaded, sm, se = {}, np.zeros(p["cols"], np.int64), np.zeros(p["cols"], np.int64)
    for op, head, args, _ in decoded[:last_run]:
        if op.name == "SCALE" and head["tile"] == tile:
            sm[args["lane"]], se[args["lane"]] = args["m"], args["e"]
        if op.name == "LOAD" and head["tile"] == tile:
            r = Region.from_fields(args["src"])
            signed = {1: p["a_signed"], 2: p["b_signed"], 3: True}[args["port"]]
            x = read_tensor(res.memories[r.mem], r, signed)
            loaded[args["port"]] = x.T if args["trans"] else x
    _, _, run_args, _ = decoded[last_run]
    c = loaded[1] @ loaded[2] + (loaded[3][0] if run_args["bias"] else 0)
    dest = Region.from_fields(run_args["dest"])
    got = read_tensor(res.memories[dest.mem], dest)
    if p["requant"]:
        lane = lanes_of(c.shape[1], p["cols"])
        c = requantize(c, sm[lane][None, :], se[lane][None, :], p["out_width"])
    assert (got == c).all()
    # The program used every kind of instruction, several tiles at once.
    names = {name for name, _ in ops}
    assert {"LOAD", "RUN", "COPY", "WAIT"} <= names
    assert len({t for name, t in ops if name == "RUN"}) >= 2


def test_random_programs_need_their_waits():
    """Without its WAITs a random program races (for most seeds): the generator's WAITs are
    what keeps it hazard free, and tiles do run at once."""
    desc = describe(*RANDOM_DESC["sas"], mems=RANDOM_DESC["mems"],
                    kbytes=RANDOM_DESC["kbytes"])
    raced = 0
    for seed in range(8):
        prog, mems = random_program(desc, np.random.default_rng(100 + seed), 30)
        words = [w for op, _, _, ws in instructions(prog.words) if op.name != "WAIT"
                 for w in ws]
        try:
            run_program(desc, mems, words)
        except HazardError:
            raced += 1
    assert raced >= 6

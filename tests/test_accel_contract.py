"""The accelerator description and its encodings (hdl/contract/accel.py): every problem of a
description reported, one line each; the plane mapping's deadlock rule; encodings that round
trip and refuse what their fields cannot hold; the sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract import accel, hostlink
from heterotron.hdl.contract.accel import AccelError, DescriptionError, TileKind

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED = ["accel-2d", "accel-3d"]


def table(name: str) -> dict:
    return tomllib.loads((CONFIGS / f"{name}.toml").read_text())["accelerator"]


def minimal(**extra) -> dict:
    return {"nx": 2, "ny": 2, "tile": [
        {"kind": "control", "at": [0, 0]}, {"kind": "memory", "at": [1, 0]},
        {"kind": "sa", "at": [0, 1], "max_m": 16, "max_k": 16, "max_n": 16}], **extra}


def problems(t: dict) -> list[str]:
    with pytest.raises(DescriptionError) as info:
        describe(t)
    return info.value.problems


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_descriptions_are_valid(name):
    d = describe(table(name))
    kinds = {t.kind for t in d.tiles}
    assert {TileKind.CONTROL, TileKind.MEMORY, TileKind.SA} <= kinds
    # The units' defaults are filled in by their own rules.
    sa = d.of_kind(TileKind.SA)[0]
    assert {"rows", "cols", "acc_width", "dataflow", "requant"} <= set(sa.params)
    assert len({t.at for t in d.tiles}) == len(d.tiles)


def test_the_3d_description_uses_tiers():
    d = describe(table("accel-3d"))
    assert d.params["nz"] == 2 and {t.at[2] for t in d.tiles} == {0, 1}


def test_every_problem_is_reported_one_line_each():
    t = {"nx": 2, "ny": 1, "flit_width": 48, "planes": {"cmd": 0, "req": 0, "data": 1,
                                                        "done": 2},
         "tile": [
             {"kind": "sa", "at": [0, 0], "acc_width": 40},  # results too wide; no control
             {"kind": "gpu", "at": [1, 0]},
             {"kind": "memory", "at": [0, 0]},  # same node as tile 0
             {"kind": "memory", "at": [5, 0]},  # outside
             {"kind": "sa", "at": [1, 0], "rows": 0},  # the unit's own rule
         ]}
    found = problems(t)
    text = "\n".join(found)
    assert "flit_width must be a power of two" in text
    assert "tile 1: unknown kind 'gpu'" in text
    assert "tile 2 (memory): node [0, 0, 0] already holds tile 0" in text
    assert "tile 3 (memory): at [5, 0, 0] is outside the 2x1x1 mesh" in text
    assert "tile 4 (sa): rows must be" in text
    assert "no control tile" in text
    assert "tile 0 (sa): results of 40 bits do not fit" in text  # the tile's own rule
    assert all("\n" not in p for p in found)
    # Each problem once; what the links carry is not judged against a width that is itself
    # wrong (no "whole words" lines for the memories).
    assert len(found) == 7, found
    assert sum("40 bits" in p for p in found) == 1


@pytest.mark.parametrize("change, expect", [
    ({"tile": [{"kind": "control", "at": [0, 0]}]}, "no memory tile"),
    ({"tile": [{"kind": "control", "at": [0, 0]}, {"kind": "control", "at": [1, 0]},
               {"kind": "memory", "at": [0, 1]}]}, "more than one control tile"),
    ({"tile": [{"kind": "control", "at": [0, 0]}, {"kind": "memory", "at": [1, 0],
                                                   "kbytes": 0}]}, "kbytes must be"),
    ({"tile": [{"kind": "control", "at": [0, 0]}, {"kind": "memory", "at": [1, 0],
                                                   "size": 4}]}, "unknown parameter 'size'"),
    ({"tile": [{"kind": "control", "at": [0, 0]}, {"kind": "pim", "at": [1, 0],
                                                   "adc_share": 5}]},
     "tile 1 (pim): adc_share must divide"),
    ({"tile": [{"kind": "control", "at": [0]}]}, "at must be [x, y] or [x, y, z]"),
    ({"nz": 9}, "nz must be an integer in [1, 4]"),
    ({"colour": "red"}, "accelerator: unknown parameter 'colour'"),
])
def test_single_problems(change, expect):
    assert any(expect in p for p in problems(minimal(**change))), problems(minimal(**change))


def test_a_result_beat_that_would_straddle_words_is_refused():
    t = minimal()
    t["tile"][2].update(cols=3, requant=True)  # 3 one-byte lanes: offsets 0, 3, 6, ...
    assert any("result beat of cols x 1 bytes = 3 bytes" in p for p in problems(t))
    t["tile"][2].update(cols=2)  # 2 bytes: always inside one 4-byte word
    describe(t)


@pytest.mark.parametrize("planes, expect", [
    ({"cmd": 0, "req": 0, "data": 0, "done": 0}, "req and data share plane 0"),
    ({"cmd": 0, "req": 0, "data": 1, "done": 1}, "data and done share plane 1"),
    ({"cmd": 1, "req": 0, "data": 1, "done": 2}, "cmd shares plane 1 with data"),
    ({"cmd": 0, "req": 0, "data": 1, "done": 0}, "plane 0 waits on itself"),
    ({"cmd": 0, "req": 0, "data": 2, "done": 3}, "without gaps"),
    ({"cmd": 0, "req": 0, "data": 1}, "no plane for done"),
])
def test_plane_mappings_that_can_deadlock_are_refused(planes, expect):
    found = accel.plane_problems(planes)
    assert any(expect in p for p in found), found
    assert any(expect in p for p in problems(minimal(planes=planes)))


def test_sound_plane_mappings():
    assert accel.plane_problems(accel.DEFAULT_PLANES) == []
    # Four planes, one per class, is sound too.
    assert accel.plane_problems({"cmd": 0, "req": 1, "data": 2, "done": 3}) == []


def test_plane_rule_agrees_with_a_brute_force_cycle_search():
    """Every mapping of the four classes onto up to four planes: refused exactly when the
    plane graph (class dependencies lifted to planes, same-plane dependencies as self loops)
    has a cycle, or CMD/DONE share the data plane, or planes are numbered with gaps."""
    import itertools
    classes = ["cmd", "req", "data", "done"]
    deps = [("req", "data"), ("data", "done")]
    for combo in itertools.product(range(4), repeat=4):
        planes = dict(zip(classes, combo, strict=True))
        edges = {(planes[a], planes[b]) for a, b in deps}
        nodes = set(combo)
        # Cycle search by repeated removal of nodes with no outgoing edges.
        live = set(nodes)
        while True:
            sinks = {n for n in live if not any(a == n and b in live for a, b in edges)}
            if not sinks:
                break
            live -= sinks
        bad = (bool(live) or planes["cmd"] == planes["data"] or planes["done"] == planes["data"]
               or sorted(nodes) != list(range(len(nodes))))
        assert bool(accel.plane_problems(planes)) == bad, planes


def test_instructions_round_trip_and_refuse_what_does_not_fit():
    rng = np.random.default_rng(1)
    for op in accel.OPCODES:
        for _ in range(20):
            args = {}
            for name, fld in op.args:
                if name == "rsv":
                    continue
                if fld.width == accel.REGION.size:
                    args[name] = {n: int(rng.integers(0, 1 << f.width)) for n, f in accel.REGION
                                  if n != "rsv"}
                else:
                    args[name] = int(rng.integers(0, 1 << fld.width))
            tile, ident = int(rng.integers(0, 32)), int(rng.integers(0, 1 << 16))
            words = accel.encode_instr(op.cls, op.name, tile, ident, **args)
            assert len(words) == 1 + op.words and all(0 <= w < 1 << 32 for w in words)
            got, head, back = accel.decode_instr(words)
            assert got is op and head["tile"] == tile and head["id"] == ident
            for name, v in args.items():
                if isinstance(v, dict):
                    assert all(back[name][k] == x for k, x in v.items())
                else:
                    assert back[name] == v
    with pytest.raises(ValueError, match="field lane = 65536 does not fit 16 bits"):
        accel.encode_instr(TileKind.SA, "SCALE", 2, 1, lane=1 << 16)
    with pytest.raises(ValueError, match="unknown fields"):
        accel.encode_instr(TileKind.SA, "RUN", 2, 1, colour=3)
    # Unknown opcodes decode as None (the control tile's ILLEGAL).
    unknown = accel.pack(accel.INSTR_HEAD, cls=5, code=0, tile=0, id=1)  # class 5: free
    assert accel.decode_instr([unknown])[0] is None


def test_opcode_space_leaves_room():
    by_class = {}
    for op in accel.OPCODES:
        by_class.setdefault(op.cls, set()).add(op.code)
    for cls, codes in by_class.items():
        assert len(codes) == len([o for o in accel.OPCODES if o.cls == cls])  # unique
        assert max(codes) < (1 << accel.INSTR_HEAD["code"].width) // 2  # half the space free
    assert set(accel.RESERVED_CLASSES).isdisjoint(int(k) for k in TileKind)
    # Every argument layout names its spare bits rsv (checked zero by the control tile).
    for layout in (accel.REGION, accel.REQ_ARGS):
        assert "rsv" in dict(iter(layout))
    assert "unit" in dict(iter(accel.MSG_HEADER))  # its spare bit carries a unit error


def test_sidecar_is_json_and_carries_the_contract():
    d = describe(table("accel-2d"))
    side = json.loads(json.dumps(accel.sidecar(d)))
    assert side["version"] == accel.VERSION and side["config_hash"] == d.config_hash
    assert [t["kind"] for t in side["tiles"]] == [t.kind.name.lower() for t in d.tiles]
    assert {o["name"] for o in side["opcodes"]} == {o.name for o in accel.OPCODES}
    assert side["hostlink"]["ops"]["ping"] == hostlink.Op.PING
    assert side["registers"]["config_hash"] == accel.Reg.CONFIG_HASH
    mm = side["memory_map"]
    assert [m["tile"] for m in mm] == [t.index for t in d.of_kind(TileKind.MEMORY)]
    assert all(m["bytes"] <= 1 << accel.MEM_WINDOW_BITS for m in mm)
    # The hash changes with the description.
    t = table("accel-2d")
    t["tile"][1]["kbytes"] = 32
    assert describe(t).config_hash != d.config_hash


def test_crc_and_framing():
    assert hostlink.crc16(b"123456789") == 0x29B1  # the CCITT-FALSE check value
    rng = np.random.default_rng(2)
    frames = [hostlink.command_frame(int(rng.integers(1, 7)), i,
                                     bytes(rng.choice([0x7E, 0x7D, 0, 0xFF, 0x20], size=i * 3)
                                           .astype(np.uint8)))
              for i in range(8)]
    wire = b"\x7e\x7e" + b"".join(hostlink.stuff(f) for f in frames)
    assert hostlink.FLAG not in b"".join(hostlink.stuff(f)[1:-1] for f in frames)
    assert hostlink.unstuff_frames(wire) == frames
    for i, f in enumerate(frames):
        op, seq, payload = hostlink.parse_frame(f)
        assert seq == i and len(payload) == 3 * i
    bad = bytearray(frames[3])
    bad[2] ^= 0x10
    with pytest.raises(hostlink.FrameError, match="CRC"):
        hostlink.parse_frame(bytes(bad))
    with pytest.raises(hostlink.FrameError, match="shorter"):
        hostlink.parse_frame(b"\x01\x02")


def test_docs_isa_tables_match_the_contract():
    """docs/isa.md's opcode, layout, register, flag and host tables say what the contract
    defines (so the page cannot drift)."""
    import re
    text = (CONFIGS.parent / "docs" / "isa.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\d+) \| `(\w+)` \| (\d+) \|([^|]*)\|", text, re.M)
    want = [(op.cls.name.lower(), str(op.code), op.name, str(1 + op.words),
             ", ".join(f"{n}:{f.width}" for n, f in op.args)) for op in accel.OPCODES]
    assert [(c, k, n, w, a.strip()) for c, k, n, w, a in rows] == want
    for name in ("MSG_HEADER", "DATA_INFO", "DONE_WORD", "REGION", "REQ_ARGS", "INSTR_HEAD"):
        fields = ", ".join(f"{n} {f.offset}:{f.width}" for n, f in getattr(accel, name))
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| `{name}`"))
        assert fields in line.replace(" (a REGION)", ""), (name, fields, line)
    for reg in accel.Reg:
        assert re.search(rf"^\| `{reg.name}` \| {int(reg):#04x} \|", text, re.M), reg
    for flag in AccelError:
        assert re.search(rf"^\| `{flag.name}` \| {int(flag)} \|", text, re.M), flag
    for op in hostlink.Op:
        assert re.search(rf"^\| `{op.name}` \| {int(op):#04x} \|", text, re.M), op
    for st in hostlink.Status:
        assert re.search(rf"^\| `{st.name}` \| {int(st):#04x} \|", text, re.M), st
    assert f"Contract version: **{accel.VERSION}**" in text
    assert f"`{accel.MAGIC:#010X}`".replace("0X", "0x") in text

"""HostPort in Amaranth's simulator against the host-link contract (its Python functions are
the golden model): good frames through ``cmd``, ``resp`` frames out on ``tx``, every refused
frame answered by the port; parameter refusals; Verilator and Yosys lint."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import verilog

from heterotron.hdl.contract.hostlink import (
    ESC,
    FLAG,
    OVERHEAD,
    FrameError,
    Status,
    command_frame,
    crc16,
    parse_frame,
    response_frame,
    stuff,
    unstuff_frames,
)
from heterotron.hdl.contract.params import ParamError
from heterotron.hdl.hostport import HostPort, HostPortError, crc16_masks
from heterotron.sim.flows.lint import verilator_lint, yosys_check
from heterotron.tb.amaranth_sim import simulate

SMALL = {"max_payload": 64, "timeout": 64}

# -- golden expectations, from the contract's functions ---------------------------------------


def judge(frame: bytes, max_payload: int):
    """What the port owes one received (unstuffed) frame: ``None`` (empty: nothing),
    ``("cmd", bytes)`` (released on ``cmd``, CRC removed) or ``("self", status, seq)``."""
    if not frame:
        return None
    seq = frame[1] if len(frame) >= 2 else 0
    if len(frame) > max_payload + OVERHEAD:
        return ("self", Status.BAD_COMMAND, seq)
    try:
        parse_frame(frame)
    except FrameError:
        return ("self", Status.BAD_CRC, seq)
    return ("cmd", frame[:-2])


def rand_bytes(rng, n: int) -> bytes:
    """Random bytes, many of them FLAG and ESC (and their escaped forms)."""
    pool = [FLAG, ESC, FLAG ^ 0x20, ESC ^ 0x20]
    return bytes(int(rng.choice(pool)) if rng.random() < 0.4 else int(rng.integers(0, 256))
                 for _ in range(n))


def rand_command(rng, max_payload: int, lo: int = 0) -> bytes:
    head = rand_bytes(rng, 2)
    return command_frame(head[0], head[1], rand_bytes(rng, int(rng.integers(lo, max_payload + 1))))


class Item:
    """One piece of host traffic: wire bytes, each with the idle cycles before it, and what
    the port owes for it."""

    def __init__(self, kind, wire, expect, gaps=None):
        self.kind, self.wire, self.expect = kind, bytes(wire), expect
        self.gaps = list(gaps) if gaps is not None else [0] * len(self.wire)


def unstuffed_one(wire: bytes) -> bytes:
    frames = unstuff_frames(wire)
    assert len(frames) <= 1
    return frames[0] if frames else b""


def make_item(rng, kind: str, p: dict, gap_max: int) -> Item:
    mp, timeout = p["max_payload"], p["timeout"]
    if kind == "good":
        frame = rand_command(rng, mp)
        wire = stuff(frame)
    elif kind == "corrupt":
        frame = bytearray(rand_command(rng, mp))
        frame[int(rng.integers(0, len(frame)))] ^= int(rng.integers(1, 256))
        wire = stuff(bytes(frame))
    elif kind == "short":  # the tail lost, the FLAG seen
        full = stuff(rand_command(rng, mp))
        wire = full[:int(rng.integers(2, len(full) - 1))] + bytes([FLAG])
    elif kind == "concat":  # the tail and the next frame's opening FLAG lost
        a, b = stuff(rand_command(rng, mp // 2)), stuff(rand_command(rng, mp // 2))
        wire = a[:int(rng.integers(2, len(a) - 1))] + b[1:]
    elif kind == "long":
        wire = stuff(rand_command(rng, mp + 20, lo=mp + 1))
    elif kind == "empty":
        wire = bytes([FLAG] * int(rng.integers(2, 5)))
    elif kind == "timeout":
        wire = stuff(rand_command(rng, mp))
        cut = int(rng.integers(2, len(wire)))  # at least one byte of the frame before it
        gaps = [int(rng.integers(0, gap_max + 1)) if rng.random() < 0.2 else 0
                for _ in wire]
        gaps[0] = 0
        gaps[cut] = timeout + int(rng.integers(0, 20))
        head = unstuffed_one(wire[:cut] + bytes([FLAG]))
        seq = head[1] if len(head) >= 2 else 0
        # One answer for the frame; its tail after the pause is dropped up to the FLAG.
        return Item(kind, wire, ("self", Status.TIMEOUT, seq), gaps)
    else:
        raise ValueError(kind)
    gaps = [int(rng.integers(0, gap_max + 1)) if rng.random() < 0.2 else 0 for _ in wire]
    gaps[0] = int(rng.integers(0, 10))  # idle between frames: no timeout
    return Item(kind, wire, judge(unstuffed_one(wire), mp), gaps)


# -- the bench --------------------------------------------------------------------------------


def run_port(dut: HostPort, items, *, seed=0, cmd_stall=0.3, tx_stall=0.3, resp_gap=0.2,
             window=None, preamble=b"", tx_hold=0, limit=200_000):
    """Drive ``items`` into ``rx`` (after ``preamble``, bytes before any FLAG), answer every
    ``cmd`` frame on ``resp`` with ``OK``, its seq and a random payload, and collect
    everything. ``window``: at most that many frames awaiting their answer (a host's send
    window); ``tx_hold``: cycles ``tx.ready`` stays low at the start.

    Returns ``(cmds, self_answers, resp_sent, resp_seen, error)``: the frames taken from
    ``cmd``, the port's own answers ``(status, seq)`` seen on ``tx``, the responses sent on
    ``resp`` and the ``OK`` ones seen on ``tx``, and the final ``error`` flags."""
    rng = np.random.default_rng(seed)
    owed = sum(1 for it in items if it.expect is not None)
    st = {"stop": False, "sent_owed": 0, "tx_flags": 0, "done": False, "error": None}
    cmds, pending, resp_sent, tx_bytes = [], [], [], bytearray()

    async def host(ctx):
        for b in preamble:
            ctx.set(dut.rx.valid, 1)
            ctx.set(dut.rx.payload, b)
            await ctx.tick()
        for it in items:
            ctx.set(dut.rx.valid, 0)
            while window is not None and st["sent_owed"] - st["tx_flags"] // 2 >= window:
                await ctx.tick()
            for gap, b in zip(it.gaps, it.wire, strict=True):
                ctx.set(dut.rx.valid, 0)
                for _ in range(gap):
                    await ctx.tick()
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, b)
                await ctx.tick()
            st["sent_owed"] += it.expect is not None
        ctx.set(dut.rx.valid, 0)
        st["done"] = True

    async def cmd_sink(ctx):
        cur = bytearray()
        lengths = set()
        while not st["stop"]:
            ready = rng.random() >= cmd_stall
            ctx.set(dut.cmd.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.cmd.valid, dut.cmd.payload)
            if valid and ready:
                cur.append(int(payload.data))
                lengths.add(int(payload.length))
                if payload.last:
                    # Every byte of a frame carries its length (op, seq and payload).
                    assert lengths == {len(cur)}, (lengths, len(cur))
                    lengths = set()
                    cmds.append(bytes(cur))
                    pending.append(cur[1])
                    cur = bytearray()
        assert not cur, "a cmd frame without its last byte"

    async def responder(ctx):
        while not st["stop"]:
            if not pending:
                await ctx.tick()
                continue
            frame = bytes([Status.OK, pending.pop(0)]) + rand_bytes(rng, int(rng.integers(0, 9)))
            resp_sent.append(frame)
            for k, b in enumerate(frame):
                while rng.random() < resp_gap:
                    ctx.set(dut.resp.valid, 0)
                    await ctx.tick()
                ctx.set(dut.resp.valid, 1)
                ctx.set(dut.resp.payload, {"data": b, "last": k == len(frame) - 1})
                await ctx.tick().until(dut.resp.ready)
            ctx.set(dut.resp.valid, 0)

    async def tx_sink(ctx):
        cycle = 0
        while not st["stop"]:
            ready = cycle >= tx_hold and rng.random() >= tx_stall
            ctx.set(dut.tx.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            cycle += 1
            if valid and ready:
                tx_bytes.append(int(payload))
                st["tx_flags"] += int(payload) == FLAG

    async def watchdog(ctx):
        cycles = 0
        while not (st["done"] and st["tx_flags"] // 2 >= owed):
            await ctx.tick()
            cycles += 1
            assert cycles < limit, (f"stuck: {st['tx_flags'] // 2} of {owed} answers, "
                                    f"{len(cmds)} cmd frames")
        for _ in range(4 * dut.timeout + 200):  # room for anything extra to show
            await ctx.tick()
        st["error"] = ctx.get(dut.error)
        st["stop"] = True

    simulate(dut, host, cmd_sink, responder, tx_sink, watchdog)
    assert tx_bytes[:1] in (bytearray(), bytearray([FLAG]))
    assert tx_bytes.count(FLAG) % 2 == 0
    self_answers, resp_seen = [], []
    for frame in unstuff_frames(bytes(tx_bytes)):
        status, seq, payload = parse_frame(frame)  # every tx frame is whole and checked
        if status == Status.OK:
            resp_seen.append(frame[:-2])
        else:
            assert payload == b"", "the port's own answers carry no payload"
            self_answers.append((status, seq))
    return cmds, self_answers, resp_sent, resp_seen, st["error"]


def check(items, result):
    """Every frame owed exactly its expected answer, in order within each source."""
    cmds, self_answers, resp_sent, resp_seen, _ = result
    want_cmds = [e[1] for e in (it.expect for it in items) if e and e[0] == "cmd"]
    want_self = [(e[1], e[2]) for e in (it.expect for it in items) if e and e[0] == "self"]
    assert cmds == want_cmds
    assert self_answers == want_self
    assert resp_seen == resp_sent
    assert len(cmds) + len(self_answers) == sum(1 for it in items if it.expect is not None)


def flags_of(*flags) -> int:
    out = 0
    for f in flags:
        out |= int(f)
    return out


# -- the CRC the RTL builds -------------------------------------------------------------------


def test_crc_matrix_is_the_contract_crc():
    masks = crc16_masks()

    def step(crc, byte):
        return sum(((bin(crc & cm).count("1") + bin(byte & bm).count("1")) & 1) << i
                   for i, (cm, bm) in enumerate(masks))

    rng = np.random.default_rng(1)
    for data in [b"123456789", b"", bytes(range(256)), rng.bytes(100)]:
        crc = 0xFFFF
        for b in data:
            crc = step(crc, b)
        assert crc == crc16(data)


# -- good traffic -----------------------------------------------------------------------------


def test_good_frames_and_responses_random():
    """Random command frames (special bytes aplenty) with idle gaps up to timeout - 1 inside
    frames, random back-pressure on ``cmd`` and ``tx``, random ``resp`` frames."""
    rng = np.random.default_rng(11)
    dut = HostPort(**SMALL)
    items = [make_item(rng, "good", SMALL, gap_max=SMALL["timeout"] - 1) for _ in range(60)]
    # the longest pause allowed, exactly
    items[3].gaps[len(items[3].wire) // 2] = SMALL["timeout"] - 1
    result = run_port(dut, items, seed=2, window=3, preamble=b"\x01\x02" + bytes([ESC, 7]))
    check(items, result)
    assert result[4] == 0


def test_back_to_back_full_speed():
    """No gaps, no back-pressure: one byte per cycle in and out."""
    rng = np.random.default_rng(12)
    dut = HostPort(**SMALL)
    items = [make_item(rng, "good", SMALL, gap_max=0) for _ in range(30)]
    check(items, run_port(dut, items, seed=3, cmd_stall=0, tx_stall=0, resp_gap=0, window=3))


def test_latency():
    dut = HostPort(**SMALL)
    wire = stuff(command_frame(1, 2, b"abcd"))
    edges = []

    async def tb(ctx):
        ctx.set(dut.cmd.ready, 1)
        for b in wire:
            ctx.set(dut.rx.valid, 1)
            ctx.set(dut.rx.payload, b)
            await ctx.tick()
        ctx.set(dut.rx.valid, 0)
        n = 1  # the edge that took the closing FLAG
        while not ctx.get(dut.cmd.valid):
            await ctx.tick()
            n += 1
        edges.append(n)
        got = []
        while True:
            got.append(ctx.get(dut.cmd.payload.data))
            if ctx.get(dut.cmd.payload.last):
                break
            await ctx.tick()
            assert ctx.get(dut.cmd.valid), "one byte per cycle"
        assert bytes(got) == bytes([1, 2]) + b"abcd"

    simulate(dut, tb)
    assert edges == [dut.latency]


# -- refused frames ---------------------------------------------------------------------------


def _sequence(rng, kinds, p=SMALL, gap_max=8):
    """Each refused kind between good frames, so that the next good frame is seen to pass."""
    items = []
    for kind in kinds:
        items.append(make_item(rng, kind, p, gap_max))
        items.append(make_item(rng, "good", p, gap_max))
    return items


@pytest.mark.parametrize("kind, status, flag", [
    ("corrupt", Status.BAD_CRC, HostPortError.BAD_CRC),
    ("short", Status.BAD_CRC, HostPortError.BAD_CRC),
    ("concat", Status.BAD_CRC, HostPortError.BAD_CRC),
    ("long", Status.BAD_COMMAND, HostPortError.TOO_LONG),
    ("timeout", Status.TIMEOUT, HostPortError.TIMEOUT),
])
def test_refused_frame_answered_once(kind, status, flag):
    rng = np.random.default_rng(sum(kind.encode()))
    dut = HostPort(**SMALL)
    items = _sequence(rng, [kind] * 6)
    for it in items[::2]:
        assert it.expect[0] == "self" and it.expect[1] == status, it.wire.hex()
    result = run_port(dut, items, seed=5, window=3)
    check(items, result)
    assert result[4] == int(flag)


def test_refused_frame_details():
    """Hand-made cases: seq of a short frame, the flags, empty frames, a corrupted seq."""
    dut = HostPort(**SMALL)
    good = command_frame(0x02, 0x7E, b"\x7d\x7e\x00\x01")
    bad = bytearray(command_frame(0x03, 0x44, b"xyzw"))
    bad[3] ^= 0x10
    items = [
        Item("empty", bytes([FLAG, FLAG, FLAG]), None),
        Item("one byte", bytes([FLAG, 0x33, FLAG]), ("self", Status.BAD_CRC, 0)),
        Item("two bytes", bytes([FLAG, 0x33, 0x7D, 0x5E, FLAG]),
             ("self", Status.BAD_CRC, 0x7E)),
        Item("dangling ESC", bytes([FLAG, ESC, FLAG]), None),
        Item("corrupt", stuff(bytes(bad)), ("self", Status.BAD_CRC, 0x44)),
        Item("good", stuff(good), ("cmd", good[:-2])),
        Item("crc only", stuff(command_frame(9, 9)[2:]),
             ("self", Status.BAD_CRC, command_frame(9, 9)[3])),
        Item("minimal", stuff(command_frame(9, 8)), ("cmd", bytes([9, 8]))),
        Item("longest", stuff(command_frame(1, 1, bytes(64))), ("cmd", bytes([1, 1] + [0] * 64))),
        Item("one too long", stuff(command_frame(1, 5, bytes(65))),
             ("self", Status.BAD_COMMAND, 5)),
        Item("good", stuff(good), ("cmd", good[:-2])),
    ]
    for it in items:
        got = judge(unstuffed_one(it.wire), 64)
        assert got == it.expect, it.kind
    result = run_port(dut, items, seed=7, window=2)
    check(items, result)
    assert result[4] == flags_of(HostPortError.BAD_CRC, HostPortError.TOO_LONG)


def test_timeout_boundary_and_tail():
    """A pause of timeout - 1 idle cycles is fine; timeout cycles drop the frame with one
    TIMEOUT answer, and its tail after the pause is dropped unanswered up to the FLAG."""
    t = SMALL["timeout"]
    dut = HostPort(**SMALL)
    frame = command_frame(4, 0x21, bytes(range(10)))
    wire = stuff(frame)
    ok_gaps = [0] * len(wire)
    ok_gaps[6] = t - 1
    late_gaps = [0] * len(wire)
    late_gaps[6] = t
    early = [0] * len(wire)
    early[2] = 3 * t  # after op only: seq unknown
    items = [Item("pause", wire, ("cmd", frame[:-2]), ok_gaps),
             Item("timeout", wire, ("self", Status.TIMEOUT, 0x21), late_gaps),
             Item("good", wire, ("cmd", frame[:-2])),
             Item("timeout early", wire, ("self", Status.TIMEOUT, 0), early),
             Item("good", wire, ("cmd", frame[:-2]))]
    result = run_port(dut, items, seed=8, window=1)
    check(items, result)
    assert result[4] == int(HostPortError.TIMEOUT)


def test_mixed_random_traffic():
    """Everything at once, random kinds, gaps and back-pressure."""
    rng = np.random.default_rng(21)
    kinds = ["good", "good", "good", "corrupt", "short", "concat", "long", "empty", "timeout"]
    items = [make_item(rng, str(rng.choice(kinds)), SMALL, gap_max=SMALL["timeout"] - 1)
             for _ in range(70)]
    dut = HostPort(**SMALL)
    result = run_port(dut, items, seed=9, window=4)
    check(items, result)
    assert not result[4] & (HostPortError.OVERRUN | HostPortError.LOST)


# -- a full buffer and a full answer queue ----------------------------------------------------


def test_slow_consumer_back_to_back_no_frame_lost():
    """Frames back to back with no window while ``cmd`` crawls: each is either released on
    ``cmd`` (in order, intact) or answered QUEUE_FULL, never lost; two largest frames always
    fit while ``cmd`` takes nothing."""
    rng = np.random.default_rng(31)
    dut = HostPort(**SMALL)
    frames = [command_frame(1, 0, bytes(64)), command_frame(1, 1, bytes(64))]
    frames += [command_frame(int(rng.integers(0, 256)), s,
                             rand_bytes(rng, int(rng.integers(8, 65)))) for s in range(2, 40)]
    items = [Item("good", stuff(f), ("cmd", f[:-2])) for f in frames]
    cmds, self_answers, resp_sent, resp_seen, error = run_port(
        dut, items, seed=10, cmd_stall=0.97, tx_stall=0.0, resp_gap=0.0, limit=400_000)
    assert resp_seen == resp_sent
    refused = [seq for status, seq in self_answers]
    assert all(status == Status.QUEUE_FULL for status, _ in self_answers)
    assert refused, "the flood must have filled the buffer"
    assert cmds[:2] == [f[:-2] for f in frames[:2]]
    # each frame exactly once, as a cmd frame or refused; cmd frames in order and intact
    assert sorted([c[1] for c in cmds] + refused) == list(range(len(frames)))
    assert cmds == [f[:-2] for f in frames if f[1] not in refused]
    assert error == int(HostPortError.OVERRUN)


def test_answer_queue_overflow_raises_lost():
    """With ``tx`` stalled, the port keeps ANSWERS answers; the ones after are dropped and
    LOST is raised."""
    dut = HostPort(**SMALL)
    n = dut.ANSWERS + 4
    items = [Item("bad", bytes([FLAG, 0x10, s, FLAG]), ("self", Status.BAD_CRC, s))
             for s in range(n)]
    expect_kept = items[:dut.ANSWERS]
    tail = [Item("good", stuff(command_frame(1, 99)), ("cmd", bytes([1, 99])))]

    # the watchdog waits for all owed answers: owe only the kept ones and the last good frame
    lost = [Item(it.kind, it.wire, None) for it in items[dut.ANSWERS:]]
    cmds, self_answers, *_, error = run_port(dut, expect_kept + lost + tail, seed=12,
                                             tx_hold=400)
    assert self_answers == [(Status.BAD_CRC, s) for s in range(dut.ANSWERS)]
    assert cmds == [bytes([1, 99])]
    assert error == flags_of(HostPortError.BAD_CRC, HostPortError.LOST)


def test_error_clear():
    dut = HostPort(**SMALL)
    seen = []

    async def tb(ctx):
        ctx.set(dut.tx.ready, 1)
        for b in [FLAG, 1, FLAG]:
            ctx.set(dut.rx.valid, 1)
            ctx.set(dut.rx.payload, b)
            await ctx.tick()
        ctx.set(dut.rx.valid, 0)
        seen.append(ctx.get(dut.error))
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        seen.append(ctx.get(dut.error))

    simulate(dut, tb)
    assert seen == [int(HostPortError.BAD_CRC), 0]


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("given, message", [
    ({"max_payload": 6}, "max_payload must be a multiple of 4"),
    ({"max_payload": 0}, "max_payload must be an integer in [4, 4096]"),
    ({"max_payload": 4100}, "max_payload must be an integer in [4, 4096]"),
    ({"timeout": 15}, "timeout must be an integer in [16, 16777216]"),
    ({"timeout": (1 << 24) + 1}, "timeout must be an integer in [16, 16777216]"),
])
def test_bad_parameters_refused(given, message):
    with pytest.raises(ParamError, match=re.escape(message)):
        HostPort.validate_params(given)
    with pytest.raises(ParamError, match=re.escape(message)):
        HostPort(**given)


def test_defaults():
    from heterotron.hdl.contract.hostlink import MAX_PAYLOAD
    from heterotron.hdl.contract.params import inspect_only

    dut = inspect_only(HostPort())
    assert dut.parameters == {"max_payload": MAX_PAYLOAD, "timeout": 65536}
    assert dut.buffer_depth >= 2 * (MAX_PAYLOAD + 2)


# -- lint -------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    SMALL, {"max_payload": 4, "timeout": 16}, {},
    pytest.param({"max_payload": 4096, "timeout": 1 << 24}, marks=pytest.mark.slow),  # 40 s
])
def test_lint_clean(tmp_path, params):
    path = tmp_path / "hostport.v"
    path.write_text(verilog.convert(HostPort(**params), name="hostport", emit_src=False))
    vl = verilator_lint(path, "hostport")
    assert vl.ok, vl.log
    ys = yosys_check(path, "hostport")
    assert ys.ok, ys.log[-2000:]


def test_response_frame_is_what_the_port_sends():
    """The port frames an answer the way the contract's functions do (one case, exactly)."""
    dut = HostPort(**SMALL)
    sent = bytearray()

    async def source(ctx):
        frame = bytes([Status.OK, 0x7E, 0x7D, 0x00])
        for k, b in enumerate(frame):
            ctx.set(dut.resp.valid, 1)
            ctx.set(dut.resp.payload, {"data": b, "last": k == len(frame) - 1})
            await ctx.tick().until(dut.resp.ready)
        ctx.set(dut.resp.valid, 0)

    async def sink(ctx):
        ctx.set(dut.tx.ready, 1)
        for _ in range(30):
            *_, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if valid:
                sent.append(payload)

    simulate(dut, source, sink)
    assert bytes(sent) == stuff(response_frame(Status.OK, 0x7E, b"\x7d\x00"))

"""GEMM engine: golden model, command errors and results in Amaranth's simulator, the cocotb
testbench on Verilator for both dataflows, and the benchmark command."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import signed

from heterotron.hdl.contract.params import ParamError, inspect_only, sample_valid
from heterotron.hdl.gemm import GemmEngine, GemmError, Op
from heterotron.scripts.cli import main
from heterotron.sim.golden.systolic import gemm, output_order
from heterotron.tb.amaranth_sim import simulate, stream_get, stream_put

# -- golden model -----------------------------------------------------------------------------


def test_gemm_golden_order_padding_and_bias():
    a = np.array([[1, 2], [3, 4], [5, 6]])  # 3 x 2
    b = np.array([[1, 0, -1], [2, 1, 0]])  # 2 x 3
    bias = np.array([10, 20, 30])
    beats = gemm(a, b, cols=2, bias=bias)
    c = a @ b + bias
    # column tile 0 (cols 0, 1) rows 0..2, then column tile 1 (col 2, lane 1 padding = 0)
    assert beats.tolist() == [list(c[0, :2]), list(c[1, :2]), list(c[2, :2]),
                              [c[0, 2], 0], [c[1, 2], 0], [c[2, 2], 0]]
    assert output_order(3, 3, 2) == [(0, 0), (1, 0), (2, 0), (0, 2), (1, 2), (2, 2)]


def test_gemm_golden_requantizes_per_lane():
    a = np.array([[100]])
    b = np.array([[100, -100]])
    beats = gemm(a, b, cols=2, scale_m=np.array([1, 3]), scale_e=np.array([4, 0]), out_width=8)
    assert beats.tolist() == [[127, -128]]  # 10000 / 16 = 625 -> 127; -30000 -> -128


# -- Amaranth simulation ----------------------------------------------------------------------


#: No error flag set.
NONE = GemmError(0)


def run_engine(dut: GemmEngine, program, n_out: int, seed=0, gap=0.2, stall=0.2,
               cycles=30000):
    """Drive ``program`` (a list of (command dict, elements or None)); collect ``n_out``
    output beats and the error flags each command raised (read after it, then cleared)."""
    rng = np.random.default_rng(seed)
    out, errors = [], []

    async def host(ctx):
        for cmd, elems in program:
            await ctx.tick().until(~dut.busy)
            fields = {"op": cmd["op"], "trans": cmd.get("trans", 0), "bias": cmd.get("bias", 0),
                      "m": cmd.get("m", 0), "k": cmd.get("k", 0), "n": cmd.get("n", 0)}
            await stream_put(ctx, dut.cmd, fields)
            for e in (elems if elems is not None else []):
                await stream_put(ctx, dut.data, int(e), rng, gap)
            await ctx.tick()
            errors.append(GemmError(ctx.get(dut.error)))
            ctx.set(dut.error_clear, 1)
            await ctx.tick()
            ctx.set(dut.error_clear, 0)

    async def sink(ctx):
        for _ in range(n_out):
            p = await stream_get(ctx, dut.o, rng, stall)
            out.append(([p.data[j] for j in range(dut.cols)], p.row, p.col, p.last))

    simulate(dut, host, sink, cycles=cycles)
    return out, errors


def job_program(a, b, trans_a, trans_b, bias=None):
    M, K = a.shape
    N = b.shape[1]
    prog = [({"op": Op.LOAD_A, "trans": trans_a, "m": M, "k": K}, (a.T if trans_a else a).flat),
            ({"op": Op.LOAD_B, "trans": trans_b, "k": K, "n": N}, (b.T if trans_b else b).flat)]
    if bias is not None:
        prog.append(({"op": Op.LOAD_BIAS, "n": N}, bias))
    prog.append(({"op": Op.RUN, "bias": bias is not None}, None))
    return prog


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_transposes_in_amaranth_sim(dataflow, trans_a, trans_b):
    """C = A B, A^T B, A B^T, A^T B^T with non-multiple sizes and a bias."""
    rng = np.random.default_rng(trans_a * 2 + trans_b)
    dut = GemmEngine(rows=3, cols=2, dataflow=dataflow, max_m=12, max_k=12, max_n=12)
    M, K, N = 7, 5, 3
    a = rng.integers(-128, 128, (M, K))
    b = rng.integers(-128, 128, (K, N))
    bias = rng.integers(-(1 << 23), 1 << 23, N)
    want = gemm(a, b, cols=2, bias=bias)
    out, errors = run_engine(dut, job_program(a, b, trans_a, trans_b, bias), len(want))
    assert np.array([o[0] for o in out]).tolist() == want.tolist()
    assert [(o[1], o[2]) for o in out] == output_order(M, N, 2)
    assert [o[3] for o in out] == [0] * (len(want) - 1) + [1]
    assert all(e == NONE for e in errors)


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_bad_commands_flag_errors_and_the_engine_recovers(dataflow):
    dut = GemmEngine(rows=2, cols=2, dataflow=dataflow, max_m=6, max_k=6, max_n=6)
    rng = np.random.default_rng(5)
    a, b = rng.integers(-128, 128, (3, 4)), rng.integers(-128, 128, (4, 5))
    prog = [
        ({"op": Op.RUN}, None),  # nothing loaded
        ({"op": Op.LOAD_A, "m": 0, "k": 3}, None),  # M = 0
        ({"op": Op.LOAD_B, "k": 7, "n": 2}, None),  # K above max_k
        ({"op": Op.LOAD_A, "m": 3, "k": 4}, a.flat),
        ({"op": Op.LOAD_B, "k": 3, "n": 5}, np.zeros(15, dtype=int)),
        ({"op": Op.RUN}, None),  # K of A (4) and B (3) differ
        ({"op": Op.LOAD_B, "k": 4, "n": 5}, [200] + list(b.flat)[1:]),  # 200 is not int8
        ({"op": Op.RUN, "bias": 1}, None),  # no bias loaded
    ] + job_program(a, b, 0, 0)
    want = gemm(a, b, cols=2)
    out, errors = run_engine(dut, prog, len(want))
    assert errors[:8] == [GemmError.DIMS, GemmError.DIMS, GemmError.DIMS, NONE, NONE,
                          GemmError.DIMS, GemmError.RANGE, GemmError.DIMS]
    assert all(e == NONE for e in errors[8:])
    assert np.array([o[0] for o in out]).tolist() == want.tolist()


def test_error_flags_are_sticky_until_cleared():
    """Flags accumulate over commands (a good command no longer clears them), stay set until a
    clock edge with ``error_clear``, and a flag raised in the clearing cycle stays set."""
    dut = GemmEngine(rows=2, cols=2, max_m=4, max_k=4, max_n=4)
    seen = []

    async def put(ctx, stream, payload):
        await stream_put(ctx, stream, payload)
        await ctx.tick()

    def cmd(op, m=0, k=0, n=0, bias=0):
        return {"op": op, "trans": 0, "bias": bias, "m": m, "k": k, "n": n}

    async def host(ctx):
        await put(ctx, dut.cmd, cmd(Op.RUN))  # nothing loaded
        seen.append(ctx.get(dut.error))
        await put(ctx, dut.cmd, cmd(Op.LOAD_A, m=1, k=1))  # a good command ...
        await put(ctx, dut.data, 3)
        seen.append(ctx.get(dut.error))  # ... leaves the flag
        await put(ctx, dut.cmd, cmd(Op.LOAD_B, k=1, n=1))
        await put(ctx, dut.data, 300)  # not int8
        seen.append(ctx.get(dut.error))
        for _ in range(3):
            await ctx.tick()
        seen.append(ctx.get(dut.error))  # nothing clears it but error_clear
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        seen.append(ctx.get(dut.error))
        # A refused RUN (no bias loaded) taken in the very cycle error_clear is high.
        await put(ctx, dut.cmd, cmd(Op.LOAD_B, k=1, n=1))
        await put(ctx, dut.data, 300)
        ctx.set(dut.error_clear, 1)
        await stream_put(ctx, dut.cmd, cmd(Op.RUN, bias=1))
        ctx.set(dut.error_clear, 0)
        seen.append(ctx.get(dut.error))

    simulate(dut, host)
    both = GemmError.DIMS | GemmError.RANGE
    assert [GemmError(v) for v in seen] == [GemmError.DIMS, GemmError.DIMS, both, both, NONE,
                                            GemmError.DIMS]


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_requant_latency_is_the_requantizers(dataflow):
    """With ``requant`` the first result leaves ``latency`` cycles later than without, as
    the two engines' :attr:`latency` say (the requantizer's first stage replaces the output
    register); the tags ride through the requantizer with their own beats."""
    rng = np.random.default_rng(9)
    M, K, N = 5, 4, 3
    a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    firsts, latency, tags = {}, {}, {}
    for requant in (False, True):
        dut = GemmEngine(rows=2, cols=2, dataflow=dataflow, max_m=8, max_k=8, max_n=8,
                         requant=requant)
        out = []

        async def host(ctx, dut=dut, requant=requant, out=out):
            ctx.set(dut.o.ready, 1)
            if requant:
                for j in range(dut.cols):
                    await stream_put(ctx, dut.cfg, {"lane": j, "m": 1, "e": 0})
            for cmd, elems in job_program(a, b, 0, 0)[:-1]:
                await stream_put(ctx, dut.cmd, {"trans": 0, "bias": 0, "m": 0, "k": 0,
                                                "n": 0, **cmd})
                for e in elems:
                    await stream_put(ctx, dut.data, int(e))
                await ctx.tick().until(~dut.busy)
            await stream_put(ctx, dut.cmd, {"op": Op.RUN, "trans": 0, "bias": 0, "m": 0,
                                            "k": 0, "n": 0})
            cycles = 0  # edges after the one that took RUN
            while len(out) < len(output_order(M, N, 2)):
                if ctx.get(dut.o.valid):
                    firsts.setdefault(requant, cycles)
                    p = ctx.get(dut.o.payload)
                    out.append((p.row, p.col, p.last, [p.data[j] for j in range(2)]))
                await ctx.tick()
                cycles += 1

        simulate(dut, host)
        tags[requant], latency[requant] = out, dut.latency
    assert firsts[True] - firsts[False] == latency[True] - latency[False]
    want = gemm(a, b, cols=2, scale_m=np.ones(2, dtype=np.int64),
                scale_e=np.zeros(2, dtype=np.int64), out_width=8)
    order = output_order(M, N, 2)
    assert [t[:2] for t in tags[True]] == [t[:2] for t in tags[False]] == order
    assert [t[2] for t in tags[True]] == [0] * (len(order) - 1) + [1]
    assert [t[3] for t in tags[True]] == want.tolist()


def test_engine_rejects_overflowing_configuration():
    with pytest.raises(ParamError, match="acc_width=20 can overflow"):
        GemmEngine(acc_width=20, bias_width=8, max_k=256)
    with pytest.raises(ParamError, match="max_m must be"):
        GemmEngine(max_m=0)
    with pytest.raises(ParamError, match=r"the A buffer would be 2097152 words x 8 bits"):
        GemmEngine(rows=1, cols=1, max_m=1024, max_k=2048, max_n=2)


# -- wide loads (data_lanes > 1) ---------------------------------------------------------------


def pack_beats(elems, lanes, rng, full=False, empty=0.0):
    """The element stream in beats of ``count`` 1 .. ``lanes`` (all ``lanes`` with ``full``),
    the lanes past ``count`` random 24-bit values (out of any int8 operand's range); with
    probability ``empty`` a beat of ``count = 0`` before one."""
    elems, beats, i = [int(e) for e in elems], [], 0
    while i < len(elems):
        if empty and rng.random() < empty:
            beats.append({"data": [int(v) for v in rng.integers(-(1 << 23), 1 << 23, lanes)],
                          "count": 0})
        n = lanes if full else int(rng.integers(1, lanes + 1))
        part = elems[i:i + n]
        i += len(part)
        junk = [int(v) for v in rng.integers(-(1 << 23), 1 << 23, lanes - len(part))]
        beats.append({"data": part + junk, "count": len(part)})
    return beats


def run_wide(dut: GemmEngine, program, n_out: int, seed=0, gap=0.2, stall=0.2, full=False,
             empty=0.0, cycles=40000):
    """Like :func:`run_engine` with ``data_lanes`` beats: the program's elements in one
    stream, beats crossing stored rows and loads, commands issued beside it as the engine
    gets idle. Returns the output beats, the sticky flags at the end and, per load, the
    cycles from its command's edge to the engine idle again."""
    rng = np.random.default_rng(seed)
    out, flags, load_cycles = [], [], []
    elems = [int(e) for _, es in program for e in (es if es is not None else [])]
    beats = pack_beats(elems, dut.data_lanes, rng, full, empty)

    async def commands(ctx):
        for cmd, elems in program:
            await ctx.tick().until(~dut.busy)
            fields = {"op": cmd["op"], "trans": cmd.get("trans", 0), "bias": cmd.get("bias", 0),
                      "m": cmd.get("m", 0), "k": cmd.get("k", 0), "n": cmd.get("n", 0)}
            await stream_put(ctx, dut.cmd, fields)
            if elems is not None:
                n = 0
                while ctx.get(dut.busy) or n == 0:
                    await ctx.tick()
                    n += 1
                load_cycles.append(n)

    async def feed(ctx):
        for beat in beats:
            await stream_put(ctx, dut.data, beat, rng, gap)

    async def sink(ctx):
        for _ in range(n_out):
            p = await stream_get(ctx, dut.o, rng, stall)
            out.append(([p.data[j] for j in range(dut.cols)], p.row, p.col, p.last))
        for _ in range(5):
            await ctx.tick()
        flags.append(GemmError(ctx.get(dut.error)))

    simulate(dut, commands, feed, sink, cycles=cycles)
    assert len(out) == n_out, f"{len(out)} of {n_out} beats"
    return out, flags[0], load_cycles


@pytest.mark.parametrize("lanes", [2, 3, 4, 8])
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_wide_loads_in_amaranth_sim(dataflow, lanes):
    """``data_lanes`` beats of random ``count`` with gaps and back-pressure: every transpose
    (fast and slow loads), a bias, sizes that are no multiple of the lanes, four jobs back to
    back (beats cross rows and loads), now and then a beat of ``count = 0``."""
    rng = np.random.default_rng(lanes * 7 + (dataflow == "ws"))
    dut = GemmEngine(rows=3, cols=4, dataflow=dataflow, max_m=12, max_k=12, max_n=12,
                     data_lanes=lanes)
    program, want = [], []
    for trans_a, trans_b in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        M, K, N = (int(v) for v in rng.integers(1, 10, 3))
        a = rng.integers(-128, 128, (M, K))
        b = rng.integers(-128, 128, (K, N))
        bias = rng.integers(-(1 << 23), 1 << 23, N) if trans_a == trans_b else None
        program += job_program(a, b, trans_a, trans_b, bias)
        want += [(lane, row, col) for lane, (row, col) in
                 zip(gemm(a, b, cols=4, bias=bias).tolist(), output_order(M, N, 4),
                     strict=True)]
    out, flags, _ = run_wide(dut, program, len(want), seed=lanes, empty=0.05)
    assert [(o[0], o[1], o[2]) for o in out] == want
    assert flags == NONE


def chunks(rows, cols, lanes, data_lanes):
    """Cycles of a fast load fed full beats without gaps: chunks cut at beat ends, word ends
    and stored-row ends."""
    n, off = 0, 0
    for _ in range(rows):
        c = 0
        while c < cols:
            step = min(data_lanes - off, lanes - c % lanes, cols - c)
            c, off, n = c + step, (off + step) % data_lanes, n + 1
    return n


@pytest.mark.parametrize("lanes", [3, 4, 8])
def test_fast_loads_take_elements_over_lanes_cycles(lanes):
    """Without gaps, a fast load (OS: A^T, B, bias) writes min(data_lanes, word lanes)
    elements a cycle; a slow one (A stored M x K) one."""
    rng = np.random.default_rng(lanes)
    R, C = 4, 4
    dut = GemmEngine(rows=R, cols=C, dataflow="os", max_m=16, max_k=16, max_n=16,
                     data_lanes=lanes)
    M = K = N = 16
    a, b = rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))
    bias = rng.integers(-1000, 1000, N)
    program = (job_program(a, b, 1, 0, bias)[:3] + job_program(a, b, 0, 0)[:1]
               + [({"op": Op.RUN, "bias": 1}, None)])
    want = gemm(a, b, cols=C, bias=bias)
    out, flags, cycles = run_wide(dut, program, len(want), gap=0, stall=0, full=True)
    assert np.array([o[0] for o in out]).tolist() == want.tolist()
    assert flags == NONE
    load_at, load_b, load_bias, load_a = cycles
    per = min(lanes, R)
    # (the count runs from the edge after the command's to the one after the last write)
    assert load_at <= chunks(K, M, R, lanes) + 1
    assert load_b <= chunks(K, N, C, lanes) + 1
    assert load_bias <= chunks(1, N, C, lanes) + 1
    assert load_a >= M * K  # slow: one element a cycle
    if R % lanes == 0 or lanes % R == 0:  # chunks cut only at word ends
        assert load_at <= M * K / per + 1 and load_b <= K * N / per + 1


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_wide_loads_flag_out_of_range_elements(dataflow):
    """An element out of its operand's range in a wide beat, in a fast chunk and in a slow
    load, raises RANGE; elements past ``count`` (junk) never do."""
    rng = np.random.default_rng(3)
    for trans in (0, 1):
        dut = GemmEngine(rows=2, cols=2, dataflow=dataflow, max_m=6, max_k=6, max_n=6,
                         data_lanes=4)
        a, b = rng.integers(-128, 128, (3, 4)), rng.integers(-128, 128, (4, 5))
        bad = b.copy()
        bad[2, 3] = 300
        program = job_program(a, b, 0, 0)[:1] + job_program(a, bad, 0, trans)[1:]
        out, flags, _ = run_wide(dut, program, len(gemm(a, b, cols=2)), seed=trans)
        assert flags == GemmError.RANGE
        dut = GemmEngine(rows=2, cols=2, dataflow=dataflow, max_m=6, max_k=6, max_n=6,
                         data_lanes=4)
        _, flags, _ = run_wide(dut, job_program(a, b, trans, trans), len(gemm(a, b, cols=2)),
                               seed=trans)
        assert flags == NONE


def test_wide_data_port_shape():
    dut = inspect_only(GemmEngine(rows=2, cols=2, max_m=4, max_k=4, max_n=4, data_lanes=3))
    shape = dut.data.payload.shape()
    assert list(shape.members) == ["data", "count"]
    assert shape["data"].shape.length == 3 and shape["data"].shape.elem_shape == signed(24)
    narrow = inspect_only(GemmEngine(rows=2, cols=2, max_m=4, max_k=4, max_n=4))
    assert narrow.data.payload.shape() == signed(24) == signed(dut.data_width)
    with pytest.raises(ParamError, match=r"data_lanes must be an integer in \[1, 32\]"):
        GemmEngine(data_lanes=33)


# -- cocotb testbench -------------------------------------------------------------------------

SMALL = {"max_m": "24", "max_k": "40", "max_n": "24"}
COCOTB_CASES = [
    pytest.param({"rows": "4", "cols": "4", "dataflow": "os", **SMALL}, id="os-4x4"),
    pytest.param({"rows": "4", "cols": "4", "dataflow": "ws", **SMALL}, id="ws-4x4"),
    pytest.param({"rows": "3", "cols": "2", "dataflow": "os", "requant": "true", **SMALL},
                 id="os-3x2-requant"),
    pytest.param({"rows": "2", "cols": "3", "dataflow": "ws", "requant": "true",
                  "a_signed": "false", **SMALL}, id="ws-2x3-requant-uint8"),
    pytest.param({"rows": "1", "cols": "1", "dataflow": "ws", **SMALL}, id="ws-1x1"),
]


@pytest.mark.parametrize("overrides", COCOTB_CASES)
def test_cocotb_verilator(testbench, overrides):
    testbench("gemm", overrides=overrides, seed=21, vectors=8)  # test_bench runs skipped


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"dataflow": "os"},  # 8x8, buffers for 256, extremes at K = 256
    {"dataflow": "ws"},
    {"rows": "5", "cols": "7", "dataflow": "os", "requant": "true", "out_width": "12",
     "max_m": "60", "max_k": "90", "max_n": "60"},
    {"rows": "7", "cols": "5", "dataflow": "ws", "b_signed": "false", "max_m": "60",
     "max_k": "90", "max_n": "60"},
])
def test_cocotb_verilator_slow(testbench, overrides):
    testbench("gemm", overrides=overrides, seed=4, vectors=12)


# -- benchmark --------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["bench", "gemm", "--sizes", "0"], "sizes must be integers in [1, 4096]"),
    (["bench", "gemm", "--arrays", "8by8"], "expected arrays like 8x8,16x16"),
    (["bench", "gemm", "--dataflow", "rs"], "dataflows must be os and/or ws"),
])
def test_bench_rejects_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_bench_reports_verified_cycles_and_utilisation():
    from heterotron.sim.flows.bench import bench_gemm

    rows = bench_gemm([12, 20], [(4, 4)], ["os", "ws"])
    assert [(r["dataflow"], r["m"]) for r in rows] == [("os", 12), ("os", 20), ("ws", 12),
                                                       ("ws", 20)]
    for r in rows:
        # A tile of work cannot take fewer cycles than its MACs over the PEs.
        assert r["cycles"] >= r["macs"] / 16
        assert 0 < r["utilization"] <= 1
        assert r["beats"] == r["m"] * -(-r["n"] // 4)


GEMM_CAPS = {"rows": 5, "cols": 5, "max_k": 40, "max_m": 30, "max_n": 30, "acc_width": 48}


def sampled_gemm_params(draw: int) -> dict:
    return sample_valid(GemmEngine, np.random.default_rng([47, draw]), GEMM_CAPS)


@pytest.mark.parametrize("draw", [0])
def test_cocotb_sampled_parameters(testbench, draw):
    """Any valid engine configuration passes, not only the hand-picked ones."""
    testbench("gemm", sampled_gemm_params(draw), seed=draw, vectors=6)


@pytest.mark.slow
@pytest.mark.parametrize("draw", range(1, 5))
def test_cocotb_sampled_parameters_slow(testbench, draw):
    testbench("gemm", sampled_gemm_params(draw), seed=draw, vectors=8)

"""Systolic array: golden model, accumulator-width check, RTL in Amaranth's simulator, and the
cocotb testbench on Verilator (and Icarus when installed) for both dataflows and several sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heterotron.hdl.contract.params import ParamError, inspect_only, sample_valid
from heterotron.hdl.systolic import SystolicArray, check_accumulator
from heterotron.sim.golden.systolic import (
    accumulator_range,
    bits_for_range,
    operand_range,
    os_tile,
    ws_rows,
)
from heterotron.tb.amaranth_sim import edges_until_valid, simulate, stream_get, stream_put

# -- golden model -----------------------------------------------------------------------------


@settings(max_examples=50)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_os_tile_is_the_sum_of_products(K, R, C, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (K, R))
    b = rng.integers(-128, 128, (K, C))
    bias = rng.integers(-1000, 1000, C)
    got = os_tile(a, b, bias)
    for i in range(R):
        for j in range(C):
            assert got[i, j] == bias[j] + sum(int(a[k, i]) * int(b[k, j]) for k in range(K))


def test_ws_rows_add_the_partial_sum():
    a = np.array([[1, 2], [-3, 4]])
    w = np.array([[5, -6, 7], [8, 9, -10]])
    psum = np.array([[100, 0, -1], [0, 0, 0]])
    assert ws_rows(a, w, psum).tolist() == [[121, 12, -14], [17, 54, -61]]


def test_golden_is_exact_beyond_int64():
    a = np.full((1, 4), -(1 << 31))
    b = np.full((1, 4), -(1 << 31))
    assert int(os_tile(a, b)[0, 0]) == 1 << 62  # int64 would hold it; push past
    big = os_tile(np.full((4, 1), -(1 << 31)), np.full((4, 1), -(1 << 31)))
    assert int(big[0, 0]) == 1 << 64


# -- accumulator check ------------------------------------------------------------------------


def test_accumulator_boundary_int8():
    # bias in [-2, 1]; K products of (-128)^2 = 16384: K = 1 fits 16 bits, K = 2 does not.
    check_accumulator(a_width=8, a_signed=True, b_width=8, b_signed=True, bias_width=2,
                      acc_width=16, max_k=1)
    with pytest.raises(ParamError, match=r"acc_width=16 can overflow.*max_k=2.*needs 17 bits"):
        check_accumulator(a_width=8, a_signed=True, b_width=8, b_signed=True, bias_width=2,
                          acc_width=16, max_k=2)


def test_accumulator_message_suggests_a_max_k_that_fits():
    with pytest.raises(ParamError, match=r"max_k to at most (\d+)") as info:
        SystolicArray(acc_width=24, bias_width=16, max_k=4096)
    fit = int(info.value.args[0].rsplit(" ", 1)[1])
    inspect_only(SystolicArray(acc_width=24, bias_width=16, max_k=fit))  # accepted
    with pytest.raises(ParamError):
        SystolicArray(acc_width=24, bias_width=16, max_k=fit + 1)


@settings(max_examples=200)
@given(st.integers(2, 18), st.booleans(), st.integers(2, 18), st.booleans(), st.integers(2, 40),
       st.integers(8, 64), st.integers(1, 1 << 20))
def test_accumulator_check_agrees_with_the_range(aw, asg, bw, bsg, biasw, accw, max_k):
    """The check accepts exactly when the golden's worst-case range fits acc_width."""
    rng_ = accumulator_range(operand_range(aw, asg), operand_range(bw, bsg),
                             operand_range(biasw, True), max_k)
    fits = bits_for_range(*rng_) <= accw
    try:
        check_accumulator(a_width=aw, a_signed=asg, b_width=bw, b_signed=bsg, bias_width=biasw,
                          acc_width=accw, max_k=max_k)
        accepted = True
    except ParamError:
        accepted = False
    assert accepted == fits


@pytest.mark.parametrize("kwargs, message", [
    (dict(rows=0), "rows must be an integer in"),
    (dict(cols=33), "cols must be an integer in"),
    (dict(dataflow="is"), "dataflow must be one of os, ws"),
    (dict(a_width=1), "a_width must be"),
    (dict(bias_width=40), "bias_width must be at most acc_width=32"),
    (dict(acc_width=16, bias_width=8), "acc_width=16 can overflow"),
    (dict(a_signed=1), "a_signed must be true or false"),
])
def test_bad_parameters_rejected(kwargs, message):
    with pytest.raises(ParamError, match=message):
        SystolicArray(**kwargs)


# -- RTL in Amaranth's simulator ----------------------------------------------------------------


def amaranth_os(dut: SystolicArray, tiles, seed: int, gap=0.3, stall=0.3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    R, C = dut.rows, dut.cols
    got = []

    async def producer(ctx):
        for a, b, bias in tiles:
            for k in range(len(a)):
                await stream_put(ctx, dut.i, {
                    "a": [int(v) for v in a[k]], "b": [int(v) for v in b[k]],
                    "bias": [int(v) for v in bias], "first": k == 0, "last": k == len(a) - 1,
                }, rng, gap)

    async def consumer(ctx):
        for _ in tiles:
            rows = []
            for _ in range(R):
                beat = await stream_get(ctx, dut.o, rng, stall)
                rows.append([beat[j] for j in range(C)])
            got.append(np.array(rows))

    simulate(dut, producer, consumer, cycles=8 * sum(max(len(a), R) for a, _, _ in tiles) + 400)
    return got


def amaranth_ws(dut: SystolicArray, tiles, seed: int, gap=0.3, stall=0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    C = dut.cols
    got = []
    total = sum(len(a) for _, a, _ in tiles)

    async def weights(ctx):
        for w, _, _ in tiles:
            for i in range(dut.rows):
                await stream_put(ctx, dut.w, [int(v) for v in w[i]], rng, gap)

    async def producer(ctx):
        for _, a, psum in tiles:
            for n in range(len(a)):
                await stream_put(ctx, dut.i, {"a": [int(v) for v in a[n]],
                                              "psum": [int(v) for v in psum[n]],
                                              "swap": n == 0}, rng, gap)

    async def consumer(ctx):
        for _ in range(total):
            beat = await stream_get(ctx, dut.o, rng, stall)
            got.append([beat[j] for j in range(C)])

    simulate(dut, weights, producer, consumer,
             cycles=8 * sum(max(len(a), dut.rows + dut.cols) for _, a, _ in tiles) + 400)
    return np.array(got).reshape(-1, C)


@pytest.mark.parametrize("R, C, ks", [(3, 2, [5, 1, 1, 4, 2, 7]), (1, 1, [1, 3, 1]),
                                      (2, 4, [1, 1, 6, 2])])
@pytest.mark.parametrize("stalls", [True, False])
def test_os_matches_golden_in_amaranth_sim(R, C, ks, stalls):
    rng = np.random.default_rng(R * 10 + C)
    dut = SystolicArray(rows=R, cols=C, dataflow="os")
    tiles = [(rng.integers(-128, 128, (k, R)), rng.integers(-128, 128, (k, C)),
              rng.integers(-(1 << 23), 1 << 23, C)) for k in ks]
    got = amaranth_os(dut, tiles, seed=1, gap=0.3 * stalls, stall=0.3 * stalls)
    assert len(got) == len(tiles)
    for t, (a, b, bias) in enumerate(tiles):
        assert (got[t] == os_tile(a, b, bias)).all(), t


@pytest.mark.parametrize("R, C, ms", [(3, 2, [4, 1, 7, 2]), (1, 1, [1, 2, 1]), (2, 3, [6, 6, 1])])
@pytest.mark.parametrize("stalls", [True, False])
def test_ws_matches_golden_in_amaranth_sim(R, C, ms, stalls):
    rng = np.random.default_rng(R * 10 + C)
    dut = SystolicArray(rows=R, cols=C, dataflow="ws")
    tiles = [(rng.integers(-128, 128, (R, C)), rng.integers(-128, 128, (mm, R)),
              rng.integers(-(1 << 23), 1 << 23, (mm, C))) for mm in ms]
    got = amaranth_ws(dut, tiles, seed=2, gap=0.3 * stalls, stall=0.3 * stalls)
    want = np.concatenate([ws_rows(a, w, ps) for w, a, ps in tiles])
    assert got.shape == want.shape and (got == want).all()


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("a_signed, b_signed", [(False, False), (False, True), (True, False)])
def test_signedness_extremes_in_amaranth_sim(dataflow, a_signed, b_signed):
    """Unsigned and mixed operands at the corners of their ranges (the product's width)."""
    kw = dict(rows=2, cols=2, dataflow=dataflow, a_width=15, a_signed=a_signed, b_width=3,
              b_signed=b_signed, acc_width=40, bias_width=8, max_k=16)
    dut = SystolicArray(**kw)
    a_lo, a_hi = operand_range(15, a_signed)
    b_lo, b_hi = operand_range(3, b_signed)
    corners = [(a, b) for a in (a_lo, a_hi) for b in (b_lo, b_hi)]
    if dataflow == "os":
        tiles = [(np.full((k, 2), a), np.full((k, 2), b), np.array([-128, 127]))
                 for (a, b), k in zip(corners, (1, 3, 16, 2), strict=True)]
        got = amaranth_os(dut, tiles, seed=3)
        assert len(got) == len(tiles)
        for t, (a, b, bias) in enumerate(tiles):
            assert (got[t] == os_tile(a, b, bias)).all(), (t, got[t])
    else:
        tiles = [(np.full((2, 2), b), np.full((5, 2), a), np.full((5, 2), -128))
                 for a, b in corners]
        got = amaranth_ws(dut, tiles, seed=3)
        want = np.concatenate([ws_rows(a, w, ps) for w, a, ps in tiles])
        assert (got == want).all(), (got, want)


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_documented_latency_is_measured(dataflow):
    """OS: from the last beat of a tile to its first output row; WS: beat to beat."""
    dut = SystolicArray(rows=3, cols=4, dataflow=dataflow)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        if dataflow == "ws":  # a swap needs a full shadow
            ctx.set(dut.w.valid, 1)
            for _ in range(dut.rows):
                await ctx.tick().until(dut.w.ready)
            ctx.set(dut.w.valid, 0)
            ctx.set(dut.i.payload.swap, 1)
        else:
            ctx.set(dut.i.payload.first, 1)
            ctx.set(dut.i.payload.last, 1)
        ctx.set(dut.i.valid, 1)
        await ctx.tick().until(dut.i.ready)  # the beat is accepted at this edge
        ctx.set(dut.i.valid, 0)
        seen["latency"] = await edges_until_valid(ctx, dut.o.valid, limit=40)

    simulate(dut, tb)
    assert seen["latency"] == dut.latency


# -- cocotb testbench on real simulators -------------------------------------------------------

COCOTB_CASES = [
    pytest.param({"rows": "4", "cols": "4", "dataflow": "os", "max_k": "300"}, id="os-4x4"),
    pytest.param({"rows": "4", "cols": "4", "dataflow": "ws", "max_k": "300"}, id="ws-4x4"),
    pytest.param({"rows": "3", "cols": "5", "dataflow": "os", "max_k": "64"}, id="os-3x5"),
    pytest.param({"rows": "5", "cols": "2", "dataflow": "ws", "max_k": "64"}, id="ws-5x2"),
    pytest.param({"rows": "1", "cols": "1", "dataflow": "os", "max_k": "64"}, id="os-1x1"),
    pytest.param({"rows": "1", "cols": "1", "dataflow": "ws", "max_k": "64"}, id="ws-1x1"),
]


@pytest.mark.parametrize("overrides", COCOTB_CASES)
def test_cocotb_verilator(testbench, overrides):
    testbench("systolic", overrides=overrides, seed=11, vectors=1500)


@pytest.mark.icarus
@pytest.mark.parametrize("overrides", COCOTB_CASES[2:4])
def test_cocotb_icarus(testbench, overrides):
    testbench("systolic", overrides=overrides, seed=5, vectors=500)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"dataflow": "os"},  # 8x8 int8, max_k 4096: the extremes test runs K = 4096
    {"dataflow": "ws"},
    {"rows": "16", "cols": "16", "dataflow": "os", "max_k": "1024"},
    {"rows": "16", "cols": "16", "dataflow": "ws", "max_k": "1024"},
    {"rows": "6", "cols": "3", "dataflow": "os", "a_signed": "false", "a_width": "8",
     "b_width": "4", "acc_width": "20", "bias_width": "12", "max_k": "100"},
    {"rows": "3", "cols": "6", "dataflow": "ws", "a_width": "12", "b_width": "10",
     "b_signed": "false", "acc_width": "48", "bias_width": "40", "max_k": "1000"},
])
def test_cocotb_verilator_large_and_mixed(testbench, overrides):
    testbench("systolic", overrides=overrides, seed=3)


SWEEP_CAPS = {"rows": 6, "cols": 6, "max_k": 400}


def sampled_params(draw: int) -> dict:
    return sample_valid(SystolicArray, np.random.default_rng([31, draw]), SWEEP_CAPS)


@pytest.mark.parametrize("draw", [0])
def test_cocotb_sampled_parameters(testbench, draw):
    """Any valid parameter set passes, not only the hand-picked ones."""
    testbench("systolic", sampled_params(draw), seed=draw, vectors=800)


@pytest.mark.slow
@pytest.mark.parametrize("draw", range(1, 7))
def test_cocotb_sampled_parameters_slow(testbench, draw):
    testbench("systolic", sampled_params(draw), seed=draw, vectors=1500)

"""Requantizer: golden model properties, RTL in Amaranth's simulator, and the cocotb testbench
on Verilator (and Icarus when installed)."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heterotron.hdl.contract.params import ParamError, inspect_only, sample
from heterotron.hdl.requantizer import Requantizer
from heterotron.sim.flows.units import get_unit
from heterotron.sim.golden.requantizer import dyadic, requantize, round_shift, saturate
from heterotron.tb.amaranth_sim import simulate, stream_get, stream_put

# -- golden model -----------------------------------------------------------------------------


def exact_round_half_up(p: int, e: int) -> int:
    """Reference rounding from rational arithmetic: floor(p / 2^e + 1/2)."""
    return math.floor(Fraction(p, 1 << e) + Fraction(1, 2))


@given(st.integers(-(1 << 80), 1 << 80), st.integers(0, 100))
def test_round_shift_is_round_half_up(p, e):
    assert int(round_shift(p, e)) == exact_round_half_up(p, e)


@given(st.lists(st.integers(-(1 << 60), 1 << 60), min_size=1, max_size=50), st.integers(0, 70))
def test_round_shift_int64_path_matches_exact(ps, e):
    got = round_shift(np.array(ps, dtype=np.int64), e)
    assert got.dtype != object
    assert [int(v) for v in got] == [exact_round_half_up(p, e) for p in ps]


def test_ties_round_towards_plus_infinity():
    # 2.5 -> 3, -2.5 -> -2, 1.5 -> 2, -1.5 -> -1, -0.5 -> 0, 0.5 -> 1
    p = np.array([5, -5, 3, -3, -1, 1])
    assert round_shift(p, 1).tolist() == [3, -2, 2, -1, 0, 1]
    # just off the tie goes to the nearest
    assert round_shift(np.array([-11, -9]), 2).tolist() == [-3, -2]  # -2.75, -2.25


def test_saturation_never_wraps():
    x = np.array([-(1 << 40), -129, -128, 127, 128, 1 << 40])
    assert saturate(x, 8).tolist() == [-128, -128, -128, 127, 127, 127]
    assert requantize(np.array([1 << 31 - 1]), (1 << 31) - 1, 0, 8).tolist() == [127]


@settings(max_examples=300)
@given(st.integers(-(1 << 31), (1 << 31) - 1), st.integers(0, (1 << 31) - 1), st.integers(0, 80),
       st.integers(2, 16))
def test_requantize_is_rounded_saturated_product(z, m, e, bits):
    want = exact_round_half_up(z * m, e)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    assert int(requantize(z, m, e, bits)) == min(max(want, lo), hi)


@given(st.integers(-(1 << 31), (1 << 31) - 1), st.integers(-(1 << 21), (1 << 21) - 1),
       st.integers(0, (1 << 31) - 1), st.integers(0, 63), st.integers(0, (1 << 31) - 1),
       st.integers(0, 63))
@example(z=1_518_494_220, y=0, m=1_518_506_280, e=0, m_y=0, e_y=0)  # scalar, product > 2^61
def test_residual_rounds_each_term_then_adds(z, y, m, e, m_y, e_y):
    want = exact_round_half_up(z * m, e) + exact_round_half_up(y * m_y, e_y)
    got = int(requantize(z, m, e, 8, y=y, m_y=m_y, e_y=e_y))
    assert got == min(max(want, -128), 127)


def test_requantize_per_channel_broadcast():
    z = np.array([[100, 100, 100], [-7, 0, 7]])
    m = np.array([1 << 30, 1 << 29, 3 << 28])
    e = np.array([31, 31, 30])
    got = requantize(z, m, e)
    want = [[exact_round_half_up(int(z[r, c]) * int(m[c]), int(e[c])) for c in range(3)]
            for r in range(2)]
    assert got.tolist() == want


def test_requantize_rejects_out_of_range_scales():
    with pytest.raises(ValueError, match="m must be"):
        requantize(1, 1 << 31, 3)
    with pytest.raises(ValueError, match="e must be"):
        requantize(1, 5, -1)
    with pytest.raises(ValueError, match="residual"):
        requantize(1, 5, 1, y=3)


@given(st.floats(1e-12, 1e6, allow_nan=False, allow_infinity=False))
def test_dyadic_approximates_ratio(ratio):
    m, e = dyadic(ratio)
    assert (1 << 30) <= m < (1 << 31)
    assert e >= 0
    assert abs(m / 2**e - ratio) <= ratio * 2.0**-31


def test_dyadic_edges():
    # a mantissa that rounds up to 2^31 is renormalised, exactly
    m, e = dyadic(1 - 2**-40)
    assert m == 1 << 30 and e == 30
    assert dyadic(0.5) == (1 << 30, 31)
    assert dyadic(0.75, m_bits=8) == (192, 8)
    # capped shift keeps the value, losing mantissa bits
    m, e = dyadic(2**-40 * 1.25, max_shift=45)
    assert e == 45 and m == 40
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            dyadic(bad)
    with pytest.raises(ValueError, match="too large"):
        dyadic(2.0**40)
    with pytest.raises(ValueError, match="too small"):
        dyadic(2.0**-80, max_shift=63)


def test_dyadic_scale_requantizes_like_float():
    """Folding a float scale into (m, e) costs at most the half-LSB of rounding."""
    rng = np.random.default_rng(0)
    for ratio in (1 / 3, 0.0123, 7.3e-5, 0.99):
        m, e = dyadic(ratio)
        z = rng.integers(-(1 << 24), 1 << 24, size=2000)
        got = requantize(z, m, e, 32)
        assert np.max(np.abs(got - z * ratio)) <= 0.5 + np.max(np.abs(z)) * ratio * 2.0**-30


# -- parameters -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(lanes=0), "lanes must be an integer in [1, 64], not 0"),
    (dict(lanes=65), "lanes must be an integer in [1, 64]"),
    (dict(lanes=4, channels=6), "channels must be an integer in [1, 4096] and a multiple of lanes"),
    (dict(in_width=1), "in_width must be an integer in [2, 48]"),
    (dict(out_width=33), "out_width must be an integer in [2, 32]"),
    (dict(m_width=32), "m_width must be an integer in [1, 31]"),
    (dict(max_shift=0), "max_shift must be an integer in [1, 127]"),
    (dict(residual=1), "residual must be true or false"),
    (dict(lanes=2.0), "lanes must be an integer"),
    (dict(meta_width=65), "meta_width must be an integer in [0, 64], not 65"),
    (dict(meta_width=-1), "meta_width must be an integer in [0, 64]"),
])
def test_bad_parameters_rejected(kwargs, message):
    # Construction refuses (a refused component is marked, so no UnusedElaboratable warning).
    with pytest.raises(ParamError) as info:
        Requantizer(**kwargs)
    assert message in str(info.value)
    # The unit catalogue's validation (heterotron generate) refuses exactly the same.
    with pytest.raises(ParamError, match=re.escape(message)):
        Requantizer.validate_params(kwargs)


# -- RTL in Amaranth's simulator (fast) -------------------------------------------------------

def rand_meta(rng: np.random.Generator, width: int, n: int) -> list[int]:
    """``n`` random ``width``-bit metadata words (up to 64 bits)."""
    return [int.from_bytes(rng.bytes(8), "little") & ((1 << width) - 1) for _ in range(n)]


def cfg_beat(dut: Requantizer, scales, g: int, k: int) -> dict:
    """The ``cfg`` payload writing channel ``(g, k)`` of ``scales`` (address fields only where
    the layout has them)."""
    address = {"group": g, "lane": k}
    return {name: address[name] if name in address else int(scales[name][g, k])
            for name in dut.cfg_layout.members}


def amaranth_run(dut: Requantizer, scales, z, y=None, seed=0):
    """Write the scale table, stream ``z`` (and ``y``, and random ``meta`` when the unit has
    it) through with random gaps and stalls, check each output beat carries its input beat's
    ``meta``, return the outputs."""
    rng = np.random.default_rng(seed)
    out = []
    meta_in = rand_meta(rng, dut.meta_width, len(z)) if dut.meta_width else []
    meta_out = []

    async def writer(ctx):
        for g in range(dut.groups):
            for k in range(dut.lanes):
                await stream_put(ctx, dut.cfg, cfg_beat(dut, scales, g, k), rng, gap=0.3)
        for n in range(len(z)):
            lanes_z = [int(v) for v in z[n]]
            if dut.residual or dut.meta_width:
                payload = {"z": lanes_z}
                if dut.residual:
                    payload["y"] = [int(v) for v in y[n]]
                if dut.meta_width:
                    payload["meta"] = meta_in[n]
            else:
                payload = lanes_z
            await stream_put(ctx, dut.i, payload, rng, gap=0.3)

    async def reader(ctx):
        for _ in range(len(z)):
            payload = await stream_get(ctx, dut.o, rng, stall=0.3)
            if dut.meta_width:
                meta_out.append(int(payload.meta))
                payload = payload.data
            out.append([int(payload[k]) for k in range(dut.lanes)])

    simulate(dut, writer, reader)
    assert meta_out == meta_in, "metadata must leave with its own beat, untouched"
    return np.array(out)


def expected(dut: Requantizer, scales, z, y):
    """Golden outputs for a stream starting on a row boundary: beat n uses group n % groups."""
    rows = np.arange(len(z)) % dut.groups
    residual = dict(y=y, m_y=scales["m_y"][rows], e_y=scales["e_y"][rows]) if dut.residual else {}
    return requantize(z, scales["m"][rows], scales["e"][rows], dut.out_width, **residual)


@pytest.mark.parametrize("kwargs", [
    dict(lanes=1),
    dict(lanes=4),
    dict(lanes=2, channels=6, residual=True, res_width=22),
    dict(lanes=3, in_width=20, out_width=6, m_width=12, max_shift=40),
    dict(lanes=4, meta_width=64),
    dict(lanes=3, channels=9, residual=True, res_width=48, meta_width=1),
])
def test_rtl_matches_golden_in_amaranth_sim(kwargs):
    dut = Requantizer(**kwargs)
    rng = np.random.default_rng(42)
    shape = (dut.groups, dut.lanes)
    # The shift at which a full-range input fills the output range; go a little either side.
    fill = (dut.in_width - 1) + dut.m_width - (dut.out_width - 1)
    fill_y = (dut.res_width - 1) + dut.m_width - (dut.out_width - 1)
    scales = {
        "m": rng.integers(1 << (dut.m_width - 1), 1 << dut.m_width, size=shape),  # as dyadic()
        "e": rng.integers(fill - 8, fill, size=shape).clip(0, dut.max_shift),
        "m_y": rng.integers(0, 1 << dut.m_width, size=shape),
        "e_y": rng.integers(fill_y - 2, fill_y + 6, size=shape).clip(0, dut.max_shift),
    }
    n = 300
    z = rng.integers(-(1 << (dut.in_width - 1)), 1 << (dut.in_width - 1), size=(n, dut.lanes))
    y = rng.integers(-(1 << (dut.res_width - 1)), 1 << (dut.res_width - 1), size=(n, dut.lanes))
    got = amaranth_run(dut, scales, z, y if dut.residual else None)
    want = expected(dut, scales, z, y)
    assert got.shape == want.shape
    assert (got == want).all(), np.argwhere(got != want)[:5]
    # the stimulus must exercise both saturation and the in-range path
    lim = 1 << (dut.out_width - 1)
    assert ((want == lim - 1) | (want == -lim)).any()
    assert ((want > -lim) & (want < lim - 1)).any()


@pytest.mark.parametrize("kwargs", [
    dict(lanes=1),
    dict(lanes=2, channels=4, residual=True),
    dict(lanes=2, in_width=16, m_width=16, meta_width=3),  # one 18x18 product: fewer stages
    dict(lanes=1, in_width=48, residual=True, res_width=8),  # the widest product sets the pace
])
def test_documented_latency_is_measured_latency(kwargs):
    """The sidecar's latency: cycles from the accepting edge to the output being valid."""
    dut = Requantizer(**kwargs)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()  # the beat is accepted at this edge
        ctx.set(dut.i.valid, 0)
        for cycle in range(1, 10):
            if ctx.get(dut.o.valid):
                seen["latency"] = cycle
                return
            await ctx.tick()

    simulate(dut, tb)
    assert seen["latency"] == dut.latency


def test_cfg_is_one_stream_of_the_documented_layout():
    """``group`` and ``lane`` only where they would be wider than zero bits; ``ready`` is
    always high; no error port (nothing is refused)."""
    for kwargs, widths in [
        (dict(lanes=1), {"m": 31, "e": 6}),
        (dict(lanes=2, m_width=9, max_shift=9), {"lane": 1, "m": 9, "e": 4}),
        (dict(lanes=4, channels=12, residual=True, max_shift=40),
         {"group": 2, "lane": 2, "m": 31, "e": 6, "m_y": 31, "e_y": 6}),
    ]:
        dut = inspect_only(Requantizer(**kwargs))
        layout = dut.cfg_layout
        assert {name: f.width for name, f in layout} == widths
        assert dut.signature.members["cfg"].signature.members["payload"].shape is layout
        assert "error" not in dut.signature.members

    dut = Requantizer(lanes=2)
    seen = []

    async def tb(ctx):
        for _ in range(4):
            seen.append(ctx.get(dut.cfg.ready))
            await ctx.tick()

    simulate(dut, tb)
    assert seen == [1, 1, 1, 1]


@pytest.mark.parametrize("kwargs", [dict(lanes=2), dict(lanes=2, channels=6)])
def test_a_write_applies_to_the_beat_accepted_with_it(kwargs):
    """A beat uses the table as it stands in the cycle it is accepted, that cycle's write
    included (registers with one group, the transparent memory read with several)."""
    dut = Requantizer(**kwargs)
    G, L = dut.groups, dut.lanes
    rng = np.random.default_rng(3)
    steps = 24
    writes = [(int(rng.integers(0, G)), int(rng.integers(0, L)), int(rng.integers(1, 1 << 31)),
               int(rng.integers(28, 36))) if rng.random() < 0.6 else None for _ in range(steps)]
    z = rng.integers(-(1 << 31), 1 << 31, size=(steps, L))
    table = {"m": np.zeros((G, L), dtype=np.int64), "e": np.zeros((G, L), dtype=np.int64)}
    want = []
    for n, w in enumerate(writes):
        if w is not None:
            g, k, mm, ee = w
            table["m"][g, k], table["e"][g, k] = mm, ee
        g = n % G
        want.append(requantize(z[n], table["m"][g], table["e"][g], dut.out_width).tolist())
    got = []

    async def driver(ctx):
        ctx.set(dut.o.ready, 1)
        for n, w in enumerate(writes):
            ctx.set(dut.cfg.valid, w is not None)
            if w is not None:
                fields = {"group": w[0], "lane": w[1], "m": w[2], "e": w[3]}
                ctx.set(dut.cfg.payload, {k: v for k, v in fields.items()
                                          if k in dut.cfg_layout.members})
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, [int(v) for v in z[n]])
            await ctx.tick()  # the beat and the write are taken at this edge
        ctx.set(dut.cfg.valid, 0)
        ctx.set(dut.i.valid, 0)

    async def monitor(ctx):
        while len(got) < steps:
            *_, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append([int(payload[k]) for k in range(L)])

    simulate(dut, driver, monitor)
    assert got == want


def test_meta_leaves_with_its_own_beat_under_stalls():
    """Every output beat carries its input beat's ``meta`` (all 64 bits), beat for beat, with
    random gaps and back-pressure; the data are still golden."""
    dut = Requantizer(lanes=2, channels=4, residual=True, res_width=16, meta_width=64)
    rng = np.random.default_rng(11)
    shape = (dut.groups, dut.lanes)
    scales = {"m": rng.integers(0, 1 << 31, size=shape), "e": rng.integers(30, 40, size=shape),
              "m_y": rng.integers(0, 1 << 31, size=shape),
              "e_y": rng.integers(20, 30, size=shape)}
    n = 200
    z = rng.integers(-(1 << 31), 1 << 31, size=(n, dut.lanes))
    y = rng.integers(-(1 << 15), 1 << 15, size=(n, dut.lanes))
    got = amaranth_run(dut, scales, z, y, seed=5)  # checks the metadata beat for beat
    assert (got == expected(dut, scales, z, y)).all()


SWEEP_CAPS = {"lanes": 6, "channels": 24}


@pytest.mark.parametrize("draw", range(12))
def test_rtl_matches_golden_for_sampled_parameters(draw):
    """Any valid parameter set, not only the hand-picked ones: sampled, edges favoured."""
    params = sample(Requantizer.PARAMS, np.random.default_rng([7, draw]), SWEEP_CAPS)
    dut = Requantizer(**params)
    rng = np.random.default_rng(draw)
    shape = (dut.groups, dut.lanes)
    scales = {
        "m": rng.integers(0, 1 << dut.m_width, size=shape),
        "e": rng.integers(0, dut.max_shift, size=shape, endpoint=True),
        "m_y": rng.integers(0, 1 << dut.m_width, size=shape),
        "e_y": rng.integers(0, dut.max_shift, size=shape, endpoint=True),
    }
    n = 60
    z = rng.integers(-(1 << (dut.in_width - 1)), 1 << (dut.in_width - 1), size=(n, dut.lanes))
    y = rng.integers(-(1 << (dut.res_width - 1)), 1 << (dut.res_width - 1), size=(n, dut.lanes))
    got = amaranth_run(dut, scales, z, y if dut.residual else None, seed=draw)
    want = expected(dut, scales, z, y)
    assert (got == want).all(), (params, np.argwhere(got != want)[:5])


# -- cocotb testbench on real simulators -------------------------------------------------------

COCOTB_CASES = [
    pytest.param({"lanes": "4"}, id="default"),
    pytest.param({"lanes": "1"}, id="lanes1"),
    pytest.param({"lanes": "3", "channels": "12", "residual": "true", "res_width": "22"},
                 id="perchannel-residual"),
    pytest.param({"lanes": "2", "in_width": "48", "out_width": "16", "m_width": "31",
                  "max_shift": "127"}, id="wide"),
    pytest.param({"lanes": "2", "channels": "6", "residual": "true", "res_width": "16",
                  "meta_width": "64"}, id="meta64-residual"),
    pytest.param({"lanes": "3", "in_width": "16", "m_width": "16", "meta_width": "1"},
                 id="meta1-short-product"),
]


@pytest.mark.parametrize("overrides", COCOTB_CASES)
def test_cocotb_verilator(testbench, overrides):
    testbench("requantizer", overrides=overrides, seed=1234)


@pytest.mark.icarus
@pytest.mark.parametrize("overrides", COCOTB_CASES[:3])
def test_cocotb_icarus(testbench, overrides):
    testbench("requantizer", overrides=overrides, seed=99)


@pytest.mark.slow
@pytest.mark.parametrize("draw", range(6))
def test_cocotb_verilator_sampled_parameters(testbench, draw):
    """The full testbench for sampled parameter sets (what `heterotron sim --param` promises)."""
    params = sample(get_unit("requantizer").params, np.random.default_rng([23, draw]), SWEEP_CAPS)
    testbench("requantizer", params, seed=draw, vectors=3000)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("overrides", [
    {"lanes": "8", "channels": "64", "residual": "true", "res_width": "22"},
    {"lanes": "5", "in_width": "16", "out_width": "4", "m_width": "8", "max_shift": "30"},
])
def test_cocotb_verilator_long(testbench, overrides, seed):
    """More seeds, more vectors, larger configurations."""
    testbench("requantizer", overrides=overrides, seed=seed, vectors=40_000)

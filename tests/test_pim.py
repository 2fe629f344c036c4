"""Processing-in-memory tile: the golden model's properties, parameter checks, the cocotb
testbench on Verilator for the defaults and sampled parameters, and the sweep command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heterotron.hdl.contract.params import ParamError, sample_valid
from heterotron.hdl.pim import PimTile
from heterotron.sim.golden.pim import (
    NOISE_SHIFT,
    NOISE_STD,
    PimError,
    PimMatrix,
    PimTileModel,
    fault_hash,
    gain_for_range,
    noise_z,
    rate_code,
    sigma_code,
    xorshift32,
)

# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"cell_bits": 3}, "cell_bits must be 1, 2 or 4"),
    ({"enob": 11}, r"enob must be an integer in \[1, 10\]"),
    ({"lanes": 3}, "rows must be .* multiple of lanes"),
    ({"adc_share": 3}, r"adc_share must divide the tile's 64 bit-lines .* one of \[1, 2, 4, 8"),
    ({"adc_max": 193}, r"adc_max must be 0 \(the full range\) or in \[1, .* = 192\]"),
    ({"adc_range": "auto"}, "adc_range must be one of calibrated, fixed"),
    ({"rows": 512, "lanes": 8}, r"rows must be an integer in \[1, 256\]"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ParamError, match=message):
        PimTile(**kwargs)
    with pytest.raises(ParamError, match=message):
        PimTileModel(**kwargs)


# -- the golden model -------------------------------------------------------------------------


def _exact_params(draw_rows, cols, cb, ib, wb, share_pick):
    slices = -(-(wb - 1) // cb)
    lines = cols * 2 * slices
    divisors = [d for d in range(1, lines + 1) if lines % d == 0]
    share = divisors[share_pick % len(divisors)]
    full = draw_rows * ((1 << cb) - 1)
    enob = max(1, math.ceil(math.log2(full + 1)))
    return dict(lanes=1, rows=draw_rows, cols=cols, cell_bits=cb, input_bits=ib,
                weight_bits=wb, adc_share=share, enob=enob)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.sampled_from([1, 2, 4]), st.integers(2, 12),
       st.integers(2, 10), st.integers(0, 50), st.booleans(), st.sampled_from(["twos", "signmag"]),
       st.integers(0, 2**31))
def test_enough_adc_bits_give_the_exact_product(rows, cols, cb, ib, wb, share_pick, skip, code,
                                                seed):
    """With as many levels as the largest column sum, the default range and no noise or
    faults, the tile is the integer product, skipping or not, in either input code."""
    rng = np.random.default_rng(seed)
    p = _exact_params(rows, cols, cb, ib, wb, share_pick)
    if p["enob"] > 10:
        return
    m = PimTileModel(skip_zero=skip, input_code=code, **p)
    planes = ib * (2 if code == "signmag" else 1)
    w = rng.integers(-(1 << (wb - 1)) + 1, 1 << (wb - 1), (cols, rows))
    x = rng.integers(-(1 << (ib - 1)), 1 << (ib - 1), (5, rows))
    x[1] = 0
    x[2] = np.abs(x[2]) >> (ib // 2)  # high planes zero
    m.program(w)
    assert m.gain == 1 << 12 and m.step() == 1.0
    assert np.array_equal(m.mvm(x), x @ w.T)
    st_ = m.stats
    assert st_.conv_cycles[0] + st_.skip_cycles[0] == 5 * planes * p["adc_share"]
    assert (st_.skip_cycles[0] > 0) == skip  # the zero vector at least
    assert st_.idle_cycles[0] == ((x == 0).all(axis=1).sum() if skip else 0)


def test_sign_magnitude_skips_the_high_planes_of_small_signed_values():
    """Small values of both signs: two's complement fills the high planes with sign bits,
    sign-magnitude leaves them zero; both compute the same product."""
    rng = np.random.default_rng(3)
    x = rng.integers(-7, 8, (20, 64))
    w = rng.integers(-127, 128, (8, 64))
    out = {}
    for code in ("twos", "signmag"):
        m = PimTileModel(enob=8, noise=False, faults=False, input_code=code)
        m.program(w)
        out[code] = (m.mvm(x), int(m.stats.conv_cycles[0]), int(m.stats.skip_cycles[0]))
    assert np.array_equal(out["twos"][0], x @ w.T) and np.array_equal(out["signmag"][0], x @ w.T)
    assert out["twos"][2] == 0  # every plane carries sign bits
    assert out["signmag"][1] == 20 * 6 * 8  # 3 magnitude planes per sign
    assert out["signmag"][1] < out["twos"][1]


def test_low_enob_error_falls_with_bits_and_a_calibrated_range_beats_the_full_one():
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (16, 128))
    w = rng.integers(-127, 128, (32, 128))
    exact = x @ w.T
    errs = []
    for enob in (3, 5, 7):
        m = PimTileModel(rows=128, cols=32, enob=enob, noise=False, faults=False)
        m.program(w)
        errs.append(np.abs(m.mvm(x) * m.step() - exact).mean())
    assert errs[0] > errs[1] > errs[2] > 0
    m = PimTileModel(rows=128, cols=32, enob=5, noise=False, faults=False)
    m.program(w)
    sums = m.column_sums(x[None])
    m.configure(gain=gain_for_range(float(np.percentile(sums[sums > 0], 99.9)), 5))
    assert np.abs(m.mvm(x) * m.step() - exact).mean() < errs[1]


def test_noise_has_the_requested_sigma_and_follows_its_seed():
    """An offset of 30 LSB keeps every code off the clamps; plane 0 is the only one converted
    (x in {0, 1}), so the accumulator's error is the sum over the 8 bit-lines of a column of
    each code's error times 4^slice: its deviation is sigma * sqrt(2 * (1 + 16 + 256 + 4096)),
    and a code's error is round(noise) (the clean values are whole codes)."""
    m = PimTileModel(rows=64, cols=8, enob=8, noise=True, faults=False)
    m.program(np.full((8, 64), 3))
    x = np.where(np.random.default_rng(1).random((400, 64)) < 0.5, 1, 0)
    m.configure(offset=30 << 12)
    assert m.gain == 1 << 12
    clean = m.mvm(x)
    spread = math.sqrt(2 * sum(16 ** s for s in range(4)))
    for sigma in (0.5, 2.0):
        m.configure(sigma_q=sigma_code(sigma), noise_seed=11)
        a = m.mvm(x)
        m.configure(noise_seed=11)
        assert np.array_equal(m.mvm(x), a)  # same seed, same noise
        m.configure(noise_seed=12)
        assert not np.array_equal(m.mvm(x), a)
        per_code = (a - clean).std() / spread
        rounded = math.sqrt(sigma ** 2 + 1 / 12)  # rounding adds about 1/12 LSB^2
        assert 0.85 * rounded < per_code < 1.15 * rounded, (sigma, per_code)


def test_noise_z_matches_its_documented_distribution():
    s = np.array([1], dtype=np.uint64)
    zs = []
    for _ in range(20000):
        s = xorshift32(s)
        zs.append(int(noise_z(s)[0]))
    zs = np.array(zs)
    assert abs(zs.mean()) < 5 and abs(zs.std() / NOISE_STD - 1) < 0.03
    assert zs.min() >= -1020 and zs.max() <= 1020
    q = sigma_code(1.0)
    assert abs(q * NOISE_STD / (1 << (12 + NOISE_SHIFT)) - 1.0) < 0.01


def test_fault_rate_and_stuck_levels():
    m = PimTileModel(rows=256, cols=64, weight_bits=8, cell_bits=2, adc_share=1, faults=True)
    w = np.full((64, 256), 0)
    m.configure(fault_rate=rate_code(0.05), fault_seed=99)
    m.program(w)
    stuck = m.cells[0] != 0
    # stuck at 0 is invisible on zero weights: half the faults show, at the top level
    assert 0.02 < stuck.mean() < 0.03
    assert set(np.unique(m.cells[0][stuck])) == {3}
    # the same seed gives the same cells; another seed other cells
    again = PimTileModel(rows=256, cols=64, cell_bits=2, adc_share=1, faults=True)
    again.configure(fault_rate=rate_code(0.05), fault_seed=99)
    again.program(w)
    assert np.array_equal(again.cells, m.cells)
    assert fault_hash(99, 5) != fault_hash(98, 5)


def test_refused_configuration():
    m = PimTileModel(noise=False, faults=False, adc_range="fixed")
    for kwargs, message in [({"gain": 5}, "fixed"), ({"sigma_q": 3}, "noise was not"),
                            ({"fault_rate": 3}, "faults were not"),
                            ({"offset": 1 << 18}, "offset must be")]:
        with pytest.raises(PimError, match=message):
            m.configure(**kwargs)
    m = PimTileModel()
    with pytest.raises(PimError, match="gain must be"):
        m.configure(gain=0)
    with pytest.raises(PimError, match="weights must be in"):
        m.program(np.full((8, 64), -128))
    with pytest.raises(PimError, match="fit 8 signed bits"):
        m.mvm(np.full((1, 64), 128))


def test_matrix_on_a_grid_of_tiles_is_exact_with_an_exact_adc():
    rng = np.random.default_rng(7)
    w = rng.integers(-127, 128, (70, 300))  # neither a multiple of rows nor of cols
    x = rng.integers(-128, 128, (6, 300))
    mat = PimMatrix(w, rows=64, cols=16, enob=8, adc_share=16, noise=False, faults=False)
    mat.program()
    assert (mat.kb, mat.nb) == (5, 5)
    assert np.array_equal(mat.matmul(x), x @ w.T)
    errs = []
    for enob in (4, 6):
        low = PimMatrix(w, rows=64, cols=16, enob=enob, adc_share=16, noise=False, faults=False)
        low.program()
        errs.append(np.abs(low.matmul(x) - x @ w.T).mean())
    assert errs[0] > errs[1] > 0


# -- cocotb on Verilator ----------------------------------------------------------------------


@pytest.mark.slow  # the 64 x 8 default takes 1.5-4 min to build in Verilator
def test_cocotb_default(testbench):
    testbench("pim", seed=21)


CAPS = {"lanes": 8, "rows": 32, "cols": 4, "adc_share": 16, "adc_max": 100}


def _sampled(draw: int) -> dict:
    return sample_valid(PimTile, np.random.default_rng([71, draw]), CAPS)


@pytest.mark.parametrize("overrides", [
    pytest.param({"enob": "1", "cell_bits": "1", "adc_share": "1", "rows": "16", "cols": "2",
                  "noise": "false", "skip_zero": "false"},
                 marks=pytest.mark.slow),  # 47 s
    {"enob": "10", "cell_bits": "4", "adc_range": "fixed", "adc_max": "300", "rows": "24",
     "cols": "3", "input_bits": "5", "adc_share": "3", "faults": "false"},
    {"input_code": "signmag", "rows": "16", "cols": "2", "input_bits": "6", "enob": "5",
     "lanes": "4"},
])
def test_cocotb_edges(testbench, overrides):
    testbench("pim", overrides=overrides, seed=5, vectors=24)


def test_cocotb_sampled_parameters(testbench):
    testbench("pim", _sampled(0), seed=3, vectors=24)


@pytest.mark.slow
@pytest.mark.parametrize("draw", [1, 2, 3, 4])
def test_cocotb_sampled_parameters_slow(testbench, draw):
    testbench("pim", _sampled(draw), seed=draw, vectors=32)


@pytest.mark.slow
@pytest.mark.icarus
def test_cocotb_icarus(testbench):
    """The testbench keeps to the stream rules on a second simulator (and the tile leaves
    no register X after reset there)."""
    testbench("pim", overrides={"rows": "8", "cols": "2", "lanes": "4", "input_code": "signmag"},
              seed=5, vectors=12)


# -- the study command ------------------------------------------------------------------------


@pytest.mark.slow
def test_pim_sweep_quick_json(capsys, tmp_path):
    from heterotron.scripts.cli import main

    assert main(["pim-sweep", "--quick", "--sentences", "2", "--calibration", "2", "--json",
                 "-o", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out)
    pts = {p["label"]: p for p in res["points"]}
    exact = pts["exact ADC (9 bits, full range)"]
    assert exact["cosine_vs_int_min"] > 0.999999  # the mapping is the integer encoder
    e3, e8 = pts["enob 3, 2-bit cells"], pts["enob 8, 2-bit cells"]
    assert e8["final_cosine_mean"] > e3["final_cosine_mean"]
    assert set(res["cycles"]) == {"twos", "signmag"}
    for code in ("twos", "signmag"):
        assert set(res["cycles"][code]) == {"qkv", "o", "fc1", "fc2"}
    # noise on two's complement's sign-extension planes is weighted up to 2^(bits-1);
    # sign-magnitude does not convert those planes
    twos = pts["enob 8, noise 0.5 LSB"]["final_cosine_mean"]
    signmag = pts["enob 8, noise 0.5 LSB, sign-magnitude inputs"]["final_cosine_mean"]
    assert signmag > twos + 0.2
    fc2 = res["cycles"]["signmag"]["fc2"]  # GELU outputs: small magnitudes, high planes skipped
    assert fc2["cycles_per_mvm_skip"] < fc2["cycles_per_mvm_dense"]
    assert (tmp_path / "pim-sweep.png").stat().st_size > 10_000

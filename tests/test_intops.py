"""Integer golden ops against their float counterparts, within stated bounds."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heterotron.sim.golden.bert_float import gelu, layer_norm, softmax
from heterotron.sim.golden.intops import (
    EXP_C,
    EXP_MAX_WIDTH,
    EXP_MIN_BITS,
    GELU_ERROR_BOUND,
    GELU_MAX_SCALE,
    LN_ERROR_ABS,
    LN_ERROR_REL,
    RECIP_NORM,
    ExpConsts,
    GeluConsts,
    attention_int,
    exp_consts,
    exp_consts_problem,
    exp_width_for,
    gelu_consts,
    gelu_consts_problem,
    i_exp,
    i_gelu,
    isqrt,
    layernorm_consts,
    layernorm_core,
    layernorm_int,
    layernorm_shift,
    linear_int,
    quantize_per_channel,
    reciprocal_divfree,
    reciprocal_ibert,
    requant_consts,
    softmax_error_bound,
    softmax_int,
)

# -- integer square root ------------------------------------------------------------------------


def test_isqrt_exact_at_every_square_boundary():
    roots = [0, 1, 2, 3, 1000, (1 << 15) - 1, 1 << 15, (1 << 30) - 1, 1 << 30, (1 << 31) - 1]
    roots += [int(r) for r in np.random.default_rng(0).integers(0, 1 << 31, 2000)]
    n = []
    for r in roots:
        for v in (r * r - 1, r * r, r * r + 1, (r + 1) * (r + 1) - 1):
            if 0 <= v < (1 << 62):
                n.append(v)
    n.append((1 << 62) - 1)
    got = isqrt(np.array(n, dtype=np.int64))
    assert got.tolist() == [math.isqrt(v) for v in n]


@given(st.integers(0, (1 << 62) - 1))
def test_isqrt_matches_math_isqrt(n):
    assert int(isqrt(np.array([n]))[0]) == math.isqrt(n)


def test_isqrt_rejects_out_of_range():
    with pytest.raises(ValueError):
        isqrt(np.array([-1]))


# -- i-exp and Softmax -----------------------------------------------------------------------------


#: The input scales a Softmax unit accepts: c = floor(EXP_C / S^2) in [2^16, 2^30).
S_FINEST = math.sqrt(EXP_C / ((1 << EXP_MAX_WIDTH) - 1))
S_COARSEST = math.sqrt(EXP_C / (1 << EXP_MIN_BITS))


@settings(max_examples=40)
@given(st.floats(S_FINEST, S_COARSEST))
def test_i_exp_close_to_exp(scale):
    k = exp_consts(scale)
    x = -np.arange(0, int(12 / scale), max(1, int(0.01 / scale)))
    err = np.abs(i_exp(x, k) * k.out_scale - np.exp(x * scale))
    # I-BERT's polynomial is ~0.002 off on (-ln2, 0]; flooring x0 = -ln2 / S moves ln 2 by up
    # to one input step S, so after q halvings the value is off by up to q 2^-q S <= S / 2.
    assert err.max() < 0.002 + scale / 2


def test_i_exp_x0_floor_costs_up_to_half_a_step():
    """The x0 floor's share is real (the issue measured 0.45 S): the S / 2 above is needed."""
    worst = 0.0
    for scale in np.linspace(S_COARSEST / 2, S_COARSEST, 40):
        k = exp_consts(float(scale))
        x = -np.arange(0, int(4 / scale))
        err = np.abs(i_exp(x, k) * k.out_scale - np.exp(x * scale)).max()
        worst = max(worst, (err - 0.002) / scale)
    assert 0.25 < worst < 0.5


def _rows(rng, kind: int, n: int, length: int, scale: float) -> np.ndarray:
    """Score rows (int, at ``scale``): diffuse, narrow, peaked, uniform over 30 units, all
    equal, or one peak above ``length - 1`` equal scores (the tail at one random offset: where
    x0's floor errs the same way on every tail element)."""
    if kind == 5:
        x = np.zeros((n, length))
        x[:, 1:] = -rng.uniform(0.1, 14, (n, 1))
    elif kind == 0:
        x = rng.normal(0, 3, (n, length))
    elif kind == 1:
        x = rng.normal(0, 0.3, (n, length))
    elif kind == 2:
        x = rng.normal(0, 3, (n, length))
        x[:, rng.integers(0, length)] += 8
    elif kind == 3:
        x = rng.uniform(-30, 0, (n, length))
    else:
        x = np.zeros((n, length))
    return np.clip(np.round(x / scale + rng.integers(-(1 << 20), 1 << 20)),
                   -(1 << 31), (1 << 31) - 1).astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(st.floats(EXP_MIN_BITS, EXP_MAX_WIDTH - 0.001), st.integers(1, 4096),
       st.integers(0, 5), st.sampled_from([8, 12, 16]), st.integers(0, 2**31))
def test_softmax_within_documented_bound(c_bits, length, kind, out_bits, seed):
    """Every accepted scale (c from 2^16 to 2^30), every row length up to 4096 (the longest
    max_len), both variants: within softmax_error_bound of float, and the row sums to
    2^out_bits within the outputs' rounding and the normalised divisor's truncation."""
    rng = np.random.default_rng(seed)
    scale = math.sqrt(EXP_C / 2.0**c_bits)
    k = exp_consts(scale)
    x = _rows(rng, kind, max(1, 2048 // length), length, scale)
    want = softmax(x * scale)
    bound = softmax_error_bound(k, length, out_bits)
    for variant in ("ibert", "divfree"):
        p = softmax_int(x, k, variant=variant, out_bits=out_bits)
        assert p.min() >= 0 and p.max() <= (1 << out_bits) - 1
        err = np.abs(p / 2**out_bits - want).max()
        assert err <= bound, (variant, err, bound)
        total = p.sum(axis=-1)
        # each output rounds by half an LSB; ibert's divisor sum >> sh may drop 2^-15 of it
        assert np.all(np.abs(total - (1 << out_bits))
                      <= length / 2 + 1 + 2.0 ** (out_bits - 15)), total


@pytest.mark.parametrize("scale", [S_FINEST * 1.0001, S_COARSEST * 0.9999])
@pytest.mark.parametrize("length", [1, 2, 4095, 4096])
def test_softmax_at_the_edges_of_the_accepted_range(scale, length):
    """The finest scale (c just below 2^30, the widest exp_width) and the coarsest (c just
    above 2^16), the shortest and the longest rows: within the bound, both variants."""
    k = exp_consts(scale)
    assert (1 << EXP_MIN_BITS) <= k.c < (1 << EXP_MAX_WIDTH)
    rng = np.random.default_rng(length)
    for kind in range(6):
        x = _rows(rng, kind, 2, length, scale)
        want = softmax(x * scale)
        for variant in ("ibert", "divfree"):
            p = softmax_int(x, k, variant=variant)
            assert np.abs(p / 256 - want).max() <= softmax_error_bound(k, length), (kind, variant)
    with pytest.raises(ValueError):
        exp_consts(S_FINEST * 0.999)
    with pytest.raises(ValueError):
        exp_consts(S_COARSEST * 1.001)


def test_softmax_keeps_its_precision_on_long_rows_at_minilm_scales():
    """all-MiniLM-L6-v2's score constants are 22 to 27 bits wide (22-25 calibrated on short
    and long inputs, up to 27 on short sentences only): at those scales, rows of
    every length from 1 to 512 and long ones to 4096 stay within the bound (the unnormalised
    floor(2^32 / sum) returned all zeros here once the sum passed 2^32)."""
    rng = np.random.default_rng(5)
    lengths = list(range(1, 513)) + sorted(rng.integers(513, 4097, 40).tolist()) + [4096]
    for c_bits in (22, 25, 26.9):
        scale = math.sqrt(EXP_C / 2.0**c_bits)
        k = exp_consts(scale)
        for length in lengths:
            bound = softmax_error_bound(k, length)
            x = _rows(rng, length % 6, 1, length, scale)
            want = softmax(x * scale)
            for variant in ("ibert", "divfree"):
                p = softmax_int(x, k, variant=variant)
                assert np.abs(p / 256 - want).max() <= bound, (c_bits, length, variant)


def test_softmax_reproducers_of_the_reciprocal_overflow():
    """Issue 17: a row of 16 equal scores at S = 1e-4 (sum 16 c > 2^32) came out all 0."""
    k = exp_consts(1e-4)
    assert 16 * k.c > 1 << 32
    for variant in ("ibert", "divfree"):
        assert softmax_int(np.zeros((1, 16), dtype=np.int64), k,
                           variant=variant).tolist() == [[16] * 16]


def test_softmax_top_corner_saturates_to_255():
    k = exp_consts(1e-3)
    row = np.array([[0, -100000, -100000, -100000]])
    assert softmax_int(row, k).tolist() == [[255, 0, 0, 0]]
    # all equal: the same value everywhere, 256 / n rounded (the reciprocal's floor may tip
    # an exact half down), saturated for n = 1
    for n in (1, 3, 4, 100, 512):
        p = softmax_int(np.zeros((1, n), dtype=np.int64), k).ravel()
        assert len(set(p.tolist())) == 1
        assert abs(int(p[0]) - min(255, 256 / n)) <= 0.5


def test_softmax_mask_removes_elements():
    k = exp_consts(1e-3)
    x = np.array([[500, 0, 9000, -200]])
    mask = np.array([[True, True, False, True]])
    for variant in ("ibert", "divfree"):
        got = softmax_int(x, k, mask=mask, variant=variant)
        assert got[0, 2] == 0
        assert got[0, [0, 1, 3]].tolist() == softmax_int(x[:, [0, 1, 3]], k,
                                                         variant=variant).ravel().tolist()


def test_softmax_fully_masked_row_is_zero_in_both_variants():
    """Issue 17: ibert returned zeros with a divide-by-zero warning, divfree raised."""
    k = exp_consts(1e-3)
    x = np.array([[5, -7, 300], [1, 2, 3]])
    mask = np.array([[False, False, False], [True, False, True]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for variant in ("ibert", "divfree"):
            got = softmax_int(x, k, mask=mask, variant=variant)
            assert got[0].tolist() == [0, 0, 0]
            assert got[1].tolist() == softmax_int(x[1:, [0, 2]], k, variant=variant
                                                  ).ravel().tolist()[:1] + [0] + \
                softmax_int(x[1:, [0, 2]], k, variant=variant).ravel().tolist()[1:]


@pytest.mark.parametrize("scale, match", [
    (2.0, r"scale 2.0 gives c = 0: .* must be in \[5.099e-05, 0.006527\]"),
    (0.05, r"gives c = 1116"),
    (1e-5, r"gives c = 279211474\d\d: "),
    (0.0, "positive finite"),
    (float("nan"), "positive finite"),
])
def test_exp_consts_refuses_scales_no_unit_takes(scale, match):
    with pytest.raises(ValueError, match=match):
        exp_consts(scale)


def test_exp_consts_names_the_unit_width():
    with pytest.raises(ValueError, match=r"with exp_width = 24 .* 2\^24 - 1"):
        exp_consts(2e-4, exp_width=24)
    assert exp_consts(2e-4, exp_width=27).c < 1 << 27
    assert exp_width_for(2e-4) == 27


@pytest.mark.parametrize("k, match", [
    (ExpConsts(-10, 20, 0, 0.0), r"c must be in \[2\^16"),
    (ExpConsts(-10, 20, (1 << 16) - 1, 0.0), r"c must be in \[2\^16"),
    (ExpConsts(-10, 20, 1 << 42, 0.0), r"2\^30 - 1"),
    (ExpConsts(0, 20, 1 << 20, 0.0), "x0 must be negative"),
    (ExpConsts(-10, 9, 1 << 20, 0.0), "b must be at least -x0 = 10"),
])
def test_softmax_refuses_what_the_unit_refuses(k, match):
    """The golden raises where the RTL's configuration port flags CONFIG (same rule,
    exp_consts_problem), instead of returning zeros with a RuntimeWarning."""
    with pytest.raises(ValueError, match=match):
        softmax_int(np.zeros((1, 4), dtype=np.int64), k)
    assert exp_consts_problem(k.x0, k.b, k.c) is not None


def test_softmax_refuses_inputs_it_cannot_take():
    k = exp_consts(1e-3)
    with pytest.raises(TypeError, match="integer"):
        softmax_int(np.array([[0.5, 1.5]]), k)
    with pytest.raises(ValueError, match="32-bit"):
        softmax_int(np.array([[0, 1 << 31]]), k)
    with pytest.raises(ValueError, match="<= 0"):
        i_exp(np.array([1]), k)


@given(st.integers(1, 1 << 45))
def test_both_reciprocals_close_to_the_normalised_quotient(s):
    """Both variants approximate 2^(32 + sh) / s: ibert's divisor s >> sh drops bits below
    its top 16 (2^-15 relative), divfree's Newton steps are within 2^-24 (plus 2 LSB)."""
    sh = max(0, s.bit_length() - RECIP_NORM)
    exact = (1 << (32 + sh)) // s
    ibert = int(reciprocal_ibert(np.array([s]))[0])
    assert ibert == (1 << 32) // (s >> sh)
    assert exact <= ibert <= exact * (1 + 2.0**-15) + 1
    assert ibert >= 1 << (32 - RECIP_NORM)  # 17 significant bits or more
    got = int(reciprocal_divfree(np.array([s]))[0])
    assert abs(got - exact) <= exact * 2.0**-24 + 2


def test_divfree_softmax_within_one_lsb_of_ibert():
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(0, 3, (200, 64)) / 1e-3).astype(np.int64)
    k = exp_consts(1e-3)
    diff = softmax_int(x, k, variant="divfree") - softmax_int(x, k, variant="ibert")
    assert np.abs(diff).max() <= 1


def test_softmax_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        softmax_int(np.zeros((1, 2), dtype=np.int64), exp_consts(1e-3), variant="float")


# -- i-GELU ----------------------------------------------------------------------------------------


#: The finest scale the Gelu unit's widest port (in_width 24) holds constants for.
GELU_S_FINEST = 9.8e-9


@settings(max_examples=30, deadline=None)
@given(st.floats(math.log2(GELU_S_FINEST), math.log2(GELU_MAX_SCALE * 0.9999)))
def test_i_gelu_within_documented_bound_over_accepted_scales(log_scale):
    scale = 2.0**log_scale
    k = gelu_consts(scale)
    x = np.unique(np.linspace(-8 / scale, 8 / scale, 40001).astype(np.int64))
    x = x[np.abs(x) < 1 << 23]  # the widest port's inputs
    got = np.asarray(i_gelu(x, k), dtype=np.float64) * k.out_scale
    assert np.abs(got - gelu(x * scale)).max() <= GELU_ERROR_BOUND
    # beyond 8 (where GELU is x) the relative error is below 1 / |one|
    big = np.array([int(9 / scale), int(20 / scale)])
    big = big[big < 1 << 23]
    if big.size:
        rel = np.abs(np.asarray(i_gelu(big, k), dtype=np.float64) * k.out_scale / (big * scale) - 1)
        assert rel.max() <= 1 / abs(k.one) + 1e-6


def test_i_gelu_exact_where_int64_would_wrap():
    """Issue 17: at S = 1e-8 (accepted by a 24-bit port) the int64 path wrapped, 10x off."""
    k = gelu_consts(1e-8)
    for x in (2**23 - 1, -(2**23), 12345678, 1, 0):
        y = ((min(abs(x), -k.b) + k.b) ** 2 + k.c) * (1 if x >= 0 else -1) // (1 << 14)
        assert int(i_gelu(np.array([x]), k)[0]) == -(x * (y + k.one))


def test_i_gelu_refuses_coarse_scales_and_floats():
    """Fed int8 at scale 0.05 the fixed 2^14 shift is wrong by tens (the brief's warning): the
    constants are refused by gelu_consts, by i_gelu and (same rule) by the unit."""
    with pytest.raises(ValueError, match="too coarse: the scale must be below 0.001287"):
        gelu_consts(0.05)
    assert gelu_consts_problem(-50, -2771, -1) is not None
    with pytest.raises(ValueError, match="one must be at most -2\\^8"):
        i_gelu(np.arange(-127, 128), GeluConsts(-50, -2771, -1, 0.0))
    with pytest.raises(TypeError, match="integer"):
        i_gelu(np.array([2.9]), gelu_consts(1e-3))


# -- LayerNorm ----------------------------------------------------------------------------------


@settings(max_examples=20)
@given(st.integers(2, 1024), st.floats(0.05, 20), st.integers(0, 2**31))
def test_layernorm_close_to_float(d, spread, seed):
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.2, 1.5, d) * rng.choice([-1, 1], d)
    beta = rng.normal(0, 0.3, d)
    s_in = spread * 4 / (1 << 21)
    x = np.round(rng.normal(rng.normal(0, spread), spread, (3, d)) / s_in).astype(np.int64)
    s_out = 1 / 4096
    k = layernorm_consts(gamma, beta, s_out, out_bits=16)
    got = layernorm_int(x, k) * s_out
    want = layer_norm(x * s_in, gamma, beta, 1e-12)
    assert np.abs(got - want).max() < 0.01 + s_out


def test_layernorm_constant_row_gives_beta():
    gamma, beta = np.ones(8), np.linspace(-1, 1, 8)
    k = layernorm_consts(gamma, beta, 1 / 64)
    got = layernorm_int(np.full((1, 8), 1234, dtype=np.int64), k)
    assert np.abs(got / 64 - beta).max() <= 1 / 64


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 1024), st.floats(-1.7, 21), st.integers(0, 2**31))
def test_layernorm_within_documented_bound(d, log_sd, seed):
    """Rows of every length the unit takes, spreads from a fraction of an LSB to 2^21, at any
    offset in 24 bits: the normalised value is within LN_ERROR_ABS / sd + LN_ERROR_REL |y|."""
    rng = np.random.default_rng(seed)
    sd = 2.0**log_sd
    x = rng.normal(0, sd, (4, d)) + rng.integers(-(1 << 21), 1 << 21)
    x[:, rng.integers(0, d)] += rng.choice([0, 3, -6]) * sd  # an outlier now and then
    x = np.clip(np.round(x), -(1 << 23), (1 << 23) - 1).astype(np.int64)
    k = layernorm_consts(np.ones(d), np.zeros(d), 1.0)
    assert k.shift == 0
    y = layernorm_core(x, k) * math.sqrt(d) / 2**30
    xf = x.astype(np.float64)
    s = xf.std(axis=1, keepdims=True)
    keep = s[:, 0] > 0
    ref = (xf - xf.mean(axis=1, keepdims=True))[keep] / s[keep]
    bound = LN_ERROR_ABS / s[keep] + LN_ERROR_REL * np.abs(ref)
    assert np.all(np.abs(y[keep] - ref) <= bound)
    assert np.all(y[~keep] == 0)  # a constant row: the bias alone


def test_layernorm_keeps_rows_of_small_spread():
    """Issue 17: one element 3 LSB above 1023 zeros (the last at +32 sigma) came out all 0
    with the fixed pre-shift of 2."""
    x = np.r_[np.zeros(1023, dtype=np.int64), 3]
    k = layernorm_consts(np.ones(1024), np.zeros(1024), 4 / 127)
    got = layernorm_int(x, k)
    assert got[-1] == 127 and np.all(got[:-1] == 0)
    y = layernorm_core(x, k) * 32 / 2**30
    assert abs(y[-1] - (3 - 3 / 1024) / np.std(x)) <= LN_ERROR_ABS / np.std(x) + 1e-3


def test_layernorm_shift_from_the_width():
    assert layernorm_shift(24, 1024) == 0 and layernorm_shift(2, 1) == 0
    assert layernorm_shift(31, 1024) == 6  # 2 (31 - 6) + 11 = 61 bits
    with pytest.raises(ValueError, match="in_bits must be in"):
        layernorm_shift(40, 8)


def test_layernorm_refuses_what_it_cannot_compute():
    k = layernorm_consts(np.ones(4), np.zeros(4), 1 / 64)
    with pytest.raises(TypeError, match="integer"):
        layernorm_int(np.array([[0.5, 1.5, 2.5, 3.5]]), k)
    with pytest.raises(ValueError, match="below 2\\^31"):
        layernorm_int(np.array([[0, 0, 0, 1 << 35]]), k)
    wide = layernorm_consts(np.ones(1024), np.zeros(1024), 1.0, shift=0)
    x = np.zeros((1, 1024), dtype=np.int64)
    x[0, ::2] = (1 << 30) - 1  # deviations of 2^29 over 1024 channels: a variance past 2^62
    with pytest.raises(ValueError, match="too wide for shift 0"):
        layernorm_core(x, wide)


def test_layernorm_consts_refuses_a_bias_wider_than_the_unit_holds():
    """Issue 17: an out-of-range bias was cast to int64 with only a warning."""
    gamma, beta = np.ones(8), np.zeros(8)
    beta[5] = 1e4  # beta / gamma / (sqrt(8) / 2^30) ~ 3.8e12: 43 signed bits
    with pytest.raises(ValueError, match="channel 5 .* needs 43 signed bits, more than "
                                         "bias_bits = 40"):
        layernorm_consts(gamma, beta, 1 / 64, bias_bits=40)
    assert layernorm_consts(gamma, beta, 1 / 64, bias_bits=43).bias[5] < 1 << 42
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        beta[5] = 1e30
        with pytest.raises(ValueError, match="channel 5"):
            layernorm_consts(gamma, beta, 1 / 64)
    with pytest.raises(ValueError, match="finite"):
        layernorm_consts(gamma, np.full(8, np.nan), 1 / 64)


# -- requantisation constants -------------------------------------------------------------------


def test_requant_consts_refuses_what_it_cannot_represent():
    """Issue 17: ratios near 2^-63.5 gave (1, 63), up to 100% off; 2^31 - 0.25 was refused by a
    message saying ratios below 2^31 work."""
    for r in (2.0**-63.5, 2.0**-60, 2.0**-57.5):
        with pytest.raises(ValueError, match="too small for max_shift=63: the mantissa "
                                             "left, .* is below 2\\^7"):
            requant_consts(r)
    with pytest.raises(ValueError, match="below 2\\^7"):  # would round up to m = 128, 0.39% off
        requant_consts(127.5 * 2.0**-63)
    m, e = requant_consts(2.0**-56 * 1.3)
    assert m >= 128 and abs(m / 2.0**e / (2.0**-56 * 1.3) - 1) <= 2.0**-8
    with pytest.raises(ValueError, match="ratios below 2\\^31 - 0.5 work"):
        requant_consts(2.0**31 - 0.25)
    assert requant_consts(2.0**31 - 0.75) == (2**31 - 1, 0)


@settings(max_examples=200)
@given(st.floats(-56.0, 30.9))
def test_requant_consts_within_2_to_minus_8_everywhere_it_answers(log_r):
    r = 2.0**log_r
    m, e = requant_consts(r)
    assert abs(m / 2.0 ** int(e) - r) <= r * 2.0**-8


# -- quantisation and linear --------------------------------------------------------------------


def test_per_channel_quantisation_error_is_half_a_step():
    w = np.random.default_rng(2).normal(0, 0.05, (32, 64))
    wi, s = quantize_per_channel(w)
    assert np.abs(wi).max() <= 127
    assert np.all(np.abs(wi * s[:, None] - w) <= s[:, None] / 2 + 1e-12)


def test_linear_int_is_exact():
    rng = np.random.default_rng(3)
    x, w, b = (rng.integers(-128, 128, (5, 384)), rng.integers(-127, 128, (16, 384)),
               rng.integers(-(1 << 20), 1 << 20, 16))
    assert np.array_equal(linear_int(x, w, b), x @ w.T + b)


@pytest.mark.parametrize("lim, k", [(127, 384), (2047, 1536), (1 << 20, 64), (1 << 40, 8)])
def test_linear_int_float_path_is_exact(lim, k):
    """The float64 fast path where it is exact, int64 beyond (the last case's partial sums
    pass 2^53)."""
    rng = np.random.default_rng(lim % 1000 + k)
    x = rng.integers(-lim, lim + 1, (17, k))
    w = rng.integers(-127, 128, (9, k))
    x[0] = lim  # extremes: every product at its largest
    w[0] = 127
    want = x.astype(object) @ w.astype(object).T  # Python integers: exact
    got = linear_int(x, w)
    assert got.dtype == np.int64 and np.array_equal(got.astype(object), want)


def test_attention_int_close_to_float_attention():
    rng = np.random.default_rng(5)
    T, H, heads = 20, 64, 4
    s_q = s_k = s_v = 0.05
    q, k, v = (rng.integers(-127, 128, (T, H)) for _ in range(3))
    s_scores = s_q * s_k / math.sqrt(H // heads)
    s_c = s_v  # a convex combination of V rows never exceeds max |V|
    m, e = requant_consts(s_v / 256 / s_c)
    got = attention_int(q, k, v, heads, exp_consts(s_scores), m, e) * s_c
    qf, kf, vf = (a.reshape(T, heads, -1).transpose(1, 0, 2) * 0.05 for a in (q, k, v))
    att = softmax(qf @ kf.transpose(0, 2, 1) / math.sqrt(H // heads)) @ vf
    want = att.transpose(1, 0, 2).reshape(T, H)
    assert np.abs(got - want).max() < 0.15  # int8 context: step 0.05, probs 1/256
    assert np.abs(got - want).mean() < 0.02

"""The thermal model of the architecture-scale model (:mod:`heterotron.sim.scale.thermal`):
conservation of energy, a 1D case against series resistances worked out by hand, lateral
symmetry, the order of the tiers' temperatures, a lumped transient against its exponential,
transients converging to the steady state, linearity, validation, and speed."""

from __future__ import annotations

import dataclasses
import math
import re
import time

import numpy as np
import pytest

from heterotron.sim.scale.thermal import (
    C_FACTOR,
    Stack,
    network,
    steady,
    transient,
)


def _stack(**kw) -> Stack:
    geometry = {"tiers": 1, "nx": 4, "ny": 4, "tile_w": 1e-3, "tile_h": 1e-3}
    return Stack(**(geometry | kw))


# -- the network ----------------------------------------------------------------------------

def test_layer_table_runs_from_the_sink_outward():
    s = _stack(tiers=3)
    names = [la.name for la in s.layers()]
    assert names == ["sink", "spreader", "interface",
                     "tier0.bulk", "tier0.active", "bond0",
                     "tier1.bulk", "tier1.active", "bond1",
                     "tier2.bulk", "tier2.active"]
    assert s.n_layers == len(names) == 3 * 3 + 2
    assert [names[s.active_layer(i)] for i in range(3)] == [f"tier{i}.active" for i in range(3)]
    assert [la.name for la in _stack().layers()][-2:] == ["tier0.bulk", "tier0.active"]


def test_network_is_symmetric_and_its_rows_sum_to_the_ambient_conductance():
    s = _stack(tiers=2, nx=5, ny=3, tile_w=1e-3, tile_h=2e-3)
    net = network(s)
    g = net.conductance.toarray()
    assert np.allclose(g, g.T, rtol=0, atol=1e-12 * np.abs(g).max())
    off = g - np.diag(np.diag(g))
    assert (off <= 0).all()
    assert np.allclose(g.sum(axis=1), net.g_ambient, rtol=0, atol=1e-9 * np.abs(g).max())
    # r_convec shared by area over the sink layer (index 0) only
    assert math.isclose(net.g_ambient.sum(), 1 / s.r_convec, rel_tol=1e-12)
    assert (net.g_ambient[s.nx * s.ny:] == 0).all()
    # heat capacity: each layer p t A over the die, plus the sink's C_FACTOR * c_convec
    want = sum(la.heat_capacity * la.thickness for la in s.layers()) * s.die_area
    assert math.isclose(net.capacitance.sum(), want + C_FACTOR * s.c_convec, rel_tol=1e-12)


def test_network_conductances_match_the_formulas():
    s = _stack(tiers=2, nx=3, ny=2, tile_w=1e-3, tile_h=2.5e-3)
    g = network(s).conductance.toarray()
    w, h = s.tile_w, s.tile_h

    def node(layer, row, col):
        return (layer * s.ny + row) * s.nx + col

    bulk, active, bond = 3, 4, 5  # tier 0's bulk and active layers, and the bond above
    # along a row: k t h / w; along a column: k t w / h
    assert -g[node(bulk, 1, 0), node(bulk, 1, 1)] == pytest.approx(
        s.k_chip * s.t_bulk * h / w, rel=1e-12)
    assert -g[node(bulk, 0, 2), node(bulk, 1, 2)] == pytest.approx(
        s.k_chip * s.t_bulk * w / h, rel=1e-12)
    assert -g[node(0, 0, 0), node(0, 0, 1)] == pytest.approx(
        s.k_sink * s.t_sink * h / w, rel=1e-12)
    # vertical: two half-thicknesses in series
    assert -g[node(active, 1, 1), node(bond, 1, 1)] == pytest.approx(
        w * h / (s.t_active / (2 * s.k_chip) + s.t_bond / (2 * s.k_bond)), rel=1e-12)
    # no diagonal or skipping neighbours
    assert g[node(bulk, 0, 0), node(bulk, 1, 1)] == 0
    assert g[node(bulk, 0, 0), node(bond, 0, 0)] == 0
    assert g[node(bulk, 0, 0), node(bulk, 0, 2)] == 0


def test_rotating_the_floorplan_rotates_the_temperatures():
    """An ``nx`` x ``ny`` grid of ``w`` x ``h`` tiles turned a quarter is an ``ny`` x ``nx``
    grid of ``h`` x ``w`` tiles: with the power map transposed, the temperatures are."""
    power = np.random.default_rng(8).uniform(0, 0.5, size=(2, 3, 5))
    a = steady(_stack(tiers=2, nx=5, ny=3, tile_w=0.6e-3, tile_h=1.7e-3), power)
    b = steady(_stack(tiers=2, nx=3, ny=5, tile_w=1.7e-3, tile_h=0.6e-3),
               power.transpose(0, 2, 1))
    assert np.allclose(b.temperature, a.temperature.transpose(0, 2, 1), rtol=0, atol=1e-9)


# -- steady state ---------------------------------------------------------------------------

def test_energy_conservation_random_power_three_tiers():
    s = _stack(tiers=3, nx=6, ny=5, tile_w=0.8e-3, tile_h=1.2e-3)
    rng = np.random.default_rng(1)
    power = rng.uniform(0, 0.5, size=(3, 5, 6))
    r = steady(s, power)
    assert r.total_power == pytest.approx(power.sum(), rel=1e-15)
    assert r.heat_to_ambient == pytest.approx(power.sum(), rel=1e-10)
    # the same, from the sink layer's temperatures and the conductances to ambient
    g_amb = network(s).g_ambient[: s.nx * s.ny].reshape(s.ny, s.nx)
    assert (g_amb * (r.temperature[0] - s.ambient)).sum() == pytest.approx(power.sum(),
                                                                           rel=1e-10)
    assert r.peak == r.temperature.max() == r.tier_peak.max()
    assert r.temperature.min() > s.ambient


def test_one_dimensional_uniform_power_matches_series_resistances():
    """Uniform power, so no lateral flow: a column of series resistances. Nodes sit at the
    middle of their layers, so between two neighbouring nodes the temperature rises by half
    the rise across each of the two layers, a rise of ``P t / (k A)`` across a whole layer."""
    s = _stack(nx=3, ny=4, tile_w=1.5e-3, tile_h=1e-3)
    per_cell = 0.75
    p_total = per_cell * s.nx * s.ny
    area = s.nx * s.ny * s.tile_w * s.tile_h
    r = steady(s, np.full((1, s.ny, s.nx), per_cell))
    t = r.temperature

    for layer in t:  # every cell of a layer at the same temperature
        assert np.ptp(layer) < 1e-9
    col = t[:, 0, 0]
    assert col[0] == pytest.approx(s.ambient + p_total * s.r_convec, abs=1e-9)

    rise = [p_total * la.thickness / (la.conductivity * area) for la in s.layers()]
    for lo in range(s.n_layers - 1):
        assert col[lo + 1] - col[lo] == pytest.approx((rise[lo] + rise[lo + 1]) / 2,
                                                      rel=1e-9, abs=1e-12)

    # the junction (tier 0's active layer), by hand: convection, half the sink, all of the
    # spreader, the TIM and the bulk, half the active layer
    r_series = (s.r_convec
                + (s.t_sink / 2) / (s.k_sink * area)
                + s.t_spreader / (s.k_spreader * area)
                + s.t_interface / (s.k_interface * area)
                + s.t_bulk / (s.k_chip * area)
                + (s.t_active / 2) / (s.k_chip * area))
    junction = s.ambient + p_total * r_series
    assert r.tier_peak[0] == pytest.approx(junction, abs=1e-9)
    assert r.tier_mean[0] == pytest.approx(junction, abs=1e-9)
    assert r.peak == pytest.approx(junction, abs=1e-9)
    assert r.active.shape == (1, s.ny, s.nx)


def test_one_dimensional_two_tiers_each_layer_carries_the_power_beyond_it():
    s = _stack(tiers=2, nx=2, ny=2)
    p0, p1 = 3.0, 1.0  # per tier, uniform
    area = s.die_area
    power = np.stack([np.full((2, 2), p0 / 4), np.full((2, 2), p1 / 4)])
    col = steady(s, power).temperature[:, 0, 0]
    layers = s.layers()
    top0 = s.active_layer(0)
    for lo in range(s.n_layers - 1):
        flux = p0 + p1 if lo + 1 <= top0 else p1  # heat crossing the face lo | lo + 1
        half = sum(la.thickness / (2 * la.conductivity * area) for la in layers[lo:lo + 2])
        assert col[lo + 1] - col[lo] == pytest.approx(flux * half, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("nx, ny", [(5, 5), (7, 5)])
def test_single_hot_cell_gives_a_symmetric_map_decreasing_away_from_it(nx, ny):
    s = _stack(tiers=2, nx=nx, ny=ny, tile_w=0.5e-3, tile_h=0.5e-3)
    cy, cx = ny // 2, nx // 2
    power = np.zeros((2, ny, nx))
    power[0, cy, cx] = 2.0
    r = steady(s, power)
    rise = r.temperature - s.ambient
    tol = 1e-10 * rise.max()
    assert np.allclose(rise, rise[:, ::-1, :], rtol=0, atol=tol)
    assert np.allclose(rise, rise[:, :, ::-1], rtol=0, atol=tol)
    if nx == ny:
        assert np.allclose(rise, rise.transpose(0, 2, 1), rtol=0, atol=tol)
    # not trivially symmetric: the map does vary
    assert np.ptp(rise[s.active_layer(0)]) > 1e-3
    for layer in (s.active_layer(0), s.active_layer(1), 0):
        row = rise[layer, cy]
        assert (np.diff(row[cx:]) < 0).all()      # decreasing to the right
        assert (np.diff(row[: cx + 1]) > 0).all()  # and to the left
        column = rise[layer, :, cx]
        assert (np.diff(column[cy:]) < 0).all()
    assert r.peak == r.temperature[s.active_layer(0), cy, cx]


def test_tier_farthest_from_the_sink_is_hottest():
    s = _stack(tiers=4)
    r = steady(s, np.full((4, s.ny, s.nx), 0.1))
    assert (np.diff(r.tier_peak) > 0).all()
    assert (np.diff(r.tier_mean) > 0).all()
    assert r.peak == r.tier_peak[-1]


def test_two_tiers_of_power_p_are_hotter_than_one():
    power = np.random.default_rng(2).uniform(0, 0.3, size=(4, 4))
    one = steady(_stack(tiers=1), power[None])
    two = steady(_stack(tiers=2), np.stack([power, power]))
    assert two.peak > one.peak + 1.0
    assert two.tier_peak[0] > one.tier_peak[0]


def test_linearity_doubling_power_doubles_the_rise():
    s = _stack(tiers=3, nx=3, ny=4)
    power = np.random.default_rng(3).uniform(0, 0.4, size=(3, 4, 3))
    one = steady(s, power).temperature - s.ambient
    two = steady(s, 2 * power).temperature - s.ambient
    assert np.allclose(two, 2 * one, rtol=1e-12, atol=0)
    trace = np.random.default_rng(4).uniform(0, 0.4, size=(20, 3, 4, 3))
    a = transient(s, trace, 1e-3)
    b = transient(s, 2 * trace, 1e-3)
    assert np.allclose(b.tier_peak - s.ambient, 2 * (a.tier_peak - s.ambient), rtol=1e-12)


# -- transient ------------------------------------------------------------------------------

def _lumped_stack() -> Stack:
    """One cell; every layer but the sink conducts so well and holds so little heat that the
    stack is one capacitance (the sink's and C_FACTOR * c_convec) behind r_convec."""
    fast = {f"k_{m}": 1e5 for m in ("sink", "spreader", "interface", "chip", "bond")}
    light = {f"p_{m}": 1.0 for m in ("spreader", "interface", "chip", "bond")}
    return Stack(tiers=1, nx=1, ny=1, tile_w=1e-2, tile_h=1e-2, r_convec=0.5, c_convec=10.0,
                 **fast, **light)


def test_transient_lumped_step_response_is_first_order_accurate():
    s = _lumped_stack()
    area = s.tile_w * s.tile_h
    cap = (s.p_sink * s.t_sink * area + C_FACTOR * s.c_convec
           + sum(la.heat_capacity * la.thickness * area for la in s.layers()[1:]))
    tau = s.r_convec * cap
    r_int = (s.t_sink / 2 / s.k_sink + s.t_spreader / s.k_spreader
             + s.t_interface / s.k_interface + s.t_bulk / s.k_chip
             + s.t_active / 2 / s.k_chip) / area
    p = 4.0

    def error(steps_per_tau: int) -> float:
        dt = tau / steps_per_tau
        steps = 5 * steps_per_tau
        res = transient(s, np.full((steps, 1, 1, 1), p), dt)
        t = res.times
        exact = s.ambient + p * (s.r_convec * (1 - np.exp(-t / tau)) + r_int)
        # backward Euler on the lumped system, solved by hand: (1 + dt/tau)^-n
        euler = s.ambient + p * (s.r_convec * (1 - (1 + dt / tau) ** -np.arange(1, steps + 1))
                                 + r_int)
        assert np.allclose(res.tier_peak[:, 0], euler, rtol=0, atol=1e-6 * p * s.r_convec)
        return float(np.abs(res.tier_peak[:, 0] - exact).max())

    e1, e2 = error(100), error(200)
    # first order: the global error is about p R (t/tau) e^(-t/tau) dt / (2 tau), at most
    # p R dt / (2 e tau)
    assert e1 < 0.2 * p * s.r_convec / 100
    assert e1 > 0.1 * p * s.r_convec / 100  # not spuriously exact
    assert e1 / e2 == pytest.approx(2.0, rel=0.05)


def test_long_constant_power_transient_converges_to_steady():
    s = _stack(tiers=2, nx=4, ny=3)
    power = np.random.default_rng(5).uniform(0, 0.5, size=(2, 3, 4))
    ss = steady(s, power)
    res = transient(s, np.broadcast_to(power, (400, 2, 3, 4)), 5.0)
    assert np.allclose(res.final, ss.temperature, rtol=0, atol=1e-6)
    assert np.allclose(res.tier_peak[-1], ss.tier_peak, rtol=0, atol=1e-6)
    # from ambient under constant power, every node only warms
    assert (np.diff(res.peak) >= -1e-12).all()
    assert res.peak[-1] - res.peak[0] > 0.1  # and it did have to warm up
    assert res.times[-1] == pytest.approx(400 * 5.0)


def test_transient_from_steady_state_stays_there_and_continues_where_it_left_off():
    s = _stack(tiers=2, nx=3, ny=3)
    rng = np.random.default_rng(6)
    power = rng.uniform(0, 0.5, size=(2, 3, 3))
    ss = steady(s, power)
    held = transient(s, np.broadcast_to(power, (10, 2, 3, 3)), 1e-2, t0=ss.temperature)
    assert np.allclose(held.final, ss.temperature, rtol=0, atol=1e-9)

    trace = rng.uniform(0, 0.5, size=(30, 2, 3, 3))
    whole = transient(s, trace, 1e-3)
    first = transient(s, trace[:12], 1e-3, t0=s.ambient)
    rest = transient(s, trace[12:], 1e-3, t0=first.final)
    assert np.allclose(rest.final, whole.final, rtol=0, atol=1e-9)
    assert np.allclose(np.concatenate([first.tier_peak, rest.tier_peak]), whole.tier_peak,
                       rtol=0, atol=1e-9)


# -- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, value, rule", [
    ("tiers", 0, "an integer >= 1"),
    ("nx", 2.5, "an integer >= 1"),
    ("ny", True, "an integer >= 1"),
    ("tile_w", -1e-3, "> 0 (m)"),
    ("t_interface", float("nan"), "> 0 (m)"),
    ("t_bond", 0.0, "> 0 (m)"),
    ("k_bond", 0.0, "> 0 (W/(m K))"),
    ("k_chip", float("inf"), "> 0 (W/(m K))"),
    ("p_chip", -1.0, "> 0 (J/(m^3 K))"),
    ("r_convec", 0.0, "> 0 (K/W)"),
    ("c_convec", -1.0, ">= 0 (J/K)"),
    ("ambient", "hot", "> 0 (K)"),
])
def test_stack_refuses_each_bad_parameter_by_name(name, value, rule):
    with pytest.raises(ValueError, match=rf"^{name} must be .*{re.escape(rule)}; "
                                         rf"got {re.escape(repr(value))}$"):
        _stack(**{name: value})


def test_stack_accepts_zero_convection_capacitance_and_numpy_integers():
    s = _stack(c_convec=0.0, nx=np.int64(3))
    assert s.nx == 3
    assert dataclasses.replace(s, tiers=2).n_layers == 8


@pytest.mark.parametrize("power, message", [
    (np.zeros((2, 4, 4)), r"power must have shape \(tiers, ny, nx\) = \(1, 4, 4\); "
                          r"got shape \(2, 4, 4\)"),
    (np.zeros((4, 4)), r"power must have shape .*; got shape \(4, 4\)"),
    (np.full((1, 4, 4), -0.5), r"power must be finite and >= 0 \(W\).*got -0\.5"),
    (np.full((1, 4, 4), np.nan), r"power must be finite and >= 0 \(W\).*got nan"),
    ("lots", r"power must be an array of watts"),
])
def test_steady_refuses_bad_power(power, message):
    with pytest.raises(ValueError, match=message):
        steady(_stack(), power)


@pytest.mark.parametrize("kw, message", [
    ({"dt": 0.0}, r"dt must be a finite number > 0 \(s\); got 0\.0"),
    ({"dt": -1e-3}, r"dt must be a finite number > 0 \(s\); got -0\.001"),
    ({"dt": float("nan")}, r"dt must be .*; got nan"),
    ({"power_trace": np.zeros((1, 4, 4))},
     r"power_trace must have shape \(steps >= 1, tiers, ny, nx\) = \(steps, 1, 4, 4\); "
     r"got shape \(1, 4, 4\)"),
    ({"power_trace": np.zeros((0, 1, 4, 4))}, r"power_trace must have shape .*\(0, 1, 4, 4\)"),
    ({"power_trace": np.full((3, 1, 4, 4), np.inf)}, r"power_trace must be finite.*got inf"),
    ({"t0": np.zeros((2, 4, 4))}, r"t0 must be .*\(n_layers, ny, nx\) = \(5, 4, 4\); "
                                  r"got shape \(2, 4, 4\)"),
    ({"t0": -3.0}, r"t0 must be a finite temperature > 0 \(K\).*; got -3\.0"),
])
def test_transient_refuses_bad_arguments(kw, message):
    args = {"power_trace": np.zeros((3, 1, 4, 4)), "dt": 1e-3} | kw
    with pytest.raises(ValueError, match=message):
        transient(_stack(), **args)


# -- speed ----------------------------------------------------------------------------------

def test_speed_four_tiers_of_eight_by_eight():
    # a fresh stack (not in the cache): the timing includes building the network
    s = _stack(tiers=4, nx=8, ny=8, tile_w=1.1e-3, tile_h=0.9e-3)
    power = np.random.default_rng(7).uniform(0, 0.2, size=(4, 8, 8))
    start = time.perf_counter()
    steady(s, power)
    steady_s = time.perf_counter() - start
    start = time.perf_counter()
    transient(s, np.broadcast_to(power, (1000, 4, 8, 8)), 1e-4)
    transient_s = time.perf_counter() - start
    assert steady_s < 1.0
    assert transient_s < 5.0

"""The network-on-chip: routing function and deadlock check, packet format, the router's and
the mesh's testbenches, the router's formal proof (and that it catches broken routers)."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pytest
from amaranth.hdl import Cat, Mux, Signal

from heterotron.hdl.contract.noc import DeadlockError, Topology
from heterotron.hdl.contract.params import ParamError, inspect_only, sample_valid
from heterotron.hdl.mesh import Mesh
from heterotron.hdl.router import Router
from heterotron.scripts.cli import main
from heterotron.sim.flows.formal import prove_router
from heterotron.sim.flows.units import get_unit
from heterotron.sim.golden.noc import (
    PATTERNS,
    depacketize,
    destination,
    mean_zero_load,
    packetize,
    zero_load_latency,
)

SHAPES = [(4, 4, 1), (3, 3, 2), (2, 1, 1), (1, 5, 1), (2, 3, 4), (8, 8, 1), (1, 1, 3)]


# -- routing function and deadlock check ---------------------------------------------------

@pytest.mark.parametrize("dims", SHAPES)
@pytest.mark.parametrize("order", ["xyz", "zyx", "yxz"])
def test_dimension_order_routes_are_minimal_and_acyclic(dims, order):
    topo = Topology(*dims, order=order)
    for src, dest in product(topo.coords(), repeat=2):
        path = topo.path(src, dest)
        assert path[-1] == (tuple(dest), "local")
        assert topo.hops(src, dest) == sum(abs(a - b) for a, b in zip(src, dest, strict=True))
        # the axes are corrected in the given order: once an axis is left, it never returns
        axes = [("east", "west", "north", "south", "up", "down").index(port) // 2
                for _, port in path[:-1]]
        ranks = [order.index("xyz"[a]) for a in axes]
        assert ranks == sorted(ranks)
    assert topo.dependency_cycle() is None


def test_a_torus_ring_of_four_is_refused_and_of_three_accepted():
    with pytest.raises(DeadlockError, match=r"4x4x1 torus .* can deadlock: .*cycle of 4"):
        Mesh(nx=4, ny=4, wrap=True)
    with pytest.raises(DeadlockError, match="cycle"):
        Router(nx=3, ny=5, wrap=True, x=1, y=1)
    topo = Topology(3, 3, 2, wrap=True)
    assert topo.dependency_cycle() is None
    # the short way round: from x=0 to x=2 goes west over the wrap link, one hop
    assert topo.path((0, 0, 0), (2, 0, 0))[0] == ((0, 0, 0), "west")
    inspect_only(Mesh(nx=3, ny=3, nz=2, wrap=True))


def test_the_cycle_check_finds_a_planted_cycle():
    class Turning(Topology):
        """x first at even routers, y first at odd ones: every turn is taken somewhere."""

        def route(self, pos, dest):
            order = self.axes
            self.axes = [1, 0, 2] if (pos[0] + pos[1]) % 2 else [0, 1, 2]
            try:
                return super().route(pos, dest)
            finally:
                self.axes = order

    cycle = Turning(4, 4, 1).dependency_cycle()
    assert cycle is not None and len(cycle) >= 4
    # each channel of the cycle leads to the next one's router
    topo = Turning(4, 4, 1)
    for (pos, port), (nxt, _) in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        assert topo.neighbour(pos, port) == nxt


@pytest.mark.parametrize("kwargs, message", [
    ({"nx": 1, "ny": 1}, "at least 2"),
    ({"nx": 9}, r"nx must be an integer in \[1, 8\]"),
    ({"buffer_depth": 1}, r"buffer_depth must be an integer in \[2, 32\]"),
    ({"flit_width": 9}, "flit_width must be at least 10 for a 4x4x1 mesh"),
    ({"order": "xy"}, "order must be one of xyz"),
    ({"nz": 5}, r"nz must be an integer in \[1, 4\]"),
])
def test_bad_mesh_parameters_are_named(kwargs, message):
    with pytest.raises(ParamError, match=message):
        Mesh(**kwargs)


def test_router_position_must_be_in_the_mesh():
    with pytest.raises(ParamError, match=r"x must be in \[0, nx - 1\] = \[0, 3\], not 4"):
        Router(x=4)
    assert inspect_only(Router(nx=3, ny=3, nz=3, x=1, y=1, z=1)).ports == (
        "local", "east", "west", "north", "south", "up", "down")
    assert inspect_only(Router(nx=3, ny=1, x=0, y=0)).ports == ("local", "east")


# -- golden models --------------------------------------------------------------------------

def test_packets_round_trip_through_the_header_layout():
    rng = np.random.default_rng(1)
    for dims in SHAPES:
        topo = Topology(*dims)
        for _ in range(20):
            src = topo.coord(int(rng.integers(topo.nodes)))
            dest = topo.coord(int(rng.integers(topo.nodes)))
            beats = [int(v) for v in rng.integers(0, 1 << 16, size=int(rng.integers(1, 9)))]
            flits = packetize(topo, src, dest, beats)
            assert [h for _, h, _ in flits] == [1] + [0] * len(beats)
            assert [t for _, _, t in flits] == [0] * len(beats) + [1]
            assert depacketize(topo, flits) == (src, dest, beats)


def test_traffic_patterns():
    topo = Topology(4, 4, 2)
    rng = np.random.default_rng(2)
    for src in topo.coords():
        assert destination("bitcomp", topo, src, rng) == (3 - src[0], 3 - src[1], 1 - src[2])
        t = destination("transpose", topo, src, rng)
        assert t is None or t == (src[1], src[0], 1 - src[2])
        n = destination("neighbour", topo, src, rng)
        assert topo.hops(src, n) == 1
    hot = [destination("hotspot", topo, (0, 0, 0), rng) for _ in range(2000)]
    share = sum(h == (2, 2, 1) for h in hot) / len(hot)
    assert 0.25 < share < 0.38  # 0.3 + 0.7 / 32
    # the analytic average over a pattern equals the mean of sampled latencies
    for pattern in PATTERNS:
        sampled = []
        for _ in range(300):
            s = topo.coord(int(rng.integers(topo.nodes)))
            d = destination(pattern, topo, s, rng)
            if d is not None:
                sampled.append(zero_load_latency(topo, s, d, 4))
        assert abs(np.mean(sampled) - mean_zero_load(pattern, topo, 4)) < 0.5


# -- cocotb -----------------------------------------------------------------------------------

def test_router_testbench(testbench):
    testbench("router", seed=3)


@pytest.mark.slow  # 66 s; the accelerator tests run meshes in the fast set
def test_mesh_testbench_3d(testbench):
    """3x3x2: every pattern with stalls, zero-load latencies, a bad destination refused."""
    testbench("mesh", overrides={"nx": "3", "ny": "3", "nz": "2"}, seed=4)


@pytest.mark.slow  # a 4x4 mesh takes about a minute to build
def test_mesh_testbench_2d_default(testbench):
    testbench("mesh", seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"nx": "3", "ny": "3", "wrap": "true", "buffer_depth": "2", "flit_width": "10"},
    {"nx": "2", "ny": "2", "nz": "3", "order": "zyx"},
    {"nx": "5", "ny": "1", "flit_width": "10"},
])
def test_mesh_testbench_edges(testbench, overrides):
    testbench("mesh", overrides=overrides, seed=6, vectors=24)


@pytest.mark.slow
@pytest.mark.parametrize("draw", [1, 2])
def test_router_and_mesh_sampled_parameters(testbench, draw):
    rng = np.random.default_rng(draw)
    router = sample_valid(Router, rng, caps={"nx": 3, "ny": 3, "nz": 2, "flit_width": 40,
                                            "buffer_depth": 6})
    testbench("router", router, seed=draw, vectors=20)
    mesh = sample_valid(Mesh, rng, caps={"nx": 3, "ny": 3, "nz": 2, "flit_width": 40,
                                        "buffer_depth": 6})
    testbench("mesh", mesh, seed=draw, vectors=8)


@pytest.mark.slow
@pytest.mark.icarus
def test_mesh_on_icarus(testbench):
    testbench("mesh", overrides={"nx": "2", "ny": "2", "nz": "2", "flit_width": "8"}, seed=7,
              vectors=8)


# -- formal -----------------------------------------------------------------------------------

SMALL = {"nx": 3, "ny": 3, "flit_width": 10, "buffer_depth": 2, "x": 1, "y": 1}


@pytest.mark.parametrize("params", [
    # the default: interior router of a 4x4 mesh, 32-bit flits, 4-flit buffers (2.3 min:
    # the slow set; the small routers below are proved in the fast set)
    pytest.param({}, marks=pytest.mark.slow),
    SMALL,
    pytest.param({"nx": 3, "ny": 3, "wrap": True, "x": 0, "y": 2, "buffer_depth": 3},
                 marks=pytest.mark.slow),  # about 1.5 min
    {"nx": 2, "ny": 1, "x": 0, "y": 0},
])
def test_router_properties_are_proved(params, tmp_path):
    res = prove_router(get_unit("router").resolve(
        overrides={k: str(v).lower() for k, v in params.items()}), tmp_path, quiet=True)
    assert res.passed, res.summary


@pytest.mark.slow  # seven ports: a few minutes of induction
def test_router_properties_are_proved_3d(tmp_path):
    res = prove_router(dict(nx=3, ny=3, nz=3, flit_width=12, buffer_depth=2, x=1, y=1, z=1),
                       tmp_path, quiet=True)
    assert res.passed, res.summary


def _fixed_priority(m, reqs, last, name):
    idx = len(reqs) - 1
    for k in reversed(range(len(reqs) - 1)):
        idx = Mux(reqs[k], k, idx)
    return Cat(*reqs).any(), idx


class FixedPriority(Router):
    """Starves the higher-numbered inputs."""

    arbiter = staticmethod(_fixed_priority)


class NoWormhole(Router):
    """Re-arbitrates every flit: packets interleave."""

    @staticmethod
    def select(locked, owner, pick):
        return pick


class Misroute(Router):
    """Sends east-bound packets west and west-bound ones east."""

    def route_signal(self, m, dest, name):
        port = super().route_signal(m, dest, name)
        out = Signal.like(port, name=name + "_bad")
        e, w = self.ports.index("east"), self.ports.index("west")
        m.d.comb += out.eq(Mux(port == e, w, Mux(port == w, e, port)))
        return out


@pytest.mark.parametrize("broken", [FixedPriority, NoWormhole, Misroute])
def test_the_proof_catches_a_broken_router(broken, tmp_path):
    res = prove_router(SMALL, tmp_path, quiet=True, router_cls=broken)
    assert not res.passed
    assert "Assert failed" in res.summary or "failed assertion" in res.summary
    source = (tmp_path / "sby.log").read_text()
    assert "DONE (FAIL" in source


def test_formal_router_command(capsys, tmp_path):
    argv = ["formal", "router", "-o", str(tmp_path), "--json"]
    for k, v in SMALL.items():
        argv += ["--param", f"{k}={v}"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["proved"] and "bounded_grant" in out["properties"]


def test_formal_router_refuses_a_bad_parameter(capsys):
    assert main(["formal", "router", "--param", "wrap=true"]) == 2
    assert "can deadlock" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_noc_quick(capsys, tmp_path):
    plot = tmp_path / "noc.png"
    assert main(["bench", "noc", "--mesh", "3x3x2", "--rates", "0.02,0.5", "--cycles", "300",
                 "--no-fpga", "--json", "--plot", str(plot)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert plot.stat().st_size > 1000
    for s in res["patterns"]:
        # near zero load the measured average is the analytic one, give or take a little
        # queueing and the sampling of random destinations
        assert abs(s["zero_load_measured"] - s["zero_load_analytic"]) <= 2.5, s
        assert 0 < s["saturation_throughput"] <= 1
    assert {p["pattern"] for p in res["points"]} == set(PATTERNS)

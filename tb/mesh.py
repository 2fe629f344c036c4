"""cocotb stress testbench: the Mesh (routers and network interfaces) under every traffic pattern.

Run through the runner: ``heterotron sim mesh --param nx=3 --param ny=3 --param nz=2``.

Each node's packets (random lengths, random data) go through its ``tx`` with random gaps; every
``rx`` stalls at random. The scoreboard keeps, per (source, destination) pair, the packets in
the order they were sent: each packet received must be the oldest outstanding one of its pair,
beat for beat, so a lost, duplicated, corrupted, misrouted or reordered packet fails the test,
as does a beat nobody sent. A watchdog fails the test when nothing moves for too long while
packets are outstanding.
"""

from __future__ import annotations

import json
from collections import deque

import cocotb
import numpy as np

from heterotron.hdl.contract.noc import Topology
from heterotron.hdl.contract.params import defaults
from heterotron.hdl.mesh import Mesh, rx_layout, tx_layout
from heterotron.sim.golden.noc import PATTERNS, destination, percentile, zero_load_latency
from heterotron.tb import env
from heterotron.tb.common import (
    ClockedBench,
    StreamSink,
    StreamSource,
    decode,
    encode,
    make_rng,
    params_from_env,
    stall_phases,
    vectors_from_env,
)

DEFAULT_PACKETS = 40  # per node and pattern
MAX_BEATS = 6
WATCHDOG = 2000  # cycles without a beat moving while packets are outstanding
#: (source gap, sink stall) phases of the pattern test: none, mostly back-pressure, heavy
#: back-pressure, sparse input
PHASES = ((0.0, 0.0), (0.2, 0.5), (0.0, 0.8), (0.6, 0.1))

BENCH = env.benching()  # the bench test runs only when the runner asks for it


class MeshBench:
    def __init__(self, dut, rng: np.random.Generator, gap: float = 0.0, stall: float = 0.0):
        self.dut = dut
        self.p = params_from_env(defaults(Mesh.PARAMS))
        self.topo = Topology.of(self.p)
        self.rng = rng
        dims = self.topo.dims
        fw = self.p["flit_width"]
        self.tx = tx_layout(*dims, fw)
        self.rx = rx_layout(*dims, fw)
        self.data_mask = (1 << fw) - 1
        n = self.topo.nodes
        self.sources = [StreamSource(dut, f"tx__{k}", rng, gap=gap) for k in range(n)]
        self.sinks = [StreamSink(dut, f"rx__{k}", rng, stall=stall,
                                 on_beat=lambda w, k=k: self.got(k, w)) for k in range(n)]
        self.bench = ClockedBench(dut, [self, *self.sources, *self.sinks])
        self.outstanding: dict[tuple[int, int], deque] = {}
        self.open: list[list[int]] = [[] for _ in range(n)]
        self.open_src: list[int | None] = [None] * n
        self.sent = 0
        self.delivered = 0
        self.beats_moved = 0
        # (src, dest, beats, latency, offered at cycle) per delivered packet
        self.latencies: list[tuple[int, int, int, int, int]] = []
        self.generators = []  # per-cycle callbacks (bench traffic)

    # ClockedBench part: generators run first in the drive phase, before the sources
    def sample(self) -> None:
        pass

    def drive(self) -> None:
        for gen in self.generators:
            gen()

    def tx_word(self, data: int, last: bool, dest) -> int:
        """A ``tx`` beat for coordinates ``dest``."""
        coords = dict(zip("xyz", dest, strict=True))
        return encode(self.tx, {"data": data, "last": last, "dest": coords})

    def send(self, src: int, dest, beats: list[int]) -> None:
        """Queue a packet at node ``src`` for coordinates ``dest``."""
        words = []
        for k, b in enumerate(beats):
            # dest only counts on the first beat: the others carry noise there
            d = dest if k == 0 else [int(self.rng.integers(0, 1 << 3)) for _ in range(3)]
            words.append(self.tx_word(b, k == len(beats) - 1, d))
        self.sources[src].send(words)
        key = (src, self.topo.index(dest))
        self.outstanding.setdefault(key, deque()).append((list(beats), self.bench.cycle))
        self.sent += 1

    def random_packet(self, max_beats: int = MAX_BEATS, beats: int | None = None) -> list[int]:
        """Random data, ``beats`` long or of a random length in ``[1, max_beats]``."""
        n = beats or int(self.rng.integers(1, max_beats, endpoint=True))
        return [int(v) for v in self.rng.integers(0, self.data_mask, size=n, endpoint=True)]

    def got(self, node: int, word: int) -> None:
        self.beats_moved += 1
        beat = decode(self.rx, word)
        src = self.topo.index((beat.src.x, beat.src.y, beat.src.z))
        if self.open_src[node] is None:
            self.open_src[node] = src
        assert src == self.open_src[node], (
            f"rx {node}: src changed inside a packet ({self.open_src[node]} -> {src})")
        self.open[node].append(beat.data)
        if not beat.last:
            return
        beats, self.open[node], self.open_src[node] = self.open[node], [], None
        queue = self.outstanding.get((src, node))
        assert queue, (f"rx {node}: packet from node {src} that was not sent (or arrived "
                       f"twice): {len(beats)} beats {[hex(b) for b in beats[:4]]}")
        want, created = queue.popleft()
        assert beats == want, (
            f"rx {node}: packet from node {src} is not the oldest outstanding one of that "
            f"pair: got {len(beats)} beats {[hex(b) for b in beats[:4]]}, expected "
            f"{len(want)} beats {[hex(b) for b in want[:4]]}")
        self.delivered += 1
        # the tail moves at the coming edge: cycle + 1; the packet was offered at created + 1
        self.latencies.append((src, node, len(beats), self.bench.cycle - created, created))

    @property
    def pending(self) -> int:
        return self.sent - self.delivered

    async def drain(self, what: str) -> None:
        """Wait until every packet sent has arrived; the watchdog fails on no progress."""
        idle = 0
        moved = -1
        while self.pending:
            taken = sum(s.sent for s in self.sources)
            if (self.beats_moved, taken) != moved:
                moved = (self.beats_moved, taken)
                idle = 0
            idle += 1
            if idle > WATCHDOG:
                left = {f"{s}->{d}": len(q) for (s, d), q in self.outstanding.items() if q}
                raise AssertionError(
                    f"watchdog: {what}: nothing moved for {WATCHDOG} cycles with "
                    f"{self.pending} packets outstanding (pairs: {left})")
            await self.bench.cycles(1)
        for k, part in enumerate(self.open):
            assert not part, f"rx {k}: {len(part)} beats of an unfinished packet"
        bad = int(self.dut.bad_dest.value)
        assert bad == 0, f"bad_dest set ({bad:#x}) with every destination in the mesh"


@cocotb.test()
async def test_patterns(dut):
    """Every traffic pattern, random packet lengths, phases of source gaps and sink stalls."""
    tb = MeshBench(dut, make_rng(1))
    await tb.bench.start()
    topo = tb.topo
    packets = vectors_from_env(DEFAULT_PACKETS)
    phases = stall_phases(PHASES)
    for pattern in PATTERNS:
        for phase, (gap, stall) in enumerate(phases):
            tb.bench.set_stalls(gap, stall)
            count = 0
            for _ in range(max(1, packets // len(phases))):
                for src in topo.coords():
                    dest = destination(pattern, topo, src, tb.rng)
                    if dest is not None:
                        tb.send(topo.index(src), dest, tb.random_packet())
                        count += 1
            t0 = tb.bench.cycle
            await tb.drain(f"{pattern}, phase {phase}")
            dut._log.info("%-9s gaps %.1f stalls %.1f: %4d packets delivered in %5d cycles",
                          pattern, gap, stall, count, tb.bench.cycle - t0)
    assert tb.delivered == tb.sent > 0
    dut._log.info("%d packets exactly once, intact, in order per pair", tb.delivered)


@cocotb.test()
async def test_zero_load(dut):
    """One packet at a time: its latency is the analytic (hops + 1) * per_hop + beats, for
    random pairs (self-sends included) and lengths."""
    tb = MeshBench(dut, make_rng(2))
    await tb.bench.start()
    topo = tb.topo
    pairs = [(s, topo.coord(int(tb.rng.integers(0, topo.nodes)))) for s in topo.coords()]
    pairs += [((0, 0, 0), tuple(n - 1 for n in topo.dims)),
              (tuple(n - 1 for n in topo.dims), (0, 0, 0))]
    for src, dest in pairs:
        beats = tb.random_packet()
        # sent from the drive phase, as the bench's traffic is: offered at the next edge
        tb.generators = [lambda src=src, dest=dest, beats=beats: (
            tb.send(topo.index(src), dest, beats), tb.generators.clear())]
        await tb.bench.wait_until(lambda: not tb.generators, 10, "the send")
        await tb.drain(f"{src} -> {dest}")
        await tb.bench.cycles(2)
        got = tb.latencies[-1][3]
        want = zero_load_latency(topo, src, dest, len(beats))
        assert got == want, (f"{src} -> {dest}, {len(beats)} beats: {got} cycles, analytic "
                             f"{want} ({topo.hops(src, dest)} hops)")
    dut._log.info("%d zero-load latencies equal the analytic model", len(pairs))


@cocotb.test()
async def test_bad_destination(dut):
    """A packet for coordinates outside the mesh is dropped whole and flags ``bad_dest``;
    traffic around it is delivered. (Skipped where every coordinate code is in the mesh.)"""
    tb = MeshBench(dut, make_rng(3))
    topo = tb.topo
    spare = [axis for axis, n in enumerate(topo.dims)
             if n > 1 and (1 << (n - 1).bit_length()) > n]
    if not spare:
        dut._log.info("every coordinate code names a router: nothing to refuse")
        return
    await tb.bench.start()
    tb.bench.set_stalls(0.3, 0.3)
    axis = spare[0]
    bad = [0, 0, 0]
    bad[axis] = topo.dims[axis]
    src = int(tb.rng.integers(0, topo.nodes))
    tb.send(src, topo.coord((src + 1) % topo.nodes), tb.random_packet())
    words = [tb.tx_word(7, k == 2, bad) for k in range(3)]
    tb.sources[src].send(words)
    tb.send(src, topo.coord((src + 2) % topo.nodes), tb.random_packet())
    await tb.bench.wait_until(lambda: tb.pending == 0, WATCHDOG, "packets around a bad one")
    await tb.bench.cycles(2)
    flags = int(dut.bad_dest.value)
    assert flags == 1 << src, f"bad_dest is {flags:#x}, expected only node {src}"
    assert tb.sources[src].idle


@cocotb.test(skip=not BENCH)
async def test_bench(dut):
    """Latency against offered load for each pattern (figures for ``heterotron bench noc``)."""
    cfg = env.bench_config()  # {"rates": [...], "beats": n, "cycles": n, "patterns": [...]}
    tb = MeshBench(dut, make_rng(4))
    await tb.bench.start()
    topo = tb.topo
    beats = int(cfg.get("beats", 4))
    flits = beats + 1
    warmup, measure = int(cfg.get("warmup", 300)), int(cfg.get("cycles", 1500))
    results = []
    for pattern in cfg.get("patterns", PATTERNS):
        for rate in cfg.get("rates", [0.1, 0.3]):
            tb.latencies.clear()
            window = (tb.bench.cycle + warmup, tb.bench.cycle + warmup + measure)

            def generate(pattern=pattern, rate=rate, window=window):
                if tb.bench.cycle >= window[1]:
                    return
                for src in topo.coords():
                    if tb.rng.random() < rate / flits:
                        dest = destination(pattern, topo, src, tb.rng)
                        if dest is not None:
                            tb.send(topo.index(src), dest, tb.random_packet(beats=beats))

            tb.generators = [generate]
            await tb.bench.cycles(warmup + measure + 1)
            tb.generators = []
            # a saturated point drains slowly; its backlog must go before the next point
            await tb.drain(f"bench {pattern} {rate}")
            # latency of the packets offered in the window; throughput: flits delivered in it
            lat = [c for *_, c, t in tb.latencies if window[0] <= t < window[1]]
            done = sum(1 for *_, c, t in tb.latencies if window[0] <= t + c < window[1])
            accepted = done * flits / (measure * topo.nodes)
            # transpose and bit-complement leave their fixed points silent: the load actually
            # offered, per node of the mesh
            offered = len(lat) * flits / (measure * topo.nodes)
            results.append({
                "pattern": pattern, "rate": rate, "offered": round(offered, 4),
                "accepted": round(accepted, 4),
                "packets": len(lat),
                "avg_latency": round(float(np.mean(lat)), 2) if lat else None,
                "p99_latency": round(percentile(lat, 99), 1) if lat else None,
                "max_latency": max(lat) if lat else None,
                "saturated": bool(lat) and accepted < 0.9 * offered,
            })
            dut._log.info("%-9s offered %.3f accepted %.3f flits/node/cycle: avg %s p99 %s",
                          pattern, offered, accepted, results[-1]["avg_latency"],
                          results[-1]["p99_latency"])
    out = env.bench_out()
    if out:
        with open(out, "w") as f:
            json.dump(results, f)

"""cocotb testbench: one Router, every port driven with packets, every output stalled at random.

Run through the runner: ``heterotron sim router --param nz=2 --param z=1``.

Each input sends packets (random lengths, one-flit packets included) to random destinations
whose route does not turn back the way it came. Every packet must leave by the output the
routing function (:meth:`heterotron.hdl.contract.noc.Topology.route`) names, intact, contiguous (no
other flit between its head and its tail), in order per (input, output).
"""

from __future__ import annotations

from collections import deque

import cocotb

from heterotron.hdl.contract.noc import Topology, flit_layout
from heterotron.hdl.contract.params import defaults
from heterotron.hdl.router import Router
from heterotron.sim.golden.noc import header_word
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
from heterotron.tb.mesh import WATCHDOG

DEFAULT_PACKETS = 40  # per input
#: (source gap, sink stall) phases of the random test: none, mostly back-pressure, heavy
#: back-pressure, sparse input
PHASES = ((0.0, 0.0), (0.3, 0.6), (0.0, 0.9), (0.7, 0.0))


class RouterBench:
    def __init__(self, dut, rng):
        self.dut = dut
        self.p = params_from_env(defaults(Router.PARAMS))
        self.topo = Topology.of(self.p)
        self.pos = (self.p["x"], self.p["y"], self.p["z"])
        self.ports = self.topo.ports(self.pos)
        self.rng = rng
        self.flit = flit_layout(self.p["flit_width"])
        self.mask = (1 << self.p["flit_width"]) - 1
        self.sources = {q: StreamSource(dut, f"i_{q}", rng, gap=0.0) for q in self.ports}
        self.sinks = {q: StreamSink(dut, f"o_{q}", rng, stall=0.0,
                                    on_beat=lambda w, q=q: self.got(q, w))
                      for q in self.ports}
        self.bench = ClockedBench(dut, [*self.sources.values(), *self.sinks.values()])
        self.expected: dict[tuple[str, str], deque] = {}
        self.current: dict[str, list] = {q: [] for q in self.ports}
        self.sent = self.delivered = 0

    def send(self, inp: str, dest, length: int, src=None) -> None:
        """A packet of ``length`` flits (1: head and tail in one) into input ``inp``."""
        if src is None:
            src = self.topo.coord(int(self.rng.integers(0, self.topo.nodes)))
        words = [header_word(self.topo, dest, src)]
        words += [int(v) for v in self.rng.integers(0, self.mask, size=length - 1,
                                                    endpoint=True)]
        flits = [encode(self.flit, {"data": w, "head": k == 0, "tail": k == length - 1})
                 for k, w in enumerate(words)]
        self.sources[inp].send(flits)
        out = self.topo.route(self.pos, dest)
        self.expected.setdefault((inp, out), deque()).append(flits)
        self.sent += 1

    def legal_dest(self, inp: str):
        """A destination whose route from here does not go back out of ``inp``."""
        while True:
            dest = self.topo.coord(int(self.rng.integers(0, self.topo.nodes)))
            if inp == "local" or self.topo.route(self.pos, dest) != inp:
                return dest

    def got(self, out: str, word: int) -> None:
        cur = self.current[out]
        flit = decode(self.flit, word)
        head = flit.head
        assert bool(head) == (not cur), (
            f"o_{out}: {'head flit inside a packet' if head else 'flit outside a packet'} "
            f"(packets interleaved or a flit created)")
        cur.append(word)
        if not flit.tail:
            return
        self.current[out] = []
        matches = [inp for (inp, o), q in self.expected.items() if o == out and q
                   and q[0] == cur]
        assert matches, (f"o_{out}: a {len(cur)}-flit packet that is not the oldest "
                         f"outstanding one of any input routed here (misrouted, corrupted, "
                         f"reordered or duplicated)")
        self.expected[(matches[0], out)].popleft()
        self.delivered += 1

    async def drain(self, what):
        await self.bench.wait_until(lambda: self.delivered == self.sent, WATCHDOG * 4, what)
        for q, cur in self.current.items():
            assert not cur, f"o_{q}: {len(cur)} flits of an unfinished packet"


@cocotb.test()
async def test_random(dut):
    """All inputs at once, lengths 1 to 8 flits, phases of gaps and stalls."""
    tb = RouterBench(dut, make_rng(1))
    await tb.bench.start()
    packets = vectors_from_env(DEFAULT_PACKETS)
    phases = stall_phases(PHASES)
    for phase, (gap, stall) in enumerate(phases):
        tb.bench.set_stalls(gap, stall)
        for _ in range(max(1, packets // len(phases))):
            for inp in tb.ports:
                tb.send(inp, tb.legal_dest(inp), int(tb.rng.integers(1, 8, endpoint=True)))
        await tb.drain(f"phase {phase}")
    dut._log.info("%d packets routed intact, unmixed, in order per input and output",
                  tb.delivered)


@cocotb.test()
async def test_contention(dut):
    """Every input sends packets to the same output at once: the output serves them in
    rounds, each waiting input once per round (round-robin, so none waits for more than
    ``senders - 1`` other packets)."""
    tb = RouterBench(dut, make_rng(2))
    await tb.bench.start()
    rounds = 4
    for out in tb.ports:
        dest = next((c for c in tb.topo.coords() if tb.topo.route(tb.pos, c) == out), None)
        if dest is None:  # a wrap link of a 2-router ring: the routing always takes the other
            dut._log.info("no destination routes by %s: skipped", out)
            continue
        senders = [q for q in tb.ports if q == "local" or q != out]
        heads = []

        def on_beat(w, out=out, heads=heads):
            if decode(tb.flit, w).head:
                heads.append(tb.topo.index(decode_src(tb, w)))
            tb.got(out, w)

        tb.sinks[out].on_beat = on_beat
        for _ in range(rounds):
            for k, inp in enumerate(senders):
                # the source field names the input, to see who was served
                tb.send(inp, dest, 3, src=tb.topo.coord(k))
        await tb.drain(f"all inputs to {out}")
        tb.sinks[out].on_beat = lambda w, out=out: tb.got(out, w)
        assert len(heads) == rounds * len(senders)
        for r in range(rounds):
            served = sorted(heads[r * len(senders):(r + 1) * len(senders)])
            assert served == list(range(len(senders))), (
                f"o_{out}: round {r} served inputs {served}, not each of "
                f"{len(senders)} once (order {heads})")
    dut._log.info("every output served its waiting inputs round-robin")


def decode_src(tb: RouterBench, word: int):
    from heterotron.sim.golden.noc import depacketize
    data = decode(tb.flit, word).data
    src, _, _ = depacketize(tb.topo, [(data, 1, 0), (0, 0, 1)])
    return src

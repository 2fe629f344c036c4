"""Helpers for fast unit tests in Amaranth's own simulator (async testbench API).

The cocotb testbenches in ``heterotron.tb`` are the full verification; these helpers serve the
quick checks in ``tests/`` that run without building a simulator.
"""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

__all__ = ["PERIOD", "simulate", "stream_put", "stream_get", "edges_until_valid"]

PERIOD = 1e-6  # seconds per clock cycle: run lengths read as cycles


def simulate(dut, *testbenches, cycles: int | None = None) -> None:
    """Run ``testbenches`` (async functions of ``ctx``) against ``dut`` on a clock: until they
    all return, or for ``cycles`` clock cycles."""
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    for tb in testbenches:
        sim.add_testbench(tb)
    if cycles is None:
        sim.run()
    else:
        sim.run_until(PERIOD * cycles)


async def stream_put(ctx, stream, payload, rng: np.random.Generator | None = None,
                     gap: float = 0.0) -> None:
    """Offer one beat on ``stream`` and wait until it is taken, after a random gap of idle
    cycles (probability ``gap`` per cycle) when ``rng`` is given."""
    while rng is not None and gap and rng.random() < gap:
        await ctx.tick()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, rng: np.random.Generator | None = None,
                     stall: float = 0.0):
    """Take one beat from ``stream``, holding ``ready`` low for random cycles (probability
    ``stall`` per cycle) when ``rng`` is given. Returns the payload."""
    while rng is not None and stall and rng.random() < stall:
        ctx.set(stream.ready, 0)
        await ctx.tick()
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def edges_until_valid(ctx, valid, limit: int = 1000) -> int:
    """Called just after the clock edge that accepted an input beat: how many edges, that one
    included, until ``valid`` is high (a unit's documented latency)."""
    edges = 1
    while not ctx.get(valid):
        assert edges < limit, f"no output within {limit} cycles"
        await ctx.tick()
        edges += 1
    return edges

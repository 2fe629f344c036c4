"""Helpers for fast unit tests in Amaranth's own simulator (async testbench API).

The cocotb testbenches in ``heterotron.tb`` are the full verification; these helpers serve the
quick checks in ``tests/`` that run without building a simulator.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stream_put", "stream_get"]


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

"""Golden models for the network-on-chip: packet format, traffic patterns, zero-load latency.

The routing function itself is :class:`heterotron.hdl.contract.noc.Topology` (one definition for the
RTL, the deadlock check and these models).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from heterotron.hdl.contract.noc import Topology, header_layout

__all__ = ["PATTERNS", "HOTSPOT_SHARE", "packetize", "depacketize", "destination",
           "zero_load_latency", "PER_HOP", "percentile"]

PATTERNS = ("uniform", "transpose", "bitcomp", "hotspot", "neighbour")
HOTSPOT_SHARE = 0.3  # of a node's packets go to the hotspot node under "hotspot"
PER_HOP = 1  # cycles a flit spends in one router with no contention


def _fields(layout, prefix=""):
    for name, field in layout:
        yield prefix + name, field.offset, field.shape


def header_word(topo: Topology, dest, src) -> int:
    """The head flit's data: ``dest`` then ``src`` coordinates, by the RTL's layout."""
    hdr = header_layout(*topo.dims)
    word = 0
    for part, pos in (("dest", dest), ("src", src)):
        base = hdr[part].offset
        for axis, (_, field) in enumerate(hdr[part].shape):
            word |= int(pos[axis]) << (base + field.offset)
    return word


def packetize(topo: Topology, src, dest, beats: Sequence[int]) -> list[tuple[int, int, int]]:
    """The flits ``(data, head, tail)`` a network interface sends for one packet."""
    if not beats:
        raise ValueError("a packet has at least one beat")
    flits = [(header_word(topo, dest, src), 1, 0)]
    flits += [(int(b), 0, int(k == len(beats) - 1)) for k, b in enumerate(beats)]
    return flits


def depacketize(topo: Topology, flits: Sequence[tuple[int, int, int]]):
    """Inverse of :func:`packetize`: ``(src, dest, beats)``."""
    (word, head, _), *body = flits
    assert head and body and body[-1][2] and not any(h for _, h, _ in body)
    hdr = header_layout(*topo.dims)
    coords = {}
    for part in ("dest", "src"):
        base = hdr[part].offset
        c = []
        for _, field in hdr[part].shape:
            width = field.shape.width
            c.append((word >> (base + field.offset)) & ((1 << width) - 1))
        coords[part] = tuple(c)
    return coords["src"], coords["dest"], [d for d, _, _ in body]


def destination(pattern: str, topo: Topology, src, rng: np.random.Generator):
    """Where a packet from ``src`` goes under a traffic pattern; ``None`` where the pattern
    gives the node nothing to send (transpose and bit-complement fixed points)."""
    nx, ny, nz = topo.dims
    x, y, z = src
    if pattern == "uniform":
        dest = topo.coord(int(rng.integers(0, topo.nodes)))
    elif pattern == "transpose":
        # swap x and y (scaled onto the other axis's range), mirror z so 3D traffic changes tier
        dest = (y * nx // ny, x * ny // nx, nz - 1 - z)
    elif pattern == "bitcomp":
        dest = (nx - 1 - x, ny - 1 - y, nz - 1 - z)
    elif pattern == "hotspot":
        if rng.random() < HOTSPOT_SHARE:
            dest = hotspot(topo)
        else:
            dest = topo.coord(int(rng.integers(0, topo.nodes)))
    elif pattern == "neighbour":
        ports = topo.ports(src)[1:]
        dest = topo.neighbour(src, ports[int(rng.integers(0, len(ports)))])
    else:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, not {pattern!r}")
    if pattern in ("transpose", "bitcomp") and dest == tuple(src):
        return None
    return dest


def hotspot(topo: Topology):
    """The hotspot node: the middle of the mesh."""
    return tuple(n // 2 for n in topo.dims)


def zero_load_latency(topo: Topology, src, dest, beats: int) -> int:
    """Cycles from a packet's first beat offered on ``tx`` to its last beat delivered on
    ``rx`` with no other traffic: the head crosses ``hops + 1`` routers at :data:`PER_HOP`
    each, and the ``beats`` data flits follow it one per cycle."""
    return (topo.hops(src, dest) + 1) * PER_HOP + beats


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def mean_zero_load(pattern: str, topo: Topology, beats: int) -> float:
    """The analytic zero-load latency averaged over a pattern's traffic (exact expectation
    over its destinations; nodes a pattern leaves silent do not count)."""
    coords = list(topo.coords())
    every = [(s, d) for s in coords for d in coords]
    if pattern == "uniform":
        pairs = [(s, d, 1.0) for s, d in every]
    elif pattern in ("transpose", "bitcomp"):
        rng = np.random.default_rng(0)  # unused: these patterns are deterministic
        pairs = [(s, destination(pattern, topo, s, rng), 1.0) for s in coords]
        pairs = [(s, d, w) for s, d, w in pairs if d is not None]
    elif pattern == "hotspot":
        h = hotspot(topo)
        n = topo.nodes
        pairs = [(s, h, HOTSPOT_SHARE) for s in coords]
        pairs += [(s, d, (1 - HOTSPOT_SHARE) / n) for s, d in every]
    elif pattern == "neighbour":
        pairs = []
        for s in coords:
            ports = topo.ports(s)[1:]
            pairs += [(s, topo.neighbour(s, q), 1.0 / len(ports)) for q in ports]
    else:
        raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}, not {pattern!r}")
    total = sum(w for *_, w in pairs)
    return sum(w * zero_load_latency(topo, s, d, beats) for s, d, w in pairs) / total

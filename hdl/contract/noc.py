"""The network-on-chip's topology, flit format and routing function, in plain Python.

A mesh is ``nx x ny x nz`` routers (``nz = 1`` is 2D); router ``(x, y, z)`` serves node
``x + nx * (y + ny * z)``. Each router has a ``local`` port (its tile's network interface) and
one port per neighbour: ``east``/``west`` along x, ``north``/``south`` along y, ``up``/``down``
along z. With ``wrap`` the rings close (a torus).

Routing is dimension order: the axes are corrected one at a time in ``order`` (``"xyz"`` corrects
x first). On a torus each axis goes the shorter way round, ties to the positive direction.

This module is the single definition of the routing function: the router's RTL is built from
it, the channel-dependency check at construction walks it, and the testbenches and the latency
model call it.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import permutations, product

from amaranth.hdl import unsigned
from amaranth.lib import data, stream

from heterotron.hdl.contract.params import Param, ParamError

__all__ = ["PORTS", "ORDERS", "MESH_PARAMS", "POSITION_PARAMS", "Topology", "flit_layout",
           "coord_layout", "header_layout", "link_signature", "DeadlockError", "coord_bits",
           "check_mesh_params", "check_position", "check_flit_width"]

#: Port names, in the order routers list them; (axis, step) for the neighbour ports.
PORTS = ("local", "east", "west", "north", "south", "up", "down")
STEP = {"east": (0, +1), "west": (0, -1), "north": (1, +1), "south": (1, -1),
        "up": (2, +1), "down": (2, -1)}
AXES = "xyz"
ORDERS = tuple("".join(p) for p in permutations(AXES))

#: Parameters every NoC component shares (the mesh's shape and the link format).
MESH_PARAMS = (
    Param("nx", int, 4, "routers along x", 1, 8),
    Param("ny", int, 4, "routers along y", 1, 8),
    Param("nz", int, 1, "routers along z (tiers; 1 is a 2D mesh)", 1, 4),
    Param("flit_width", int, 32, "data bits per flit (the head flit carries dest and src)",
          4, 256),
    Param("buffer_depth", int, 4, "flits of input buffer per router port (2 or more: one "
          "entry would pass a flit every other cycle)", 2, 32),
    Param("order", str, "xyz", "dimension order of the routing function", choices=ORDERS),
    Param("wrap", bool, False, "wrap-around links (a torus); refused where it can deadlock"),
)

#: A router's position (and its network interface's): ``0`` to the largest ``n - 1`` along
#: each axis; :func:`check_position` checks it against the mesh's own size.
POSITION_PARAMS = tuple(
    Param(axis, int, default, f"router position along {axis}", 0, n.hi - 1)
    for axis, default, n in zip(AXES, (1, 1, 0), MESH_PARAMS[:3], strict=True))


class DeadlockError(ParamError):
    """The routing function's channel-dependency graph has a cycle on this network."""


def coord_bits(n: int) -> int:
    """Bits of a coordinate along an axis of ``n`` routers (at least one: no zero-width
    fields in the Verilog)."""
    return max(1, (n - 1).bit_length())


def coord_layout(nx: int, ny: int, nz: int) -> data.StructLayout:
    return data.StructLayout({"x": unsigned(coord_bits(nx)), "y": unsigned(coord_bits(ny)),
                              "z": unsigned(coord_bits(nz))})


def header_layout(nx: int, ny: int, nz: int) -> data.StructLayout:
    """The head flit's data: destination and source router coordinates (low bits first)."""
    c = coord_layout(nx, ny, nz)
    return data.StructLayout({"dest": c, "src": c})


def flit_layout(flit_width: int) -> data.StructLayout:
    """A flit on a link: ``data``, and ``head``/``tail`` marks (a one-flit packet has both)."""
    return data.StructLayout({"data": unsigned(flit_width), "head": 1, "tail": 1})


def link_signature(flit_width: int) -> stream.Signature:
    """A link: valid/ready handshake; a flit moves on a rising edge with both high."""
    return stream.Signature(flit_layout(flit_width))


class Topology:
    """The shape of a mesh or torus and its dimension-order routing function."""

    def __init__(self, nx: int, ny: int, nz: int, order: str = "xyz", wrap: bool = False):
        self.dims = (nx, ny, nz)
        self.order = order
        self.wrap = wrap
        self.axes = [AXES.index(a) for a in order]

    @classmethod
    def of(cls, p: dict) -> Topology:
        return cls(p["nx"], p["ny"], p["nz"], p["order"], p["wrap"])

    @property
    def nodes(self) -> int:
        nx, ny, nz = self.dims
        return nx * ny * nz

    def coords(self) -> Iterator[tuple[int, int, int]]:
        nx, ny, nz = self.dims
        for z, y, x in product(range(nz), range(ny), range(nx)):
            yield (x, y, z)

    def index(self, pos: tuple[int, int, int]) -> int:
        nx, ny, _ = self.dims
        x, y, z = pos
        return x + nx * (y + ny * z)

    def coord(self, node: int) -> tuple[int, int, int]:
        nx, ny, _ = self.dims
        return (node % nx, node // nx % ny, node // (nx * ny))

    def neighbour(self, pos, port: str) -> tuple[int, int, int] | None:
        """The router a port leads to, or ``None`` where the port does not exist."""
        axis, step = STEP[port]
        n = self.dims[axis]
        c = pos[axis] + step
        if not 0 <= c < n:
            if not self.wrap or n < 2:
                return None
            c %= n
        out = list(pos)
        out[axis] = c
        return tuple(out)

    def ports(self, pos) -> tuple[str, ...]:
        """The ports a router at ``pos`` has: local, then one per existing neighbour link."""
        return ("local",) + tuple(p for p in PORTS[1:] if self.neighbour(pos, p) is not None)

    def positive(self, axis: int, cur: int, dest: int) -> bool:
        """Whether a flit at ``cur`` bound for ``dest`` (``!= cur``) moves in +axis."""
        if not self.wrap:
            return dest > cur
        n = self.dims[axis]
        return 1 <= (dest - cur) % n <= n // 2

    def route(self, pos, dest) -> str:
        """The output port a head flit at router ``pos`` bound for ``dest`` leaves by."""
        for axis in self.axes:
            if dest[axis] != pos[axis]:
                plus = self.positive(axis, pos[axis], dest[axis])
                return PORTS[1 + 2 * axis + (0 if plus else 1)]
        return "local"

    def path(self, src, dest) -> list[tuple[tuple[int, int, int], str]]:
        """The (router, output port) hops of a packet, ending with the destination's local."""
        hops = []
        pos = tuple(src)
        for _ in range(sum(self.dims) + 1):
            port = self.route(pos, dest)
            hops.append((pos, port))
            if port == "local":
                return hops
            pos = self.neighbour(pos, port)
        raise AssertionError(f"route from {src} to {dest} does not arrive")  # pragma: no cover

    def hops(self, src, dest) -> int:
        """Router-to-router links crossed."""
        return len(self.path(src, dest)) - 1

    def dependency_cycle(self) -> list[tuple[tuple[int, int, int], str]] | None:
        """A cycle in the channel-dependency graph (Dally and Seitz), or ``None``.

        A channel is a router's output link; a packet holding channel ``a`` that asks for ``b``
        next adds the edge ``a -> b``. Wormhole switching without virtual channels is free of
        deadlock exactly when this graph has no cycle.
        """
        edges: dict[tuple, set[tuple]] = {}
        coords = list(self.coords())
        for src in coords:
            for dest in coords:
                hops = self.path(src, dest)
                for a, b in zip(hops, hops[1:], strict=False):
                    edges.setdefault(a, set()).add(b)
        state: dict[tuple, int] = {}  # 1: on the stack, 2: done
        for root in edges:
            if root in state:
                continue
            stack = [(root, iter(sorted(edges.get(root, ()))))]
            state[root] = 1
            trail = [root]
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                    trail.pop()
                elif state.get(nxt) == 1:
                    return trail[trail.index(nxt):]
                elif nxt not in state:
                    state[nxt] = 1
                    trail.append(nxt)
                    stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
        return None

    def check_deadlock_free(self) -> None:
        cycle = self.dependency_cycle()
        if cycle is not None:
            shown = " -> ".join(f"{pos}.{port}" for pos, port in cycle[:8])
            more = " -> ..." if len(cycle) > 8 else ""
            nx, ny, nz = self.dims
            raise DeadlockError(
                f"{nx}x{ny}x{nz} {'torus' if self.wrap else 'mesh'} with {self.order} routing "
                f"can deadlock: its channel-dependency graph has a cycle of {len(cycle)} "
                f"channels ({shown}{more} -> back). A ring of more than 3 routers needs virtual "
                f"channels, which this router does not have; use wrap=false (a mesh) or rings "
                f"of at most 3 routers")


def check_flit_width(p: dict) -> None:
    """The head flit must hold the destination and source coordinates of an ``nx x ny x nz``
    mesh."""
    need = 2 * sum(coord_bits(n) for n in (p["nx"], p["ny"], p["nz"]))
    if p["flit_width"] < need:
        raise ParamError(f"flit_width must be at least {need} for a {p['nx']}x{p['ny']}x"
                         f"{p['nz']} mesh (the head flit carries dest and src coordinates), "
                         f"not {p['flit_width']}")


def check_position(p: dict) -> None:
    """The position ``x, y, z`` (:data:`POSITION_PARAMS`) must lie in the mesh."""
    for axis in AXES:
        n = p[f"n{axis}"]
        if p[axis] >= n:
            raise ParamError(f"{axis} must be in [0, n{axis} - 1] = [0, {n - 1}], "
                             f"not {p[axis]}")


def check_mesh_params(p: dict) -> Topology:
    """The rules between the shared NoC parameters; returns the checked topology."""
    if p["nx"] * p["ny"] * p["nz"] < 2:
        raise ParamError("nx * ny * nz must be at least 2 (a network of one router has no "
                         "links)")
    check_flit_width(p)
    topo = Topology.of(p)
    topo.check_deadlock_free()
    return topo

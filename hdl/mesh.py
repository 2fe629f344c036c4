"""Mesh: routers wired into a 2D or 3D mesh (or a small torus), each with a network interface
that turns its tile's stream into packets and back."""

from __future__ import annotations

from amaranth.hdl import C, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.noc import (
    MESH_PARAMS,
    PORTS,
    POSITION_PARAMS,
    Topology,
    check_flit_width,
    check_mesh_params,
    check_position,
    coord_layout,
    header_layout,
    link_signature,
)
from heterotron.hdl.contract.params import Parameterised
from heterotron.hdl.router import Router

__all__ = ["Mesh", "NetworkInterface", "tx_layout", "rx_layout"]

OPPOSITE = {"east": "west", "west": "east", "north": "south", "south": "north", "up": "down",
            "down": "up"}


def tx_layout(nx: int, ny: int, nz: int, flit_width: int) -> data.StructLayout:
    """A tile's outgoing beat: payload ``data``, ``last`` of the packet, and ``dest`` (read
    from the packet's first beat)."""
    return data.StructLayout({"data": flit_width, "last": 1,
                              "dest": coord_layout(nx, ny, nz)})


def rx_layout(nx: int, ny: int, nz: int, flit_width: int) -> data.StructLayout:
    """A tile's incoming beat: ``data``, ``last`` of the packet, and the packet's ``src``."""
    return data.StructLayout({"data": flit_width, "last": 1, "src": coord_layout(nx, ny, nz)})


class NetworkInterface(Parameterised, wiring.Component):
    """Packetiser and depacketiser between a tile and its router's local port.

    Outgoing: a packet of ``L`` beats on ``tx`` becomes ``L + 1`` flits: a head flit with the
    destination and this node's coordinates
    (:func:`~heterotron.hdl.contract.noc.header_layout`), then
    one flit per beat, the last one marked ``tail``. A packet whose destination is outside the
    mesh is consumed and dropped, and sets ``bad_dest`` (sticky): it never enters the network.

    Incoming: the head flit is consumed and its source held; every further flit is one beat on
    ``rx`` with that ``src``, ``last`` on the tail.

    Parameters
    ----------
    nx, ny, nz, flit_width :
        The network's (see :data:`heterotron.hdl.contract.noc.MESH_PARAMS`); ``flit_width``
        must hold the head flit's coordinates.
    x, y, z : int
        The node's position, in ``[0, n - 1]`` along each axis.
    """

    PARAMS = (*(q for q in MESH_PARAMS if q.name in ("nx", "ny", "nz", "flit_width")),
              *POSITION_PARAMS)

    @classmethod
    def check_params(cls, p: dict) -> None:
        check_position(p)
        check_flit_width(p)

    def __init__(self, **given):
        p = self._take_params(given)
        nx, ny, nz, flit_width = p["nx"], p["ny"], p["nz"], p["flit_width"]
        self.dims = (nx, ny, nz)
        self.pos = (p["x"], p["y"], p["z"])
        link = link_signature(flit_width)
        super().__init__({
            "tx": In(stream.Signature(tx_layout(nx, ny, nz, flit_width))),
            "rx": Out(stream.Signature(rx_layout(nx, ny, nz, flit_width))),
            "to_router": Out(link),
            "from_router": In(link),
            "bad_dest": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nx, ny, nz = self.dims
        tx, rx, out, inp = self.tx, self.rx, self.to_router, self.from_router
        hdr = Signal(header_layout(nx, ny, nz))
        x, y, z = self.pos
        m.d.comb += [hdr.dest.eq(tx.payload.dest), hdr.src.x.eq(x), hdr.src.y.eq(y),
                     hdr.src.z.eq(z)]

        in_packet = Signal()  # head flit sent, tail not yet
        dropping = Signal()  # discarding a packet with a bad destination
        d = tx.payload.dest
        dest_ok = C(1, 1)
        for field, n in ((d.x, nx), (d.y, ny), (d.z, nz)):
            if n < 1 << len(field):  # a code that names no router
                dest_ok = dest_ok & (field < n)
        starting = ~in_packet & ~dropping
        bad = Signal()
        m.d.comb += bad.eq(starting & tx.valid & ~dest_ok)
        m.d.comb += [
            out.valid.eq(tx.valid & (in_packet | dest_ok)),
            out.payload.head.eq(~in_packet),
            out.payload.tail.eq(in_packet & tx.payload.last),
            out.payload.data.eq(Mux(in_packet, tx.payload.data, hdr.as_value())),
            tx.ready.eq((in_packet & out.ready) | dropping | bad),
        ]
        head_sent = out.valid & out.ready & ~in_packet
        tail_sent = out.valid & out.ready & in_packet & tx.payload.last
        m.d.sync += in_packet.eq((in_packet & ~tail_sent) | head_sent)
        taken = tx.valid & tx.ready
        m.d.sync += dropping.eq((dropping | bad) & ~(taken & tx.payload.last))
        m.d.sync += self.bad_dest.eq(self.bad_dest | bad)

        src = Signal(coord_layout(nx, ny, nz))
        head_in = data.View(header_layout(nx, ny, nz), inp.payload.data[:header_layout(
            nx, ny, nz).size])
        with m.If(inp.valid & inp.payload.head):
            m.d.sync += src.eq(head_in.src)
        m.d.comb += [
            inp.ready.eq(inp.payload.head | rx.ready),
            rx.valid.eq(inp.valid & ~inp.payload.head),
            rx.payload.data.eq(inp.payload.data),
            rx.payload.last.eq(inp.payload.tail),
            rx.payload.src.eq(src),
        ]
        return m


class Mesh(Parameterised, wiring.Component):
    """``nx x ny x nz`` routers (``nz = 1``: 2D) and a network interface per node.

    Parameters
    ----------
    nx, ny, nz, flit_width, buffer_depth, order, wrap :
        See :data:`heterotron.hdl.contract.noc.MESH_PARAMS`. A configuration whose routing can
        deadlock
        (a channel-dependency cycle, e.g. a torus ring of 4) is refused at construction.

    Members
    -------
    tx : In(stream of tx_layout).array(nodes)
        Node ``k = x + nx * (y + ny * z)`` sends packets: beats of ``data`` up to ``last``;
        ``dest`` is read from the first beat.
    rx : Out(stream of rx_layout).array(nodes)
        Packets for node ``k``, beat for beat, with their ``src``.
    bad_dest : Out(nodes)
        Sticky: node ``k`` was given a packet for a destination outside the mesh (dropped).

    Flow control is valid/ready everywhere; see :class:`~heterotron.hdl.router.Router`.
    """

    PARAMS = MESH_PARAMS

    @classmethod
    def check_params(cls, p: dict) -> None:
        check_mesh_params(p)

    def __init__(self, **given):
        p = self._take_params(given)
        self.topology = Topology.of(p)
        nx, ny, nz, flit_width = p["nx"], p["ny"], p["nz"], p["flit_width"]
        n = self.topology.nodes
        super().__init__({
            "tx": In(stream.Signature(tx_layout(nx, ny, nz, flit_width))).array(n),
            "rx": Out(stream.Signature(rx_layout(nx, ny, nz, flit_width))).array(n),
            "bad_dest": Out(n),
        })

    @property
    def latency(self) -> int:
        """Zero-load cycles from a beat taken on ``tx`` to the same beat on ``rx`` between
        neighbours (one hop); each further hop adds ``per_hop`` (see :attr:`timing`)."""
        return 2 * self.timing["per_hop"]

    @property
    def timing(self) -> dict:
        return {"per_hop": 1, "formula": "zero load, first beat offered on tx -> last beat "
                                         "delivered on rx = (hops + 1) * per_hop + beats"}

    def elaborate(self, platform):
        m = Module()
        topo = self.topology
        p = self.parameters
        routers = {}
        for pos in topo.coords():
            k = topo.index(pos)
            x, y, z = pos
            r = Router(**p, x=x, y=y, z=z)
            ni = NetworkInterface(nx=p["nx"], ny=p["ny"], nz=p["nz"], flit_width=p["flit_width"],
                                  x=x, y=y, z=z)
            routers[pos] = r
            m.submodules[f"router_{k}"] = r
            m.submodules[f"ni_{k}"] = ni
            wiring.connect(m, ni.to_router, r.i_local)
            wiring.connect(m, r.o_local, ni.from_router)
            wiring.connect(m, wiring.flipped(self.tx[k]), ni.tx)
            wiring.connect(m, ni.rx, wiring.flipped(self.rx[k]))
            m.d.comb += self.bad_dest[k].eq(ni.bad_dest)
        for pos, r in routers.items():
            for port in r.ports[1:]:
                other = routers[topo.neighbour(pos, port)]
                wiring.connect(m, getattr(r, f"o_{port}"), getattr(other, f"i_{OPPOSITE[port]}"))
        assert set(PORTS[1:]) == set(OPPOSITE)
        return m

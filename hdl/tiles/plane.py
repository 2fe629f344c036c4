"""A tile's attachment to one physical plane: the classes it sends on that plane merged packet
by packet, the packets it receives split by their message class."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.accel import MSG_HEADER, MsgClass
from heterotron.hdl.contract.noc import coord_layout
from heterotron.hdl.mesh import rx_layout, tx_layout
from heterotron.hdl.tiles.common import rx_word, tx_word

__all__ = ["PlaneMerge", "PlaneSplit"]


class PlaneMerge(wiring.Component):
    """Merges a tile's outgoing packets of ``n`` classes onto its plane's ``tx`` port.

    A packet, once started, goes out whole before another input is served (wormhole
    packets cannot interleave); among waiting inputs the one after the last served wins
    (round robin). ``dest`` (a tile index) becomes the mesh coordinates from ``coords``, the
    node of each tile index; an index without a tile is never produced by a tile (the control
    tile checks indices), and maps to node 0.

    Members
    -------
    i : In(stream of tx_word(width)).array(n)
    o : Out(stream of the mesh's tx_layout)
    """

    def __init__(self, n: int, width: int, dims: tuple[int, int, int], coords: list[tuple]):
        self._n, self._width, self._dims, self._coords = n, width, dims, coords
        super().__init__({
            "i": In(tx_word(width)).array(n),
            "o": Out(stream.Signature(tx_layout(*dims, width))),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._n
        sel = Signal(range(max(n, 2)))
        locked = Signal()
        pick = Signal(range(max(n, 2)))
        # Round robin: the first valid input after the last one served.
        order = [[(s + k) % n for k in range(1, n + 1)] for s in range(n)]
        for s in range(n):
            with m.If(sel == s):
                for j in reversed(order[s]):
                    with m.If(self.i[j].valid):
                        m.d.comb += pick.eq(j)
        cur = Signal(range(max(n, 2)))
        m.d.comb += cur.eq(Mux(locked, sel, pick))
        dest = Signal(coord_layout(*self._dims))
        for j in range(n):
            beat = self.i[j]
            with m.If(cur == j):
                m.d.comb += [self.o.valid.eq(beat.valid), beat.ready.eq(self.o.ready),
                             self.o.payload.data.eq(beat.payload.data),
                             self.o.payload.last.eq(beat.payload.last)]
                for t, (x, y, z) in enumerate(self._coords):
                    with m.If(beat.payload.dest == t):
                        m.d.comb += [dest.x.eq(x), dest.y.eq(y), dest.z.eq(z)]
        m.d.comb += self.o.payload.dest.eq(dest)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [locked.eq(~self.o.payload.last), sel.eq(cur)]
        return m


class PlaneSplit(wiring.Component):
    """Splits the packets a tile receives on a plane into its per-class ``rx`` ports by the
    header's ``cls``; a packet of a class the tile does not take (``classes``) is consumed
    and dropped, and raises ``dropped`` (sticky).

    Members
    -------
    i : In(stream of the mesh's rx_layout)
    o : Out(stream of rx_word(width)).array(len(classes))
    dropped : Out(1)
    """

    def __init__(self, classes: list[MsgClass], width: int, dims: tuple[int, int, int]):
        self._classes = classes
        super().__init__({
            "i": In(stream.Signature(rx_layout(*dims, width))),
            "o": Out(rx_word(width)).array(len(classes)),
            "dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        inside = Signal()  # past the packet's first beat
        route = Signal(range(len(self._classes) + 1))  # len(classes): drop
        head_route = Signal.like(route)
        cls = MSG_HEADER(self.i.payload.data[:MSG_HEADER.size]).cls
        m.d.comb += head_route.eq(len(self._classes))
        for j, c in enumerate(self._classes):
            with m.If(cls == c):
                m.d.comb += head_route.eq(j)
        cur = Signal.like(route)
        m.d.comb += cur.eq(Mux(inside, route, head_route))
        m.d.comb += self.i.ready.eq(cur == len(self._classes))  # a dropped packet drains
        for j, out in enumerate(self.o):
            m.d.comb += [out.payload.data.eq(self.i.payload.data),
                         out.payload.last.eq(self.i.payload.last)]
            with m.If(cur == j):
                m.d.comb += [out.valid.eq(self.i.valid), self.i.ready.eq(out.ready)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [inside.eq(~self.i.payload.last), route.eq(cur)]
            with m.If(cur == len(self._classes)):
                m.d.sync += self.dropped.eq(1)
        return m

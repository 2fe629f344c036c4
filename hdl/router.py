"""Router: one node of the mesh: an input buffer per port, dimension-order routing, wormhole
switching and a round-robin arbiter per output."""

from __future__ import annotations

from amaranth.hdl import C, Cat, Elaboratable, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.noc import (
    MESH_PARAMS,
    POSITION_PARAMS,
    Topology,
    check_mesh_params,
    check_position,
    header_layout,
    link_signature,
)
from heterotron.hdl.contract.params import Parameterised
from heterotron.hdl.simgate import gated_module

__all__ = ["Router", "FlitBuffer", "rr_pick"]


class FlitBuffer(Elaboratable):
    """A first-word-fall-through FIFO of ``depth`` flits, with the ports of Amaranth's
    ``SyncFIFO`` (``w_data/w_en/w_rdy``, ``r_data/r_en/r_rdy``, ``level``) and its read and
    write pointers visible, so the formal proof can state how they relate to ``level``.
    A write when full or a read when empty is ignored; ``w_rdy`` does not depend on ``r_en``
    (no path from an output's ready back to the sender's)."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        self.w_data = Signal(width)
        self.w_en = Signal()
        self.w_rdy = Signal()
        self.r_data = Signal(width)
        self.r_en = Signal()
        self.r_rdy = Signal()
        self.level = Signal(range(depth + 1))
        self.rp = Signal(range(max(depth, 2)))
        self.wp = Signal(range(max(depth, 2)))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="comb")
        do_w = self.w_en & self.w_rdy
        do_r = self.r_en & self.r_rdy
        m.d.comb += [self.w_rdy.eq(self.level != self.depth), self.r_rdy.eq(self.level != 0),
                     wr.addr.eq(self.wp), wr.data.eq(self.w_data), wr.en.eq(do_w),
                     rd.addr.eq(self.rp), self.r_data.eq(rd.data)]

        def step(p):
            return Mux(p == self.depth - 1, 0, p + 1)

        m.d.sync += [self.level.eq(self.level + do_w - do_r),
                     self.wp.eq(Mux(do_w, step(self.wp), self.wp)),
                     self.rp.eq(Mux(do_r, step(self.rp), self.rp))]
        return m


def rr_pick(m: Module, reqs: list, last, name: str):
    """Round-robin choice among ``reqs``: the first requester after index ``last``, cyclically.
    Returns ``(any, index)``; ``index`` is meaningful only while ``any`` is high."""
    n = len(reqs)
    req = Signal(n, name=f"{name}_req")
    m.d.comb += req.eq(Cat(*reqs))
    after = Signal(n, name=f"{name}_after")  # requesters with an index above last
    m.d.comb += after.eq(Cat(C(0, 1), *(r & (last < k) for k, r in enumerate(reqs) if k)))

    def lowest(bits):
        idx = n - 1
        for k in reversed(range(n - 1)):
            idx = Mux(bits[k], k, idx)
        return idx

    pick = Signal(range(max(n, 2)), name=f"{name}_pick")  # never zero bits wide
    m.d.comb += pick.eq(Mux(after.any(), lowest(after), lowest(req)))
    return req.any(), pick


class Router(Parameterised, wiring.Component):
    """A wormhole router at ``(x, y, z)`` of an ``nx x ny x nz`` mesh.

    Parameters
    ----------
    nx, ny, nz, flit_width, buffer_depth, order, wrap :
        The network's (see :data:`heterotron.hdl.contract.noc.MESH_PARAMS`).
    x, y, z : int
        This router's position, in ``[0, n - 1]`` along each axis.

    Members
    -------
    i_<port> : In(link), o_<port> : Out(link)
        One pair per port in :meth:`Topology.ports` (``local`` always; a neighbour port only
        where the neighbour exists). Flow control is valid/ready on every link: a flit moves
        on a rising edge where both are high; a receiver's ``ready`` is its input buffer not
        being full, so no flit is ever dropped and a full buffer back-pressures the sender.

    Each input port has a ``buffer_depth`` flit FIFO. An output is free until a head flit is
    granted to it; it then belongs to that input until the packet's tail has passed
    (wormhole switching: packets are never interleaved on a link). A free output grants the
    waiting head flits round-robin, starting after the input it granted last, so a waiting
    input is passed over by at most one packet from each other input. A flit spends one cycle in a
    router with no contention: written into the buffer at one edge, it can leave at the next.
    """

    PARAMS = MESH_PARAMS + POSITION_PARAMS

    @classmethod
    def check_params(cls, p: dict) -> None:
        check_position(p)
        check_mesh_params(p)

    def __init__(self, **given):
        p = self._take_params(given)
        self.topology = Topology.of(p)
        self.pos = (p["x"], p["y"], p["z"])
        self.ports = self.topology.ports(self.pos)
        link = link_signature(p["flit_width"])
        members = {}
        for port in self.ports:
            members[f"i_{port}"] = In(link)
            members[f"o_{port}"] = Out(link)
        super().__init__(members)
        # Filled in by elaborate(), for the formal harness: per input its buffer and routed
        # output, per output its state.
        self.buffers: dict[str, FlitBuffer] = {}
        self.routes: dict[str, Signal] = {}
        self.candidates: dict[str, list[str]] = {}
        self.owner: dict[str, tuple[Signal, Signal, Signal, Signal]] = {}
        self.selects: dict[str, Signal] = {}

    @property
    def latency(self) -> int:
        """Cycles a flit spends in the router with no contention."""
        return 1

    def candidates_of(self, out: str) -> list[str]:
        """The inputs that may ask for output ``out``: all but the one from the same neighbour
        (dimension-order routing never turns a packet back)."""
        return [i for i in self.ports if i == "local" or i != out]

    def route_signal(self, m: Module, dest, name: str) -> Signal:
        """The output port index (into ``self.ports``) for a head flit bound for ``dest``."""
        topo = self.topology
        port = Signal(range(len(self.ports)), name=name)
        # Built from the last axis to the first: the first axis that differs decides.
        choice = self.ports.index("local")
        for axis in reversed(topo.axes):
            field = dest[("x", "y", "z")[axis]]
            cur = self.pos[axis]
            n = topo.dims[axis]
            if n == 1:
                continue
            plus_name, minus_name = ("east", "west", "north", "south", "up", "down")[
                2 * axis: 2 * axis + 2]
            plus = self._positive(field, cur, n)
            step = Mux(plus, self.ports.index(plus_name) if plus_name in self.ports else 0,
                       self.ports.index(minus_name) if minus_name in self.ports else 0)
            choice = Mux(field != cur, step, choice)
        m.d.comb += port.eq(choice)
        return port

    arbiter = staticmethod(rr_pick)

    @staticmethod
    def select(keep, owner, pick):
        """The input an output takes from: its owner while locked (wormhole) or while its
        offered head waits, else the arbiter's pick."""
        return Mux(keep, owner, pick)

    def _positive(self, field, cur: int, n: int):
        if not self.topology.wrap:
            # at an edge the direction is known (for a destination in the mesh); comparing
            # would be constant, which Verilator's lint rejects
            if cur == n - 1:
                return C(0, 1)
            if cur == 0:
                return C(1, 1)
            return field > cur
        # 1 <= (field - cur) mod n <= n // 2
        terms = [field == (cur + d) % n for d in range(1, n // 2 + 1)]
        out = terms[0]
        for t in terms[1:]:
            out = out | t
        return out

    def elaborate(self, platform):
        top = Module()
        # A router with every buffer empty and no flit offered changes no register (no write,
        # no read, no choice: every output's request needs a buffered head). So in the
        # simulation harness it gets a clock that ticks only otherwise
        # (heterotron.hdl.simgate); elsewhere ``m`` is the router's own module.
        busy = Signal()
        m, _ = gated_module(top, platform, busy, "core")
        p = self.parameters
        hdr = header_layout(p["nx"], p["ny"], p["nz"])
        width = p["flit_width"] + 2
        heads = {}
        valid = {}
        flit = {}
        for port in self.ports:
            buf = FlitBuffer(width, p["buffer_depth"])
            m.submodules[f"buf_{port}"] = buf
            self.buffers[port] = buf
            i = getattr(self, f"i_{port}")
            m.d.comb += [buf.w_data.eq(i.payload.as_value()), buf.w_en.eq(i.valid),
                         i.ready.eq(buf.w_rdy)]
            f = data.View(self.i_local.payload.shape(), buf.r_data)
            flit[port] = f
            valid[port] = buf.r_rdy
            heads[port] = Signal(name=f"head_{port}")
            m.d.comb += heads[port].eq(buf.r_rdy & f.head)
            dest = data.View(hdr, f.data[:hdr.size])["dest"]
            self.routes[port] = self.route_signal(m, dest, f"route_{port}")

        # An input that an output is locked to asks for no other output, whatever its buffer
        # holds: a flit can only ever leave by one output (malformed input, a head flit inside
        # a packet, goes on with that packet instead of being sent twice).
        locks = {out: (Signal(name=f"{out}_locked"),
                       Signal(range(max(2, len(self.candidates_of(out)))), name=f"{out}_owner"))
                 for out in self.ports}
        owned = {}
        for port in self.ports:
            terms = [lk & (ow == self.candidates_of(out).index(port))
                     for out, (lk, ow) in locks.items() if port in self.candidates_of(out)]
            owned[port] = Signal(name=f"owned_{port}")
            m.d.comb += owned[port].eq(Cat(*terms).any())

        pops = {port: [] for port in self.ports}
        for out in self.ports:
            o = getattr(self, f"o_{out}")
            cands = self.candidates_of(out)
            self.candidates[out] = cands
            n = len(cands)
            oi = self.ports.index(out)
            locked, owner = locks[out]
            last = Signal(range(max(n, 2)), name=f"{out}_last", init=n - 1)
            # a head flit offered and not yet taken: the choice stands (a stream's payload
            # must not change while it waits), even if another input's turn comes up
            hold = Signal(name=f"{out}_hold")
            self.owner[out] = (locked, owner, last, hold)
            self.selects[out] = sel = Signal(range(max(n, 2)), name=f"{out}_sel")
            reqs = [heads[c] & ~owned[c] & (self.routes[c] == oi) for c in cands]
            any_req, pick = self.arbiter(m, reqs, last, f"{out}_rr")
            keep = Signal(name=f"{out}_keep")
            m.d.comb += keep.eq(locked | hold)
            m.d.comb += sel.eq(self.select(keep, owner, pick))
            sel_valid = Signal(name=f"{out}_sel_valid")
            m.d.comb += sel_valid.eq(Cat(*(valid[c] for c in cands)).bit_select(sel, 1))
            m.d.comb += o.valid.eq((keep | any_req) & sel_valid)
            payload = flit[cands[-1]].as_value()
            for k in reversed(range(n - 1)):
                payload = Mux(sel == k, flit[cands[k]].as_value(), payload)
            m.d.comb += o.payload.eq(payload)
            fire = Signal(name=f"{out}_fire")
            m.d.comb += fire.eq(o.valid & o.ready)
            chosen = o.valid & ~keep  # the arbiter's choice is made this cycle
            with m.If(chosen):
                m.d.sync += last.eq(sel)
            with m.If(fire):
                m.d.sync += [locked.eq(~o.payload.tail), owner.eq(sel), hold.eq(0)]
            with m.Elif(chosen):
                m.d.sync += [hold.eq(1), owner.eq(sel)]
            for k, c in enumerate(cands):
                pops[c].append(fire & (sel == k))
        for port in self.ports:
            r_en = pops[port][0]
            for term in pops[port][1:]:
                r_en = r_en | term
            m.d.comb += self.buffers[port].r_en.eq(r_en)
        if m is not top:
            top.d.comb += busy.eq(Cat(*(getattr(self, f"i_{port}").valid
                                        | (self.buffers[port].level != 0)
                                        for port in self.ports)).any())
        return top

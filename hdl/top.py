"""The accelerator's top level, from one description (``[accelerator]``, see
:mod:`heterotron.hdl.contract.accel`; checked by :func:`heterotron.hdl.accelerator.describe`):
a mesh per plane, the tiles on their nodes, the host port on the control tile."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.accel import (
    MAX_TILES,
    WORD,
    AccelError,
    Description,
    MsgClass,
    TileKind,
)
from heterotron.hdl.hostport import HostPort, HostPortError
from heterotron.hdl.mesh import Mesh
from heterotron.hdl.tiles.common import CLASS_PORTS
from heterotron.hdl.tiles.control import ControlTile
from heterotron.hdl.tiles.memory import MemoryTile
from heterotron.hdl.tiles.pim import PimNetTile
from heterotron.hdl.tiles.plane import PlaneMerge, PlaneSplit
from heterotron.hdl.tiles.sa import SaTile
from heterotron.hdl.tiles.sfu import SfuTile

__all__ = ["Accelerator"]


def _tile(desc: Description, t, backdoor: bool = False) -> wiring.Component:
    p = desc.params
    control = desc.control.index
    if t.kind == TileKind.CONTROL:
        return ControlTile(desc)
    if t.kind == TileKind.MEMORY:
        return MemoryTile(index=t.index, control=control, flit_width=p["flit_width"],
                          kbytes=t.params["kbytes"], max_packet=p["max_packet"],
                          backdoor=backdoor)
    if t.kind == TileKind.SFU:
        return SfuTile(index=t.index, control=control, flit_width=p["flit_width"],
                       max_packet=p["max_packet"], **t.params)
    if t.kind == TileKind.PIM:
        return PimNetTile(index=t.index, control=control, flit_width=p["flit_width"],
                          max_packet=p["max_packet"], **t.params)
    return SaTile(index=t.index, control=control, flit_width=p["flit_width"],
                  max_packet=p["max_packet"], **t.params)


class Accelerator(wiring.Component):
    """Every tile of a description on its mesh node, one mesh per plane, and the host port.

    Plane ``k`` is a :class:`~heterotron.hdl.mesh.Mesh` of the description's size; the plane
    carrying DATA is ``flit_width`` bits wide, the others 32 (:data:`WORD`). At each node a
    :class:`PlaneMerge` sends the tile's packets of the classes on that plane, a
    :class:`PlaneSplit` hands it the ones it receives by class. The host port
    (:class:`~heterotron.hdl.hostport.HostPort`) feeds the control tile.

    Members
    -------
    rx, tx : In/Out(stream of unsigned(8))
        The host link's bytes (framed, checked: :mod:`heterotron.hdl.contract.hostlink`).
    running, watchdog : Out(1)
    error : Out(len(AccelError))
        The control tile's ERROR register (for LEDs).
    link_error : Out(len(HostPortError))
        The host port's sticky flags (:class:`~heterotron.hdl.hostport.HostPortError`):
        frames it refused and answered itself since reset (for an LED; the host had its
        answers).
    misrouted : Out(1)
        Sticky: a tile received a packet of a class it does not take (dropped); never
        happens in a correct design.
    stall : In(tiles)
        Test hook (tie to 0 in a design): while bit ``i`` is high, tile ``i`` takes nothing
        from the network, so a testbench can put random back-pressure on every tile.
    poke : In(stream of :meth:`poke_layout`), only with ``backdoor=True``
        Simulation only: a word into memory tile ``tile``'s scratchpad a cycle
        (:attr:`MemoryTile.poke <heterotron.hdl.tiles.memory.MemoryTile>`), for loading
        images without the host link; never in a generated design.
    """

    def __init__(self, desc: Description, *, backdoor: bool = False):
        self.desc = desc
        self.backdoor = backdoor
        super().__init__({
            **({"poke": In(stream.Signature(self.poke_layout))} if backdoor else {}),
            "rx": In(stream.Signature(unsigned(8))),
            "tx": Out(stream.Signature(unsigned(8))),
            "running": Out(1),
            "watchdog": Out(1),
            "error": Out(len(AccelError)),
            "link_error": Out(len(HostPortError)),
            "misrouted": Out(1),
            "stall": In(len(desc.tiles)),
        })

    @property
    def poke_layout(self) -> data.StructLayout:
        """A backdoor write: memory tile index, word address, word, byte enables."""
        fw = self.desc.params["flit_width"]
        return data.StructLayout({"tile": range(MAX_TILES), "addr": unsigned(32),
                                  "data": unsigned(fw), "en": unsigned(fw // 8)})

    def plane_width(self, plane: int) -> int:
        data = self.desc.planes["data"]
        return self.desc.params["flit_width"] if plane == data else WORD

    def elaborate(self, platform):
        m = Module()
        desc = self.desc
        p = desc.params
        topo = desc.topology
        dims = topo.dims
        coords = [t.at for t in desc.tiles]
        meshes = []
        for k in range(desc.n_planes):
            mesh = Mesh(nx=p["nx"], ny=p["ny"], nz=p["nz"], flit_width=self.plane_width(k),
                        buffer_depth=p["buffer_depth"])
            m.submodules[f"plane{k}"] = mesh
            meshes.append(mesh)
        plane_of = {c: desc.planes[c.name.lower()] for c in MsgClass}

        tiles = {}
        moved = []
        used_nodes = set()
        misrouted = []
        for t in desc.tiles:
            tile = _tile(desc, t, self.backdoor)
            m.submodules[t.name] = tile
            if self.backdoor and t.kind == TileKind.MEMORY:
                mine = self.poke.payload.tile == t.index
                m.d.comb += [tile.poke.valid.eq(self.poke.valid & mine),
                             tile.poke.payload.addr.eq(self.poke.payload.addr),
                             tile.poke.payload.data.eq(self.poke.payload.data),
                             tile.poke.payload.en.eq(self.poke.payload.en)]
                with m.If(mine):
                    m.d.comb += self.poke.ready.eq(tile.poke.ready)
            tiles[t.index] = tile
            node = topo.index(t.at)
            used_nodes.add(node)
            members = tile.signature.members
            for k, mesh in enumerate(meshes):
                width = self.plane_width(k)
                sends = [c for c in MsgClass if plane_of[c] == k
                         and f"{CLASS_PORTS[c]}_tx" in members]
                takes = [c for c in MsgClass if plane_of[c] == k
                         and f"{CLASS_PORTS[c]}_rx" in members]
                if sends:
                    merge = PlaneMerge(len(sends), width, dims, coords)
                    m.submodules[f"{t.name}_tx{k}"] = merge
                    for j, c in enumerate(sends):
                        wiring.connect(m, getattr(tile, f"{CLASS_PORTS[c]}_tx"), merge.i[j])
                    wiring.connect(m, merge.o, mesh.tx[node])
                else:
                    m.d.comb += mesh.tx[node].valid.eq(0)
                if takes:
                    split = PlaneSplit(takes, width, dims)
                    m.submodules[f"{t.name}_rx{k}"] = split
                    wiring.connect(m, mesh.rx[node], split.i)
                    hold = self.stall[t.index]
                    for j, c in enumerate(takes):
                        src, dst = split.o[j], getattr(tile, f"{CLASS_PORTS[c]}_rx")
                        m.d.comb += [dst.valid.eq(src.valid & ~hold),
                                     src.ready.eq(dst.ready & ~hold),
                                     dst.payload.eq(src.payload)]
                    misrouted.append(split.dropped)
                else:  # nothing on this plane is for this tile: drain, and say so
                    stray = Signal(name=f"{t.name}_stray{k}")
                    m.d.comb += mesh.rx[node].ready.eq(1)
                    with m.If(mesh.rx[node].valid):
                        m.d.sync += stray.eq(1)
                    misrouted.append(stray)
                moved += [mesh.tx[node].valid & mesh.tx[node].ready,
                          mesh.rx[node].valid & mesh.rx[node].ready]
        for mesh in meshes:
            for node in range(topo.nodes):
                if node not in used_nodes:
                    m.d.comb += [mesh.tx[node].valid.eq(0), mesh.rx[node].ready.eq(1)]

        ctrl = tiles[desc.control.index]
        cp = desc.control.params
        m.submodules.host = host = HostPort(timeout=cp["host_timeout"])
        wiring.connect(m, wiring.flipped(self.rx), host.rx)
        wiring.connect(m, host.tx, wiring.flipped(self.tx))
        wiring.connect(m, host.cmd, ctrl.host_cmd)
        wiring.connect(m, ctrl.host_resp, host.resp)
        m.d.comb += self.link_error.eq(host.error)
        progress = Signal()
        for x in moved:
            progress = progress | x
        m.d.comb += [ctrl.progress.eq(progress), self.running.eq(ctrl.running),
                     self.watchdog.eq(ctrl.watchdog), self.error.eq(ctrl.error)]
        any_drop = Signal()
        for d in misrouted:
            any_drop = any_drop | d
        m.d.comb += self.misrouted.eq(any_drop)
        return m

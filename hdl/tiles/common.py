"""What every tile shares: its per-message-class packet ports and small packet helpers.

A tile talks to the network through one stream per message class it uses (the top level maps
classes onto physical planes, merging and splitting them per packet):

* ``<cls>_rx : In(stream of rx_word(width))``: packets of that class for this tile, one word
  per beat, ``last`` on the final one. The first word is the
  :data:`~heterotron.hdl.contract.accel.MSG_HEADER`.
* ``<cls>_tx : Out(stream of tx_word(width, tiles))``: packets to send; ``dest`` (a tile
  index) is read on the first beat and must stay the same until ``last``.

The DATA class is ``flit_width`` bits wide (its header words use the low 32 bits); CMD, REQ
and DONE are 32-bit words (:data:`~heterotron.hdl.contract.accel.WORD`). The contract's plane
rule keeps DATA alone on its plane, so a plane is one width.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Signal, Value, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.accel import MAX_TILES, MSG_HEADER, WORD, MsgClass
from heterotron.hdl.contract.params import ParamError

__all__ = ["CLASS_PORTS", "rx_word", "tx_word", "tile_bits", "header_value", "class_width",
           "class_ports", "check_placement", "packet_beat"]

#: The name prefix of each class's ports on a tile.
CLASS_PORTS = {MsgClass.CMD: "cmd", MsgClass.REQ: "req", MsgClass.DATA: "data",
               MsgClass.DONE: "done"}


def tile_bits() -> int:
    return (MAX_TILES - 1).bit_length()


def class_width(cls: MsgClass, flit_width: int) -> int:
    return flit_width if cls == MsgClass.DATA else WORD


def rx_word(width: int) -> stream.Signature:
    return stream.Signature(data.StructLayout({"data": unsigned(width), "last": 1}))


def tx_word(width: int) -> stream.Signature:
    return stream.Signature(data.StructLayout({"data": unsigned(width), "last": 1,
                                               "dest": unsigned(tile_bits())}))


def class_ports(flit_width: int, rx: tuple[MsgClass, ...] = (),
                tx: tuple[MsgClass, ...] = ()) -> dict:
    """A tile's network members: ``<cls>_rx`` for each class it takes, ``<cls>_tx`` for each
    it sends, at the class's width."""
    members = {f"{CLASS_PORTS[c]}_rx": In(rx_word(class_width(c, flit_width))) for c in rx}
    members.update({f"{CLASS_PORTS[c]}_tx": Out(tx_word(class_width(c, flit_width)))
                    for c in tx})
    return members


def packet_beat(m, port, limit: int, name: str) -> Signal:
    """The position of ``port``'s current beat in its packet, counting up to ``limit`` (it
    stays there for the rest of the packet) and back to 0 after ``last``."""
    beat = Signal(range(limit + 1), name=name)
    with m.If(port.valid & port.ready):
        with m.If(port.payload.last):
            m.d.sync += beat.eq(0)
        with m.Elif(beat != limit):
            m.d.sync += beat.eq(beat + 1)
    return beat


def check_placement(p: dict) -> None:
    """A tile's ``index`` and the ``control`` tile's must differ."""
    if p["index"] == p["control"]:
        raise ParamError(f"index must differ from control = {p['control']} (the control tile "
                         "is a tile of its own)")


def header_value(**fields):
    """A :data:`MSG_HEADER` as an Amaranth value from field values (constants or signals):
    ``header_value(cls=MsgClass.DONE, owner=t, length=1)``."""
    parts = []
    for name, fld in MSG_HEADER:
        v = fields.pop(name, 0)
        if hasattr(v, "shape"):  # a value: zero-extended or cut to the field
            v = Value.cast(v)
            parts.append(Cat(v, Const(0, fld.width))[:fld.width])
        else:
            parts.append(Const(int(v), fld.width))
    assert not fields, f"unknown header fields {sorted(fields)}"
    return Cat(*parts)

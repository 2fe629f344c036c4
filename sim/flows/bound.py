"""The cycles a program cannot take fewer of on a PiM tile: its datapath floor.

A PiM tile (:mod:`heterotron.hdl.tiles.pim`) spends, whatever the network and the memory
tiles do:

* ``PROGRAM``: ``rows * cols`` cycles, one crossbar weight a cycle (padding included);
* ``MVM``: a vector takes the loader ``L = K + rows / lanes`` cycles (an element a cycle
  into the vector buffer, then its beats to the unit) and the unit ``U = max(1, planes *
  adc_share)`` cycles, where ``planes`` is the number of input bit-planes converted: all
  ``input_bits`` (twice that in sign-magnitude) or, with ``skip_zero``, those with a set bit
  in the vector. The unit converts a vector only once it is loaded, and the loader works
  ahead of it: the ``M`` vectors take at least ``max(L_0 + sum U, sum L + U_last)`` cycles,
  then the unit's :attr:`~heterotron.hdl.pim.PimTile.latency` for the last sums;
* with ``out``: for each row, an accumulator read, ``dest.cols`` rescales of
  ``div_cycles + 2`` cycles each, and the row's packet (``3 + ceil(4 * dest.cols /
  word_bytes)`` beats).

The sum over a tile's instructions is its floor; the layer cannot finish before its
busiest tile's floor. :class:`PimFloors` counts it while the program interpreter runs (the
conversions depend on the data: :attr:`~heterotron.sim.golden.accel.Interpreter.on_mvm`).
What the floor leaves out (instruction decode, the REQ and DONE packets, pipeline latency,
waiting for data) is what the RTL spends above it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from heterotron.hdl.contract.accel import OPCODES, Description, TileKind, decode_instr

__all__ = ["PimFloors", "pim_floors", "converted_planes"]

_PROGRAM = next(op for op in OPCODES if op.cls == TileKind.PIM and op.name == "PROGRAM")


def converted_planes(p: dict, x: np.ndarray) -> np.ndarray:
    """Bit-planes the unit converts for each row of ``x`` (``M x K`` wrapped inputs)."""
    ib = p["input_bits"]
    signmag = p["input_code"] == "signmag"
    n = 2 * ib if signmag else ib
    if not p["skip_zero"]:
        return np.full(x.shape[0], n)
    if signmag:
        parts = [np.where(x > 0, x, 0), np.where(x < 0, -x, 0)]
    else:
        parts = [x & ((1 << ib) - 1)]
    planes = np.zeros(x.shape[0], np.int64)
    for part in parts:
        mask = np.bitwise_or.reduce(part.astype(np.int64), axis=1) if x.shape[1] else 0
        planes += np.array([bin(int(v)).count("1") for v in np.atleast_1d(mask)])
    return planes


class PimFloors:
    """Counts each PiM tile's floor: hook :meth:`on_mvm` on the interpreter
    (``interp.on_mvm = floors.on_mvm``) while it runs a program, then :meth:`result` with the
    program's words."""

    def __init__(self, desc: Description):
        from heterotron.hdl.contract.params import inspect_only
        from heterotron.hdl.tiles.pim import PimNetTile

        p = desc.params
        self.tiles = {t.index: t for t in desc.of_kind(TileKind.PIM)}
        self._shape = {}
        for i, t in self.tiles.items():
            net = inspect_only(PimNetTile(index=i, control=desc.control.index,
                                          flit_width=p["flit_width"],
                                          max_packet=p["max_packet"], **t.params))
            self._shape[i] = (t.params, net.div_cycles, net.word_bytes, net.unit.latency)
        self._mvm: Counter = Counter()

    def on_mvm(self, tile: int, x: np.ndarray, dest_cols: int) -> None:
        q, div, wb, latency = self._shape[tile]
        m = x.shape[0]
        load = x.shape[1] + q["rows"] // q["lanes"]
        unit = np.maximum(1, converted_planes(q, x) * q["adc_share"])
        self._mvm[tile] += max(load + int(unit.sum()), m * load + int(unit[-1])) + latency
        if dest_cols:
            beats = -(-4 * dest_cols // wb)
            self._mvm[tile] += x.shape[0] * (1 + dest_cols * (div + 2) + 3 + beats)

    def result(self, words) -> dict[int, int]:
        """Each PiM tile's floor: the MVMs seen, plus the program's PROGRAMs."""
        floor = Counter(self._mvm)
        pos = 0
        while pos < len(words):  # PROGRAM: a weight a cycle
            op, head, _ = decode_instr(words[pos:])
            if op is _PROGRAM and head["tile"] in self.tiles:
                q = self.tiles[head["tile"]].params
                floor[head["tile"]] += q["rows"] * q["cols"]
            pos += 1 + (op.words if op is not None else 0)
        return {i: floor[i] for i in self.tiles}


def pim_floors(desc: Description, interp, words) -> dict[int, int]:
    """Run ``words`` on ``interp`` (an :class:`~heterotron.sim.golden.accel.Interpreter`) and
    return each PiM tile's floor in cycles (see the module documentation)."""
    floors = PimFloors(desc)
    interp.on_mvm = floors.on_mvm
    try:
        interp.execute(words)
    finally:
        interp.on_mvm = None
    return floors.result(words)

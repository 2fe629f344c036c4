"""Action counts of a program: what each tile does that costs energy
(:data:`heterotron.sim.scale.energy.ACTIONS`), counted from the decoded program
(:func:`heterotron.sim.scale.perf.decode_program`) and the description's placement.

Exact, from the instructions' fields (the same numbers the RTL moves):

* ``mac_int8``: an SA ``RUN``'s ``M x K x N`` multiply-accumulates (operands up to 8 bits;
  wider ones are counted as int8 MACs too and the report says so);
* ``sram_read_bit`` / ``sram_write_bit``: the scratchpad words every instruction reads and
  writes (whole words, as the memory tile's ports move them), times the word's bits;
* ``adc_conversion``: a PiM ``MVM``'s converted bit-planes (per vector, from the program
  interpreter when it ran, else every plane) times the tile's bit-lines;
* ``crossbar_row_read``: the cells those conversions read, ``rows`` a bit-line and plane;
* ``flit_hop_bit``: every packet's flits (three header beats and the data beats of a DATA
  packet, the words of CMD, REQ and DONE packets) times the flit's bits times the routers it
  crosses (``hops + 1``, dimension-order routing); ``vertical_link_bit``: the bits times the
  links it crosses between tiers.

Approximate, from the units' datapaths (labelled so in :data:`APPROXIMATE`): the SFU units'
arithmetic per element (Softmax, GELU, LayerNorm, requantisation) and the requantisation of
SA and PiM results, as int32 multiplies and adds. Not counted: SRAM inside the tiles (the PiM
tile's receive buffer, the SA tile's operand buffers, the SFU's row banks), the crossbar's
programming (``PROGRAM``'s cell writes), clocks and leakage.
"""

from __future__ import annotations

import math
from collections import Counter

from heterotron.hdl.contract.accel import REQ_ARGS, WORD, Description, elem_bytes
from heterotron.sim.scale.perf import Instr, region_words

__all__ = ["count_actions", "APPROXIMATE"]

#: (int32 multiplies, int32 adds) per element of each SFU operation: the integer datapaths of
#: ``hdl/softmax.py``, ``hdl/gelu.py``, ``hdl/layernorm.py`` and the requantizer, rounded to
#: whole operations (I-BERT's polynomial exp and erf, a normalising multiply, a rescale).
SFU_OPS = {"REQUANT": (1, 2), "SOFTMAX": (3, 3), "GELU": (3, 3), "LAYERNORM": (3, 4)}
APPROXIMATE = ("mul_int32", "add_int32")

_REQ_WORDS = 1 + REQ_ARGS.size // WORD   # header + arguments
_DONE_WORDS = 2


class _Counter:
    def __init__(self, desc: Description):
        self.desc = desc
        self.wb = desc.word_bytes
        self.flit = desc.params["flit_width"]
        self.max_packet = desc.params["max_packet"]
        self.at = {t.index: t.at for t in desc.tiles}
        self.by_tile: dict[int, Counter] = {t.index: Counter() for t in desc.tiles}

    def hops(self, a: int, b: int) -> tuple[int, int]:
        (ax, ay, az), (bx, by, bz) = self.at[a], self.at[b]
        return abs(ax - bx) + abs(ay - by), abs(az - bz)

    def send(self, src: int, dest: int, bits: float) -> None:
        """``bits`` sent from ``src`` to ``dest``; the energy is the sender's."""
        planar, vertical = self.hops(src, dest)
        c = self.by_tile[src]
        c["flit_hop_bit"] += bits * (planar + vertical + 1)
        c["vertical_link_bit"] += bits * vertical

    def data(self, src: int, dest: int, words: int) -> None:
        """``words`` scratchpad words as DATA packets (three header beats each)."""
        packets = math.ceil(words / self.max_packet)
        self.send(src, dest, (words + 3 * packets) * self.flit)

    def read(self, mem: int, dest: int, region: dict) -> None:
        w = region_words(region, self.wb)
        self.by_tile[mem]["sram_read_bit"] += w * self.wb * 8
        self.send(dest, mem, _REQ_WORDS * WORD)
        self.data(mem, dest, w)

    def write(self, src: int, region: dict, words: int | None = None) -> None:
        w = region_words(region, self.wb) if words is None else words
        self.by_tile[region["mem"]]["sram_write_bit"] += w * self.wb * 8
        self.data(src, region["mem"], w)


def count_actions(desc: Description, instrs: list[Instr]) -> dict[int, Counter]:
    """Each tile's action counts (:mod:`heterotron.sim.scale.energy` names) for ``instrs``."""
    k = _Counter(desc)
    ctrl = desc.control.index
    tiles = {t.index: t for t in desc.tiles}
    sa_dims: dict[int, dict[int, tuple[int, int]]] = {}
    for ins in instrs:
        if ins.op in ("NOP", "WAIT"):
            continue
        t, a, c = ins.tile, ins.args, k.by_tile[ins.tile]
        p = tiles[t].params
        k.send(ctrl, t, ins.words * WORD)           # the CMD packet
        k.send(t, ctrl, _DONE_WORDS * WORD)         # its DONE
        if ins.op == "COPY":
            w = region_words(a["src"], k.wb)
            c["sram_read_bit"] += w * k.wb * 8
            k.by_tile[a["dest_tile"]]["sram_write_bit"] += w * k.wb * 8
            k.data(t, a["dest_tile"], w)
        elif ins.op == "LOAD":
            k.read(a["src"]["mem"], t, a["src"])
            s = a["src"]
            dims = (s["cols"], s["rows"]) if a["trans"] else (s["rows"], s["cols"])
            sa_dims.setdefault(t, {})[a["port"]] = dims
        elif ins.op == "RUN":
            m, kk = sa_dims.get(t, {}).get(1, (0, 0))
            _, n = sa_dims.get(t, {}).get(2, (0, 0))
            c["mac_int8"] += m * kk * n
            if p["requant"]:
                c["mul_int32"] += m * n
                c["add_int32"] += 2 * m * n
            ob = elem_bytes(p["out_width"] if p["requant"] else p["acc_width"])
            beats = m * math.ceil(n / p["cols"])
            per_beat = -(-p["cols"] * ob // k.wb)
            dest = a["dest"]
            k.by_tile[dest["mem"]]["sram_write_bit"] += region_words(dest, k.wb) * k.wb * 8
            k.send(t, dest["mem"], beats * (3 + per_beat) * k.flit)
        elif ins.op == "PROGRAM":
            k.read(a["src"]["mem"], t, a["src"])
        elif ins.op == "MVM":
            k.read(a["src"]["mem"], t, a["src"])
            slices = -(-(p["weight_bits"] - 1) // p["cell_bits"])
            lines = p["cols"] * 2 * slices
            planes = sum(ins.planes)
            c["adc_conversion"] += planes * lines
            c["crossbar_row_read"] += planes * lines * p["rows"]
            c["add_int32"] += planes * lines          # shift-and-add into the accumulators
            if a["out"]:
                d = a["dest"]
                c["mul_int32"] += d["rows"] * d["cols"]   # the rescale
                k.write(t, d)
        elif ins.op == "TABLE":
            k.read(a["src"]["mem"], t, a["src"])
        elif ins.op in SFU_OPS:
            s = a["src"]
            k.read(s["mem"], t, s)
            if ins.op == "REQUANT" and a["res"]:   # the residual operand
                k.read(a["y"]["mem"], t, a["y"])
            muls, adds = SFU_OPS[ins.op]
            n = s["rows"] * s["cols"]
            c["mul_int32"] += muls * n
            c["add_int32"] += adds * n
            k.write(t, a["dest"])
            if ins.op == "LAYERNORM":
                k.write(t, a["res"])
    return {t: +cnt for t, cnt in k.by_tile.items()}

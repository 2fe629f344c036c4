"""The PiM tiles' floor (sim/flows/bound.py): the cycles a program cannot take fewer of,
counted from the documented datapath rates on data whose bit-planes are known by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract.accel import TileKind
from heterotron.hdl.contract.params import inspect_only
from heterotron.hdl.tiles.pim import PimNetTile
from heterotron.sim.flows.bound import pim_floors
from heterotron.sim.golden.accel import Interpreter, Program

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_pim_floor_counts_writes_conversions_and_rescales():
    """encoder-small's PiM tile (16 x 4 crossbar, 4 lanes, 12-bit two's-complement inputs,
    adc_share 8, zero planes skipped): one PROGRAM (16 * 4 weights, a cycle each) and one
    MVM of four vectors with ``out``."""
    desc = describe(tomllib.loads((CONFIGS / "encoder-small.toml").read_text())["accelerator"])
    pim = desc.of_kind(TileKind.PIM)[0]
    mem = desc.of_kind(TileKind.MEMORY)[0]
    p = pim.params
    assert (p["rows"], p["cols"], p["lanes"], p["input_bits"], p["adc_share"],
            p["skip_zero"], p["input_code"]) == (16, 4, 4, 12, 8, True, "twos")
    prog = Program(desc)
    w, x, out = prog.alloc(mem, 4, 16, 1), prog.alloc(mem, 4, 16, 2), prog.alloc(mem, 4, 4, 4)
    prog.program(pim, w)
    prog.mvm(pim, x, out)
    image = bytearray(prog.allocated()[mem.index])
    rng = np.random.default_rng(5)
    image[w.addr:w.addr + 64] = rng.integers(-100, 101, 64).astype(np.int8).tobytes()
    rows = np.zeros((4, 16), np.int16)
    rows[1, :] = -1        # every one of the 12 planes: 96 cycles
    rows[2, 3] = 2047      # planes 0 .. 10: 88 cycles
    rows[3, 7] = 0xF0      # planes 4 .. 7: 32 cycles
    for r in range(4):     # row 0: no plane, 1 cycle; the loader: 16 + 16 / 4 = 20 a vector
        at = x.addr + r * x.stride * 2
        image[at:at + 32] = rows[r].astype("<i2").tobytes()
    interp = Interpreter(desc, {mem.index: bytes(image)})
    floors = pim_floors(desc, interp, prog.words)
    assert interp.result().error == 0
    net = inspect_only(PimNetTile(index=pim.index, control=desc.control.index, flit_width=32,
                                  max_packet=64, **p))
    rescale = 4 * (1 + 4 * (net.div_cycles + 2) + 3 + 4)  # 4 rows of 4 sums, 4-beat packets
    # the first vector's load, then the unit's conversions (longer than 4 loads + the last's)
    vectors = 20 + (1 + 96 + 88 + 32) + net.unit.latency
    assert floors == {pim.index: 16 * 4 + vectors + rescale}

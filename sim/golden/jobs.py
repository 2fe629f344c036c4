"""A GEMM job for the accelerator: a random GEMM program on one SA tile, the scratchpad image
the host writes for it, and what the golden program interpreter says the scratchpad holds
after it. One job for every place a GEMM runs through the host link: ``heterotron host gemm``
on a board, the board testbench through its UART, the pseudo-terminal test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["GemmJob", "gemm_job", "gemm_scale", "compare"]


@dataclass
class GemmJob:
    """A GEMM program, its scratchpad image and what the golden interpreter says it leaves."""

    sa: Any  #: the SA tile
    mem: int  #: the memory tile holding the operands and the result
    params: dict[str, Any]  #: the SA tile's engine parameters
    m: int
    k: int
    n: int
    a: Any  #: A (``M x K``) and B (``K x N``), NumPy arrays
    b: Any
    image: bytes  #: memory tile ``mem`` from address 0, as the host writes it
    words: list[int]
    result: Any  #: the interpreter's :class:`~heterotron.sim.golden.accel.Result`
    c: Any  #: the result's region

    @property
    def expected(self) -> bytes:
        """The image after the program (what the host reads back)."""
        return self.result.memories[self.mem][:len(self.image)]

    def describe(self) -> str:
        p = self.params
        kind = "int" if p["a_signed"] else "uint"
        out = (f"requantised to int{p['out_width']}" if p["requant"]
               else f"int{p['acc_width']} sums")
        return (f"GEMM {self.m}x{self.k}x{self.n} ({kind}{p['a_width']} x "
                f"{'int' if p['b_signed'] else 'uint'}{p['b_width']}, {out}) on SA tile "
                f"{self.sa.index} ({p['rows']}x{p['cols']} {p['dataflow']}), operands and "
                f"result in memory tile {self.mem}")


def gemm_scale(p: dict[str, Any], k: int) -> tuple[int, int]:
    """One requantisation ``(m, e)``, ``m / 2^e`` the ratio that spreads ``C``'s typical
    magnitude (uniform operands: their standard deviations times ``sqrt(K)``) over a quarter
    of the output range, so few results sit on the rails."""
    from heterotron.sim.golden.systolic import operand_range

    spread = 1.0
    for width, signed in ((p["a_width"], p["a_signed"]), (p["b_width"], p["b_signed"])):
        lo, hi = operand_range(width, signed)
        spread *= (hi - lo + 1) / math.sqrt(12)
    ratio = (1 << (p["out_width"] - 1)) / 4 / (spread * math.sqrt(k))
    e = min(p["max_shift"], 30)
    while e > 0 and round(ratio * (1 << e)) >= 1 << p["m_width"]:
        e -= 1
    return max(1, min(round(ratio * (1 << e)), (1 << p["m_width"]) - 1)), e


def gemm_job(desc, m: int, k: int, n: int, seed: int, tile: int | None = None) -> GemmJob:
    """``C = A B`` with random operands over their whole ranges on SA tile ``tile`` (its
    first): ``LOAD`` A and B, a ``SCALE`` for every lane on a requantising tile (one scale,
    :func:`_scale`), ``RUN``; the operands and the result in the first memory tile they fit,
    from address 0. A program that depends on nothing the tile held before. Mistakes
    (sizes past the tile's maxima, no room) are :class:`UsageError`."""
    import numpy as np

    from heterotron.hdl.contract.accel import Port, TileKind, elem_bytes
    from heterotron.sim.golden import accel as golden
    from heterotron.sim.golden.systolic import operand_range

    sas = desc.of_kind(TileKind.SA)
    if not sas:
        raise ValueError("the description has no SA tile to run a GEMM on")
    if tile is None:
        sa = sas[0]
    else:
        found = [t for t in sas if t.index == tile]
        if not found:
            raise ValueError(f"--tile {tile} is not an SA tile; SA tiles: "
                             f"{', '.join(str(t.index) for t in sas)}")
        sa = found[0]
    p = golden.sa_params(sa)
    for name, value in (("m", m), ("k", k), ("n", n)):
        if not 1 <= value <= p[f"max_{name}"]:
            raise ValueError(f"--{name} must be in [1, {p[f'max_{name}']}] (SA tile "
                             f"{sa.index}'s max_{name}), not {value}")
    rng = np.random.default_rng(seed)
    a = rng.integers(*operand_range(p["a_width"], p["a_signed"]), endpoint=True, size=(m, k))
    b = rng.integers(*operand_range(p["b_width"], p["b_signed"]), endpoint=True, size=(k, n))
    out_width = p["out_width"] if p["requant"] else p["acc_width"]
    sizes = [(m, k, elem_bytes(p["a_width"])), (k, n, elem_bytes(p["b_width"])),
             (m, n, elem_bytes(out_width))]
    for mem in desc.of_kind(TileKind.MEMORY):
        prog = golden.Program(desc)
        try:
            ra, rb, rc = (prog.alloc(mem, *s) for s in sizes)
        except ValueError:
            continue
        break
    else:
        raise ValueError(f"a {m}x{k}x{n} GEMM's operands and result do not fit any one "
                         "memory tile")
    image = bytearray(prog.allocated()[mem.index])
    golden.write_tensor(image, ra, a)
    golden.write_tensor(image, rb, b)
    prog.load(sa, Port.A, ra)
    prog.load(sa, Port.B, rb)
    if p["requant"]:
        sm, se = gemm_scale(p, k)
        for lane in range(p["cols"]):
            prog.scale(sa, lane, sm, se)
    prog.run(sa, rc)
    result = golden.run_program(desc, {mem.index: bytes(image)}, prog.words)
    if result.error:  # the builder's mistake, not the user's
        raise RuntimeError(f"the GEMM program is refused by the interpreter: {result.errors}")
    return GemmJob(sa, mem.index, p, m, k, n, a, b, bytes(image), list(prog.words), result,
                   rc)


def compare(job: GemmJob, got: bytes) -> list[str]:
    """What differs between the image read back and the interpreter's, one line each (the
    result first, element by element; then any other byte)."""
    import numpy as np

    from heterotron.sim.golden.accel import read_tensor

    want = job.expected
    if got == want:
        return []
    problems = []
    c = job.c
    have, should = read_tensor(got, c), read_tensor(want, c)
    bad = np.argwhere(have != should)
    if len(bad):
        r, col = (int(v) for v in bad[0])
        problems.append(f"{len(bad)} of {c.rows * c.cols} result elements differ (first "
                        f"C[{r}][{col}]: board {have[r, col]}, golden {should[r, col]})")
    outside = [i for i in range(len(want)) if got[i] != want[i]
               and not (c.addr <= i < c.end)]
    if outside:
        problems.append(f"{len(outside)} bytes outside the result differ (first at byte "
                        f"{outside[0]} of memory tile {job.mem}: board {got[outside[0]]:#04x}, "
                        f"golden {want[outside[0]]:#04x})")
    return problems or ["the bytes between the result's rows differ"]

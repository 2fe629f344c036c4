"""cocotb testbench: Requantizer against :func:`heterotron.sim.golden.requantizer.requantize`.

Run through the runner (``heterotron sim requantizer --param lanes=3 --seed 7``), which passes the
generator parameters, the seed, the vector count and the stall switch in the environment.
"""

from __future__ import annotations

import cocotb
import numpy as np
from amaranth.lib import data

from heterotron.hdl.contract.params import defaults, inspect_only
from heterotron.hdl.requantizer import Requantizer
from heterotron.sim.golden.requantizer import requantize
from heterotron.tb.common import (
    STALL_PHASES,
    ClockedBench,
    Scoreboard,
    StreamSink,
    StreamSource,
    decode,
    encode,
    make_rng,
    params_from_env,
    port_shapes,
    vectors_from_env,
)

DEFAULT_VECTORS = 10_000


class RequantizerBench:
    """Source, sink, golden model and scoreboard around one Requantizer."""

    def __init__(self, dut, rng: np.random.Generator):
        p = params_from_env(defaults(Requantizer.PARAMS))
        self.dut, self.p, self.rng = dut, p, rng
        self.lanes, self.groups = p["lanes"], p["channels"] // p["lanes"]
        self.residual, self.meta_width = p["residual"], p["meta_width"]
        self.latency = inspect_only(Requantizer(**p)).latency
        shapes = port_shapes(Requantizer, p)
        self.cfg_layout, self.in_layout, self.out_layout = shapes["cfg"], shapes["i"], shapes["o"]
        self.source = StreamSource(dut, "i", rng)
        self.cfg = StreamSource(dut, "cfg", rng)
        self.scoreboard = Scoreboard("o", fmt=self._fmt_out)
        self.sink = StreamSink(dut, "o", rng, on_beat=self.scoreboard.got)
        self.bench = ClockedBench(dut, [self.source, self.cfg, self.sink])
        shape = (self.groups, self.lanes)
        self.table = {k: np.zeros(shape, dtype=np.int64) for k in ("m", "e", "m_y", "e_y")}
        self.beats = 0  # beats handed to the source; beat n uses channel group n % groups

    def _fmt_out(self, word: int) -> str:
        beat = decode(self.out_layout, word)
        if not self.meta_width:
            return str([int(v) for v in beat])
        return f"data {[int(v) for v in beat.data]}, meta {int(beat.meta):#x}"

    def _in_word(self, z, y, meta: int) -> int:
        """One input beat: the lanes of ``z`` (and ``y``, ``meta`` where the unit has them)."""
        if not isinstance(self.in_layout, data.StructLayout):
            return encode(self.in_layout, [int(v) for v in z])
        fields = {"z": [int(v) for v in z]}
        if self.residual:
            fields["y"] = [int(v) for v in y]
        if self.meta_width:
            fields["meta"] = meta
        return encode(self.in_layout, fields)

    def _out_word(self, out, meta: int) -> int:
        lanes = [int(v) for v in out]
        if not self.meta_width:
            return encode(self.out_layout, lanes)
        return encode(self.out_layout, {"data": lanes, "meta": meta})

    # -- stimulus ---------------------------------------------------------------------------

    def rand_inputs(self, n: int, width: int) -> np.ndarray:
        """Full-range, small, and extreme values mixed."""
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        full = self.rng.integers(lo, hi, size=(n, self.lanes), endpoint=True)
        small_bits = max(1, width // 2)
        small = self.rng.integers(-(1 << small_bits), 1 << small_bits, size=(n, self.lanes))
        corners = np.array([lo, hi, -1, 0, 1], dtype=np.int64)
        extreme = self.rng.choice(corners, size=(n, self.lanes))
        pick = self.rng.random((n, self.lanes))
        return np.where(pick < 0.5, full, np.where(pick < 0.8, small, extreme))

    def rand_scales(self) -> dict[str, np.ndarray]:
        """Multipliers over their whole range; shifts around the one that fills the output."""
        p, shape = self.p, (self.groups, self.lanes)
        out = {}
        for m_key, e_key, width in (("m", "e", p["in_width"]), ("m_y", "e_y", p["res_width"])):
            out[m_key] = self.rng.integers(0, 1 << p["m_width"], size=shape)
            natural = (width - 1) + p["m_width"] - (p["out_width"] - 1)
            near = natural - self.rng.integers(0, width, size=shape)
            anywhere = self.rng.integers(0, p["max_shift"], size=shape, endpoint=True)
            e = np.where(self.rng.random(shape) < 0.75, near, anywhere)
            out[e_key] = np.clip(e, 0, p["max_shift"])
        return out

    # -- DUT access -------------------------------------------------------------------------

    async def write_scales(self, scales: dict[str, np.ndarray]) -> None:
        """Write the whole scale table through ``cfg``, one beat per entry (the input source
        must be idle: a write takes effect for the beats accepted from its cycle on)."""
        assert self.source.idle, "scales are only rewritten between batches"
        words = []
        for g in range(self.groups):
            for k in range(self.lanes):
                address = {"group": g, "lane": k}  # where the layout has them
                fields = {name: address[name] if name in address else int(scales[name][g, k])
                          for name in self.cfg_layout.members}
                words.append(encode(self.cfg_layout, fields))
        self.cfg.send(words)
        await self.bench.wait_until(lambda: self.cfg.idle, 100 + 20 * len(words), "cfg writes")
        for key in self.table:
            if key in scales:
                self.table[key] = np.array(scales[key], dtype=np.int64)

    def send(self, z: np.ndarray, y: np.ndarray | None = None) -> None:
        """Queue beats (with random ``meta`` when the unit carries it) and their golden outputs
        (with the scale table as it stands)."""
        p = self.p
        n = len(z)
        rows = (self.beats + np.arange(n)) % self.groups
        t = self.table
        if self.residual:
            want = requantize(z, t["m"][rows], t["e"][rows], p["out_width"],
                              y=y, m_y=t["m_y"][rows], e_y=t["e_y"][rows])
        else:
            want = requantize(z, t["m"][rows], t["e"][rows], p["out_width"])
        metas = [0] * n
        if self.meta_width:
            metas = [int.from_bytes(self.rng.bytes(8), "little") & ((1 << self.meta_width) - 1)
                     for _ in range(n)]
        words = [self._in_word(z[j], None if y is None else y[j], metas[j]) for j in range(n)]
        for j, (w, row, meta) in enumerate(zip(want, rows, metas, strict=True)):
            ctx = f"input beat {self.beats + j}, group {row}"
            self.scoreboard.expect(self._out_word(w, meta), ctx)
        self.source.send(words)
        self.beats += n

    async def drain(self) -> None:
        """Wait until every queued beat came out, then check nothing more does."""
        limit = 200 + 20 * (len(self.scoreboard.expected) + len(self.source.queue))
        await self.bench.wait_until(
            lambda: self.source.idle and not self.scoreboard.expected, limit, "drain")
        await self.bench.cycles(self.latency + 8)  # an extra beat would fail got()
        self.scoreboard.check_done()


@cocotb.test()
async def test_random(dut):
    """Random vectors in batches, new random scales between batches, random stalls."""
    tb = RequantizerBench(dut, make_rng(1))
    await tb.bench.start()
    total = vectors_from_env(DEFAULT_VECTORS)
    batches = 5
    done = 0
    for b in range(batches):
        n = total // batches + (1 if b < total % batches else 0)
        await tb.write_scales(tb.rand_scales())
        tb.bench.set_stalls(*STALL_PHASES[b % len(STALL_PHASES)])
        z = tb.rand_inputs(n, tb.p["in_width"])
        y = tb.rand_inputs(n, tb.p["res_width"]) if tb.residual else None
        tb.send(z, y)
        await tb.drain()
        done += n
    assert tb.scoreboard.matched == done == total
    dut._log.info("%d vectors bit-exact in %d cycles", done, tb.bench.cycle)


def _v2(x: int) -> int:
    """Number of trailing zero bits of ``x > 0``."""
    return (x & -x).bit_length() - 1


def _corner_scales(tb: RequantizerBench, shifts: list[int]) -> dict[str, np.ndarray]:
    """Slot ``s`` (= group * lanes + lane) takes shift ``shifts[s]``; ``m`` cycles through its
    largest value, a value with enough factors of two that an exact tie is reachable, and a
    random odd value. The residual scale uses the shifts in reverse lane order."""
    p, rng, shape = tb.p, tb.rng, (tb.groups, tb.lanes)
    e = np.array(shifts, dtype=np.int64).reshape(shape)
    scales = {"e": e, "e_y": e[:, ::-1].copy()}
    m_max = (1 << p["m_width"]) - 1
    for m_key, e_key, width in (("m", "e", p["in_width"]), ("m_y", "e_y", p["res_width"])):
        m = np.empty(shape, dtype=np.int64)
        for s, ee in enumerate(scales[e_key].flat):
            kind = (s + int(ee)) % 3
            if kind == 0:
                m.flat[s] = m_max
            elif kind == 1:
                # v * m ties when v2(v) + v2(m) == e - 1 and v2(v) <= width - 2.
                b = min(max(0, int(ee) - 1 - (width - 2)), p["m_width"] - 1)
                odd = 2 * int(rng.integers(0, 1 << (p["m_width"] - 1 - b))) + 1
                m.flat[s] = odd << b
            else:
                m.flat[s] = int(rng.integers(0, 1 << p["m_width"])) | 1
        scales[m_key] = m
    return scales


def _corner_value(rng: np.random.Generator, rep: int, m: int, e: int, width: int) -> int:
    """Repetition 0..4: min, max, -1, 0, 1; after that an exact tie for (m, e) when one fits
    in ``width`` bits (random sign), else a random value."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if rep < 5:
        return [lo, hi, -1, 0, 1][rep]
    if e > 0 and m > 0 and 0 <= e - 1 - _v2(m) <= width - 2:
        a = e - 1 - _v2(m)
        odd = 2 * int(rng.integers(0, 1 << (width - 2 - a))) + 1
        return (odd << a) * (1 if rng.random() < 0.5 else -1)
    return int(rng.integers(lo, hi, endpoint=True))


def _count_ties(values: np.ndarray, m: np.ndarray, e: np.ndarray) -> int:
    """How many ``values * m`` sit exactly half-way between two multiples of ``2^e``."""
    return sum(1 for v, mm, ee in zip(values.flat, m.flat, e.flat, strict=True)
               if ee > 0 and (int(v) * int(mm)) % (1 << int(ee)) == 1 << (int(ee) - 1))


@cocotb.test()
async def test_corners(dut):
    """Extreme inputs, m = 0 and m = 2^m_width - 1, every shift e, and exact ties."""
    tb = RequantizerBench(dut, make_rng(2))
    await tb.bench.start()
    p, rng = tb.p, tb.rng
    G, L = tb.groups, tb.lanes
    all_shifts = list(range(p["max_shift"] + 1))
    ties = 0
    for start in range(0, len(all_shifts), G * L):
        shifts = [all_shifts[(start + s) % len(all_shifts)] for s in range(G * L)]
        scales = _corner_scales(tb, shifts)
        if start == 0:
            scales["m"][0, 0] = 0  # m = 0 must give 0 whatever the input (first round only)
        await tb.write_scales(scales)
        tb.bench.set_stalls(0.3, 0.3)
        reps = 12
        z = np.zeros((reps * G, L), dtype=np.int64)
        y = np.zeros((reps * G, L), dtype=np.int64)
        for rep in range(reps):
            for g in range(G):
                for k in range(L):
                    z[rep * G + g, k] = _corner_value(
                        rng, rep, int(scales["m"][g, k]), int(scales["e"][g, k]), p["in_width"])
                    y[rep * G + g, k] = _corner_value(
                        rng, rep, int(scales["m_y"][g, k]), int(scales["e_y"][g, k]),
                        p["res_width"])
        # Beat j of this batch must use group j % G: the batch starts on a row boundary.
        assert tb.beats % G == 0
        rows = np.arange(reps * G) % G
        ties += _count_ties(z, scales["m"][rows], scales["e"][rows])
        if tb.residual:
            ties += _count_ties(y, scales["m_y"][rows], scales["e_y"][rows])
        tb.send(z, y if tb.residual else None)
        await tb.drain()
    # The corner set must really contain ties (half-way cases) to exercise the rounding rule.
    assert ties > 0, "corner stimulus produced no exact ties"
    dut._log.info("corner vectors bit-exact: %d beats, %d exact ties, shifts 0..%d",
                  tb.scoreboard.matched, ties, p["max_shift"])

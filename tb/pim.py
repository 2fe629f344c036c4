"""cocotb testbench: PimTile against :class:`heterotron.sim.golden.pim.PimTileModel`, bit for bit.

Run through the runner: ``heterotron sim pim --param enob=3 --param cell_bits=1``.

Every epoch programs the whole array (cells written in a random order, some twice), draws new
run-time registers (ADC range from the column sums the inputs will produce, offset, noise sigma
and seed, fault rate and seed), then streams dense, sparse, all-zero and extreme vectors, with
random gaps on every input stream and random back-pressure on the output. The tile's cycle
counters are compared with the golden model's statistics.
"""

from __future__ import annotations

import cocotb
import numpy as np

from heterotron.hdl.contract.params import defaults
from heterotron.hdl.pim import PimFlag, PimReg, PimTile
from heterotron.sim.golden.pim import ADC_FRAC, PimError, PimTileModel, gain_for_range
from heterotron.tb.common import (
    ClockedBench,
    Scoreboard,
    StreamSink,
    StreamSource,
    decode,
    encode,
    in_phases,
    make_rng,
    params_from_env,
    port_shapes,
    vectors_from_env,
)

DEFAULT_VECTORS = 48  # vectors per random test


class PimBench:
    def __init__(self, dut, rng: np.random.Generator):
        self.dut, self.rng = dut, rng
        self.p = p = params_from_env(defaults(PimTile.PARAMS))
        self.model = PimTileModel(**p)
        self.shapes = port_shapes(PimTile, p)
        self.wr = StreamSource(dut, "wr", rng)
        self.cfg = StreamSource(dut, "cfg", rng)
        self.x = StreamSource(dut, "x", rng)
        self.board = Scoreboard("o", fmt=lambda w: str(list(decode(self.shapes["o"], w))))
        self.sink = StreamSink(dut, "o", rng, on_beat=self.board.got)
        self.bench = ClockedBench(dut, [self.wr, self.cfg, self.x, self.sink])
        self.ib = p["input_bits"]
        self.xlo, self.xhi = -(1 << (self.ib - 1)), (1 << (self.ib - 1)) - 1
        self.wlim = (1 << (p["weight_bits"] - 1)) - 1
        self.vectors = 0

    def pack(self, port: str, value) -> int:
        return encode(self.shapes[port], value)

    # -- writes: only between vectors, as the tile takes them --------------------------------

    async def drain(self) -> None:
        await self.bench.wait_until(
            lambda: self.x.idle and not self.board.expected and self.wr.idle and self.cfg.idle,
            50_000 + 200 * len(self.board.expected), "outstanding vectors and writes")

    async def reg(self, reg: int, value: int, accepted: bool = True) -> None:
        """Write a register; ``accepted=False`` expects the tile to refuse it. The flag is
        sticky: an acceptance shows as no new flag, a refusal as the flag set (the outputs
        that follow show which value is in force)."""
        await self.drain()
        before = PimFlag(int(self.dut.error.value))
        # packed by hand: the codes that name no register (6, 7) are not PimReg members
        word = self.pack("cfg", {"value": value & 0xFFFFFFFF})
        self.cfg.send([word | int(reg) << self.shapes["cfg"]["reg"].offset])
        await self.drain()
        await self.bench.cycles(2)
        flags = PimFlag(int(self.dut.error.value))
        want = before | PimFlag.CONFIG if not accepted else before
        assert flags == want, (
            f"register {PimReg(reg).name if reg < len(PimReg) else reg} = {value}: "
            f"error flags {flags!r}, expected {want!r}")

    async def program(self, w: np.ndarray) -> None:
        """Every weight, in a random order, a few written twice (the last write stays)."""
        await self.drain()
        rows, cols = self.p["rows"], self.p["cols"]
        order = [(r, c) for r in range(rows) for c in range(cols)]
        self.rng.shuffle(order)
        words = []
        for r, c in order[: max(1, len(order) // 16)]:  # a stale value, overwritten below
            words.append(self.pack("wr", {"row": r, "col": c,
                                          "w": int(self.rng.integers(-self.wlim, self.wlim + 1))}))
        words += [self.pack("wr", {"row": r, "col": c, "w": int(w[c, r])}) for r, c in order]
        self.wr.send(words)
        await self.drain()
        self.model.program(w)

    def rand_weights(self) -> np.ndarray:
        rng, p = self.rng, self.p
        bits = int(rng.integers(1, p["weight_bits"], endpoint=True))
        lim = min(self.wlim, (1 << (bits - 1)))
        w = rng.integers(-lim, lim + 1, size=(p["cols"], p["rows"]))
        if rng.random() < 0.3:  # sparse weights
            w[rng.random(w.shape) < 0.7] = 0
        return w

    # -- vectors ----------------------------------------------------------------------------

    def rand_vector(self) -> np.ndarray:
        """Dense, sparse in bits (small magnitudes, positive), sparse in elements, extremes."""
        rng, rows = self.rng, self.p["rows"]
        kind = rng.integers(0, 6)
        if kind == 0:
            return rng.integers(self.xlo, self.xhi + 1, size=rows)
        if kind == 1:
            bits = int(rng.integers(1, self.ib))
            return rng.integers(0, 1 << (bits - 1) if bits > 1 else 2, size=rows)
        if kind == 2:
            v = rng.integers(self.xlo, self.xhi + 1, size=rows)
            v[rng.random(rows) < 0.9] = 0
            return v
        if kind == 3:
            return np.zeros(rows, dtype=np.int64)
        if kind == 4:
            return np.full(rows, self.xlo if rng.random() < 0.5 else self.xhi)
        # one plane only: a power of two
        return np.where(rng.random(rows) < 0.5, 1 << int(rng.integers(0, self.ib - 1)), 0)

    def send(self, vectors: list[np.ndarray], context: str) -> None:
        lanes = self.p["lanes"]
        x = np.array(vectors, dtype=np.int64)
        acc = self.model.mvm(x)
        for i, v in enumerate(x):
            for start in range(0, len(v), lanes):
                self.x.send([self.pack("x", [int(e) for e in v[start:start + lanes]])])
            self.board.expect(self.pack("o", [int(a) for a in acc[i]]),
                              f"{context}, vector {i}: x={v.tolist()}")
        self.vectors += len(x)

    # -- run-time registers -----------------------------------------------------------------

    def calibrated_gain(self, vectors) -> int:
        """A range at a random percentile of the column sums these vectors produce."""
        sums = self.model.column_sums(np.array(vectors, dtype=np.int64)[None]).ravel()
        top = np.percentile(sums[sums > 0], self.rng.uniform(50, 100)) if (sums > 0).any() else 1
        return min(gain_for_range(max(1.0, float(top)), self.p["enob"]),
                   (1 << (ADC_FRAC + self.p["enob"])) - 1)

    async def set_registers(self, vectors) -> None:
        rng, p, m = self.rng, self.p, self.model
        if p["adc_range"] == "calibrated":
            gain = self.calibrated_gain(vectors) if rng.random() < 0.8 else \
                int(rng.integers(1, 1 << (ADC_FRAC + p["enob"])))
            await self.reg(PimReg.GAIN, gain)
            m.configure(gain=gain)
        limit = m.offset_limit
        offset = 0 if rng.random() < 0.4 else int(rng.integers(-limit // 64, limit // 64))
        await self.reg(PimReg.OFFSET, offset)
        m.configure(offset=offset)
        if p["noise"]:
            sigma = 0 if rng.random() < 0.25 else int(rng.integers(1, 1 << 16))
            if rng.random() < 0.5:
                sigma >>= 6  # below an LSB as often as above
            seed = int(rng.integers(0, 1 << 32))
            await self.reg(PimReg.SIGMA, sigma)
            await self.reg(PimReg.NOISE_SEED, seed)
            m.configure(sigma_q=sigma, noise_seed=seed)
        if p["faults"]:
            rate = int(rng.choice([0, int(rng.integers(1, 1 << 16)), int(rng.integers(1, 2000))]))
            seed = int(rng.integers(0, 1 << 32))
            await self.reg(PimReg.FAULT_RATE, rate)
            await self.reg(PimReg.FAULT_SEED, seed)
            m.configure(fault_rate=rate, fault_seed=seed)

    def check_counters(self) -> None:
        conv = int(self.dut.conv_cycles.value)
        skip = int(self.dut.skip_cycles.value)
        st = self.model.stats
        assert (conv, skip) == (int(st.conv_cycles[0]), int(st.skip_cycles[0])), (
            f"cycle counters: conv {conv}, skip {skip}; golden conv {st.conv_cycles[0]}, "
            f"skip {st.skip_cycles[0]}")


@cocotb.test()
async def test_random(dut):
    """Epochs of new weights, new registers and random vectors under random stalls."""
    tb = PimBench(dut, make_rng(1))
    await tb.bench.start()

    async def epoch(k: int) -> int:
        batch = [tb.rand_vector() for _ in range(int(tb.rng.integers(4, 13)))]
        await tb.set_registers(batch)
        await tb.program(tb.rand_weights())
        tb.send(batch, f"epoch {k}")
        return len(batch)

    epochs = await in_phases(tb.bench, vectors_from_env(DEFAULT_VECTORS), epoch)
    await tb.drain()
    await tb.bench.cycles(200)
    tb.board.check_done()
    tb.check_counters()
    assert int(dut.error.value) == 0
    dut._log.info("%d vectors bit-exact over %d epochs in %d cycles; conv %d, skipped %d "
                  "cycles", tb.vectors, epochs, tb.bench.cycle, int(dut.conv_cycles.value),
                  int(dut.skip_cycles.value))


@cocotb.test()
async def test_refusals_and_extremes(dut):
    """Refused register and weight writes change nothing and raise their flag; the extreme
    weights and inputs, the top and bottom ADC codes (extreme offsets and gains)."""
    tb = PimBench(dut, make_rng(2))
    await tb.bench.start()
    p, m = tb.p, tb.model
    w = np.where(tb.rng.random((p["cols"], p["rows"])) < 0.5, tb.wlim, -tb.wlim)
    await tb.program(w)
    extremes = [np.full(p["rows"], tb.xlo), np.full(p["rows"], tb.xhi),
                np.zeros(p["rows"], dtype=np.int64),
                np.where(np.arange(p["rows"]) % 2 == 0, tb.xlo, tb.xhi)]
    tb.send(extremes, "extremes at reset registers")
    # refused weight: -2^(weight_bits-1); the cell keeps its value
    tb.wr.send([tb.pack("wr", {"row": 0, "col": 0, "w": -(1 << (p["weight_bits"] - 1))})])
    await tb.drain()
    await tb.bench.cycles(2)
    assert PimFlag(int(dut.error.value)) == PimFlag.WEIGHT
    refused = []
    if p["adc_range"] == "calibrated":
        refused += [(PimReg.GAIN, 0), (PimReg.GAIN, 1 << (ADC_FRAC + p["enob"]))]
    else:
        refused += [(PimReg.GAIN, m.gain)]
    refused += [(PimReg.OFFSET, m.offset_limit), (PimReg.OFFSET, -m.offset_limit - 1),
                (PimReg.SIGMA, 1 << 16), (PimReg.FAULT_RATE, 1 << 16), (6, 0), (7, 1)]
    if not p["noise"]:
        refused.append((PimReg.SIGMA, 5))
    if not p["faults"]:
        refused.append((PimReg.FAULT_RATE, 5))
    for reg, value in refused:
        await tb.reg(reg, value, accepted=False)
    # the golden refuses the same values
    for name, value in (("offset", m.offset_limit), ("sigma_q", 1 << 16)):
        try:
            m.configure(**{name: value})
        except PimError:
            pass
        else:
            raise AssertionError(f"the golden model accepted {name}={value}")
    tb.send(extremes, "extremes after refused writes")
    # top and bottom codes: the largest offsets, the smallest and largest gains
    for offset in (-m.offset_limit, m.offset_limit - 1):
        await tb.reg(PimReg.OFFSET, offset, accepted=True)
        m.configure(offset=offset)
        tb.send(extremes + [tb.rand_vector() for _ in range(3)], f"offset {offset}")
    if p["adc_range"] == "calibrated":
        for gain in (1, (1 << (ADC_FRAC + p["enob"])) - 1):
            await tb.reg(PimReg.GAIN, gain, accepted=True)
            m.configure(gain=gain)
            tb.send(extremes + [tb.rand_vector() for _ in range(3)], f"gain {gain}")
    await tb.drain()
    await tb.bench.cycles(200)
    tb.board.check_done()
    tb.check_counters()
    assert PimFlag(int(dut.error.value)) == PimFlag.WEIGHT | PimFlag.CONFIG

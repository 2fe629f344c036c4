"""A simulation harness around the accelerator: the host link and the random back-pressure
in hardware, so a testbench touches the simulator only in bursts.

The accelerator inside is the very :class:`~heterotron.hdl.top.Accelerator` that ``heterotron
generate accelerator`` writes; the harness only feeds and drains its host port and drives its
``stall`` test hook. It is never part of a design: ``heterotron generate`` does not write it,
the simulation flows do (:func:`heterotron.sim.flows.accel.generate_sim_accelerator`).

Why: a cocotb coroutine that wakes every clock cycle (a byte into ``rx``, a back-pressure
draw for every tile) bounds the simulation at a few thousand cycles a second. Here the
testbench pushes :data:`HOST_WORD_BYTES` bytes a cycle into a deep FIFO that the hardware
drains into ``rx`` one byte a cycle, pulls the answers the same way out of a FIFO that
``tx`` fills, and sets the probabilities of the random gaps and back-pressure once; the
draws are made per cycle by xorshift generators seeded from the testbench's seed.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, Const, Elaboratable, Fragment, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.accel import MAX_TILES, AccelError, Description
from heterotron.hdl.simgate import SIM_GATING
from heterotron.hdl.top import Accelerator

__all__ = ["SimAccelerator", "HOST_WORD_BYTES", "HOST_WORD", "PUSH_DEPTH", "PULL_DEPTH",
           "POKE_WORD", "POKE_DEPTH", "BOOT_CYCLES", "xorshift32"]

#: Bytes a testbench moves per cycle through ``push`` and ``pull``.
HOST_WORD_BYTES = 32
#: One beat of ``push``/``pull``: ``count`` bytes of ``data``, byte 0 in the low bits.
HOST_WORD = data.StructLayout({"data": unsigned(8 * HOST_WORD_BYTES),
                               "count": unsigned((HOST_WORD_BYTES).bit_length())})
#: Words the push FIFO holds (32 KiB: several largest frames of the host protocol).
PUSH_DEPTH = 1024
#: Words the pull FIFO holds.
PULL_DEPTH = 256
#: One beat of ``poke``: ``count`` bytes of ``data`` for memory tile ``tile``'s scratchpad
#: from byte ``addr`` (a multiple of the scratchpad word), byte 0 in the low bits.
POKE_WORD = data.StructLayout({"tile": range(MAX_TILES), "addr": unsigned(32),
                               "data": unsigned(8 * HOST_WORD_BYTES),
                               "count": unsigned((HOST_WORD_BYTES).bit_length())})
#: Words the poke FIFO holds.
POKE_DEPTH = 256
#: Cycles the harness holds ``sync`` in reset after power-on.
BOOT_CYCLES = 4


def xorshift32(s):
    """Marsaglia's xorshift32 step (13, 17, 5) on a 32-bit value (an Amaranth value or an
    int): the harness's per-cycle random draws, and their model in Python."""
    if isinstance(s, int):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        return s
    a = (s ^ (s << 13))[:32]
    b = a ^ (a >> 17)
    return (b ^ (b << 5))[:32]


class _Draw(wiring.Component):
    """A random draw each cycle: ``hit`` (a register) is high with probability
    ``threshold / 256``."""

    def __init__(self, salt: int):
        self._salt = salt
        super().__init__({"seed": In(32), "threshold": In(8), "hit": Out(1)})

    def elaborate(self, platform):
        m = Module()
        state = Signal(32)
        seeded = Signal()
        with m.If(~seeded):
            # Never zero (xorshift's fixed point): bit 0 forced.
            m.d.sync += [state.eq(self.seed ^ Const(self._salt * 0x9E3779B1 & 0xFFFFFFFF, 32)
                                  | 1), seeded.eq(1)]
        with m.Else():
            m.d.sync += state.eq(xorshift32(state))
        # Registered: the threshold is a top-level input, and Verilator evaluates all that a
        # top-level input reaches combinationally (here: every tile's stream handshakes)
        # on every call.
        m.d.sync += self.hit.eq(seeded & (state[:8] < self.threshold))
        return m


class _ElaboratedFor(Elaboratable):
    """``inner`` elaborated for ``platform``, whatever its parent is elaborated for."""

    def __init__(self, inner, platform):
        self._inner, self._platform = inner, platform

    def elaborate(self, platform):
        return Fragment.get(self._inner, self._platform)


class SimAccelerator(wiring.Component):
    """:class:`~heterotron.hdl.top.Accelerator` with its host link and back-pressure in
    hardware (simulation only).

    The harness resets itself: ``sync`` is reset for the first :data:`BOOT_CYCLES` cycles
    after power-on, by a counter of its own, so no top-level input reaches the design's
    next-state logic (Verilator evaluates logic that a top-level input reaches on every
    call; with ``rst`` a port that was all of it, twice a cycle).

    Members
    -------
    clk : In(1)
        The clock of ``sync``.
    push : In(stream of HOST_WORD)
        Host bytes to send, ``count`` (0 to :data:`HOST_WORD_BYTES`) a beat, into a FIFO of
        :data:`PUSH_DEPTH` words, sent into the accelerator's ``rx`` one byte a cycle with a
        random gap before each byte (probability ``gap / 256``).
    push_free : Out(range(PUSH_DEPTH + 1))
        Words the push FIFO can take now (a testbench may push this many without looking
        at ``push.ready``).
    pull : Out(stream of HOST_WORD)
        The bytes ``tx`` sent, packed: a word leaves when it is full or when ``tx`` has no
        byte for it that cycle. ``tx`` is held not ready with probability ``stall / 256``.
    poke : In(stream of POKE_WORD)
        Scratchpad bytes written straight into a memory tile, a scratchpad word a cycle
        (the accelerator's ``poke`` backdoor), through a FIFO of :data:`POKE_DEPTH` words:
        how a testbench loads images before a program runs without the host link's byte a
        cycle. Never while a program runs (it takes the scratchpad's write port).
    poke_free : Out(range(POKE_DEPTH + 1))
        Words the poke FIFO can take now.
    seed : In(32)
        Seeds the random draws; taken in the first cycle after the reset.
    gap, stall, tile_stall : In(8)
        Probabilities (out of 256) of a gap before an ``rx`` byte, of back-pressure on
        ``tx``, and of each tile's network inputs being held in a cycle.
    running, watchdog, error, misrouted : Out
        The accelerator's.
    """

    def __init__(self, desc: Description):
        self.desc = desc
        super().__init__({
            "clk": In(1),
            "push": In(stream.Signature(HOST_WORD)),
            "push_free": Out(range(PUSH_DEPTH + 1)),
            "pull": Out(stream.Signature(HOST_WORD)),
            "poke": In(stream.Signature(POKE_WORD)),
            "poke_free": Out(range(POKE_DEPTH + 1)),
            "seed": In(32),
            "gap": In(8),
            "stall": In(8),
            "tile_stall": In(8),
            "running": Out(1),
            "watchdog": Out(1),
            "error": Out(len(AccelError)),
            "misrouted": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = HOST_WORD_BYTES
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.domains.boot = cd_boot = ClockDomain("boot", reset_less=True)
        boot = Signal(range(BOOT_CYCLES + 1), init=0)
        with m.If(boot != BOOT_CYCLES):
            m.d.boot += boot.eq(boot + 1)
        m.d.comb += [cd_sync.clk.eq(self.clk), cd_boot.clk.eq(self.clk),
                     cd_sync.rst.eq(boot != BOOT_CYCLES)]
        acc = Accelerator(self.desc, backdoor=True)
        # Elaborated for the harness: idle units get gated clocks (heterotron.hdl.simgate).
        # No top-level input reaches the accelerator combinationally (the draws are
        # registered, the FIFOs' outputs too), as the gated clocks' enables need.
        m.submodules.accel = _ElaboratedFor(acc, SIM_GATING)
        m.d.comb += [self.running.eq(acc.running), self.watchdog.eq(acc.watchdog),
                     self.error.eq(acc.error), self.misrouted.eq(acc.misrouted)]

        draws = []
        for k, threshold in enumerate([self.gap, self.stall]
                                      + [self.tile_stall] * len(self.desc.tiles)):
            d = _Draw(k + 1)
            m.submodules[f"draw{k}"] = d
            m.d.comb += [d.seed.eq(self.seed), d.threshold.eq(threshold)]
            draws.append(d.hit)
        gap, stall, tiles = draws[0], draws[1], draws[2:]
        m.d.comb += acc.stall.eq(Cat(*tiles))

        # -- host -> rx: words in, bytes out -----------------------------------------------------
        m.submodules.push_fifo = pf = SyncFIFOBuffered(width=HOST_WORD.size, depth=PUSH_DEPTH)
        m.d.comb += [pf.w_data.eq(self.push.payload), pf.w_en.eq(self.push.valid),
                     self.push.ready.eq(pf.w_rdy), self.push_free.eq(PUSH_DEPTH - pf.level)]
        word = Signal(8 * W)
        left = Signal(range(W + 1))
        held = Signal()  # rx.valid went high and the byte is not taken yet
        head = HOST_WORD(pf.r_data)
        m.d.comb += pf.r_en.eq(left == 0)
        with m.If((left == 0) & pf.r_rdy):
            m.d.sync += [word.eq(head.data), left.eq(head.count)]
        m.d.comb += [acc.rx.valid.eq((left != 0) & (held | ~gap)),
                     acc.rx.payload.eq(word[:8])]
        with m.If(acc.rx.valid & acc.rx.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1), held.eq(0)]
        with m.Elif(acc.rx.valid):
            m.d.sync += held.eq(1)

        # -- tx -> host: bytes in, words out -----------------------------------------------------
        m.submodules.pull_fifo = qf = SyncFIFOBuffered(width=HOST_WORD.size, depth=PULL_DEPTH)
        acc_word = Signal(8 * W)
        count = Signal(range(W + 1))
        m.d.comb += acc.tx.ready.eq((count != W) & ~stall)
        with m.If(acc.tx.valid & acc.tx.ready):
            m.d.sync += [acc_word.word_select(count[:(W - 1).bit_length()], 8).eq(
                acc.tx.payload), count.eq(count + 1)]
        flush = (count == W) | ((count != 0) & ~acc.tx.valid)
        out = Signal(HOST_WORD)
        m.d.comb += [out.data.eq(acc_word), out.count.eq(count), qf.w_data.eq(out),
                     qf.w_en.eq(flush)]
        with m.If(flush & qf.w_rdy):
            m.d.sync += [acc_word.eq(0), count.eq(0)]
        m.d.comb += [self.pull.valid.eq(qf.r_rdy), self.pull.payload.eq(qf.r_data),
                     qf.r_en.eq(self.pull.ready)]

        # -- poke -> the scratchpads' backdoor: a word of the beat a cycle -------------------------
        wb = self.desc.params["flit_width"] // 8
        m.submodules.poke_fifo = kf = SyncFIFOBuffered(width=POKE_WORD.size, depth=POKE_DEPTH)
        m.d.comb += [kf.w_data.eq(self.poke.payload), kf.w_en.eq(self.poke.valid),
                     self.poke.ready.eq(kf.w_rdy), self.poke_free.eq(POKE_DEPTH - kf.level)]
        beat = Signal(POKE_WORD)
        part = Signal(range(W // wb + 1))  # words of the beat written
        have = Signal()
        done = (part + 1) * wb >= beat.count
        m.d.comb += kf.r_en.eq(~have)
        with m.If(~have & kf.r_rdy):
            m.d.sync += [beat.eq(kf.r_data), part.eq(0), have.eq(1)]
        poke = acc.poke
        m.d.comb += [poke.valid.eq(have), poke.payload.tile.eq(beat.tile),
                     poke.payload.addr.eq((beat.addr >> (wb.bit_length() - 1)) + part),
                     poke.payload.data.eq(beat.data.word_select(part, 8 * wb)),
                     poke.payload.en.eq(Cat(part * wb + b < beat.count for b in range(wb)))]
        with m.If(poke.valid & poke.ready):
            m.d.sync += part.eq(part + 1)
            with m.If(done):
                m.d.sync += have.eq(0)
        return m

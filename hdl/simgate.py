"""Gated clocks for the simulation harness only: idle units cost a simulator nothing.

Verilator evaluates every register of a clock domain at each of its edges, whether the
register's enable is set or not, so in a large accelerator the units that wait (an SA tile
between two matmuls, the SFU's units between rows) cost as much per cycle as the busy ones.
A unit whose registers all advance under one enable ``en`` (and hold otherwise) can instead
put them in a domain whose clock ticks only when ``en`` is set: then nothing of it runs while
it waits.

That is a simulation device, never a design: gated clocks built from logic are wrong on an
FPGA. So a unit asks for a module for those registers with :func:`gated_module`, which answers
the unit's own module (the registers stay under their enable, as written) unless the design is being
elaborated for :class:`SimGating`, the "platform" the simulation harness
(:class:`~heterotron.hdl.simtop.SimAccelerator`) elaborates its accelerator for.
``heterotron generate`` and the FPGA flows never do.

The gated clock is ``clk & tick``, ``tick`` being ``en`` registered on the falling edge: it
changes only while ``clk`` is low, so the gated clock has no glitch and rises together with
``clk`` exactly in the cycles where ``en`` is set at the rising edge. That holds when ``en``
is settled by the falling edge, i.e. it depends on registers of the rising edge only, not on
a top-level input a testbench changes mid-cycle: no input of the harness reaches the
accelerator combinationally. The registers keep their enables, so the unit is the same
circuit either way; the clock only skips cycles in which no register it drives would change,
or (:func:`gated_pipeline`) would change only where no one reads.

What it buys depends on Verilator: a register's next value is computed whenever anything it
reads may have changed, so a gated unit saves the most where its next-state logic reads its
own registers only.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Const, DomainRenamer, Module, ResetSignal, Signal

__all__ = ["SimGating", "SIM_GATING", "gated_domain", "gated_module", "gated_pipeline"]


class SimGating:
    """The platform the simulation harness elaborates its accelerator for: units that can
    hold still get gated clocks (:func:`gated_domain`). It offers no resources; nothing but
    that harness elaborates for it."""

    def __repr__(self) -> str:
        return "SimGating()"


#: The one instance the harness uses.
SIM_GATING = SimGating()


def gated_domain(m, platform, en, name: str) -> str:
    """The clock domain for registers of ``m`` that change only in cycles where ``en`` is
    set: ``"sync"`` unless ``platform`` is :class:`SimGating`; then a domain local to ``m``,
    named ``name``, whose clock ticks only in those cycles (never during the reset)."""
    if not isinstance(platform, SimGating):
        return "sync"
    neg = ClockDomain(f"{name}_neg", clk_edge="neg", reset_less=True, local=True)
    gated = ClockDomain(name, local=True, reset_less=True)
    m.domains += [neg, gated]
    tick = Signal(name=f"{name}_tick")
    m.d.comb += [neg.clk.eq(ClockSignal("sync")),
                 gated.clk.eq(ClockSignal("sync") & tick)]
    # No reset: the harness resets ``sync`` once, right after power-on, when every register
    # still holds its initial value, which is its reset value; the gated clock does not
    # tick during it. (A reset would make every register's next value depend on ``sync``'s
    # reset, a register of its own, and Verilator would then compute them on every edge.)
    m.d[neg.name] += tick.eq(en & ~ResetSignal("sync"))
    return name


def gated_module(m, platform, en, name: str):
    """Where to put the registers of ``m`` that change only in cycles where ``en`` is set,
    and the enable they load under there: ``(m, en)`` unless ``platform`` is
    :class:`SimGating`; then a new submodule ``name`` of ``m`` whose ``sync`` is
    :func:`gated_domain`, and a constant 1 (its clock ticks only where ``en`` is set, so the
    registers load on every tick, and their next values do not read ``en``: Verilator then
    computes them only on the gated clock's edges where they read nothing else outside).
    Comb statements may go there too; the module may be filled after this returns."""
    domain = gated_domain(m, platform, en, name)
    if domain == "sync":
        return m, en
    core = Module()
    m.submodules[name] = DomainRenamer(domain)(core)
    return core, Const(1)


def gated_pipeline(m, platform, advance, busy, drain: int, name: str):
    """Where to put a pipeline's registers that advance with ``advance`` (each under
    ``If(advance)``, or every cycle when ``advance`` is 1), and the enable they load under
    there: like :func:`gated_module`, with a clock that ticks in the cycles where ``advance``
    is set while ``busy`` (a beat offered or in the pipeline's first stage) and for ``drain``
    more advances after it. ``drain`` is at least the pipeline's depth: then every stage holds
    what an idle cycle loads (no valid beat, and data that only invalid beats carry, which a
    stream's consumer never reads), so the advances it skips would change nothing anyone
    reads. Outside the simulation harness: ``(m, advance)``, and no counter is built."""
    if not isinstance(platform, SimGating):
        return m, advance
    quiet = Signal(range(drain + 1), name=f"{name}_quiet")
    with m.If(busy):
        m.d.sync += quiet.eq(0)
    with m.Elif(advance & (quiet != drain)):
        m.d.sync += quiet.eq(quiet + 1)
    en = Signal(name=f"{name}_en")
    m.d.comb += en.eq(advance & (busy | (quiet != drain)))
    return gated_module(m, platform, en, name)

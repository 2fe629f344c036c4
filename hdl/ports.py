"""The port conventions every unit follows, so that one tile socket can drive any of them.

**Configuration.** A unit with run-time settings takes them on one port,
``cfg : In(stream.Signature(component.cfg_layout))``: a stream of a public, documented
``data.StructLayout``, exposed one way only, as the instance property ``cfg_layout``. A unit
with more than one kind of write selects it with a ``reg`` field whose shape is an
``amaranth.lib.enum.Enum`` (the register ids, e.g. ``PimReg``); the rest of the layout is that
register's value. A write is one accepted beat; a unit may hold ``ready`` low while a write
would disturb work in flight (its documentation says when).

**Errors.** A unit that can refuse something has ``error : Out(n)``, sticky flags whose bits
are an ``enum.IntFlag`` of the unit (``SfuError``, ``PimFlag``, ...), and
``error_clear : In(1)``. A flag, once raised, stays set until a clock edge with
``error_clear`` high; a flag raised in that same cycle stays set (nothing is lost between a
read and its clear). :func:`sticky_errors` builds that register.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib.wiring import In, Out

__all__ = ["error_ports", "sticky_errors", "raise_error", "NO_INIT"]

#: The attribute that marks a memory as an SRAM whose contents are undefined until written
#: (``Memory(..., init=[], attrs={NO_INIT: 1})``): its Verilog carries no initial contents
#: (:func:`heterotron.sim.flows.build.to_verilog`). Amaranth writes one line per word of a
#: memory's initial contents, zeros included: 4M lines, and gigabytes of RAM while writing
#: them, for a 16 MiB scratchpad.
NO_INIT = "heterotron_no_init"


def error_ports(flags: type[enum.IntFlag]) -> dict:
    """The ``error`` and ``error_clear`` members of a unit whose flags are ``flags``."""
    return {"error": Out(len(flags)), "error_clear": In(1)}


def sticky_errors(m: Module, error, error_clear) -> Value:
    """Make ``error`` (the unit's output) a sticky flag register cleared by ``error_clear``.

    Returns ``raised``, as wide as ``error``, that the unit drives combinationally
    (:func:`raise_error`) with the flags to raise in the current cycle. It is one 1-bit signal
    per flag, so a flag a unit never raises is a constant wire (the undriven bits of one
    vector would become an ``always @*`` that reads nothing, which Verilator's ``-Wall``
    refuses as ALWNEVER)."""
    raised = Cat(*(Signal(name=f"error_raised{i}") for i in range(len(error))))
    with m.If(error_clear):
        m.d.sync += error.eq(raised)
    with m.Else():
        m.d.sync += error.eq(error | raised)
    return raised


def raise_error(m: Module, raised, flag: enum.IntFlag) -> None:
    """Raise ``flag`` in this cycle (call inside the ``m.If`` of its condition)."""
    assert flag.value and flag.value & (flag.value - 1) == 0, "one flag at a time"
    m.d.comb += raised[flag.value.bit_length() - 1].eq(1)

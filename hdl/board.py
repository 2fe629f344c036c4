"""The accelerator on a board: a UART under the host port, a clock, a reset button, LEDs.

:class:`BoardCore` is everything between the pins and the clock: the
:class:`~heterotron.hdl.top.Accelerator` of a description, its host port fed by a
:class:`~heterotron.hdl.uart.UartRx` and drained by a :class:`~heterotron.hdl.uart.UartTx`, and
the LED logic. It runs on ``sync`` and is what the board testbench simulates (its UART pins
driven by a line model). :class:`BoardTop` puts it on a board of :data:`BOARDS`: the
oscillator, on ECP5 a PLL to the target clock (:func:`ecp5_pll`), the reset button
synchronised into ``sync``'s reset, the UART and LED pins.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.io import Buffer
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.accel import Description
from heterotron.hdl.contract.uart import IDLE, divisor_for
from heterotron.hdl.top import Accelerator
from heterotron.hdl.uart import UartRx, UartTx

__all__ = ["BoardCore", "BoardTop", "Board", "BOARDS", "LEDS", "ecp5_pll", "PllError"]

#: What each LED shows, in order (a board with fewer LEDs shows the first ones).
LEDS = ("heartbeat", "error", "running", "host", "line_error", "watchdog", "misrouted", "rx")


@contextmanager
def _refusing(component):
    """A component refused at construction (a ``ValueError``: a clock, baud rate or parameter
    it cannot make) is never elaborated: silence Amaranth's "never used" warning for it."""
    try:
        yield
    except ValueError:
        component._MustUse__silence = True
        raise


class BoardCore(wiring.Component):
    """The accelerator behind a UART, with the board's LEDs.

    Parameters
    ----------
    desc : Description
        The accelerator (:func:`heterotron.hdl.accelerator.describe`).
    divisor : int
        Clock cycles per UART bit (:func:`heterotron.hdl.contract.uart.divisor_for`).
    heartbeat : int
        Clock cycles per half period of the heartbeat LED, 1 to 2**32.

    Members
    -------
    uart_rx : In(1)
        The line from the host (asynchronous; idle high).
    uart_tx : Out(1)
        The line to the host (a register; idle high).
    leds : Out(len(LEDS))
        In the order of :data:`LEDS`: ``heartbeat`` (blinks while the clock runs),
        ``error`` (any flag of the control tile's ERROR register), ``running`` (a program in
        flight), ``host`` (the host port refused a frame since reset: a bad CRC, a timeout,
        a frame too long or no room; the host was answered), ``line_error`` (a UART framing
        error or noise since reset), ``watchdog``, ``misrouted`` (never in a correct
        design), ``rx`` (a byte arrived in the last ~2**16 cycles).
    """

    def __init__(self, desc: Description, *, divisor: int, heartbeat: int):
        with _refusing(self):
            if not isinstance(heartbeat, int) or not 1 <= heartbeat <= 1 << 32:
                raise ValueError(f"heartbeat must be an integer in [1, 2**32] cycles, not "
                                 f"{heartbeat!r}")
            self.rx_uart = UartRx(divisor=divisor)  # validates divisor
        self.desc = desc
        self.heartbeat = heartbeat
        self.tx_uart = UartTx(divisor=divisor)
        self.divisor = divisor
        super().__init__({
            "uart_rx": In(1, init=IDLE),
            "uart_tx": Out(1, init=IDLE),
            "leds": Out(len(LEDS)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = acc = Accelerator(self.desc)
        m.submodules.uart_rx = rx = self.rx_uart
        m.submodules.uart_tx = tx = self.tx_uart
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx), rx.error_clear.eq(0),
                     acc.stall.eq(0)]
        wiring.connect(m, rx.o, acc.rx)
        wiring.connect(m, acc.tx, tx.i)

        beat = Signal(range(self.heartbeat))
        blink = Signal()
        with m.If(beat == self.heartbeat - 1):
            m.d.sync += [beat.eq(0), blink.eq(~blink)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)

        activity = Signal(16)
        with m.If(rx.o.valid):
            m.d.sync += activity.eq(-1)
        with m.Elif(activity != 0):
            m.d.sync += activity.eq(activity - 1)

        shown = {
            "heartbeat": blink,
            "error": acc.error.any(),
            "running": acc.running,
            "host": acc.link_error.any(),
            "line_error": rx.error.any(),
            "watchdog": acc.watchdog,
            "misrouted": acc.misrouted,
            "rx": activity != 0,
        }
        assert tuple(shown) == LEDS
        for i, name in enumerate(LEDS):
            m.d.comb += self.leds[i].eq(shown[name])
        return m


# -- the ECP5 PLL --------------------------------------------------------------------------------


class PllError(ValueError):
    """A target clock the PLL cannot make."""


#: EHXPLLL limits (Lattice TN1263): input after the divider (PFD), VCO, output.
_PFD_HZ = (3.125e6, 400e6)
_VCO_HZ = (400e6, 800e6)
_OUT_HZ = (3.125e6, 400e6)
#: Largest relative error of the output clock against the frequency asked.
PLL_TOLERANCE = 0.005


@dataclass(frozen=True)
class PllConfig:
    clki_div: int
    clkfb_div: int
    clkop_div: int
    in_hz: float

    @property
    def out_hz(self) -> float:
        return self.in_hz * self.clkfb_div / self.clki_div

    @property
    def vco_hz(self) -> float:
        return self.out_hz * self.clkop_div


def ecp5_pll(in_hz: float, out_hz: float) -> PllConfig:
    """Dividers of an EHXPLLL making ``out_hz`` from ``in_hz`` (feedback from CLKOP), the one
    closest to the target, then with the VCO nearest the middle of its range; raises
    :class:`PllError` when nothing within :data:`PLL_TOLERANCE` exists."""
    if not _OUT_HZ[0] <= out_hz <= _OUT_HZ[1]:
        raise PllError(f"the ECP5 PLL makes {_OUT_HZ[0] / 1e6:g} to {_OUT_HZ[1] / 1e6:g} MHz, "
                       f"not {out_hz / 1e6:g} MHz")
    best = None
    for clki in range(1, 129):
        pfd = in_hz / clki
        if not _PFD_HZ[0] <= pfd <= _PFD_HZ[1]:
            continue
        for fb in range(1, 81):
            got = pfd * fb
            for op in range(1, 129):
                vco = got * op
                if not _VCO_HZ[0] <= vco <= _VCO_HZ[1]:
                    continue
                key = (abs(got - out_hz), abs(vco - sum(_VCO_HZ) / 2))
                if best is None or key < best[0]:
                    best = (key, PllConfig(clki, fb, op, in_hz))
    if best is None or best[0][0] > PLL_TOLERANCE * out_hz:
        near = f" (nearest {best[1].out_hz / 1e6:.3f} MHz)" if best else ""
        raise PllError(f"the ECP5 PLL cannot make {out_hz / 1e6:g} MHz from "
                       f"{in_hz / 1e6:g} MHz within {100 * PLL_TOLERANCE:g}%{near}")
    return best[1]


def _ecp5_pll_instance(cfg: PllConfig, clk_in, clk_out, locked) -> Instance:
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{cfg.in_hz / 1e6:g}",
        a_FREQUENCY_PIN_CLKOP=f"{cfg.out_hz / 1e6:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
        p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=cfg.clkop_div, p_CLKOP_CPHASE=cfg.clkop_div - 1,
        p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=cfg.clkfb_div,
        p_CLKI_DIV=cfg.clki_div,
        i_CLKI=clk_in, i_CLKFB=clk_out, o_CLKOP=clk_out, o_LOCK=locked,
        i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
        i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
    )


# -- boards --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Board:
    """A supported board: its ``amaranth_boards`` platform and what the flow needs to know."""

    name: str
    platform: str          # "module:Class" in amaranth_boards
    family: str            # "ecp5" or "ice40"
    device: str            # for reports
    config: str            # the default description (configs/)
    osc_hz: float
    default_mhz: float
    pll: bool              # can the clock be set (--freq)
    reset: tuple[str, int]  # the reset button's resource
    leds: tuple[tuple[str, int], ...]
    capacity: dict[str, int]  # what can be counted before place and route
    programmer: tuple[str, ...]  # openFPGALoader arguments before the bitstream

    def make_platform(self):
        import importlib

        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)()


BOARDS = {
    "ulx3s-85f": Board(
        name="ulx3s-85f", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform", family="ecp5",
        device="LFE5U-85F-6BG381C", config="board", osc_hz=25e6, default_mhz=30.0, pll=True,
        reset=("button_fire", 0), leds=tuple(("led", i) for i in range(8)),
        # LUT4, flip-flops, MULT18X18D, DP16KD (18 kbit) of the LFE5U-85F
        capacity={"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208},
        programmer=("-b", "ulx3s")),
    "icebreaker": Board(
        name="icebreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40", device="iCE40UP5K-SG48", config="icebreaker", osc_hz=12e6,
        default_mhz=12.0, pll=False, reset=("button", 0),
        leds=(("led_g", 0), ("led_r", 0)),
        # SB_LUT4, flip-flops, SB_MAC16, SB_RAM40_4K of the UP5K
        capacity={"lut4": 5280, "ff": 5280, "dsp": 8, "bram": 30},
        programmer=("-b", "icebreaker")),
}


class BoardTop(Elaboratable):
    """A :class:`BoardCore` on a board's pins and clock.

    Parameters
    ----------
    board : Board
    desc : Description
    freq_mhz : float
        The accelerator's clock: made by the PLL from the oscillator (ECP5); the oscillator's
        own frequency on a board without one here.
    baud : int
        The UART's baud rate.
    """

    def __init__(self, board: Board, desc: Description, *, freq_mhz: float, baud: int):
        self.board, self.desc, self.baud = board, desc, baud
        with _refusing(self):
            if board.pll:
                self.pll = ecp5_pll(board.osc_hz, freq_mhz * 1e6)
                self.clk_hz = self.pll.out_hz
            else:
                if abs(freq_mhz * 1e6 - board.osc_hz) > 1:
                    raise PllError(f"{board.name} runs at its {board.osc_hz / 1e6:g} MHz "
                                   f"oscillator (no PLL here), not {freq_mhz:g} MHz")
                self.pll = None
                self.clk_hz = board.osc_hz
            divisor = divisor_for(self.clk_hz, baud)
            self.core = BoardCore(desc, divisor=divisor,
                                  heartbeat=max(1, round(self.clk_hz / 2)))

    def elaborate(self, platform):
        m = Module()
        board = self.board

        def pin(direction, *resource, **kwargs):
            port = platform.request(*resource, dir="-", **kwargs)
            m.submodules[f"{resource[0]}_{resource[1]}_buf"] = buf = Buffer(direction, port)
            return buf

        osc = pin("i", platform.default_clk, 0)
        button = pin("i", *board.reset)
        m.domains.sync = ClockDomain("sync")
        if self.pll is not None:
            locked = Signal()
            clk = Signal(name="pll_clk")
            m.submodules.pll = _ecp5_pll_instance(self.pll, osc.i, clk, locked)
            m.d.comb += ClockSignal("sync").eq(clk)
            platform.add_clock_constraint(clk, self.clk_hz)
            held = ~locked | button.i
        else:
            m.d.comb += ClockSignal("sync").eq(osc.i)
            held = button.i
        m.submodules.reset_sync = ResetSynchronizer(held, domain="sync")

        m.submodules.core = core = self.core
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx = Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx = Buffer("o", uart.tx)
        m.d.comb += [core.uart_rx.eq(rx.i), tx.o.eq(core.uart_tx)]
        for i, (name, number) in enumerate(board.leds):
            m.d.comb += pin("o", name, number).o.eq(core.leds[i])
        return m

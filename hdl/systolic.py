"""Integer systolic array: ``rows x cols`` multiply-accumulate PEs, output- or weight-stationary."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.params import Param, ParamError, Parameterised
from heterotron.hdl.simgate import gated_module

__all__ = ["SystolicArray", "array_params", "check_accumulator", "operand_range"]


def operand_range(width: int, is_signed: bool) -> tuple[int, int]:
    """Inclusive value range of a ``width``-bit operand."""
    if is_signed:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def check_accumulator(*, a_width, a_signed, b_width, b_signed, bias_width, acc_width,
                      max_k) -> None:
    """Reject a configuration whose accumulator could overflow.

    The worst case is a ``bias_width``-bit bias plus ``max_k`` extreme products (for signed
    8-bit operands, ``max_k * (-128) * (-128)``); it must fit ``acc_width`` signed bits. The
    message names the widths and the largest ``max_k`` that would fit.
    """
    a, b = operand_range(a_width, a_signed), operand_range(b_width, b_signed)
    prods = [x * y for x in a for y in b]
    plo, phi = min(min(prods), 0), max(max(prods), 0)
    blo, bhi = operand_range(bias_width, True)
    lo, hi = blo + max_k * plo, bhi + max_k * phi
    alo, ahi = operand_range(acc_width, True)
    if alo <= lo and hi <= ahi:
        return
    need = acc_width
    while not (-(1 << (need - 1)) <= lo and hi <= (1 << (need - 1)) - 1):
        need += 1
    room = min((ahi - bhi) // phi if phi else max_k, (blo - alo) // -plo if plo else max_k)
    fit = f"or max_k to at most {room}" if room >= 1 else "(no max_k fits this bias_width)"
    raise ParamError(
        f"acc_width={acc_width} can overflow: a bias_width={bias_width} bias plus max_k={max_k} "
        f"products of {a_width}-bit x {b_width}-bit operands spans [{lo}, {hi}], which needs "
        f"{need} bits; raise acc_width to {need} {fit}")


def array_params(*, rows_doc: str) -> tuple[Param, ...]:
    """The parameters shared by the array and the GEMM engine built on it."""
    return (
        Param("rows", int, 8, rows_doc, 1, 32),
        Param("cols", int, 8, "PE columns: output columns per tile", 1, 32),
        Param("dataflow", str, "os", "output-stationary (os) or weight-stationary (ws)",
              choices=("os", "ws")),
        Param("a_width", int, 8, "width of the left operand A", 2, 18),
        Param("a_signed", bool, True, "A is signed (false: unsigned, e.g. Softmax output)"),
        Param("b_width", int, 8, "width of the right operand B", 2, 18),
        Param("b_signed", bool, True, "B is signed"),
        Param("acc_width", int, 32, "signed accumulator width", 8, 64),
        Param("bias_width", int, 24, "signed bias width (the accumulator's start value)", 2, 64),
        Param("max_k", int, 4096, "largest reduction length K the accumulator must hold",
              1, 1 << 20),
    )


class SystolicArray(Parameterised, wiring.Component):
    """A ``rows x cols`` grid of integer multiply-accumulate PEs with skew and de-skew inside.

    Every PE registers ``a * b`` (one multiplier each, mapped to a DSP block), then adds. All
    registers advance together while the output can move (``~o.valid | o.ready``), so the
    array is a fixed-latency pipeline counted in the cycles it advances.

    **Output-stationary** (``dataflow="os"``). PE ``(i, j)`` accumulates one output. A *tile* is
    the input beats from one with ``first`` to one with ``last`` (one beat may be both); beat
    ``k`` carries column ``k`` of A (``a[i]`` for row ``i``) and row ``k`` of B (``b[j]``). The
    tile's result leaves as ``rows`` output beats, row ``i`` after row ``i - 1``::

        o[i][j] = bias[j] + sum_k a_k[i] * b_k[j]       (bias taken from the ``first`` beat)

    Each PE's final sum is read out through its column while the next tile already
    accumulates into the same register, so tiles follow each other without bubbles when
    ``K >= rows``. Shorter tiles are spaced to ``rows`` cycles: a ``first`` or ``last`` beat
    waits (``i.ready`` low) until ``rows`` cycles after the previous one.

    **Weight-stationary** (``dataflow="ws"``). PE ``(i, j)`` holds weight ``w[i][j]``. Each input
    beat carries a row of A (``a[i]`` for reduction index ``i``) and ``psum[j]``; one output
    beat leaves per input beat::

        o[j] = psum[j] + sum_i a[i] * w[i][j]

    Weights are double-buffered: rows 0 to ``rows - 1`` of the next weight tile arrive on ``w``
    (one row of ``cols`` weights per beat) into shadow registers while the current tile
    computes; an input beat with ``swap`` set is the first to use them. ``w`` waits until every
    PE has taken the previous shadow (``cols`` cycles after a swap); a ``swap`` beat waits until
    all ``rows`` shadow rows are loaded. Tiles therefore follow without bubbles when each
    streams at least ``rows + cols`` beats.

    Parameters
    ----------
    rows, cols : int
        PE grid, 1 to 32 each.
    dataflow : str
        ``"os"`` or ``"ws"``.
    a_width, b_width : int
        Operand widths, 2 to 18; ``a_signed``/``b_signed`` pick two's complement or unsigned.
    acc_width : int
        Signed accumulator width, 8 to 64.
    bias_width : int
        Signed width of the bias (OS) or of the partial sum a caller feeds in (WS).
    max_k : int
        Largest reduction length. ``bias_width`` bits of bias plus ``max_k`` worst-case
        products (WS: at least ``rows`` of them) must fit ``acc_width``, or construction
        fails naming the widths needed.

    Members
    -------
    i : In(stream.Signature(StructLayout))
        OS: ``a`` (``rows`` lanes), ``b`` (``cols``), ``bias`` (``cols`` x ``bias_width``),
        ``first``, ``last``. WS: ``a`` (``rows``), ``psum`` (``cols`` x ``acc_width``), ``swap``.
    w : In(stream.Signature(ArrayLayout(b, cols)))
        WS only: shadow weight rows, row 0 first.
    o : Out(stream.Signature(ArrayLayout(signed(acc_width), cols)))
        Results, in input order.

    Latency (cycles the array advances): OS, from the ``last`` beat of a tile to its row 0:
    ``cols + 3``; WS, from an input beat to its output: ``rows + cols + 1``.
    """

    PARAMS = array_params(rows_doc="PE rows (OS: output rows per tile; WS: K per weight tile)")

    @classmethod
    def check_params(cls, p: dict) -> None:
        """The bias fits the accumulator, and so does the worst-case sum
        (:func:`check_accumulator`); only the array's own parameters are read, so a component
        built on the array can call this with its own, larger set."""
        if p["bias_width"] > p["acc_width"]:
            raise ParamError(f"bias_width must be at most acc_width={p['acc_width']}, "
                             f"not {p['bias_width']}")
        # A weight-stationary beat always adds a product from every row.
        max_k = max(p["max_k"], p["rows"]) if p["dataflow"] == "ws" else p["max_k"]
        check_accumulator(a_width=p["a_width"], a_signed=p["a_signed"], b_width=p["b_width"],
                          b_signed=p["b_signed"], bias_width=p["bias_width"],
                          acc_width=p["acc_width"], max_k=max_k)

    def __init__(self, **given):
        p = self._take_params(given)
        rows, cols, a_width, b_width = p["rows"], p["cols"], p["a_width"], p["b_width"]
        a_shape = signed(a_width) if p["a_signed"] else unsigned(a_width)
        b_shape = signed(b_width) if p["b_signed"] else unsigned(b_width)
        self.a_shape, self.b_shape = a_shape, b_shape
        acc = signed(p["acc_width"])
        members = {}
        if p["dataflow"] == "os":
            layout = data.StructLayout({
                "a": data.ArrayLayout(a_shape, rows),
                "b": data.ArrayLayout(b_shape, cols),
                "bias": data.ArrayLayout(signed(p["bias_width"]), cols),
                "first": 1,
                "last": 1,
            })
        else:
            layout = data.StructLayout({
                "a": data.ArrayLayout(a_shape, rows),
                "psum": data.ArrayLayout(acc, cols),
                "swap": 1,
            })
            members["w"] = In(stream.Signature(data.ArrayLayout(b_shape, cols)))
        members["i"] = In(stream.Signature(layout))
        members["o"] = Out(stream.Signature(data.ArrayLayout(acc, cols)))
        super().__init__(members)

    @property
    def latency(self) -> int:
        """Cycles from the last input beat of a tile (OS) or from an input beat (WS) to its
        first output beat."""
        if self.dataflow == "os":
            return self.cols + 3
        return self.rows + self.cols + 1

    @property
    def ws_guard(self) -> int:
        """WS: cycles after a swap before the shadow weights may be overwritten."""
        return self.cols

    def elaborate(self, platform):
        m = Module()
        en = Signal()  # every register of the array advances together
        can_move = ~self.o.valid | self.o.ready
        if self.dataflow == "os":
            # An idle array holds still: after ``drain`` advances without an input beat
            # every register is at its fixed point (bubbles add nothing, flags are clear,
            # the counters saturated), so freezing it changes no register, and an idle array
            # does not switch. The first beat offered moves it again in the same cycle.
            drain = 2 * (self.rows + self.cols) + 8
            quiet = Signal(range(drain + 1), name="quiet")
            with m.If(self.i.valid):
                m.d.sync += quiet.eq(0)
            with m.Elif(can_move & (quiet != drain)):
                m.d.sync += quiet.eq(quiet + 1)
            m.d.comb += en.eq(can_move & ((quiet != drain) | self.i.valid))
        else:
            m.d.comb += en.eq(can_move)
        # Every register below advances with ``en``: in the simulation harness they get a
        # clock that ticks only then (:mod:`heterotron.hdl.simgate`), and load on its every
        # tick (``ren``); elsewhere they stay here under ``en``. The handshakes use ``en``.
        core, ren = gated_module(m, platform, en, "core")
        if self.dataflow == "os":
            self._elaborate_os(core, en, ren)
        else:
            self._elaborate_ws(core, en, ren)
        return m

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _delay(m, en, value, n, name):
        """``value`` through ``n`` registers that advance with ``en``; returns the last."""
        for s in range(n):
            reg = Signal(Value.cast(value).shape(), name=f"{name}_d{s}")
            with m.If(en):
                m.d.sync += reg.eq(value)
            value = reg
        return value

    def _deskew(self, m, en, columns):
        """Column ``j`` through ``cols - 1 - j`` more registers: one row per beat."""
        cols = self.cols
        out = []
        for j, v in enumerate(columns):
            out.append(self._delay(m, en, v, cols - 1 - j, f"deskew{j}"))
        for j in range(cols):
            m.d.comb += self.o.payload[j].eq(out[j])

    def _product(self, m, en, a, b, name):
        """Registered ``a * b`` (the PE's DSP multiply)."""
        shape = Value.cast(a).shape()
        bshape = Value.cast(b).shape()
        # Signed x signed fits a + b bits, so does signed x unsigned; unsigned x unsigned needs
        # one more as a signed value.
        both_unsigned = not shape.signed and not bshape.signed
        width = shape.width + bshape.width + (1 if both_unsigned else 0)
        p = Signal(signed(width), name=name)
        with m.If(en):
            m.d.sync += p.eq(a * b)
        return p

    # -- output-stationary ------------------------------------------------------------------

    def _elaborate_os(self, m, en, ren):
        R, C = self.rows, self.cols
        acc_shape = signed(self.acc_width)

        # Tiles shorter than ``rows`` are spaced out: the column readout takes one row per
        # cycle, and the per-column bias register is reused by the next tile.
        gap_first = Signal(range(R + 1), init=R, name="gap_first")
        gap_last = Signal(range(R + 1), init=R, name="gap_last")
        p = self.i.payload
        hold = ((p.first & (gap_first < R)) | (p.last & (gap_last < R)))
        m.d.comb += self.i.ready.eq(en & ~(self.i.valid & hold))
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        with m.If(ren):
            m.d.sync += [
                gap_first.eq(Mux(take & p.first, 1, Mux(gap_first < R, gap_first + 1, R))),
                gap_last.eq(Mux(take & p.last, 1, Mux(gap_last < R, gap_last + 1, R))),
            ]

        # Input stage: a bubble enters as a = 0 with no flags (it adds nothing).
        s0 = Signal(self.i.payload.shape(), name="s0")
        with m.If(ren):
            m.d.sync += s0.eq(Mux(take, self.i.payload.as_value(), 0))

        # Skew: row i of A (with the flags) by i cycles, column j of B and bias by j.
        left = [(self._delay(m, ren, s0.a[i], i, f"a_skew{i}"),
                 self._delay(m, ren, s0.first, i, f"f_skew{i}"),
                 self._delay(m, ren, s0.last, i, f"l_skew{i}")) for i in range(R)]
        top = [self._delay(m, ren, s0.b[j], j, f"b_skew{j}") for j in range(C)]
        bias = []
        for j in range(C):
            bj = self._delay(m, ren, s0.bias[j], j, f"bias_skew{j}")
            fj = self._delay(m, ren, s0.first, j, f"bias_ld{j}")
            reg = Signal(acc_shape, name=f"bias{j}")
            with m.If(ren & fj):
                m.d.sync += reg.eq(bj)
            bias.append(reg)

        # The PE grid. Row i's final sums are readable for one cycle (``done``) while the next
        # tile's first product already replaces them.
        col_out = []
        for j in range(C):
            dones, accs = [], []
            for i in range(R):
                a_in, f_in, l_in = left[i]
                b_in = top[j]
                tag = f"pe{i}_{j}"
                prod = self._product(m, ren, a_in, b_in, f"{tag}_p")
                fp, lp = Signal(name=f"{tag}_pfirst"), Signal(name=f"{tag}_plast")
                acc = Signal(acc_shape, name=f"{tag}_acc")
                done = Signal(name=f"{tag}_done")  # acc holds a final sum this cycle
                a_r = Signal(a_in.shape(), name=f"{tag}_a")
                b_r = Signal(b_in.shape(), name=f"{tag}_b")
                f_r, l_r = Signal(name=f"{tag}_f"), Signal(name=f"{tag}_l")
                with m.If(ren):
                    m.d.sync += [
                        a_r.eq(a_in), f_r.eq(f_in), l_r.eq(l_in), b_r.eq(b_in),
                        fp.eq(f_in), lp.eq(l_in), done.eq(lp),
                        acc.eq(Mux(fp, bias[j], acc) + prod),
                    ]
                left[i] = (a_r, f_r, l_r)
                top[j] = b_r
                dones.append(done)
                accs.append(acc)
            # Column readout: at most one row of a column is done in any cycle.
            valid_j = Signal(name=f"col{j}_valid")
            data_j = Signal(acc_shape, name=f"col{j}_data")
            pick = 0
            for d, a in zip(dones, accs, strict=True):
                pick = pick | Mux(d, a, 0)
            with m.If(ren):
                m.d.sync += [valid_j.eq(_or(dones)), data_j.eq(pick)]
            col_out.append((valid_j, data_j))

        self._deskew(m, ren, [d for _, d in col_out])
        m.d.comb += self.o.valid.eq(col_out[C - 1][0])

    # -- weight-stationary ------------------------------------------------------------------

    def _elaborate_ws(self, m, en, ren):
        R, C = self.rows, self.cols
        acc_shape = signed(self.acc_width)
        p = self.i.payload

        # Shadow-weight bookkeeping: rows written, and a guard after each swap while PEs to the
        # right still copy the old shadow.
        wrow = Signal(range(max(R, 2)), name="w_row")  # never zero bits wide
        full = Signal(name="w_full")
        guard = Signal(range(self.ws_guard + 1), name="w_guard")
        m.d.comb += [
            self.w.ready.eq(en & ~full & (guard == 0)),
            self.i.ready.eq(en & ~(self.i.valid & p.swap & ~full)),
        ]
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        wtake = Signal()
        m.d.comb += wtake.eq(self.w.valid & self.w.ready)
        with m.If(ren):
            with m.If(take & p.swap):
                m.d.sync += [full.eq(0), guard.eq(self.ws_guard)]
            with m.Elif(guard != 0):
                m.d.sync += guard.eq(guard - 1)
            with m.If(wtake):
                m.d.sync += wrow.eq(Mux(wrow == R - 1, 0, wrow + 1))
                with m.If(wrow == R - 1):
                    m.d.sync += full.eq(1)

        s0 = Signal(p.shape(), name="s0")
        v0 = Signal(name="s0_valid")
        with m.If(ren):
            m.d.sync += [s0.eq(p), v0.eq(take)]

        # The swap flag runs one cycle ahead of its beat's operands, so a PE copies its shadow
        # weight the cycle before the first beat that uses it: the multiplier then reads the
        # weight straight from a register (no mux in front of the DSP).
        swap_now = Signal()
        m.d.comb += swap_now.eq(take & p.swap)
        left = [(self._delay(m, ren, s0.a[i], i, f"a_skew{i}"),
                 self._delay(m, ren, swap_now, i, f"sw_skew{i}")) for i in range(R)]
        # The partial sum meets row 0's product one cycle after A: column j by j + 1.
        above = [self._delay(m, ren, s0.psum[j], j + 1, f"psum_skew{j}") for j in range(C)]

        for i in range(R):
            for j in range(C):
                a_in, sw_in = left[i]
                tag = f"pe{i}_{j}"
                w_act = Signal(self.b_shape, name=f"{tag}_w")
                w_sh = Signal(self.b_shape, name=f"{tag}_wsh")
                with m.If(ren & wtake & (wrow == i)):
                    m.d.sync += w_sh.eq(self.w.payload[j])
                prod = self._product(m, ren, a_in, w_act, f"{tag}_p")
                a_r, sw_r = Signal(a_in.shape(), name=f"{tag}_a"), Signal(name=f"{tag}_sw")
                psum = Signal(acc_shape, name=f"{tag}_psum")
                with m.If(ren):
                    m.d.sync += [a_r.eq(a_in), sw_r.eq(sw_in), psum.eq(above[j] + prod)]
                    with m.If(sw_in):
                        m.d.sync += w_act.eq(w_sh)
                left[i] = (a_r, sw_r)
                above[j] = psum

        self._deskew(m, ren, above)
        m.d.comb += self.o.valid.eq(self._delay(m, ren, v0, R + C, "valid"))


def _or(bits):
    out = 0
    for b in bits:
        out = out | b
    return out

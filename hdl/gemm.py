"""GEMM engine: any ``M x K`` by ``K x N`` product over a :class:`SystolicArray`, from on-chip
buffers, with operand transposes and an optional requantizer on the way out."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from heterotron.hdl.contract.params import Param, ParamError, Parameterised
from heterotron.hdl.ports import error_ports, raise_error, sticky_errors
from heterotron.hdl.requantizer import Requantizer
from heterotron.hdl.systolic import SystolicArray, array_params, operand_range

__all__ = ["GemmEngine", "Op", "GemmError"]


class Op(enum.Enum, shape=2):
    """Engine commands."""

    LOAD_A = 0  #: next ``m * k`` elements on ``data`` are A (or A^T with ``trans``)
    LOAD_B = 1  #: next ``k * n`` elements are B (or B^T with ``trans``)
    LOAD_BIAS = 2  #: next ``n`` elements are the bias, one per output column
    RUN = 3  #: C = A B (+ bias with ``bias``) out on ``o``


class GemmError(enum.IntFlag):
    """Bits of the engine's sticky ``error`` output (cleared by ``error_clear``)."""

    #: A command was refused: a size of 0 or above its maximum, K of A and B differ, or RUN
    #: before the loads it needs. Nothing was loaded or run.
    DIMS = 1
    #: An element on ``data`` did not fit its operand; it was written truncated.
    RANGE = 2


#: Largest operand buffer a GEMM engine may ask for (the ECP5-85F has 3.7 Mbit of block RAM).
BUFFER_LIMIT_BITS = 8 << 20

#: Names of the parameters passed through to :class:`SystolicArray` (``max_k`` included).
_ARRAY_PARAMS = tuple(q.name for q in array_params(rows_doc=""))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _pick(sel, values):
    """``values[sel]`` as a tree of 2-way multiplexers over the bits of ``sel`` (an index past
    the end picks the last value)."""
    values = list(values)
    bits = max(len(values) - 1, 0).bit_length()
    values += [values[-1]] * ((1 << bits) - len(values))
    for b in range(bits):
        pairs = zip(values[::2], values[1::2], strict=True)
        values = [Mux(sel[b], hi, lo) for lo, hi in pairs]
    return values[0]


def _step_loops(m, levels, done=()):
    """One step of a nest of counting loops, innermost level first.

    Each level is ``(last, wrap, step)``: when ``last`` holds, the level applies ``wrap`` and
    the next level out steps; otherwise it applies ``step``. After the outermost level's last
    step, ``done`` is applied instead.
    """
    last, wrap, step = levels[0]
    with m.If(last):
        m.d.sync += wrap
        if len(levels) > 1:
            _step_loops(m, levels[1:], done)
        else:
            m.d.sync += done
    with m.Else():
        m.d.sync += step


class GemmEngine(Parameterised, wiring.Component):
    """Runs ``C = op(A) op(B) (+ bias)`` for any ``M <= max_m``, ``K <= max_k``, ``N <= max_n``.

    The host loads operands over ``data`` (one element per beat, or up to ``data_lanes``: see
    below), row by row of the matrix *as it is stored*: after ``LOAD_A`` with ``trans = 0``
    the elements are ``A[0, 0], A[0, 1], ...`` (``m`` rows of ``k``); with ``trans = 1`` they
    are ``A^T`` (``k`` rows of ``m``), so the engine computes ``A^T B`` from a matrix stored
    ``K x M``. ``LOAD_B`` likewise takes ``B`` (``k x n``) or ``B^T`` (``n x k``). The loader
    scatters elements into the layout the dataflow reads (a buffer word is one array row or
    column of operands), so transposes cost nothing at run time. ``RUN`` then streams the result:

    * beats come column tile by column tile (``cols`` columns), rows ``0 .. M - 1`` inside;
      each carries ``row``, ``col`` (first column) and ``last`` (final beat of the GEMM);
      lanes past ``N`` are 0.
    * with ``requant`` every lane goes through :class:`Requantizer` (lane ``j`` uses the scale
      written at ``lane = j`` on ``cfg``), the tags riding through it as its ``meta``; else
      lanes are full ``acc_width`` sums.

    Wide loads (``data_lanes = D > 1``): a beat carries ``count`` (1 to ``D``) elements, the
    next ones of the element stream above, element 0 first. The loader writes one chunk of the
    beat per cycle and sets ``ready`` in the cycle it writes the beat's last one. Loads are
    *fast* when the stored rows run along a buffer word's lanes: OS: ``LOAD_A`` with ``trans
    = 1`` (so a compiler stores A^T, ``K x M``, for OS), ``LOAD_B`` with ``trans = 0``,
    ``LOAD_BIAS``; WS: ``LOAD_A`` and ``LOAD_B`` with ``trans = 0``, ``LOAD_BIAS``. A fast
    chunk is up to ``min(left in the beat, lanes left in the word, left in the stored row)``
    elements (``rows`` lanes a word for A, ``cols`` for B and the bias), so a fast load
    costs about ``elements / min(D, lanes)`` cycles; the other loads write one element a
    cycle. A beat may cross the end of a stored row, and even of a load: the rest of it
    goes to the next row, or waits for the next load (a load takes exactly its elements, as
    with ``D = 1``). A ``count`` above ``D`` counts as ``D``; a beat with ``count = 0`` is
    taken without elements.

    Output-stationary runs each ``rows x cols`` output tile over all of K; weight-stationary
    keeps a ``rows x cols`` tile of B in the array, streams all ``M`` rows of A past it, and
    keeps partial sums for ``K > rows`` in an accumulator buffer (``max_m x cols`` words).

    Parameters
    ----------
    rows, cols, dataflow, a_width, a_signed, b_width, b_signed, acc_width, bias_width, max_k
        As :class:`SystolicArray` (``max_k`` also sizes the buffers).
    max_m, max_n : int
        Largest M and N, 2 to 4096 (``max_k`` likewise).
    requant : bool
        Requantize the results to ``out_width`` bits.
    out_width : int
        Requantized output width, 2 to 32.
    data_lanes : int
        Operand elements a ``data`` beat can carry, 1 to 32 (1: the beat is one element).

    Members
    -------
    cmd : In(stream.Signature(StructLayout))
        ``op`` (:class:`Op`), ``trans``, ``bias``, ``m``, ``k``, ``n``. Taken only when idle.
    data : In(stream.Signature(signed(...)))
        Operand elements for the load in progress (``signed`` of the widest operand, bias
        included, with ``data_lanes = 1``); with ``data_lanes = D > 1`` a
        ``StructLayout({"data": ArrayLayout(signed(...), D), "count": range(1, D + 1)})``:
        ``count`` elements, ``data[0]`` first (the lanes past ``count`` are ignored).
        Every element taken is range-checked against its operand (``RANGE``).
    o : Out(stream.Signature(StructLayout))
        ``data`` (``cols`` lanes), ``row``, ``col``, ``last``.
    cfg : In(stream.Signature(cfg_layout))
        With ``requant`` only: the requantizer's scale-table writes (:attr:`cfg_layout`:
        ``lane`` when ``cols > 1``, ``m``, ``e``), one lane per accepted beat, ``ready`` always
        high; a write applies to the results entering the requantizer from its cycle on.
    busy : Out(1)
        High while a command runs.
    error, error_clear : Out(2), In(1)
        Sticky :class:`GemmError` flags: raised by a refused command (``DIMS``) or an
        out-of-range element (``RANGE``), held until a clock edge with ``error_clear`` high
        (a flag raised in that cycle stays set).

    Latency (:attr:`latency`, in the sidecar): the array's latency plus 2 (the buffer read and
    the output register), or with ``requant`` plus 1 and the requantizer's :attr:`latency
    <Requantizer.latency>` (whose first stage is the output register); counted from the cycle
    the engine issues the read of a tile's last beat (OS) or of a row (WS) to its first result
    on ``o`` when nothing stalls. A RUN costs about ``M K N / (rows cols)`` cycles plus that
    fill.
    """

    # The array's parameters, but for max_k: the engine's own range and default (it also
    # sizes the buffers).
    PARAMS = (
        *(q for q in array_params(
            rows_doc="PE rows (OS: output rows per tile; WS: K per weight tile)")
          if q.name != "max_k"),
        Param("max_k", int, 256, "largest K (sizes the buffers; checked against acc_width)",
              2, 4096),
        Param("max_m", int, 256, "largest M", 2, 4096),
        Param("max_n", int, 256, "largest N", 2, 4096),
        Param("requant", bool, False, "requantize results (else full acc_width out)"),
        Param("out_width", int, 8, "requantized output width", 2, 32),
        Param("data_lanes", int, 1, "operand elements per data beat (1: a plain element)",
              1, 32),
    )

    @classmethod
    def check_params(cls, p):
        """The array's rules (bias within the accumulator, the accumulator bound at
        ``max_k``), the requantizer's input width, and the buffers' size."""
        SystolicArray.check_params(p)
        if p["requant"]:
            limit = next(q for q in Requantizer.PARAMS if q.name == "in_width").hi
            if p["acc_width"] > limit:
                raise ParamError(f"acc_width must be at most {limit} with requant (the "
                                 f"requantizer's input), not {p['acc_width']}")
        for name, words, width in (("A", cls._a_depth(p), p["rows"] * p["a_width"]),
                                   ("B", cls._b_depth(p), p["cols"] * p["b_width"])):
            if words * width > BUFFER_LIMIT_BITS:
                raise ParamError(
                    f"the {name} buffer would be {words} words x {width} bits "
                    f"({words * width / 2**20:.1f} Mbit), above the "
                    f"{BUFFER_LIMIT_BITS // 2**20} Mbit limit: lower max_m, max_k or max_n")

    @staticmethod
    def _tag_layout(p) -> data.StructLayout:
        """What a result beat carries beside its lanes (through the requantizer's ``meta``)."""
        return data.StructLayout({"row": range(p["max_m"]), "col": range(p["max_n"]),
                                  "last": 1})

    @classmethod
    def _requant_params(cls, p) -> dict:
        return dict(lanes=p["cols"], in_width=p["acc_width"], out_width=p["out_width"],
                    meta_width=cls._tag_layout(p).size)

    def __init__(self, **given):
        p = self._take_params(given)
        self._array = array = SystolicArray(**{k: p[k] for k in _ARRAY_PARAMS})
        self._a_shape, self._b_shape = array.a_shape, array.b_shape
        elem_w = max(p["a_width"] + (0 if p["a_signed"] else 1),
                     p["b_width"] + (0 if p["b_signed"] else 1), p["bias_width"])
        self._elem_w = elem_w
        out_lane = signed(p["out_width"] if p["requant"] else p["acc_width"])
        max_m, max_k, max_n = p["max_m"], p["max_k"], p["max_n"]
        members = {
            "cmd": In(stream.Signature(data.StructLayout({
                "op": Op, "trans": 1, "bias": 1,
                # One value past each maximum fits, so an oversized request is seen (DIMS).
                "m": range(max_m + 2), "k": range(max_k + 2), "n": range(max_n + 2),
            }))),
            "data": In(stream.Signature(self._data_shape(p["data_lanes"], elem_w))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(out_lane, p["cols"]), **self._tag_layout(p).members,
            }))),
            "busy": Out(1),
            **error_ports(GemmError),
        }
        self._requant = None
        if p["requant"]:
            self._requant = Requantizer(**self._requant_params(p))
            members["cfg"] = In(stream.Signature(self._requant.cfg_layout))
        super().__init__(members)

    @staticmethod
    def _data_shape(lanes: int, elem_w: int):
        if lanes == 1:
            return signed(elem_w)
        return data.StructLayout({"data": data.ArrayLayout(signed(elem_w), lanes),
                                  "count": range(1, lanes + 1)})

    @property
    def cfg_layout(self) -> data.StructLayout | None:
        """Payload of ``cfg``, the requantizer's scale-table write (``None`` without
        ``requant``: there is no ``cfg`` port)."""
        return self._requant.cfg_layout if self._requant is not None else None

    @property
    def data_width(self) -> int:
        """Bits of one element on ``data`` (signed: the widest operand, bias included)."""
        return self._elem_w

    @property
    def latency(self) -> int:
        if self._requant is None:
            return self._array.latency + 2
        return self._array.latency + 1 + self._requant.latency

    # buffer geometry (words)
    @staticmethod
    def _a_depth(p) -> int:
        if p["dataflow"] == "os":
            return _ceil(p["max_m"], p["rows"]) * p["max_k"]
        return _ceil(p["max_k"], p["rows"]) * p["max_m"]

    @staticmethod
    def _b_depth(p) -> int:
        return _ceil(p["max_n"], p["cols"]) * p["max_k"]

    @property
    def a_depth(self) -> int:
        return self._a_depth(self._params)

    @property
    def b_depth(self) -> int:
        return self._b_depth(self._params)

    def elaborate(self, platform):
        m = Module()
        p = self._params
        R, C = p["rows"], p["cols"]
        os_flow = p["dataflow"] == "os"
        max_m, max_k, max_n = p["max_m"], p["max_k"], p["max_n"]
        m.submodules.array = sa = self._array

        # -- buffers --------------------------------------------------------------------------
        # (At least two words each: a one-word memory would have a zero-width address.)
        m.submodules.abuf = abuf = Memory(shape=data.ArrayLayout(self._a_shape, R),
                                          depth=max(self.a_depth, 2), init=[])
        m.submodules.bbuf = bbuf = Memory(shape=data.ArrayLayout(self._b_shape, C),
                                          depth=max(self.b_depth, 2), init=[])
        m.submodules.biasbuf = biasbuf = Memory(
            shape=data.ArrayLayout(signed(p["bias_width"]), C), depth=max(_ceil(max_n, C), 2),
            init=[])
        a_wr, b_wr, bias_wr = (buf.write_port(granularity=1) for buf in (abuf, bbuf, biasbuf))
        a_rd, b_rd, bias_rd = (buf.read_port() for buf in (abuf, bbuf, biasbuf))

        # -- command and shapes ---------------------------------------------------------------
        busy = Signal()
        raised = sticky_errors(m, self.error, self.error_clear)
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]
        loading, running = Signal(), Signal()
        m.d.comb += busy.eq(loading | running)

        a_m, a_k = Signal(range(max_m + 1)), Signal(range(max_k + 1))
        b_k, b_n = Signal(range(max_k + 1)), Signal(range(max_n + 1))
        bias_n = Signal(range(max_n + 1))
        a_ok, b_ok, bias_ok = Signal(), Signal(), Signal()
        use_bias = Signal()

        # The loader walks the stored matrix row by row and writes element (x, y), where x is
        # the dimension spread over a word's lanes, to word (x // L) * S + y, lane x % L.
        lanes_max = max(R, C)
        ld_target = Signal(Op)
        dim_max = max(max_m, max_k, max_n)
        ld_rows, ld_cols = Signal(range(dim_max + 1)), Signal(range(dim_max + 1))
        ld_stride = Signal(range(max(max_m, max_k) + 1))
        ld_fast = Signal()  # lanes along the stored rows (x = column index)
        ld_lanes = Signal(range(lanes_max + 1))
        ld_r, ld_c = Signal(range(dim_max + 1)), Signal(range(dim_max + 1))
        ld_lane = Signal(range(max(lanes_max, 2)))  # never zero bits wide
        addr_w = max(self.a_depth, self.b_depth, _ceil(max_n, C)).bit_length() + 1
        ld_addr, ld_base = Signal(addr_w), Signal(addr_w)

        cmd = self.cmd.payload
        start_run = Signal()
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.If(cmd.op == Op.RUN):
                run_ok = (a_ok & b_ok & (a_k == b_k)
                          & (~cmd.bias | (bias_ok & (bias_n == b_n))))
                with m.If(run_ok):
                    m.d.comb += start_run.eq(1)
                    m.d.sync += [running.eq(1), use_bias.eq(cmd.bias)]
                with m.Else():
                    raise_error(m, raised, GemmError.DIMS)
            with m.Else():
                # A load checks the sizes it uses.
                m_ok = (cmd.m >= 1) & (cmd.m <= max_m)
                k_ok = (cmd.k >= 1) & (cmd.k <= max_k)
                n_ok = (cmd.n >= 1) & (cmd.n <= max_n)
                ok = Mux(cmd.op == Op.LOAD_A, m_ok & k_ok,
                         Mux(cmd.op == Op.LOAD_B, k_ok & n_ok, n_ok))
                with m.If(ok):
                    m.d.sync += [loading.eq(1), ld_target.eq(cmd.op), ld_r.eq(0), ld_c.eq(0),
                                 ld_lane.eq(0), ld_addr.eq(0), ld_base.eq(0)]
                with m.Else():
                    raise_error(m, raised, GemmError.DIMS)
                with m.If(cmd.op == Op.LOAD_A):
                    m.d.sync += [a_m.eq(cmd.m), a_k.eq(cmd.k), a_ok.eq(ok), ld_lanes.eq(R),
                                 ld_rows.eq(Mux(cmd.trans, cmd.k, cmd.m)),
                                 ld_cols.eq(Mux(cmd.trans, cmd.m, cmd.k))]
                    if os_flow:  # x = m, y = k, S = K
                        m.d.sync += [ld_stride.eq(cmd.k), ld_fast.eq(cmd.trans)]
                    else:  # x = k, y = m, S = M
                        m.d.sync += [ld_stride.eq(cmd.m), ld_fast.eq(~cmd.trans)]
                with m.Elif(cmd.op == Op.LOAD_B):  # x = n, y = k, S = K
                    m.d.sync += [b_k.eq(cmd.k), b_n.eq(cmd.n), b_ok.eq(ok), ld_lanes.eq(C),
                                 ld_stride.eq(cmd.k), ld_fast.eq(~cmd.trans),
                                 ld_rows.eq(Mux(cmd.trans, cmd.n, cmd.k)),
                                 ld_cols.eq(Mux(cmd.trans, cmd.k, cmd.n))]
                with m.Else():  # LOAD_BIAS: one row, x = n, y = 0
                    m.d.sync += [bias_n.eq(cmd.n), bias_ok.eq(ok), ld_lanes.eq(C),
                                 ld_stride.eq(1), ld_fast.eq(1), ld_rows.eq(1),
                                 ld_cols.eq(cmd.n)]

        # -- loader ---------------------------------------------------------------------------
        # Each cycle with a beat there, the loader writes one chunk of it: up to
        # min(left in the beat, lanes left in the word, left in the stored row) elements in the
        # fast direction (lane j of the word takes element off + j - lane of the beat), one in
        # the slow direction. ``ready`` is high in the cycle that writes the beat's last chunk.
        D = p["data_lanes"]
        if D == 1:
            elems, count = [self.data.payload], 1
        else:
            elems, count = [self.data.payload.data[i] for i in range(D)], self.data.payload.count
        a_lo, a_hi = operand_range(p["a_width"], p["a_signed"])
        b_lo, b_hi = operand_range(p["b_width"], p["b_signed"])
        bias_lo, bias_hi = operand_range(p["bias_width"], True)
        lo = Mux(ld_target == Op.LOAD_A, a_lo, Mux(ld_target == Op.LOAD_B, b_lo, bias_lo))
        hi = Mux(ld_target == Op.LOAD_A, a_hi, Mux(ld_target == Op.LOAD_B, b_hi, bias_hi))
        step = Signal()  # a chunk is written this cycle
        m.d.comb += step.eq(loading & self.data.valid)
        lane_en = Signal(lanes_max)
        lane_data = [Signal(signed(self._elem_w), name=f"ld_elem{j}") for j in range(lanes_max)]
        if D == 1:
            chunk, finish = 1, 1
            m.d.comb += lane_en.eq(Mux(step, 1 << ld_lane, 0))
            for v in lane_data:
                m.d.comb += v.eq(elems[0])
            with m.If(step & ((elems[0] < lo) | (elems[0] > hi))):
                raise_error(m, raised, GemmError.RANGE)
        else:
            ld_off = Signal(range(D), name="ld_off")  # elements of the beat already written
            cnt = Signal(range(D + 1), name="ld_count")
            left = Signal(range(D + 1), name="ld_left")
            room_lane = Signal(range(lanes_max + 1), name="ld_room_lane")
            room_row = Signal(range(dim_max + 1), name="ld_room_row")
            if (1 << len(count)) - 1 > D:
                m.d.comb += cnt.eq(Mux(count > D, D, count))
            else:  # (count cannot exceed D: no constant comparison for Verilator to flag)
                m.d.comb += cnt.eq(count)
            m.d.comb += [left.eq(cnt - ld_off),
                         room_lane.eq(ld_lanes - ld_lane), room_row.eq(ld_cols - ld_c)]
            fast_n = Signal(range(min(D, lanes_max) + 1), name="ld_fast_chunk")
            m1 = Mux(left < room_lane, left, room_lane)
            m.d.comb += fast_n.eq(Mux(m1 < room_row, m1, room_row))
            chunk = Signal(range(min(D, lanes_max) + 1), name="ld_chunk")
            finish = Signal(name="ld_finish")
            m.d.comb += [chunk.eq(Mux(ld_fast, fast_n, Mux(left != 0, 1, 0))),
                         finish.eq(chunk == left)]
            shift = Signal(signed(max(D, lanes_max).bit_length() + 2), name="ld_shift")
            m.d.comb += shift.eq(ld_off - ld_lane)
            bad = []
            for j in range(lanes_max):
                sel = Signal(range(D), name=f"ld_sel{j}")
                # (ld_lane <= j holds for every lane value from the top one on: no constant
                # comparison for Verilator to flag)
                from_lane = (ld_lane <= j) if j < (1 << len(ld_lane)) - 1 else 1
                m.d.comb += [
                    sel.eq(shift + j),
                    lane_en[j].eq(step & from_lane & (ld_lane + chunk > j)),
                    lane_data[j].eq(_pick(sel, elems)),
                ]
                bad.append(lane_en[j] & ((lane_data[j] < lo) | (lane_data[j] > hi)))
            with m.If(Cat(*bad).any()):
                raise_error(m, raised, GemmError.RANGE)
            with m.If(step):
                m.d.sync += ld_off.eq(Mux(finish, 0, ld_off + chunk))
        m.d.comb += self.data.ready.eq(loading & finish)
        for wr, target, n_lanes in ((a_wr, Op.LOAD_A, R), (b_wr, Op.LOAD_B, C),
                                    (bias_wr, Op.LOAD_BIAS, C)):
            m.d.comb += [
                wr.addr.eq(ld_addr),
                wr.en.eq(Mux(ld_target == target, lane_en[:n_lanes], 0)),
            ]
            for j in range(n_lanes):
                m.d.comb += wr.data[j].eq(lane_data[j])
        with m.If(step & (chunk != 0)):
            row_end = ld_c + chunk == ld_cols
            with m.If(ld_fast):
                lane_wrap = ld_lane + chunk == ld_lanes
                with m.If(row_end):
                    m.d.sync += [ld_c.eq(0), ld_lane.eq(0), ld_base.eq(ld_base + 1),
                                 ld_addr.eq(ld_base + 1)]
                with m.Else():
                    m.d.sync += [ld_c.eq(ld_c + chunk),
                                 ld_lane.eq(Mux(lane_wrap, 0, ld_lane + chunk)),
                                 ld_addr.eq(Mux(lane_wrap, ld_addr + ld_stride, ld_addr))]
            with m.Else():
                lane_wrap = ld_lane == ld_lanes - 1
                with m.If(row_end):
                    new_base = Mux(lane_wrap, ld_base + ld_stride, ld_base)
                    m.d.sync += [ld_c.eq(0), ld_lane.eq(Mux(lane_wrap, 0, ld_lane + 1)),
                                 ld_base.eq(new_base), ld_addr.eq(new_base)]
                with m.Else():
                    m.d.sync += [ld_c.eq(ld_c + 1), ld_addr.eq(ld_addr + 1)]
            with m.If(row_end):
                m.d.sync += ld_r.eq(ld_r + 1)
                with m.If(ld_r == ld_rows - 1):
                    m.d.sync += loading.eq(0)

        # -- output path (shared): tag, drop padding rows, zero padding lanes ----------------
        out_row = Signal(range(max_m + R), name="out_row")
        out_col = Signal(range(max_n + C), name="out_col")
        keep, last = Signal(), Signal()
        res_valid, res_ready = Signal(), Signal()  # beats leaving the array for the output
        res_data = Signal(data.ArrayLayout(signed(p["acc_width"]), C))
        m.d.comb += [keep.eq(out_row < a_m),
                     last.eq((out_row == a_m - 1) & (out_col + C >= b_n))]
        for j in range(C):
            m.d.comb += res_data[j].eq(Mux(out_col + j < b_n, sa.o.payload[j], 0))

        if os_flow:
            self._run_os(m, sa, a_rd, b_rd, bias_rd, start_run, use_bias, a_m, a_k, b_n,
                         out_row, out_col, keep, res_valid, res_ready)
        else:
            self._run_ws(m, sa, a_rd, b_rd, bias_rd, start_run, use_bias, a_m, a_k, b_n,
                         out_row, out_col, res_valid, res_ready)

        # -- output register, or the requantizer with the tags as its metadata ------------
        tag_layout = self._tag_layout(p)
        tag = Signal(tag_layout, name="res_tag")
        m.d.comb += [tag.row.eq(out_row), tag.col.eq(out_col), tag.last.eq(last)]
        if p["requant"]:
            m.submodules.requant = rq = self._requant
            wiring.connect(m, wiring.flipped(self.cfg), rq.cfg)
            m.d.comb += [rq.i.valid.eq(res_valid), rq.i.payload.z.eq(res_data),
                         rq.i.payload.meta.eq(tag), res_ready.eq(rq.i.ready),
                         self.o.valid.eq(rq.o.valid), rq.o.ready.eq(self.o.ready),
                         self.o.payload.data.eq(rq.o.payload.data)]
            out_tag = tag_layout(rq.o.payload.meta)
            for name in tag_layout.members:
                m.d.comb += self.o.payload[name].eq(out_tag[name])
        else:
            m.d.comb += res_ready.eq(~self.o.valid | self.o.ready)
            with m.If(res_ready):
                m.d.sync += [self.o.valid.eq(res_valid), self.o.payload.data.eq(res_data)]
                for name in tag_layout.members:
                    m.d.sync += self.o.payload[name].eq(tag[name])
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += running.eq(0)
        return m

    # -- output-stationary run ------------------------------------------------------------------

    def _run_os(self, m, sa, a_rd, b_rd, bias_rd, start_run, use_bias, a_m, a_k, b_n,
                out_row, out_col, keep, res_valid, res_ready):
        p = self._params
        R, C = p["rows"], p["cols"]
        # Issue: for each column tile, each row tile, k = 0 .. K - 1, read word (mt, k) of A,
        # (nt, k) of B and the column tile's bias; the array sees them a cycle later.
        active = Signal(name="gen_active")
        k = Signal(range(p["max_k"] + 1), name="gen_k")
        row0 = Signal(range(p["max_m"] + R), name="gen_row0")
        col0 = Signal(range(p["max_n"] + C), name="gen_col0")
        a_base = Signal(a_rd.addr.shape(), name="gen_a_base")
        b_base = Signal(b_rd.addr.shape(), name="gen_b_base")
        nt = Signal(bias_rd.addr.shape(), name="gen_nt")
        iv = Signal(name="iss_valid")
        first, last = Signal(name="iss_first"), Signal(name="iss_last")
        adv = Signal()
        m.d.comb += [
            adv.eq(~iv | sa.i.ready),
            a_rd.addr.eq(a_base + k), b_rd.addr.eq(b_base + k), bias_rd.addr.eq(nt),
            a_rd.en.eq(adv), b_rd.en.eq(adv), bias_rd.en.eq(adv),
        ]
        with m.If(start_run):
            m.d.sync += [active.eq(1), k.eq(0), row0.eq(0), col0.eq(0), a_base.eq(0),
                         b_base.eq(0), nt.eq(0)]
        with m.Elif(adv):
            m.d.sync += [iv.eq(active), first.eq(k == 0), last.eq(k == a_k - 1)]
            with m.If(active):
                _step_loops(m, [
                    (k == a_k - 1, [k.eq(0)], [k.eq(k + 1)]),
                    (row0 + R >= a_m, [row0.eq(0), a_base.eq(0)],
                     [row0.eq(row0 + R), a_base.eq(a_base + a_k)]),
                    (col0 + C >= b_n, [],
                     [col0.eq(col0 + C), b_base.eq(b_base + a_k), nt.eq(nt + 1)]),
                ], done=[active.eq(0)])
        m.d.comb += [
            sa.i.valid.eq(iv), sa.i.payload.a.eq(a_rd.data), sa.i.payload.b.eq(b_rd.data),
            sa.i.payload.bias.eq(Mux(use_bias, bias_rd.data.as_value(), 0)),
            sa.i.payload.first.eq(first), sa.i.payload.last.eq(last),
        ]

        # Output: rows 0 .. R - 1 of each tile; rows past M are dropped.
        ri = Signal(range(max(R, 2)), name="out_ri")
        m.d.comb += [sa.o.ready.eq(~keep | res_ready), res_valid.eq(sa.o.valid & keep)]
        with m.If(start_run):
            m.d.sync += [ri.eq(0), out_row.eq(0), out_col.eq(0)]
        with m.Elif(sa.o.valid & sa.o.ready):
            _step_loops(m, [
                (ri == R - 1, [ri.eq(0)], [ri.eq(ri + 1), out_row.eq(out_row + 1)]),
                (out_row + 1 >= a_m, [out_row.eq(0), out_col.eq(out_col + C)],
                 [out_row.eq(out_row + 1)]),
            ])

    # -- weight-stationary run ------------------------------------------------------------------

    def _run_ws(self, m, sa, a_rd, b_rd, bias_rd, start_run, use_bias, a_m, a_k, b_n,
                out_row, out_col, res_valid, res_ready):
        p = self._params
        R, C = p["rows"], p["cols"]
        max_m, max_k, max_n = p["max_m"], p["max_k"], p["max_n"]
        m.submodules.accbuf = accbuf = Memory(
            shape=data.ArrayLayout(signed(p["acc_width"]), C), depth=max(max_m, 2), init=[])
        acc_wr, acc_rd = accbuf.write_port(), accbuf.read_port()

        # Weight loader: for each column tile, each k tile, rows k0 .. k0 + R - 1 of B (rows
        # past K are zeros); the array takes them into its shadow registers when free.
        w_active = Signal(name="w_active")
        wi = Signal(range(max(R, 2)), name="w_i")
        wk = Signal(range(max_k + R + 1), name="w_k")
        wcol0 = Signal(range(max_n + C), name="w_col0")
        wb_base = Signal(b_rd.addr.shape(), name="w_b_base")
        wv, wzero = Signal(name="w_valid"), Signal(name="w_zero")
        wadv = Signal()
        m.d.comb += [wadv.eq(~wv | sa.w.ready), b_rd.addr.eq(wb_base + wk), b_rd.en.eq(wadv)]
        with m.If(start_run):
            m.d.sync += [w_active.eq(1), wi.eq(0), wk.eq(0), wcol0.eq(0), wb_base.eq(0)]
        with m.Elif(wadv):
            m.d.sync += [wv.eq(w_active), wzero.eq(wk >= a_k)]
            with m.If(w_active):
                # wk is the row of B being read: k tile * rows + wi.
                _step_loops(m, [
                    (wi == R - 1, [wi.eq(0)], [wi.eq(wi + 1), wk.eq(wk + 1)]),
                    (wk + 1 >= a_k, [wk.eq(0)], [wk.eq(wk + 1)]),
                    (wcol0 + C >= b_n, [], [wcol0.eq(wcol0 + C), wb_base.eq(wb_base + a_k)]),
                ], done=[w_active.eq(0)])
        m.d.comb += [sa.w.valid.eq(wv), sa.w.payload.eq(Mux(wzero, 0, b_rd.data.as_value()))]

        # A streamer: for each column tile, each k tile, rows m = 0 .. M - 1 of A; the partial
        # sum comes from the bias (first k tile) or the accumulator buffer. A row's partial sum
        # is read only after the previous k tile's result for it was written back.
        beats = max_m * _ceil(max_k, R) * _ceil(max_n, C)
        s_cnt = Signal(range(beats + 1), name="s_count")
        o_cnt = Signal(range(beats + 1), name="o_count")
        s_active = Signal(name="s_active")
        sm = Signal(range(max_m), name="s_m")
        sk0 = Signal(range(max_k + R), name="s_k0")
        scol0 = Signal(range(max_n + C), name="s_col0")
        sa_base = Signal(a_rd.addr.shape(), name="s_a_base")
        nt = Signal(bias_rd.addr.shape(), name="s_nt")
        iv, swap, from_acc = Signal(name="iss_valid"), Signal(name="iss_swap"), Signal()
        adv, fire = Signal(), Signal()
        m.d.comb += [
            adv.eq(~iv | sa.i.ready),
            fire.eq(s_active & ((sk0 == 0) | (o_cnt + a_m > s_cnt))),
            a_rd.addr.eq(sa_base + sm), acc_rd.addr.eq(sm), bias_rd.addr.eq(nt),
            a_rd.en.eq(adv), acc_rd.en.eq(adv), bias_rd.en.eq(adv),
        ]
        with m.If(start_run):
            m.d.sync += [s_active.eq(1), sm.eq(0), sk0.eq(0), scol0.eq(0), sa_base.eq(0),
                         nt.eq(0), s_cnt.eq(0)]
        with m.Elif(adv):
            m.d.sync += [iv.eq(fire), swap.eq(sm == 0), from_acc.eq(sk0 != 0)]
            with m.If(fire):
                m.d.sync += s_cnt.eq(s_cnt + 1)
                _step_loops(m, [
                    (sm == a_m - 1, [sm.eq(0)], [sm.eq(sm + 1)]),
                    (sk0 + R >= a_k, [sk0.eq(0), sa_base.eq(0)],
                     [sk0.eq(sk0 + R), sa_base.eq(sa_base + a_m)]),
                    (scol0 + C >= b_n, [], [scol0.eq(scol0 + C), nt.eq(nt + 1)]),
                ], done=[s_active.eq(0)])
        psum = sa.i.payload.psum
        for j in range(C):
            m.d.comb += psum[j].eq(Mux(from_acc, acc_rd.data[j],
                                       Mux(use_bias, bias_rd.data[j], 0)))
        m.d.comb += [sa.i.valid.eq(iv), sa.i.payload.a.eq(a_rd.data),
                     sa.i.payload.swap.eq(swap)]

        # Output: partial sums go back to the accumulator buffer; the last k tile's go out.
        ok0 = Signal(range(max_k + R), name="out_k0")
        final = Signal()
        m.d.comb += [
            final.eq(ok0 + R >= a_k),
            sa.o.ready.eq(~final | res_ready),
            res_valid.eq(sa.o.valid & final),
            acc_wr.addr.eq(out_row), acc_wr.data.eq(sa.o.payload),
            acc_wr.en.eq(sa.o.valid & ~final),
        ]
        with m.If(start_run):
            m.d.sync += [ok0.eq(0), out_row.eq(0), out_col.eq(0), o_cnt.eq(0)]
        with m.Elif(sa.o.valid & sa.o.ready):
            m.d.sync += o_cnt.eq(o_cnt + 1)
            _step_loops(m, [
                (out_row == a_m - 1, [out_row.eq(0)], [out_row.eq(out_row + 1)]),
                (final, [ok0.eq(0), out_col.eq(out_col + C)], [ok0.eq(ok0 + R)]),
            ])

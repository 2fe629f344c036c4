"""The conventions every unit follows (``docs/adding-a-unit.md``): one validation, shared by
construction and the unit catalogue (:class:`~heterotron.hdl.contract.params.Parameterised`);
one ``cfg`` stream of the public ``cfg_layout``; sticky ``error`` flags that hold until
``error_clear`` (:mod:`heterotron.hdl.ports`), simulated in Amaranth's simulator; and the
example unit of ``docs/adding-a-unit.md``, built from the document, run and linted."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib import enum as hdl_enum
from amaranth.sim import Simulator

from heterotron.hdl.contract.params import ParamError, Parameterised, inspect_only, sample
from heterotron.hdl.gelu import Gelu
from heterotron.hdl.layernorm import LayerNorm
from heterotron.hdl.pim import PimFlag, PimReg, PimTile
from heterotron.hdl.residual import ResidualAdd
from heterotron.hdl.rowstream import SfuError
from heterotron.hdl.softmax import Softmax
from heterotron.sim.flows.lint import verilator_lint
from heterotron.sim.flows.units import UNITS
from heterotron.tb.amaranth_sim import stream_get, stream_put

REPO = Path(__file__).resolve().parent.parent

# -- parameters: construction and the catalogue refuse the same sets ------------------------

#: Sets that break a rule between parameters (each parameter in its own range), per unit.
CROSS_RULES = {
    "systolic": [{"bias_width": 40}, {"acc_width": 16, "bias_width": 8},
                 {"dataflow": "ws", "rows": 32, "max_k": 1, "acc_width": 20, "bias_width": 2}],
    "pim": [{"cell_bits": 3}, {"adc_share": 3}, {"adc_max": 193}],
    "router": [{"x": 4}, {"nz": 2, "z": 2}, {"nx": 1, "ny": 1, "x": 0, "y": 0},
               {"flit_width": 9}, {"wrap": True}],
    "mesh": [{"nx": 1, "ny": 1}, {"flit_width": 9}, {"wrap": True}],
}
#: Upper bounds for the sampled sets, to keep each construction quick.
CAPS = {"lanes": 4, "channels": 16, "max_len": 64, "rows": 16, "cols": 8, "max_k": 64,
        "max_m": 64, "max_n": 64, "adc_share": 16, "adc_max": 64, "nx": 3, "ny": 3, "nz": 2,
        "flit_width": 40}


def _out_of_range(params) -> list[dict]:
    """Per parameter, values outside its range or of the wrong type."""
    sets = []
    for p in params:
        if p.kind is bool:
            sets += [{p.name: 1}]
        elif p.kind is str:
            sets += [{p.name: "nonsense"}]
        else:
            sets += [{p.name: p.lo - 1}, {p.name: p.hi + 1}, {p.name: str(p.lo)}]
    return sets


def _refusal(action) -> str | None:
    try:
        action()
    except ParamError as e:
        return str(e)
    return None


@pytest.mark.parametrize("name", sorted(UNITS))
def test_catalogue_refuses_what_construction_refuses(name):
    unit = UNITS[name]
    if not issubclass(unit.component, Parameterised):
        pytest.skip(f"{unit.component.__name__} does not hold its parameters by Parameterised")
    rng = np.random.default_rng(7)
    candidates = (_out_of_range(unit.params) + CROSS_RULES.get(name, [])
                  + [sample(unit.params, rng, CAPS) for _ in range(25)])
    defaults = unit.defaults()
    assert _refusal(lambda: inspect_only(unit.build(defaults))) is None
    assert _refusal(lambda: unit.validate(defaults)) is None
    refused = 0
    for given in candidates:
        built = _refusal(lambda g=given: inspect_only(unit.component(**g)))
        validated = _refusal(lambda g=given: unit.validate(unit.resolve(g)))
        assert built == validated, (given, built, validated)
        refused += built is not None
    assert refused >= len(_out_of_range(unit.params))
    for given in CROSS_RULES.get(name, []):
        assert _refusal(lambda g=given: unit.component(**g)) is not None, given


# -- configuration: one stream of cfg_layout ------------------------------------------------


def _check_cfg(component) -> None:
    """``cfg`` is an input stream whose payload is ``cfg_layout``, a public instance
    property; a ``reg`` (or LayerNorm's ``kind``) field is an ``amaranth.lib.enum`` shape."""
    member = component.signature.members["cfg"]
    assert member.flow == wiring.In and member.is_signature
    sig = member.signature.flip()
    assert isinstance(sig, stream.Signature)
    layout = component.cfg_layout
    assert isinstance(inspect.getattr_static(type(component), "cfg_layout"), property)
    assert isinstance(layout, data.StructLayout)
    assert sig.members["payload"].shape == layout
    for name in ("reg", "kind"):
        if name in layout.members:
            assert isinstance(layout[name].shape, hdl_enum.EnumType), name


@pytest.mark.parametrize("name", sorted(UNITS))
def test_cfg_is_a_stream_of_cfg_layout(name):
    unit = UNITS[name]
    component = inspect_only(unit.build(unit.defaults()))
    if "cfg" not in component.signature.members:
        pytest.skip(f"{name} has no cfg port")
    _check_cfg(component)


def test_register_ids_are_enum_shapes():
    assert inspect_only(PimTile()).cfg_layout["reg"].shape is PimReg
    kind = inspect_only(LayerNorm(lanes=1, max_len=2)).cfg_layout["kind"].shape
    assert [k.name for k in kind] == ["SHIFT", "ENTRY"]


# -- errors: sticky until error_clear -------------------------------------------------------


def _row_beat(value, last):
    return {"data": [value], "n": 0, "last": last}


async def _softmax_refused(ctx, dut):
    await stream_put(ctx, dut.cfg, {"x0": 0, "b": 1, "c": 1 << 16})  # x0 >= 0


async def _gelu_refused(ctx, dut):
    await stream_put(ctx, dut.cfg, {"b": 3, "c": 0, "one": 0, "m": 0, "e": 0})  # b >= 0


async def _layernorm_too_long(ctx, dut):
    for k in range(3):  # max_len = 2: the third beat is dropped
        await stream_put(ctx, dut.i, _row_beat(k, k == 2))


async def _residual_mismatch(ctx, dut):
    for port, last in ((dut.a, 1), (dut.r, 0)):
        ctx.set(port.valid, 1)
        ctx.set(port.payload, _row_beat(1, last))
    await ctx.tick().until(dut.a.ready)
    ctx.set(dut.a.valid, 0)
    ctx.set(dut.r.valid, 0)


async def _pim_gain_zero(ctx, dut):
    await stream_put(ctx, dut.cfg, {"reg": PimReg.GAIN, "value": 0})


async def _pim_weight(ctx, dut):
    await stream_put(ctx, dut.wr, {"row": 0, "col": 0, "w": -2})  # -2^(weight_bits-1)


async def _pim_unknown_reg(ctx, dut):
    # a code that names no register: the payload set as bits (no PimReg member is 6)
    ctx.set(dut.cfg.valid, 1)
    ctx.set(dut.cfg.payload.as_value(), 6 << dut.cfg.payload.shape()["reg"].offset)
    await ctx.tick().until(dut.cfg.ready)
    ctx.set(dut.cfg.valid, 0)


PIM_SMALL = dict(lanes=1, rows=1, cols=1, input_bits=2, weight_bits=2, cell_bits=1, enob=1,
                 adc_share=1, noise=False, faults=False, skip_zero=False)

#: A unit at small parameters, how to make it refuse something, and the flag that raises.
ERRORS = {
    "softmax": (lambda: Softmax(lanes=1, max_len=4, in_width=8, exp_width=17),
                _softmax_refused, SfuError.CONFIG),
    "gelu": (lambda: Gelu(lanes=1, in_width=4, out_width=4), _gelu_refused, SfuError.CONFIG),
    "layernorm": (lambda: LayerNorm(lanes=1, max_len=2, in_width=8, bias_width=8,
                                    out_width=4), _layernorm_too_long, SfuError.LENGTH),
    "residual": (lambda: ResidualAdd(lanes=1, a_width=4, r_width=4, out_width=4),
                 _residual_mismatch, SfuError.MISMATCH),
    "pim-config": (lambda: PimTile(**PIM_SMALL), _pim_gain_zero, PimFlag.CONFIG),
    "pim-unknown-reg": (lambda: PimTile(**PIM_SMALL), _pim_unknown_reg, PimFlag.CONFIG),
    "pim-weight": (lambda: PimTile(**PIM_SMALL), _pim_weight, PimFlag.WEIGHT),
}


def _run(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _check_sticky(dut, provoke, flag) -> None:
    """Provoke the refusal; the flag shows, stays for a few cycles, and is gone after one
    edge with ``error_clear`` high."""
    assert dut.signature.members["error"].flow == wiring.Out
    assert len(dut.error) == len(type(flag))
    assert dut.signature.members["error_clear"].flow == wiring.In
    assert len(dut.error_clear) == 1

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)  # every unit here has an output stream
        assert ctx.get(dut.error) == 0
        await provoke(ctx, dut)
        for _ in range(10):
            if ctx.get(dut.error):
                break
            await ctx.tick()
        assert ctx.get(dut.error) == flag
        for _ in range(5):
            await ctx.tick()
            assert ctx.get(dut.error) == flag
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        assert ctx.get(dut.error) == 0
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(dut.error) == 0

    _run(dut, bench)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_every_error_output_has_its_clear(name):
    unit = UNITS[name]
    members = inspect_only(unit.build(unit.defaults())).signature.members
    if "error" not in members:
        pytest.skip(f"{name} has no error output")
    assert members["error"].flow == wiring.Out
    assert members["error_clear"].flow == wiring.In and members["error_clear"].shape == 1


@pytest.mark.parametrize("case", list(ERRORS))
def test_error_flags_stay_until_cleared(case):
    build, provoke, flag = ERRORS[case]
    _check_sticky(build(), provoke, flag)


def test_a_flag_raised_while_clearing_stays():
    """``error_clear`` in the cycle another refusal is taken clears the old flag only."""
    dut = PimTile(**PIM_SMALL)

    async def bench(ctx):
        await _pim_weight(ctx, dut)
        assert ctx.get(dut.error) == PimFlag.WEIGHT
        ctx.set(dut.cfg.valid, 1)
        ctx.set(dut.cfg.payload, {"reg": PimReg.GAIN, "value": 0})
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.cfg.valid, 0)
        ctx.set(dut.error_clear, 0)
        assert ctx.get(dut.error) == PimFlag.CONFIG
        await ctx.tick()
        assert ctx.get(dut.error) == PimFlag.CONFIG

    _run(dut, bench)


# -- the example of docs/adding-a-unit.md ---------------------------------------------------


@pytest.fixture(scope="module")
def example():
    """The names the document's Python block defines, executed as a module."""
    text = (REPO / "docs" / "adding-a-unit.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    names = {"__name__": "adding_a_unit_example"}
    exec(compile(code, "docs/adding-a-unit.md", "exec"), names)
    return names


def test_example_parameters(example):
    clamp = example["Clamp"]
    assert inspect_only(clamp()).parameters == {"lanes": 4, "width": 8}
    assert clamp.width.__doc__ == "signed value width"
    for given in ({"lanes": 64, "width": 32}, {"width": 1}, {"lanes": "4"}, {"depth": 2}):
        with pytest.raises(ParamError) as built:
            clamp(**given)
        with pytest.raises(ParamError) as validated:
            clamp.validate_params(given)
        assert str(built.value) == str(validated.value)
    with pytest.raises(ParamError, match=r"lanes \* width must be at most 512 .* = 2048"):
        clamp(lanes=64, width=32)


def test_example_clamps_configures_and_flags(example):
    clamp, reg = example["Clamp"], example["ClampReg"]
    dut = clamp(lanes=4, width=4)
    _check_cfg(dut)
    values = list(range(-8, 8))
    got = []

    async def bench(ctx):
        await stream_put(ctx, dut.cfg, {"reg": reg.HI, "value": 3})
        await stream_put(ctx, dut.cfg, {"reg": reg.LO, "value": -2})
        for k in range(0, len(values), 4):
            await stream_put(ctx, dut.i, values[k:k + 4])
            beat = await stream_get(ctx, dut.o)
            got.extend(beat[j] for j in range(4))
        assert ctx.get(dut.error) == 0

    _run(dut, bench)
    assert got == [min(max(v, -2), 3) for v in values]

    async def refused(ctx, dut):
        await stream_put(ctx, dut.cfg, {"reg": reg.HI, "value": 0})
        await stream_put(ctx, dut.cfg, {"reg": reg.LO, "value": 1})  # lo > hi

    _check_sticky(clamp(lanes=1, width=4), refused, example["ClampError"].CONFIG)


def test_example_lints_clean(example, tmp_path):
    path = tmp_path / "clamp.v"
    path.write_text(verilog.convert(example["Clamp"](), name="clamp"))
    result = verilator_lint(path, "clamp")
    assert result.ok, result.log

"""What the tests share: the ``icarus`` marker (the test runs on Icarus Verilog, and is skipped
where it is not installed), and running a unit's cocotb testbench with the check that every
test the testbench declares ran and passed."""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from heterotron.sim.flows.runner import ENV_VERILATOR_OPT, SimResult, run_sim
from heterotron.sim.flows.toolchain import icarus_available
from heterotron.sim.flows.units import get_unit


def pytest_configure(config):
    # Verilator models compiled at -O0: a test's model runs for seconds, so the compile time
    # is what counts (about 40% less); a user's own setting wins.
    os.environ.setdefault(ENV_VERILATOR_OPT, "-O0")


def pytest_runtest_setup(item):
    if item.get_closest_marker("icarus") and not icarus_available():
        pytest.skip("Icarus Verilog (iverilog) is not installed")


def _is_cocotb_test(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "test"
            and isinstance(target.value, ast.Name) and target.value.id == "cocotb")


@functools.cache
def declared_tests(module: str) -> int:
    """How many ``@cocotb.test`` functions the testbench ``module`` declares (cocotb counts
    the skipped ones among its tests too)."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_bytes())
    return sum(1 for node in tree.body if isinstance(node, ast.AsyncFunctionDef)
               and any(_is_cocotb_test(d) for d in node.decorator_list))


def run_testbench(unit_name: str, params: dict[str, Any] | None = None, *,
                  overrides: dict[str, Any] | None = None, **options) -> SimResult:
    """Simulate ``unit_name`` with ``params`` (by default its defaults with ``overrides``,
    as ``--param`` would give them); ``options`` go to :func:`run_sim`. Fails, naming the
    unit, simulator, seed and parameters, unless every test of the testbench (or the one
    ``testcase``) ran and none failed."""
    unit = get_unit(unit_name)
    if params is None:
        params = unit.resolve(overrides={k: str(v) for k, v in (overrides or {}).items()})
    result = run_sim(unit, params, **options)
    want = 1 if options.get("testcase") else declared_tests(unit.testbench)
    assert result.tests == want and result.failed == 0, (
        f"{unit_name} testbench on {result.simulator}, seed {result.seed}, parameters "
        f"{json.dumps(result.params)}: {result.failed} of {result.tests} tests failed "
        f"({want} expected to run); see {result.results_xml}")
    return result


def run_accelerator_testbench(desc, **options) -> SimResult:
    """The accelerator's testbench (:mod:`heterotron.tb.accel`) on ``desc``; fails, naming
    the seed and description, unless every declared test ran and passed."""
    from heterotron.sim.flows.accel import TESTBENCH, run_accelerator

    result = run_accelerator(desc, **options)
    want = 1 if options.get("testcase") else declared_tests(TESTBENCH)
    assert result.tests == want and result.failed == 0, (
        f"accelerator testbench on {result.simulator}, seed {result.seed}, description "
        f"{json.dumps(desc.table())}: {result.failed} of {result.tests} tests failed "
        f"({want} expected to run); see {result.results_xml}")
    return result


@pytest.fixture
def accelerator_testbench(request):
    """:func:`run_accelerator_testbench`, on Icarus for a test marked ``icarus``."""
    simulator = "icarus" if request.node.get_closest_marker("icarus") else "verilator"
    return functools.partial(run_accelerator_testbench, simulator=simulator)


@pytest.fixture
def testbench(request):
    """:func:`run_testbench`, on Icarus for a test marked ``icarus``."""
    simulator = "icarus" if request.node.get_closest_marker("icarus") else "verilator"
    return functools.partial(run_testbench, simulator=simulator)

"""The SA tile's model against SCALE-Sim (``sim/scale/scalesim_check.py``,
``heterotron calibrate --scalesim``): SCALE-Sim gives what its source says, and the RTL's
cycles differ from it by what ``DIFFERENCES`` says, within bounds; without SCALE-Sim the
command says how to install it."""

from __future__ import annotations

import functools
import importlib.util
import sys

import pytest

from heterotron.scripts import cli
from heterotron.sim.scale import scalesim_check as sc

needs_scalesim = pytest.mark.skipif(
    importlib.util.find_spec("scalesim") is None,
    reason=f"SCALE-Sim is not installed (an optional extra): {sc.INSTALL_HINT}")

#: The fixed cost of one instruction of the SA tile (the command's trip, the checks, the
#: DONE's trip), in cycles: at least a few trips over the mesh, at most the fitted constant of
#: a LOAD (64.9 cycles in sim/data/perf_calibration.json).
FIXED_MIN, FIXED_MAX = 25, 65


@functools.cache
def _report():
    return sc.run(larger=False)


def _rtl_rows():
    return [x for x in _report()["rows"] if x["rtl"] is not None]


@needs_scalesim
def test_every_shipped_sa_gemm_is_checked():
    rows = _report()["rows"]
    # every SA array of the shipped runs, OS and WS, and each shape with the RTL's cycles
    assert {(x["rows"], x["cols"], x["dataflow"]) for x in rows} == {
        (2, 2, "os"), (4, 4, "os"), (4, 4, "ws")}
    assert len(rows) > 50
    assert all(x["rtl"] is not None for x in rows)
    assert sum(x["gemms"] for x in rows) > 500


@needs_scalesim
@pytest.mark.parametrize("shape", [(4, 8, "os", 20, 12, 30), (8, 4, "os", 20, 12, 30),
                                   (4, 8, "ws", 20, 12, 30), (8, 4, "ws", 20, 12, 30),
                                   (3, 5, "os", 7, 11, 13), (3, 5, "ws", 7, 11, 13)])
def test_scalesim_gives_its_closed_form_with_ideal_memory(shape):
    # non-square arrays: rows are SCALE-Sim's ArrayHeight (our M (OS) or K (WS) per fold)
    got = sc.scalesim_cycles([shape])[shape]
    assert got == {"cycles": sc.closed_form(*shape), "stalls": 0}


@needs_scalesim
def test_scalesim_on_the_shipped_shapes_is_compute_only():
    for x in _report()["rows"]:
        assert x["scalesim_stalls"] == 0, x
        assert x["scalesim"] == x["closed_form"], x


@needs_scalesim
def test_fill_and_drain_per_fold_is_the_whole_array_difference():
    # DIFFERENCES["fill"]: SCALE-Sim = the model's array count + F (R + C - 2) - 1
    for x in _report()["rows"]:
        fill = x["folds"] * (x["rows"] + x["cols"] - 2) - 1
        assert x["scalesim"] == x["array"] + fill, x


@needs_scalesim
def test_rtl_exceeds_scalesim_by_the_noc_and_the_instructions():
    for x in _rtl_rows():
        # SCALE-Sim counts neither loads nor result packets nor instructions
        assert x["rtl"] > x["scalesim"], x
        # at least: the LOADs' link cycles, then the longer of the array's work and the
        # result packets, and a few trips per instruction
        low = x["links"] + max(x["array"], x["packets"]) + FIXED_MIN * x["instructions"]
        # at most: all of them one after the other and the fitted fixed cost per instruction
        high = x["links"] + x["array"] + x["packets"] + FIXED_MAX * x["instructions"]
        assert low <= x["rtl"] <= high, x


@needs_scalesim
def test_the_gap_closes_where_the_array_work_dominates():
    # the largest reduction on the smallest array is the most compute-bound shipped GEMM:
    # there the RTL is within 1.5x of SCALE-Sim; the smallest GEMMs are many times over it
    rows = _rtl_rows()
    big = max(rows, key=lambda x: x["array"])
    assert big["rtl_ratio"] < 1.5, big
    small = min(rows, key=lambda x: x["scalesim"])
    assert small["rtl_ratio"] > 5, small


@needs_scalesim
def test_table_and_command(monkeypatch, capsys):
    text = sc.format_check(_report())
    for word in ("SCALE-Sim", "mdl/SS", "RTL/SS", *sc.DIFFERENCES):
        assert word in text
    assert len(text.splitlines()) > len(_report()["rows"])
    monkeypatch.setattr(sc, "run", lambda larger=True: _report())
    assert cli.main(["calibrate", "--scalesim"]) == 0
    assert capsys.readouterr().out == text


def test_missing_scalesim_says_how_to_install(monkeypatch, capsys):
    for name in [n for n in sys.modules if n == "scalesim" or n.startswith("scalesim.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "scalesim", None)
    with pytest.raises(sc.ScaleSimMissing, match=r"pip install 'heterotron\[scalesim\]'"):
        sc.run()
    assert cli.main(["calibrate", "--scalesim"]) == 2
    err = capsys.readouterr().err
    assert "SCALE-Sim" in err and "pip install 'heterotron[scalesim]'" in err

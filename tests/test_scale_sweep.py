"""Design-space sweeps on Dask (``heterotron sweep``): the space parser and its refusals, the
axes on a base table, the tiers re-placement, and real sweeps on a LocalCluster whose rows must
equal the scale model called directly, with the infeasible points recorded and the Pareto front
checked independently.

The first sweep test starts its own 2-worker LocalCluster (the default path); the later ones
share one 2-worker cluster (:func:`scheduler`, created after that test) and reach it by address,
``Client(address)``, as ``--scheduler`` does."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import cloudpickle
import pytest
import tomllib

from heterotron.hdl.accelerator import describe
from heterotron.scripts import cli
from heterotron.scripts.sweep_cmd import load_space
from heterotron.sim.golden.compiler import CompileError
from heterotron.sim.scale.model import RTL_MAX_CYCLES, Assumptions, project
from heterotron.sim.scale.runs import load_runs
from heterotron.sim.scale.sweep import (
    EVALUATORS,
    SpaceError,
    apply_point,
    evaluate,
    evaluate_rtl,
    format_sweep,
    parse_space,
    place,
    retier,
    run_sweep,
    write_outputs,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _config(name: str) -> dict:
    return tomllib.loads((CONFIGS / f"{name}.toml").read_text())


BASE = _config("scale-2d")


def _doc(axes, model=None, **top) -> dict:
    return {"model": {"workload": "minilm", "tokens": 16, **(model or {})},
            "accelerator": {"base": "scale-2d", "axes": axes}, **top}


def _space(axes, model=None):
    return parse_space(_doc(axes, model), BASE, name="t", source="test",
                       base_source="scale-2d")


def _dominated(p, rows) -> bool:
    return any(q["latency_s"] <= p["latency_s"] and q["energy_high_j"] <= p["energy_high_j"]
               and (q["latency_s"] < p["latency_s"] or q["energy_high_j"] < p["energy_high_j"])
               for q in rows)


def _check_front(result) -> None:
    """The front is exactly the feasible rows no other feasible row dominates."""
    ok = [r for r in result["rows"] if r["feasible"]]
    want = {r["index"] for r in ok if not _dominated(r, ok)}
    assert set(result["front"]) == want and want


# --- the space -------------------------------------------------------------------------------


def test_the_shipped_space_and_its_product():
    space = load_space(str(CONFIGS / "sweep-small.toml"))
    assert (space.name, space.workload, space.tokens) == ("sweep-small", "minilm", 16)
    assert space.assumptions == Assumptions.from_table(BASE["model"])
    assert space.size == len(space.points()) == 8
    big = _space({"pim.count": [2, 5, 11], "pim.enob": [5, 6, 7], "tiers": [1, 2]})
    pts = big.points()
    assert big.size == len(pts) == 18
    assert len({tuple(p.items()) for p in pts}) == 18
    assert pts[0] == {"pim.count": 2, "pim.enob": 5, "tiers": 1}
    assert pts[1] == {"pim.count": 2, "pim.enob": 5, "tiers": 2}     # the last axis fastest
    # a dotted TOML key (a nested table) is the same axis as a quoted one
    dotted = _space({"pim": {"count": [2, 11]}, "tiers": [1, 2]})
    assert dotted.axes == {"pim.count": (2, 11), "tiers": (1, 2)}
    # the space's [model] over the base's
    assert _space({"tiers": [1]}, {"clock_mhz": 250.0}).assumptions.clock_mhz == 250.0


def test_a_tile_axis_sets_every_tile_of_its_kind_and_nothing_else():
    base = BASE["accelerator"]
    before = copy.deepcopy(base)
    t = apply_point(base, {"sa.rows": 4})
    assert base == before                                   # the base is not changed
    assert {k: v for k, v in t.items() if k != "tile"} == {
        k: v for k, v in base.items() if k != "tile"}
    assert len(t["tile"]) == len(base["tile"])
    n_sa = 0
    for new, old in zip(t["tile"], base["tile"], strict=True):
        if old["kind"] == "sa":
            n_sa += 1
            assert new == {**old, "rows": 4}
        else:
            assert new == old
    assert n_sa == 2
    describe(t)
    # a description-wide axis changes the one key
    t = apply_point(base, {"accelerator.flit_width": 64})
    assert t == {**base, "flit_width": 64}
    # pim.count keeps the first n PiM tiles, where they were, and every other tile
    t = apply_point(base, {"pim.count": 3})
    pims = [x for x in base["tile"] if x["kind"] == "pim"]
    assert [x for x in t["tile"] if x["kind"] == "pim"] == pims[:3]
    assert [x for x in t["tile"] if x["kind"] != "pim"] == [
        x for x in base["tile"] if x["kind"] != "pim"]


@pytest.mark.parametrize("n_pim", [1, 2, 11])
@pytest.mark.parametrize("tiers", [1, 2, 3, 4])
def test_tiers_replace_the_same_tiles_inside_the_new_mesh(n_pim, tiers):
    t0 = apply_point(BASE["accelerator"], {"pim.count": n_pim})
    try:
        t = retier(t0, tiers)
    except SpaceError as exc:                        # only when a tier would stay empty
        assert (n_pim, tiers) == (1, 4) and "leaving a tier empty" in str(exc)
        return
    nx, ny, nz = t["nx"], t["ny"], t["nz"]
    assert nz == tiers
    at = [tuple(x["at"]) for x in t["tile"]]
    assert all(0 <= x < nx and 0 <= y < ny and 0 <= z < nz for x, y, z in at)
    assert len(set(at)) == len(at)                   # no two tiles on one node
    assert {z for _, _, z in at} == set(range(nz))   # every tier used
    strip = [{k: v for k, v in x.items() if k != "at"} for x in t["tile"]]
    assert strip == [{k: v for k, v in x.items() if k != "at"} for x in t0["tile"]]
    assert t0["tile"][0]["at"] == [0, 0, 0]          # t0 not changed
    describe(t)


def test_placement_fills_x_then_y_then_z():
    assert place(16, 1) == ((4, 4, 1), [[i % 4, i // 4, 0] for i in range(16)])
    mesh, at = place(16, 2)
    assert mesh == (4, 2, 2) == tuple(_config("scale-3d")["accelerator"][k]
                                      for k in ("nx", "ny", "nz"))
    assert at[:9] == [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [0, 1, 0], [1, 1, 0],
                      [2, 1, 0], [3, 1, 0], [0, 0, 1]]
    # the 2D base is already placed this way: re-placing it on one tier changes nothing
    assert retier(BASE["accelerator"], 1) == BASE["accelerator"]


@pytest.mark.parametrize("doc, message", [
    (_doc({"sa.speed": [1]}), "axes.sa.speed: sa tiles have no parameter 'speed'; known: "),
    (_doc({"foo": [1]}), "axes.foo: unknown axis; axes are tiers, pim.count, "),
    (_doc({"pim.enob": []}), "axes.pim.enob is an empty list"),
    (_doc({"pim.enob": 5}), "axes.pim.enob must be a list of values"),
    (_doc({"pim.enob": [5, 5]}), "axes.pim.enob lists 5 twice"),
    (_doc({"pim.enob": [5, 40]}), "axes.pim.enob = 40: the description refuses it: pim tiles: "
                                  "enob must be"),
    (_doc({"pim.count": [0, 2]}), "axes.pim.count = 0: must be an integer in [1, 11]"),
    (_doc({"accelerator.nx": [2]}), "axes.accelerator.nx: the mesh follows the placement: "
                                    "sweep tiers instead"),
    (_doc({"accelerator.flit_width": [48]}), "axes.accelerator.flit_width = 48: the "
                                             "description refuses it"),
    (_doc({"tiers": [5]}), "axes.tiers = 5: tiers must be an integer in [1, 4] (the mesh's nz)"),
    (_doc({"tiers": [0]}), "axes.tiers = 0: tiers must be an integer in [1, 4]"),
    (_doc({}), "accelerator.axes is required"),
    (_doc({"tiers": [1]}, {"workload": "gpt"}), "model.workload must be one of minilm, "
                                                "bert-base, small, not 'gpt'"),
    (_doc({"tiers": [1]}, {"tokens": 0}), "model.tokens must be an integer in [1, 4096]"),
    (_doc({"tiers": [1]}, {"clock": 1}), "model.clock: unknown key; known: workload, tokens"),
    (_doc({"tiers": [1]}, {"node_nm": 1.0}), "model.node_nm must be a number in [7, 130]"),
    (_doc({"tiers": [1]}, sweep={}), "[sweep]: unknown table"),
])
def test_a_bad_space_is_refused_naming_the_key(doc, message):
    with pytest.raises(SpaceError) as info:
        parse_space(doc, BASE, name="t")
    assert message in str(info.value)


def test_a_missing_kind_is_refused():
    base = copy.deepcopy(BASE)
    base["accelerator"]["tile"] = [t for t in base["accelerator"]["tile"] if t["kind"] != "sfu"]
    with pytest.raises(SpaceError, match=r"axes\.sfu\.lanes: the base description has no sfu "
                                         r"tile"):
        parse_space(_doc({"sfu.lanes": [2, 4]}), base, name="t")


# --- sweeps ----------------------------------------------------------------------------------


def test_sweep_small_on_a_local_cluster_matches_the_model(tmp_path):
    space = load_space(str(CONFIGS / "sweep-small.toml"))
    result = run_sweep(space, workers=2, progress=False)
    assert result["cluster"] == {"scheduler": "local", "workers": 2}
    rows = result["rows"]
    assert [r["index"] for r in rows] == list(range(8))
    assert [r["point"] for r in rows] == space.points()
    assert all(r["status"] == "ok" and r["feasible"] for r in rows), rows
    # the points differ, so rows attached to the wrong point would not match below
    assert len({(r["latency_s"], r["energy_high_j"]) for r in rows}) == 8
    for r in rows:
        p = project(describe(space.table(r["point"])), "minilm", tokens=16,
                    assumptions=space.assumptions)
        assert r["latency_s"] == p["latency_s"], r["point"]
        assert [r["energy_low_j"], r["energy_high_j"]] == p["energy_j"], r["point"]
        assert [r["edp_low_js"], r["edp_high_js"]] == p["edp_js"], r["point"]
        assert r["peak_temperature_c"] == p["peak_temperature_c"], r["point"]
        assert r["bounding_tile"] == p["bounding_tile"], r["point"]
        assert r["cycles_per_layer"] == p["cycles_per_layer"], r["point"]
    _check_front(result)
    paths = write_outputs(result, tmp_path / "out")
    assert json.loads(paths["json"].read_text()) == result
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = format_sweep(result)
    assert "Pareto front" in text and f"{len(result['front'])} of 8 feasible" in text


@pytest.fixture(scope="module")
def scheduler():
    """The address of a 2-worker LocalCluster's scheduler, shared by the tests below."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def test_infeasible_points_are_recorded_and_the_sweep_goes_on(scheduler):
    # SFU max_row 128 is below MiniLM's hidden size (a CompileError); 6 tiles (one PiM tile)
    # cannot fill 4 tiers (a placement refusal); only 11 PiM tiles with max_row 768 runs
    space = _space({"pim.count": [1, 11], "sfu.max_row": [128, 768], "tiers": [4]})
    result = run_sweep(space, scheduler=scheduler, progress=False)
    assert result["cluster"] == {"scheduler": scheduler, "workers": 2}
    by = {(r["point"]["pim.count"], r["point"]["sfu.max_row"]): r for r in result["rows"]}
    for key in ((1, 128), (1, 768)):
        assert by[key]["status"] == "infeasible" and not by[key]["feasible"]
        assert "leaving a tier empty" in by[key]["error"]
    bad = by[(11, 128)]
    assert bad["status"] == "infeasible" and not bad["feasible"]
    with pytest.raises(CompileError) as info:
        project(describe(space.table(bad["point"])), "minilm", tokens=16,
                assumptions=space.assumptions)
    assert bad["error"] == f"minilm does not compile: {info.value}"
    assert "max_row" in bad["error"]
    good = by[(11, 768)]
    assert good["status"] == "ok" and good["latency_s"] > 0
    assert result["counts"] == {"points": 4, "feasible": 1, "infeasible": 3, "errors": 0}
    assert result["front"] == [good["index"]]
    assert "leaving a tier empty" in format_sweep(result)


def toy_evaluator(table, workload, tokens, assumptions):
    """A stand-in evaluator: wider flits are faster and dearer; 128 raises."""
    w = table["flit_width"]
    if w == 128:
        raise RuntimeError("no model for 128-bit flits")
    return {"feasible": True, "latency_s": 32 / w, "energy_high_j": w / 32.0,
            "peak_temperature_c": 40.0 + w / 32}


def test_another_evaluator_runs_through_the_same_sweep(scheduler, tmp_path):
    space = _space({"accelerator.flit_width": [32, 64, 128, 256]})
    # the workers import the package, not this test module: send the function by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        result = run_sweep(space, evaluator=toy_evaluator, scheduler=scheduler,
                           progress=False)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert result["evaluator"].endswith("toy_evaluator")
    statuses = [r["status"] for r in result["rows"]]
    assert statuses == ["ok", "ok", "error", "ok"]
    assert "RuntimeError: no model for 128-bit flits" in result["rows"][2]["error"]
    assert [r["latency_s"] for r in result["rows"] if r["feasible"]] == [1.0, 0.5, 0.125]
    assert sorted(result["front"]) == [0, 1, 3]                 # a pure trade-off
    _check_front(result)
    write_outputs(result, tmp_path)                             # log axes: a range of 8x
    assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_cli_sweep_writes_the_files(scheduler, tmp_path, capsys):
    space = tmp_path / "two.toml"
    space.write_text(f'[model]\nworkload = "minilm"\ntokens = 8\n\n[accelerator]\n'
                     f'base = "{CONFIGS / "scale-2d.toml"}"\n\n'
                     '[accelerator.axes]\npim.enob = [5, 7]\n')
    out = tmp_path / "out"
    code = cli.main(["sweep", "--space", str(space), "--scheduler", scheduler, "-o", str(out),
                     "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    written = json.loads((out / "sweep.json").read_text())
    assert json.loads(stdout) == written
    assert written["space"]["name"] == "two" and written["tokens"] == 8
    assert [r["point"] for r in written["rows"]] == [{"pim.enob": 5}, {"pim.enob": 7}]
    assert all(r["feasible"] for r in written["rows"])
    assert written["reproduce"]["command"].startswith(f"heterotron sweep --space {space}")
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("text, message", [
    ('[accelerator]\nbase = "scale-2d"\n[accelerator.axes]\npim.enob = [5, 99]\n',
     "axes.pim.enob = 99: the description refuses it"),
    ('[accelerator]\n[accelerator.axes]\npim.enob = [5]\n', "accelerator.base is required"),
    ('[accelerator]\nbase = "nonesuch"\n[accelerator.axes]\npim.enob = [5]\n',
     "accelerator.base: no configuration 'nonesuch'"),
])
def test_cli_refuses_a_bad_space_with_exit_2(tmp_path, capsys, text, message):
    space = tmp_path / "bad.toml"
    space.write_text(text)
    code = cli.main(["sweep", "--space", str(space), "-o", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("heterotron: error: ") and message in err
    assert not (tmp_path / "o").exists()


# --- the RTL evaluator -----------------------------------------------------------------------


def test_the_rtl_evaluator_refuses_what_it_cannot_simulate():
    """No simulation here: a refused description and a layer past RTL_MAX_CYCLES are
    infeasible points with their reasons, found before any Verilator build."""
    refused = evaluate_rtl({**copy.deepcopy(BASE["accelerator"]), "flit_width": 48}, "small", 2,
                           Assumptions())
    assert not refused["feasible"] and "the description refuses it" in refused["error"]
    big = evaluate_rtl(copy.deepcopy(BASE["accelerator"]), "minilm", 128, Assumptions())
    predicted = project(describe(BASE["accelerator"]), "minilm", tokens=128)["cycles_per_layer"]
    assert predicted > RTL_MAX_CYCLES
    assert not big["feasible"]
    assert big["error"] == (f"minilm at 128 tokens is too large for the RTL: the model predicts "
                            f"{predicted:,} cycles a layer, the limit is {RTL_MAX_CYCLES:,} "
                            "(about a minute of simulation)")
    assert EVALUATORS == {"model": evaluate, "rtl": evaluate_rtl}


@pytest.mark.slow  # two Verilator builds of encoder-small variants and their runs: ~4 min
def test_an_rtl_sweep_measures_each_point_and_scores_the_model(tmp_path):
    """The RTL evaluator through a real sweep: the base point's layer takes exactly the cycles
    of the shipped calibration run of the same description and workload (recorded earlier by
    runs.collect), the other point differs, and the model is within 10% of both."""
    base = _config("encoder-small")
    space = parse_space({"model": {"workload": "small", "tokens": 2},
                         "accelerator": {"base": "encoder-small",
                                         "axes": {"sfu.lanes": [2, 4]}}},
                        base, name="rtl", source="test", base_source="encoder-small")
    result = run_sweep(space, evaluator=evaluate_rtl, workers=1, progress=False)
    assert result["counts"] == {"points": 2, "feasible": 2, "infeasible": 0, "errors": 0}
    assert "--evaluator rtl" in result["reproduce"]["command"]
    lanes2, lanes4 = result["rows"]
    desc = describe(base["accelerator"])
    wl = {"hidden": 32, "heads": 2, "intermediate": 32, "tokens": 2, "seed": 7}
    shipped = [r for r in load_runs() if r["config_hash"] == f"{desc.config_hash:#010x}"
               and r["workload"] == wl]
    assert len(shipped) == 1 and lanes2["point"] == {"sfu.lanes": 2}
    assert lanes2["cycles_per_layer"] == shipped[0]["cycles"]
    assert lanes4["cycles_per_layer"] != lanes2["cycles_per_layer"]
    for r in (lanes2, lanes4):
        assert abs(r["model_error"]) <= 0.10
        assert r["model_error"] == pytest.approx(
            r["model_cycles_per_layer"] / r["cycles_per_layer"] - 1)
    assert "the model against the RTL: worst cycle error" in format_sweep(result)

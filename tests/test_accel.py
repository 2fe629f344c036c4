"""The whole accelerator: generated from its description, lint clean, and its cocotb
testbench (random GEMM programs, bad programs and bad frames through the host port, every
tensor against the golden interpreter) on the shipped descriptions and on sampled valid
ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract.accel import DescriptionError, Port
from heterotron.scripts import cli
from heterotron.sim.flows.accel import generate_accelerator, generate_sim_accelerator

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED = ["accel-2d", "accel-3d"]


def shipped(name: str):
    return describe(tomllib.loads((CONFIGS / f"{name}.toml").read_text())["accelerator"])


def sample_description(rng: np.random.Generator):
    """A random valid description, small enough to simulate in seconds: a 2x2 or 3x2 mesh
    (sometimes two tiers), 32- or 64-bit flits, a control tile, one or two scratchpads and
    one or two SA tiles of random shapes, dataflows and widths, placed at random."""
    for _ in range(200):
        nx, ny, nz = int(rng.integers(2, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
        nodes = [(x, y, z) for z in range(nz) for y in range(ny) for x in range(nx)]
        n_mem, n_sa = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        if 1 + n_mem + n_sa > len(nodes):
            continue
        at = [list(nodes[i]) for i in rng.permutation(len(nodes))[:1 + n_mem + n_sa]]
        tiles = [{"kind": "control", "at": at[0]}]
        tiles += [{"kind": "memory", "at": a, "kbytes": int(rng.choice([16, 32]))}
                  for a in at[1:1 + n_mem]]
        for a in at[1 + n_mem:]:
            requant = bool(rng.integers(0, 2))
            tiles.append({"kind": "sa", "at": a, "rows": int(rng.integers(1, 5)),
                          "cols": int(rng.choice([1, 2, 4])),
                          "dataflow": str(rng.choice(["os", "ws"])),
                          "a_signed": bool(rng.integers(0, 2)),
                          "max_m": 16, "max_k": 16, "max_n": 16, "requant": requant})
        table = {"nx": nx, "ny": ny, "nz": nz, "flit_width": int(rng.choice([32, 64])),
                 "max_packet": int(rng.choice([3, 16, 64])), "tile": tiles}
        try:
            return describe(table)
        except DescriptionError:
            continue
    raise AssertionError("no valid description in 200 draws")


def test_generate_accelerator_writes_verilog_and_the_sidecar(tmp_path, capsys):
    code = cli.main(["generate", "accelerator", "--config", "accel-2d", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    side = json.loads((tmp_path / "accelerator.json").read_text())
    desc = shipped("accel-2d")
    assert side["config_hash"] == desc.config_hash
    assert {p["name"] for p in side["verilog_ports"]} >= {
        "rx__valid", "rx__payload", "tx__ready", "running", "error", "watchdog"}
    # the contract's operand port numbers keep their own key
    assert side["ports"] == {p.name.lower(): int(p) for p in Port}
    assert "module accelerator" in (tmp_path / "accelerator.v").read_text()
    assert f"{desc.config_hash:#010x}" in out


def test_bad_description_is_refused_with_every_problem(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[accelerator]\nnx = 2\nny = 1\n[[accelerator.tile]]\nkind = "sa"\n'
                   'at = [0, 0]\nrows = 0\n[[accelerator.tile]]\nkind = "sa"\nat = [0, 0]\n')
    code = cli.main(["generate", "accelerator", "--config", str(cfg), "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    for line in ("rows must be", "node [0, 0, 0] already holds tile 0", "no control tile",
                 "no memory tile"):
        assert line in err, err


@pytest.mark.parametrize("name", [pytest.param("accel-2d"),
                                  pytest.param("accel-3d", marks=pytest.mark.slow),
                                  pytest.param("encoder-small", marks=pytest.mark.slow)])
def test_accelerator_verilog_is_verilator_clean(name):
    from heterotron.sim.flows.lint import verilator_lint

    gen = generate_accelerator(shipped(name))
    vl = verilator_lint(gen.verilog, gen.module)
    assert vl.ok, vl.log[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", [*SHIPPED, "encoder-small"])
def test_accelerator_synthesises_without_latches(name):
    """Yosys synthesis: no latches, undriven or multiply-driven nets (1-2.5 min each)."""
    from heterotron.sim.flows.lint import yosys_check

    gen = generate_accelerator(shipped(name))
    ys = yosys_check(gen.verilog, gen.module)
    assert ys.ok, ys.problems or ys.log[-3000:]


def test_cocotb_2d(accelerator_testbench):
    accelerator_testbench(shipped("accel-2d"), seed=11, vectors=2)


def test_gated_clocks_only_in_the_harness():
    """The gated clocks of :mod:`heterotron.hdl.simgate` are in the simulation harness's
    Verilog (a falling-edge enable register and a gated clock per gated unit), never in the
    accelerator's that ``heterotron generate`` writes."""
    desc = shipped("accel-2d")
    design = generate_accelerator(desc).verilog.read_text()
    assert "negedge" not in design and "_tick" not in design
    harness = generate_sim_accelerator(desc).verilog.read_text()
    # two systolic arrays, a requantizer, six routers (3 x 2) on each of the three planes
    assert harness.count("always @(negedge") == 2 + 1 + 18
    assert "core_clk = core_neg_clk & core_tick" in harness


def test_cocotb_2d_in_the_harness(accelerator_testbench):
    """accel-2d's random programs (GEMM chains on the OS tile with requantisation and on the
    WS tile, moves, barriers, under gaps and back-pressure) in the simulation harness, where
    idle units and routers run on gated clocks (:mod:`heterotron.hdl.simgate`): every tensor
    still equal to the golden interpreter's."""
    accelerator_testbench(shipped("accel-2d"), seed=14, vectors=3,
                          testcase="test_random_programs", harness=True)


@pytest.mark.slow
def test_cocotb_3d(accelerator_testbench):
    """The 3D description (two tiers, 64-bit flits): about 2 minutes."""
    accelerator_testbench(shipped("accel-3d"), seed=12, vectors=3)


@pytest.mark.slow
@pytest.mark.parametrize("draw", [1, 2, 3])
def test_cocotb_sampled_descriptions(accelerator_testbench, draw):
    accelerator_testbench(sample_description(np.random.default_rng(draw)), seed=draw,
                          vectors=4)


def test_sim_accelerator_command(capsys):
    """The README's main job: ``heterotron sim accelerator`` on the default configuration
    (which has no [accelerator] table, so accel-2d), one random program."""
    code = cli.main(["sim", "accelerator", "--seed", "3", "--vectors", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("PASS accelerator from ") and "accel-2d" in out
    from conftest import declared_tests

    from heterotron.sim.flows.accel import TESTBENCH

    assert f"{declared_tests(TESTBENCH)} tests, 0 failed" in out

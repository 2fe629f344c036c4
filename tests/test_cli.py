"""The ``heterotron`` command: list, generate, lint and sim, and its handling of bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from heterotron.hdl.contract.params import inspect_only
from heterotron.hdl.requantizer import Requantizer
from heterotron.scripts.cli import main
from heterotron.sim.flows.build import ENV_BUILD_DIR
from heterotron.sim.flows.units import get_unit


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def verilog_ports(text: str) -> dict[str, tuple[str, int]]:
    """Port directions and widths as the Verilog declares them."""
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);",
                                           text, flags=re.M):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


def test_list_shows_units_parameters_and_configs(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "requantizer" in out
    for p in get_unit("requantizer").params:
        assert p.name in out
    for config in ("default", "small", "per-channel"):
        assert config in out


@pytest.mark.parametrize("extra", [[], ["--param", "lanes=3", "--param", "residual=true"],
                                   ["--config", "per-channel"]])
def test_generate_writes_verilog_and_a_matching_sidecar(capsys, tmp_path, extra):
    code, out, _ = run_cli(capsys, "generate", "requantizer", "-o", str(tmp_path), *extra)
    assert code == 0, out
    text = (tmp_path / "requantizer.v").read_text()
    meta = json.loads((tmp_path / "requantizer.json").read_text())
    assert "module requantizer(" in text
    assert meta["unit"] == "requantizer"
    # the latency of the unit built with these parameters (measured in test_requantizer.py)
    assert meta["latency_cycles"] == inspect_only(Requantizer(**meta["parameters"])).latency
    declared = verilog_ports(text)
    assert {p["name"] for p in meta["ports"]} == set(declared)
    for p in meta["ports"]:
        assert declared[p["name"]] == (p["direction"], p["width"]), p["name"]
    lanes = meta["parameters"]["lanes"]
    out_port = next(p for p in meta["ports"] if p["name"] == "o__payload")
    assert out_port["width"] == lanes * meta["parameters"]["out_width"]


def test_config_file_then_param_override(capsys, tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[requantizer]\nlanes = 2\nchannels = 8\nout_width = 6\n")
    code, _, _ = run_cli(capsys, "generate", "requantizer", "--config", str(cfg),
                         "--param", "out_width=5", "-o", str(tmp_path / "o"))
    assert code == 0
    params = json.loads((tmp_path / "o" / "requantizer.json").read_text())["parameters"]
    assert (params["lanes"], params["channels"], params["out_width"]) == (2, 8, 5)


def test_channels_follow_lanes_unless_given(capsys, tmp_path):
    run_cli(capsys, "generate", "requantizer", "--param", "lanes=6", "-o", str(tmp_path))
    params = json.loads((tmp_path / "requantizer.json").read_text())["parameters"]
    assert params["channels"] == 6


@pytest.mark.parametrize("argv, message", [
    (["generate", "nonesuch", "-o", "x"], "unknown unit 'nonesuch'; known units: requantizer"),
    (["generate", "requantizer", "--param", "lanes=99", "-o", "x"],
     "lanes must be an integer in [1, 64], not 99"),
    (["generate", "requantizer", "--param", "lanes=four", "-o", "x"],
     "lanes must be an integer in [1, 64], not 'four'"),
    (["generate", "requantizer", "--param", "speed=3", "-o", "x"],
     "requantizer has no parameter 'speed'"),
    (["generate", "requantizer", "--param", "lanes", "-o", "x"],
     "--param expects name=value, not 'lanes'"),
    (["generate", "requantizer", "--config", "nonesuch", "-o", "x"],
     "no configuration 'nonesuch'"),
    (["lint", "requantizer", "--param", "channels=7"],
     "channels must be an integer in [1, 4096] and a multiple of lanes (= 4), not 7"),
    (["sim", "requantizer", "--param", "max_shift=200"],
     "max_shift must be an integer in [1, 127], not 200"),
    (["sim", "requantizer", "--vectors", "0"], "--vectors must be a positive integer"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.strip() == f"heterotron: error: {message}" or (
        err.startswith("heterotron: error: ") and message in err and err.count("\n") == 1)


@pytest.mark.parametrize("content, message", [
    ("[requantizer\nlanes=2", "not valid TOML"),
    ("[accelerater]\nlanes = 2\n", "unknown unit [accelerater]"),
    ("requantizer = 3\n", "must be a table"),
    ('[requantizer]\nlanes = "2"\n', "lanes must be an integer in [1, 64], not '2'"),
])
def test_bad_config_files(capsys, tmp_path, content, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    code, _, err = run_cli(capsys, "generate", "requantizer", "--config", str(cfg), "-o", "x")
    assert code == 2 and message in err and err.count("\n") == 1


def test_console_script_reports_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "heterotron.scripts.cli", "generate",
                           "requantizer", "--param", "in_width=64", "-o", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    want = "heterotron: error: in_width must be an integer in [2, 48], not 64"
    assert proc.stderr.strip() == want


def test_sim_command_passes_bit_exact(capsys):
    """The issue's acceptance command: heterotron sim requantizer --seed 7 --param lanes=3."""
    code, out, _ = run_cli(capsys, "sim", "requantizer", "--seed", "7", "--param", "lanes=3")
    assert code == 0, out
    assert "PASS requantizer" in out and "seed 7: 2 tests, 0 failed" in out


def test_sim_waves_writes_a_waveform(capsys):
    code, out, _ = run_cli(capsys, "sim", "requantizer", "--param", "lanes=1", "--waves",
                           "--vectors", "100", "--seed", "3")
    assert code == 0, out
    wave = out.split("waves:")[1].split()[0]
    with open(wave) as f:
        head = f.read(4096)
    assert "$timescale" in head and "$var" in head


def test_unchanged_builds_are_reused(tmp_path, monkeypatch, testbench):
    """Second run with the same parameters: same Verilog file untouched, no simulator build."""
    from heterotron.sim.flows.build import generate

    monkeypatch.setenv(ENV_BUILD_DIR, str(tmp_path))
    unit = get_unit("requantizer")
    params = unit.resolve(overrides={"lanes": "2", "out_width": "7"})
    first = generate(unit, params)
    stamp = first.verilog.stat().st_mtime_ns
    assert generate(unit, params).verilog == first.verilog
    assert first.verilog.stat().st_mtime_ns == stamp
    other = generate(unit, unit.resolve(overrides={"lanes": "2", "out_width": "6"}))
    assert other.verilog != first.verilog
    runs = [testbench("requantizer", params, seed=s, vectors=200) for s in (1, 2)]
    assert all(r.ok for r in runs)
    assert runs[0].build_seconds > 0 and runs[1].build_seconds == 0.0


def test_cache_sees_the_golden_constants_the_rtl_imports(monkeypatch):
    """The generator's digest covers every file its output depends on: all of hdl/ and the
    golden modules the components import constants from (a changed Softmax normalisation or
    PiM ADC constant must not hand back stale Verilog)."""
    from pathlib import Path

    from heterotron.sim.flows import build

    names = {f"{p.parent.name}/{p.name}" for p in build.generator_sources()}
    assert {"hdl/softmax.py", "hdl/rowstream.py", "contract/numerics.py", "contract/pim.py",
            "contract/params.py"} <= names
    assert not any(n.startswith("tb/") or n.startswith("scripts/") for n in names)
    before = build.source_digest()
    intops = next(p for p in build.generator_sources() if p.name == "numerics.py")
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda self: real(self) + (b"# edited" if self == intops else b""))
    assert build.source_digest() != before

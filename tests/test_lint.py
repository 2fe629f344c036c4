"""The Verilog we ship is lint-clean, and the lint really catches what it claims to."""

from __future__ import annotations

import pytest

from heterotron.scripts.cli import main
from heterotron.scripts.common import load_config
from heterotron.sim.flows.build import generate
from heterotron.sim.flows.lint import verilator_lint, yosys_check
from heterotron.sim.flows.units import get_unit


@pytest.mark.parametrize("config", ["default", "small", "per-channel"])
def test_shipped_configurations_lint_clean(capsys, config):
    code = main(["lint", "requantizer", "--config", config])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count(": clean") == 2
    assert "macc" in out or "mul" in out  # the cell report lists the multipliers


def test_lint_a_generated_file(capsys, tmp_path):
    assert main(["generate", "requantizer", "--param", "lanes=5", "-o", str(tmp_path)]) == 0
    code = main(["lint", "requantizer", "--verilog", str(tmp_path / "requantizer.v")])
    out = capsys.readouterr().out
    assert code == 0 and out.count(": clean") == 2
    assert "lanes=5" in out and str(tmp_path) in out
    assert main(["lint", "requantizer", "--verilog", str(tmp_path / "missing.v")]) == 2


def test_lint_edge_parameters_clean():
    """Single lane / single group (no address ports) and the widest setting."""
    unit = get_unit("requantizer")
    for overrides in ({"lanes": "1"}, {"lanes": "2", "in_width": "48", "max_shift": "127",
                                       "residual": "true", "res_width": "48"}):
        gen = generate(unit, unit.resolve(overrides=overrides))
        vl = verilator_lint(gen.verilog, gen.module)
        assert vl.ok, vl.log
        ys = yosys_check(gen.verilog, gen.module)
        assert ys.ok, ys.log[-2000:]


@pytest.mark.parametrize("unit_name, overrides", [
    ("systolic", {"rows": "1", "cols": "1", "dataflow": "os", "max_k": "16"}),
    ("systolic", {"rows": "1", "cols": "1", "dataflow": "ws", "max_k": "16"}),
    ("systolic", {"rows": "5", "cols": "3", "dataflow": "ws", "a_signed": "false"}),
    ("systolic", {"dataflow": "os"}),
    ("gemm", {"rows": "1", "cols": "1", "dataflow": "os", "max_m": "2", "max_k": "2",
              "max_n": "2"}),
    ("gemm", {"rows": "2", "cols": "2", "dataflow": "ws", "max_m": "3", "max_k": "255",
              "max_n": "7"}),
    ("gemm", {"rows": "1", "cols": "1", "dataflow": "ws", "requant": "true", "max_m": "20",
              "max_k": "30", "max_n": "20"}),
    ("gemm", {"rows": "3", "cols": "5", "dataflow": "ws", "max_m": "100", "max_k": "33"}),
    ("gemm", {"dataflow": "os", "requant": "true", "max_m": "64", "max_k": "64",
              "max_n": "64"}),
    pytest.param("gemm", {"dataflow": "ws"}, marks=pytest.mark.slow),  # 3 min of Yosys
    ("softmax", {}),
    ("softmax", {"variant": "divfree"}),
    ("softmax", {"lanes": "1", "max_len": "1", "in_width": "2", "exp_width": "17",
                 "out_width": "2"}),
    pytest.param("softmax", {"lanes": "16", "max_len": "4096", "exp_width": "30",
                             "out_width": "16", "variant": "divfree"},
                 marks=pytest.mark.slow),  # 43 s of Yosys
    ("gelu", {}),
    ("gelu", {"lanes": "1", "in_width": "2", "out_width": "2"}),
    ("layernorm", {}),
    ("layernorm", {"lanes": "1", "max_len": "1", "in_width": "2", "bias_width": "8",
                   "out_width": "2"}),
    pytest.param("layernorm", {"lanes": "16", "max_len": "1024", "in_width": "24",
                               "bias_width": "48"}, marks=pytest.mark.slow),  # 74 s
    ("residual", {}),
    ("residual", {"lanes": "1", "a_width": "2", "r_width": "2", "out_width": "2"}),
    ("pim", {}),
    ("pim", {"lanes": "1", "rows": "1", "cols": "1", "input_bits": "2", "weight_bits": "2",
             "cell_bits": "1", "enob": "1", "adc_share": "1", "noise": "false",
             "faults": "false", "skip_zero": "false"}),
    ("pim", {"rows": "24", "cols": "3", "input_bits": "16", "weight_bits": "16",
             "cell_bits": "4", "enob": "10", "adc_range": "fixed", "adc_max": "7",
             "adc_share": "3"}),
    ("router", {}),
    ("router", {"nx": "2", "ny": "1", "x": "0", "y": "0", "flit_width": "6",
                "buffer_depth": "2"}),
    ("router", {"nx": "3", "ny": "3", "nz": "3", "x": "1", "y": "1", "z": "1",
                "order": "zyx"}),
    ("router", {"nx": "3", "ny": "3", "wrap": "true", "x": "2", "y": "0"}),
    ("mesh", {"nx": "2", "ny": "2", "nz": "2", "flit_width": "6", "buffer_depth": "2"}),
    ("mesh", {"nx": "3", "ny": "1", "wrap": "true", "order": "yxz"}),
])
def test_units_lint_clean(unit_name, overrides):
    """Edge sizes (a 1x1 array, buffers of one word, one lane, the narrowest and widest
    settings) and defaults: no zero-width wires, no latches, no undriven nets."""
    unit = get_unit(unit_name)
    gen = generate(unit, unit.resolve(overrides=overrides))
    vl = verilator_lint(gen.verilog, gen.module)
    assert vl.ok, vl.log
    ys = yosys_check(gen.verilog, gen.module)
    assert ys.ok, ys.log[-2000:]


@pytest.mark.parametrize("unit_name", ["requantizer", "softmax", "gelu", "layernorm", "residual",
                                       "pim", "mesh", "router"])
def test_default_config_file_is_the_unit_default(unit_name):
    _, config = load_config("default")
    unit = get_unit(unit_name)
    assert unit.resolve(config[unit_name]) == unit.resolve()


LATCH = """
module top(input en, input d, output reg q);
  always @* if (en) q = d;
endmodule
"""

UNDRIVEN = """
module top(input clk, input d, output q);
  wire floating;
  reg r;
  always @(posedge clk) r <= d & floating;
  assign q = r;
endmodule
"""

BLOCKING_IN_SEQ = """
module top(input clk, input d, output q);
  reg a, b;
  always @(posedge clk) begin a = d; b = a; end
  assign q = b;
endmodule
"""

CLEAN = """
module top(input clk, input d, output q);
  reg r;
  always @(posedge clk) r <= d;
  assign q = r;
endmodule
"""


@pytest.mark.parametrize("source, caught", [(LATCH, True), (UNDRIVEN, True), (CLEAN, False)])
def test_yosys_check_catches_latches_and_undriven_nets(tmp_path, source, caught):
    path = tmp_path / "top.v"
    path.write_text(source)
    assert yosys_check(path, "top").ok is not caught


def test_verilator_lint_catches_unwaived_warnings(tmp_path):
    path = tmp_path / "top.v"
    path.write_text(BLOCKING_IN_SEQ)
    result = verilator_lint(path, "top")
    assert not result.ok and "BLKSEQ" in result.log
    path.write_text(CLEAN)
    assert verilator_lint(path, "top").ok

"""``heterotron fpga synth``: out-of-context ECP5 figures from the pip-installed YoWASP tools."""

from __future__ import annotations

import json

import pytest

from heterotron.scripts.cli import main


@pytest.mark.slow  # Yosys + nextpnr under WebAssembly: a few minutes
def test_fpga_synth_small_requantizer_reports_figures(capsys):
    code = main(["fpga", "synth", "requantizer", "--config", "small", "--device", "ecp5-85f",
                 "--json"])
    fig = json.loads(capsys.readouterr().out)
    assert code == 0
    assert fig["device"] == "ecp5-85f" and fig["params"]["lanes"] == 2
    assert 10 < fig["fmax_mhz"] < 1000
    # 2 lanes of a 24 x 16 signed x unsigned multiply: DSP blocks, not LUT multipliers
    assert 2 <= fig["dsps"] <= fig["available"]["dsps"]
    assert 0 < fig["luts"] < fig["available"]["luts"]
    # at least the 3 pipeline stages of 2 lanes x 8-bit output and the valid bits
    assert fig["ffs"] >= 2 * 8 + 3
    cp = fig["critical_path"]
    assert cp["from"] and cp["to"]
    # the critical path is what limits Fmax: its delay is the clock period achieved
    assert abs(1000 / cp["total_ns"] - fig["fmax_mhz"]) < 0.05 * fig["fmax_mhz"]


def test_fpga_synth_rejects_bad_frequency(capsys):
    assert main(["fpga", "synth", "requantizer", "--freq", "0"]) == 2
    assert "freq must be in [1, 1000] MHz" in capsys.readouterr().err


def test_fpga_synth_rejects_unknown_device(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fpga", "synth", "requantizer", "--device", "ecp5-12"])
    assert info.value.code == 2
    assert "invalid choice: 'ecp5-12'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_fpga_synth_systolic_uses_one_dsp_per_multiply(capsys, dataflow):
    """A 3x2 int8 array: six PEs, six MULT18X18D, no multiplier left in LUTs."""
    code = main(["fpga", "synth", "systolic", "--param", "rows=3", "--param", "cols=2",
                 "--param", f"dataflow={dataflow}", "--param", "max_k=256", "--json"])
    fig = json.loads(capsys.readouterr().out)
    assert code == 0
    assert fig["dsps"] == 3 * 2
    assert fig["utilization"].get("MULT18X18D") == 6
    assert 10 < fig["fmax_mhz"] < 1000

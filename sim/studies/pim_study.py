"""The PiM study behind ``heterotron pim-sweep``: the integer MiniLM encoder with its static
weights (Q, K, V, O projections, FC1, FC2) on processing-in-memory tiles, every tile the golden
:class:`~heterotron.sim.golden.pim.PimTileModel`, swept over ADC bits, cell bits, noise and faults.

Accuracy is the sentence-embedding cosine against the float model (as ``heterotron accuracy``)
and the cosine against the exact-integer encoder; cycles are the tiles' own counters on the real
activations, with and without zero-plane skipping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from heterotron.sim.golden import bert_int as bi
from heterotron.sim.golden.bert_float import BertWeights, Tokenized, embed, encode, mean_pool
from heterotron.sim.golden.pim import PimMatrix, gain_for_range, rate_code, sigma_code
from heterotron.sim.studies.accuracy import _cos

__all__ = ["PimPoint", "sweep_points", "PimEncoder", "run_sweep", "MATRICES"]

MATRICES = ("q", "k", "v", "o", "fc1", "fc2")
KINDS = {"q": "qkv", "k": "qkv", "v": "qkv", "o": "o", "fc1": "fc1", "fc2": "fc2"}


@dataclass(frozen=True)
class PimPoint:
    """One configuration of the tiles that hold every static weight."""

    label: str
    enob: int = 6
    cell_bits: int = 2
    range_mode: str = "calibrated"  # or "full": the whole column range, no calibration
    sigma_lsb: float = 0.0
    fault_rate: float = 0.0
    rows: int = 128
    cols: int = 32
    adc_share: int = 8
    clip_percentile: float = 99.99
    skip_zero: bool = True
    input_code: str = "twos"

    def tile_params(self, input_bits: int) -> dict:
        return dict(lanes=8, rows=self.rows, cols=self.cols, input_bits=input_bits,
                    weight_bits=8, cell_bits=self.cell_bits, enob=self.enob,
                    adc_range="calibrated", adc_max=0, adc_share=self.adc_share,
                    noise=self.sigma_lsb > 0, faults=self.fault_rate > 0,
                    skip_zero=self.skip_zero, input_code=self.input_code)


def sweep_points(enobs=range(3, 9), cell_bits=(1, 2, 4), sigmas=(0.1, 0.2, 0.3, 0.5, 1.0),
                 fault_rates=(3e-5, 1e-4, 1e-3, 1e-2), base_enob: int = 8,
                 short_rows: int | None = 32) -> list[PimPoint]:
    """The study: an ADC with enough levels to be exact (the check that the mapping is the
    integer encoder), ENOB x cell bits with calibrated ranges, ENOB with the full range, ENOB
    on tiles of ``short_rows`` rows (smaller column sums), then noise and faults one at a time
    around ``base_enob`` bits, 2-bit cells."""
    pts = [PimPoint("exact ADC (9 bits, full range)", enob=9, range_mode="full")]
    for cb in cell_bits:
        pts += [PimPoint(f"enob {e}, {cb}-bit cells", enob=e, cell_bits=cb) for e in enobs]
    pts += [PimPoint(f"enob {e}, 2-bit cells, full range", enob=e, range_mode="full")
            for e in enobs]
    if short_rows:
        pts += [PimPoint(f"enob {e}, 2-bit cells, {short_rows} rows", enob=e, rows=short_rows)
                for e in enobs]
    pts += [PimPoint(f"enob {e}, 2-bit cells, sign-magnitude inputs", enob=e,
                     input_code="signmag") for e in (6, base_enob)]
    pts += [PimPoint(f"enob {base_enob}, noise {s} LSB", enob=base_enob, sigma_lsb=s)
            for s in sigmas]
    # sign-magnitude inputs leave the sign-extension planes of small values unconverted:
    # noise on them, weighted up to 2^(input_bits-1), is what two's complement pays
    pts += [PimPoint(f"enob {base_enob}, noise {s} LSB, sign-magnitude inputs", enob=base_enob,
                     sigma_lsb=s, input_code="signmag") for s in sigmas]
    pts += [PimPoint(f"enob {base_enob}, faults {r:g}", enob=base_enob, fault_rate=r)
            for r in fault_rates]
    return pts


class PimEncoder:
    """The integer encoder's static-weight matmuls on PiM tiles of one :class:`PimPoint`."""

    def __init__(self, enc: bi.IntEncoder, point: PimPoint, seed: int = 0):
        self.enc, self.point = enc, point
        prec = enc.meta["precision"]
        self.mats: dict[str, PimMatrix] = {}
        for i in range(enc.layers):
            for n, key in enumerate(MATRICES):
                bits = prec["ffn_bits"] if key == "fc2" else prec["act_bits"]
                name = f"layer{i}.{key}"
                mat = PimMatrix(enc.p(i, key + ".w"), fault_seed=seed * 1000 + i * 10 + n,
                                noise_seed=seed * 1000 + i * 10 + n + 7,
                                **point.tile_params(bits))
                mat.program(rate_code(point.fault_rate))
                self.mats[name] = mat

    def calibrate(self, xs: dict[str, list[np.ndarray]], cache: dict | None = None
                  ) -> dict[str, float]:
        """Each matrix's ADC range: the ``clip_percentile`` of its non-zero column sums on the
        calibration activations ``xs[name]`` (or the whole column range). The sums depend on
        the programmed cells only, so ``cache`` keeps them across points that share those."""
        p = self.point
        key = (p.rows, p.cols, p.cell_bits, p.fault_rate, p.clip_percentile)
        ranges = {}
        for name, mat in self.mats.items():
            if p.range_mode == "full":
                top = float(max(mat.model.full_range, (1 << p.enob) - 1))
            elif cache is not None and (key, name) in cache:
                top = cache[key, name]
            else:
                sums = np.concatenate([mat.column_sums(x).ravel() for x in xs[name]])
                nz = sums[sums > 0]
                top = max(float(np.percentile(nz, p.clip_percentile)) if nz.size else 1.0, 1.0)
                if cache is not None:
                    cache[key, name] = top
            ranges[name] = top
            mat.set_adc(gain=gain_for_range(top, p.enob), sigma_q=sigma_code(p.sigma_lsb))
        return ranges

    def matmul(self, name: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self.mats[name].matmul(x)

    def cycles(self) -> dict[str, dict]:
        """Per matrix kind: slots per tile MVM with skipping, without, and the skipped share."""
        out: dict[str, dict] = {}
        for name, mat in self.mats.items():
            kind = KINDS[name.split(".")[1]]
            st = mat.model.stats
            d = out.setdefault(kind, {"vectors": 0, "conv": 0, "skip": 0, "idle": 0,
                                      "input_bits": mat.model.p["input_bits"],
                                      "input_code": mat.model.p["input_code"],
                                      "planes": mat.model.n_planes,
                                      "adc_share": mat.model.share})
            d["vectors"] += int(st.vectors.sum())
            d["conv"] += int(st.conv_cycles.sum())
            d["skip"] += int(st.skip_cycles.sum())
            d["idle"] += int(st.idle_cycles.sum())
        for d in out.values():
            n = max(d["vectors"], 1)
            d["cycles_per_mvm_dense"] = d["planes"] * d["adc_share"]
            d["cycles_per_mvm_skip"] = (d["conv"] + d["idle"]) / n
            d["skipped_fraction"] = d["skip"] / max(d["conv"] + d["skip"], 1)
        return out


def _collect_inputs(enc: bi.IntEncoder, w: BertWeights, toks: list[Tokenized]
                    ) -> dict[str, list[np.ndarray]]:
    """The exact-integer encoder's inputs to every static-weight matmul (for calibration)."""
    xs: dict[str, list[np.ndarray]] = {}

    def tap(name, x, wt):
        xs.setdefault(name, []).append(x)
        return np.asarray(x, dtype=np.int64) @ np.asarray(wt, dtype=np.int64).T

    for t in toks:
        bi.run(enc, embed(w, t), matmul=tap)
    return xs


def run_sweep(w: BertWeights, enc: bi.IntEncoder, toks: list[Tokenized],
              calib: list[Tokenized], points: list[PimPoint],
              progress: Callable[[str], None] | None = None) -> dict:
    """Every point on ``toks``: sentence-embedding cosine against float and against the exact
    integer encoder, the cycles on real activations; plus the exact-integer reference."""
    t0 = time.monotonic()
    ref_float, ref_int = [], []
    for t in toks:
        fs = encode(w, t)
        ref_float.append(mean_pool(fs[-1], t.mask))
        ints = bi.run(enc, fs[0])
        ref_int.append(mean_pool(ints[-1], t.mask))
    exact = [float(a @ b) for a, b in zip(ref_float, ref_int, strict=True)]
    xs = _collect_inputs(enc, w, calib)
    cache: dict = {}
    rows = []
    for n, pt in enumerate(points):
        t1 = time.monotonic()
        pe = PimEncoder(enc, pt)
        ranges = pe.calibrate(xs, cache)
        vs_float, vs_int = [], []
        for j, t in enumerate(toks):
            hs = bi.run(enc, embed(w, t), matmul=pe.matmul)
            emb = mean_pool(hs[-1], t.mask)
            vs_float.append(float(ref_float[j] @ emb))
            vs_int.append(_cos(ref_int[j], emb))
        row = {**asdict(pt), "final_cosine_mean": float(np.mean(vs_float)),
               "final_cosine_min": float(np.min(vs_float)),
               "cosine_vs_int_mean": float(np.mean(vs_int)),
               "cosine_vs_int_min": float(np.min(vs_int)),
               "adc_range_median": float(np.median(list(ranges.values()))),
               "cycles": pe.cycles(), "seconds": round(time.monotonic() - t1, 1)}
        rows.append(row)
        if progress:
            progress(f"[{n + 1}/{len(points)}] {pt.label}: cosine vs float mean "
                     f"{row['final_cosine_mean']:.4f} worst {row['final_cosine_min']:.4f}, "
                     f"vs integer {row['cosine_vs_int_mean']:.5f} ({row['seconds']} s)")
    return {"model": "all-MiniLM-L6-v2", "sentences": len(toks),
            "calibration_sentences": len(calib), "precision": enc.meta["precision"],
            "exact_integer": {"final_cosine_mean": float(np.mean(exact)),
                              "final_cosine_min": float(np.min(exact))},
            "points": rows,
            "seconds": round(time.monotonic() - t0, 1)}

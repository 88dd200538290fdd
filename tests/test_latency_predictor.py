"""latency_predictor.py: training on a table with a known latency law, the self-describing
checkpoint (LatencyPredictor.load(path).predict(arch)), the original recipe's shape and keys,
the seeded split, and one-line errors for bad tables."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import latency_predictor
from latency.predictor import RECIPES, LatencyMLP, make_dataset, train_predictor
from latency.table import read_latency_table
from utils import Grid, SearchSpace, arch_key, arch_to_legacy_repr, get_space, make_arch, run_cli

ORIGINAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                        "original_latency")
# 4 x 7 x 11 = 308 archs; the records carry this definition, so the predictor validates against it
SPACE = SearchSpace("test_latency", Grid(1, 4), Grid(64, 256, 32), Grid(128, 768, 64), Grid(4, 4))


def law_ms(arch):
    """A latency law with the structure of real tables: affine in layers, bilinear in H and FFN."""
    layers, hidden, ffn = arch["sample_layer_num"], arch["sample_hidden_size"], arch["sample_intermediate_sizes"][0]
    return 0.3 + layers * (0.1 + 2e-5 * hidden * ffn + 3e-5 * hidden * hidden + 1e-3 * hidden)


def write_table(path, noise=0.005, seed=0, **fields):
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for arch in SPACE.grid():
            record = {"arch": arch, "arch_key": arch_key(arch), "backend": "torch_dynamic_int8",
                      "median_ms": law_ms(arch) * (1 + noise * rng.standard_normal()), "cpu_model": "test CPU",
                      "threads": 1, "space": SPACE.name, "space_definition": SPACE.to_dict()}
            record.update(fields)
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    return str(path)


def run(argv):
    with pytest.raises(SystemExit) as info:
        run_cli(latency_predictor.main, argv)
    return info.value.code


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor")
    table = write_table(root / "lat.jsonl")
    ckpt = str(root / "out" / "lat_predictor_quant.pt")
    assert run(["--lat_dataset_path", table, "--ckpt_path", ckpt, "--max_steps", "400", "--quiet"]) == 0
    return {"table": table, "ckpt": ckpt, "root": root}


def test_default_recipe_learns_the_law_and_writes_everything(trained):
    ckpt = trained["ckpt"]
    metrics = json.load(open(ckpt + ".metrics.json"))
    test = metrics["test"]
    assert test["n"] == 31 and metrics["val"]["n"] == 31 and metrics["train"]["n"] == 246  # 80/10/10 of 308
    assert test["mapd_pct"] < 2.0 and test["kendall_tau"] > 0.95 and test["rmse_ms"] > 0
    assert metrics["backend"] == "torch_dynamic_int8" and metrics["space"] == "test_latency"
    assert metrics["split_warning"] is None and metrics["split_sizes"] == [246, 31, 31]
    assert metrics["test_mapd_pct"] == test["mapd_pct"] and metrics["train_mapd_pct"] == metrics["train"]["mapd_pct"]
    assert open(ckpt + ".png", "rb").read(4) == b"\x89PNG"
    # the checkpoint is plain data: loadable with weights_only=True
    raw = torch.load(ckpt, weights_only=True)
    assert raw["features"]["encoding"] == "v2" and raw["line_effects"]["keys"]


def test_a_split_too_small_to_measure_is_said_in_one_line(tmp_path, caplog, capsys):
    """Issue 10: a 30-arch table split 24/3/3 looked perfect on train and said nothing."""
    rng = np.random.default_rng(1)
    path = tmp_path / "lat.jsonl"
    archs = list(SPACE.grid())[::10][:30]
    with open(path, "w", encoding="utf-8") as handle:
        for arch in archs:
            handle.write(json.dumps({"arch": arch, "backend": "torch_fp32", "median_ms": law_ms(arch) * (1 + 0.01 *
                                     rng.standard_normal()), "space_definition": SPACE.to_dict()}) + "\n")
    ckpt = str(tmp_path / "p.pt")
    with caplog.at_level("WARNING"):
        assert run(["--lat_dataset_path", str(path), "--ckpt_path", ckpt, "--max_steps", "50", "--no_plot",
                    "--quiet"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "test split" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("the test split has only 3 archs (split 24/3/3 of 30; MAPD train ")
    assert "a table of at least 300 archs gives 30 test archs" in warnings[0]
    metrics = json.load(open(ckpt + ".metrics.json"))
    assert metrics["split_warning"] == warnings[0]
    for split in ("train", "val", "test"):
        assert metrics[f"{split}_mapd_pct"] == pytest.approx(metrics[split]["mapd_pct"]) and metrics[split]["n"] > 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["test_n"] == 3 and "train_mapd_pct" in printed and "val_mapd_pct" in printed


def test_checkpoint_alone_predicts(trained):
    predictor = latency_predictor.LatencyPredictor.load(trained["ckpt"])
    meta = predictor.metadata
    assert meta["backend"] == "torch_dynamic_int8" and meta["space"] == "test_latency"
    assert meta["feature_names"][:3] == ["layer_num", "hidden_size", "mean_intermediate_size"]
    assert meta["metrics"]["test"]["mapd_pct"] < 2.0 and meta["table_environment"]["cpu_model"] == "test CPU"
    archs = list(SPACE.grid())
    batch = predictor.predict_many(archs)
    assert isinstance(batch, np.ndarray) and batch.shape == (308,)
    assert predictor.predict(archs[5]) == pytest.approx(batch[5], rel=1e-6)
    truth = np.array([law_ms(a) for a in archs])
    assert np.mean(np.abs(batch - truth) / truth) < 0.02
    # an arch off the table's grid (FFN between grid points; an unseen hidden size) still predicts sensibly
    for arch in (make_arch(2, 128, 160, 4), make_arch(3, 112, 512, 4)):
        assert predictor.predict(arch) == pytest.approx(law_ms(arch), rel=0.08)
    assert predictor.predict_many([]).shape == (0,)


def test_split_is_seeded_and_independent_of_table_order(trained):
    records = read_latency_table(trained["table"])
    first, reordered = make_dataset(records, seed=0), make_dataset(records[::-1], seed=0)
    other = make_dataset(records, seed=1)
    test_keys = [arch_key(first.archs[i]) for i in first.test]
    assert test_keys == [arch_key(reordered.archs[i]) for i in reordered.test]
    assert test_keys != [arch_key(other.archs[i]) for i in other.test]
    short = dataclasses.replace(RECIPES["default"], max_steps=60)
    again = train_predictor(records, short, seed=3, progress=False)[0]
    once = train_predictor(records, short, seed=3, progress=False)[0]
    archs = list(SPACE.grid())[:20]
    np.testing.assert_array_equal(again.predict_many(archs), once.predict_many(archs))


def test_original_recipe_has_the_original_shape(trained, tmp_path):
    legacy = tmp_path / "lat_quant_.tmp"  # the original table format, read unchanged, over a named space
    legacy.write_text("".join(f"{arch_to_legacy_repr(a)}\t{law_ms(a)}\n" for a in get_space("demo_latency").grid()))
    ckpt = str(tmp_path / "orig.pt")
    assert run(["--lat_dataset_path", str(legacy), "--ckpt_path", ckpt, "--recipe", "original", "--space",
                "demo_latency", "--max_steps", "3", "--no_plot", "--quiet"]) == 0
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "first_layer.weight": (2000, 4), "first_layer.bias": (2000,),
        **{f"layers.{i}.{p}": ((2000, 2000) if p == "weight" else (2000,)) for i in range(3) for p in ("weight", "bias")},
        "predict.weight": (1, 2000), "predict.bias": (1,)}
    predictor = latency_predictor.LatencyPredictor.load(ckpt)
    assert predictor.metadata["backend"] == "torch_dynamic_int8" and predictor.metadata["recipe_name"] == "original"
    # the authors' own checkpoints are a bare state dict of this shape: loadable as well
    bare = tmp_path / "bare.pt"
    torch.save(LatencyMLP(4, 16, 4).state_dict(), bare)
    assert np.isfinite(latency_predictor.LatencyPredictor.load(str(bare)).predict(make_arch(2, 128, 256, 4)))


def test_smooth_mlp_alone(trained, tmp_path):
    ckpt = str(tmp_path / "smooth.pt")
    assert run(["--lat_dataset_path", trained["table"], "--ckpt_path", ckpt, "--no_line_effects", "--max_steps", "50",
                "--no_plot", "--quiet"]) == 0
    raw = torch.load(ckpt, weights_only=True)
    assert raw["line_effects"] is None and raw["recipe"]["line_effects"] is False and raw["recipe"]["max_steps"] == 50


@pytest.mark.parametrize("content, extra, message", [
    ("", [], "empty latency table"),
    ("{'sample_layer_num': 1, 'sample_hidden_size': 64}\t1.0\n", [], "lat.tmp:1: missing arch key"),
    (f"{arch_to_legacy_repr(make_arch(1, 64, 128, 4))}\t1.0\n{arch_to_legacy_repr(make_arch(1, 64, 128, 4))}\tx\n", [],
     "lat.tmp:2: median_ms must be a number"),
    (f"{arch_to_legacy_repr(make_arch(9, 64, 128, 4))}\t1.0\n", ["--space", "demo_latency"],
     "lat.tmp:1: sample_layer_num=9 is outside the demo_latency space"),
    (f"{arch_to_legacy_repr(make_arch(1, 64, 128, 4))}\t1.0\n", [], "sample_hidden_size=64 is outside the paper_latency"),
])
def test_bad_table_is_one_line_and_writes_nothing(tmp_path, capsys, content, extra, message):
    path = tmp_path / "lat.tmp"
    path.write_text(content)
    ckpt = tmp_path / "p.pt"
    assert run(["--lat_dataset_path", str(path), "--ckpt_path", str(ckpt), "--quiet"] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not ckpt.exists() and not os.path.exists(str(ckpt) + ".metrics.json")


def test_mixed_machines_and_bad_flags(tmp_path, capsys):
    a = write_table(tmp_path / "a.jsonl")
    b = write_table(tmp_path / "b.jsonl", cpu_model="other CPU")
    assert run(["--lat_dataset_path", a, b, "--ckpt_path", str(tmp_path / "p.pt"), "--quiet"]) == 2
    assert "cpu_model='other CPU'" in capsys.readouterr().err
    assert run(["--lat_dataset_path", a, "--ckpt_path", str(tmp_path), "--quiet"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert run(["--lat_dataset_path", a, "--ckpt_path", str(tmp_path / "p.pt"), "--lr", "0"]) == 2
    assert "--lr must be > 0" in capsys.readouterr().err
    with pytest.raises(latency_predictor.UserError, match="no such latency predictor"):
        latency_predictor.LatencyPredictor.load(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(latency_predictor.UserError, match="not a readable predictor checkpoint"):
        latency_predictor.LatencyPredictor.load(str(tmp_path / "junk.pt"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(ORIGINAL), reason="the authors' latency tables (../shared/data) are absent")
def test_default_recipe_on_the_authors_int8_table(tmp_path):
    """The full benchmark lives in benchmarks/bench_latency_predictor.py; here a loose bound."""
    ckpt = str(tmp_path / "q.pt")
    assert run(["--lat_dataset_path", os.path.join(ORIGINAL, "lat_quant_.tmp"), "--ckpt_path", ckpt, "--no_plot",
                "--quiet"]) == 0
    test = json.load(open(ckpt + ".metrics.json"))["test"]
    assert test["n"] == 1425 and test["mapd_pct"] < 3.2 and test["kendall_tau"] > 0.95

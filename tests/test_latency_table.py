"""Latency tables: the one reader for our JSONL and the original .tmp lines, its one-line errors,
the mixed-machine check, the noise estimate and the side-by-side comparison."""

import json
import os

import numpy as np
import pytest

from latency import compare, noise, table
from utils import Grid, SearchSpace, UserError, arch_key, arch_to_legacy_repr, get_space, make_arch

ORIGINAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                        "original_latency")


def record(arch, ms, **fields):
    base = {"arch": arch, "arch_key": arch_key(arch), "backend": "torch_dynamic_int8", "median_ms": ms,
            "cpu_model": "CPU A", "threads": 1, "runs": 20, "warmup": 5, "protocol": "baf-latency-1"}
    base.update(fields)
    return base


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return str(path)


def test_jsonl_and_legacy_read_the_same(tmp_path):
    archs = [make_arch(2, 128, f, 4) for f in (128, 192, 256)]
    jsonl = write_jsonl(tmp_path / "t.jsonl", [record(a, 1.0 + i) for i, a in enumerate(archs)])
    legacy = tmp_path / "lat_quant_.tmp"
    legacy.write_text("".join(f"{arch_to_legacy_repr(a)}\t{1.0 + i}\n" for i, a in enumerate(archs)))
    ours, theirs = table.read_latency_table(jsonl), table.read_latency_table(str(legacy))
    assert table.table_pairs(ours) == table.table_pairs(theirs) == [(a, 1.0 + i) for i, a in enumerate(archs)]
    assert theirs[0]["backend"] == "torch_dynamic_int8" and theirs[1]["_where"].endswith("lat_quant_.tmp:2")


@pytest.mark.parametrize("name, content, message", [
    ("lat_.tmp", "{'sample_layer_num': 1}\t2.0\n", "lat_.tmp:1: missing arch key"),
    ("lat_.tmp", f"{arch_to_legacy_repr(make_arch(1, 64, 128, 4))}\tfast\n", "lat_.tmp:1: median_ms must be a number"),
    ("lat_.tmp", f"{arch_to_legacy_repr(make_arch(1, 64, 128, 4))}\n", "lat_.tmp:1: expected '<arch>\\t<ms>'"),
    ("lat_.tmp", f"{arch_to_legacy_repr(make_arch(1, 64, 128, 4))}\t-1\n", "positive"),
    ("t.jsonl", '{"arch": 1, "median_ms": 2}\n', "t.jsonl:1: an arch must be a dict"),
    ("t.jsonl", '{"median_ms": 2}\n', "t.jsonl:1: latency record without an 'arch'"),
    ("t.jsonl", "not json\n{}\n", "t.jsonl:1: not valid JSON"),
    ("t.jsonl", "\n\n", "empty latency table"),
])
def test_bad_table_is_one_line_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError) as info:
        table.read_latency_table(str(path))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_mixed_machines_and_protocols_are_refused(tmp_path):
    archs = [make_arch(1, 64, f, 4) for f in (128, 192)]
    mixed = write_jsonl(tmp_path / "m.jsonl", [record(archs[0], 1.0), record(archs[1], 1.1, cpu_model="CPU B")])
    with pytest.raises(UserError, match=r"m.jsonl:2: measured with cpu_model='CPU B' but .*m.jsonl:1"):
        table.read_latency_table(mixed)
    protocol = write_jsonl(tmp_path / "p.jsonl", [record(archs[0], 1.0), record(archs[1], 1.1, runs=50)])
    with pytest.raises(UserError, match="runs=50"):
        table.read_latency_table(protocol)
    # two files of one grid on different machines: refused as one table
    a = write_jsonl(tmp_path / "a.jsonl", [record(archs[0], 1.0)])
    b = write_jsonl(tmp_path / "b.jsonl", [record(archs[1], 1.0, threads=2)])
    with pytest.raises(UserError, match="threads=2"):
        table.read_latency_tables([a, b])
    legacy = tmp_path / "lat_quant_.tmp"
    legacy.write_text(f"{arch_to_legacy_repr(archs[1])}\t1.0\n")
    with pytest.raises(UserError, match="mixes an original .tmp table"):
        table.read_latency_tables([a, str(legacy)])
    # host names may differ (identical machines splitting a grid)
    ok = write_jsonl(tmp_path / "ok.jsonl", [record(archs[0], 1.0, hostname="n1"), record(archs[1], 1.0, hostname="n2")])
    assert table.table_environment(table.read_latency_table(ok))["hostnames"] == ["n1", "n2"]


def test_off_space_arch_is_named(tmp_path):
    space = SearchSpace("tiny", Grid(1, 2), Grid(64, 128, 64), Grid(128, 256, 128), Grid(4, 4))
    path = write_jsonl(tmp_path / "t.jsonl", [record(make_arch(1, 64, 128, 4), 1.0), record(make_arch(9, 64, 128, 4), 1.0)])
    with pytest.raises(UserError, match=r"t.jsonl:2: sample_layer_num=9 is outside the tiny space"):
        table.read_latency_table(path, space=space)


def test_second_difference_noise_recovers_known_noise():
    rng = np.random.default_rng(0)
    pairs = []
    for layers in (1, 2, 3):
        for hidden in range(64, 257, 32):
            for ffn in range(128, 769, 64):
                true = 0.2 + layers * (hidden * ffn + 2 * hidden * hidden) * 1e-5
                pairs.append((make_arch(layers, hidden, ffn, 4), true * (1 + 0.02 * rng.standard_normal())))
    estimate = noise.second_difference_noise(pairs)
    assert estimate["triples"] == 3 * 7 * 9
    assert estimate["sigma_pct"] == pytest.approx(2.0, rel=0.15)  # the noise put in: 2 % Gaussian
    assert estimate["median_abs_pct"] == pytest.approx(2.0 * 0.6745, rel=0.15)
    assert noise.repeat_difference([1.0, 2.0], [1.1, 2.0])["median_pct"] == pytest.approx(100 * 0.1 / 1.05 / 2)


def test_compare_joins_and_summarises(tmp_path):
    archs = [make_arch(1, 64, f, 4) for f in (128, 192, 256)]
    fp = write_jsonl(tmp_path / "fp.jsonl", [record(a, 2.0 * (i + 1), backend="torch_fp32") for i, a in enumerate(archs)])
    q = write_jsonl(tmp_path / "q.jsonl", [record(a, 1.0 * (i + 1)) for i, a in enumerate(archs[:2])])
    assert compare.main([fp, q, "--out_prefix", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp.md").read_text()
    assert "| torch_dynamic_int8 | 2 | 2.00x |" in text
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "cmp.csv").read_text().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(ORIGINAL), reason="the authors' latency tables (../shared/data) are absent")
def test_the_authors_tables_read_unchanged():
    fp = table.read_latency_table(os.path.join(ORIGINAL, "lat_.tmp"), space=get_space("paper_latency"))
    q = table.read_latency_table(os.path.join(ORIGINAL, "lat_quant_.tmp"))
    assert len(fp) == len(q) == 14250 and fp[0]["backend"] == "torch_fp32" and q[0]["backend"] == "torch_dynamic_int8"
    assert {r["arch_key"] for r in fp} == {r["arch_key"] for r in q} == {arch_key(a) for a in get_space("paper_latency").grid()}
    # their own noise: 0.6 % (fp32) and 2.3 % (int8) per point; int8 is 1.38x faster (median)
    assert noise.second_difference_noise(table.table_pairs(fp))["median_abs_pct"] == pytest.approx(0.60, abs=0.02)
    assert noise.second_difference_noise(table.table_pairs(q))["median_abs_pct"] == pytest.approx(2.28, abs=0.02)
    rows = compare.join_tables({"fp32": fp, "int8": q})
    assert compare.speedup_summary(rows, "fp32", "int8")["median"] == pytest.approx(1.38, abs=0.01)

"""utils.py: the arch dict, its validation and identity, the spaces, sampling and the arch reader."""

import json
import os
import random

import pytest

from utils import (
    ArchError,
    SPACES,
    UserError,
    arch_features,
    arch_key,
    arch_to_legacy_repr,
    check_arch_schema,
    get_space,
    iter_arch_lines,
    load_arch_argument,
    make_arch,
    parse_arch,
    read_arch_file,
    sample_arch,
    write_arch_file,
)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
LAT_TABLE = os.path.join(SHARED, "original_latency", "lat_.tmp")


def test_space_sizes_match_the_original_grids():
    assert SPACES["paper_latency"].size() == 14250  # 5 x 38 x 75
    assert SPACES["paper_search"].size() == 5 * 33 * 29  # 4,785 KD grid points
    assert SPACES["paper_search"].largest() == make_arch(5, 528, 1024, 12)
    assert SPACES["paper_search"].smallest() == make_arch(1, 144, 128, 12)


def test_canonical_identity_ignores_key_order():
    arch = make_arch(3, 264, 512, 12)
    reordered = {key: arch[key] for key in reversed(list(arch))}
    assert str(arch) != str(reordered)  # the original's bug: str(dict) depends on key order
    assert arch_key(arch) == arch_key(reordered)
    assert arch_key(parse_arch(arch_to_legacy_repr(arch))) == arch_key(arch)


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.update(extra=1), "unknown arch key(s) 'extra'"),
    (lambda a: a.pop("sample_qkv_sizes"), "missing arch key(s) 'sample_qkv_sizes'"),
    (lambda a: a.update(sample_intermediate_sizes=[512, 512]), "'sample_intermediate_sizes' has 2 value(s) but 'sample_layer_num' is 3"),
    (lambda a: a.update(sample_num_attention_heads=[7, 7, 7]), "'sample_num_attention_heads'=7 does not divide 'sample_qkv_sizes'=264"),
    (lambda a: a.update(sample_layer_num="3"), "'sample_layer_num' must be a positive int"),
    (lambda a: a.update(sample_hidden_size=270, sample_qkv_sizes=[270] * 3, sample_num_attention_heads=[10] * 3),
     "sample_hidden_size=270 is outside the paper_search space (144..528 step 12)"),
    (lambda a: a.update(sample_intermediate_sizes=[500] * 3), "sample_intermediate_sizes=500 is outside"),
    (lambda a: a.update(sample_layer_num=6, sample_intermediate_sizes=[512] * 6, sample_num_attention_heads=[12] * 6,
                        sample_qkv_sizes=[264] * 6), "sample_layer_num=6 is outside"),
    (lambda a: a.update(sample_qkv_sizes=[252] * 3), "sample_qkv_sizes=252 must equal sample_hidden_size=264"),
    (lambda a: a.update(sample_intermediate_sizes=[512, 544, 512]), "per-layer sizes differ"),
])
def test_validation_names_the_bad_field(mutate, message):
    arch = make_arch(3, 264, 512, 12)
    mutate(arch)
    with pytest.raises(ArchError) as info:
        SPACES["paper_search"].validate(arch, where="x.cands:7")
    text = str(info.value)
    assert message in text and text.startswith("x.cands:7: ") and "\n" not in text


def test_sampling_is_seeded_and_inside_the_space():
    for name, space in SPACES.items():
        draws = [sample_arch(space, seed) for seed in range(50)]
        assert draws == [sample_arch(space, seed) for seed in range(50)], name  # same seed -> same arch
        assert len({arch_key(a) for a in draws}) > 10, name
        for arch in draws:
            space.validate(arch)
    # sampling does not consume the global RNG (other code's determinism is untouched)
    random.seed(1)
    expected = random.random()
    random.seed(1)
    sample_arch(SPACES["paper_supernet"], 3)
    assert random.random() == expected


def test_mutation_and_crossover_stay_in_space_and_move():
    space = SPACES["paper_search"]
    rng = random.Random(0)
    parent = make_arch(3, 264, 512, 12)
    children = [space.mutate(parent, rng, prob=0.25) for _ in range(200)]
    assert all(space.contains(child) for child in children)
    assert sum(arch_key(c) != arch_key(parent) for c in children) > 100
    other = make_arch(5, 528, 1024, 12)
    kids = [space.crossover(parent, other, rng) for _ in range(100)]
    assert all(space.contains(k) for k in kids)
    layer_values = {k["sample_layer_num"] for k in kids}
    assert layer_values == {3, 5}
    # independent qkv space: qkv mutates on its own grid and stays divisible by heads
    supernet_space = SPACES["paper_supernet"]
    arch = sample_arch(supernet_space, 0)
    for _ in range(100):
        arch = supernet_space.mutate(arch, rng, prob=0.5)
        supernet_space.validate(arch)


def test_features_are_the_original_four():
    arch = make_arch(4, 312, 640, 12)
    assert arch_features(arch) == [312.0, 4.0, 640.0, 312.0]


def test_reader_accepts_json_and_python_repr_and_writes_json(tmp_path):
    archs = [make_arch(1, 144, 128, 12), make_arch(5, 528, 1024, 12)]
    path = tmp_path / "a.cands"
    path.write_text(arch_to_legacy_repr(archs[0]) + "\n\n" + json.dumps(archs[1]) + "\t0.83\n")
    assert read_arch_file(path, SPACES["paper_search"]) == archs
    out = tmp_path / "b.cands"
    write_arch_file(out, archs)
    assert [json.loads(line) for line in out.read_text().splitlines()] == archs
    with pytest.raises(ArchError, match=r"b.cands:2: duplicate arch \(first seen on line 1\)"):
        out.write_text(json.dumps(archs[0]) + "\n" + json.dumps(archs[0]) + "\n")
        read_arch_file(out, allow_duplicates=False)


@pytest.mark.parametrize("line, message", [
    ("{'sample_layer_num': 1,", "not a JSON or Python-literal arch dict"),
    ("__import__('os').system('echo pwned')", "not a JSON or Python-literal arch dict"),
    ("[1, 2, 3]", "an arch must be a dict"),
    ("{'sample_layer_num': 1}", "missing arch key(s)"),
])
def test_reader_rejects_malformed_lines_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(json.dumps(make_arch(1, 144, 128, 12)) + "\n" + line + "\n")
    with pytest.raises(ArchError) as info:
        read_arch_file(path)
    assert str(info.value).startswith(f"{path}:2: ") and message in str(info.value)


def test_reader_rejects_out_of_space_archs(tmp_path):
    path = tmp_path / "off.txt"
    path.write_text(json.dumps(make_arch(2, 120, 128, 12)) + "\n")
    read_arch_file(path, SPACES["paper_latency"])  # 120 is on the latency grid ...
    with pytest.raises(ArchError, match=r"off.txt:1: sample_hidden_size=120 is outside the paper_search space"):
        read_arch_file(path, SPACES["paper_search"])  # ... but not in the search space


def test_arch_argument_inline_or_file(tmp_path):
    arch = make_arch(2, 144, 128, 12)
    assert load_arch_argument(json.dumps(arch)) == arch
    assert load_arch_argument(str(arch)) == arch
    path = tmp_path / "one.txt"
    write_arch_file(path, [arch])
    assert load_arch_argument(str(path)) == arch
    with pytest.raises(UserError, match="neither an arch dict nor an existing file"):
        load_arch_argument(str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="unknown space"):
        get_space("nope")
    with pytest.raises(ArchError):
        check_arch_schema({"sample_layer_num": True})


@pytest.mark.skipif(not os.path.exists(LAT_TABLE), reason="shared latency table absent")
def test_reader_accepts_every_line_of_the_authors_latency_table():
    space = SPACES["paper_latency"]
    rows = list(iter_arch_lines(LAT_TABLE))
    assert len(rows) == 14250
    keys = set()
    for number, arch, extra in rows:
        space.validate(arch, where=f"lat_.tmp:{number}")
        assert len(extra) == 1 and float(extra[0]) > 0
        keys.add(arch_key(arch))
    assert keys == {arch_key(a) for a in space.grid()}  # exactly the original grid

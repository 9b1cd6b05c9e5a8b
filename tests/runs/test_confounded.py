"""Confounded-shift evaluation: nuisances, the confounded tasks, the shift metrics, the
[confounded] config and a whole run on the TinyBackbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tomllib

from conceptlens.data import ImageDataset
from conceptlens.data.confounded import (
    apply_nuisance,
    border,
    brightness,
    confounded_task,
    confounded_tasks,
    invert,
    parse_id,
    texture,
)
from conceptlens.data.images import ArrayImages
from conceptlens.errors import ConfigError, DataError
from conceptlens.evaluation.shift import evaluate_shift, evaluate_test_time_shift, mean_shift, shift_row
from conceptlens.features import FeatureBundle

CLASSES = ("cat", "dog", "fox", "owl")


def fake_dataset(n_train=40, n_test=30, seed=0, size=16) -> ImageDataset:
    """Dark noise images (no class signal at all) with the official-split layout of
    Fashion-MNIST: all train images first, then all test images."""
    rng = np.random.default_rng(seed)
    m = len(CLASSES)
    labels = np.concatenate([np.arange(n_train * m) % m, np.arange(n_test * m) % m])
    x = rng.integers(0, 90, size=(len(labels), size, size), dtype=np.uint8)
    split = ("train",) * (n_train * m) + ("test",) * (n_test * m)
    ids = tuple(f"toy/{s}/{i}" for i, s in enumerate(split))
    return ImageDataset("toy", CLASSES, labels, ids, ArrayImages(x), split)


# -- the nuisances, by hand ------------------------------------------------------------

def test_invert_by_hand():
    x = np.array([[0, 10], [255, 100]], np.uint8)
    np.testing.assert_array_equal(invert(x), [[255, 245], [0, 155]])
    np.testing.assert_array_equal(invert(x, 0.0), x)
    # x + 0.5 (255 - 2x) = 127.5 for every x, rounded half to even
    np.testing.assert_array_equal(invert(x, 0.5), np.full((2, 2), 128))
    np.testing.assert_array_equal(x, [[0, 10], [255, 100]])  # the input is untouched


def test_border_by_hand():
    x = np.full((4, 5), 7, np.uint8)
    want = np.full((4, 5), 255, np.uint8)
    want[1:3, 1:4] = 7
    np.testing.assert_array_equal(border(x, 1), want)
    rgb = np.repeat(x[..., None], 3, -1)
    np.testing.assert_array_equal(border(rgb, 1), np.repeat(want[..., None], 3, -1))
    np.testing.assert_array_equal(border(x, 0), x)
    assert (x == 7).all()
    with pytest.raises(ConfigError, match="under half the image's side"):
        border(x, 2)  # a 2 px frame would cover all of a 4-pixel-high image
    with pytest.raises(ConfigError, match="integer"):
        border(x, 1.5)


def test_brightness_by_hand():
    x = np.array([[0, 100, 255]], np.uint8)
    # 0.5 x + 127.5: 127.5 -> 128, 177.5 -> 178 (half to even), 255
    np.testing.assert_array_equal(brightness(x, 0.5), [[128, 178, 255]])
    np.testing.assert_array_equal(brightness(x, 0.0), x)
    np.testing.assert_array_equal(brightness(x, 1.0), [[255, 255, 255]])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        brightness(x, 1.5)


def test_texture_by_hand():
    x = np.zeros((4, 4), np.uint8)
    x[0, 0], x[1, 1], x[3, 3] = 200, 20, 40  # bright, dark, and just above the darkness cutoff
    # stripes 2 px wide along the anti-diagonals: on where ((i + j) // 2) is even
    on = np.array([[1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0]], bool)
    want = np.where(on, 255, 0).astype(np.uint8)
    want[0, 0] = 200  # bright pixels are not background: untouched
    want[1, 1] = 20  # a dark pixel off the stripes keeps its value
    want[3, 3] = 40  # not dark (>= 32): untouched although off-stripe anyway
    np.testing.assert_array_equal(texture(x, 1.0), want)
    y = x.copy()
    y[0, 1] = 25  # dark and on a stripe: raised to the stripe's value 128
    assert texture(y, 0.5)[0, 1] == 128
    # in colour a pixel is dark only when every channel is
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 1] = (0, 0, 200)
    out = texture(rgb, 1.0)
    np.testing.assert_array_equal(out[0, 1], (0, 0, 200))
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))


def test_unknown_nuisance_is_named():
    with pytest.raises(ConfigError, match="Did you mean 'invert'.*Known: invert, border"):
        apply_nuisance(np.zeros((4, 4), np.uint8), "inverse")


# -- the confounded task -----------------------------------------------------------------

def _expected_carrier(part: str, label: int) -> bool:
    """The protocol: class A (label 0) carries the nuisance in train/val/id, B in ood/adapt."""
    return (label == 0) == (part in ("train", "val", "id"))


@pytest.mark.parametrize("nuisance", ["invert", "border", "brightness", "texture"])
def test_the_confound_is_exactly_as_stated(nuisance):
    data = fake_dataset()
    index = {item: i for i, item in enumerate(data.ids)}
    parts = confounded_task(data, ("dog", "owl"), nuisance, 12, 4, 6, 7, seed=3, n_adapt=2)
    assert {k: len(v) for k, v in parts.items()} == {"train": 24, "val": 8, "id": 12, "ood": 14, "adapt": 4}
    for name, part in parts.items():
        assert part.classes == ("dog", "owl")
        for k, item in enumerate(part.ids):
            source, tag = parse_id(item)
            src = data.images.array[index[source]]
            # the source item is of the class its label says
            assert data.classes[data.labels[index[source]]] == part.classes[part.labels[k]]
            pixels = part.images.array[k]
            edited = apply_nuisance(src, nuisance)
            assert not np.array_equal(edited, src)  # the nuisance is visible on every image
            carries = _expected_carrier(name, part.labels[k])
            np.testing.assert_array_equal(pixels, edited if carries else src)
            assert (tag is not None) == carries and (tag is None or tag.startswith(nuisance + "="))


def test_parts_draw_disjoint_items_from_the_right_splits():
    data = fake_dataset()
    split = dict(zip(data.ids, data.split, strict=True))
    parts = confounded_task(data, ("cat", "fox"), "border", 15, 5, 8, 9, seed=1, n_adapt=3)
    sources = {name: [parse_id(i)[0] for i in part.ids] for name, part in parts.items()}
    everything = [s for v in sources.values() for s in v]
    assert len(everything) == len(set(everything))
    for name, items in sources.items():
        want = "train" if name in ("train", "val") else "test"
        assert {split[s] for s in items} == {want}, name


def test_a_dataset_without_a_split_is_carved_like_a_run():
    data = fake_dataset()
    plain = ImageDataset(data.name, data.classes, data.labels, data.ids, data.images)
    from conceptlens.data import split_indices

    test_items = {plain.ids[i] for i in split_indices(plain, seed=2, val_fraction=0)["test"]}
    parts = confounded_task(plain, ("cat", "fox"), "invert", 10, 2, 5, 5, seed=2)
    for name, part in parts.items():
        inside = {parse_id(i)[0] in test_items for i in part.ids}
        assert inside == ({name in ("id", "ood")} if len(part) else set()), name


def test_determinism_and_independence_of_the_partner_class():
    data = fake_dataset()
    one = confounded_task(data, ("dog", "owl"), "texture", 10, 3, 5, 5, seed=4)
    two = confounded_task(data, ("dog", "owl"), "texture", 10, 3, 5, 5, seed=4)
    for k in one:
        assert one[k].ids == two[k].ids
        np.testing.assert_array_equal(one[k].images.array, two[k].images.array)
    other_seed = confounded_task(data, ("dog", "owl"), "texture", 10, 3, 5, 5, seed=5)
    assert other_seed["train"].ids != one["train"].ids
    # dog's items do not depend on its partner (only its role, A or B, sets the nuisance)
    with_fox = confounded_task(data, ("dog", "fox"), "texture", 10, 3, 5, 5, seed=4)
    for k in one:
        dogs = [parse_id(i)[0] for i, y in zip(one[k].ids, one[k].labels, strict=True) if y == 0]
        assert dogs == [parse_id(i)[0] for i, y in zip(with_fox[k].ids, with_fox[k].labels, strict=True)
                        if y == 0]


def test_task_errors_say_what_to_fix():
    data = fake_dataset(n_train=10, n_test=10)
    with pytest.raises(DataError, match=r"'dog' has 10 image\(s\) in the train split.*"
                                        r"needs 12 \(10 train \+ 2 val\)"):
        confounded_task(data, ("dog", "owl"), "invert", 10, 2, 5, 5)
    with pytest.raises(DataError, match="'dgo'.*Did you mean 'dog'.*Its classes: cat, dog"):
        confounded_task(data, ("dgo", "owl"), "invert", 2, 2, 2, 2)
    with pytest.raises(DataError, match="two different class names"):
        confounded_task(data, ("dog", "dog"), "invert", 2, 2, 2, 2)
    with pytest.raises(ConfigError, match="n_train must be an integer >= 1"):
        confounded_task(data, ("dog", "owl"), "invert", 0, 2, 2, 2)
    with pytest.raises(DataError, match="listed twice"):
        confounded_tasks(data, [("dog", "owl"), ("dog", "owl")], "invert", 2, 2, 2, 2)


def test_tasks_for_several_pairs_and_images_of_different_sizes():
    data = fake_dataset()
    tasks = confounded_tasks(data, [("cat", "dog"), ("fox", "owl")], "brightness", 3, 1, 2, 2)
    assert list(tasks) == ["cat vs dog", "fox vs owl"]
    assert tasks["fox vs owl"]["id"].classes == ("fox", "owl")
    # photos of different sizes are kept as they are (no common array)
    from conceptlens.data.confounded import ImageList

    imgs = ImageList([np.zeros((5, 6, 3), np.uint8), np.ones((7, 4, 3), np.uint8)] * 4)
    mixed = ImageDataset("mixed", ("a", "b"), np.arange(8) % 2, tuple(f"m/{i}" for i in range(8)), imgs,
                         ("train",) * 4 + ("test",) * 4)
    parts = confounded_task(mixed, ("a", "b"), "invert", 1, 1, 1, 1)
    src = {f"m/{i}": imgs.images[i] for i in range(8)}
    for name, part in parts.items():
        for k, item in enumerate(part.ids):
            source, tag = parse_id(item)
            got = part.images.decode(k, part.images.read(k))
            want = 255 - src[source] if tag else src[source]
            np.testing.assert_array_equal(got, want, err_msg=name)


# -- the shift metrics -------------------------------------------------------------------

class FixedScores:
    """A stand-in model whose scores are given per image id."""

    classes_ = ("a", "b")
    nec_ = 0.0
    needs_concepts = False

    def __init__(self, scores: dict):
        self.scores = scores

    def decision_function(self, bundle):
        return np.array([self.scores[i] for i in bundle.ids], float)

    def predict_proba(self, bundle):
        from conceptlens.methods.base import softmax

        return softmax(self.decision_function(bundle))


def _bundle(ids, labels):
    return FeatureBundle(list(ids), np.asarray(labels), ("a", "b"), np.zeros((len(ids), 2), np.float32),
                         None, "t")


def test_shift_metrics_by_hand():
    # ID: 3 of 4 right; OOD: 1 of 4 right
    scores = {"i0": [1, 0], "i1": [0, 1], "i2": [0, 1], "i3": [0, 1],
              "o0": [0, 1], "o1": [1, 0], "o2": [1, 0], "o3": [1, 0]}
    row = evaluate_shift(FixedScores(scores), _bundle(["i0", "i1", "i2", "i3"], [0, 1, 1, 0]),
                         _bundle(["o0", "o1", "o2", "o3"], [0, 1, 1, 0]))
    assert row == {"id": 75.0, "ood": 25.0, "gap": 50.0, "average": 50.0}
    # a task where OOD beats ID does not cancel one where ID beats OOD
    mean = mean_shift([shift_row(90, 60), shift_row(50, 70)])
    assert mean == pytest.approx({"id": 70.0, "ood": 65.0, "gap": 25.0, "average": 67.5})
    with pytest.raises(DataError, match="OOD bundle has no image"):
        evaluate_shift(FixedScores(scores), _bundle(["i0"], [0]), _bundle([], []))
    assert evaluate_test_time_shift(FixedScores(scores), None, None, None, None) is None


def test_test_time_rows_are_the_improved_models_accuracy():
    from conceptlens.intervene import improve_at_test_time
    from conceptlens.methods import get_method
    from conceptlens.methods.base import Context

    rng = np.random.default_rng(0)
    k, d = 6, 8
    C = rng.normal(size=(k, d))
    C /= np.linalg.norm(C, axis=1, keepdims=True)

    def bundle(n, tag, shift):
        labels = np.arange(n) % 2
        emb = C[labels * 3] + 0.5 * rng.normal(size=(n, d)) + shift * C[5]
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return FeatureBundle([f"{tag}{i}" for i in range(n)], labels, ("a", "b"), emb.astype(np.float32),
                             None, "t")

    prior = np.zeros((2, k), np.float32)
    prior[0, :3], prior[1, 3:] = 1, 1
    ctx = Context(("a", "b"), [f"c{i}" for i in range(k)], C.astype(np.float32), prior, None, "t")
    train, ind = bundle(40, "t", 0.0), bundle(20, "i", 0.0)
    adapt, ood = bundle(6, "a", 1.5), bundle(20, "o", 1.5)
    model = get_method("posthoc").fit(train, ctx)
    row = evaluate_test_time_shift(model, train, adapt, ind, ood)
    improved = improve_at_test_time(model, train, adapt)
    acc = [100 * float((improved.predict(b) == b.labels).mean()) for b in (ind, ood)]
    assert row["id"] == pytest.approx(acc[0]) and row["ood"] == pytest.approx(acc[1])
    assert row["gap"] == pytest.approx(abs(acc[0] - acc[1]))
    assert row["changes"] == len(improved.edit_log_) and row["adapt_images"] == 6
    with pytest.raises(DataError, match="also OOD test images"):
        evaluate_test_time_shift(model, train, ood.rows([0, 1]), ind, ood)
    with pytest.raises(DataError, match="adapt_per_class > 0"):
        evaluate_test_time_shift(model, train, ood.rows(np.zeros(len(ood), bool)), ind, ood)


# -- the [confounded] table ---------------------------------------------------------------

def test_parse_confounded_defaults_and_round_trip():
    from conceptlens.runs.confounded import ConfoundedConfig, confounded_toml, parse_confounded

    assert parse_confounded({}) == ConfoundedConfig()
    cfg = parse_confounded({"pairs": [["cat", "dog"]], "nuisance": "brightness", "strength": 1,
                            "train_per_class": 5, "adapt_per_class": 0})
    assert cfg.strength == 1.0 and isinstance(cfg.strength, float)
    again = parse_confounded(tomllib.loads(confounded_toml(cfg))["confounded"])
    assert again == cfg
    default = tomllib.loads(confounded_toml(ConfoundedConfig()))["confounded"]
    assert parse_confounded(default) == ConfoundedConfig()


@pytest.mark.parametrize(("table", "message"), [
    ({"nuisence": "invert"}, r"Unknown key 'nuisence' in \[confounded\]. Did you mean 'nuisance'\? Known: "
                             r"adapt_per_class, id_per_class, nuisance, ood_per_class, pairs, seed"),
    ({"nuisance": "blur"}, r"\[confounded\] nuisance = 'blur' is not one of 'invert', 'border'"),
    ({"nuisance": "invert", "strength": 2}, r"\[confounded\] strength must be a number in \[0, 1\]; got 2"),
    ({"nuisance": "border", "strength": 1.5}, r"\[confounded\] strength must be an integer >= 0 "
                                              r"\(the border's width in pixels\)"),
    ({"train_per_class": 0}, r"\[confounded\] train_per_class must be an integer >= 1; got 0"),
    ({"ood_per_class": "10"}, r"ood_per_class must be an integer >= 1; got '10' \(a string\)"),
    ({"val_per_class": -1}, r"val_per_class must be an integer >= 0 \(0 = no validation split\)"),
    ({"pairs": [["cat"]]}, r"\[confounded\] pairs must be a non-empty list of class-name pairs"),
    ({"pairs": []}, r"pairs must be a non-empty list"),
    ({"pairs": [["cat", "cat"]]}, r"pairs a class with itself"),
    ({"pairs": [["cat", "dog"], ["cat", "dog"]]}, r"lists a pair twice"),
    ({"seed": -1}, r"seed must be an integer in \[0, 4294967295\] \(a random seed\)"),
])
def test_parse_confounded_errors(table, message):
    from conceptlens.runs.confounded import parse_confounded

    with pytest.raises(ConfigError, match=message):
        parse_confounded(table)


# -- a whole run on the TinyBackbone ----------------------------------------------------

def _run_cfg(tmp_path, methods, concepts_file=None):
    from conceptlens.runs.config import ConceptConfig, RunConfig

    return RunConfig(methods=methods, progress=False, cache_dir=str(tmp_path / "cache"),
                     concepts=ConceptConfig([], concepts_file, True, 0.2, 2, "submodular", 0.1))


def _encode_parts(backbone, cache, data, cfg, pair):
    from conceptlens.features import encode_dataset

    parts = confounded_task(data, pair, cfg.nuisance, cfg.train_per_class, cfg.val_per_class,
                            cfg.id_per_class, cfg.ood_per_class, cfg.seed, strength=cfg.strength,
                            n_adapt=cfg.adapt_per_class)
    return {k: encode_dataset(backbone, v, cache, progress=False) for k, v in parts.items() if len(v)}


def test_run_confounded_end_to_end(tmp_path):
    from conceptlens.features.encode import image_cache
    from conceptlens.methods import get_method
    from conceptlens.runs.confounded import ConfoundedConfig, confounded_table, run_confounded
    from conceptlens.testing import TinyBackbone

    data = fake_dataset()
    backbone = TinyBackbone()
    cache_root = tmp_path / "cache" / "features"
    cache = image_cache(backbone, cache_root)
    cfg = ConfoundedConfig(pairs=[["dog", "owl"], ["cat", "fox"]], nuisance="brightness", strength=0.8,
                           train_per_class=20, val_per_class=5, id_per_class=10, ood_per_class=10,
                           adapt_per_class=3, seed=0)
    methods = {"zero_shot": {}, "linear_probe": {}}
    out = run_confounded(cfg, _run_cfg(tmp_path, methods), data, backbone, cache, cache_root)
    json.dumps(out)  # recordable as it is

    assert out["pairs"] == ["dog vs owl", "cat vs fox"]
    assert out["sizes"]["dog vs owl"] == {"train": 40, "val": 10, "id": 20, "ood": 20, "adapt": 6}
    assert out["test_time"] == {}  # neither method has a concept layer
    for method in methods:
        rows = out["results"][method]
        for r in rows["pairs"].values():
            assert r["gap"] == pytest.approx(abs(r["id"] - r["ood"]))
            assert r["average"] == pytest.approx((r["id"] + r["ood"]) / 2)
        for key in ("id", "ood", "gap", "average"):
            assert rows["mean"][key] == pytest.approx(np.mean([r[key] for r in rows["pairs"].values()]))
    # the images carry no class signal, only the nuisance: the probe learns the nuisance
    probe = out["results"]["linear_probe"]["mean"]
    assert probe["id"] >= 90 and probe["ood"] <= 10 and probe["gap"] >= 80
    assert all(e["shift"] > 0 for e in out["nuisance_effect"].values())

    # the numbers are those of a direct fit and evaluation on the same images
    for pair in cfg.pairs:
        b = _encode_parts(backbone, cache, data, cfg, tuple(pair))
        model = get_method("linear_probe").fit(b["train"], _context(backbone, pair, cache_root), b["val"])
        direct = [100 * float(np.mean(model.predict(b[k]) == b[k].labels)) for k in ("id", "ood")]
        got = out["results"]["linear_probe"]["pairs"][" vs ".join(pair)]
        assert [got["id"], got["ood"]] == pytest.approx(direct)

    table = confounded_table(out)
    assert f"| linear_probe | {probe['id']:.1f} | {probe['ood']:.1f} | {probe['gap']:.1f} |" in table
    assert "| zero_shot |" in table and "selected on a validation split" in table
    assert table == out["table"]
    assert confounded_table(out, per_pair=True).count("| linear_probe | ") == 2


def _context(backbone, pair, cache_root):
    from conceptlens.runs.experiment import build_context

    return build_context(backbone, tuple(pair), None, cache_root)


def test_run_confounded_with_concepts_and_test_time(tmp_path, monkeypatch):
    """A concept method: concepts are chosen per pair from that pair's own candidates, and
    the test-time rows appear (the text filters, which load the sentence encoder, are stubbed
    as in test_runs)."""
    import conceptlens.runs.stages as stages
    from conceptlens.concepts.pipeline import FilterResult
    from conceptlens.features.encode import image_cache
    from conceptlens.runs.confounded import ConfoundedConfig, run_confounded
    from conceptlens.testing import TinyBackbone

    monkeypatch.setattr(stages, "run_filters", lambda c, *a, **k: FilterResult(c))
    words = ["fur", "tail", "whiskers", "paws", "snout", "ears", "stripes", "spots", "claws",
             "beak", "feathers", "wings"]
    concepts = tmp_path / "class2concepts.json"
    concepts.write_text(json.dumps({c: words[3 * i: 3 * i + 3] for i, c in enumerate(CLASSES)}))
    data = fake_dataset()
    backbone = TinyBackbone()
    cache_root = tmp_path / "cache" / "features"
    cfg = ConfoundedConfig(pairs=[["dog", "owl"]], nuisance="border", strength=2, train_per_class=20,
                           val_per_class=5, id_per_class=10, ood_per_class=10, adapt_per_class=4)
    out = run_confounded(cfg, _run_cfg(tmp_path, {"posthoc": {}, "linear_probe": {}}, str(concepts)),
                         data, backbone, image_cache(backbone, cache_root), cache_root)
    # only dog's and owl's concepts were candidates (2 selected per class)
    assert out["concepts"]["dog vs owl"].startswith("4 concepts for 2 classes")
    tt = out["test_time"]["posthoc"]["pairs"]["dog vs owl"]
    assert tt["adapt_images"] == 8 and tt["gap"] == pytest.approx(abs(tt["id"] - tt["ood"]))
    assert list(out["test_time"]) == ["posthoc"]
    assert "| posthoc + test-time |" in out["table"] and "4 labelled OOD-domain images" in out["table"]


def test_run_confounded_checks_class_names_first(tmp_path):
    from conceptlens.runs.confounded import ConfoundedConfig, run_confounded
    from conceptlens.testing import TinyBackbone

    cfg = ConfoundedConfig()  # Fashion-MNIST's pairs, not this dataset's classes
    backbone = TinyBackbone()
    with pytest.raises(DataError, match=r"'Pullover'.*not a class of dataset 'toy'.*"
                                        r"Correct \[confounded\] pairs"):
        run_confounded(cfg, _run_cfg(tmp_path, {"linear_probe": {}}), fake_dataset(), backbone, None, None)
    assert backbone.encoded == 0

"""The built-in Fashion-MNIST attribute annotations, `load_annotations`, and the
`fashion-mnist-attributes` concept source."""

from __future__ import annotations

import csv
import io
from importlib import resources

import numpy as np
import pytest

from conceptlens.annotations import (
    attribute_rules,
    fashion_mnist_attributes,
    load_annotations,
)
from conceptlens.concepts.selection import select_concepts
from conceptlens.concepts.sources import get_source
from conceptlens.data.fashion_mnist import FASHION_MNIST_CLASSES
from conceptlens.errors import DataError


def _raw_table() -> tuple[list[str], dict[str, list[str]]]:
    """The shipped CSV parsed with the csv module alone: an independent reference for the loader."""
    text = resources.files("conceptlens.annotations").joinpath("data", "fashion_mnist_attributes.csv")
    rows = list(csv.reader(io.StringIO(text.read_text(encoding="utf-8"))))
    return rows[0][1:], {r[0]: r[1:] for r in rows[1:] if r}


def _true_classes(cells: list[str], classes: list[str]) -> set[str]:
    return {c for c, v in zip(classes, cells, strict=True) if v == "1"}


def test_shipped_file_passes_its_own_checks():
    ann = fashion_mnist_attributes()
    assert ann.level == "class" and ann.classes == FASHION_MNIST_CLASSES
    assert len(ann.concepts) >= 30
    v = ann.values
    for j, text in enumerate(ann.concepts):
        assert (v[:, j] == 1).any(), f"{text!r} is true for no class"
        assert (v[:, j] == 0).any(), f"{text!r} is false for no class"
    assert ((v == 1).sum(1) >= 3).all(), dict(zip(ann.classes, (v == 1).sum(1), strict=True))
    assert np.isnan(v).any(), "ambiguous cells must be unknown; none are"
    rules = attribute_rules()
    assert set(rules) == set(ann.concepts)
    assert all(len(r.split()) >= 5 for r in rules.values())
    assert "not crowd-sourced" in ann.provenance


def test_loaded_values_match_the_raw_csv():
    classes, table = _raw_table()
    ann = fashion_mnist_attributes()
    assert list(ann.concepts) == list(table)
    expected = np.array([[{"1": 1.0, "0": 0.0, "": np.nan}[c] for c in cells] for cells in table.values()]).T
    np.testing.assert_array_equal(ann.values, expected)
    assert tuple(classes) == ann.classes


@pytest.mark.parametrize("cls, text, value", [
    ("Sneaker", "has laces", 1.0),
    ("Trouser", "has two legs", 1.0),
    ("Bag", "is worn on the feet", 0.0),
    ("Ankle boot", "covers the ankle", 1.0),
    ("Sandal", "has an open toe", 1.0),
    ("Coat", "has long sleeves", 1.0),
    ("T-shirt/top", "has long sleeves", 0.0),
    ("Dress", "has long sleeves", np.nan),  # sleeveless, short and long all common
    ("Shirt", "has long sleeves", np.nan),
    ("Bag", "has a handle", 1.0),
])
def test_hand_checked_cells(cls, text, value):
    ann = fashion_mnist_attributes()
    got = ann.values[ann.classes.index(cls), ann.concepts.index(text)]
    np.testing.assert_equal(got, value)


def test_builtin_values_and_rules_cannot_be_changed_by_a_caller():
    ann = fashion_mnist_attributes()
    with pytest.raises(ValueError, match="read-only"):
        ann.values[0, 0] = 1.0
    rules = attribute_rules()
    rules["has laces"] = "changed"
    assert attribute_rules()["has laces"] != "changed"


def test_load_annotations_builtin_name():
    a, b = load_annotations("fashion-mnist"), fashion_mnist_attributes()
    assert a.concepts == b.concepts and a.classes == b.classes
    np.testing.assert_array_equal(a.values, b.values)


def test_load_annotations_class_csv(tmp_path):
    path = tmp_path / "cls.csv"
    path.write_text("attribute,cat,dog\nhas whiskers,1,1\nbarks,0,1\nis fluffy,,1\n")
    ann = load_annotations(path)
    assert ann.level == "class" and ann.classes == ("cat", "dog")
    assert ann.concepts == ("has whiskers", "barks", "is fluffy")
    np.testing.assert_array_equal(ann.values, [[1, 0, np.nan], [1, 1, 1]])
    assert load_annotations(str(path)).concepts == ann.concepts  # a str path too


def test_load_annotations_image_csv(tmp_path):
    path = tmp_path / "img.csv"
    path.write_text("\n\npath,has laces,has a heel\na.png,1,\nb.png,0,1\n")  # leading blank lines
    ann = load_annotations(path)
    assert ann.level == "image" and ann.items == ("a.png", "b.png")
    assert ann.concepts == ("has laces", "has a heel")
    np.testing.assert_array_equal(ann.values, [[1, np.nan], [0, 1]])


def test_load_annotations_errors(tmp_path):
    with pytest.raises(DataError, match=r"'fashion-mnst'.*neither a built-in set \(fashion-mnist\)"):
        load_annotations("fashion-mnst")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,cat\nx,1\n")
    with pytest.raises(DataError, match=r"header starts with 'name'; expected 'attribute'.*or 'path'"):
        load_annotations(bad)
    with pytest.raises(
            DataError, match=r"unknown built-in annotation set 'cub'; built-ins: \['fashion-mnist'\]"
    ):
        attribute_rules("cub")


def test_source_links_each_attribute_to_its_true_classes():
    result = get_source("fashion-mnist-attributes").generate(list(FASHION_MNIST_CLASSES))
    cs = result.concepts
    assert result.unresolved == {} and result.rejected == []
    # hand-computed from the class definitions
    got = {c.text: set(c.classes) for c in cs}
    assert got["is worn on the feet"] == {"Sandal", "Sneaker", "Ankle boot"}
    assert got["has laces"] == {"Sneaker"}
    assert got["has sleeves"] == {"T-shirt/top", "Pullover", "Coat", "Shirt"}
    assert got["has long sleeves"] == {"Pullover", "Coat"}  # Dress and Shirt unknown: no link
    # every attribute, against the CSV parsed independently (1 links; 0 and unknown do not)
    classes, table = _raw_table()
    assert got == {text: _true_classes(cells, classes) for text, cells in table.items()}
    m = cs.class_matrix(list(FASHION_MNIST_CLASSES))
    assert m.sum() == sum(row.count("1") for row in table.values())
    assert all(p["rule"] == attribute_rules()[c.text] for c in cs for p in c.provenance)


def test_source_reports_unknown_classes_and_unused_attributes():
    result = get_source("fashion-mnist-attributes").generate(["sneaker", "Cat"])
    assert list(result.unresolved) == ["Cat"]
    assert "not among the annotated classes" in result.unresolved["Cat"]
    cs = result.concepts
    # linked under the caller's spelling, so the run's class alignment finds it
    assert {c.text for c in cs} == {
        "is worn on the feet", "is wider than it is tall", "has a sole", "has laces", "covers the whole foot",
        "has a tongue under the laces", "has a flat sole", "has a rubber sole"}
    assert all(c.classes == ["sneaker"] for c in cs)
    rejected = {r.text for r in result.rejected}
    assert "has two legs" in rejected and len(rejected) == 36 - 8


def test_source_with_a_user_class_csv(tmp_path):
    path = tmp_path / "cls.csv"
    path.write_text("attribute,cat,dog\nhas whiskers,1,1\nbarks,0,1\nis fluffy,,1\n")
    result = get_source("fashion-mnist-attributes", annotations=str(path)).generate(["cat", "dog"])
    assert {c.text: c.classes for c in result.concepts} == {
        "has whiskers": ["cat", "dog"], "barks": ["dog"], "is fluffy": ["dog"]}


def test_default_selection_keeps_every_attribute():
    """per_class >= the most true attributes of any class keeps all (the run config's default 20)."""
    cs = get_source("fashion-mnist-attributes").generate(list(FASHION_MNIST_CLASSES)).concepts
    most = max(len(cs.for_class(c)) for c in FASHION_MNIST_CLASSES)
    assert most <= 20
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(cs), 8))
    for method in ("submodular", "top_k", "random"):
        sel = select_concepts(cs, emb, scores=rng.random(len(cs)), per_class=most, method=method)
        assert sorted(sel.indices) == list(range(len(cs)))
    # one fewer for the class with the most drops its lowest-scored class-only attribute
    only = [i for i in cs.for_class("Pullover") if cs.concepts[i].classes == ["Pullover"]]
    scores = np.ones(len(cs))
    scores[only[0]] = 0.0
    assert most == len(cs.for_class("Pullover"))
    sel = select_concepts(cs, emb, scores=scores, per_class=most - 1, method="top_k")
    assert only[0] not in sel.indices and len(sel.indices) == len(cs) - 1


def test_run_config_accepts_the_source(tmp_path):
    from conceptlens.runs import load_config

    f = tmp_path / "run.toml"
    f.write_text('[concepts]\nsources = ["fashion-mnist-attributes"]\nfilter = false\n')
    cfg = load_config(f)
    cs = get_source(cfg.concepts.sources[0]).generate(list(FASHION_MNIST_CLASSES)).concepts
    # the default per_class already keeps every attribute (see the selection test above)
    assert cfg.concepts.filter is False
    assert cfg.concepts.per_class >= max(len(cs.for_class(c)) for c in FASHION_MNIST_CLASSES)

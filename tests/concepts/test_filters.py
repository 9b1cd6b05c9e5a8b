"""Label-free CBM's filters on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.concepts import (
    ConceptSet,
    TextSimilarity,
    filter_activation,
    filter_class_similarity,
    filter_duplicates,
    filter_length,
)
from conceptlens.concepts.filters import top_k_activation
from conceptlens.errors import ConfigError

# a toy "encoder": fixed 2-d unit vectors, so every cosine is known by hand
VECTORS = {
    "cat": [1, 0], "dog": [0, 1],
    "kitten": [0.9, np.sqrt(1 - 0.81)],  # cos with cat 0.9
    "whiskers": [0.6, 0.8],  # cos with cat 0.6, dog 0.8
    "fur": [np.sqrt(0.5), np.sqrt(0.5)],
    "soft fur": [0.8, 0.6],  # cos with fur 0.98995
}


def toy(texts):
    return np.asarray([VECTORS[t] for t in texts], dtype=np.float64)


def concept_set(*texts):
    cs = ConceptSet(["cat", "dog"])
    for t in texts:
        cs.add(t, ["cat"], [{"source": "t"}])
    return cs


def test_length():
    cs, dropped = filter_length(concept_set("fur", "a very long concept indeed, too long"), 30)
    assert cs.texts == ["fur"]
    assert dropped[0].filter == "length" and dropped[0].detail == "36 characters > 30"


def test_class_similarity_drops_label_leaks():
    cs, dropped = filter_class_similarity(concept_set("kitten", "whiskers", "fur"), ["cat", "dog"],
                                          TextSimilarity([(toy, 1)]), cutoff=0.85)
    assert cs.texts == ["whiskers", "fur"]
    assert dropped[0].text == "kitten" and "0.900 >= 0.85 with class 'cat'" in dropped[0].detail


def test_weighted_similarity_is_the_weighted_mean():
    other = lambda texts: np.ones((len(texts), 2)) / np.sqrt(2)  # noqa: E731 - all cos = 1
    sim = TextSimilarity([(toy, 1), (other, 3)])
    assert sim(["whiskers"], ["cat"])[0, 0] == pytest.approx((0.6 + 3 * 1.0) / 4)
    with pytest.raises(ConfigError):
        TextSimilarity([(toy, 0)])


def test_duplicates_toy_encoder_and_classes_pass_on():
    cs = ConceptSet(["cat", "dog"])
    cs.add("fur", ["cat"])
    cs.add("soft fur", ["dog"])
    cs.add("whiskers", ["dog"])
    kept, dropped = filter_duplicates(cs, TextSimilarity([(toy, 1)]), cutoff=0.9)
    # all three pairs are >= 0.9 (fur-soft fur = fur-whiskers = 0.98995, soft fur-whiskers 0.96);
    # totals: fur 2.980 > soft fur = whiskers 2.950, so fur stays and takes both others' classes
    assert kept.texts == ["fur"]
    assert {d.text for d in dropped} == {"soft fur", "whiskers"}
    assert kept.concepts[0].classes == ["cat", "dog"]


def reference_filter_too_similar(concepts, dot_prods, sim_cutoff):
    """Label-free CBM's conceptset_utils.filter_too_similar, transcribed (encoders replaced by
    the given matrix, printing removed), on the list as the reference gets it: sorted."""
    order = sorted(range(len(concepts)), key=lambda i: concepts[i])
    concepts = [concepts[i] for i in order]
    dot_prods = dot_prods[np.ix_(order, order)]
    to_delete = []
    for i in range(len(concepts)):
        for j in range(len(concepts)):
            prod = dot_prods[i, j]
            if prod >= sim_cutoff and i != j:  # noqa: SIM102 - kept as the reference writes it
                if i not in to_delete and j not in to_delete:
                    if np.sum(dot_prods[i]) < np.sum(dot_prods[j]):
                        to_delete.append(i)
                    else:
                        to_delete.append(j)
    to_delete = sorted(to_delete)[::-1]
    for item in to_delete:
        concepts.pop(item)
    return concepts


def test_duplicates_drop_the_lower_total_similarity_not_the_later():
    cs = concept_set("apple", "banana", "cherry")
    S = np.array([[1.0, 0.95, 0.1],   # apple: total 2.05
                  [0.95, 1.0, 0.5],   # banana: total 2.45
                  [0.1, 0.5, 1.0]])
    kept, dropped = filter_duplicates(cs, S, cutoff=0.9)
    # "drop the later one" would drop banana; the reference drops apple (lower total)
    assert kept.texts == ["banana", "cherry"]
    assert [d.text for d in dropped] == ["apple"]
    assert dropped[0].detail == "0.950 >= 0.9 with 'banana'; lower total similarity (2.050 < 2.450)"
    assert kept.texts == reference_filter_too_similar(cs.texts, S, 0.9)


def test_duplicates_follow_sorted_order_and_chains_pass_classes_on():
    cs = ConceptSet(["x", "y", "z", "w"])
    for text, cls in [("cherry", "z"), ("banana", "y"), ("apple", "x"), ("date", "w")]:
        cs.add(text, [cls])
    #               cherry banana apple date   (set order; sorted: apple, banana, cherry, date)
    S = np.array([[1.0, 0.92, 0.3, 0.85],   # total 3.07
                  [0.92, 1.0, 0.95, 0.0],   # total 2.87
                  [0.3, 0.95, 1.0, 0.0],    # total 2.25
                  [0.85, 0.0, 0.0, 1.0]])   # total 1.85
    kept, dropped = filter_duplicates(cs, S, cutoff=0.9)
    # sorted: apple-banana -> apple goes; banana-cherry -> banana goes. Visiting in the set's
    # order instead would drop only banana (cherry-banana first) and keep apple.
    assert kept.texts == ["cherry", "date"] == sorted(reference_filter_too_similar(cs.texts, S, 0.9))
    assert [d.text for d in dropped] == ["apple", "banana"]
    # apple's class passes to banana, which is dropped too, so on to cherry
    assert sorted(kept.concepts[0].classes) == ["x", "y", "z"]


@pytest.mark.parametrize("seed", range(5))
def test_duplicates_match_the_reference_on_random_similarities(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 4))  # low dimension: many pairs above the cutoff
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    texts = [f"c{int(v)}" for v in rng.permutation(1000)[:40]]
    cs = ConceptSet(["x"])
    for t in texts:
        cs.add(t, ["x"])
    kept, dropped = filter_duplicates(cs, S, cutoff=0.9)
    assert len(dropped) > 5
    assert sorted(kept.texts) == reference_filter_too_similar(texts, S, 0.9)


def test_duplicates_bad_matrix_is_a_config_error():
    with pytest.raises(ConfigError, match="3 x 3 similarity matrix; got shape"):
        filter_duplicates(concept_set("a", "b", "c"), np.eye(2))


def test_activation_mean_of_top_k_by_hand():
    images = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]])
    concepts = toy(["cat", "dog"])
    # cat column: sims 1, 0, 0.6, 0.8 -> top-2 mean 0.9; dog: 0, 1, 0.8, 0.6 -> 0.9
    np.testing.assert_allclose(top_k_activation(images, concepts, top=2), [0.9, 0.9])
    np.testing.assert_allclose(top_k_activation(images, concepts, top=3), [0.8, 0.8])
    cs = concept_set("cat", "dog")
    kept, dropped = filter_activation(cs, images[:2] * [1, 0.5], concepts, cutoff=0.6, top=1)
    assert kept.texts == ["cat"] and dropped[0].text == "dog"
    assert dropped[0].detail == "mean top-1 activation 0.500 <= 0.600"
    # the reference keeps only scores strictly above the cutoff (`highest > clip_cutoff`)
    kept, dropped = filter_activation(cs, images[:2] * [1, 0.5], concepts, cutoff=0.5, top=1)
    assert kept.texts == ["cat"] and dropped[0].detail == "mean top-1 activation 0.500 <= 0.500"
    kept, _ = filter_activation(cs, images, concepts, quantile=0.0, top=1)
    assert kept.texts == ["cat", "dog"]


def test_source_aware_cap_keeps_whole_wordnet_phrases():
    from conceptlens.concepts.filters import SOURCE_MAX_CHARS

    cs = ConceptSet(["zebra"])
    long_wordnet = "fleet black-and-white striped African equines"  # 45 characters, whole
    cs.add(long_wordnet, ["zebra"], [{"source": "wordnet"}])
    cs.add("a bold black-and-white striped coat", ["zebra"], [{"source": "llm"}])  # 35 characters
    cs.add("has a mane that stands upright on the neck", ["zebra"], [{"source": "fashion-mnist-attributes"}])
    cs.add("x" * 61, ["zebra"], [{"source": "imagenet"}])
    # one concept from two sources takes the more lenient cap
    cs.add("thirty-five characters long phrase!", ["zebra"], [{"source": "llm"}, {"source": "wordnet"}])
    kept, dropped = filter_length(cs, 30, SOURCE_MAX_CHARS)
    assert kept.texts == [long_wordnet, "has a mane that stands upright on the neck",
                          "thirty-five characters long phrase!"]
    assert {d.text: d.detail for d in dropped} == {
        "a bold black-and-white striped coat": "35 characters > 30", "x" * 61: "61 characters > 60"}
    reference, _ = filter_length(cs, 30, {})  # the reference: one cap for all
    assert reference.texts == []

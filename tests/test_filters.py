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


def test_duplicates_greedy_in_order_and_classes_pass_on():
    cs = ConceptSet(["cat", "dog"])
    cs.add("fur", ["cat"])
    cs.add("soft fur", ["dog"])
    cs.add("whiskers", ["dog"])
    kept, dropped = filter_duplicates(cs, TextSimilarity([(toy, 1)]), cutoff=0.9)
    # fur vs soft fur: cos = 0.98995 >= 0.9 -> dropped; whiskers vs fur 0.98995? no: 0.9899
    # whiskers vs fur = (0.6+0.8)/sqrt2 = 0.98995 as well -> also a duplicate of fur
    assert kept.texts == ["fur"]
    assert {d.text for d in dropped} == {"soft fur", "whiskers"}
    assert kept.concepts[0].classes == ["cat", "dog"]


def test_activation_mean_of_top_k_by_hand():
    images = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]])
    concepts = toy(["cat", "dog"])
    # cat column: sims 1, 0, 0.6, 0.8 -> top-2 mean 0.9; dog: 0, 1, 0.8, 0.6 -> 0.9
    np.testing.assert_allclose(top_k_activation(images, concepts, top=2), [0.9, 0.9])
    np.testing.assert_allclose(top_k_activation(images, concepts, top=3), [0.8, 0.8])
    cs = concept_set("cat", "dog")
    kept, dropped = filter_activation(cs, images[:2] * [1, 0.5], concepts, cutoff=0.6, top=1)
    assert kept.texts == ["cat"] and dropped[0].text == "dog"
    assert dropped[0].detail == "mean top-1 activation 0.500 < 0.600"
    kept, _ = filter_activation(cs, images, concepts, quantile=0.0, top=1)
    assert kept.texts == ["cat", "dog"]

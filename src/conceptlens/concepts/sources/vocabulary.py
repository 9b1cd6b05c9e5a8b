"""`vocabulary`: common concrete English nouns from WordNet, for discovery methods.

Nouns under `physical_entity` ranked by their WordNet sense-tagged frequency; global
concepts (no class), as Discover-then-Name and V2C-CBM use a word vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ...validation import Interval
from ..normalize import collect
from ..wordnet_db import wordnet
from .base import SOURCES, ConceptSource, SourceResult


def common_concrete_nouns(size: int = 20000) -> list[str]:
    wn = wordnet()
    root = wn.synset("physical_entity.n.01")
    counts: dict[str, int] = {}
    for s in wn.all_synsets("n"):
        if root not in s.closure(lambda x: x.hypernyms()):
            continue
        for lemma in s.lemmas():
            word = lemma.name()
            if "_" in word or not word.isalpha() or not word.islower():
                continue  # single common words only: no phrases, proper nouns or numbers
            counts[word] = counts.get(word, 0) + lemma.count() + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:size]


@SOURCES.register("vocabulary")
class VocabularySource(ConceptSource):
    name = "vocabulary"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "size": [Interval(int, 1, description="an integer >= 1 (words in the vocabulary)")]}

    def __init__(self, size: int = 20000):
        self.check_options(locals())
        self.size = size

    def generate(self, classes: Sequence[str]) -> SourceResult:
        prov = {"source": "vocabulary", "model": "WordNet 3.0"}
        concepts, rejected = collect(((w, [], prov) for w in common_concrete_nouns(self.size)),
                                     classes=classes)
        return SourceResult(concepts, {}, rejected)

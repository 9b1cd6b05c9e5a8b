"""The concept stages wired to a backbone and a dataset (what the CLI calls)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backbones import Backbone
from ..errors import DataError
from ..features import FeatureBundle, encode_texts
from .conceptset import ConceptSet
from .filters import (
    Dropped,
    TextSimilarity,
    filter_activation,
    filter_class_similarity,
    filter_duplicates,
    filter_length,
)
from .selection import Selection, select_concepts


def label_free_similarity(backbone: Backbone, cache=None, sentence_weight: float = 1.0,
                          backbone_weight: float = 3.0) -> TextSimilarity:
    """Label-free CBM's text similarity: sentence encoder and backbone text tower, 1:3."""
    from ..backbones.text_encoder import encode_sentences

    return TextSimilarity([(encode_sentences, sentence_weight),
                           (lambda t: encode_texts(backbone, t, cache), backbone_weight)])


@dataclass
class FilterResult:
    concepts: ConceptSet
    dropped: list[Dropped] = field(default_factory=list)

    def report(self) -> str:
        by = {}
        for d in self.dropped:
            by.setdefault(d.filter, []).append(d)
        lines = [f"kept {len(self.concepts)} concepts; dropped {len(self.dropped)}"]
        for name, items in by.items():
            lines.append(f"  {name}: {len(items)} (e.g. {items[0].text!r}: {items[0].detail})")
        return "\n".join(lines)


def align_classes(concepts: ConceptSet, dataset_classes: Sequence[str]) -> list[str]:
    """The concept set's class names in the dataset's order; an error names any mismatch."""
    by_key = {c.casefold(): c for c in concepts.classes}
    missing = [c for c in dataset_classes if c.casefold() not in by_key]
    if missing:
        raise DataError(f"Dataset classes without concepts in the concept set: {missing[:10]}. "
                        f"The concept set has: {concepts.classes[:10]}.")
    return [by_key[c.casefold()] for c in dataset_classes]


def run_filters(concepts: ConceptSet, backbone: Backbone, classes: Sequence[str],
                train: FeatureBundle | None = None, max_chars: int = 30,
                class_cutoff: float = 0.85, duplicate_cutoff: float = 0.9,
                activation_cutoff: float = 0.25, activation_quantile: float | None = None,
                cache=None) -> FilterResult:
    sim = label_free_similarity(backbone, cache)
    dropped: list[Dropped] = []
    concepts, d = filter_length(concepts, max_chars)
    dropped += d
    concepts, d = filter_class_similarity(concepts, list(classes), sim, class_cutoff)
    dropped += d
    concepts, d = filter_duplicates(concepts, sim, duplicate_cutoff)
    dropped += d
    if train is not None and len(concepts):
        emb = encode_texts(backbone, concepts.texts, cache)
        concepts, d = filter_activation(concepts, train.embedding, emb, activation_cutoff,
                                        quantile=activation_quantile)
        dropped += d
    return FilterResult(concepts, dropped)


def run_selection(concepts: ConceptSet, backbone: Backbone, train: FeatureBundle,
                  cache=None, **options) -> Selection:
    classes = align_classes(concepts, train.classes)
    emb = encode_texts(backbone, concepts.texts, cache)
    return select_concepts(concepts, emb, train.embedding, np.asarray(train.labels), classes,
                           **options)

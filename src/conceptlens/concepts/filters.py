"""Label-free CBM's concept filters; each returns what it kept and what it dropped, and why.

Order as published: length; too similar to a class name (so a concept cannot leak the
label); too similar to a kept concept; too weakly activated on the training images.
Text similarity is a weighted mean of cosines from several text encoders; Label-free CBM
uses a sentence encoder and CLIP's text tower with weights 1:3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .conceptset import ConceptSet
from .normalize import merge_near_duplicates

TextEncoder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Dropped:
    text: str
    filter: str
    detail: str


class TextSimilarity:
    """Weighted mean of cosine similarities from several (encoder, weight) pairs."""

    def __init__(self, encoders: Sequence[tuple[TextEncoder, float]]):
        if not encoders or any(w < 0 for _, w in encoders) or sum(w for _, w in encoders) <= 0:
            raise ConfigError("TextSimilarity needs at least one encoder with a positive weight.")
        self.encoders = list(encoders)

    def __call__(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        total = sum(w for _, w in self.encoders)
        out = np.zeros((len(a), len(b)), dtype=np.float64)
        for encode, w in self.encoders:
            if w:
                out += w * (encode(list(a)) @ encode(list(b)).T)
        return out / total


def _keep(concepts: ConceptSet, keep: np.ndarray) -> ConceptSet:
    return concepts.subset(np.flatnonzero(keep))


def filter_length(concepts: ConceptSet, max_chars: int = 30) -> tuple[ConceptSet, list[Dropped]]:
    lengths = np.array([len(t) for t in concepts.texts])
    keep = lengths <= max_chars
    dropped = [Dropped(t, "length", f"{n} characters > {max_chars}")
               for t, n, k in zip(concepts.texts, lengths, keep, strict=True) if not k]
    return _keep(concepts, keep), dropped


def filter_class_similarity(concepts: ConceptSet, classes: Sequence[str], similarity: TextSimilarity,
                            cutoff: float = 0.85) -> tuple[ConceptSet, list[Dropped]]:
    """Drop concepts whose similarity to any class name is >= cutoff."""
    if not len(concepts) or not len(classes):
        return concepts, []
    sims = similarity(concepts.texts, classes)
    best = sims.argmax(1)
    keep = sims.max(1) < cutoff
    dropped = [Dropped(t, "class_similarity", f"{sims[i, best[i]]:.3f} >= {cutoff} with class "
                       f"{classes[best[i]]!r}")
               for i, t in enumerate(concepts.texts) if not keep[i]]
    return _keep(concepts, keep), dropped


def filter_duplicates(concepts: ConceptSet, similarity: TextSimilarity,
                      cutoff: float = 0.9) -> tuple[ConceptSet, list[Dropped]]:
    """Greedy in order: drop a concept whose similarity to an earlier kept one is >= cutoff.

    The dropped concept's classes and provenance pass to the concept it duplicates.
    """
    if len(concepts) < 2:
        return concepts, []
    kept, merges = merge_near_duplicates(concepts, similarity(concepts.texts, concepts.texts), cutoff)
    return kept, [Dropped(merged, "duplicate", f"{s:.3f} >= {cutoff} with {into!r}")
                  for into, merged, s in merges]


def top_k_activation(image_embedding: np.ndarray, concept_embedding: np.ndarray,
                     top: int = 5) -> np.ndarray:
    """Mean of each concept's `top` highest image-concept similarities."""
    sims = image_embedding @ concept_embedding.T
    top = min(top, len(sims))
    return np.partition(sims, len(sims) - top, axis=0)[len(sims) - top :].mean(0)


def filter_activation(concepts: ConceptSet, image_embedding: np.ndarray,
                      concept_embedding: np.ndarray, cutoff: float = 0.25, top: int = 5,
                      quantile: float | None = None) -> tuple[ConceptSet, list[Dropped]]:
    """Drop concepts whose mean top-`top` activation over the training images is < cutoff.

    With `quantile` (0..1) the cutoff is that quantile of all concepts' scores instead, for
    backbones whose similarity scale differs from CLIP's (where 0.25 was tuned).
    """
    if len(concept_embedding) != len(concepts):
        raise ConfigError(f"{len(concept_embedding)} concept embeddings for {len(concepts)} concepts.")
    scores = top_k_activation(image_embedding, concept_embedding, top)
    if quantile is not None:
        cutoff = float(np.quantile(scores, quantile))
    keep = scores >= cutoff
    dropped = [Dropped(t, "activation", f"mean top-{top} activation {s:.3f} < {cutoff:.3f}")
               for t, s, k in zip(concepts.texts, scores, keep, strict=True) if not k]
    return _keep(concepts, keep), dropped

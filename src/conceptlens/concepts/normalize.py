"""Turning raw concept texts into a clean ConceptSet, and merging near duplicates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .conceptset import ConceptSet, clean_text, concept_key

MAX_CHARS = 120  # longer entries are paragraphs an LLM wrote, not concepts


@dataclass(frozen=True)
class Rejected:
    text: str
    classes: tuple[str, ...]
    reason: str


def collect(
    entries: Iterable[tuple[str, Iterable[str], dict]],
    classes: Iterable[str] = (),
    max_chars: int = MAX_CHARS,
) -> tuple[ConceptSet, list[Rejected]]:
    """Build a ConceptSet from (text, classes, provenance) triples.

    Exact duplicates (same `concept_key`) merge and unite their classes; empty and over-long
    entries are not added but returned, with the reason, so the caller can report them.
    """
    out, rejected = ConceptSet(classes), []
    for text, cls, prov in entries:
        cls = tuple(cls)
        cleaned = clean_text(text) if isinstance(text, str) else ""
        if not concept_key(cleaned):
            rejected.append(Rejected(str(text), cls, "empty"))
        elif len(cleaned) > max_chars:
            rejected.append(Rejected(cleaned, cls, f"longer than {max_chars} characters"))
        else:
            out.add(cleaned, cls, [prov] if prov else [])
    return out, rejected


def merge_near_duplicates(
    concepts: ConceptSet, embeddings: np.ndarray, threshold: float = 0.95
) -> tuple[ConceptSet, list[tuple[str, str, float]]]:
    """Merge concepts whose text embeddings have cosine >= threshold into the earlier one.

    Classes and provenance are united; returns the merged set and (kept, merged, cosine).
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    keep: list[int] = []
    into: dict[int, int] = {}
    merges = []
    for j in range(len(concepts)):
        if keep:
            sims = emb[keep] @ emb[j]
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                into[j] = keep[best]
                merges.append((concepts.concepts[keep[best]].text, concepts.concepts[j].text,
                               float(sims[best])))
                continue
        keep.append(j)
    out = ConceptSet(concepts.classes)
    for j in keep:
        c = concepts.concepts[j]
        out.add(c.text, c.classes, c.provenance)
    for j, k in into.items():
        c = concepts.concepts[j]
        out.add(concepts.concepts[k].text, c.classes, c.provenance)
    return out, merges

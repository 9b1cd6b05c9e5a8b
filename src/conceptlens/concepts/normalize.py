"""Turning raw concept texts into a clean ConceptSet, and merging near duplicates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .antonyms import opposed
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
    concepts: ConceptSet, similarity: np.ndarray, threshold: float = 0.95
) -> tuple[ConceptSet, list[tuple[str, str, float]]]:
    """Greedy in order: a concept whose similarity (k x k) to an earlier kept one is
    >= threshold merges into it (classes and provenance united), unless the two say opposite
    things (concepts/antonyms.py: antonyms, a negation), which never merge.

    Returns the merged set and (kept, merged, similarity) for every merge.
    """
    sims = np.asarray(similarity, dtype=np.float64)
    keep: list[int] = []
    into: dict[int, int] = {}
    for j in range(len(concepts)):
        texts = concepts.texts
        allowed = [k for k in keep if not opposed(texts[k], texts[j])] if keep else []
        if allowed:
            best = allowed[int(np.argmax(sims[allowed, j]))]
            if sims[best, j] >= threshold:
                into[j] = best
                continue
        keep.append(j)
    out = concepts.subset(keep)
    for j, k in into.items():
        c = concepts.concepts[j]
        out.add(concepts.concepts[k].text, c.classes, c.provenance)
    merges = [(concepts.texts[k], concepts.texts[j], float(sims[k, j])) for j, k in into.items()]
    return out, merges

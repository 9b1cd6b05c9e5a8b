"""Label-free CBM's concept filters; each returns what it kept and what it dropped, and why.

Order as published: length; too similar to a class name (so a concept cannot leak the
label); near duplicates; too weakly activated on the training images.
Text similarity is a weighted mean of cosines from several text encoders; Label-free CBM
uses a sentence encoder and CLIP's text tower with weights 1:3.

Followed (github.com/Trustworthy-ML-Lab/Label-free-CBM, HEAD of the stored snapshot):
`conceptset_utils.py` (`remove_too_long`, `filter_too_similar_to_cls`, `filter_too_similar`,
called in that order by `GPT_conceptset_processor.ipynb` with 30 characters, 0.85, 0.9) and
`train_cbm.py` (mean top-5 CLIP activation over the training images must be > 0.25).

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| class filter pairs [1] | skips class i vs concept i | every pair | more drops, rarely |
| class-name text match [2] | removed before similarity | by similarity only | none found |
| duplicates: classes [3] | flat list | passed to the concept kept | same concepts kept |
| duplicates: output order | sorted | the set's order | none |
| activation `quantile` | absent | cutoff = quantile, kept at it | only when set |
| length cap per source [4] | 30 characters for all | 60 for wordnet/imagenet, none for attributes | see [4] |

[1] `filter_too_similar_to_cls` tests `i != j` with i a class index and j a concept index
    (copied from the duplicate filter): an indexing slip, not a rule, so not reproduced.
[2] A concept equal to a class name (also with "a "/"the " or capitalised) has similarity
    ~1 >= 0.85 to it, so the similarity rule drops it too.
[3] Concept sets are many-to-many with provenance; the reference's list has neither.
[4] `run_filters(source_max_chars=SOURCE_MAX_CHARS)`: the reference caps GPT-3 phrases, which
    are short by prompt; WordNet and ImageNet phrases are whole clauses. Measured with the
    WordNet source (candidates, then kept by the length filter alone; "split" = the earlier
    gloss splitting with one 30-character cap, "whole" = `gloss_phrases` with these caps):
    10 Fashion-MNIST classes 85 -> 79 (split) vs 86 -> 86 (whole); 10 animals (bear, cat,
    dog, cow, sheep, horse, zebra, elephant, giraffe, bird) 74 -> 64 vs 75 -> 73; 10 digit
    names 12 -> 5 vs 13 -> 12. `source_max_chars={}` is the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .antonyms import opposed
from .conceptset import ConceptSet

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

    def row_blocks(self, a: Sequence[str], b: Sequence[str], rows: int):
        """(start, block) over `self(a, b)` `rows` rows at a time, each text list encoded once
        per encoder: the same numbers as the full matrix without holding it (a 20,000-word
        vocabulary's 20,000 x 20,000 float64 matrix is 3.2 GB, and its sum twice that)."""
        total = sum(w for _, w in self.encoders)
        pairs = []
        for encode, w in self.encoders:
            if w:
                ea = encode(list(a))
                pairs.append((ea, ea if b is a else encode(list(b)), w))
        for s in range(0, len(a), rows):
            out = np.zeros((min(rows, len(a) - s), len(b)), dtype=np.float64)
            for ea, eb, w in pairs:
                out += w * (ea[s:s + rows] @ eb.T)
            yield s, out / total


# rows of a similarity block: about 32 MB of float64 whatever the number of concepts
_BLOCK_ELEMENTS = 1 << 22


def _keep(concepts: ConceptSet, keep: np.ndarray) -> ConceptSet:
    return concepts.subset(np.flatnonzero(keep))


# Label-free CBM's 30 characters were tuned on short GPT phrases; WordNet glosses and
# ImageNet descriptions give whole phrases that are longer ("fleet black-and-white striped
# African equines") and annotated attributes are what they are, so these sources get their own cap
SOURCE_MAX_CHARS: dict[str, int | None] = {"wordnet": 60, "imagenet": 60, "fashion-mnist-attributes": None}


def _cap(concept, max_chars: int, source_max_chars: Mapping[str, int | None]) -> float:
    """The most lenient cap among the concept's sources (a concept from two sources is as
    long for both); no provenance or an unlisted source gets `max_chars`."""
    caps = [source_max_chars.get(p.get("source"), max_chars) for p in concept.provenance] or [max_chars]
    return math.inf if any(c is None for c in caps) else max(caps)


def filter_length(concepts: ConceptSet, max_chars: int = 30,
                  source_max_chars: Mapping[str, int | None] | None = None
                  ) -> tuple[ConceptSet, list[Dropped]]:
    """Drop concepts longer than `max_chars` characters; `source_max_chars` gives some sources
    their own cap (None = no cap), e.g. SOURCE_MAX_CHARS. Without it, every concept gets
    `max_chars` (Label-free CBM's rule)."""
    caps = [_cap(c, max_chars, source_max_chars or {}) for c in concepts]
    lengths = np.array([len(t) for t in concepts.texts])
    keep = np.array([n <= cap for n, cap in zip(lengths, caps, strict=True)], dtype=bool)
    dropped = [Dropped(t, "length", f"{n} characters > {cap}")
               for t, n, k, cap in zip(concepts.texts, lengths, keep, caps, strict=True) if not k]
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


def reference_duplicate_drops(texts: Sequence[str], sims: np.ndarray,
                              cutoff: float) -> list[tuple[int, int]]:
    """Label-free CBM's `filter_too_similar` on a similarity matrix (k x k): (dropped, partner)
    index pairs, in the order the reference decides them.

    Concepts are visited in sorted text order (the reference sorts them in
    `filter_too_similar_to_cls`, just before); for each pair (i, j), i != j, with similarity
    >= cutoff where neither is dropped yet, the one with the LOWER total similarity to all
    concepts (row sum, itself and dropped ones included) is dropped, j on a tie. Ours: a pair
    that says opposite things ("odd-toed" / "even-toed", a negation; concepts/antonyms.py) is
    never a duplicate, however similar its texts' embeddings.
    """
    sims = np.asarray(sims, dtype=np.float64)
    return _duplicate_drops(texts, [np.flatnonzero(row >= cutoff) for row in sims], sims.sum(1))


def _duplicate_drops(texts: Sequence[str], neighbours: Sequence[np.ndarray],
                     total: np.ndarray) -> list[tuple[int, int]]:
    """`reference_duplicate_drops` from each concept's indices at/above the cutoff and the
    row sums: all it reads of the matrix, so the matrix can be scored a block at a time."""
    order = sorted(range(len(texts)), key=lambda i: texts[i])
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))
    dropped: set[int] = set()
    out: list[tuple[int, int]] = []
    for i in order:
        # only pairs at/above the cutoff can act, so visit just those, in sorted order
        for j in sorted(neighbours[i].tolist(), key=lambda t: pos[t]):
            if j == i or i in dropped or j in dropped or opposed(texts[i], texts[j]):
                continue
            lose, keep = (i, j) if total[i] < total[j] else (j, i)
            dropped.add(lose)
            out.append((lose, keep))
    return out


def _sparse_similarity(similarity, texts: Sequence[str], cutoff: float, rows: int | None = None):
    """(neighbours, total, values) of the k x k similarity of `texts`, scored `rows` rows at a
    time (TextSimilarity.row_blocks; a plain callable gives its whole matrix): per row the
    indices >= cutoff, the row sums, and {(i, j): value} for the pairs near the cutoff (within
    1e-3 below it too, so both directions of a pair are there for the report)."""
    k = len(texts)
    rows = rows or max(1, _BLOCK_ELEMENTS // max(1, k))
    blocks = (similarity.row_blocks(texts, texts, rows) if hasattr(similarity, "row_blocks")
              else iter([(0, np.asarray(similarity(texts, texts), dtype=np.float64))]))
    neighbours: list[np.ndarray] = []
    total = np.empty(k, dtype=np.float64)
    values: dict[tuple[int, int], float] = {}
    for s, block in blocks:
        if block.shape[1] != k:
            raise ConfigError(f"The duplicate filter needs a {k} x {k} similarity matrix; got "
                              f"{block.shape[1]} columns.")
        total[s:s + len(block)] = block.sum(1)
        for r, row in enumerate(block):
            neighbours.append(np.flatnonzero(row >= cutoff))
            for j in np.flatnonzero(row >= cutoff - 1e-3).tolist():
                values[(s + r, j)] = float(row[j])
    if len(neighbours) != k:
        raise ConfigError(f"The duplicate filter needs a {k} x {k} similarity matrix; got "
                          f"{len(neighbours)} rows.")
    return neighbours, total, values


def filter_duplicates(concepts: ConceptSet, similarity: TextSimilarity | np.ndarray,
                      cutoff: float = 0.9) -> tuple[ConceptSet, list[Dropped]]:
    """Label-free CBM's near-duplicate filter (`reference_duplicate_drops`): of a pair with
    similarity >= cutoff, the concept with the lower total similarity to all concepts goes
    (the reference's idea: keep the more general concept).

    `similarity`: a TextSimilarity, or the (k x k) matrix itself. The dropped concept's
    classes and provenance pass to its partner (or, if that is dropped later, on to the one
    that finally stays). The kept concepts keep the set's order.
    """
    if len(concepts) < 2:
        return concepts, []
    texts = concepts.texts
    if callable(similarity):  # scored in row blocks: never the whole k x k matrix (k = 20,000: 3.2 GB)
        neighbours, total, values = _sparse_similarity(similarity, texts, cutoff)
        pairs = _duplicate_drops(texts, neighbours, total)

        def value(i: int, j: int) -> float:
            if (i, j) not in values:  # an asymmetric similarity: score that one row
                values[(i, j)] = float(np.asarray(similarity([texts[i]], texts), np.float64)[0, j])
            return values[(i, j)]
    else:
        sims = np.asarray(similarity, np.float64)
        if sims.shape != (len(texts), len(texts)):
            raise ConfigError(f"The duplicate filter needs a {len(texts)} x {len(texts)} similarity "
                              f"matrix; got shape {sims.shape}.")
        pairs = reference_duplicate_drops(texts, sims, cutoff)
        total = sims.sum(1)

        def value(i: int, j: int) -> float:
            return sims[i, j]
    into = dict(pairs)

    def final(i: int) -> int:
        while i in into:
            i = into[i]
        return i

    keep = np.ones(len(texts), dtype=bool)
    keep[list(into)] = False
    out = _keep(concepts, keep)
    dropped = []
    for lose, partner in pairs:
        c = concepts.concepts[lose]
        out.add(texts[final(partner)], c.classes, c.provenance)
        dropped.append(Dropped(texts[lose], "duplicate",
                               f"{value(lose, partner):.3f} >= {cutoff} with {texts[partner]!r}; "
                               f"lower total similarity ({total[lose]:.3f} < {total[partner]:.3f})"
                               if total[lose] < total[partner] else
                               f"{value(lose, partner):.3f} >= {cutoff} with {texts[partner]!r}; "
                               f"equal total similarity ({total[lose]:.3f}), the later one goes"))
    return out, dropped


def top_k_activation(image_embedding: np.ndarray, concept_embedding: np.ndarray,
                     top: int = 5) -> np.ndarray:
    """Mean of each concept's `top` highest image-concept similarities."""
    n = len(image_embedding)
    top = min(top, n)
    out = np.empty(len(concept_embedding), dtype=np.result_type(image_embedding, concept_embedding))
    step = max(1, _BLOCK_ELEMENTS // max(1, n))  # concepts per block: columns are independent
    for s in range(0, len(concept_embedding), step):
        sims = image_embedding @ concept_embedding[s:s + step].T
        out[s:s + step] = np.partition(sims, n - top, axis=0)[n - top:].mean(0)
    return out


def filter_activation(concepts: ConceptSet, image_embedding: np.ndarray,
                      concept_embedding: np.ndarray, cutoff: float = 0.25, top: int = 5,
                      quantile: float | None = None) -> tuple[ConceptSet, list[Dropped]]:
    """Drop concepts whose mean top-`top` activation over the training images is <= cutoff.

    With `quantile` (0..1) the cutoff is that quantile of all concepts' scores instead, for
    backbones whose similarity scale differs from CLIP's (where 0.25 was tuned).
    """
    if len(concept_embedding) != len(concepts):
        raise ConfigError(f"{len(concept_embedding)} concept embeddings for {len(concepts)} concepts.")
    scores = top_k_activation(image_embedding, concept_embedding, top)
    if quantile is not None:
        cutoff = float(np.quantile(scores, quantile))
    # the reference keeps `highest > clip_cutoff` (strict); a quantile keeps its own value
    keep = scores >= cutoff if quantile is not None else scores > cutoff
    rule = "<" if quantile is not None else "<="
    dropped = [Dropped(t, "activation", f"mean top-{top} activation {s:.3f} {rule} {cutoff:.3f}")
               for t, s, k in zip(concepts.texts, scores, keep, strict=True) if not k]
    return _keep(concepts, keep), dropped

"""Array-level grounding measures, checked against human concept annotations.

Truth arrays use 1 (concept present), 0 (absent) and NaN (not annotated / unknown); unknowns are
left out of every score rather than counted as absent, because most annotation sets are sparse.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from ..errors import DataError

_ARTICLES = ("a", "an", "the")
# below this share of top-k pairs with known truth, a precision@k is no measure of the model
MIN_COVERAGE = 0.5


def _truth(truth, name: str) -> np.ndarray:
    t = np.asarray(truth, dtype=float)
    known = t[~np.isnan(t)]
    bad = known[(known != 0) & (known != 1)]
    if bad.size:
        raise DataError(f"{name} must hold only 1 (true), 0 (false) or NaN (unknown); "
                        f"found {np.unique(bad)[:5].tolist()}.")
    return t


def _matrix(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D array, got shape {a.shape}.")
    return a


def concept_auroc(activations, truth) -> dict:
    """Per-concept ROC AUC of activations against image-level annotations.

    activations: (n, k) finite floats; truth: (n, k) of 1/0/NaN. For concept j the AUC uses only the
    images whose truth[:, j] is known. A concept whose known images are all one class (or that has
    none) has no AUC: it is NaN and not counted in n_defined. Returns {"per_concept": (k,) array,
    "mean": nanmean over defined concepts (NaN if none), "n_defined": int}.
    """
    a, t = _matrix(activations, "activations"), _truth(_matrix(truth, "truth"), "truth")
    if a.shape != t.shape:
        raise DataError(f"activations {a.shape} and truth {t.shape} must have the same (images, concepts) "
                        "shape.")
    if not np.isfinite(a).all():
        raise DataError("activations contain NaN or infinite values; unknowns belong in truth, not here.")
    per = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        known = ~np.isnan(t[:, j])
        y = t[known, j]
        if np.unique(y).size == 2:  # AUC needs both classes among the known images
            per[j] = roc_auc_score(y, a[known, j])
    defined = ~np.isnan(per)
    return {"per_concept": per, "mean": float(per[defined].mean()) if defined.any() else float("nan"),
            "n_defined": int(defined.sum())}


def _side_precision(w: np.ndarray, t: np.ndarray, k: int, sign: int) -> tuple[np.ndarray, int, int]:
    """Per class: share of its top-k concepts by sign*weight (> 0 only) whose known truth is 1 (sign=+1)
    or 0 (sign=-1). NaN when a class has no such concept or none of them has known truth. Also the
    number of top-k (class, concept) pairs and of those with known truth."""
    out = np.full(w.shape[0], np.nan)
    wanted = 1.0 if sign > 0 else 0.0
    pairs = known = 0
    for i in range(w.shape[0]):
        s = sign * w[i]
        # stable sort on -s: largest first, equal weights keep ascending concept index
        order = np.argsort(-s, kind="stable")
        top = order[s[order] > 0][:k]
        truth = t[i, top]
        truth = truth[~np.isnan(truth)]
        pairs, known = pairs + len(top), known + truth.size
        if truth.size:
            out[i] = float(np.mean(truth == wanted))
    return out, pairs, known


def explanation_precision(class_weights, class_truth, k: int = 5) -> dict:
    """How often the concepts a model leans on for a class are annotated as (not) belonging to it.

    class_weights: (m, K) class x concept weights; class_truth: (m, K) of 1/0/NaN.

    Positive side, per class i: take the concepts with weight > 0, sort by weight descending (ties:
    lower concept index first), keep the first k (fewer if fewer are positive). Precision is the
    fraction of those kept concepts with known truth that are annotated 1; concepts with NaN truth are
    dropped from both numerator and denominator (they are not reduced to fewer than k by refilling).
    Negative side: the same with weight < 0, most negative first, counting truth == 0.
    A class with no eligible concept, or none with known truth, gets NaN and is left out of the mean.

    Coverage: the share of the top-k (class, concept) pairs whose truth is known, per side. The
    precision rests on those pairs alone, so a caller must show it with its coverage (and, below
    MIN_COVERAGE, not as a measure of the model: `grounding_measures` reports None there).

    Returns {"positive_per_class": (m,), "positive": float, "negative_per_class": (m,),
    "negative": float, "n_scored": {"positive": int, "negative": int}, "coverage": {"positive":
    float, "negative": float}, "n_pairs": {...}, "n_known": {...}} where the floats are means over
    the scored (non-NaN) classes, NaN if there are none (coverage NaN without pairs).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be a positive integer, got {k!r}.")
    w = _matrix(class_weights, "class_weights")
    t = _truth(_matrix(class_truth, "class_truth"), "class_truth")
    if w.shape != t.shape:
        raise DataError(f"class_weights {w.shape} and class_truth {t.shape} must have the same "
                        "(classes, concepts) shape.")
    if not np.isfinite(w).all():
        raise DataError("class_weights contain NaN or infinite values.")
    result: dict = {"n_scored": {}, "coverage": {}, "n_pairs": {}, "n_known": {}}
    for side, sign in (("positive", 1), ("negative", -1)):
        per, pairs, known = _side_precision(w, t, int(k), sign)
        scored = ~np.isnan(per)
        result[f"{side}_per_class"] = per
        result[side] = float(per[scored].mean()) if scored.any() else float("nan")
        result["n_scored"][side] = int(scored.sum())
        result["coverage"][side] = known / pairs if pairs else float("nan")
        result["n_pairs"][side], result["n_known"][side] = pairs, known
    return result


def normalise_text(text: str) -> str:
    """Casefold, treat punctuation as a word break, drop one leading 'a'/'an'/'the', then remove all
    spaces: 'The red-wing.' and 'red wing' both become 'redwing'."""
    if not isinstance(text, str):
        raise DataError(f"concept texts must be strings, got {type(text).__name__}: {text!r}.")
    cleaned = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.casefold())
    words = cleaned.split()
    # keep a lone article ('a') as itself rather than turning it into an empty string
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return "".join(words)


def match_concepts(free_texts: Sequence[str], annotated_texts: Sequence[str],
                   embed: Callable[[list[str]], np.ndarray] | None = None,
                   threshold: float = 0.8) -> list[dict]:
    """Link free-text concepts (e.g. LLM-written) to the annotated vocabulary, showing how each link was made.

    First an exact match of normalise_text() forms (first annotated text wins on duplicates). Then, if
    `embed` is given (texts -> (n, d) L2-normalised rows), each still-unmatched text goes to the
    annotated text of highest cosine similarity (ties: lower index) when that similarity >= threshold.
    Each result: {"text", "match" (annotated text or None), "how" ("exact", "embedding" or None),
    "similarity" (1.0 for exact, best cosine otherwise, None without embed), "nearest" (closest
    annotated text even when below threshold, so a person can judge the cut-off)}.
    """
    free, annotated = list(free_texts), list(annotated_texts)
    lookup: dict[str, str] = {}
    for text in annotated:
        lookup.setdefault(normalise_text(text), text)
    results = []
    for text in free:
        hit = lookup.get(normalise_text(text))
        results.append({"text": text, "match": hit, "how": "exact" if hit is not None else None,
                        "similarity": 1.0 if hit is not None else None, "nearest": hit})
    pending = [r for r in results if r["match"] is None]
    if embed is None or not pending or not annotated:
        return results
    if not -1.0 <= threshold <= 1.0:
        raise DataError(f"threshold is a cosine similarity and must lie in [-1, 1], got {threshold}.")
    queries = _embedded(embed, [r["text"] for r in pending])
    keys = _embedded(embed, annotated)
    if queries.shape[1] != keys.shape[1]:
        raise DataError(f"embed returned {queries.shape[1]}- and {keys.shape[1]}-dimensional vectors.")
    sims = queries @ keys.T  # cosine, since rows are unit length
    for r, row in zip(pending, sims, strict=True):
        best = int(np.argmax(row))  # argmax returns the first of equal maxima
        r["similarity"], r["nearest"] = float(row[best]), annotated[best]
        if row[best] >= threshold:
            r["match"], r["how"] = annotated[best], "embedding"
    return results


def _embedded(embed: Callable, texts: list[str]) -> np.ndarray:
    v = np.asarray(embed(texts), dtype=float)
    if v.ndim != 2 or v.shape[0] != len(texts):
        raise DataError(f"embed must return a ({len(texts)}, d) array for {len(texts)} texts, got {v.shape}.")
    if not np.isfinite(v).all() or not np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4):
        # a dot product is only a cosine for unit rows; silently renormalising would hide a wrong embedder
        raise DataError("embed must return finite, L2-normalised rows (each of norm 1).")
    return v

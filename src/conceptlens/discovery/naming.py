"""Name each discovered concept (an SAE latent) after the word whose text embedding is nearest
to the latent's dictionary direction (Discover-then-Name's naming step).

Followed: github.com/neuroexplicit-saar/Discover-then-Name @03484ba, `scripts/assign_names.py`
and `dncbm/method_utils.py` (`MethodOurs.get_concept_name_similarity_matrix`,
`get_concept_name`): the decoder columns are divided by their norms, multiplied with the
(L2-normalised, plain-word, no prompt template) vocabulary text embeddings, and each latent
takes `argmax` over the vocabulary. No centring: the SAE's pre-bias b_pre is neither added
nor subtracted and the text embeddings are not centred.

Per latent we return the name, its cosine similarity (the reference's "name similarity",
a naming confidence), the runner-up word and its similarity (a small margin marks an
ambiguous name), and whether the latent is dead (never fired on the pool) or too weakly
matched to name.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| dead latents [1] | named like any other | `name` None, reason "dead" | only where `fired` is given |
| `min_similarity` | absent (every latent named) | below it `name` None, reason given | only when set |
| word embeddings | assumed unit norm | divided by their norms | none for unit-norm inputs |
| runner-up word | not computed | `second`, `second_similarity` | reporting only |

[1] The nearest word of a dead latent is still reported (`nearest`, `similarity`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError


def _unit_rows(a: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if len(zero):
        raise DataError(f"{what}: row(s) {zero[:10].tolist()} are all zeros, so they have no direction to "
                        "compare; expected non-zero vectors.")
    return a / norms


def name_latents(directions: np.ndarray, words: Sequence[str], word_embedding: np.ndarray,
                 fired: np.ndarray | None = None, min_similarity: float | None = None,
                 chunk: int = 1024) -> list[dict]:
    """One dict per latent (row of `directions`, (h, d)): "latent" (index), "name" (the nearest
    word by cosine, None when dead or below `min_similarity`), "nearest" (the nearest word
    whatever the status), "similarity", "second", "second_similarity" (None with a
    one-word vocabulary), "dead" (fired == 0) and "reason" (why `name` is None, else None).
    `word_embedding` (V, d) aligns with `words`; ties go to the earlier word (argmax)."""
    D = np.asarray(directions, dtype=np.float32)
    E = np.asarray(word_embedding, dtype=np.float32)
    if D.ndim != 2 or E.ndim != 2:
        raise DataError(f"name_latents: directions must be (h, d) and word_embedding (V, d); got shapes "
                        f"{D.shape} and {E.shape}.")
    if D.shape[1] != E.shape[1]:
        raise DataError(f"name_latents: the latents' directions have dimension {D.shape[1]} but the word "
                        f"embeddings {E.shape[1]}; both must come from the same backbone (image and text "
                        "space of one model).")
    if len(words) != len(E) or not len(words):
        raise DataError(f"name_latents: {len(words)} words but {len(E)} word embeddings; expected one "
                        "embedding per word, at least one word.")
    for a, what in ((D, "directions"), (E, "word_embedding")):
        if not np.isfinite(a).all():
            raise DataError(f"name_latents: {what} has {int((~np.isfinite(a)).sum())} non-finite value(s).")
    if fired is not None:
        fired = np.asarray(fired)
        if fired.shape != (len(D),):
            raise DataError(f"name_latents: fired must have one count per latent ({len(D)},); got shape "
                            f"{fired.shape}.")
    D, E = _unit_rows(D, "directions"), _unit_rows(E, "word_embedding")
    V = len(E)
    out = []
    for start in range(0, len(D), chunk):  # (chunk, V) similarities at a time: h x 20k is large
        S = D[start:start + chunk] @ E.T
        best = S.argmax(1)  # first maximum, as torch.argmax
        best_sim = S[np.arange(len(S)), best]
        if V > 1:
            S[np.arange(len(S)), best] = -np.inf
            second = S.argmax(1)
            second_sim = S[np.arange(len(S)), second]
        for r in range(len(S)):
            i = start + r
            sim = float(best_sim[r])
            entry = {"latent": i, "name": words[best[r]], "nearest": words[best[r]], "similarity": sim,
                     "second": words[second[r]] if V > 1 else None,
                     "second_similarity": float(second_sim[r]) if V > 1 else None,
                     "dead": bool(fired is not None and fired[i] == 0), "reason": None}
            if entry["dead"]:
                entry["name"], entry["reason"] = None, "dead: never fired on the unlabelled pool"
            elif min_similarity is not None and sim < min_similarity:
                entry["name"] = None
                entry["reason"] = (f"weak: nearest word {entry['nearest']!r} at cosine {sim:.3f} is below "
                                   f"min_similarity {min_similarity}")
            out.append(entry)
    return out


def unique_names(names: Sequence[str], similarity: Sequence[float]) -> list[str]:
    """Distinct concept texts for latents that share a name: the best-matching latent keeps the
    word, the others become "word (2)", "word (3)", ... in decreasing similarity (ties by
    order), never colliding with another name."""
    order = sorted(range(len(names)), key=lambda i: (names[i], -similarity[i], i))
    taken = set(names)
    out = list(names)
    count: dict[str, int] = {}
    for i in order:
        n = count.get(names[i], 0) + 1
        count[names[i]] = n
        if n == 1:
            continue
        label = f"{names[i]} ({n})"
        while label in taken:
            n += 1
            label = f"{names[i]} ({n})"
        count[names[i]] = n
        taken.add(label)
        out[i] = label
    return out

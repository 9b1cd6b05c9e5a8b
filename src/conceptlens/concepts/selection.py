"""Concept selection: LaBo's per-class submodular selection, top-k, random, global budget.

Per-class and global candidates are selected together: each class from its own candidates
(`per_class`), and the concepts tied to no class (a vocabulary, an imported global list)
as one more pool with its own budget (`global_budget`, "auto" = per_class x classes).

LaBo (Yang et al., CVPR 2023) picks, for each class and from that class's candidates,
`per_class` concepts greedily maximising

    F(S) = score_weight * sum_{c in S} MI(c) + lam * sum_{i in V_y} max_{j in S} sim(i, j)

where MI is the discriminability score below and sim the squared cosine between the
candidates' text embeddings (what apricot's 'cosine' facility location computes).

LaBo's reference code calls apricot's MixtureSelection with a cosine FacilityLocation over
[score_weight * MI, text embedding]. Inside a mixture, apricot 0.6.1 hands the facility
location the raw feature rows instead of the pairwise similarities, so the coverage term it
actually maximises is sum over feature dimensions d of max(0, max_{j in S} X[j, d]).
`coverage="reference"` reproduces that objective exactly (for reproducing published
selections); `coverage="facility"` (default) is the facility location the paper describes.
Both are "modular + lam * sum_r max(0, max_{j in S} M[r, j])" for a matrix M.

Our greedy is exact (it returns what naive greedy returns) but lazy: marginal gains of a
submodular function only shrink, so stale gains are upper bounds and only the few
candidates whose bound could still win are re-evaluated, in vectorised batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, DataError
from .conceptset import ConceptSet

METHODS = ("submodular", "top_k", "random")


def class_similarity(image_embedding: np.ndarray, labels: np.ndarray, concept_embedding: np.ndarray,
                     n_classes: int) -> np.ndarray:
    """Sim(c, y): mean over the images of class y of the image-concept similarity, (k, m)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise ConfigError(f"Classes {np.flatnonzero(counts == 0).tolist()} have no images; MI needs "
                          "at least one image per class.")
    class_means = np.zeros((n_classes, image_embedding.shape[1]))
    np.add.at(class_means, labels, image_embedding)
    class_means /= counts[:, None]
    return concept_embedding.astype(np.float64) @ class_means.T


def mi_score(sim: np.ndarray) -> np.ndarray:
    """LaBo's discriminability from Sim(c, y) (k, m):
    Sbar = Sim / (m * sum_c Sim); MI(c) = sum_y Sbar log(Sbar / (sum_y' Sbar / m)).

    Similarities must be positive (CLIP's are); if some are not, all are shifted by the
    same amount to make the minimum 1e-6, which keeps the logarithm defined.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.min() <= 0:
        sim = sim - sim.min() + 1e-6
    m = sim.shape[1]
    sbar = sim / (sim.sum(0, keepdims=True) * m)
    margin = sbar.sum(1, keepdims=True) / m
    return (sbar * np.log(sbar / margin)).sum(1)


def squared_cosine(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-300)
    s = f @ f.T
    return s * s


COVERAGES = ("facility", "reference")


def coverage_matrix(modular: np.ndarray, embedding: np.ndarray, coverage: str) -> np.ndarray:
    """M (rows x candidates) of the coverage term; see the module docstring."""
    if coverage == "facility":
        return squared_cosine(embedding)
    if coverage == "reference":
        return np.hstack([modular[:, None], embedding]).astype(np.float64).T
    raise ConfigError(f"Unknown coverage {coverage!r}; known: {COVERAGES}.")


def facility_objective(sim: np.ndarray, selected) -> float:
    """sum_r max(0, max_{j in selected} M[r, j])."""
    selected = list(selected)
    return float(np.maximum(sim[:, selected].max(1), 0).sum()) if selected else 0.0


def greedy_submodular(modular: np.ndarray, sim: np.ndarray, k: int, lam: float = 1.0,
                      batch: int = 8) -> list[int]:
    """Exact lazy greedy for modular + lam * sum_r max(0, max_{j in S} sim[r, j]).

    `sim` is rows x candidates (n x n for a facility location). Returns what naive greedy
    returns, ties broken towards the lower index as np.argmax does.
    """
    n = len(modular)
    k = min(k, n)
    cur = np.zeros(sim.shape[0])
    bound = modular + lam * np.maximum(sim, 0).sum(0)  # exact gains of the first step
    fresh = np.ones(n, dtype=bool)
    chosen: list[int] = []
    alive = np.ones(n, dtype=bool)
    while len(chosen) < k:
        while True:
            order = np.flatnonzero(alive)[np.argsort(-bound[alive], kind="stable")]
            head = order[:batch]
            stale = head[~fresh[head]]
            if len(stale):
                bound[stale] = modular[stale] + lam * np.maximum(sim[:, stale] - cur[:, None], 0).sum(0)
                fresh[stale] = True
            best = max(head, key=lambda j: (bound[j], -j)) if fresh[head].all() else None
            nxt = order[batch] if len(order) > batch else None
            # accept when the best fresh gain beats every bound below the batch
            if best is not None and (nxt is None or (bound[best], -best) >= (bound[nxt], -nxt)):
                break
        chosen.append(int(best))
        alive[best] = False
        cur = np.maximum(cur, sim[:, best])
        fresh[:] = False
    return chosen


GLOBAL_SHORTLIST = 2000  # global candidates the submodular greedy sees (top by score), see below


@dataclass
class Selection:
    concepts: ConceptSet
    indices: list[int]  # into the candidate set
    objective: float  # total over classes of score_weight * MI + lam * coverage
    scores: np.ndarray  # MI of every candidate
    counts: dict = field(default_factory=dict)  # candidates and selected, per-class and global

    def report(self) -> str:
        c = self.counts
        return (f"selected {len(self.indices)} of {c.get('candidates', '?')} candidates: "
                f"{c.get('class_selected', 0)} of {c.get('class_candidates', 0)} tied to classes "
                f"({c.get('per_class', '?')} per class), {c.get('global_selected', 0)} of "
                f"{c.get('global_candidates', 0)} global (budget {c.get('global_budget', 0)})")


def global_budget_for(budget: int | str | None, per_class: int, n_classes: int, n_global: int) -> int:
    """How many global candidates (concepts tied to no class) to keep: "auto" (or None) gives
    them the per-class budget of every class together, per_class x n_classes; an integer is
    taken as it is (0 = none)."""
    if budget is None or budget == "auto":
        return min(n_global, per_class * n_classes)
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 0:
        raise ConfigError(f'global_budget must be "auto" or an integer >= 0 (0 = no global concept); '
                          f"got {budget!r}.")
    return min(n_global, int(budget))


def _pick(method: str, modular_scores: np.ndarray, embedding: np.ndarray, k: int, lam: float,
          score_weight: float, coverage: str, rng) -> tuple[np.ndarray, float]:
    """`k` of these candidates by `method`: (positions, objective added)."""
    n = len(modular_scores)
    if n <= k:
        return np.arange(n), 0.0
    if method == "top_k":
        return np.argsort(-modular_scores, kind="stable")[:k], 0.0
    if method == "random":
        return np.sort(rng.choice(n, k, replace=False)), 0.0
    modular = score_weight * modular_scores
    sim = coverage_matrix(modular, embedding, coverage)
    picked = np.asarray(greedy_submodular(modular, sim, k, lam))
    return picked, float(modular[picked].sum()) + lam * facility_objective(sim, picked)


def select_concepts(
    candidates: ConceptSet,
    concept_embedding: np.ndarray,
    image_embedding: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    classes: list[str] | None = None,
    per_class: int = 50,
    method: str = "submodular",
    lam: float = 0.1,
    score_weight: float = 1e7,
    coverage: str = "facility",
    global_budget: int | str | None = "auto",
    seed: int = 0,
    scores: np.ndarray | None = None,
) -> Selection:
    """Pick concepts per class (LaBo's defaults: 50 per class, MI weight 1e7, lam 0.1) and
    from the global candidates (concepts tied to no class: a vocabulary, Label-free CBM's
    filtered list), together.

    `scores` overrides MI (e.g. for candidates without images); otherwise MI comes from the
    training images (`image_embedding`, `labels` into `classes`). Each class picks `per_class`
    of its own candidates; the global candidates are one more pool, from which
    `global_budget_for(global_budget, ...)` are picked by the same method (the submodular
    greedy sees the GLOBAL_SHORTLIST best by score, so a 20,000-word vocabulary does not need
    a 20,000 x 20,000 similarity matrix). A concept chosen by several classes appears once.
    Nothing selected is a DataError that says why.
    """
    if method not in METHODS:
        raise ConfigError(f"Unknown selection method {method!r}; known: {METHODS}.")
    classes = list(classes or candidates.classes)
    if not len(candidates):
        raise DataError("No concept to select from: the candidate set is empty. Check the concept "
                        "sources (a source that resolved no class, a filter that dropped everything).")
    if scores is None:
        if image_embedding is None or labels is None:
            raise ConfigError("Selection needs image embeddings and labels for MI, or scores=.")
        scores = mi_score(class_similarity(image_embedding, labels, concept_embedding, len(classes)))
    scores = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    objective = 0.0
    wanted = {c.casefold() for c in classes}
    tied = [i for i, c in enumerate(candidates.concepts) if any(k.casefold() in wanted for k in c.classes)]
    for cls in classes:
        idx = np.asarray(candidates.for_class(cls) if cls in candidates.classes else [], dtype=np.int64)
        if not len(idx):
            continue
        picked, gain = _pick(method, scores[idx], concept_embedding[idx], per_class, lam, score_weight,
                             coverage, rng)
        objective += gain
        chosen += [int(i) for i in idx[picked] if int(i) not in chosen]
    n_class = len(chosen)
    pool = np.asarray([i for i, c in enumerate(candidates.concepts) if not c.classes], dtype=np.int64)
    budget = global_budget_for(global_budget, per_class, len(classes), len(pool))
    if budget and len(pool):
        if method == "submodular" and len(pool) > max(GLOBAL_SHORTLIST, budget):
            pool = pool[np.argsort(-scores[pool], kind="stable")[:max(GLOBAL_SHORTLIST, budget)]]
        picked, gain = _pick(method, scores[pool], concept_embedding[pool], budget, lam, score_weight,
                             coverage, rng)
        objective += gain
        chosen += [int(i) for i in pool[picked] if int(i) not in chosen]
    n_global_candidates = sum(not c.classes for c in candidates.concepts)
    counts = {"candidates": len(candidates), "class_candidates": len(tied), "class_selected": n_class,
              "global_candidates": n_global_candidates, "global_selected": len(chosen) - n_class,
              "global_budget": budget, "per_class": per_class}
    if not chosen:
        raise DataError(
            f"No concept was selected from {len(candidates)} candidates: none is tied to the classes "
            f"{classes[:10]} ({len(tied)} per-class candidates) and the global budget is {budget} for "
            f"{n_global_candidates} global candidates. Give concepts for these classes (check that the "
            "concept file's class names match the dataset's), or set [concepts] global_budget "
            '("auto" or a positive integer; --global-budget on the command line) to use global concepts.')
    return Selection(candidates.subset(chosen), chosen, objective, scores, counts)

"""Selection: MI by hand, greedy against brute force, budgets and baselines."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.concepts import ConceptSet, mi_score, select_concepts
from conceptlens.concepts.selection import (
    GLOBAL_SHORTLIST,
    class_similarity,
    coverage_matrix,
    greedy_submodular,
    squared_cosine,
)
from conceptlens.errors import DataError


def brute_force_greedy(objective, n, k):
    """Greedy by evaluating the whole set function for every candidate at every step."""
    chosen = []
    for _ in range(k):
        best = max((j for j in range(n) if j not in chosen),
                   key=lambda j: (objective([*chosen, j]), -j))
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("coverage", ["facility", "reference"])
@pytest.mark.parametrize("seed", range(6))
def test_lazy_greedy_equals_brute_force(seed, coverage):
    rng = np.random.default_rng(seed)
    n, k, lam = 12, 5, [0.0, 0.3, 2.0][seed % 3]
    emb = rng.normal(size=(n, 4))
    modular = rng.random(n)
    M = coverage_matrix(modular, emb, coverage)

    def objective(S):
        cover = np.maximum(M[:, S].max(1), 0).sum() if S else 0.0
        return modular[S].sum() + lam * cover

    assert greedy_submodular(modular, M, k, lam, batch=2) == brute_force_greedy(objective, n, k)


def test_squared_cosine_by_hand():
    s = squared_cosine(np.array([[1.0, 0], [1, 1], [0, 2]]))
    np.testing.assert_allclose(s, [[1, 0.5, 0], [0.5, 1, 0.5], [0, 0.5, 1]])


def test_mi_score_by_hand():
    # two concepts, two classes. c0 fires equally for both -> MI 0; c1 only for class 0.
    sim = np.array([[0.5, 0.5], [0.9, 0.1]])
    mi = mi_score(sim)
    # Sbar = Sim / (m * column sums): col sums 1.4, 0.6 -> c1: 0.9/2.8, 0.1/1.2
    s = np.array([0.9 / 2.8, 0.1 / 1.2])
    c0 = np.array([0.5 / 2.8, 0.5 / 1.2])
    expect = lambda v: float((v * np.log(v / (v.sum() / 2))).sum())  # noqa: E731
    assert mi[0] == pytest.approx(expect(c0)) and mi[1] == pytest.approx(expect(s))
    assert mi[1] > mi[0]


def test_class_similarity_is_mean_per_class():
    images = np.array([[1.0, 0], [0, 1], [1, 1]])
    labels = np.array([0, 1, 1])
    concepts = np.array([[1.0, 0], [0, 1]])
    np.testing.assert_allclose(class_similarity(images, labels, concepts, 2), [[1, 0.5], [0, 1]])


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    cs = ConceptSet(["a", "b"])
    for i in range(10):
        cs.add(f"concept {i}", ["a"] if i < 6 else ["b"])
    cs.add("concept 3", ["b"])  # shared by both classes
    emb = rng.normal(size=(10, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    images = rng.normal(size=(20, 8))
    labels = np.repeat([0, 1], 10)
    return cs, emb, images, labels


def test_per_class_budget_dedupes_shared_concepts():
    cs, emb, _images, _labels = _problem()
    scores = np.arange(10, dtype=float)[::-1]  # concept 0 best ... 9 worst
    sel = select_concepts(cs, emb, per_class=2, method="top_k", scores=scores)
    # class a: 0, 1; class b (candidates 3, 6..9): 3, 6
    assert sel.indices == [0, 1, 3, 6]
    sel = select_concepts(cs, emb, per_class=50, method="top_k", scores=scores)
    assert sorted(sel.indices) == list(range(10))  # budget above candidates: take all


def test_random_is_seeded_and_submodular_uses_mi():
    cs, emb, images, labels = _problem()
    a = select_concepts(cs, emb, images, labels, per_class=2, method="random", seed=1).indices
    b = select_concepts(cs, emb, images, labels, per_class=2, method="random", seed=1).indices
    c = select_concepts(cs, emb, images, labels, per_class=2, method="random", seed=2).indices
    assert a == b and a != c and len(a) <= 4
    sel = select_concepts(cs, emb, images, labels, per_class=3, lam=0.0, score_weight=1.0)
    mi = mi_score(class_similarity(images, labels, emb, 2))
    cand_b = np.array([3, 6, 7, 8, 9])
    top_a, top_b = np.argsort(-mi[:6])[:3], cand_b[np.argsort(-mi[cand_b])[:3]]
    assert set(sel.indices[:3]) == set(top_a.tolist())  # lam=0: pure MI ranking per class
    assert set(sel.indices) == set(top_a.tolist()) | set(top_b.tolist())
    assert sel.objective == pytest.approx(mi[top_a].sum() + mi[top_b].sum(), rel=1e-9)


def test_objective_adds_coverage():
    cs, emb, images, labels = _problem()
    sel0 = select_concepts(cs, emb, images, labels, per_class=2, lam=0.0, score_weight=1.0)
    sel1 = select_concepts(cs, emb, images, labels, per_class=2, lam=1.0, score_weight=1.0)
    assert sel1.objective > sel0.objective


def _mixed(n_global=6):
    """Two classes with 3 candidates each (ids 0-5) and `n_global` global ones after them."""
    cs = ConceptSet(["a", "b"])
    for i in range(6):
        cs.add(f"class concept {i}", ["a"] if i < 3 else ["b"])
    for i in range(n_global):
        cs.add(f"global concept {i}", [])
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(len(cs), 8))
    return cs, emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_global_candidates_are_selected_with_the_per_class_ones():
    cs, emb = _mixed()
    scores = np.array([5, 4, 3, 5, 4, 3, 0.5, 9, 0.1, 8, 7, 0.2])  # globals: 6..11
    sel = select_concepts(cs, emb, per_class=2, method="top_k", scores=scores, global_budget=3)
    # per class by score: a -> 0, 1; b -> 3, 4; then the 3 best global ones: 7 (9), 9 (8), 10 (7)
    assert sel.indices == [0, 1, 3, 4, 7, 9, 10]
    assert sel.counts["global_selected"] == 3 and sel.counts["global_candidates"] == 6
    assert sel.counts["class_selected"] == 4 and "3 of 6 global" in sel.report()
    # "auto": per_class x classes = 4 global ones; 0: none
    auto = select_concepts(cs, emb, per_class=2, method="top_k", scores=scores)
    assert auto.indices == [0, 1, 3, 4, 7, 9, 10, 6]
    none = select_concepts(cs, emb, per_class=2, method="top_k", scores=scores, global_budget=0)
    assert none.indices == [0, 1, 3, 4]


def test_global_only_set_selects_by_mi_and_submodular_agrees_with_brute_force():
    cs = ConceptSet(["a", "b"])
    for i in range(7):
        cs.add(f"word {i}", [])
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(7, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    images, labels = rng.normal(size=(20, 8)), np.repeat([0, 1], 10)
    mi = mi_score(class_similarity(images, labels, emb, 2))
    top = select_concepts(cs, emb, images, labels, per_class=2, method="top_k", global_budget=3)
    assert top.indices == np.argsort(-mi, kind="stable")[:3].tolist()
    lam = 0.5
    sel = select_concepts(cs, emb, images, labels, per_class=2, lam=lam, score_weight=1.0, global_budget=3)
    sim = squared_cosine(emb)

    def objective(s):
        return mi[s].sum() + lam * sim[:, s].max(1).sum()

    assert sel.indices == brute_force_greedy(objective, 7, 3)


def test_submodular_global_pool_is_shortlisted_by_score():
    n = GLOBAL_SHORTLIST + 50
    cs = ConceptSet(["a", "b"])
    for i in range(n):
        cs.add(f"w{i}", [])
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, 4))
    scores = np.zeros(n)
    scores[-1] = 1e-3  # the single best concept sits outside the first GLOBAL_SHORTLIST ids
    sel = select_concepts(cs, emb, per_class=1, scores=scores, global_budget=1, lam=0.0)
    assert sel.indices == [n - 1]


def test_nothing_selected_is_a_clear_error():
    cs, emb = _mixed(n_global=2)
    only_global = cs.subset([6, 7])
    with pytest.raises(DataError, match=r"No concept was selected from 2 candidates.*global budget is 0 "
                                        r"for 2 global candidates.*global_budget"):
        select_concepts(only_global, emb[6:], scores=np.ones(2), global_budget=0)
    with pytest.raises(DataError, match="candidate set is empty"):
        select_concepts(ConceptSet(["a", "b"]), np.zeros((0, 8)), scores=np.zeros(0))

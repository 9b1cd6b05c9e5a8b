"""The vocabulary filters score in blocks (issue #23: a 20,000-word run held a 20,000 x 20,000
float64 matrix); blocks must give what the whole matrix gives, checked against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.concepts import ConceptSet, TextSimilarity, filter_duplicates, filters
from conceptlens.concepts.filters import _sparse_similarity, top_k_activation


def vocabulary(n=60, d=8, seed=0):
    """Words with random unit vectors, some near-duplicates (cos > 0.9) among them."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    base[n // 2:] = base[: n - n // 2] + 0.15 * rng.normal(size=(n - n // 2, d))  # near copies
    vecs = base / np.linalg.norm(base, axis=1, keepdims=True)
    words = [f"word{i:03d}" for i in range(n)]
    table = dict(zip(words, vecs, strict=True))
    second = {w: np.roll(v, 1) for w, v in table.items()}  # a second encoder, another geometry
    return words, (lambda t: np.array([table[w] for w in t])), (lambda t: np.array([second[w] for w in t]))


@pytest.mark.parametrize("rows", [1, 7, 60, 1000])
def test_row_blocks_equal_the_whole_matrix_and_a_numpy_reference(rows):
    words, enc1, enc2 = vocabulary()
    sim = TextSimilarity([(enc1, 1.0), (enc2, 3.0)])
    blocks = np.concatenate([b for _, b in sim.row_blocks(words, words, rows)])
    want = (1.0 * enc1(words) @ enc1(words).T + 3.0 * enc2(words) @ enc2(words).T) / 4.0
    np.testing.assert_allclose(blocks, want, rtol=1e-12, atol=1e-12)
    # BLAS may round a one-row product (gemv) differently from the whole (gemm): ulps only
    np.testing.assert_allclose(blocks, sim(words, words), rtol=0, atol=1e-14)
    neighbours, total, values = _sparse_similarity(sim, words, 0.9, rows)
    for i in range(len(words)):
        np.testing.assert_array_equal(neighbours[i], np.flatnonzero(want[i] >= 0.9))
    np.testing.assert_allclose(total, want.sum(1), rtol=1e-12)
    assert all(abs(v - want[i, j]) < 1e-12 and want[i, j] >= 0.9 - 1e-3 for (i, j), v in values.items())


def test_blocked_duplicate_filter_equals_the_matrix_filter(monkeypatch):
    words, enc1, enc2 = vocabulary(n=80, seed=3)
    sim = TextSimilarity([(enc1, 1.0), (enc2, 3.0)])
    cs = ConceptSet(["a", "b"])
    for i, w in enumerate(words):
        cs.add(w, ["a" if i % 2 else "b"], [{"source": "t"}])
    monkeypatch.setattr(filters, "_BLOCK_ELEMENTS", 3 * len(words))  # 3 rows per block
    kept, dropped = filter_duplicates(cs, sim, cutoff=0.9)
    ref_kept, ref_dropped = filter_duplicates(cs, sim(words, words), cutoff=0.9)
    assert dropped, "the vocabulary has near-duplicates, so some must be dropped"
    assert kept.texts == ref_kept.texts
    assert [c.classes for c in kept] == [c.classes for c in ref_kept]
    assert dropped == ref_dropped


def test_blocked_activation_equals_a_sorted_reference(monkeypatch):
    rng = np.random.default_rng(1)
    images, concepts = rng.normal(size=(40, 6)), rng.normal(size=(25, 6))
    monkeypatch.setattr(filters, "_BLOCK_ELEMENTS", 40 * 4)  # 4 concepts per block
    got = top_k_activation(images, concepts, top=5)
    want = np.sort(images @ concepts.T, axis=0)[-5:].mean(0)
    np.testing.assert_allclose(got, want, rtol=1e-12)

"""conceptlens.ImageConceptClassifier: images and labels in, a fitted concept bottleneck out."""

from __future__ import annotations

import numpy as np
from PIL import Image

import conceptlens as cl
from conceptlens.runs.config import ConceptConfig
from conceptlens.testing import TinyBackbone


def images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for c, name in enumerate(["cat", "dog", "fox"]):
        base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][c])
        for _ in range(n):
            out.append(np.clip(base + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8))
            labels.append(name)
    return out, labels


def test_fit_on_arrays_pil_and_paths_with_given_concepts(tmp_path):
    X, y = images()
    concepts = {"cat": ["reddish fur", "whiskers"], "dog": ["green grass"], "fox": ["blue sky"]}
    clf = cl.ImageConceptClassifier("posthoc", backbone=TinyBackbone(), concepts=concepts,
                                    cache_dir=str(tmp_path / "cache"), lam=1e-3).fit(X, y)
    assert clf.classes_ == ("cat", "dog", "fox") and set(clf.concepts_) <= {
        "reddish fur", "whiskers", "green grass", "blue sky"}
    assert clf.score(X, y) > 0.6
    pil = [Image.fromarray(a) for a in X]
    assert clf.predict(pil) == clf.predict(X)
    paths = []
    for i, a in enumerate(X[:3]):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    assert len(clf.predict(paths)) == 3 and clf.predict_proba(paths).shape == (3, 3)


def test_run_defaults_build_the_concepts(tmp_path):
    X, y = images()
    cfg = ConceptConfig(filter=False, per_class=3)  # WordNet concepts, selected per class
    clf = cl.ImageConceptClassifier("label_free", backbone=TinyBackbone(), concept_config=cfg,
                                    cache_dir=str(tmp_path / "cache"), steps=50).fit(X, y)
    assert clf.concepts_ and clf.model_.classes_ == ("cat", "dog", "fox")

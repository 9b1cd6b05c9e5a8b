"""Deletion curves: remove an image's top contributing concepts, watch its class score fall.

"Removing" a concept sets its activation to a baseline (its mean over the images given), so
its contribution becomes what an average image gets. A faithful explanation's order lowers
the predicted class's probability faster than a random order: a smaller area under the
curve (mean over 0..steps deletions).
"""

from __future__ import annotations

import numpy as np

from ..methods.base import softmax


def deletion_curves(model, bundle, steps: int = 10, seed: int = 0) -> dict:
    A = model.transform(bundle)
    base = A.mean(0)
    logits = model.decision_function(bundle)
    pred = logits.argmax(1)
    contrib = model.head_scale * A * model.class_weights_[pred]
    rng = np.random.default_rng(seed)
    orders = {"top": np.argsort(-contrib, axis=1),
              "random": np.argsort(rng.random(contrib.shape), axis=1)}
    steps = min(steps, A.shape[1])
    rows = np.arange(len(A))
    curves = {}
    for name, order in orders.items():
        cur = A.copy()
        probs = [softmax(model.head(cur, bundle).astype(np.float64))[rows, pred].mean()]
        for j in range(steps):
            cols = order[:, j]
            cur[rows, cols] = base[cols]
            probs.append(softmax(model.head(cur, bundle).astype(np.float64))[rows, pred].mean())
        curves[name] = np.asarray(probs)
    return {"steps": steps, "top": curves["top"].tolist(), "random": curves["random"].tolist(),
            "area_top": float(curves["top"].mean()), "area_random": float(curves["random"].mean())}

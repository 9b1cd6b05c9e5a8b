"""Training-free test-time improvement of a concept bottleneck model on a new domain.

OUR RECONSTRUCTION: the masking and amplifying rules below are reconstructed from the
method's description (a 2025 medical-imaging paper on training-free test-time improvement
of CBMs); the authors' code could not be read, so thresholds and details are ours and
results are not claimed to match theirs.

From a few labelled images of a new domain, without retraining:
- mask concepts that fire for the wrong classes: a concept with positive weight for class
  c whose activation on the new domain's images of *other* classes rose above its source
  level by more than `tolerance` source standard deviations, or which no longer separates
  c there, is masked (its weights set to 0 for every class);
- amplify discriminative concepts that fire too weakly: a concept weighted towards c that
  still separates c on the new domain, but by less than on the source, gets its weight for
  c multiplied by the ratio of the separations (capped at `max_gain`).
A class is judged only where there is evidence for it: a class with no labelled image of
the new domain (or with no image of another class beside it), in the new domain or the
source, triggers neither rule, because its separation there is unknown, not zero.
The result is an edited model (see edits.py) with the changes logged; each change is centred
on the concept's source mean (the intercept absorbs the difference), so a masked concept
reads as "average", not as "absent", whatever the activations' offset.
"""

from __future__ import annotations

import copy

import numpy as np


def _class_means(A: np.ndarray, labels: np.ndarray, n_classes: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, k) mean activation on class c's images and on the other classes' images, and
    (m,) whether both exist (a class without images has unknown, not zero, means)."""
    inside = np.zeros((n_classes, A.shape[1]))
    outside = np.zeros((n_classes, A.shape[1]))
    seen = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        if (labels == c).any() and (labels != c).any():
            inside[c], outside[c] = A[labels == c].mean(0), A[labels != c].mean(0)
            seen[c] = True
    return inside, outside, seen


def improve_at_test_time(model, source, target, max_gain: float = 3.0, tolerance: float = 0.5):
    """`source`: the training features; `target`: a few labelled images of the new domain."""
    m = len(model.classes_)
    A_s = model.transform(source)
    in_s, out_s, seen_s = _class_means(A_s, np.asarray(source.labels), m)
    in_t, out_t, seen_t = _class_means(model.transform(target), np.asarray(target.labels), m)
    sep_s, sep_t = in_s - out_s, in_t - out_t
    sd = A_s.std(0) + 1e-9
    W = np.array(model.class_weights_, dtype=np.float32, copy=True)
    # only classes with images on both sides are judged: a missing class has sep_t = 0 above,
    # which would read as "no longer separates" and mask its concepts for nothing
    positive = (W > 0) & (seen_s & seen_t)[:, None]
    misfiring = positive & (sep_s > 0) & ((out_t - out_s > tolerance * sd) | (sep_t <= 0))
    masked_concepts = np.flatnonzero(misfiring.any(0))
    weak = positive & ~misfiring & (sep_t > 0) & (sep_s > sep_t)
    weak[:, masked_concepts] = False
    gain = np.ones_like(W)
    gain[weak] = np.minimum(sep_s[weak] / sep_t[weak], max_gain)
    log = list(getattr(model, "edit_log_", []))
    for k in masked_concepts:
        log.append({"concept": model.concepts_[k], "classes": list(model.classes_), "factor": 0.0,
                    "note": "test-time: fires for the wrong classes on the new domain"})
    for c, k in zip(*np.nonzero(weak & (gain > 1.0001)), strict=True):
        log.append({"concept": model.concepts_[k], "classes": [model.classes_[c]],
                    "factor": float(gain[c, k]), "note": "test-time: under-firing, amplified"})
    W_new = W * gain
    W_new[:, masked_concepts] = 0.0
    # edits are centred on the source mean: a masked concept acts as if it sat at its source
    # mean, and an amplified one is unchanged there. Without this, raw (uncentred)
    # activations such as Post-hoc CBM's margins shift whole classes when a concept goes.
    mu = A_s.mean(0)
    shift = model.head_scale * (W - W_new) @ mu
    improved = copy.deepcopy(model)
    improved.class_weights_ = W_new.astype(np.float32)
    improved.intercept_ = (model.intercept() + shift).astype(np.float32)
    improved.edit_log_ = log
    # so that saving the improved model over its source folder is refused (Method.save)
    improved.derived_from_ = getattr(model, "loaded_from_", None) or getattr(model, "derived_from_", None)
    return improved


def evaluate_test_time_improvement(model, source, labelled, held_out, **options) -> tuple[object, dict]:
    """Improve with `labelled` new-domain images; accuracy before and after on `held_out`."""
    improved = improve_at_test_time(model, source, labelled, **options)
    labels = np.asarray(held_out.labels)
    report = {"before": float((model.predict(held_out) == labels).mean()),
              "after": float((improved.predict(held_out) == labels).mean()),
              "labelled_images": len(labelled), "held_out_images": len(held_out),
              "changes": len(improved.edit_log_) - len(getattr(model, "edit_log_", []))}
    return improved, report

"""Concept contributions: activation x weight (x the head's scale), signed.

For every method logits = head_scale * A W^T + b + residual, so for class c
sum_k contribution[k] + b_c + residual_c is exactly the logit of class c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Contribution:
    concept: str
    activation: float
    weight: float
    contribution: float


def contributions(model, bundle, target: np.ndarray | int | None = None) -> np.ndarray:
    """(n, k) contributions of each concept to `target` (default: the predicted class)."""
    A = model.transform(bundle)
    if target is None:
        target = model.decision_function(bundle).argmax(1)
    target = np.broadcast_to(np.asarray(target), (len(A),))
    return model.head_scale * A * model.class_weights_[target]


def explain_image(model, bundle, index: int, target: int | None = None,
                  top: int = 5) -> dict:
    """The largest contributions (by magnitude) to one image's `target` class score."""
    row = bundle.rows([index])
    logits = model.decision_function(row)[0]
    target = int(logits.argmax()) if target is None else int(target)
    A = model.transform(row)[0]
    contrib = contributions(model, row, target)[0]
    order = np.argsort(-np.abs(contrib))[:top]
    residual = model.residual(row)
    residual = float(np.asarray(residual).reshape(-1)[target]) if np.ndim(residual) else float(residual)
    items = [Contribution(model.concepts_[k], float(A[k]), float(model.class_weights_[target, k]),
                          float(contrib[k])) for k in order]
    return {
        "id": row.ids[0], "predicted": model.classes_[int(logits.argmax())],
        "target": model.classes_[target], "logit": float(logits[target]),
        "intercept": float(model.intercept()[target]), "residual": residual,
        "others": float(contrib.sum() - sum(c.contribution for c in items)),
        "top": items,
    }


def as_text(explanation: dict) -> str:
    lines = [f"{explanation['id']}: predicted {explanation['predicted']!r}; "
             f"score for {explanation['target']!r} = {explanation['logit']:.3f}"]
    for c in explanation["top"]:
        lines.append(f"  {c.contribution:+8.3f}  {c.concept}  (activation {c.activation:.3f} "
                     f"x weight {c.weight:.3f})")
    lines.append(f"  {explanation['others']:+8.3f}  all other concepts")
    lines.append(f"  {explanation['intercept']:+8.3f}  bias")
    if explanation["residual"]:
        lines.append(f"  {explanation['residual']:+8.3f}  residual (not through concepts)")
    return "\n".join(lines)


def class_weights(model, cls: str, top: int = 10) -> list[tuple[str, float]]:
    c = model.classes_.index(cls)
    order = np.argsort(-np.abs(model.class_weights_[c]))[:top]
    return [(model.concepts_[k], float(model.class_weights_[c, k])) for k in order
            if model.class_weights_[c, k] != 0]


def top_images(model, bundle, concept: str | int, top: int = 5) -> list[tuple[str, float]]:
    """The images in `bundle` that activate a concept most."""
    k = concept if isinstance(concept, int) else model.concepts_.index(concept)
    a = model.transform(bundle)[:, k]
    order = np.argsort(-a)[:top]
    return [(bundle.ids[i], float(a[i])) for i in order]

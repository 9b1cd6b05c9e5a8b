"""Test-time intervention: a *policy* picks which concepts to touch, a *strategy* says what
value to put in (the split pytorch_concepts uses).

Strategies (per concept, from reference activations, e.g. the training set's):
- 'truth': the 95th percentile where the concept is true, the 5th where it is false;
- 'mean': the mean activation (removes the concept's evidence);
- 'value': a fixed value;
- 'clamp': keep the activation but clamp it into the reference's 5th-95th percentile range
  (an out-of-distribution activation cannot dominate the decision).
Policies: 'random', 'uncertain' (activations nearest the concept's median, relative to its
spread: where the model is least sure), 'contribution' (largest |contribution| to the
predicted class).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from ..methods.absent import absent_from_activations
from ..methods.protocols import Intervenable

STRATEGIES = ("truth", "mean", "value", "clamp")
POLICIES = ("random", "uncertain", "contribution")


class Reference:
    """Per-concept statistics of activations the strategies and policies use."""

    def __init__(self, activations: np.ndarray):
        # a false concept's value: the one definition of "absent" (methods/absent.py, 5th percentile)
        self.low = absent_from_activations(activations)
        self.high = np.percentile(activations, 95, axis=0)
        self.mean = activations.mean(0)
        self.median = np.median(activations, axis=0)
        self.spread = activations.std(0) + 1e-9


def target_values(strategy: str, ref: Reference, truth: np.ndarray | None, value: float = 0.0,
                  A: np.ndarray | None = None):
    if strategy == "clamp":
        return np.clip(A, ref.low, ref.high)
    if strategy == "truth":
        if truth is None:
            raise ConfigError("The 'truth' strategy needs concept truth (n x k booleans).")
        return np.where(truth, ref.high, ref.low)
    if strategy == "mean":
        return np.broadcast_to(ref.mean, truth.shape if truth is not None else ref.mean.shape)
    if strategy == "value":
        return np.full_like(ref.mean, value)
    raise ConfigError(f"Unknown strategy {strategy!r}; known: {STRATEGIES}.")


def rank_concepts(policy: str, model, A: np.ndarray, bundle, ref: Reference, seed: int = 0):
    """(n, k) concept order per image, first = intervene first."""
    if policy == "random":
        return np.argsort(np.random.default_rng(seed).random(A.shape), axis=1)
    if policy == "uncertain":
        return np.argsort(np.abs(A - ref.median) / ref.spread, axis=1)
    if policy == "contribution":
        pred = model.head(A, bundle).argmax(1)
        return np.argsort(-np.abs(model.head_scale * A * model.class_weights_[pred]), axis=1)
    raise ConfigError(f"Unknown policy {policy!r}; known: {POLICIES}.")


def _check_finite(name: str, x: np.ndarray, fix: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise ConfigError(f"{name} has {int(bad.sum())} non-finite value(s) (NaN or inf); {fix}")


def _check_args(model, concepts, n, policy, strategy, truth, value) -> None:
    """Every argument checked before any work, so a bad one never yields NaN logits."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {strategy!r}; known: {STRATEGIES}.")
    if policy not in POLICIES:
        raise ConfigError(f"Unknown policy {policy!r}; known: {POLICIES}.")
    unknown = [c for c in concepts or [] if c not in model.concepts_]
    if unknown:
        raise ConfigError(f"Unknown concept(s) {unknown[:3]}; see the model's concepts_.")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
        raise ConfigError(f"n (concepts to intervene on per image) must be an integer >= 0; got {n!r}.")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not np.isfinite(value):
        raise ConfigError(f"The intervention value must be a finite number; got {value!r}.")
    if truth is not None and np.asarray(truth).dtype.kind not in "biu":
        raise ConfigError(f"truth must be 0/1 or booleans (n images x k concepts); got dtype "
                          f"{np.asarray(truth).dtype}.")


def intervene(model, bundle, concepts: list[str] | None = None, n: int | None = None,
              policy: str = "contribution", strategy: str = "truth", truth=None,
              reference: np.ndarray | None = None, value: float = 0.0, seed: int = 0):
    """Activations after intervening on the named `concepts`, or on `n` per image chosen
    by `policy`; returns (new activations, logits)."""
    _check_args(model, concepts, n, policy, strategy, truth, value)
    A = model.transform(bundle).astype(np.float64)
    _check_finite("The model's concept activations", A, "check the image features.")
    if truth is not None and np.shape(truth) != A.shape:
        raise ConfigError(f"truth has shape {np.shape(truth)}; expected {A.shape} (images x concepts).")
    R = model.transform(reference).astype(np.float64) if reference is not None else A
    _check_finite("The reference activations", R, "check the reference features.")
    ref = Reference(R)
    values = np.broadcast_to(target_values(strategy, ref, truth, value, A), A.shape)
    out = A.copy()
    if concepts:
        cols = [model.concepts_.index(c) for c in concepts]
        out[:, cols] = values[:, cols]
    elif n:
        order = rank_concepts(policy, model, A, bundle, ref, seed)[:, :n]
        rows = np.arange(len(A))[:, None]
        out[rows, order] = values[rows, order]
    return out, model.head(out, bundle)


def intervention_curve(model, bundle, truth: np.ndarray, steps: int = 10,
                       policy: str = "uncertain", strategy: str = "truth", reference=None,
                       seed: int = 0) -> list[float]:
    """Accuracy after 0..steps interventions per image (concept truth known)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0; got {steps!r}.")
    labels = np.asarray(bundle.labels)
    accs = []
    for n in range(steps + 1):
        _, logits = intervene(model, bundle, n=n, policy=policy, strategy=strategy, truth=truth,
                              reference=reference, seed=seed)
        accs.append(float((logits.argmax(1) == labels).mean()))
    return accs


def class_level_truth(model, labels: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """A concept is 'true' for an image when it was generated for the image's class: the
    proxy for concept labels that language-model concepts allow."""
    return np.asarray(class_prior, bool)[np.asarray(labels)]


def labelled_intervention_curve(model, bundle, truth, steps: int | None = None, policy: str = "uncertain",
                                reference=None, seed: int = 0) -> dict:
    """Accuracy after correcting 0..`steps` (default: every) concepts per image with their TRUE labels.

    `truth` (n, k) is 1 / 0 / NaN (unknown). Which concepts an image gets corrected, and in what
    order, is this module's `policy` ranking ('uncertain', 'random', 'contribution'),
    restricted to the concepts whose label is known for that image: an unknown label is never
    "corrected" (it would be a guess), so an image with fewer known labels stops early. The new
    value is the 'truth' strategy's (95th / 5th percentile of the `reference` activations, e.g. the
    training images'), read by the linear head; a model with its own intervention
    (`intervene_concepts`, ECBM) is corrected through it instead (the true labels held, the rest
    re-inferred). With every label known this is `intervention_curve(strategy='truth')`.
    Returns {"steps", "accuracy" (list, steps + 1), "policy", "n_images", "known_per_image"}."""
    if policy not in POLICIES:
        raise ConfigError(f"Unknown policy {policy!r}; known: {POLICIES}.")
    truth = np.asarray(truth, dtype=np.float64)
    A = np.asarray(model.transform(bundle), dtype=np.float64)
    if truth.shape != A.shape:
        raise DataError(f"truth has shape {truth.shape}; expected {A.shape} (images x the model's concepts).")
    k = A.shape[1]
    steps = k if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0; got {steps!r}.")
    steps = min(int(steps), k)
    known = ~np.isnan(truth)
    ref = Reference(A if reference is None else np.asarray(model.transform(reference), dtype=np.float64))
    rows = np.arange(len(A))[:, None]
    order = rank_concepts(policy, model, A, bundle, ref, seed)
    # known concepts first, each group in the policy's order (a stable sort on "unknown")
    order = np.take_along_axis(order, np.argsort(~known[rows, order], axis=1, kind="stable"), axis=1)
    labels = np.asarray(bundle.labels)
    own = isinstance(model, Intervenable)
    if own:
        hard = np.where(known, truth, 0).astype(np.int64)
    else:
        values = np.where(truth == 1, ref.high, ref.low)
        residual = model.residual(bundle)  # once: the same for every step
    out, mask, accs = A.copy(), np.zeros(A.shape, bool), []
    for n in range(steps + 1):
        if n:
            j = order[:, n - 1]
            hit = known[np.arange(len(A)), j]
            mask[np.flatnonzero(hit), j[hit]] = True
        if own and n:
            logits = model.intervene_concepts(bundle, hard, mask=mask)[2]
        elif own:
            logits = model.decision_function(bundle)
        else:
            out[mask] = values[mask]
            logits = model.head(out) + residual
        accs.append(float((np.asarray(logits).argmax(1) == labels).mean()))
    return {"steps": steps, "accuracy": accs, "policy": policy, "n_images": len(A),
            "known_per_image": float(known.sum(1).mean())}

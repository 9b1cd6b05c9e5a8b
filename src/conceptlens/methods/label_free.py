"""`label_free`: Label-free CBM (Oikarinen, Das, Nguyen & Weng, ICLR 2023).

Followed (github.com/Trustworthy-ML-Lab/Label-free-CBM, HEAD of the stored snapshot):
`train_cbm.py` (`train_cbm_and_save`), `similarity.py` (`cos_similarity_cubed_single`) and
`glm_saga/elasticnet.py` (`glm_saga`, `elastic_loss`).

1. Projection: W_c (k x f, no bias, nn.Linear's default init) maps backbone features to
   concept activations, trained so each concept's column matches the image-concept
   similarity column under cos^3 similarity (centre, cube, cosine over images): Adam 1e-3,
   up to 1000 steps on a random batch of min(50000, n) images. Every 50 steps (steps 0, 50,
   100, ... and the last) the mean validation similarity is measured; training stops at the
   first check that does not improve on the best so far, and the best weights are kept.
2. Interpretability cutoff: concepts whose validation cos^3 similarity is not above 0.45 go.
3. Standardise the activations with the training mean and (unbiased, torch.std) standard
   deviation, then the sparse elastic-net multinomial GLM (alpha 0.99) at lam / alpha:
   `train_cbm.py` passes `--lam` (7e-4) as glm_saga's `max_reg`, which glm_saga divides by
   max(0.001, alpha) and, with k=1, uses as the only lam. Or, with `target_nec`, our GLM
   path stopped at that NEC.

`positive=True` (ours; default False, the reference): the same GLM under the constraint
class_weights_ >= 0 (intercepts free; the exact constrained prox in `solvers.glm`), so every
class is explained by concepts whose standardised activation is above its training mean
("present") rather than by concepts that are absent. A concept can still count against a
class only by adding to the other classes' logits, which the L1 term makes costly.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| GLM solver [1] | glm_saga, 1000 SAGA epochs, tol 1e-4 | FISTA or Newton, to convergence | same optimum |
| `target_nec` | absent | path stopped at a NEC | only when set |
| `positive` [3] | absent (weights of either sign) | W >= 0 when set | only when set |
| `class_consistent` | absent (any class weighs any concept) | a class weighs only concepts linked to it with training-image evidence, W >= 0 (methods/class_consistent.py) | only when set |
| no concept passes the cutoff | a layer on 0 concepts | keep the best 10% (>= 1) | only then |
| zero training spread | NaN (divide by 0) | divide by 1 | only then |
| projection batch [2] | `random.sample`, unseeded | `torch.randperm` from `seed` | none if n <= 50000 |
| `on="auto"` | backbone layer features | features, else embedding | new capability |

[1] Our warm-started path (`solvers.glm`) solves the same objective exactly and
    deterministically; `tests/methods/test_methods.py` checks it against scikit-learn's optimum. Its
    solver "auto" takes proximal Newton (`solvers.newton`) when one n x p x m product reaches
    2.5e8 multiply-adds (10,000 x 250 x 100), FISTA below: the same optimum
    (`tests/solvers/test_solver_newton.py`), 5.3-6.2x glm_saga's speed at 50,000 x 2,000 x 200.
[2] With n <= batch_size the batch is all images and cos^3 ignores row order, so full batch
    is identical to the reference's random permutation.
[3] `positive=True` solves glm_saga's objective restricted to W >= 0 (projected, exactly:
    the prox of elastic net + indicator); lambda_max is then max(0, max H) / alpha (see
    `solvers.glm`). Its effect on accuracy and explanation precision is not measured yet.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from ..validation import Interval, Options
from .base import INPUTS, METHODS, Context, Method
from .class_consistent import CONSTRAINTS as CLASS_CONSISTENT
from .class_consistent import evidence_state, fit_support, load_evidence
from .sparse_layer import ALPHA, POSITIVE, TARGET_NEC, fit_sparse_layer

log = logging.getLogger("conceptlens")


def cos_cubed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-column cos^3 similarity between (n, k) matrices."""
    a = (a - a.mean(0)) ** 3
    b = (b - b.mean(0)) ** 3
    a = a / a.norm(dim=0).clamp(min=1e-12)
    b = b / b.norm(dim=0).clamp(min=1e-12)
    return (a * b).sum(0)


@contextlib.contextmanager
def flushed_denormals():
    """Denormal floats read and written as zero in the block (torch.set_flush_denormal), then
    torch's default (off; torch has no getter for the setting). cos^3 cubes centred activations:
    values near 1e-13 become denormals, and the CPU's slow path on them made each projection
    step of the demo (3,000 x 1,280 -> 55) take 18 ms against 10 ms; the weights came out the
    same to the bit (tested)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass
class ProjectionFit:
    weight: torch.Tensor  # (k, f) the best weights seen at a check
    best_step: int
    stopped_at: int  # the step of the last check
    history: list[tuple[int, float]]  # (step, mean validation similarity) at every check


def train_projection(F: torch.Tensor, S: torch.Tensor, Fv: torch.Tensor, Sv: torch.Tensor,
                     steps: int = 1000, lr: float = 1e-3, seed: int = 0, batch_size: int = 50000,
                     check_every: int = 50) -> ProjectionFit:
    """Label-free CBM's projection layer with the reference's early stopping (`train_cbm.py`),
    denormals flushed (`flushed_denormals`)."""
    with flushed_denormals():
        return _train_projection(F, S, Fv, Sv, steps, lr, seed, batch_size, check_every)


def _train_projection(F, S, Fv, Sv, steps, lr, seed, batch_size, check_every) -> ProjectionFit:
    with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG as it was
        torch.manual_seed(seed)  # nn.Linear's default init draws from the global generator
        proj = torch.nn.Linear(F.shape[1], S.shape[1], bias=False)
    opt = torch.optim.Adam(proj.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    batch = min(batch_size, len(F))
    best, best_w, best_step, history, step = -np.inf, None, 0, [], 0
    for step in range(steps):
        opt.zero_grad()
        idx = torch.randperm(len(F), generator=g)[:batch] if batch < len(F) else slice(None)
        loss = -cos_cubed(proj(F[idx]), S[idx]).mean()
        loss.backward()
        opt.step()
        if step % check_every == 0 or step == steps - 1:
            with torch.no_grad():
                score = float(cos_cubed(proj(Fv), Sv).mean())
            history.append((step, score))
            if best_w is None or score > best:
                best, best_w, best_step = score, proj.weight.detach().clone(), step
            else:  # the reference stops as soon as validation similarity stops improving
                break
    return ProjectionFit(best_w, best_step, step, history)


@METHODS.register("label_free")
class LabelFree(Method):
    """Label-free CBM: a projection from backbone features to concepts, then a sparse GLM.

    The projection is trained to match the image-concept similarities under cos^3; concepts whose
    validation similarity is not above `interpretability_cutoff` are dropped; the standardised
    activations feed an elastic-net multinomial GLM (see the module docstring).

    Parameters
    ----------
    lam : float, default 7e-4
        The reference's `--lam`, used as glm_saga's `max_reg`: the GLM runs at lam / max(0.001,
        alpha); >= 0. Ignored when `target_nec` is set.
    target_nec : float or None, default None
        Ours: stop the GLM's regularisation path at this NEC (effective concepts per class); > 0.
        None: the single `lam`, as the reference.
    alpha : float, default 0.99
        The elastic net's L1 share, in [0, 1].
    steps : int, default 1000
        Most Adam steps of the projection; >= 1.
    lr : float, default 1e-3
        The projection's Adam learning rate; > 0.
    interpretability_cutoff : float, default 0.45
        A concept is kept only when its validation cos^3 similarity is above it; >= -1. When no
        concept passes, the best tenth are kept (with a warning).
    on : {'auto', 'features', 'embedding'}, default 'auto'
        The projection's input: the backbone's layer features ('auto': when the bundle has them,
        else the embedding).
    seed : int, default 0
        Seed of the projection's initialisation and batch; >= 0.
    batch_size : int, default 50000
        Images per projection step (a random batch of min(batch_size, n)); >= 1.
    check_every : int, default 50
        Validate the projection every `check_every` steps; training stops at the first check that
        does not improve and the best weights are kept; >= 1.
    positive : bool, default False
        Ours: class weights constrained to >= 0 (the exact constrained prox), so each class is
        explained by concepts present.
    class_consistent : bool, default False
        Ours (absent from the reference): a class may weigh only concepts that a source links to it
        (`links`) and whose activation is evidence of their classes on the training images (AUROC
        >= `evidence_floor`), with weights >= 0 (methods/class_consistent.py). Off: any class weighs
        any concept, as the reference.
    links : {'generated', 'truth'}, default 'generated'
        With `class_consistent`, which links count: 'generated' (the classes each concept was
        generated for, `Context.class_prior`) or 'truth' (annotations or an LLM's yes/no answers,
        `Context.class_truth`; 1 links, 0 or unknown do not).
    evidence_floor : float, default 0.6
        With `class_consistent`, the least training-image AUROC of "the image's class is linked to
        the concept" for a concept to carry weight; in [0, 1] (0.5 is chance).

    References
    ----------
    Oikarinen et al., "Label-Free Concept Bottleneck Models", ICLR 2023.
    """

    # early stopping and the interpretability cutoff use `val`
    tags = replace(Method.tags, input="features", refit_at_nec=True, uses_validation=True)
    _arrays = ("class_weights_", "intercept_", "projection_", "mean_", "std_", "kept_")
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "lam": [Interval(float, 0, None)], "alpha": ALPHA, "target_nec": TARGET_NEC, "positive": POSITIVE,
        **CLASS_CONSISTENT, "lr": [Interval(float, 0, None, closed="neither")],
        "interpretability_cutoff": [Interval(float, -1, None)],
        "steps": [Interval(int, 1)], "batch_size": [Interval(int, 1)], "check_every": [Interval(int, 1)],
        "seed": [Interval(int, 0)],
        "on": [Options(INPUTS, description="'auto', 'features' or 'embedding'")],
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        "lam": "lam = 7e-4", "alpha": "alpha = 0.99", "target_nec": "target_nec = 5", "lr": "lr = 1e-3",
        "interpretability_cutoff": "interpretability_cutoff = 0.45"}

    def __init__(self, lam: float = 7e-4, target_nec: float | None = None, alpha: float = 0.99,
                 steps: int = 1000, lr: float = 1e-3, interpretability_cutoff: float = 0.45,
                 on: str = "auto", seed: int = 0, batch_size: int = 50000, check_every: int = 50,
                 positive: bool = False, class_consistent: bool = False, links: str = "generated",
                 evidence_floor: float = 0.6):
        self.lam, self.target_nec, self.alpha, self.positive = lam, target_nec, alpha, positive
        self.class_consistent, self.links, self.evidence_floor = class_consistent, links, evidence_floor
        self.steps, self.lr, self.interpretability_cutoff = steps, lr, interpretability_cutoff
        self.on, self.seed, self.batch_size, self.check_every = on, seed, batch_size, check_every

    def _fit(self, train, context: Context, val) -> None:
        self.input = self.on if self.on != "auto" else (
            "features" if train.features is not None else "embedding")
        self.feature_key_ = self.input
        C = np.asarray(context.concept_embedding, dtype=np.float32)
        held = val if val is not None else train
        F, Fv = torch.from_numpy(self._x(train)), torch.from_numpy(self._x(held))
        S = torch.from_numpy(np.asarray(train.embedding, np.float32) @ C.T)
        Sv = torch.from_numpy(np.asarray(held.embedding, np.float32) @ C.T)
        fit = train_projection(F, S, Fv, Sv, self.steps, self.lr, self.seed, self.batch_size,
                               self.check_every)
        self.projection_history_, self.best_step_ = fit.history, fit.best_step
        with torch.no_grad():
            sims = cos_cubed(Fv @ fit.weight.T, Sv).numpy()
        kept = np.flatnonzero(sims > self.interpretability_cutoff)  # strict, as the reference
        if not len(kept):  # keep the best-fitting concepts rather than none at all
            kept = np.argsort(-sims)[: max(1, len(sims) // 10)]
            log.warning("label_free: no concept's validation similarity is above %s; keeping the "
                        "best %d.", self.interpretability_cutoff, len(kept))
        self.kept_ = kept.astype(np.int64)
        self.projection_similarity_ = sims
        self.projection_ = fit.weight.numpy()[kept].astype(np.float32)
        self.concepts_ = [context.concepts[i] for i in kept]
        A = self._x(train) @ self.projection_.T
        self.mean_ = A.mean(0)
        std = A.std(0, ddof=1) if len(A) > 1 else np.zeros(A.shape[1], A.dtype)
        self.std_ = np.where(std > 0, std, 1.0).astype(np.float32)
        lam = self.lam / max(0.001, self.alpha)  # glm_saga's max_reg / max(0.001, alpha)
        # evidence on the training images, so the run's truth check on validation is independent
        support = fit_support(self, context, (A - self.mean_) / self.std_, np.asarray(train.labels), kept)
        self.class_weights_, self.intercept_, self.lam_ = fit_sparse_layer(
            (A - self.mean_) / self.std_, np.asarray(train.labels), len(self.classes_), lam,
            self.target_nec, self.alpha, positive=self.positive or support is not None, support=support)

    def _extra_state(self) -> dict:
        return {"input": self.input, "lam": self.lam_, **evidence_state(self)}

    def _load_extra(self, extra: dict) -> None:
        self.input, self.lam_ = extra["input"], extra["lam"]
        load_evidence(self, extra)

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return (self._x(bundle) @ self.projection_.T - self.mean_) / self.std_

    def torch_head(self):
        """The concept and final layers as a torch module (methods/torch_head.py; Exportable)."""
        from .torch_head import make_torch_head, standardised_projection

        return make_torch_head(self, standardised_projection,
                               {"projection": self.projection_, "mean": self.mean_, "std": self.std_})

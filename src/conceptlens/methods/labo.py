"""`labo`: Language in a Bottleneck (Yang et al., CVPR 2023).

Concept activations A = f(x) t(C)^T (fixed). The class-concept weights are a softmax over
concepts of a free matrix V (m x k) initialised from the language prior (V = strength where
the concept was generated for the class, 0 elsewhere, so a concept generated for several
classes starts attached to all of them); logits = scale * A softmax(V)^T. V is trained with
cross-entropy. The reference uses thousands of Adam epochs on mini-batches; on cached
features the whole problem fits in memory, so we minimise the same objective full-batch
with L-BFGS, which reaches it in seconds (tests/test_methods.py compares it with Adam).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .base import METHODS, Context, Method


def labo_objective(V: torch.Tensor, A: torch.Tensor, y: torch.Tensor, scale: float,
                   l1: float = 0.0) -> torch.Tensor:
    W = torch.softmax(V, dim=1)
    loss = torch.nn.functional.cross_entropy(scale * A @ W.T, y)
    return loss + l1 * W.abs().sum() / len(W) if l1 else loss


@METHODS.register("labo")
class LaBo(Method):
    name = "labo"
    _arrays = ("class_weights_", "association_", "concept_embedding_", "activation_mean_",
               "activation_std_")

    def __init__(self, scale: float = 100.0, prior_strength: float = 1.0, max_iter: int = 300,
                 optimizer: str = "lbfgs", lr: float = 1e-3, epochs: int = 5000, l1: float = 0.0,
                 standardize: bool = False):
        if optimizer not in ("lbfgs", "adam"):
            raise ConfigError(f"optimizer must be lbfgs or adam; got {optimizer!r}.")
        self.scale, self.prior_strength, self.max_iter = scale, prior_strength, max_iter
        self.optimizer, self.lr, self.epochs, self.l1 = optimizer, lr, epochs, l1
        self.standardize = standardize

    def _activations(self, X: np.ndarray) -> np.ndarray:
        A = X @ self.concept_embedding_.T
        # optional (not in the reference): standardise activations over the training set, for
        # backbones whose similarities are not in CLIP's range; the scale is then per std / 100
        return (A - self.activation_mean_) / self.activation_std_ if self.standardize else A

    def _fit(self, train, context: Context, val) -> None:
        self.concepts_ = list(context.concepts)
        self.concept_embedding_ = np.asarray(context.concept_embedding, dtype=np.float32)
        prior = context.class_prior
        if prior is None:
            prior = np.ones((len(self.classes_), len(self.concepts_)), np.float32)
        A_raw = self._x(train) @ self.concept_embedding_.T
        self.activation_mean_ = A_raw.mean(0)
        self.activation_std_ = A_raw.std(0) + 1e-6
        # standardised activations are O(1); the scale is then per standard deviation
        scale = self.scale / 100.0 if self.standardize else self.scale
        A = torch.from_numpy(self._activations(self._x(train))).double()
        y = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
        V = torch.tensor(self.prior_strength * np.asarray(prior, dtype=np.float64), requires_grad=True)
        if self.optimizer == "lbfgs":
            opt = torch.optim.LBFGS([V], lr=1.0, max_iter=self.max_iter, tolerance_grad=1e-9,
                                    tolerance_change=1e-12, history_size=20,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = labo_objective(V, A, y, scale, self.l1)
                loss.backward()
                return loss

            opt.step(closure)
        else:  # the reference's optimiser, for comparison
            opt = torch.optim.Adam([V], lr=self.lr)
            for _ in range(self.epochs):
                opt.zero_grad()
                loss = labo_objective(V, A, y, scale, self.l1)
                loss.backward()
                opt.step()
        with torch.no_grad():
            self.objective_ = float(labo_objective(V, A, y, scale, self.l1))
            self.association_ = V.detach().numpy().astype(np.float32)
            self.class_weights_ = torch.softmax(V, 1).numpy().astype(np.float32)

    def _extra_state(self) -> dict:
        return {"objective": self.objective_}

    def _load_extra(self, extra: dict) -> None:
        self.objective_ = extra["objective"]

    @property
    def head_scale(self) -> float:
        return self.scale / 100.0 if self.standardize else self.scale

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return self._activations(self._x(bundle))


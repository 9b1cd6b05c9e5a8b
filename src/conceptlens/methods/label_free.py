"""`label_free`: Label-free CBM (Oikarinen et al., ICLR 2023).

1. Projection: W_c (k x f) maps backbone features to concept activations, trained so each
   concept's column matches the image-concept similarity column under cos^3 similarity
   (centre, cube, then cosine over images); Adam 1e-3, up to 1000 steps, early stopping
   on validation similarity.
2. Interpretability cutoff: concepts whose validation cos^3 similarity is below 0.45 go.
3. Standardise the activations, then a sparse elastic-net multinomial GLM (alpha 0.99)
   along a regularisation path, stopped at `lam` (7e-4 by default) or at a target NEC.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import METHODS, Context, Method
from .sparse_layer import fit_sparse_layer, standardize


def cos_cubed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-column cos^3 similarity between (n, k) matrices."""
    a = (a - a.mean(0)) ** 3
    b = (b - b.mean(0)) ** 3
    a = a / a.norm(dim=0).clamp(min=1e-12)
    b = b / b.norm(dim=0).clamp(min=1e-12)
    return (a * b).sum(0)


@METHODS.register("label_free")
class LabelFree(Method):
    name = "label_free"
    input = "features"
    _arrays = ("class_weights_", "intercept_", "projection_", "mean_", "std_", "kept_")

    def __init__(self, lam: float = 7e-4, target_nec: float | None = None, alpha: float = 0.99,
                 steps: int = 1000, lr: float = 1e-3, interpretability_cutoff: float = 0.45,
                 on: str = "auto", seed: int = 0):
        self.lam, self.target_nec, self.alpha = lam, target_nec, alpha
        self.steps, self.lr, self.interpretability_cutoff = steps, lr, interpretability_cutoff
        self.on, self.seed = on, seed

    def _fit(self, train, context: Context, val) -> None:
        self.input = self.on if self.on != "auto" else (
            "features" if train.features is not None else "embedding")
        self.feature_key_ = self.input
        C = np.asarray(context.concept_embedding, dtype=np.float32)
        held = val if val is not None else train
        F, Fv = torch.from_numpy(self._x(train)), torch.from_numpy(self._x(held))
        S = torch.from_numpy(np.asarray(train.embedding, np.float32) @ C.T)
        Sv = torch.from_numpy(np.asarray(held.embedding, np.float32) @ C.T)
        torch.manual_seed(self.seed)
        proj = torch.nn.Linear(F.shape[1], C.shape[0], bias=False)
        opt = torch.optim.Adam(proj.parameters(), lr=self.lr)
        best, best_w, since = -np.inf, proj.weight.detach().clone(), 0
        for step in range(self.steps):
            opt.zero_grad()
            loss = -cos_cubed(proj(F), S).mean()
            loss.backward()
            opt.step()
            if step % 20 == 19 or step == self.steps - 1:
                with torch.no_grad():
                    score = float(cos_cubed(proj(Fv), Sv).mean())
                if score > best:
                    best, best_w, since = score, proj.weight.detach().clone(), 0
                else:
                    since += 1
                    if since >= 3:  # early stopping on the validation similarity
                        break
        with torch.no_grad():
            sims = cos_cubed(Fv @ best_w.T, Sv).numpy()
        kept = np.flatnonzero(sims >= self.interpretability_cutoff)
        if not len(kept):  # keep the best-fitting concepts rather than none at all
            kept = np.argsort(-sims)[: max(1, len(sims) // 10)]
        self.kept_ = kept.astype(np.int64)
        self.projection_similarity_ = sims
        self.projection_ = best_w.numpy()[kept].astype(np.float32)
        self.concepts_ = [context.concepts[i] for i in kept]
        A = self._x(train) @ self.projection_.T
        self.mean_, self.std_ = standardize(A)
        self.class_weights_, self.intercept_, self.lam_ = fit_sparse_layer(
            (A - self.mean_) / self.std_, np.asarray(train.labels), len(self.classes_), self.lam,
            self.target_nec, self.alpha)

    def _extra_state(self) -> dict:
        return {"input": self.input, "lam": self.lam_}

    def _load_extra(self, extra: dict) -> None:
        self.input, self.lam_ = extra["input"], extra["lam"]

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return (self._x(bundle) @ self.projection_.T - self.mean_) / self.std_


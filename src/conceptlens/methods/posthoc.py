"""`posthoc` and `posthoc_hybrid`: Post-hoc CBM (Yuksekgonul et al., ICLR 2023).

Concept vectors come from text (the concept embeddings in the context) or, with
`learn_cavs`, from example images: a linear SVM per concept separating images with it from
images without it (a concept activation vector). Activations are projections of the image
embedding on the unit concept vectors; the classifier is a sparse elastic net (alpha 0.99).
PCBM-h adds a residual linear layer on the raw embedding, trained after the sparse layer is
frozen, to recover the accuracy the bottleneck loses.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..errors import DataError
from .base import METHODS, Context, Method
from .sparse_layer import fit_sparse_layer, standardize


def learn_cavs(examples: Mapping[str, tuple[np.ndarray, np.ndarray]], C: float = 0.1,
               seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Concept activation vectors: {concept: (positive embeddings, negative embeddings)}."""
    from sklearn.svm import LinearSVC

    names, vectors = [], []
    for name, (pos, neg) in examples.items():
        if len(pos) < 2 or len(neg) < 2:
            raise DataError(f"Concept {name!r} needs at least 2 positive and 2 negative examples; "
                            f"got {len(pos)} and {len(neg)}.")
        X = np.vstack([pos, neg])
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        svm = LinearSVC(C=C, random_state=seed).fit(X, y)
        w = svm.coef_[0]
        names.append(name)
        vectors.append(w / np.linalg.norm(w))
    return names, np.asarray(vectors, dtype=np.float32)


@METHODS.register("posthoc")
class PostHoc(Method):
    name = "posthoc"
    _arrays = ("class_weights_", "intercept_", "concept_vectors_", "mean_", "std_")

    def __init__(self, lam: float = 2e-4, target_nec: float | None = None, alpha: float = 0.99):
        self.lam, self.target_nec, self.alpha = lam, target_nec, alpha

    def _fit(self, train, context: Context, val) -> None:
        C = np.asarray(context.concept_embedding, dtype=np.float32)
        self.concept_vectors_ = C / np.linalg.norm(C, axis=1, keepdims=True)
        self.concepts_ = list(context.concepts)
        A = self._x(train) @ self.concept_vectors_.T
        self.mean_, self.std_ = standardize(A)
        self.class_weights_, self.intercept_, self.lam_ = fit_sparse_layer(
            (A - self.mean_) / self.std_, np.asarray(train.labels), len(self.classes_), self.lam,
            self.target_nec, self.alpha)

    def _extra_state(self) -> dict:
        return {"lam": self.lam_}

    def _load_extra(self, extra: dict) -> None:
        self.lam_ = extra["lam"]

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return (self._x(bundle) @ self.concept_vectors_.T - self.mean_) / self.std_

    def concept_logits(self, bundle) -> np.ndarray:
        return self.head(self.transform(bundle))



@METHODS.register("posthoc_hybrid")
class PostHocHybrid(PostHoc):
    name = "posthoc_hybrid"
    _arrays = (*PostHoc._arrays, "residual_weights_", "residual_intercept_")

    def __init__(self, lam: float = 2e-4, target_nec: float | None = None, alpha: float = 0.99,
                 residual_l2: float = 1e-3, max_iter: int = 200):
        super().__init__(lam, target_nec, alpha)
        self.residual_l2, self.max_iter = residual_l2, max_iter

    def _fit(self, train, context: Context, val) -> None:
        super()._fit(train, context, val)  # the interpretable part, then frozen
        X = torch.from_numpy(self._x(train)).double()
        base = torch.from_numpy(self.concept_logits(train)).double()
        y = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
        m = len(self.classes_)
        Wr = torch.zeros(m, X.shape[1], dtype=torch.float64, requires_grad=True)
        br = torch.zeros(m, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([Wr, br], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(base + X @ Wr.T + br, y) \
                + 0.5 * self.residual_l2 * (Wr * Wr).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.residual_weights_ = Wr.detach().numpy().astype(np.float32)
        self.residual_intercept_ = br.detach().numpy().astype(np.float32)

    def residual(self, bundle) -> np.ndarray:
        return self._x(bundle) @ self.residual_weights_.T + self.residual_intercept_

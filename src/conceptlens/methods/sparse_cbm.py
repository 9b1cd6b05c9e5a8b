"""`sparse_cbm` and `cms`: Sparse-CBM (Semenov et al., 2024).

`sparse_cbm`: a concept bottleneck layer, a learned k x k map B (initialised to identity)
over the standardised image-concept similarities, made sparse by one of
- 'gumbel': Gumbel-softmax over concepts per image (temperature 1) while training, the
  plain softmax at inference;
- 'l1': an L1 penalty on the bottleneck activations;
- 'contrastive': an InfoNCE loss tying each image's bottleneck activations to its own
  similarity row;
followed by a linear layer trained with cross-entropy, all full-batch with Adam.

`cms` (Concept Matrix Search): training-free; an image's class score is the mean of its
standardised similarities to the concepts generated for that class.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .base import METHODS, Context, Method
from .sparse_layer import standardize

SPARSITY = ("gumbel", "l1", "contrastive")


@METHODS.register("sparse_cbm")
class SparseCBM(Method):
    name = "sparse_cbm"
    _arrays = ("class_weights_", "intercept_", "bottleneck_", "concept_embedding_", "mean_", "std_")

    def __init__(self, sparsity: str = "gumbel", temperature: float = 1.0, l1: float = 1e-3,
                 contrastive_weight: float = 0.1, epochs: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-4, seed: int = 0):
        if sparsity not in SPARSITY:
            raise ConfigError(f"sparsity must be one of {SPARSITY}; got {sparsity!r}.")
        self.sparsity, self.temperature, self.l1 = sparsity, temperature, l1
        self.contrastive_weight, self.epochs, self.lr = contrastive_weight, epochs, lr
        self.weight_decay, self.seed = weight_decay, seed

    def _similarity(self, X: np.ndarray) -> np.ndarray:
        return (X @ self.concept_embedding_.T - self.mean_) / self.std_

    def _bottleneck(self, S: torch.Tensor, B: torch.Tensor, train: bool) -> torch.Tensor:
        z = S @ B.T
        if self.sparsity == "gumbel":
            if train:
                return torch.nn.functional.gumbel_softmax(z, tau=self.temperature, hard=False)
            return torch.softmax(z / self.temperature, dim=1)
        return z

    def _fit(self, train, context: Context, val) -> None:
        self.concepts_ = list(context.concepts)
        self.concept_embedding_ = np.asarray(context.concept_embedding, dtype=np.float32)
        raw = self._x(train) @ self.concept_embedding_.T
        self.mean_, self.std_ = standardize(raw)
        S = torch.from_numpy(self._similarity(self._x(train)))
        y = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
        k, m = S.shape[1], len(self.classes_)
        torch.manual_seed(self.seed)
        B = torch.nn.Parameter(torch.eye(k))
        head = torch.nn.Linear(k, m)
        opt = torch.optim.Adam([B, *head.parameters()], lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            opt.zero_grad()
            c = self._bottleneck(S, B, train=True)
            loss = torch.nn.functional.cross_entropy(head(c), y)
            if self.sparsity == "l1":
                loss = loss + self.l1 * c.abs().sum(1).mean()
            elif self.sparsity == "contrastive":
                logits = torch.nn.functional.normalize(c, dim=1) @ \
                    torch.nn.functional.normalize(S, dim=1).T / 0.07
                loss = loss + self.contrastive_weight * torch.nn.functional.cross_entropy(
                    logits, torch.arange(len(S)))
            loss.backward()
            opt.step()
        self.bottleneck_ = B.detach().numpy()
        self.class_weights_ = head.weight.detach().numpy()
        self.intercept_ = head.bias.detach().numpy()

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        S = torch.from_numpy(self._similarity(self._x(bundle)))
        with torch.no_grad():
            return self._bottleneck(S, torch.from_numpy(self.bottleneck_), train=False).numpy()



@METHODS.register("cms")
class ConceptMatrixSearch(Method):
    name = "cms"
    _arrays = ("class_weights_", "concept_embedding_", "mean_", "std_")

    def __init__(self):
        pass

    def _fit(self, train, context: Context, val) -> None:
        if context.class_prior is None:
            raise ConfigError("cms needs the class-concept matrix (context.class_prior).")
        prior = np.asarray(context.class_prior, dtype=np.float32)
        if (prior.sum(1) == 0).any():
            empty = [self.classes_[i] for i in np.flatnonzero(prior.sum(1) == 0)]
            raise ConfigError(f"cms: classes without concepts: {empty[:5]}.")
        self.concepts_ = list(context.concepts)
        self.concept_embedding_ = np.asarray(context.concept_embedding, dtype=np.float32)
        self.mean_, self.std_ = standardize(self._x(train) @ self.concept_embedding_.T)
        self.class_weights_ = prior / prior.sum(1, keepdims=True)

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return (self._x(bundle) @ self.concept_embedding_.T - self.mean_) / self.std_


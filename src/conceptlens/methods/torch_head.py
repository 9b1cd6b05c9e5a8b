"""A fitted model's concept layer and final layer as a `torch.nn.Module` (the export ability).

A method that can be exported has `torch_head()` (methods/protocols.py: `Exportable`), which
returns a `TorchHead`: its input (the backbone's 'embedding' or 'features', and the raw embedding
norms where the method reads them) -> (concept activations (n, k), class logits (n, m)), the same
numbers as `transform` and `decision_function`:

    logits = (head_scale * activations) @ class_weights_.T + intercept (+ residual(input))

The concept layer is an `ArrayFunction`: one of the small functions below over the method's fitted
arrays (kept as buffers, so `state_dict`, `.to(device)` and ONNX export see them). The functions
are plain torch code at module level, so a `TorchHead` pickles (`torch.save`) and traces.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..errors import DataError

__all__ = ["ArrayFunction", "TorchHead", "make_torch_head"]


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


class ArrayFunction(nn.Module):
    """`fn(x, norm, **arrays, **options)` with the arrays as buffers and the options as constants."""

    def __init__(self, fn: Callable, arrays: dict, options: dict | None = None):
        super().__init__()
        self.fn, self.names, self.options = fn, tuple(arrays), dict(options or {})
        for name, a in arrays.items():
            self.register_buffer(name, _t(a))

    def forward(self, x: torch.Tensor, norm: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(x, norm, **{n: getattr(self, n) for n in self.names}, **self.options)


class TorchHead(nn.Module):
    """(input (n, d), optional raw embedding norms (n,)) -> (concept activations, class logits)."""

    def __init__(self, activations: nn.Module, class_weights, intercept, head_scale: float = 1.0,
                 residual: nn.Module | None = None, *, input: str = "embedding", method: str = "",
                 classes=(), concepts=(), needs_norm: bool = False):
        super().__init__()
        self.activations, self.residual = activations, residual
        self.register_buffer("class_weights", _t(class_weights))
        self.register_buffer("intercept", _t(intercept))
        self.head_scale = float(head_scale)
        self.input, self.method, self.needs_norm = input, method, needs_norm
        self.classes, self.concepts = tuple(classes), tuple(concepts)

    def forward(self, x: torch.Tensor, norm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.activations(x, norm)
        logits = (self.head_scale * a) @ self.class_weights.T + self.intercept
        if self.residual is not None:
            logits = logits + self.residual(x, norm)
        return a, logits


def make_torch_head(model, fn: Callable, arrays: dict, options: dict | None = None, *,
                    residual: nn.Module | None = None, needs_norm: bool = False) -> TorchHead:
    """The TorchHead of a fitted conceptlens `model` whose activations are `fn` over `arrays`."""
    model.check_fitted()
    return TorchHead(ArrayFunction(fn, arrays, options), model.class_weights_, model.intercept(),
                     model.head_scale, residual, input=model.feature_key_, method=model.name,
                     classes=model.classes_, concepts=model.concepts_, needs_norm=needs_norm)


def _need_norm(norm, method: str):
    if norm is None:
        raise DataError(f"{method}: the model reads raw (unnormalised) embeddings, so its torch head needs "
                        "the raw embedding norms (the `norm` argument), which were not given.")
    return norm


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.clamp(torch.linalg.vector_norm(x, dim=1, keepdim=True), min=1e-12)


# -- the concept layers (one per family of methods) ----------------------------------------------

def standardised_projection(x, norm, projection, mean, std):
    """Label-free CBM: (x P^T - mean) / std."""
    return (x @ projection.T - mean) / std


def standardised_margins(x, norm, vectors, intercepts, mean, std):
    """Post-hoc CBM: (x V^T + b - mean) / std (the CAV margins, standardised)."""
    return (x @ vectors.T + intercepts - mean) / std


def standardised_input(x, norm, mean, scale):
    """Linear probe: (x - mean) / scale (the input itself is the bottleneck)."""
    return (x - mean) / scale


def affine(x, norm, weight, bias):
    """x W^T + b (PCBM-h's residual layer)."""
    return x @ weight.T + bias


def projection(x, norm, weight):
    """x W^T (zero-shot: similarities to the class prompts)."""
    return x @ weight.T


def concept_similarity(x, norm, concept_embedding, mean, std, dot: bool = False, standardize: bool = False):
    """LaBo: x C^T on the unit embedding (cosine) or the raw one (x * norm, similarity 'dot'),
    optionally standardised."""
    if dot:
        x = x * _need_norm(norm, "labo")[:, None]
    a = x @ concept_embedding.T
    return (a - mean) / std if standardize else a


def scaled_cosine(x, norm, concept_embedding, scale):
    """Sparse-CBM: scale * cos(x, C) (CLIP's logits_per_image)."""
    return (scale * _unit(x)) @ concept_embedding.T


def grounded_probabilities(x, norm, coef, intercept, mask):
    """KnoBo: sigmoid(unit(x) G^T + g) on the bottleneck's concepts, 0 elsewhere."""
    n = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    u = x / torch.where(n > 0, n, torch.ones_like(n))
    return torch.sigmoid(u @ coef.T + intercept) * mask


def concept_network(x, norm, mean, scale, coef, bias, hidden_coef=None, hidden_bias=None,
                    sigmoid: bool = False):
    """CBM: g(x) = (MLP or linear)((x - mean) / scale); the label layer reads sigmoid(g) or g."""
    z = (x - mean) / scale
    if hidden_coef is not None:
        z = torch.relu(z @ hidden_coef.T + hidden_bias)
    z = z @ coef.T + bias
    return torch.sigmoid(z) if sigmoid else z


def sae_encoder(x, norm, weight, b_enc, b_pre, raw: bool = False):
    """Discover-then-Name: ReLU(W (x - b_pre) + b_enc) on the unit or the raw (x * norm) embedding."""
    if raw:
        x = x * _need_norm(norm, "dn_cbm")[:, None]
    return torch.relu((x - b_pre) @ weight.T + b_enc)


def row_normalised_cosine(x, norm, concept_embedding, onehot: bool = False, eps: float = 1e-8):
    """Concept Matrix Search: cos(x, C) with each row divided by its sum (+ eps), in float64 as the
    method computes it; then unit rows ('similarity') or the one-hot of the row's first maximum."""
    cos = _unit(x.double()) @ _unit(concept_embedding.double()).T
    v = cos / (cos.sum(1, keepdim=True) + eps)
    if onehot:
        return nn.functional.one_hot(v.argmax(1), v.shape[1]).float()
    return _unit(v).float()

"""Zero-shot classification: cosine between an image and each class's prompt embedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backbones import Backbone, l2_normalize
from ..errors import NotFittedError

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class ZeroShot:
    """Class embedding = normalised mean of the prompt embeddings over `templates`."""

    def __init__(self, templates: Sequence[str] = DEFAULT_TEMPLATES, scale: float = 100.0):
        self.templates = tuple(templates)
        self.scale = scale

    def fit(self, backbone: Backbone, classes: Sequence[str], encode=None) -> ZeroShot:
        """`encode(texts)` defaults to `backbone.encode_texts` (pass a cached encoder)."""
        encode = encode or backbone.encode_texts
        prompts = [t.format(c) for c in classes for t in self.templates]
        emb = encode(prompts).reshape(len(classes), len(self.templates), -1).mean(1)
        self.classes_ = tuple(classes)
        self.class_embeddings_ = l2_normalize(emb)
        return self

    def decision_function(self, embedding: np.ndarray) -> np.ndarray:
        if not hasattr(self, "class_embeddings_"):
            raise NotFittedError("ZeroShot is not fitted; call fit(backbone, classes) first.")
        return self.scale * embedding @ self.class_embeddings_.T

    def predict_proba(self, embedding: np.ndarray) -> np.ndarray:
        z = self.decision_function(embedding)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def predict(self, embedding: np.ndarray) -> np.ndarray:
        return self.decision_function(embedding).argmax(1)

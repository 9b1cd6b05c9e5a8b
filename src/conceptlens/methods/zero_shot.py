"""`zero_shot`: cosine between an image and each class's prompt embedding."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from ..validation import Interval
from .base import METHODS, Context, Method


@METHODS.register("zero_shot")
class ZeroShot(Method):
    """Logits = scale * cos(image, class prompt); the 'concepts' are the class prompts.

    Parameters
    ----------
    scale : float, default 100.0
        The logit temperature (CLIP's is 100); a positive finite number.
    """

    # no concept layer: class prompts are its "concepts"
    tags = replace(Method.tags, requires=("class_embedding",), needs_concepts=False)
    _arrays = ("class_weights_", "prompt_embedding_")
    _array_shapes: ClassVar[dict[str, tuple]] = {"prompt_embedding_": ("m", None)}
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "scale": [Interval(float, 0, None, closed="neither",
                           description="a positive finite number (the logit temperature, CLIP's is 100)")]}

    def __init__(self, scale: float = 100.0):
        self.scale = scale

    def _fit(self, train, context: Context, val) -> None:
        if context.class_embedding is None:
            raise ConfigError("zero_shot needs class prompt embeddings (context.class_embedding).")
        self.prompt_embedding_ = np.asarray(context.class_embedding, dtype=np.float32)
        self.class_weights_ = np.eye(len(self.classes_), dtype=np.float32)
        self.concepts_ = [f"a photo of a {c}" for c in self.classes_]

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return self._x(bundle) @ self.prompt_embedding_.T

    def torch_head(self):
        """Prompt similarities and the scaled identity head as a torch module (methods/torch_head.py)."""
        from .torch_head import make_torch_head, projection

        return make_torch_head(self, projection, {"weight": self.prompt_embedding_})

    @property
    def head_scale(self) -> float:
        return self.scale

"""Small typed protocols for the optional abilities of a method, so that no module above the
methods branches on a method's name or reads its private attributes: it asks
`isinstance(model, Protocol)` (or reads the tags, methods/tags.py) and calls the public method.

| protocol | method / property | who has it | who reads it |
|---|---|---|---|
| `Intervenable` | `intervene_concepts(bundle, truth, concepts=None, mask=None)` | ecbm | runs, cbm's curves |
| `TorchForward` | `torch_forward()` -> (concept_fn, class_fn or None, input) | cbm, ecbm | explain |
| `Exportable` | `torch_head()` -> methods.torch_head.TorchHead (input -> activations, logits) | the linear-bottleneck methods, cbm | export |
| `HasBottleneck` | `bottleneck_` (the concept columns that are not constant 0) | knobo | grounding, cli |
| `Discovering` | `discovery_record()` -> DiscoveryRecord | dn_cbm, v2c | report/html.py |
| `VideoModel` | `video_sampling()` -> data.video.VideoSampling | motif | cli (explain a video) |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Discovering", "DiscoveryRecord", "Exportable", "HasBottleneck", "Intervenable", "TorchForward",
           "VideoModel"]


@runtime_checkable
class Intervenable(Protocol):
    """A method with its own concept intervention: the named `concepts` (or the (n, k) bool `mask`)
    set to `truth` (n, k) 0/1; returns (p(y | x, do), p(c | x, do), class logits)."""

    def intervene_concepts(self, bundle, truth, concepts=None, mask=None) -> tuple: ...


@runtime_checkable
class TorchForward(Protocol):
    """A method whose concept scores (and class logits) are exact torch functions of its input:
    `torch_forward()` returns (concept_fn, class_fn or None, input key "embedding"/"features")."""

    def torch_forward(self) -> tuple[Callable, Callable | None, str]: ...


@runtime_checkable
class Exportable(Protocol):
    """A method whose whole prediction is one torch module of its input: `torch_head()` returns a
    `methods.torch_head.TorchHead`, (input, raw norms or None) -> (concept activations, class logits),
    equal to `transform` and `decision_function` (conceptlens.export builds on it)."""

    def torch_head(self): ...


@runtime_checkable
class HasBottleneck(Protocol):
    """A method whose bottleneck keeps only some of its concepts: `bottleneck_` (int indices)."""

    @property
    def bottleneck_(self) -> np.ndarray: ...


@dataclass
class DiscoveryRecord:
    """What a method that discovers its concepts tells the report about them.

    kind: "latents" (each concept is an SAE latent with a naming record) or "tokens" (each class
    drew tokens from a codebook). concept_set: its concepts with the classes that found them,
    where it has one (v2c). latents: per concept (aligned with concepts_), a naming record
    ("latent", "name", "nearest", "similarity", "second", "second_similarity", "dead"); None when
    the model cannot say. class_tokens: class -> its tokens (kind "tokens")."""

    kind: str
    latents: list[dict] | None = None
    class_tokens: dict[str, list[str]] = field(default_factory=dict)
    concept_set: object | None = None  # a concepts.ConceptSet: each concept with the classes that found it


@runtime_checkable
class Discovering(Protocol):
    """A method that finds its own concepts and can say how (the report's "Discovered concepts")."""

    def discovery_record(self) -> DiscoveryRecord: ...


@runtime_checkable
class VideoModel(Protocol):
    """A method on videos: how it cut its training videos into windows, so a new video is cut alike."""

    def video_sampling(self): ...

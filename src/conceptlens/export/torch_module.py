"""A fitted model plus its backbone as one `torch.nn.Module`: prepared image tensor -> class
logits and concept activations.

    exported = export_torch(model, backbone)          # model.check_backbone(backbone) first
    pixels = exported.prepare(images)                 # (n, 3, s, s), the backbone's own preprocessing
    logits, concepts = exported(pixels)
    exported.predict_proba(pixels)                    # = model.predict_proba(encode(images)) to 1e-5

The model side is the method's `torch_head()` (methods/protocols.py: `Exportable`; the linear-
bottleneck methods, cbm, dn_cbm, cms); the backbone side is the backbone's `image_encoder()`
(offline, hf:). Anything else raises a ConfigError naming the method or the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..methods.protocols import Exportable

__all__ = ["ExportedModel", "export_torch", "image_encoder", "torch_head"]


def torch_head(model):
    """The model's concept and final layers as a torch module (ConfigError when it has none)."""
    check = getattr(model, "check_fitted", None)
    if check is None:
        raise ConfigError(f"expected a fitted conceptlens model; got {type(model).__name__}.")
    check()
    name = getattr(model, "name", type(model).__name__)
    if not isinstance(model, Exportable):
        raise ConfigError(
            f"method {name!r} cannot be exported: its prediction is not one torch module of the image "
            "embedding (it has no torch_head(), methods/protocols.py: Exportable). Exportable: label_free, "
            "labo, v2c, posthoc, posthoc_hybrid, linear_probe, sparse_cbm, cms, knobo, zero_shot, cbm, "
            "dn_cbm.")
    return model.torch_head()


def image_encoder(backbone) -> nn.Module:
    """The backbone's image side as a torch module (prepared pixels -> {"embedding", ...})."""
    make = getattr(backbone, "image_encoder", None)
    if not callable(make):
        raise ConfigError(
            f"backbone {getattr(backbone, 'id', type(backbone).__name__)!r} has no torch image encoder "
            "(image_encoder()), so the model cannot be exported with it; the offline and hf: backbones "
            "have one (precomputed features and open_clip do not).")
    return make()


class ExportedModel(nn.Module):
    """prepared pixels (n, 3, s, s) -> (class logits (n, m), concept activations (n, k))."""

    def __init__(self, encoder: nn.Module, head: nn.Module, *, backbone=None, backbone_spec: str = "",
                 backbone_id: str = ""):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.input = head.input
        self.classes, self.concepts = tuple(head.classes), tuple(head.concepts)
        self.backbone_spec, self.backbone_id = backbone_spec, backbone_id
        self._prepare = getattr(backbone, "prepare", None)  # not a module: left out of state_dict

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(pixels)
        if self.input not in out:
            raise ConfigError(f"the model reads the backbone's {self.input!r}, which its image encoder does "
                              "not "
                              f"give (it gives {sorted(out)}).")
        concepts, logits = self.head(out[self.input], out.get("embedding_norm"))
        return logits, concepts

    def predict_proba(self, pixels: torch.Tensor) -> torch.Tensor:
        """softmax(logits) in float64, as the model's predict_proba."""
        return torch.softmax(self(pixels)[0].double(), dim=-1)

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Decoded images (H, W[, C]) uint8 -> the (n, 3, s, s) tensor forward takes (the backbone's
        `prepare`, resizing and normalising as encoding does)."""
        if self._prepare is None:
            raise ConfigError("this exported model was built without its backbone's preprocessing; prepare "
                              "images with the backbone's prepare().")
        return torch.stack([self._prepare(np.asarray(im)) for im in images])


def export_torch(model, backbone) -> ExportedModel:
    """`model` (fitted) with `backbone` (the one it was fitted with, checked) as one torch module in eval
    mode; its outputs are those of `predict_proba` on the backbone's encodings of the same images."""
    head = torch_head(model)
    model.check_backbone(backbone, "export the model with the backbone it was fitted with")
    encoder = image_encoder(backbone)
    return ExportedModel(encoder, head, backbone=backbone,
                         backbone_spec=getattr(model, "backbone_spec_", "") or getattr(backbone, "spec", ""),
                         backbone_id=backbone.id).eval()

"""What every backbone provides: L2-normalised image and text embeddings in one space."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

from ..registry import Registry

BACKBONES: Registry = Registry("backbone")


def l2_normalize(x: np.ndarray | torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = x.astype(np.float32, copy=False)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def l2_normalize_with_norms(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows, their raw norms (n,) float32): the norms are what LaBo's reference keeps
    (it works on unnormalised embeddings), so backbones report them beside the unit rows."""
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = x.astype(np.float32, copy=False)
    norm = np.linalg.norm(x, axis=-1)
    return x / np.maximum(norm, 1e-12)[..., None], norm.astype(np.float32)


class Backbone(ABC):
    """A dual encoder.

    `id` names the model, its configuration and a fingerprint of its weights: the feature
    cache keys on it, so two backbones with equal ids must give equal outputs.
    `prepare` turns one decoded image (H, W, 3 uint8) into a model input; it runs in worker
    threads, so it must not touch shared state. `preprocess_id` describes it for the cache.

    Raw norms (optional): a backbone that knows what its "raw" embeddings are (e.g. CLIP's
    projection outputs before normalisation) adds 'embedding_norm' (n,) to `encode_prepared`'s
    dict and overrides `encode_texts_with_norms`; raw = unit * norm. LaBo's reference
    behaviour (unnormalised dot products) needs them; the unit embeddings stay the default.
    """

    id: str
    preprocess_id: str
    embed_dim: int
    feature_dim: int | None = None  # size of extra features for probes, if the model has them
    # the spec that reopens this backbone (get_backbone sets it: absolute paths for local folders)
    spec: str = ""

    # which runtime computes the image features, where a backbone has several that agree only to float
    # rounding (offline: "onnx" or "torch"): part of the feature cache's identity, not of `id`
    # (a model fitted on one runtime runs on the other); "" = one runtime
    runtime_id: str = ""

    @abstractmethod
    def prepare(self, image: np.ndarray) -> torch.Tensor: ...

    @abstractmethod
    def encode_prepared(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        """{'embedding': (n, embed_dim) L2-normalised float32, optional 'features' (n, f) and
        'embedding_norm' (n,), the raw embeddings' norms}."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), embed_dim) L2-normalised float32."""

    def encode_texts_with_norms(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """`encode_texts` and the raw norms (len(texts),) float32, or None where the backbone
        cannot say what a raw text embedding is."""
        return self.encode_texts(texts), None

    def encode_images(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Encode decoded images directly (no cache); see `features.encode_dataset`."""
        with torch.inference_mode():
            return self.encode_prepared(torch.stack([self.prepare(im) for im in images]))

    def outputs(self) -> tuple[str, ...]:
        return ("embedding", "features") if self.feature_dim else ("embedding",)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|3|4) uint8 -> (H, W, 3)."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def resize_center_crop(image: np.ndarray, size: int, resize_to: int | None = None,
                       mode: str = "bicubic", squash: bool = False) -> torch.Tensor:
    """Resize the short side to `resize_to` (default `size`), centre-crop to size x size;
    with `squash`, resize straight to size x size (SigLIP's preprocessing).

    Returns (3, size, size) float32 in the 0-255 range.
    """
    # a copy: decoded images may be read-only views, which torch warns about
    x = torch.from_numpy(np.array(to_rgb_uint8(image))).permute(2, 0, 1).float()
    return resize_center_crop_t(x[None], size, resize_to, mode, squash)[0]


def resize_center_crop_t(x: torch.Tensor, size: int, resize_to: int | None = None,
                         mode: str = "bicubic", squash: bool = False) -> torch.Tensor:
    """`resize_center_crop` on a (b, 3, H, W) 0..255 tensor; differentiable (not in place), so
    input attributions (explain/attribution.py) follow the backbone's own preprocessing."""
    h, w = x.shape[-2:]
    short = resize_to or size
    if squash:
        nh = nw = size
    else:
        nh, nw = (short, max(short, round(w * short / h))) if h <= w else (
            max(short, round(h * short / w)), short)
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode=mode, align_corners=False,
                                            antialias=mode in ("bilinear", "bicubic")).clamp(0, 255)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, :, top : top + size, left : left + size]

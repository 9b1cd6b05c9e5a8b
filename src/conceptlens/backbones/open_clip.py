"""`open_clip:<architecture>:<pretrained tag or checkpoint path>` (optional extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._io import fingerprint_file
from ..errors import ConfigError
from .base import BACKBONES, Backbone, l2_normalize_with_norms, resize_center_crop


class OpenClipBackbone(Backbone):
    def __init__(self, arch: str, pretrained: str, device: str | None = None):
        try:
            import open_clip
        except ImportError as e:
            raise ConfigError(
                "The open_clip backbone needs open_clip: pip install 'conceptlens[open_clip]'."
            ) from e
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        except RuntimeError as e:
            raise ConfigError(
                f"open_clip cannot build {arch!r} with {pretrained!r}: {e}. Known architectures: "
                f"{', '.join(open_clip.list_models()[:20])} ..."
            ) from e
        self.model = model.eval().to(self.device)
        self.tokenizer = open_clip.get_tokenizer(arch)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(self.model.visual, "image_size", 224))
        self.size = int(size[0] if isinstance(size, list | tuple) else size)
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(3, 1, 1)
        weights = fingerprint_file(pretrained)[:16] if Path(pretrained).is_file() else pretrained
        self.id = f"open_clip:{arch}:{weights}"
        self.preprocess_id = f"short{self.size}-crop{self.size}-bicubic-aa-mean{self.mean.flatten().tolist()}"
        self.embed_dim = int(self.encode_texts(["a photo"]).shape[1])

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        return (resize_center_crop(image, self.size) / 255.0 - self.mean) / self.std

    def encode_prepared(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        # encode_image(normalize=False): the raw embedding, whose norm LaBo's reference keeps
        unit, norm = l2_normalize_with_norms(self.model.encode_image(batch.to(self.device)))
        return {"embedding": unit, "embedding_norm": norm}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_texts_with_norms(texts)[0]

    def encode_texts_with_norms(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return l2_normalize_with_norms(self.model.encode_text(tokens, normalize=False))


@BACKBONES.register("open_clip")
def _make_open_clip(spec: str, **options) -> OpenClipBackbone:
    arch, _, pretrained = spec.partition(":")
    if not arch or not pretrained:
        raise ConfigError("open_clip backbone spec is 'open_clip:<architecture>:<pretrained tag "
                          "or checkpoint path>', e.g. 'open_clip:ViT-B-32:laion2b_s34b_b79k'.")
    return OpenClipBackbone(arch, pretrained, **options)

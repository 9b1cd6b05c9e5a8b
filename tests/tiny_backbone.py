"""A tiny deterministic backbone for cache and encode tests (importable by subprocesses)."""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np
import torch

from conceptlens.backbones import Backbone, l2_normalize_with_norms
from conceptlens.backbones.base import resize_center_crop


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

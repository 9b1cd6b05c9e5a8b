"""The plain data that flows out of the encode stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeatureBundle:
    """Encoded images: rows align with `ids` and `labels` (skipped items are not rows)."""

    ids: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    embedding: np.ndarray  # (n, d), L2-normalised, in the text space
    features: np.ndarray | None  # (n, f) backbone features for probes, if any
    backbone_id: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    # (n,) norms of the raw (unnormalised) embeddings, raw = embedding * norm; None when the
    # backbone cannot say or any row came from a cache entry written before norms were kept
    embedding_norm: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids_or_mask) -> FeatureBundle:
        idx = np.asarray(ids_or_mask)
        # an empty list would otherwise become a float array, which cannot index
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64, copy=False)
        return FeatureBundle(
            ids=[self.ids[i] for i in idx], labels=self.labels[idx], classes=self.classes,
            embedding=self.embedding[idx],
            features=None if self.features is None else self.features[idx],
            backbone_id=self.backbone_id, skipped=self.skipped,
            embedding_norm=None if self.embedding_norm is None else self.embedding_norm[idx],
        )

"""Backbones: a registry of dual encoders, resolved from one spec string."""

from __future__ import annotations

from pathlib import Path

from . import hf, offline, open_clip, precomputed  # noqa: F401 - registers the backbones
from .base import BACKBONES, Backbone, l2_normalize, l2_normalize_with_norms

__all__ = ["BACKBONES", "Backbone", "get_backbone", "l2_normalize", "l2_normalize_with_norms",
           "open_backbone"]

DEFAULT_BACKBONE = "offline"


def get_backbone(spec: str = DEFAULT_BACKBONE, **options) -> Backbone:
    """'offline[:opts]', 'hf:<id or folder>', 'open_clip:<arch>:<tag>', 'precomputed:<file>'."""
    name, _, rest = spec.partition(":")
    return BACKBONES.get(name)(rest, **options)


def open_backbone(spec: str, cache_dir: str | Path | None = None) -> Backbone:
    """get_backbone, with --cache-dir also reaching caches the backbone keeps itself (the
    offline backbone's ImageNet class-text embeddings); None keeps the user cache."""
    backbone = get_backbone(spec)
    if cache_dir is not None and hasattr(backbone, "feature_cache"):
        backbone.feature_cache = Path(cache_dir) / "features"
    return backbone

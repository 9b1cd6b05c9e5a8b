"""Backbones: a registry of dual encoders, resolved from one spec string."""

from __future__ import annotations

from pathlib import Path

from . import hf, offline, open_clip, precomputed  # noqa: F401 - registers the backbones
from .base import BACKBONES, Backbone, l2_normalize, l2_normalize_with_norms

__all__ = ["BACKBONES", "Backbone", "full_spec", "get_backbone", "l2_normalize", "l2_normalize_with_norms",
           "open_backbone"]

DEFAULT_BACKBONE = "offline"


def full_spec(spec: str) -> str:
    """The spec that reopens the same backbone from any working directory: a local folder or file
    (hf:<folder>, precomputed:<file>, open_clip's checkpoint path) made absolute; others unchanged."""
    name, _, rest = spec.partition(":")
    if name in ("hf", "precomputed") and rest and Path(rest).expanduser().exists():
        return f"{name}:{Path(rest).expanduser().resolve()}"
    if name == "open_clip":
        arch, _, pretrained = rest.partition(":")
        if pretrained and Path(pretrained).expanduser().is_file():
            return f"{name}:{arch}:{Path(pretrained).expanduser().resolve()}"
    return spec


def get_backbone(spec: str = DEFAULT_BACKBONE, **options) -> Backbone:
    """'offline[:opts]', 'hf:<id or folder>', 'open_clip:<arch>:<tag>', 'precomputed:<file>'.
    The backbone's `spec` is the full spec (`full_spec`): models record it to reopen it."""
    name, _, rest = spec.partition(":")
    backbone = BACKBONES.get(name)(rest, **options)
    if not getattr(backbone, "spec", ""):
        try:
            backbone.spec = full_spec(spec)
        except AttributeError:  # a backbone that does not take attributes keeps none
            pass
    return backbone


def open_backbone(spec: str, cache_dir: str | Path | None = None) -> Backbone:
    """get_backbone, with --cache-dir also reaching caches the backbone keeps itself (the
    offline backbone's ImageNet class-text embeddings); None keeps the user cache."""
    backbone = get_backbone(spec)
    if cache_dir is not None and hasattr(backbone, "feature_cache"):
        backbone.feature_cache = Path(cache_dir) / "features"
    return backbone

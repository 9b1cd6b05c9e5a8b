"""Backbones: a registry of dual encoders, resolved from one spec string."""

from __future__ import annotations

from . import hf, offline, open_clip, precomputed  # noqa: F401 - registers the backbones
from .base import BACKBONES, Backbone, l2_normalize, l2_normalize_with_norms

__all__ = ["BACKBONES", "Backbone", "get_backbone", "l2_normalize", "l2_normalize_with_norms"]

DEFAULT_BACKBONE = "offline"


def get_backbone(spec: str = DEFAULT_BACKBONE, **options) -> Backbone:
    """'offline[:opts]', 'hf:<id or folder>', 'open_clip:<arch>:<tag>', 'precomputed:<file>'."""
    name, _, rest = spec.partition(":")
    return BACKBONES.get(name)(rest, **options)

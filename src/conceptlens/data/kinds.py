"""What a named dataset format is (DatasetKind) and the table of them; the loaders (cifar, cub,
imagenet, hf) register here, and catalog.py looks specs up (so the loaders never import the catalog
that imports them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class DatasetKind:
    """One named dataset format: how to load it, what its options are, what its folder holds."""

    name: str
    load: Callable  # load(location: Path | str, *, split, max_pixels, allow_non_ascii, **options)
    layout: str  # the expected files, shown in errors and in `conceptlens data` help
    example: str
    constraints: dict = field(default_factory=dict)
    location_is_path: bool = True  # hf: a hub name is a location too


KINDS: dict[str, DatasetKind] = {}


def register(kind: DatasetKind) -> DatasetKind:
    if kind.name in KINDS:
        raise ConfigError(f"dataset kind {kind.name!r} is registered twice.")
    KINDS[kind.name] = kind
    return kind

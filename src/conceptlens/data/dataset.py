"""The dataset type every loader returns."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .images import ArrayImages, FileImages

SPLITS = ("train", "val", "test")


def normalize_class_names(names: Sequence[str], allow_non_ascii: bool = False) -> list[str]:
    """Clean class names (underscores and runs of whitespace become one space).

    Raises a DataError for empty names, for names that only differ in case, spacing or
    underscores (they would become one class to a text encoder), and for non-ASCII names
    unless `allow_non_ascii` (then they are NFC-normalised, so 'é' typed two ways is one name).
    """
    cleaned, seen = [], {}
    for raw in names:
        name = re.sub(r"[\s_]+", " ", unicodedata.normalize("NFC", str(raw))).strip()
        if not name:
            raise DataError(f"Class name {raw!r} is empty after removing whitespace; rename it.")
        if not allow_non_ascii and not name.isascii():
            bad = "".join(sorted({ch for ch in name if not ch.isascii()}))
            raise DataError(
                f"Class name {raw!r} has non-ASCII characters ({bad!r}). Rename it, or pass "
                "allow_non_ascii=True (--allow-non-ascii) if your text encoder handles them."
            )
        key = name.casefold()
        if key in seen:
            raise DataError(
                f"Class names {seen[key]!r} and {raw!r} are the same class after normalising "
                f"case, spaces and underscores (both become {name!r}). Merge or rename one."
            )
        seen[key] = raw
        cleaned.append(name)
    return cleaned


def require_classes(name: str, classes: Sequence[str], fix: str) -> None:
    """A classifier needs two classes; say so at load time, not deep inside a solver."""
    if len(classes) < 2:
        found = ", ".join(repr(c) for c in classes) or "none"
        raise DataError(
            f"Dataset {name!r} needs at least 2 classes; found {len(classes)}: {found}. {fix}"
        )


@dataclass(frozen=True)
class ImageDataset:
    """Images with integer labels into `classes`; `split` is the split the data came with."""

    name: str
    classes: tuple[str, ...]
    labels: np.ndarray
    ids: tuple[str, ...]
    images: FileImages | ArrayImages
    split: tuple[str, ...] | None = None

    def __post_init__(self):
        n = len(self.ids)
        if len(self.labels) != n or len(self.images) != n:
            raise DataError(
                f"Dataset {self.name!r}: {n} ids, {len(self.labels)} labels and "
                f"{len(self.images)} images; they must be equally many."
            )
        if self.split is not None and len(self.split) != n:
            raise DataError(f"Dataset {self.name!r}: split has {len(self.split)} entries for {n}.")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"Dataset {self.name!r}: a label is outside 0..{len(self.classes)-1}.")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            name=self.name,
            classes=self.classes,
            labels=self.labels[idx],
            ids=tuple(self.ids[i] for i in idx),
            images=self.images.subset(idx),
            split=None if self.split is None else tuple(self.split[i] for i in idx),
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist(), strict=True))

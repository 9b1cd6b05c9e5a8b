"""An image folder: one subfolder per class, images inside."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import ImageDataset, normalize_class_names
from .images import FileImages

log = logging.getLogger("conceptlens")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def load_image_folder(root: str | Path, allow_non_ascii: bool = False) -> ImageDataset:
    """Read `root/<class>/<image>`; classes are the subfolders in sorted order.

    Files with other suffixes are listed in a warning (never dropped without a word); a class
    folder with no image is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a folder.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"Image folder {root} has no class subfolders; expected {root}/<class name>/<image>."
        )
    classes = normalize_class_names([d.name for d in class_dirs], allow_non_ascii)
    paths, labels, ignored, empty = [], [], [], []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        ignored += [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if not images:
            empty.append(d.name)
        paths += images
        labels += [label] * len(images)
    if empty:
        raise DataError(
            f"Class folder(s) with no images in {root}: {', '.join(empty)}. Add images "
            f"(suffixes {', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder(s)."
        )
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        log.warning("Ignored %d non-image file(s) in %s: %s%s", len(ignored), root, shown,
                    " ..." if len(ignored) > 5 else "")
    return ImageDataset(
        name=root.name,
        classes=tuple(classes),
        labels=np.asarray(labels, dtype=np.int64),
        ids=tuple(str(p.relative_to(root)) for p in paths),
        images=FileImages(paths),
    )

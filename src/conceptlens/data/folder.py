"""An image folder: one subfolder per class, images inside."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import ImageDataset, normalize_class_names, require_classes
from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, FileImages, check_max_pixels

log = logging.getLogger("conceptlens")


def _files(top: Path, root: Path, real_root: str,
           parents: tuple[str, ...] = ()) -> Iterator[tuple[Path, str]]:
    """(path, resolved path) of the files under `top`, sorted, following folder symlinks.

    A folder (usually a symlink) that resolves to the dataset root, one of its ancestors, or
    a folder we are already inside would list images again under another name, or forever.
    """
    real = os.path.realpath(top)
    shown = top.relative_to(root)
    if real == real_root or real_root.startswith(real.rstrip(os.sep) + os.sep):
        raise DataError(
            f"{root}/{shown} resolves to {real}, which contains the dataset folder itself; "
            "every image would be listed again under another class. Remove that link, or make "
            f"it point to a folder outside {root}."
        )
    if real in parents:
        raise DataError(
            f"{root}/{shown} resolves to {real}, a folder it is inside of (a symlink loop). "
            "Remove that link."
        )
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"Cannot list {top}: {e.strerror or e}.") from e
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = top / entry.name
        if entry.is_dir():  # follows symlinks; checked on entry above
            yield from _files(path, root, real_root, (*parents, real))
        elif entry.is_file():
            # resolving only links keeps this to one stat per symlink, not one per path part
            yield path, os.path.realpath(path) if entry.is_symlink() else os.path.join(real, entry.name)
        else:  # a dangling link is an error; a socket or a device is ignored with a warning ("")
            _refuse_dangling(path, root)
            yield path, ""


def _refuse_dangling(path: Path, root: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist, so "
                        f"its images would be left out without a word. Fix the link or remove it from {root}.")


def class_folders(root: Path) -> list[Path]:
    """The class subfolders of `root`, sorted. A dangling link among them is a DataError (the
    class would vanish without a word); files at the top have no class: named in a warning."""
    try:
        top = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"Cannot list {root}: {e.strerror or e}.") from e
    for p in top:
        _refuse_dangling(p, root)
    loose = [p.name for p in top if not p.is_dir()]
    if loose:
        log.warning("Ignored %d file(s) at the top of %s, outside any class folder: %s%s. Move a file "
                    "into %s/<class>/ to use it.", len(loose), root, ", ".join(loose[:5]),
                    " ..." if len(loose) > 5 else "", root)
    return [p for p in top if p.is_dir()]


def load_image_folder(
    root: str | Path, allow_non_ascii: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ImageDataset:
    """Read `root/<class>/<image>`; classes are the subfolders in sorted order.

    Files with other suffixes, and files at the top of `root` (outside any class folder), are
    listed in a warning (never dropped without a word); a class folder with no image is an
    error, and so is a dangling symlink anywhere; names starting with '.' are skipped. Symlinks are
    followed, except folder links back into `root` or its ancestors (an error: they would
    duplicate images under another class); one file reached by two paths (through symlinks)
    is an error, since the copies could land in both train and test. `max_pixels`: see
    `FileImages`.
    """
    root = Path(root)
    max_pixels = check_max_pixels(max_pixels)
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a folder.")
    class_dirs = class_folders(root)
    if not class_dirs:
        raise DataError(
            f"Image folder {root} has no class subfolders; expected {root}/<class name>/<image>."
        )
    classes = normalize_class_names([d.name for d in class_dirs], allow_non_ascii)
    require_classes(root.name, classes, f"Add a subfolder of images for each class to {root}.")
    real_root = os.path.realpath(root)
    paths, labels, ignored, empty = [], [], [], []
    for label, d in enumerate(class_dirs):
        files = list(_files(d, root, real_root))
        images = [(p, r) for p, r in files if r and p.suffix.lower() in IMAGE_SUFFIXES]
        ignored += [p for p, r in files if not r or p.suffix.lower() not in IMAGE_SUFFIXES]
        if not images:
            empty.append(d.name)
        paths += images
        labels += [label] * len(images)
    if empty:
        raise DataError(
            f"Class folder(s) with no images in {root}: {', '.join(empty)}. Add images "
            f"(suffixes {', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder(s)."
        )
    _refuse_same_file_twice(root, paths)
    paths = [p for p, _ in paths]
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        log.warning("Ignored %d non-image file(s) in %s: %s%s", len(ignored), root, shown,
                    " ..." if len(ignored) > 5 else "")
    return ImageDataset(
        name=root.name,
        classes=tuple(classes),
        labels=np.asarray(labels, dtype=np.int64),
        ids=tuple(str(p.relative_to(root)) for p in paths),
        images=FileImages(paths, max_pixels),
    )


def _refuse_same_file_twice(root: Path, paths: list[tuple[Path, str]]) -> None:
    first: dict[str, Path] = {}
    clashes = []
    for p, real in paths:
        if real in first:
            clashes.append(f"{first[real].relative_to(root)} = {p.relative_to(root)}")
        else:
            first[real] = p
    if clashes:
        raise DataError(
            f"{len(clashes)} image file(s) in {root} are reached by two paths (through "
            "symlinks), so one image would count twice, possibly under two classes and in both "
            "train and test: " + "; ".join(clashes[:10]) + (" ..." if len(clashes) > 10 else "")
            + ". Remove the duplicate links."
        )

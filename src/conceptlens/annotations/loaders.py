"""Readers for the attribute files that ship with CUB-200-2011, AwA2 and CelebA.

Each reads the files as distributed, checks every line and names the file and line of the
first fault, because these files are large and a silent mis-parse would only show up as a
strange grounding score much later.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from conceptlens.annotations.annotations import ConceptAnnotations, line_error
from conceptlens.errors import ConfigError, DataError


def _find(root: Path, name: str, *subdirs: str) -> Path:
    """`name` in `root` or one of `subdirs` (archives differ in where they put it)."""
    candidates = [root / name, *(root / d / name for d in subdirs)]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"{name} not found; looked in {[str(p.parent) for p in candidates]}")


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) for each non-blank line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield n, line.split()


def _id_names(path: Path) -> dict[int, str]:
    """`<id> <name>` lines (space or tab) -> {id: name}; names may hold spaces (CUB image paths)."""
    out: dict[int, str] = {}
    for n, fields in _lines(path):
        if len(fields) < 2 or not fields[0].isdigit():
            raise line_error(path, n, f"expected '<id> <name>', found {' '.join(fields)!r}")
        key = int(fields[0])
        if key in out:
            raise line_error(path, n, f"id {key} appears twice")
        out[key] = " ".join(fields[1:])
    if not out:
        raise DataError(f"{path} has no entries")
    return out


def cub_concept_text(name: str) -> str:
    """`has_bill_shape::curved_(up_or_down)` -> 'bill shape: curved (up or down)'.

    The raw names are identifiers; a text encoder scores the readable phrase far better.
    """
    part, _, value = name.partition("::")
    part = part.removeprefix("has_").replace("_", " ")
    value = value.replace("_", " ")
    return f"{part}: {value}" if value else part


def load_cub(root: str | os.PathLike, min_certainty: int = 3) -> ConceptAnnotations:
    """Per-image CUB-200-2011 attribute labels.

    CUB's annotators rated each label 1 (not visible), 2 (guessing), 3 (probably) or 4
    (definitely). Labels rated below `min_certainty`, and every 'not visible' one, become NaN:
    an unseen attribute is unknown, not absent.
    """
    if min_certainty not in (1, 2, 3, 4):
        raise ConfigError(f"min_certainty must be 1, 2, 3 or 4 (CUB's certainty ids), got {min_certainty!r}")
    root = Path(root)
    # the archive puts attributes.txt beside CUB_200_2011/; some copies move it into attributes/
    attr_path = _find(root, "attributes.txt", "attributes", "..")
    images_path = _find(root, "images.txt")
    labels_path = _find(root, "image_attribute_labels.txt", "attributes")
    attributes = _id_names(attr_path)
    images = _id_names(images_path)
    attr_index = {a: j for j, a in enumerate(sorted(attributes))}
    image_index = {i: r for r, i in enumerate(sorted(images))}

    values = np.full((len(images), len(attributes)), np.nan, dtype=np.float32)
    for n, fields in _lines(labels_path):
        # the real file has a few lines with an extra field; the first four are all we use
        if len(fields) not in (5, 6):
            raise line_error(labels_path, n, f"{len(fields)} fields, expected 5 (or 6)")
        try:
            image_id, attr_id, present, certainty = (int(f) for f in fields[:4])
        except ValueError:
            raise line_error(labels_path, n, f"non-integer id or label in {fields[:4]}") from None
        if image_id not in image_index:
            raise line_error(labels_path, n, f"image id {image_id} is not in {images_path.name}")
        if attr_id not in attr_index:
            raise line_error(labels_path, n, f"attribute id {attr_id} is not in {attr_path.name}")
        if present not in (0, 1) or certainty not in (1, 2, 3, 4):
            raise line_error(labels_path, n, f"is_present {present} / certainty {certainty} out of range")
        if certainty >= min_certainty and certainty != 1:
            values[image_index[image_id], attr_index[attr_id]] = present

    return ConceptAnnotations(
        "image",
        tuple(cub_concept_text(attributes[a]) for a in sorted(attributes)),
        values,
        items=tuple(images[i] for i in sorted(images)),
        provenance=f"CUB-200-2011 {root} (min_certainty={min_certainty})",
    )


def load_awa2(root: str | os.PathLike) -> ConceptAnnotations:
    """Class-level AwA2 annotations from predicates.txt, classes.txt, predicate-matrix-binary.txt."""
    root = Path(root)
    predicates = _id_names(_find(root, "predicates.txt"))
    classes = _id_names(_find(root, "classes.txt"))
    matrix_path = _find(root, "predicate-matrix-binary.txt")
    rows = []
    for n, fields in _lines(matrix_path):
        if len(fields) != len(predicates):
            raise line_error(matrix_path, n, f"{len(fields)} values, expected {len(predicates)} (predicates)")
        if any(f not in ("0", "1") for f in fields):
            raise line_error(
                matrix_path, n, f"values must be 0 or 1; found {sorted(set(fields) - {'0', '1'})}"
            )
        rows.append([float(f) for f in fields])
    if len(rows) != len(classes):
        raise DataError(f"{matrix_path} has {len(rows)} rows, expected one per class ({len(classes)})")
    # rows follow class-id order, columns predicate-id order
    return ConceptAnnotations(
        "class",
        tuple(predicates[p] for p in sorted(predicates)),
        np.array(rows, dtype=np.float32),
        classes=tuple(classes[c] for c in sorted(classes)),
        provenance=f"AwA2 {root}",
    )


def celeba_concept_text(name: str) -> str:
    """`Wearing_Hat` -> 'wearing hat': readable text for a text encoder."""
    return name.replace("_", " ").lower()


def load_celeba(path: str | os.PathLike) -> ConceptAnnotations:
    """Per-image CelebA attributes from list_attr_celeba.txt (the file, or a folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = _find(path, "list_attr_celeba.txt", "Anno")
    lines = _lines(path)
    n, fields = next(lines, (1, []))
    if len(fields) != 1 or not fields[0].isdigit():
        raise line_error(path, n, f"expected the image count, found {' '.join(fields)!r}")
    count = int(fields[0])
    n, names = next(lines, (2, []))
    if not names:
        raise line_error(path, n, "expected the attribute names")
    items, rows = [], []
    for n, fields in lines:
        if len(fields) != len(names) + 1:
            raise line_error(path, n, f"{len(fields)} fields, expected a file name and {len(names)} values")
        if any(f not in ("1", "-1") for f in fields[1:]):
            raise line_error(
                path, n, f"values must be 1 or -1; found {sorted(set(fields[1:]) - {'1', '-1'})}"
            )
        items.append(fields[0])
        rows.append([1.0 if f == "1" else 0.0 for f in fields[1:]])  # -1 means absent, not unknown
    if len(items) != count:
        # a short file is most often a truncated download
        raise DataError(f"{path} says {count} images on line 1 but lists {len(items)}")
    return ConceptAnnotations(
        "image",
        tuple(celeba_concept_text(a) for a in names),
        np.array(rows, dtype=np.float32).reshape(len(items), len(names)),
        items=tuple(items),
        provenance=f"CelebA {path}",
    )

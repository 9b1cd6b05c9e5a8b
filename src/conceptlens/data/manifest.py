"""A manifest: one row per image with path, label and an optional split (CSV or JSONL)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import SPLITS, ImageDataset, normalize_class_names
from .images import FileImages


def _rows(path: Path) -> list[tuple[int, dict]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"path", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(
                    f"Manifest {path} lacks column(s) {sorted(missing)}; its header is "
                    f"{reader.fieldnames}. Expected: path,label[,split]."
                )
            return [(i + 2, row) for i, row in enumerate(reader)]
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"Manifest {path} line {lineno} is not valid JSON: {e.msg}.") from e
            if not isinstance(row, dict):
                raise DataError(f"Manifest {path} line {lineno} must be a JSON object.")
            rows.append((lineno, row))
    return rows


def load_manifest(path: str | Path, allow_non_ascii: bool = False) -> ImageDataset:
    """Read a manifest; relative image paths are taken from the manifest's folder.

    Classes are the distinct labels in order of first appearance. A missing file, an empty
    label or an unknown split is an error that names the line; nothing is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Manifest {path} does not exist.")
    rows = _rows(path)
    if not rows:
        raise DataError(f"Manifest {path} has no rows.")
    paths, raw_labels, splits, missing = [], [], [], []
    for lineno, row in rows:
        p, label = str(row.get("path") or "").strip(), str(row.get("label") or "").strip()
        if not p or not label:
            raise DataError(f"Manifest {path} line {lineno}: 'path' and 'label' must be non-empty.")
        split = str(row.get("split") or "").strip()
        if split and split not in SPLITS:
            raise DataError(
                f"Manifest {path} line {lineno}: split {split!r} is not one of {SPLITS}."
            )
        full = (path.parent / p) if not Path(p).is_absolute() else Path(p)
        if not full.is_file():
            missing.append(f"line {lineno}: {full}")
        paths.append(full)
        raw_labels.append(label)
        splits.append(split)
    if missing:
        raise DataError(
            f"Manifest {path} names {len(missing)} file(s) that do not exist: "
            + "; ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        )
    if any(splits) and not all(splits):
        raise DataError(f"Manifest {path}: give a split for every row or for none.")
    order = list(dict.fromkeys(raw_labels))
    classes = normalize_class_names(order, allow_non_ascii)
    index = {raw: i for i, raw in enumerate(order)}
    return ImageDataset(
        name=path.stem,
        classes=tuple(classes),
        labels=np.asarray([index[r] for r in raw_labels], dtype=np.int64),
        ids=tuple(str(p) for p in paths),
        images=FileImages(paths),
        split=tuple(splits) if any(splits) else None,
    )

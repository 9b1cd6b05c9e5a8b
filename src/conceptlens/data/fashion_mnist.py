"""Built-in Fashion-MNIST (Xiao et al., 2017): 60,000 train + 10,000 test grey 28x28 images."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
from pathlib import Path

import numpy as np

from .._io import atomic_write, cache_root
from ..annotations.fashion_mnist import FASHION_MNIST_CLASSES
from ..errors import DataError
from .dataset import ImageDataset
from .images import ArrayImages

log = logging.getLogger("conceptlens")

# sha256 of the *uncompressed* IDX files: independent of how a mirror or distro gzipped them
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def search_dirs(root: str | Path | None = None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    dirs = [cache_root() / "datasets" / "fashion-mnist", SYSTEM_DIR]
    if env := os.environ.get("CONCEPTLENS_FASHION_MNIST"):
        dirs.insert(0, Path(env))
    return dirs


def _find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / f"{name}.gz", d / name):
            if candidate.is_file():
                return candidate
    return None


def _read_raw(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read {path}: {e}. Delete it and fetch it again.") from e


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse an IDX file (unsigned bytes only, as the MNIST family uses)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{source} is not an unsigned-byte IDX file (bad magic number).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{source}: header says shape {dims}, but the payload size differs.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _download(name: str, dest_dir: Path) -> Path:
    url = f"{URL}{name}.gz"
    log.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            payload = r.read()
    except OSError as e:
        raise DataError(f"Could not download {url}: {e}.") from e
    if hashlib.sha256(gzip.decompress(payload)).hexdigest() != FILES[name]:
        raise DataError(f"Checksum mismatch for {url}; the download is corrupt. Try again.")
    return atomic_write(dest_dir / f"{name}.gz", lambda p: p.write_bytes(payload))


def _load_file(name: str, dirs: list[Path], download: bool) -> np.ndarray:
    path = _find(name, dirs)
    if path is None and download:
        path = _download(name, dirs[0])
    if path is None:
        raise DataError(
            f"Fashion-MNIST file {name}(.gz) not found in: {', '.join(map(str, dirs))}. "
            "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put "
            f"the four IDX files in {dirs[0]}, or allow download=True (--download) on a machine "
            "with internet."
        )
    raw = _read_raw(path)
    if hashlib.sha256(raw).hexdigest() != FILES[name]:
        raise DataError(f"{path} does not match the published Fashion-MNIST checksum; replace it.")
    return parse_idx(raw, str(path))


def load_fashion_mnist(
    root: str | Path | None = None, download: bool = False, split: str | None = None
) -> ImageDataset:
    """Load Fashion-MNIST with its official split ('train' 60k, 'test' 10k), or one part.

    Looks in `root`, else $CONCEPTLENS_FASHION_MNIST, the user cache and Debian's folder;
    downloads into the user cache (checksums verified) when `download` is set.
    """
    if split not in (None, "train", "test"):
        raise DataError(f"Fashion-MNIST split must be 'train', 'test' or None; got {split!r}.")
    dirs = search_dirs(root)
    parts = [s for s in ("train", "test") if split in (None, s)]
    images, labels, ids, splits = [], [], [], []
    for part in parts:
        prefix = "train" if part == "train" else "t10k"
        x = _load_file(f"{prefix}-images-idx3-ubyte", dirs, download)
        y = _load_file(f"{prefix}-labels-idx1-ubyte", dirs, download)
        images.append(x)
        labels.append(y.astype(np.int64))
        ids += [f"fashion-mnist/{part}/{i}" for i in range(len(x))]
        splits += [part] * len(x)
    return ImageDataset(
        name="fashion-mnist",
        classes=FASHION_MNIST_CLASSES,
        labels=np.concatenate(labels),
        ids=tuple(ids),
        images=ArrayImages(np.concatenate(images)),
        split=tuple(splits),
    )

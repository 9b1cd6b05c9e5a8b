from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# keep the tests' caches out of the user's: one folder for the session
os.environ.setdefault("CONCEPTLENS_CACHE", tempfile.mkdtemp(prefix="conceptlens-tests-"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def write_png(path: Path, rgb: tuple[int, int, int], size=(12, 10)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """3 classes x 4 small PNGs with distinct colours."""
    root = tmp_path / "images"
    for c, name in enumerate(["cat", "dog", "red_fox"]):
        for i in range(4):
            write_png(root / name / f"{i}.png", (60 * c + 10 * i, 20 * i, 200 - 50 * c))
    return root


@pytest.fixture
def grey_dataset():
    """60 random 28x28 grey images in 3 classes (an in-memory ArrayImages dataset)."""
    from conceptlens.data import ImageDataset
    from conceptlens.data.images import ArrayImages

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    labels = np.arange(60) % 3
    return ImageDataset("grey", ("a", "b", "c"), labels, tuple(f"g/{i}" for i in range(60)),
                        ArrayImages(x))

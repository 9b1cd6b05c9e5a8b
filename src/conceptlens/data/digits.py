"""`digits`: the UCI handwritten digits (1,797 images of 8 x 8 pixels, 10 classes) that ship inside
scikit-learn (`sklearn.datasets.load_digits`), so they need no download.

Why it is built in: its class names ("zero" ... "nine") say nothing visual, which is where concept
sources that start from class names (WordNet, the vocabulary source, an LLM asked about "seven")
fail, and where concepts found in the images (Discover-then-Name, V2C-CBM) must do the work.

The pixels are scikit-learn's 0..16 ink values scaled to 0..255 (x 255 / 16, rounded), light
digits on black as in MNIST, with a one-pixel black border (10 x 10): MNIST keeps a margin around
its digits, and without one the digit touches the crop of a 224 px backbone. The dataset has no
official split; runs split it as any folder (`[data]` seed and fractions).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .dataset import ImageDataset
from .images import ArrayImages

DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NAMES = ("digits", "builtin:digits")


def load_digits() -> ImageDataset:
    """The 1,797 scikit-learn digits as an ImageDataset (ids 'digits/<row>')."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:  # scikit-learn is a dependency; a broken install is still possible
        raise DataError(f"The built-in digits come from scikit-learn, which does not import: {e}. "
                        "Reinstall it: pip install scikit-learn.") from e
    raw = sk_load_digits()
    ink = np.rint(raw.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.zeros((len(ink), 10, 10), np.uint8)
    images[:, 1:9, 1:9] = ink
    return ImageDataset(
        name="digits",
        classes=DIGIT_CLASSES,
        labels=raw.target.astype(np.int64),
        ids=tuple(f"digits/{i}" for i in range(len(ink))),
        images=ArrayImages(images),
    )

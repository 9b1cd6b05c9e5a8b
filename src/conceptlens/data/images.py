"""Image sources: the bytes that identify an image (for the cache) and how to decode them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError


class FileImages:
    """Images stored as files (JPEG, PNG, ...). The cache key hashes the file's bytes."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> bytes:
        try:
            return self.paths[i].read_bytes()
        except OSError as e:
            raise DataError(f"Cannot read image {self.paths[i]}: {e.strerror or e}.") from e

    def decode(self, i: int, data: bytes) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise DataError(
                f"Corrupt or unreadable image {self.paths[i]}: {e}. Replace or delete the file, "
                "or pass on_error='skip' (--on-error skip) to leave it out and report it."
            ) from e

    def subset(self, indices: Sequence[int]) -> FileImages:
        return FileImages([self.paths[i] for i in indices])


class ArrayImages:
    """Images held in a uint8 array (N, H, W) or (N, H, W, 3), e.g. Fashion-MNIST."""

    def __init__(self, array: np.ndarray):
        if array.dtype != np.uint8 or array.ndim not in (3, 4):
            raise DataError(
                f"Image array must be uint8 with shape (N, H, W) or (N, H, W, 3); "
                f"got {array.dtype} {array.shape}."
            )
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def read(self, i: int) -> bytes:
        img = self.array[i]
        # the shape is part of the identity: the same bytes in another shape are another image
        return repr(img.shape).encode() + np.ascontiguousarray(img).tobytes()

    def decode(self, i: int, data: bytes) -> np.ndarray:
        img = self.array[i]
        return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img

    def subset(self, indices: Sequence[int]) -> ArrayImages:
        return ArrayImages(self.array[np.asarray(indices, dtype=np.int64)])

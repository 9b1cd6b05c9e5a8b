"""Built-in Fashion-MNIST: IDX parsing, checksums, where it looks, the real files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from conceptlens.data import FASHION_MNIST_CLASSES, load_fashion_mnist
from conceptlens.data.fashion_mnist import SYSTEM_DIR, parse_idx
from conceptlens.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trip():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(a)), a)


def test_parse_idx_rejects_bad_magic_and_size():
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match="payload size"):
        parse_idx(idx_bytes(np.zeros((2, 2), np.uint8))[:-1])


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*--download"):
        load_fashion_mnist(tmp_path)


def test_checksum_mismatch_is_refused(tmp_path):
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28)))))
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(2))))
    with pytest.raises(DataError, match="does not match the published Fashion-MNIST checksum"):
        load_fashion_mnist(tmp_path)


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    data = load_fashion_mnist(SYSTEM_DIR)
    assert len(data) == 70_000 and data.classes == FASHION_MNIST_CLASSES
    assert data.split.count("train") == 60_000 and data.split.count("test") == 10_000
    # the published set is balanced: 6,000 train and 1,000 test images per class
    assert set(data.class_counts().values()) == {7000}
    test = load_fashion_mnist(SYSTEM_DIR, split="test")
    assert len(test) == 10_000 and test.ids[0] == "fashion-mnist/test/0"
    img = test.images.decode(0, test.images.read(0))
    assert img.shape == (28, 28, 3)
    # the first test image is an ankle boot (label 9) in the published files
    assert test.labels[0] == 9

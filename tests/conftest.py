from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conceptlens.testing import write_png

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# keep the tests' caches out of the user's: one folder for the session
os.environ.setdefault("CONCEPTLENS_CACHE", tempfile.mkdtemp(prefix="conceptlens-tests-"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny fits: on a busy 2-core machine synchronising threads
    costs more than it saves (use with pytestmark = pytest.mark.usefixtures("one_torch_thread"))."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# In CI the data these tests need is installed by scripts/bootstrap.sh and ../shared is laid
# beside the clone, so a skip for a missing dataset, shared file or browser there would hide
# a broken install step: turn those skips into failures when CI is set.
REQUIRED_IN_CI = ("dataset-fashion-mnist not installed", "../shared", "chromium is not installed",
                  "selenium is not installed", "the serve extra is not installed", "ray is not installed",
                  "onnxruntime is not installed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if any(needle in reason for needle in REQUIRED_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, where this must run: {reason}"

"""The demo's example images (demo.py): a run folder's images/, which `conceptlens serve` offers
by default for a model of that run."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from conceptlens.demo import EXAMPLES_PER_CLASS, example_images, run_examples
from conceptlens.runs import run_experiment
from conceptlens.testing import TinyBackbone, decode_png, tiny_run_setup, write_png


def test_a_run_with_the_demos_extra_files_writes_example_images_that_serve_lists(tmp_path, monkeypatch):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from conceptlens.service import create_app

    make = tiny_run_setup(tmp_path, monkeypatch)
    result = run_experiment(make(), extra_files=run_examples)
    run = tmp_path / "out"
    assert "images/" in result.written
    written = sorted(p.relative_to(run / "images").as_posix() for p in (run / "images").rglob("*.png"))
    assert written == [f"{c}/{k}.png" for c in ("cat", "dog", "fox") for k in range(EXAMPLES_PER_CLASS)]
    # each is one of the run's test images of its class, pixel for pixel (the source PNGs, read by PIL)
    sources = {i: decode_png(tmp_path / "images" / i) for i in result.split_ids["test"]}  # "cat/3.png"
    for name in written:
        pixels = decode_png(run / "images" / name)
        cls = name.split("/")[0]
        assert any(i.startswith(f"{cls}/") and np.array_equal(pixels, p) for i, p in sources.items())

    # served from the run's model folder with no --images: the explorer lists them
    client = TestClient(create_app(run / "models" / "zero_shot", backbone=TinyBackbone()))
    listing = client.get("/images").json()
    assert [i["name"] for i in listing["images"]] == written
    assert client.get("/model").json()["images"] == len(written)
    first = client.get("/images/0")
    assert first.status_code == 200 and first.content == (run / "images" / written[0]).read_bytes()


def test_example_images_take_the_first_of_each_class_and_name_folders_safely(tmp_path):
    from conceptlens.data import load_image_folder

    for c, name in enumerate(("a", "b")):
        for i in range(3):
            write_png(tmp_path / name / f"{i}.png", (10 * c, 20 * i, 30))
    data = load_image_folder(tmp_path)
    data = dataclasses.replace(data, classes=("T-shirt/top", "b"))  # a Fashion-MNIST name
    test = np.flatnonzero(data.labels == 0)[1:].tolist() + np.flatnonzero(data.labels == 1).tolist()
    out = example_images(data, test, per_class=1)
    assert sorted(out) == ["images/T-shirt_top/0.png", "images/b/0.png"]
    from PIL import Image

    got = np.asarray(Image.open(io.BytesIO(out["images/T-shirt_top/0.png"])).convert("RGB"))
    assert np.array_equal(got, data.images.decode(test[0], data.images.read(test[0])))

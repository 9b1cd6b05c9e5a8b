"""The offline backbone's image tower on ONNX Runtime: same outputs as PyTorch, chosen
automatically, refused when its file does not compute what PyTorch computes."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from conceptlens.backbones import get_backbone, onnx_tower
from conceptlens.backbones.offline import _efficientnet
from conceptlens.errors import ConfigError

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the fast extra)")


def _images(n=12):
    from conceptlens.data import load_dataset

    try:
        data = load_dataset("fashion_mnist")
    except Exception:  # without the Debian dataset: photos-like random colour images
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(n)]
    return [data.images.decode(i, data.images.read(i)) for i in range(n)]


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    out = {}
    for runtime in ("torch", "onnx"):
        bb = get_backbone(f"offline:runtime={runtime},image_size=160", feature_cache=root / "features")
        with torch.inference_mode():
            out[runtime] = (bb, bb.encode_images(_images()))
    return root, out


def test_onnx_runtime_gives_the_pytorch_outputs(encoded):
    root, out = encoded
    (bb_t, t), (bb_o, o) = out["torch"], out["onnx"]
    assert isinstance(bb_t.tower(), onnx_tower.TorchTower)
    assert isinstance(bb_o.tower(), onnx_tower.OnnxTower)
    assert _cos(t["features"], o["features"]).min() >= 0.999
    assert _cos(t["embedding"], o["embedding"]).min() >= 0.999
    # float rounding only: the ImageNet probabilities (what ConSE weights by) agree too
    assert np.abs(t["embedding"] - o["embedding"]).max() < 1e-3
    # one model identity (a model fitted on one runtime runs on the other), two cache identities:
    # float rounding can move a table's last digit, so a cache never mixes the runtimes
    assert bb_t.id == bb_o.id and bb_t.preprocess_id == bb_o.preprocess_id
    from conceptlens.features.encode import image_cache
    assert (bb_t.runtime_id, bb_o.runtime_id) == ("torch", "onnx")
    assert image_cache(bb_t, root).dir != image_cache(bb_o, root).dir
    # exported once, into --cache-dir's onnx/ folder
    assert [p.suffix for p in (root / "onnx").iterdir()] == [".onnx"]


def test_auto_picks_onnx_where_installed_and_torch_where_not(encoded, monkeypatch, tmp_path):
    root, _ = encoded
    bb = get_backbone("offline:image_size=160", feature_cache=root / "features")
    assert isinstance(bb.tower(), onnx_tower.OnnxTower)
    # the file exported for another cache folder is copied, not exported again
    monkeypatch.setattr(onnx_tower, "_export", lambda *a: pytest.fail("exported a second time"))
    other = get_backbone("offline:image_size=160", feature_cache=tmp_path / "features")
    assert isinstance(other.tower(), onnx_tower.OnnxTower)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1

    monkeypatch.setattr(onnx_tower, "onnx_available", lambda: "onnxruntime is not installed")
    bare = get_backbone("offline:image_size=160", feature_cache=tmp_path / "features")
    assert isinstance(bare.tower(), onnx_tower.TorchTower)
    with pytest.raises(ConfigError, match="runtime=onnx was asked for but cannot be used"):
        get_backbone("offline:image_size=160,runtime=onnx", feature_cache=tmp_path / "features").tower()


def test_a_file_that_computes_something_else_is_refused(tmp_path, caplog):
    model, weights_fp = _efficientnet()
    size = 96
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong._fc.weight.mul_(-1.0)  # a valid ONNX file whose logits point the other way
    path = onnx_tower.onnx_file(tmp_path / "onnx", weights_fp, size)
    onnx_tower._export(onnx_tower.TorchTower(wrong).eval(), size, path)
    with caplog.at_level(logging.WARNING, logger="conceptlens.backbones.onnx_tower"):
        tower = onnx_tower.image_tower(model, weights_fp, size, "auto", tmp_path)
    assert isinstance(tower, onnx_tower.TorchTower)
    assert "cosine" in caplog.text and "delete it to export it again" in caplog.text
    with pytest.raises(ConfigError, match="cosine"):
        onnx_tower.image_tower(model, weights_fp, size, "onnx", tmp_path)

    path.write_bytes(b"not an onnx file")  # a damaged file: the runtime cannot load it
    with pytest.raises(ConfigError, match="runtime=onnx was asked for"):
        onnx_tower.image_tower(model, weights_fp, size, "onnx", tmp_path)


def test_bad_runtime_value_is_a_clear_error():
    with pytest.raises(ConfigError, match="runtime must be one of"):
        get_backbone("offline:runtime=tensorrt")

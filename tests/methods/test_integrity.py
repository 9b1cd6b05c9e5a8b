"""Saved models are verified on load: flipped bytes in the weights, and a model.json that
names unknown arrays, wrong shapes, non-finite values or bad parameters, are DataErrors that
name the file; model.json sets nothing but what a model declares."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conceptlens._io import save_tensors
from conceptlens.errors import DataError
from conceptlens.methods import Method, get_method
from conceptlens.testing import make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem(n_per_class=10)


@pytest.fixture(scope="module")
def saved(problem, tmp_path_factory):
    """A zero_shot and a linear_probe model, each saved once (tests copy them)."""
    train, val, _, ctx = problem
    root = tmp_path_factory.mktemp("models")
    return {name: get_method(name).fit(train, ctx, val).save(root / name)
            for name in ("zero_shot", "linear_probe")}


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def tensor_bytes(path: Path, name: str) -> tuple[int, int]:
    """[start, end) of tensor `name` in a safetensors file: an 8-byte little-endian header
    length, the JSON header, then the data, which the header's offsets index."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    begin, end = json.loads(raw[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def flip(path: Path, at: int, mask: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= mask
    path.write_bytes(bytes(raw))


def edit_json(folder: Path, change) -> None:
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def test_a_flipped_exponent_bit_is_caught(saved, problem, tmp_path):
    _, _, test, _ = problem
    folder = copy_model(saved["zero_shot"], tmp_path / "m")
    weights = folder / "weights.safetensors"
    start, _ = tensor_bytes(weights, "class_weights_")
    assert load_file(str(weights))["class_weights_"][0, 0] == 1.0  # 0x3F800000
    flip(weights, start + 3, 0x40)  # the exponent's top bit: 1.0 -> 1.7e38
    assert load_file(str(weights))["class_weights_"][0, 0] > 1e38  # what a plain read would use
    with pytest.raises(DataError, match=r"weights\.safetensors.*does not match the sha256"):
        Method.load(folder)
    flip(weights, start + 3, 0x40)  # flipped back: loads and predicts as before
    again = Method.load(folder)
    np.testing.assert_array_equal(again.decision_function(test),
                                  Method.load(saved["zero_shot"]).decision_function(test))


def test_any_flipped_data_byte_is_caught(saved, tmp_path):
    folder = copy_model(saved["linear_probe"], tmp_path / "m")
    weights = folder / "weights.safetensors"
    for name in ("intercept_", "mean_", "scale_"):
        start, end = tensor_bytes(weights, name)
        at = (start + end) // 2
        flip(weights, at, 0x01)  # the lowest mantissa bit: a tiny, silent change without a check
        with pytest.raises(DataError, match="weights.safetensors"):
            Method.load(folder)
        flip(weights, at, 0x01)
    Method.load(folder)


def test_damaged_header_is_a_data_error(saved, tmp_path):
    folder = copy_model(saved["zero_shot"], tmp_path / "m")
    flip(folder / "weights.safetensors", 9, 0xFF)  # inside the JSON header
    with pytest.raises(DataError, match=r"weights\.safetensors"):
        Method.load(folder)
    (folder / "weights.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(DataError, match=r"weights\.safetensors is not a readable"):
        Method.load(folder)


def test_weights_without_a_checksum_still_load_with_a_warning(saved, problem, tmp_path, caplog):
    _, _, test, _ = problem
    folder = copy_model(saved["zero_shot"], tmp_path / "m")
    arrays = load_file(str(folder / "weights.safetensors"))
    save_file(arrays, str(folder / "weights.safetensors"))  # as an older conceptlens wrote it
    with caplog.at_level(logging.WARNING, logger="conceptlens"):
        model = Method.load(folder)
    assert "no checksum" in caplog.text
    np.testing.assert_array_equal(model.decision_function(test),
                                  Method.load(saved["zero_shot"]).decision_function(test))


def rewrite_weights(folder: Path, change) -> None:
    """Change the arrays and store a matching checksum: only the content checks can object."""
    arrays = load_file(str(folder / "weights.safetensors"))
    change(arrays)
    save_tensors(folder / "weights.safetensors", arrays)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(classes_=np.zeros(3, np.float32)), r"unexpected \['classes_'\]"),
    (lambda a: a.update(head_scale=np.ones(1, np.float32)), r"unexpected \['head_scale'\]"),
    (lambda a: a.pop("scale_"), r"missing \['scale_'\]"),
    (lambda a: a["class_weights_"].__setitem__((0, 0), np.nan), "non-finite"),
    (lambda a: a["intercept_"].__setitem__(1, np.inf), "non-finite"),
    (lambda a: a.update(class_weights_=a["class_weights_"][:, :-1].copy()), r"'class_weights_' has shape"),
    (lambda a: a.update(class_weights_=a["class_weights_"][:-1].copy()), r"'class_weights_' has shape"),
    (lambda a: a.update(intercept_=a["intercept_"][:-1].copy()), r"'intercept_' has shape \(3,\)"),
    (lambda a: a.update(mean_=a["mean_"][:-1].copy()), r"'mean_' has shape"),
])
def test_weights_must_be_the_declared_finite_arrays(saved, tmp_path, change, message):
    folder = copy_model(saved["linear_probe"], tmp_path / "m")
    rewrite_weights(folder, change)
    with pytest.raises(DataError, match=message):
        Method.load(folder)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["params"].update(C=1.0), r"model\.json.*\['C'\].*Valid parameters: Cs, on, max_iter"),
    (lambda m: m["params"].update(Cs=[-1.0]), r"model\.json.*Cs must be a non-empty list"),
    (lambda m: m["params"].update(on="pixels"), r"model\.json.*on must be"),
    (lambda m: m.update(method="linear_prob"), r"model\.json.*Unknown method.*'linear_probe'"),
    (lambda m: m.update(params=[1]), r"model\.json: field 'params'"),
    (lambda m: m.update(classes=m["classes"][:-1]), r"'class_weights_' has shape \(4, 24\).*3 classes"),
    (lambda m: m.update(concepts=m["concepts"] + ["x"]), r"'class_weights_' has shape.*25 concepts"),
    (lambda m: m.update(classes=[1, 2, 3, 4]), r"field 'classes'"),
    (lambda m: m.update(feature_key="pixels"), r"field 'feature_key'"),
    (lambda m: m["extra"].update(input="pixels"), r"model\.json: bad 'extra'"),
    (lambda m: m["extra"].pop("C"), r"model\.json: bad 'extra'"),
    (lambda m: m.update(format="other"), r"model\.json is not a conceptlens model"),
])
def test_model_json_is_checked(saved, tmp_path, change, message):
    folder = copy_model(saved["linear_probe"], tmp_path / "m")
    edit_json(folder, change)
    with pytest.raises(DataError, match=message):
        Method.load(folder)


def test_model_json_cannot_set_other_attributes(saved, problem, tmp_path):
    _, _, test, _ = problem
    folder = copy_model(saved["zero_shot"], tmp_path / "m")

    def inject(meta):
        meta["head_scale"] = 1e9
        meta["class_weights_"] = [[0.0]]
        meta["extra"] = {"predict": "x", "head_scale": 5}

    edit_json(folder, inject)
    model = Method.load(folder)
    assert not {"predict", "head_scale"} & set(vars(model))
    assert model.head_scale == 100.0 and model.class_weights_.shape == (4, 4)
    np.testing.assert_array_equal(model.decision_function(test),
                                  Method.load(saved["zero_shot"]).decision_function(test))


def test_params_from_model_json_are_validated(saved, tmp_path):
    folder = copy_model(saved["zero_shot"], tmp_path / "m")
    edit_json(folder, lambda m: m["params"].update(scale=float("-inf")))
    with pytest.raises(DataError, match=r"model\.json.*scale must be a positive finite number"):
        Method.load(folder)


def test_precomputed_features_with_a_flipped_byte_are_refused(tmp_path):
    """`conceptlens encode` writes a checksum; the precomputed backbone verifies it."""
    from conceptlens.backbones import get_backbone

    path = tmp_path / "feats.safetensors"
    emb = np.eye(3, 4, dtype=np.float32)
    save_tensors(path, {"embedding": emb}, {"ids": json.dumps(["a", "b", "c"])})
    assert np.array_equal(get_backbone(f"precomputed:{path}").lookup_ids(["b"])["embedding"][0], emb[1])
    start, _ = tensor_bytes(path, "embedding")
    flip(path, start + 7, 0x40)
    with pytest.raises(DataError, match="does not match the sha256"):
        get_backbone(f"precomputed:{path}")

"""Each backbone's shapes, normalisation, ids and references; the registry's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conceptlens.backbones import BACKBONES, get_backbone
from conceptlens.data import ImageDataset
from conceptlens.data.images import ArrayImages
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import encode_dataset
from conceptlens.testing import save_tiny_hf as _save_tiny


def test_registry_lists_backbones_and_suggests_close_names():
    assert {"offline", "hf", "open_clip", "precomputed"} <= set(BACKBONES.names())
    with pytest.raises(ConfigError, match="Unknown backbone 'ofline'. Did you mean 'offline'"):
        get_backbone("ofline")


# --- offline -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def offline():
    return get_backbone("offline")


def test_offline_shapes_normalisation_and_id(offline):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (28, 28), dtype=np.uint8),
              rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)]
    out = offline.encode_images(images)
    assert out["embedding"].shape == (2, 384) and out["embedding"].dtype == np.float32
    assert out["features"].shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1, rtol=1e-5)
    text = offline.encode_texts(["a shoe", "a bag"])
    assert text.shape == (2, 384)
    # no raw norms: a ConSE vector is not a raw CLIP embedding (see offline.py)
    unit, norms = offline.encode_texts_with_norms(["a shoe", "a bag"])
    np.testing.assert_array_equal(unit, text)
    assert norms is None and "embedding_norm" not in out
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, rtol=1e-5)
    # the id pins both weight files and the ConSE settings
    assert offline.id.startswith("offline:efficientnet-lite0@") and "all-MiniLM-L6-v2@" in offline.id
    assert get_backbone("offline:top_t=5").id != offline.id


def test_offline_embedding_is_conse_of_imagenet_class_texts(offline):
    """Recompute ConSE by hand from the CNN's logits (an independent path through the model)."""
    from conceptlens.backbones.offline import imagenet_class_texts
    from conceptlens.backbones.text_encoder import encode_sentences

    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x = offline.prepare(img)[None]
    with torch.inference_mode():
        logits = offline.model(x)[0].numpy()  # the library's own forward, with its classifier
    p = np.exp((logits - logits.max()) / offline.temperature)
    p /= p.sum()
    top = np.argsort(-p)[: offline.top_t]
    texts = encode_sentences([imagenet_class_texts()[i] for i in top])
    expected = (p[top, None] * texts).sum(0)
    expected /= np.linalg.norm(expected)
    out = offline.encode_images([img])
    np.testing.assert_allclose(out["embedding"][0], expected, atol=1e-4)


def test_offline_inverts_dark_background_grey_images_only(offline):
    dark = np.zeros((28, 28), np.uint8)
    dark[10:18, 10:18] = 255
    assert offline._should_invert(dark)
    assert not offline._should_invert(255 - dark)
    colour = np.zeros((28, 28, 3), np.uint8)
    colour[..., 0] = 200
    assert not offline._should_invert(colour)


def test_offline_bad_options():
    with pytest.raises(ConfigError, match="Unknown offline backbone option 'topt'"):
        get_backbone("offline:topt=5")
    with pytest.raises(ConfigError, match="invert must be one of"):
        get_backbone("offline:invert=sometimes")
    with pytest.raises(ConfigError, match="not a valid int"):
        get_backbone("offline:image_size=big")


# --- hf: CLIP and SigLIP from local folders of randomly initialised models ------------

@pytest.fixture(scope="module", params=["clip", "siglip"])
def tiny_hf(request, tmp_path_factory):
    folder = _save_tiny(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, folder, get_backbone(f"hf:{folder}")


def test_hf_shapes_and_normalisation(tiny_hf):
    kind, folder, bb = tiny_hf
    assert bb.kind == kind and bb.id.startswith(f"hf:{folder.name}@")
    imgs = [np.random.default_rng(i).integers(0, 256, (48, 40, 3), dtype=np.uint8) for i in range(3)]
    emb = bb.encode_images(imgs)["embedding"]
    txt = bb.encode_texts(["a red crest", "laces", "x" * 500])  # over-long text is truncated
    assert emb.shape == (3, bb.embed_dim) and txt.shape == (3, bb.embed_dim)
    for a in (emb, txt):
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, rtol=1e-5)


def test_hf_matches_transformers_own_pipeline(tiny_hf):
    """Our torch preprocessing + pooling against the model's processor and raw forward."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    kind, folder, bb = tiny_hf
    model = AutoModel.from_pretrained(folder).eval()
    proc = AutoImageProcessor.from_pretrained(folder, use_fast=False)
    tok = AutoTokenizer.from_pretrained(folder)
    img = np.random.default_rng(5).integers(0, 256, (50, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        pix = proc(images=[img], return_tensors="pt")["pixel_values"]
        ref = model(pixel_values=pix, **tok(["a cat"], return_tensors="pt",
                    padding="max_length" if kind == "siglip" else True, max_length=64,
                    truncation=True)).image_embeds[0].numpy()
    ref /= np.linalg.norm(ref)
    got = bb.encode_images([img])["embedding"][0]
    assert float(got @ ref) > 0.99  # PIL vs torch bicubic resampling differ slightly


def test_hf_missing_folder_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot load hf backbone"):
        get_backbone(f"hf:{tmp_path / 'nothing'}")


# --- precomputed ---------------------------------------------------------------------

def _dataset(n=4):
    return ImageDataset("p", ("a", "b"), np.arange(n) % 2, tuple(f"img{i}" for i in range(n)),
                        ArrayImages(np.zeros((n, 2, 2), np.uint8)))


def test_precomputed_safetensors_and_npz_agree(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 5)).astype(np.float32)
    feats = rng.normal(size=(4, 3)).astype(np.float32)
    temb = rng.normal(size=(2, 5)).astype(np.float32)
    ids = [f"img{i}" for i in (3, 1, 0, 2)]  # stored in another order than the dataset
    save_file({"embedding": emb, "features": feats, "text_embedding": temb},
              str(tmp_path / "f.safetensors"),
              metadata={"ids": json.dumps(ids), "texts": json.dumps(["x", "y"])})
    np.savez(tmp_path / "f.npz", ids=np.array(ids), embedding=emb, features=feats,
             texts=np.array(["x", "y"]), text_embedding=temb)
    for name in ("f.safetensors", "f.npz"):
        bb = get_backbone(f"precomputed:{tmp_path / name}")
        out = encode_dataset(bb, _dataset(), progress=False)
        order = [ids.index(f"img{i}") for i in range(4)]
        np.testing.assert_allclose(out.embedding, emb[order] / np.linalg.norm(emb[order], axis=1,
                                   keepdims=True), rtol=1e-6)
        np.testing.assert_array_equal(out.features, feats[order])
        np.testing.assert_allclose(bb.encode_texts(["y"])[0], temb[1] / np.linalg.norm(temb[1]),
                                   rtol=1e-6)
        with pytest.raises(DataError, match="no precomputed embedding"):
            bb.encode_texts(["z"])


def test_precomputed_bad_files(tmp_path):
    np.savez(tmp_path / "missing_ids.npz", ids=np.array(["img0"]), embedding=np.ones((1, 3)))
    bb = get_backbone(f"precomputed:{tmp_path / 'missing_ids.npz'}")
    with pytest.raises(DataError, match="3 item id\\(s\\) are not in"):
        encode_dataset(bb, _dataset(), progress=False)
    np.savez(tmp_path / "obj.npz", ids=np.array(["a", None], dtype=object), embedding=np.ones((2, 3)))
    with pytest.raises(DataError, match="unicode arrays, not objects"):
        get_backbone(f"precomputed:{tmp_path / 'obj.npz'}")
    np.savez(tmp_path / "noemb.npz", ids=np.array(["a"]), feats=np.ones((1, 3)))
    with pytest.raises(DataError, match="no 'embedding' array"):
        get_backbone(f"precomputed:{tmp_path / 'noemb.npz'}")
    with pytest.raises(ConfigError, match="does not exist"):
        get_backbone(f"precomputed:{tmp_path / 'nope.npz'}")


def test_open_clip_is_optional():
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'conceptlens\[open_clip\]'"):
            get_backbone("open_clip:ViT-B-32:laion2b_s34b_b79k")
    else:  # pragma: no cover - only where open_clip is installed
        pytest.skip("open_clip installed; needs weights from the network")
    with pytest.raises(ConfigError, match="open_clip:<architecture>:<pretrained"):
        get_backbone("open_clip:ViT-B-32")


def _st(path, arrays, **meta):
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v, np.float32) for k, v in arrays.items()}, str(path), metadata=meta)
    return f"precomputed:{path}"


@pytest.mark.parametrize("arrays, meta, message", [
    # features with fewer rows than ids: an IndexError at lookup before
    ({"embedding": np.ones((3, 4)), "features": np.ones((2, 5))}, {"ids": '["a", "b", "c"]'},
     r"'features' must be a \(3, d\) matrix of numbers, one row per item id; got shape \(2, 5\)"),
    # ids not JSON (JSONDecodeError) or a number (TypeError)
    ({"embedding": np.ones((1, 4))}, {"ids": "a,b"}, r"metadata 'ids' must be a JSON list of strings"),
    ({"embedding": np.ones((1, 4))}, {"ids": "3"}, r"metadata 'ids' must be a JSON list of strings \(one per row\); got '3'"),
    ({"embedding": np.ones((1, 4))}, {"ids": "[1]"}, r"metadata 'ids' must be a JSON list of strings"),
    ({"embedding": np.ones((1, 4))}, {"ids": '["a"]', "texts": '{"x": 1}'}, r"metadata 'texts' must be"),
    # text_embedding narrower than embedding: a matmul ValueError in a fit before
    ({"embedding": np.ones((1, 4)), "text_embedding": np.ones((1, 3))}, {"ids": '["a"]', "texts": '["x"]'},
     r"'text_embedding' must be a \(1, 4\) matrix of numbers, one row per text; got shape \(1, 3\)"),
    # NaN in features: scikit-learn's error inside linear_probe before
    ({"embedding": np.ones((2, 4)), "features": [[1, 2], [np.nan, 0]]}, {"ids": '["a", "b"]'},
     r"'features' has 1 non-finite value\(s\) \(NaN or inf\)"),
    ({"embedding": [[1, 2], [np.inf, 0]]}, {"ids": '["a", "b"]'}, r"'embedding' has 1 non-finite value"),
    ({"embedding": np.ones((2,))}, {"ids": '["a", "b"]'}, r"'embedding' must be a \(2, d\) matrix"),
    ({"embedding": np.ones((1, 4)), "text_embedding": np.ones((2, 4))}, {"ids": '["a"]', "texts": '["x", "x"]'},
     r"texts are not unique"),
])
def test_precomputed_malformed_safetensors_are_data_errors(tmp_path, arrays, meta, message):
    with pytest.raises(DataError, match=r"f\.safetensors: " + message):
        get_backbone(_st(tmp_path / "f.safetensors", arrays, **meta))


def test_precomputed_malformed_npz_are_data_errors(tmp_path):
    def bad(message, **arrays):
        np.savez(tmp_path / "f.npz", **arrays)
        with pytest.raises(DataError, match=message):
            get_backbone(f"precomputed:{tmp_path / 'f.npz'}")

    bad(r"'ids' must be a 1-d array of strings", ids=np.array("a"), embedding=np.ones((1, 3)))
    bad(r"'ids' must be a 1-d array of strings", ids=np.arange(2), embedding=np.ones((2, 3)))
    bad(r"'features' must be a \(2, d\) matrix", ids=np.array(["a", "b"]), embedding=np.ones((2, 3)),
        features=np.ones((1, 3)))
    bad(r"'embedding' must be a \(1, d\) matrix of numbers.*dtype <U1", ids=np.array(["a"]),
        embedding=np.array([["x"]]))
    bad(r"'embedding_norm' must hold numbers", ids=np.array(["a"]), embedding=np.ones((1, 3)),
        embedding_norm=np.array(["x"]))
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(DataError, match=r"g\.npz is not a readable \.npz file"):
        get_backbone(f"precomputed:{tmp_path / 'g.npz'}")

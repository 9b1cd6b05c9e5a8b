"""Raw embedding norms, end to end: backbone -> cache -> bundle / context -> file -> labo.

LaBo's reference works on unnormalised embeddings; the norms carried here let its
`similarity='auto'` do the same (and fall back to cosine where they are unknown)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conceptlens.backbones import get_backbone
from conceptlens.cache import cached_texts
from conceptlens.errors import DataError
from conceptlens.features import FeatureCache, encode_dataset, encode_texts_with_norms
from conceptlens.methods import Context, get_method
from conceptlens.testing import TinyBackbone


class NoNormBackbone(TinyBackbone):
    """The tiny backbone as an older conceptlens cached it: same id, no norms."""

    def encode_prepared(self, batch):
        out = super().encode_prepared(batch)
        del out["embedding_norm"]
        return out


def raw_tiny(bb: TinyBackbone, dataset) -> np.ndarray:
    """The tiny backbone's un-normalised image embeddings, computed here by hand."""
    x = torch.stack([bb.prepare(dataset.images.decode(i, dataset.images.read(i)))
                     for i in range(len(dataset))])
    return (x.flatten(1) @ bb.proj[:, : bb.embed_dim]).numpy()


def test_image_norms_round_trip_through_cache_and_rows(grey_dataset, tmp_path):
    cold = encode_dataset(TinyBackbone(), grey_dataset, tmp_path, batch_size=16, progress=False)
    raw = raw_tiny(TinyBackbone(), grey_dataset)
    np.testing.assert_allclose(cold.embedding_norm, np.linalg.norm(raw, axis=1), rtol=1e-5)
    np.testing.assert_allclose(cold.embedding * cold.embedding_norm[:, None], raw, rtol=1e-4, atol=1e-4)
    warm_bb = TinyBackbone()
    warm = encode_dataset(warm_bb, grey_dataset, tmp_path, batch_size=16, progress=False)
    assert warm_bb.encoded == 0
    np.testing.assert_array_equal(warm.embedding_norm, cold.embedding_norm)
    np.testing.assert_array_equal(cold.rows([5, 2]).embedding_norm, cold.embedding_norm[[5, 2]])
    mask = cold.labels == 1
    np.testing.assert_array_equal(cold.rows(mask).embedding_norm, cold.embedding_norm[mask])


def test_old_cache_entries_give_no_norms(grey_dataset, tmp_path):
    # half the images cached without norms (an older conceptlens), half with
    encode_dataset(NoNormBackbone(), grey_dataset.subset(range(30)), tmp_path, progress=False)
    bb = TinyBackbone()
    mixed = encode_dataset(bb, grey_dataset, tmp_path, progress=False)
    assert bb.encoded == 30 and mixed.embedding_norm is None  # one row without norms: none
    assert encode_dataset(bb, grey_dataset.subset(range(30, 60)), tmp_path,
                          progress=False).embedding_norm is not None


def test_text_norms_round_trip_and_old_entries(tmp_path):
    bb = TinyBackbone()
    texts = ["red crest", "laces", "red crest"]
    emb, norms = encode_texts_with_norms(bb, texts, tmp_path)
    np.testing.assert_allclose(norms, np.linalg.norm(bb.raw_texts(texts), axis=1), rtol=1e-6)
    emb2, norms2 = encode_texts_with_norms(bb, texts, tmp_path)  # warm
    np.testing.assert_array_equal(emb2, emb)
    np.testing.assert_array_equal(norms2, norms)
    # an entry cached without norms (before they were kept) makes the norms unknown
    cache = FeatureCache(tmp_path, backbone=bb.id, kind="text")
    cached_texts(cache, ["wings"], bb.encode_texts)
    assert encode_texts_with_norms(bb, ["laces", "wings"], cache)[1] is None
    assert encode_texts_with_norms(bb, [], tmp_path)[1] is None


def test_build_context_carries_concept_norms(tmp_path):
    from conceptlens.concepts import ConceptSet
    from conceptlens.runs.experiment import build_context

    bb = TinyBackbone()
    concepts = ConceptSet(("a", "b"))
    for cls, text in (("a", "red crest"), ("b", "laces"), ("b", "wings")):
        concepts.add(text, [cls])
    ctx = build_context(bb, ("a", "b"), concepts, tmp_path)
    np.testing.assert_allclose(ctx.concept_norm, np.linalg.norm(bb.raw_texts(ctx.concepts), axis=1),
                               rtol=1e-6)
    # the run's models record how images were prepared (explain/serve refuse another way)
    assert ctx.preprocess_id == bb.preprocess_id == "short8-crop8"
    assert build_context(bb, ("a", "b"), None, tmp_path).preprocess_id == "short8-crop8"


def test_precomputed_file_norms(tmp_path, grey_dataset):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 4)).astype(np.float32)
    ids, texts = ["g/2", "g/0", "g/1"], ["x", "y"]
    meta = {"ids": json.dumps(ids), "texts": json.dumps(texts)}
    base = {"embedding": emb, "text_embedding": rng.normal(size=(2, 4)).astype(np.float32)}
    norms = {"embedding_norm": np.array([1, 2, 3], np.float32),
             "text_embedding_norm": np.array([4, 5], np.float32)}
    save_file({**base, **norms}, str(tmp_path / "n.safetensors"), metadata=meta)
    save_file(base, str(tmp_path / "plain.safetensors"), metadata=meta)
    data = grey_dataset.subset(range(3))
    bb = get_backbone(f"precomputed:{tmp_path / 'n.safetensors'}")
    bundle = encode_dataset(bb, data, progress=False)
    np.testing.assert_array_equal(bundle.embedding_norm, [2, 3, 1])  # in the dataset's order
    assert bb.encode_texts_with_norms(["y", "x"])[1].tolist() == [5, 4]
    plain = get_backbone(f"precomputed:{tmp_path / 'plain.safetensors'}")
    assert encode_dataset(plain, data, progress=False).embedding_norm is None
    assert plain.encode_texts_with_norms(["y"])[1] is None
    save_file({**base, "embedding_norm": np.array([1, -2, 3], np.float32)},
              str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(DataError, match="'embedding_norm' must hold 3 finite positive norms"):
        get_backbone(f"precomputed:{tmp_path / 'bad.safetensors'}")


def test_encode_command_writes_norms_read_back_by_precomputed(image_folder, tmp_path, monkeypatch):
    import conceptlens.backbones
    from conceptlens.cli import main
    from conceptlens.data import load_image_folder

    monkeypatch.setattr(conceptlens.backbones, "get_backbone", lambda spec: TinyBackbone())
    out = tmp_path / "f.safetensors"
    assert main(["encode", str(image_folder), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--no-progress"]) == 0
    data = load_image_folder(image_folder)
    direct = encode_dataset(TinyBackbone(), data, tmp_path / "d", progress=False)
    again = encode_dataset(get_backbone(f"precomputed:{out}"), data, progress=False)
    np.testing.assert_allclose(again.embedding_norm, direct.embedding_norm, rtol=1e-6)


def test_hf_clip_norms_are_the_projection_outputs(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from conceptlens.testing import save_tiny_hf as _save_tiny

    folder = _save_tiny(tmp_path / "clip", "clip")
    bb = get_backbone(f"hf:{folder}")
    imgs = [np.random.default_rng(i).integers(0, 256, (48, 40, 3), dtype=np.uint8) for i in range(3)]
    out = bb.encode_images(imgs)
    texts = ["a red crest", "laces"]
    temb, tnorm = bb.encode_texts_with_norms(texts)
    # independently: a fresh model's projection outputs, never normalised
    model = AutoModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        img = model.get_image_features(pixel_values=torch.stack([bb.prepare(im) for im in imgs]))
        txt = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    img, txt = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (img, txt))
    np.testing.assert_allclose(out["embedding_norm"], img.norm(dim=1).numpy(), rtol=1e-4)
    np.testing.assert_allclose(tnorm, txt.norm(dim=1).numpy(), rtol=1e-4)
    np.testing.assert_allclose(out["embedding"] * out["embedding_norm"][:, None], img.numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(temb, axis=1), 1, rtol=1e-5)  # outputs stay unit


def _labo_setup(bundle, bb, tmp_path):
    concepts = [f"concept {i}" for i in range(9)]
    emb, norms = encode_texts_with_norms(bb, concepts, tmp_path)
    prior = np.kron(np.eye(3), np.ones(3)).astype(np.float32)  # 3 concepts per class
    return Context(bundle.classes, concepts, emb, prior, None, bb.id, concept_norm=norms)


def test_labo_auto_uses_dot_with_norms_and_cosine_without(grey_dataset, tmp_path):
    bb = TinyBackbone()
    bundle = encode_dataset(bb, grey_dataset, tmp_path, progress=False)
    ctx = _labo_setup(bundle, bb, tmp_path)
    model = get_method("labo", epochs=10, batch_size=8).fit(bundle, ctx)
    assert model.similarity_ == "dot"
    X = bundle.embedding * bundle.embedding_norm[:, None]
    T = ctx.concept_embedding * ctx.concept_norm[:, None]
    np.testing.assert_allclose(model.transform(bundle), X @ T.T, rtol=1e-4, atol=1e-5)
    # features from an old cache (no norms): cosine
    old = encode_dataset(NoNormBackbone(), grey_dataset, tmp_path / "old", progress=False)
    assert old.embedding_norm is None
    assert get_method("labo", epochs=10, batch_size=8).fit(old, ctx).similarity_ == "cosine"

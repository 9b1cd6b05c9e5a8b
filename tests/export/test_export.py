"""conceptlens.export: a fitted model plus its backbone as a torch module and as one ONNX file, both
equal to predict_proba to 1e-5; save_pretrained / from_pretrained with a model card; push_to_hub against
a local stand-in for the Hub; backbones recorded by their full spec and reopened by every command."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from conceptlens.backbones import full_spec, get_backbone
from conceptlens.errors import ConfigError, DataError
from conceptlens.export import (
    OnnxModel,
    export_onnx,
    export_torch,
    from_pretrained,
    push_to_hub,
    read_card,
    save_pretrained,
)
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, Method, get_method
from conceptlens.testing import FAST_PARAMS, make_problem, save_tiny_hf

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ("red", "green", "blue")
CONCEPTS = ["red paint", "green leaves", "blue sky", "bright light", "dark shadow", "round shape"]
TOL = 1e-5


def _images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        c = i % 3
        im = rng.integers(0, 80, (36 + 4 * (i % 3), 40, 3), dtype=np.uint8)
        im[..., c] += 150
        images.append(im)
        labels.append(c)
    return images, np.array(labels)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A tiny CLIP saved as an hf: folder, its backbone, 45 train / 15 test images and a context."""
    folder = save_tiny_hf(tmp_path_factory.mktemp("hf") / "tiny-clip")
    bb = get_backbone(f"hf:{folder}")
    images, labels = _images(60)
    out = bb.encode_images(images)
    ids = [f"img/{i}" for i in range(len(images))]

    def bundle(sl):
        return FeatureBundle(ids[sl], labels[sl], CLASSES, out["embedding"][sl], None, bb.id,
                             embedding_norm=out["embedding_norm"][sl])

    emb, norms = bb.encode_texts_with_norms(CONCEPTS)
    prior = np.zeros((3, 6), np.float32)
    prior[[0, 1, 2], [0, 1, 2]] = 1
    prior[:, 3:] = [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
    ctx = Context(CLASSES, CONCEPTS, emb, prior, bb.encode_texts([f"a photo of {c}" for c in CLASSES]), bb.id,
                  concept_norm=norms, preprocess_id=bb.preprocess_id, backbone_spec=bb.spec)
    return folder, bb, bundle(slice(0, 45)), bundle(slice(45, 60)), ctx, images[45:]


@pytest.mark.parametrize("name, params", [
    ("posthoc", {"lam": 1e-3}), ("posthoc_hybrid", {"lam": 1e-3}),
    ("labo", {"optimizer": "lbfgs", "max_iter": 50, "similarity": "dot"}),
    ("linear_probe", {}), ("zero_shot", {}), ("sparse_cbm", {"epochs": 30}), ("cms", {}),
])
def test_the_torch_module_gives_predict_proba(hf, name, params):
    _, bb, train, test, ctx, images = hf
    model = get_method(name, **params).fit(train, ctx, test)
    module = export_torch(model, bb)
    assert isinstance(module, torch.nn.Module) and module.classes == CLASSES
    pixels = module.prepare(images)
    with torch.no_grad():
        logits, concepts = module(pixels)
        proba = module.predict_proba(pixels).numpy()
    assert logits.shape == (15, 3) and concepts.shape == (15, len(model.concepts_))
    assert np.abs(proba - model.predict_proba(test)).max() < TOL
    np.testing.assert_allclose(concepts.numpy(), model.transform(test), rtol=1e-4, atol=1e-4)


def test_the_onnx_file_gives_predict_proba(hf, tmp_path):
    _, bb, train, test, ctx, images = hf
    model = get_method("labo", optimizer="lbfgs", max_iter=50, similarity="dot").fit(train, ctx, test)
    path = export_onnx(model, bb, tmp_path / "labo.onnx")
    session = OnnxModel(path)
    assert session.classes == CLASSES and session.concepts == tuple(model.concepts_)
    assert session.method == "labo" and session.backbone_spec == f"hf:{bb.spec[3:]}"
    pixels = export_torch(model, bb).prepare(images)
    assert np.abs(session.predict_proba(pixels) - model.predict_proba(test)).max() < TOL
    out = session.run(pixels[:1])  # any batch size
    assert out["probabilities"].shape == (1, 3) and out["concepts"].shape == (1, len(CONCEPTS))
    np.testing.assert_allclose(out["concepts"][0], model.transform(test)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="exists"):
        export_onnx(model, bb, path)


def test_a_method_that_cannot_be_exported_is_named(hf):
    _, bb, *_ = hf
    train, val, test, ctx = make_problem()
    model = get_method("ecbm", **FAST_PARAMS["ecbm"]).fit(train, ctx, val)
    with pytest.raises(ConfigError, match="method 'ecbm' cannot be exported"):
        export_torch(model, bb)


def test_a_backbone_without_a_torch_image_encoder_is_named():
    from conceptlens.testing import TinyBackbone

    train, val, test, ctx = make_problem()
    model = get_method("linear_probe").fit(train, ctx, val)
    model.backbone_id_, model.preprocess_id_ = "tiny:seed0", ""
    with pytest.raises(ConfigError, match="has no torch image encoder"):
        export_torch(model, TinyBackbone())


def test_export_refuses_another_backbone(hf):
    _, bb, *_ = hf
    train, val, test, ctx = make_problem()
    model = get_method("linear_probe").fit(train, ctx, val)  # fitted on the toy's "features"
    with pytest.raises(ConfigError, match="fitted on features of"):
        export_torch(model, bb)


# -- save_pretrained / from_pretrained ----------------------------------------------------------

def test_save_pretrained_round_trip_and_card(hf, tmp_path):
    _, bb, train, test, ctx, _ = hf
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, test)
    folder = save_pretrained(model, tmp_path / "card", metrics={"top1": 0.8125, "nec": 4.0},
                             grounding={"precision_at_5": 0.4, "auroc": {"mean": 0.71}})
    assert {p.name for p in folder.iterdir()} == {"model.json", "weights.safetensors", "README.md",
                                                  "card.json"}
    again = from_pretrained(folder)
    np.testing.assert_array_equal(again.predict_proba(test), model.predict_proba(test))
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: conceptlens")
    for text in (*CLASSES, *CONCEPTS[:3], bb.spec, bb.id, "top1", "0.8125", "precision_at_5", "auroc.mean"):
        assert text in card, text
    data = read_card(folder)
    assert data["backbone"]["spec"] == bb.spec and data["classes"] == list(CLASSES)
    assert data["grounding"] == {"precision_at_5": 0.4, "auroc.mean": 0.71}
    assert [p.name for p in tmp_path.iterdir()] == ["card"]  # no temporary folder left


def test_save_pretrained_never_overwrites_unasked_and_is_atomic(hf, tmp_path, monkeypatch):
    from conceptlens.export import pretrained

    _, bb, train, test, ctx, _ = hf
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, test)
    folder = save_pretrained(model, tmp_path / "m")
    before = (folder / "weights.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="overwrite=True"):
        save_pretrained(model, folder)
    # a failure while writing the new folder leaves the old one whole and no temporary behind
    monkeypatch.setattr(pretrained, "model_card", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        save_pretrained(model, folder, overwrite=True)
    assert (folder / "weights.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    monkeypatch.undo()
    other = get_method("posthoc", lam=1e-2).fit(train, ctx, test)
    save_pretrained(other, folder, overwrite=True, metrics={"top1": 0.5})
    assert from_pretrained(folder).lam == 1e-2 and read_card(folder)["metrics"] == {"top1": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_save_pretrained_with_onnx(hf, tmp_path):
    _, bb, train, test, ctx, images = hf
    model = get_method("linear_probe").fit(train, ctx, test)
    folder = save_pretrained(model, tmp_path / "m", backbone=bb, onnx=True)
    session = OnnxModel(folder / "model.onnx")
    pixels = export_torch(from_pretrained(folder), bb).prepare(images)
    assert np.abs(session.predict_proba(pixels) - model.predict_proba(test)).max() < TOL
    assert "model.onnx" in (folder / "README.md").read_text()
    with pytest.raises(ConfigError, match="needs the backbone"):
        save_pretrained(model, tmp_path / "n", onnx=True)


def test_from_pretrained_refuses_a_damaged_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{")
    with pytest.raises(DataError):
        from_pretrained(tmp_path / "bad")


# -- the Hub -------------------------------------------------------------------------------------

class LocalHub:
    """HfApi's create_repo / upload_folder, writing each repository to a local folder."""

    def __init__(self, root):
        self.root, self.repos = root, {}

    def create_repo(self, repo_id, repo_type="model", private=False, exist_ok=False):
        self.repos[repo_id] = {"private": private, "type": repo_type}
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, folder_path, repo_id, repo_type="model", revision=None, commit_message=None):
        import shutil

        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return f"local://{repo_id}@{commit_message}"


def test_push_to_hub_uploads_the_folder(hf, tmp_path, caplog, monkeypatch):
    _, bb, train, test, ctx, _ = hf
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_logged")
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, test)
    folder = save_pretrained(model, tmp_path / "m")
    hub = LocalHub(tmp_path / "hub")
    with caplog.at_level(logging.DEBUG, logger="conceptlens"):
        commit = push_to_hub(folder, "me/colours", private=True, api=hub)
    assert commit.startswith("local://me/colours")
    assert hub.repos == {"me/colours": {"private": True, "type": "model"}}
    uploaded = from_pretrained(tmp_path / "hub" / "me" / "colours")
    np.testing.assert_array_equal(uploaded.predict_proba(test), model.predict_proba(test))
    assert "hf_secret" not in caplog.text
    with pytest.raises(DataError, match="not a save_pretrained folder"):
        push_to_hub(tmp_path, "me/colours", api=hub)
    with pytest.raises(ConfigError, match="repo_id"):
        push_to_hub(folder, "no-owner", api=hub)


def test_push_to_hub_takes_the_token_from_the_environment(hf, tmp_path, monkeypatch):
    import huggingface_hub

    made = {}

    class FakeApi(LocalHub):
        def __init__(self, endpoint=None, token=None):
            made.update(endpoint=endpoint, token=token)
            super().__init__(tmp_path / "hub")

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    _, bb, train, test, ctx, _ = hf
    folder = save_pretrained(get_method("zero_shot").fit(train, ctx), tmp_path / "m")
    push_to_hub(folder, "me/zs", endpoint="http://127.0.0.1:1")
    assert made == {"endpoint": "http://127.0.0.1:1", "token": "hf_from_env"}
    assert (tmp_path / "hub" / "me" / "zs" / "README.md").is_file()


# -- backbones by their full spec ----------------------------------------------------------------

def test_a_model_records_its_backbone_by_full_spec(hf, tmp_path, monkeypatch):
    folder, bb, train, test, ctx, _ = hf
    monkeypatch.chdir(folder.parent)
    relative = get_backbone(f"hf:{folder.name}")
    assert relative.spec == f"hf:{folder.resolve()}" == full_spec(f"hf:{folder.name}")
    assert get_backbone("offline:image_size=160").spec == "offline:image_size=160"
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, test)
    saved = model.save(tmp_path / "m")
    assert json.loads((saved / "model.json").read_text())["backbone_spec"] == f"hf:{folder.resolve()}"
    assert Method.load(saved).backbone_spec_ == f"hf:{folder.resolve()}"


def test_explain_and_serve_reopen_the_models_own_backbone(hf, tmp_path, monkeypatch, capsys):
    from conceptlens.cli import main
    from conceptlens.service.app import ModelService

    folder, bb, train, test, ctx, images = hf
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, test)
    saved = model.save(tmp_path / "m")
    from PIL import Image

    Image.fromarray(images[0]).save(tmp_path / "img.png")
    monkeypatch.chdir(tmp_path)  # not where the hf folder is
    assert main(["explain", str(saved), str(tmp_path / "img.png"), "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert any(c in out for c in CLASSES), out
    service = ModelService(saved, cache_dir=tmp_path / "cache")
    assert service.backbone.id == bb.id

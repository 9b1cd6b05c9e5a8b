"""MoTIF: exact per-window explanations, the reference's computations, and order beats averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlens.errors import ConfigError
from conceptlens.features import FeatureBundle
from conceptlens.features.video_encode import VideoFeatures
from conceptlens.methods import Method
from conceptlens.methods.base import Context
from conceptlens.methods.motif import (
    Motif,
    explain_video,
    fit_frame_averaged,
    fit_mean_cbm,
    positional_encoding,
    video_as_text,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
D, K = 16, 4
CLASSES = ("a then b", "b then a", "c", "d")
FAST = {"epochs": 60, "lr": 3e-2, "patience": 60, "seed": 0}  # the reference: 100 epochs at 1e-3


def make_videos(n_per_class: int, seed: int, noise: float = 0.2) -> VideoFeatures:
    """Windows are concept vectors (or a blank) plus noise. Classes 0/1: concept a then b, or b
    then a (the same windows in another order); classes 2/3: concept c or d appears."""
    fixed = np.random.default_rng(99)
    C = fixed.normal(size=(K, D))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    blank = fixed.normal(size=D)
    rng = np.random.default_rng(seed)
    windows, labels = [], []
    for label, items in enumerate([[0, 1], [1, 0], [2], [3]]):
        for _ in range(n_per_class):
            seq = [blank] * int(rng.integers(0, 2))
            for item in items:
                seq += [C[item]] * int(rng.integers(1, 3)) + [blank] * int(rng.integers(0, 2))
            x = np.asarray(seq) + noise * rng.normal(size=(len(seq), D))
            windows.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
            labels.append(label)
    return VideoFeatures([f"v{i}" for i in range(len(labels))], np.asarray(labels), CLASSES, windows, "toy")


def context() -> Context:
    C = np.random.default_rng(99).normal(size=(K, D))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    return Context(CLASSES, [f"concept {i}" for i in range(K)], C.astype(np.float32), backbone_id="toy")


@pytest.fixture(scope="module")
def data():
    return make_videos(20, 0), make_videos(10, 1), make_videos(25, 2), context()


@pytest.fixture(scope="module")
def fitted(data):
    train, val, _, ctx = data
    return Motif(**FAST).fit(train, ctx, val)


def test_window_contributions_sum_to_the_window_logit(fitted, data):
    test = data[2]
    logits_t = fitted.window_logits(test)
    for i in (0, 31, 70):
        for target in range(len(CLASSES)):
            contrib = fitted.window_contributions(test, i, target)
            assert contrib.shape == (len(test.windows[i]), K)
            np.testing.assert_allclose(contrib.sum(1) + fitted.intercept_[target], logits_t[i][:, target],
                                       rtol=1e-5, atol=1e-5)
    # the video's logit is the log-sum-exp (tau = 1) of its windows' logits
    want = np.stack([np.log(np.exp(lt.astype(np.float64)).sum(0)) for lt in logits_t])
    np.testing.assert_allclose(fitted.decision_function(test), want, rtol=1e-5, atol=1e-5)
    # and the Method contract holds: head(transform) + residual is the logit
    np.testing.assert_allclose(fitted.head(fitted.transform(test), test), fitted.decision_function(test),
                               rtol=1e-5, atol=1e-5)


def test_reference_computations(fitted, data):
    train, _, test, ctx = data
    # standardisation: mean/std of max(0, cos) over all training windows (torch's unbiased std)
    raw = np.concatenate([np.maximum(w @ ctx.concept_embedding.T, 0) for w in train.windows])
    np.testing.assert_allclose(fitted.concept_mean_, raw.mean(0), rtol=1e-5)
    np.testing.assert_allclose(fitted.concept_std_, raw.std(0, ddof=1), rtol=1e-4)
    assert (fitted.class_weights_ >= 0).all()  # non-negative class weights
    assert all((c >= 0).all() for c in fitted.window_concepts(test))
    # the positional encoding of the reference: sin at even, cos at odd concept indices
    pe = positional_encoding(5, 3).numpy()
    t = np.arange(5)[:, None]
    freq = np.exp(np.arange(0, 3, 2) * -np.log(1e4) / 3)  # odd width: cos uses one frequency fewer
    np.testing.assert_allclose(pe[:, 0::2], np.sin(t * freq), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(t * freq[:1]), atol=1e-6)
    # attention: one map per concept over the video's windows; rows are distributions
    att = fitted.attention_maps(test)
    T = len(test.windows[3])
    assert att[3].shape == (1, K, T, T)
    np.testing.assert_allclose(att[3].sum(-1), 1, rtol=1e-5)


def test_motif_beats_frame_averaging_on_order_classes(fitted, data):
    train, val, test, ctx = data
    order = test.labels < 2

    def accuracy(pred, mask):
        return float((pred == test.labels)[mask].mean())

    motif = fitted.predict(test)
    mean_cbm = fit_mean_cbm(train, ctx)(test)
    probe = fit_frame_averaged("linear_probe", train, ctx, val).predict(test.mean_bundle())
    # a and b then b and a have the same windows: averaging cannot beat chance (0.5) on them
    assert accuracy(mean_cbm, order) < 0.65 and accuracy(probe, order) < 0.65
    assert accuracy(motif, order) >= 0.8
    assert accuracy(motif, order) > max(accuracy(mean_cbm, order), accuracy(probe, order)) + 0.2
    assert accuracy(motif, ~order) >= 0.8


def test_explain_video_views(fitted, data):
    test = data[2]
    e = explain_video(fitted, test, 0)
    T = len(test.windows[0])
    assert len(e["windows"]) == T and e["attention"].shape == (1, K, T, T)
    np.testing.assert_allclose(e["time_importance"].sum(), 1, rtol=1e-6)
    # global importance = sum_t alpha_t * contrib[t]: summed over concepts, the alpha-weighted
    # window scores less the intercept
    g = sum(v for _, v in e["global"])
    weighted = (e["time_importance"] * (e["window_scores"] - e["intercept"])).sum()
    np.testing.assert_allclose(g, weighted, rtol=1e-5)
    text = video_as_text(e)
    assert text.startswith("v0: predicted") and text.count("window ") == T


def test_save_load_identical(fitted, data, tmp_path):
    test = data[2]
    again = Method.load(fitted.save(tmp_path / "motif"))
    assert isinstance(again, Motif)
    np.testing.assert_array_equal(again.decision_function(test), fitted.decision_function(test))
    for a, b in zip(again.attention_maps(test), fitted.attention_maps(test), strict=True):
        np.testing.assert_array_equal(a, b)


def test_image_bundle_is_one_window_videos(data):
    train, val, test, ctx = data

    def bundle(v):  # each window its own one-window "image"
        emb = np.concatenate(v.windows)
        labels = np.repeat(v.labels, v.lengths)
        return FeatureBundle([str(i) for i in range(len(emb))], labels, CLASSES, emb, None, "toy")

    model = Motif(epochs=5, seed=0).fit(bundle(train), ctx, bundle(val))
    b = bundle(test)
    assert model.residual(b) == 0.0  # log-sum-exp over one window is the identity
    np.testing.assert_allclose(model.head(model.transform(b)), model.decision_function(b),
                               rtol=1e-5, atol=1e-6)


def test_fit_is_reproducible_and_selects_on_validation(data):
    train, val, test, ctx = data
    a = Motif(epochs=3, seed=1).fit(train, ctx, val)
    b = Motif(epochs=3, seed=1).fit(train, ctx, val)
    np.testing.assert_array_equal(a.decision_function(test), b.decision_function(test))
    # the restored weights are the ones with the best validation accuracy, which is recorded
    assert a.selection_accuracy_ == pytest.approx(float((a.predict(val) == val.labels).mean()))


@pytest.mark.parametrize("params,match", [
    ({"select_on": "test"}, "never test"), ({"lse_tau": 0}, "lse_tau"), ({"epochs": 0}, "epochs"),
    ({"label_smoothing": 2}, "label_smoothing")])
def test_bad_parameters_raise_at_fit(data, params, match):
    train, val, _, ctx = data
    with pytest.raises(ConfigError, match=match):
        Motif(**params).fit(train, ctx, val)


def test_no_global_torch_state_changed(data):
    train, val, _, ctx = data
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    Motif(epochs=1).fit(train, ctx, val)
    fit_mean_cbm(train, ctx, epochs=1)
    assert torch.rand(1) == before  # the seeds are the estimators' own


@pytest.mark.parametrize("d", [1, 3])
def test_per_concept_affine_is_the_references_grouped_convolution(d):
    """The block computes the reference's 1x1 grouped Conv1d (DiagQKVd, PerChannelFFN) as an
    elementwise affine map; the numbers must be the convolution's."""
    from conceptlens.methods.motif import _TemporalBlock

    torch.manual_seed(0)
    block = _TemporalBlock(5, d, 0.0)
    y = torch.randn(2, 7, 5)
    for conv in (block.q, block.k, block.v, block.fc1):
        want = conv(y.transpose(1, 2)).transpose(1, 2).reshape(2, 7, 5, -1)  # the reference's layout
        np.testing.assert_allclose(block._affine(conv, y, 5).detach().numpy(), want.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_early_stopping_only_on_a_held_out_set(data):
    """The reference stops early only when it has a held-out set; without one every epoch runs
    (the best training-accuracy epoch is still the one kept)."""
    train, val, _, ctx = data
    quick = {"epochs": 15, "lr": 3e-2, "patience": 1, "seed": 0}
    assert Motif(**quick).fit(train, ctx).epochs_run_ == 15
    assert Motif(**quick, select_on="train").fit(train, ctx, val).epochs_run_ == 15
    assert Motif(**quick).fit(train, ctx, val).epochs_run_ < 15  # patience 1 on validation accuracy

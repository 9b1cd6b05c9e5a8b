"""Label-free CBM against its reference (github.com/Trustworthy-ML-Lab/Label-free-CBM,
train_cbm.py): projection early stopping, the strict interpretability cutoff, unbiased
standardisation and glm_saga's lam / alpha."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from conceptlens.errors import ConfigError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, get_method
from conceptlens.methods.label_free import train_projection

M, K, D, F = 3, 6, 10, 14


def overfitting_case():
    """12 training images, 30 features: validation similarity rises, peaks, then falls."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(3, 30, generator=g)
    X, Xv = torch.randn(12, 30, generator=g), torch.randn(40, 30, generator=g)
    S = X @ W.T + 2 * torch.randn(12, 3, generator=g)
    Sv = Xv @ W.T + 2 * torch.randn(40, 3, generator=g)
    return X, S, Xv, Sv


def cos_similarity_cubed_single(clip_feats, target_feats):
    """similarity.py, transcribed."""
    clip_feats = clip_feats - torch.mean(clip_feats, dim=0, keepdim=True)
    target_feats = target_feats - torch.mean(target_feats, dim=0, keepdim=True)
    clip_feats, target_feats = clip_feats ** 3, target_feats ** 3
    clip_feats = clip_feats / torch.norm(clip_feats, p=2, dim=0, keepdim=True)
    target_feats = target_feats / torch.norm(target_feats, p=2, dim=0, keepdim=True)
    return torch.sum(target_feats * clip_feats, dim=0)


def reference_projection(X, S, Xv, Sv, proj_steps, lr, seed):
    """train_cbm.py's projection loop, transcribed (full batch: proj_batch_size >= n, and
    cos^3 is invariant to the order random.sample gives the rows)."""
    torch.manual_seed(seed)
    proj_layer = torch.nn.Linear(in_features=X.shape[1], out_features=S.shape[1], bias=False)
    opt = torch.optim.Adam(proj_layer.parameters(), lr=lr)
    best_val_loss, best_step, best_weights = float("inf"), 0, None
    for i in range(proj_steps):
        outs = proj_layer(X)
        loss = torch.mean(-cos_similarity_cubed_single(S, outs))
        loss.backward()
        opt.step()
        if i % 50 == 0 or i == proj_steps - 1:
            with torch.no_grad():
                val_loss = torch.mean(-cos_similarity_cubed_single(Sv, proj_layer(Xv)))
            if i == 0 or val_loss < best_val_loss:
                best_val_loss, best_step, best_weights = val_loss, i, proj_layer.weight.clone()
            else:
                break
        opt.zero_grad()
    return best_weights.detach(), best_step, i, proj_layer.weight.detach().clone()


def test_projection_stops_at_the_first_non_improving_check_and_keeps_the_best():
    X, S, Xv, Sv = overfitting_case()
    fit = train_projection(X, S, Xv, Sv, steps=1000, lr=2e-3, seed=0)
    ref_w, ref_best, ref_stop, ref_last = reference_projection(X, S, Xv, Sv, 1000, 2e-3, 0)
    steps = [s for s, _ in fit.history]
    scores = [v for _, v in fit.history]
    assert steps == list(range(0, fit.stopped_at + 1, 50))  # every 50 steps from step 0
    assert fit.stopped_at == ref_stop < 999 and fit.best_step == ref_best == fit.stopped_at - 50
    assert all(a < b for a, b in itertools.pairwise(scores[:-1]))  # rising
    assert scores[-1] <= scores[-2]  # the one non-improving check stops it
    torch.testing.assert_close(fit.weight, ref_w, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(fit.weight, ref_last)  # the best, not the last, weights are kept


def test_projection_without_overfitting_runs_all_steps_and_checks_the_last():
    X, S, _, _ = overfitting_case()
    fit = train_projection(X, S, X, S, steps=120, lr=2e-3, seed=0)  # validate on train
    assert [s for s, _ in fit.history] == [0, 50, 100, 119] and fit.best_step == 119


def make_problem(n=30, seed=0):
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(7)
    C = fixed.normal(size=(K, D))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    P = fixed.normal(size=(D, F))

    def bundle(n):
        y = np.repeat(np.arange(M), n)
        emb = C[2 * y] + C[2 * y + 1] + 0.5 * rng.normal(size=(len(y), D))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return FeatureBundle([str(i) for i in range(len(y))], y, tuple("abc"), emb.astype(np.float32),
                             (emb @ P).astype(np.float32), "toy")

    ctx = Context(tuple("abc"), [f"c{i}" for i in range(K)], C.astype(np.float32), None, None, "toy")
    return bundle(n), bundle(10), ctx


@pytest.fixture(scope="module")
def fitted():
    # lam above lambda_max: the GLM is one cheap solve; these tests look at the layers before it
    train, val, ctx = make_problem()
    model = get_method("label_free", steps=200, lam=10.0, interpretability_cutoff=0.0)
    return model.fit(train, ctx, val), train, val, ctx


def test_interpretability_cutoff_is_strict(fitted):
    model, train, val, ctx = fitted
    sims = model.projection_similarity_
    j = int(np.argsort(sims)[len(sims) // 2])  # a concept in the middle
    again = get_method("label_free", steps=200, lam=10.0,
                       interpretability_cutoff=float(sims[j])).fit(train, ctx, val)
    np.testing.assert_array_equal(again.projection_similarity_, sims)  # same seed, same projection
    assert again.kept_.tolist() == np.flatnonzero(sims > sims[j]).tolist() and j not in again.kept_


def test_standardisation_is_unbiased_and_lam_is_divided_by_alpha(fitted):
    model, train, _, _ = fitted
    A = train.features @ model.projection_.T
    np.testing.assert_allclose(model.mean_, A.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.std_, A.std(0, ddof=1), rtol=1e-5)  # torch.std
    assert model.lam_ == pytest.approx(10.0 / 0.99)  # glm_saga: max_reg / max(0.001, alpha)


@pytest.mark.parametrize("params, message", [
    ({"check_every": 0}, "check_every must be an integer >= 1"),
    ({"on": "pixels"}, "on must be 'auto', 'features' or 'embedding'"),
    ({"lr": 0}, "lr must be a finite number > 0"),
    ({"alpha": 2}, "alpha is the L1 share"),
])
def test_bad_parameters_are_config_errors(params, message):
    train, val, ctx = make_problem(n=3)
    with pytest.raises(ConfigError, match=message):
        get_method("label_free", **params).fit(train, ctx, val)


def test_projection_leaves_the_callers_torch_rng_alone_and_is_seeded_by_seed():
    g = torch.Generator().manual_seed(0)
    X, S = torch.randn(30, 4, generator=g), torch.randn(30, 3, generator=g)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    W = train_projection(X, S, X, S, steps=20, check_every=10, seed=2).weight
    assert torch.equal(torch.rand(3), expected)  # the draw the caller would have had
    torch.manual_seed(7)
    assert torch.equal(train_projection(X, S, X, S, steps=20, check_every=10, seed=2).weight, W)


def test_flushed_denormals_leave_the_projection_unchanged_and_restore_the_default():
    """cos^3 of small centred activations makes denormals: flushing them (the speed-up) gives the
    unflushed weights, and after the call denormals are kept again (torch's default)."""
    from conceptlens.methods.label_free import _train_projection

    g = torch.Generator().manual_seed(0)
    X = torch.relu(torch.randn(300, 40, generator=g)) * torch.logspace(-1, -14, 40)  # tiny columns
    S = X[:, :6] @ torch.randn(6, 6, generator=g) + 1e-3 * torch.randn(300, 6, generator=g)
    assert ((X - X.mean(0)) ** 3).abs().min() < 1.2e-38  # the case has denormals to flush
    plain = _train_projection(X, S, X, S, 60, 1e-3, 0, 50000, 20)
    fit = train_projection(X, S, X, S, steps=60, check_every=20, seed=0)
    assert fit.history == plain.history
    torch.testing.assert_close(fit.weight, plain.weight, rtol=1e-6, atol=1e-9)
    assert float(torch.tensor([1e-40]) * 1.0) > 0  # the default is back: denormals survive

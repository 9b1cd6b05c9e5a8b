"""LaBo against hand computations and the reference's behaviour (YueYANG1996/LaBo @83ed4b0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlens.errors import ConfigError, DataError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, Method, get_method
from conceptlens.methods.labo import diversity_penalty, labo_objective, row_l1_max

M, K, D = 3, 24, 32  # classes, concepts (8 generated per class), embedding dim


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_problem(seed=0, n_train=4, flipped=1, n_val=40, noise=1.0):
    """Few-shot, with `flipped` training labels per class moved to the next class (so fitting
    the training set longer overfits) and clean validation images."""
    fixed = np.random.default_rng(7)
    rng = np.random.default_rng(seed)
    concepts = fixed.normal(size=(K, D))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    prior = np.zeros((M, K), np.float32)
    for c in range(M):
        prior[c, c * K // M:(c + 1) * K // M] = 1

    def bundle(n, flip):
        y = np.repeat(np.arange(M), n)
        emb = 3 * prior[y] @ concepts / (K // M) + noise * rng.normal(size=(len(y), D))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        labels = y.copy()
        for c in range(M):
            labels[np.flatnonzero(y == c)[:flip]] = (c + 1) % M
        return FeatureBundle([str(i) for i in range(len(y))], labels, tuple("abc"),
                             emb.astype(np.float32), None, "toy")

    ctx = Context(tuple("abc"), [f"concept {i}" for i in range(K)], concepts.astype(np.float32),
                  prior, None, "toy")
    return bundle(n_train, flipped), bundle(n_val, 0), ctx


def with_norms(train, val, ctx, seed=3):
    """Attach raw embedding norms (what an unnormalising encoder would keep)."""
    rng = np.random.default_rng(seed)
    for b in (train, val):
        b.embedding_norm = rng.uniform(5, 15, size=len(b)).astype(np.float32)
    ctx.concept_norm = rng.uniform(0.5, 2.0, size=K).astype(np.float32)
    return train, val, ctx


def val_accuracy(model, val):
    return float((model.predict(val) == val.labels).mean())


# --- the loss terms ------------------------------------------------------------------------

def test_row_l1_max_and_diversity_by_hand():
    V = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, -0.5]])
    assert float(row_l1_max(V)) == pytest.approx(3.0)  # rows: 1+2+0 = 3, 0.5+0+0.5 = 1
    sim = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    # unbiased variance over images: column 0 (1, 3) -> 2, column 1 (2, 6) -> 8; mean 5
    assert float(diversity_penalty(sim)) == pytest.approx(-5.0)


def test_objective_with_both_terms_matches_numpy():
    rng = np.random.default_rng(0)
    V, A = rng.normal(size=(M, 5)), rng.normal(size=(7, 5))
    y = rng.integers(0, M, size=7)
    W = np.exp(V) / np.exp(V).sum(1, keepdims=True)
    sim = A @ W.T
    z = 100.0 * sim
    ce = np.mean(np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(7), y])
    l1 = np.abs(V).sum(1).max()
    div = -np.var(sim, axis=0, ddof=1).mean()
    got = labo_objective(torch.from_numpy(V), torch.from_numpy(A), torch.from_numpy(y), 100.0,
                         l1=0.01, diversity=0.005)
    assert float(got) == pytest.approx(ce + 0.01 * l1 + 0.005 * div, rel=1e-10)
    assert float(labo_objective(torch.from_numpy(V), torch.from_numpy(A), torch.from_numpy(y),
                                100.0)) == pytest.approx(ce, rel=1e-10)


def test_l1_term_shrinks_the_raw_association_matrix():
    train, _, ctx = make_problem()
    fits = {w: get_method("labo", lr=1e-2, batch_size=4, epochs=40, l1=w).fit(train, ctx)
            for w in (0, 0.5)}
    l1 = {w: np.abs(m.association_).sum(1).max() for w, m in fits.items()}
    assert l1[0.5] < 0.8 * l1[0]
    # objective_ is the full objective (with the term) at the returned weights
    V = torch.from_numpy(fits[0.5].association_.astype(np.float64))
    A = torch.from_numpy(fits[0.5].transform(train).astype(np.float64))
    ref = labo_objective(V, A, torch.as_tensor(train.labels), 100.0, l1=0.5)
    assert fits[0.5].objective_ == pytest.approx(float(ref), rel=1e-5)


def test_initialised_from_the_prior_with_shared_concepts():
    train, _, ctx = make_problem()
    prior = ctx.class_prior.copy()
    prior[1, 0] = 1  # concept 0 was generated for classes 0 and 1
    ctx = Context(ctx.classes, ctx.concepts, ctx.concept_embedding, prior, None, "toy")
    model = get_method("labo", lr=1e-12, epochs=1, prior_strength=2.0).fit(train, ctx)
    np.testing.assert_allclose(model.association_, 2.0 * prior, atol=1e-6)


# --- checkpoint selection on validation ----------------------------------------------------

def test_lbfgs_keeps_the_best_validation_iterate_of_an_overfitting_run():
    train, val, ctx = make_problem()
    model = get_method("labo", optimizer="lbfgs", val_every=1, max_iter=20).fit(train, ctx, val)
    steps, accs = np.array(model.val_history_).T
    assert model.used_validation_ and list(steps) == list(range(1, len(steps) + 1))
    assert steps[-1] == model.final_step_
    # the first step with the best accuracy is kept, and its weights are the ones returned
    assert model.best_step_ == steps[np.argmax(accs)]
    assert val_accuracy(model, val) == pytest.approx(accs.max())
    assert accs.max() > accs[-1] + 0.1  # this case overfits: the final iterate is clearly worse
    # independent check of the recorded step: an unvalidated run stopped there ends on the
    # same weights (the optimiser's path does not depend on the checkpoints)
    stopped = get_method("labo", optimizer="lbfgs", val_every=1, max_iter=model.best_step_).fit(train, ctx)
    np.testing.assert_allclose(stopped.class_weights_, model.class_weights_, rtol=1e-6)
    assert model.objective_ > model.final_objective_  # the training objective kept falling


def test_adam_checkpoints_every_val_every_epochs():
    train, val, ctx = make_problem()
    model = get_method("labo", lr=1e-2, batch_size=4, epochs=60, val_every=10).fit(train, ctx, val)
    steps, accs = np.array(model.val_history_).T
    assert list(steps) == [10, 20, 30, 40, 50, 60] and model.final_step_ == 60
    assert model.best_step_ == steps[np.argmax(accs)] and accs.max() >= accs[-1]
    assert val_accuracy(model, val) == pytest.approx(accs.max())
    assert model._extra_state()["best_step"] == model.best_step_


def test_without_validation_the_final_iterate_is_used():
    train, _, ctx = make_problem()
    model = get_method("labo", lr=1e-2, batch_size=4, epochs=20).fit(train, ctx)
    assert not model.used_validation_ and model.val_history_ == []
    assert model.best_step_ == model.final_step_ == 20
    assert model.objective_ == model.final_objective_


# --- unnormalised embeddings ---------------------------------------------------------------

def test_dot_similarity_uses_raw_dot_products():
    train, val, ctx = with_norms(*make_problem())
    raw = lambda b: b.embedding * b.embedding_norm[:, None]  # noqa: E731
    raw_concepts = ctx.concept_embedding * ctx.concept_norm[:, None]
    model = get_method("labo", lr=1e-3, batch_size=4, epochs=20).fit(train, ctx, val)  # 'auto'
    assert model.similarity_ == "dot"
    np.testing.assert_allclose(model.transform(val), raw(val) @ raw_concepts.T, rtol=1e-5)
    np.testing.assert_allclose(model.decision_function(val),
                               100 * raw(val) @ raw_concepts.T @ model.class_weights_.T, rtol=1e-4,
                               atol=1e-3)  # float32 logits of order 100
    # and training saw the raw products: the recorded objective is the numpy one on them
    V = torch.from_numpy(model.association_.astype(np.float64))
    A = torch.from_numpy((raw(train) @ raw_concepts.T).astype(np.float64))
    assert model.objective_ == pytest.approx(float(labo_objective(V, A, torch.as_tensor(train.labels),
                                                                  100.0)), rel=1e-5)
    cosine = get_method("labo", similarity="cosine", epochs=10, val_every=5).fit(train, ctx, val)
    assert cosine.similarity_ == "cosine"
    np.testing.assert_allclose(cosine.transform(val), val.embedding @ ctx.concept_embedding.T, rtol=1e-5)


def test_dot_similarity_needs_the_norms():
    train, val, ctx = make_problem()
    with pytest.raises(DataError, match="train.embedding_norm and context.concept_norm"):
        get_method("labo", similarity="dot", epochs=10).fit(train, ctx, val)
    assert get_method("labo", epochs=10).fit(train, ctx).similarity_ == "cosine"  # auto falls back
    train, val, ctx = with_norms(train, val, ctx)
    model = get_method("labo", similarity="dot", epochs=10).fit(train, ctx)
    del val.embedding_norm
    with pytest.raises(DataError, match="embedding_norm"):
        model.predict(val)


# --- files and parameters ------------------------------------------------------------------

def test_save_load_identical(tmp_path):
    train, val, ctx = with_norms(*make_problem())
    model = get_method("labo", lr=1e-2, batch_size=4, epochs=30, val_every=10).fit(train, ctx, val)
    again = Method.load(model.save(tmp_path / "labo"))
    np.testing.assert_array_equal(again.decision_function(val), model.decision_function(val))
    for attr in ("best_step_", "final_step_", "val_history_", "similarity_", "used_validation_",
                 "objective_", "final_objective_"):
        assert getattr(again, attr) == getattr(model, attr), attr


@pytest.mark.parametrize("params", [
    {"scale": 0}, {"scale": float("nan")}, {"prior_strength": -1.0}, {"lr": 0.0}, {"l1": -0.01},
    {"diversity": "0.005"}, {"max_iter": 0}, {"epochs": 2.5}, {"batch_size": True},
    {"val_every": 0}, {"optimizer": "sgd"}, {"similarity": "raw"}, {"standardize": 1},
    {"random_state": None},
])
def test_bad_params_raise_config_error_at_fit(params):
    train, val, ctx = make_problem()
    model = get_method("labo", **params)  # the constructor only stores
    name = next(iter(params))
    with pytest.raises(ConfigError, match=f"labo: {name} must"):
        model.fit(train, ctx, val)


@pytest.mark.parametrize("l1,diversity", [(0.0, 0.0), (0.01, 0.005)])
def test_fast_adam_follows_torch_adam_on_the_objective(l1, diversity):
    """The written-out gradient + Adam update gives torch.optim.Adam's iterates on
    labo_objective, on the same shuffled batches (the reference's loop, run by autograd)."""
    import torch

    from conceptlens.methods.labo import _labo_gradient, labo_objective

    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 12)).astype(np.float32) * 0.1
    y = rng.integers(0, 3, 40)
    V0 = (rng.random((3, 12)) < 0.3).astype(np.float32)
    # the gradient against autograd
    Vt = torch.tensor(V0, requires_grad=True)
    labo_objective(Vt, torch.from_numpy(A), torch.from_numpy(y), 100.0, l1, diversity).backward()
    np.testing.assert_allclose(_labo_gradient(V0, A, y, 100.0, l1, diversity), Vt.grad.numpy(),
                               rtol=1e-4, atol=1e-6)
    # whole runs: ours against the autograd loop with torch's Adam
    model = get_method("labo", epochs=30, batch_size=8, lr=1e-2, l1=l1, diversity=diversity, val_every=10)
    V = torch.tensor(V0)
    model.batch_size_, model.epochs, model.val_every = 8, 30, 10
    model._run_adam(V, torch.from_numpy(A), torch.from_numpy(y), 100.0, lambda step: None)
    ref = torch.tensor(V0, requires_grad=True)
    opt = torch.optim.Adam([ref], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    At, yt = torch.from_numpy(A), torch.from_numpy(y)
    for _ in range(30):
        for idx in torch.randperm(40, generator=gen).split(8):
            opt.zero_grad()
            labo_objective(ref, At[idx], yt[idx], 100.0, l1, diversity).backward()
            opt.step()
    np.testing.assert_allclose(V.numpy(), ref.detach().numpy(), rtol=1e-3, atol=1e-4)
    assert np.abs(V.numpy() - V0).max() > 0.05  # it moved


def test_auto_batch_size_follows_the_reference_configs():
    from conceptlens.methods.labo import auto_batch_size

    # CIFAR10's per-shot configs: 10 classes x k shots -> bs 2k; full data -> 512
    assert [auto_batch_size(10 * k) for k in (1, 2, 4, 8, 16)] == [2, 4, 8, 16, 32]
    assert auto_batch_size(50_000) == 512


def _previous_adam_loop(V0, A, y, scale, l1, diversity, lr, bs, epochs, seed=0):
    """The Adam loop and gradient before the classes x images layout (issue 23), verbatim in effect:
    a gather per batch, logits as images x classes."""
    import math

    import torch

    def gradient(V, A, y):
        z = V - V.max(1, keepdims=True)
        W = np.exp(z)
        W /= W.sum(1, keepdims=True)
        sim = A @ W.T
        logits = scale * sim
        logits -= logits.max(1, keepdims=True)
        P = np.exp(logits)
        P /= P.sum(1, keepdims=True)
        P[np.arange(len(y)), y] -= 1
        dsim = (scale / len(y)) * P
        if diversity and len(A) > 1:
            dsim -= diversity * 2 * (sim - sim.mean(0)) / ((len(A) - 1) * sim.shape[1])
        dW = dsim.T @ A
        grad = W * (dW - (dW * W).sum(1, keepdims=True))
        if l1:
            norms = np.abs(V).sum(1)
            top = norms == norms.max()
            grad[top] += (l1 / top.sum()) * np.sign(V[top])
        return grad

    gen = torch.Generator().manual_seed(seed)
    W_var = V0.copy()
    m1, m2 = np.zeros_like(W_var), np.zeros_like(W_var)
    b1, b2, eps, step = 0.9, 0.999, 1e-8, 0
    for _ in range(epochs):
        for idx in torch.randperm(len(A), generator=gen).split(bs):
            idx = idx.numpy()
            grad = gradient(W_var, A[idx], y[idx])
            step += 1
            m1 *= b1
            m1 += (1 - b1) * grad
            m2 *= b2
            m2 += (1 - b2) * grad * grad
            denom = np.sqrt(m2) / math.sqrt(1 - b2**step) + eps
            W_var -= (lr / (1 - b1**step)) * m1 / denom
    return W_var


@pytest.mark.parametrize("l1,diversity,off_support", [(0.0, 0.0, True), (0.01, 0.005, False)])
def test_adam_loop_matches_the_previous_loop(l1, diversity, off_support):
    """The epoch-gathered, classes x images loop gives the previous loop's iterates (same batches,
    same update) to float32 rounding, with a partial last batch and off-support entries."""
    import torch

    from conceptlens.methods.labo import OFF_SUPPORT

    rng = np.random.default_rng(3)
    A = (rng.normal(size=(203, 17)) * 0.2).astype(np.float32)
    y = rng.integers(0, 4, 203)
    V0 = (rng.random((4, 17)) < 0.4).astype(np.float32)
    if off_support:
        V0 = np.where(rng.random((4, 17)) < 0.5, V0, OFF_SUPPORT).astype(np.float32)
        V0[np.arange(4), np.arange(4)] = 1
    ref = _previous_adam_loop(V0, A, y, 50.0, l1, diversity, 1e-2, 32, 40)
    model = get_method("labo", epochs=40, lr=1e-2, l1=l1, diversity=diversity, val_every=1000)
    model.batch_size_ = 32
    V = torch.tensor(V0)
    seen = []
    assert model._adam_loop(V, torch.from_numpy(A), torch.from_numpy(y), 50.0, seen.append) == 40
    assert seen == []  # val_every beyond the epochs: no checkpoint
    np.testing.assert_allclose(V.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref - V0)[V0 > OFF_SUPPORT].max() > 0.05  # it moved
    if off_support:  # zero softmax weight, zero gradient: off-support entries stay where they are
        assert np.array_equal(V.numpy()[V0 == OFF_SUPPORT], V0[V0 == OFF_SUPPORT])

"""Post-hoc CBM against the reference's pieces (github.com/mertyg/post-hoc-cbm): scikit-learn's
SGDClassifier and SVC, the margin formula and PCBM-h's training loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlens.errors import ConfigError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, Method, get_method
from conceptlens.methods.posthoc import CAVBank, init_residual, learn_cav_bank, residual_loss

M, K, D = 3, 9, 12


def make_problem(n_per_class=40, seed=0, m=M):
    fixed = np.random.default_rng(99)
    rng = np.random.default_rng(seed)
    concepts = fixed.normal(size=(K, D))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    prior = np.zeros((m, K), np.float32)
    for c in range(m):
        prior[c, 3 * c : 3 * c + 3] = 1

    def bundle(n):
        labels = np.repeat(np.arange(m), n)
        emb = prior[labels] @ concepts + 0.7 * rng.normal(size=(len(labels), D))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        feats = rng.normal(size=(len(labels), 5)).astype(np.float32)
        return FeatureBundle([str(i) for i in range(len(labels))], labels, tuple("abc"[:m]),
                             emb.astype(np.float32), feats, "toy")

    ctx = Context(tuple("abc"[:m]), [f"concept {i}" for i in range(K)],
                  (2.0 * concepts).astype(np.float32),  # not unit: margins must divide by the norm
                  prior, None, "toy")
    return bundle(n_per_class), bundle(15), ctx


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def reference_sgd(Z, y, lam, seed=42):
    """train_pcbm.py's run_linear_probe classifier, verbatim arguments."""
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(random_state=seed, loss="log_loss", alpha=lam, l1_ratio=0.99, verbose=0,
                         penalty="elasticnet", max_iter=10000).fit(Z, y)


def test_margins_are_projections_on_unit_text_vectors(problem):
    train, _, ctx = problem
    model = get_method("posthoc", lam=2e-3).fit(train, ctx)
    C = ctx.concept_embedding.astype(np.float64)
    expected = train.embedding @ (C / np.linalg.norm(C, axis=1, keepdims=True)).T
    np.testing.assert_allclose(model.transform(train), expected, rtol=1e-5, atol=1e-6)
    assert model.mean_.tolist() == [0] * K and model.std_.tolist() == [1] * K  # raw margins


def test_default_solver_is_the_reference_sgd_classifier(problem):
    train, test, ctx = problem
    lam = 2e-3
    model = get_method("posthoc", lam=lam).fit(train, ctx)
    Z = model.transform(train)
    ref = reference_sgd(Z, train.labels, lam)
    np.testing.assert_array_equal(model.class_weights_, ref.coef_.astype(np.float32))
    np.testing.assert_array_equal(model.intercept_, ref.intercept_.astype(np.float32))
    np.testing.assert_array_equal(model.predict(test), ref.predict(model.transform(test)))
    assert model.nec_ == (ref.coef_ != 0).sum(1).mean() and model.lam_ == lam


def test_binary_problem_keeps_sklearns_decision_and_sigmoid():
    train, test, ctx = make_problem(m=2)
    model = get_method("posthoc", lam=1e-3).fit(train, ctx)
    ref = reference_sgd(model.transform(train), train.labels, 1e-3)
    Zt = model.transform(test)
    logits = model.decision_function(test)
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], ref.decision_function(Zt), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(model.predict_proba(test)[:, 1], ref.predict_proba(Zt)[:, 1],
                               rtol=1e-5, atol=1e-6)
    assert model.nec_ == (ref.coef_ != 0).sum()


def test_target_nec_with_sgd_is_a_plain_sgd_fit_at_the_lam_found(problem):
    train, _, ctx = problem
    model = get_method("posthoc", target_nec=2).fit(train, ctx)
    assert 0 < model.nec_ <= 2
    ref = reference_sgd(model.transform(train), train.labels, model.lam_)
    np.testing.assert_array_equal(model.class_weights_, ref.coef_.astype(np.float32))


def test_glm_solver_and_standardize_are_options(problem):
    """solver="glm" meets the optimality (KKT) conditions of the multinomial elastic net on
    z-scored margins when standardize=True."""
    train, _, ctx = problem
    lam, alpha = 0.2, 0.99
    model = get_method("posthoc", solver="glm", lam=lam, standardize=True).fit(train, ctx)
    A = model.margins(train)
    np.testing.assert_allclose(model.mean_, A.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.std_, A.std(0), rtol=1e-4)
    Z = model.transform(train).astype(np.float64)
    W, b = model.class_weights_.astype(np.float64), model.intercept_.astype(np.float64)
    logits = Z @ W.T + b
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    G = (P - np.eye(M)[train.labels]).T @ Z / len(Z)  # gradient of the mean cross-entropy
    smooth = G + lam * (1 - alpha) * W
    nz = W != 0
    assert 0 < nz.sum() < W.size and model.lam_ == lam
    np.testing.assert_allclose(smooth[nz], -lam * alpha * np.sign(W[nz]), atol=2e-3 * lam)
    assert np.all(np.abs(smooth[~nz]) <= lam * alpha * (1 + 2e-3))
    np.testing.assert_allclose((P - np.eye(M)[train.labels]).mean(0), 0, atol=1e-4)  # intercept


def test_pcbm_h_loss_is_ce_plus_l2_times_mean_square():
    rng = np.random.default_rng(0)
    logits, W = rng.normal(size=(5, 3)), rng.normal(size=(3, 4))
    y = np.array([0, 2, 1, 1, 0])
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = -np.log(p[np.arange(5), y]).mean() + 1e-3 * (W ** 2).sum() / W.size
    got = residual_loss(torch.tensor(logits), torch.tensor(y), torch.tensor(W), 1e-3)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_pcbm_h_one_adam_step_matches_the_reference_loop(problem):
    """train_pcbm_h.py's loop (nn.Linear residual, Adam lr 0.01, CE + 1e-3 * mean(W^2)) for one
    full batch, from the same initial weights."""
    train, _, ctx = problem
    n = len(train)
    model = get_method("posthoc_hybrid", lam=2e-3, epochs=1, batch_size=n).fit(train, ctx)
    plain = get_method("posthoc", lam=2e-3).fit(train, ctx)
    np.testing.assert_array_equal(model.class_weights_, plain.class_weights_)  # frozen layer

    W0, b0 = init_residual(D, M, torch.Generator().manual_seed(42))
    residual = torch.nn.Linear(D, M)
    residual.load_state_dict({"weight": W0, "bias": b0})
    opt = torch.optim.Adam(residual.parameters(), lr=0.01)
    X = torch.from_numpy(train.embedding)
    out = torch.from_numpy(plain.decision_function(train).astype(np.float32)) + residual(X)
    loss = torch.nn.CrossEntropyLoss()(out, torch.as_tensor(train.labels)) \
        + 0.001 * (residual.weight ** 2).mean()
    loss.backward()
    opt.step()
    np.testing.assert_allclose(model.residual_weights_, residual.weight.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(model.residual_intercept_, residual.bias.detach().numpy(), atol=1e-6)


def test_pcbm_h_default_training_lowers_the_training_loss(problem):
    train, _, ctx = problem
    plain = get_method("posthoc", lam=2e-3).fit(train, ctx)
    hybrid = get_method("posthoc_hybrid", lam=2e-3).fit(train, ctx)
    ce = lambda m: -np.log(m.predict_proba(train)[np.arange(len(train)), train.labels]).mean()  # noqa: E731
    assert ce(hybrid) < ce(plain)


# -- CAVs ----------------------------------------------------------------------------------

def toy_examples(seed=0, n=40, d=D):
    rng = np.random.default_rng(seed)
    out = {}
    for c, name in enumerate(["striped", "dotted"]):
        direction = np.eye(d)[c]
        out[name] = (rng.normal(size=(n, d)) + 1.5 * direction, rng.normal(size=(n, d)) - 0.5 * direction)
    return out


def test_cavs_are_the_reference_svcs_and_margins_are_decision_over_norm():
    from sklearn.svm import SVC

    examples = toy_examples()
    bank = learn_cav_bank(examples, C=0.1, n_samples=15, seed=3)
    rng = np.random.RandomState(3)  # the reference's draws: np.random.choice(ims, 2n, replace=False)
    X_all = np.vstack([p for p, _ in examples.values()])
    for i, (pos, neg) in enumerate(examples.values()):
        pos, neg = pos[rng.choice(len(pos), 30, replace=False)], neg[rng.choice(len(neg), 30, replace=False)]
        X_train, X_val = np.vstack([pos[:15], neg[:15]]), np.vstack([pos[15:], neg[15:]])
        y = np.r_[np.ones(15), np.zeros(15)]
        svm = SVC(C=0.1, kernel="linear").fit(X_train, y)
        np.testing.assert_allclose(bank.vectors[i], svm.coef_[0], rtol=1e-5, atol=1e-6)
        assert bank.val_accuracy[i] == pytest.approx(svm.score(X_val, y))
        assert bank.train_accuracy[i] == pytest.approx(svm.score(X_train, y))
        np.testing.assert_allclose(bank.margins(X_all)[:, i],
                                   svm.decision_function(X_all) / np.linalg.norm(svm.coef_),
                                   rtol=1e-4, atol=1e-5)
    assert bank.meta["sampled_with_replacement"] == []
    small = learn_cav_bank(toy_examples(n=10), n_samples=15)
    assert small.meta["sampled_with_replacement"] == ["striped", "dotted"]


def test_posthoc_with_a_cav_file_uses_its_margins(problem, tmp_path):
    train, test, ctx = problem
    rng = np.random.default_rng(1)
    bank = CAVBank(["red", "round", "shiny"], rng.normal(size=(3, D)).astype(np.float32) * 3,
                   np.array([0.5, -1.0, 2.0], np.float32), np.ones(3, np.float32),
                   np.full(3, 0.9, np.float32), {"backbone": "toy", "on": "embedding"})
    path = bank.save(tmp_path / "cavs.safetensors")
    model = get_method("posthoc_hybrid", lam=1e-3, cavs=str(path)).fit(train, ctx)
    assert model.concepts_ == ["red", "round", "shiny"] and model.class_weights_.shape == (M, 3)
    W, b = bank.vectors.astype(np.float64), bank.intercepts.astype(np.float64)
    expected = (test.embedding @ W.T + b) / np.linalg.norm(W, axis=1)
    np.testing.assert_allclose(model.transform(test), expected, rtol=1e-5, atol=1e-5)
    again = Method.load(model.save(tmp_path / "model"))
    np.testing.assert_array_equal(again.decision_function(test), model.decision_function(test))


def test_cavs_on_features_round_trip(problem, tmp_path):
    train, test, ctx = problem
    bank = CAVBank(["a", "b"], np.eye(2, 5, dtype=np.float32), np.zeros(2, np.float32),
                   np.ones(2, np.float32), np.ones(2, np.float32), {"backbone": "toy", "on": "features"})
    model = get_method("posthoc", lam=1e-3, cavs=str(bank.save(tmp_path / "f.safetensors"))).fit(train, ctx)
    np.testing.assert_allclose(model.transform(test), test.features[:, :2], rtol=1e-6)
    again = Method.load(model.save(tmp_path / "m"))
    assert again.input == "features"
    np.testing.assert_array_equal(again.decision_function(test), model.decision_function(test))


def test_cav_file_errors(problem, tmp_path):
    train, _, ctx = problem
    with pytest.raises(ConfigError, match="CAV file .*missing.safetensors does not exist.*concepts cav"):
        get_method("posthoc", cavs=str(tmp_path / "missing.safetensors")).fit(train, ctx)
    bank = CAVBank(["a"], np.ones((1, D), np.float32), np.zeros(1, np.float32), np.ones(1, np.float32),
                   np.ones(1, np.float32), {"backbone": "other:model", "on": "embedding"})
    path = str(bank.save(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="learnt with backbone 'other:model'.*uses 'toy'"):
        get_method("posthoc", cavs=path).fit(train, ctx)
    bank.meta["backbone"] = "toy"
    bank.vectors = np.ones((1, D + 1), np.float32)
    path = str(bank.save(tmp_path / "wide.safetensors"))
    with pytest.raises(ConfigError, match=f"dimension {D + 1} but the image 'embedding' has {D}"):
        get_method("posthoc", cavs=path).fit(train, ctx)


@pytest.mark.parametrize("params, message", [
    ({"solver": "adam"}, "solver must be 'sgd'"),
    ({"lam": 0.0}, "lam must be a finite number > 0"),
    ({"alpha": 1.5}, "alpha is the L1 share"),
    ({"target_nec": -1}, "target_nec must be"),
    ({"max_iter": 0}, "max_iter must be an integer >= 1"),
    ({"cavs": 3}, "cavs must be the path \\(a string\\) of a CAV file"),
])
def test_bad_parameters_are_config_errors(problem, params, message):
    train, _, ctx = problem
    with pytest.raises(ConfigError, match=message):
        get_method("posthoc", **params).fit(train, ctx)


def test_bad_hybrid_parameters_are_config_errors(problem):
    train, _, ctx = problem
    with pytest.raises(ConfigError, match="residual_solver must be 'adam'"):
        get_method("posthoc_hybrid", residual_solver="sgd").fit(train, ctx)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        get_method("posthoc_hybrid", batch_size=0).fit(train, ctx)

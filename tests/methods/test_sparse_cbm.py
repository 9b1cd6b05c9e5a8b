"""Sparse-CBM and Concept Matrix Search against the authors' code (Andron00e/SparseCBM):
each loss term against torch's own functions or a direct formula, the collapse of the two
linear layers, CMS on hand-built cases, and the estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conceptlens.errors import ConfigError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, Method, get_method
from conceptlens.methods.sparse_cbm import contrastive_loss, gumbel_loss, gumbel_noise, l1_penalty

M, K, D = 3, 9, 12  # classes, concepts, embedding dim
FAST = {"epochs": 100, "lr": 1e-2, "cbl_lr": 1e-2}


def make_problem(n_per_class=25, seed=0, noise=0.3):
    """Concepts 3c..3c+2 belong to class c; an image mixes its class's concept vectors."""
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(K, D))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    prior = np.zeros((M, K))
    for c in range(M):
        prior[c, 3 * c : 3 * c + 3] = 1

    def bundle(n):
        labels = np.repeat(np.arange(M), n)
        emb = prior[labels] @ concepts + noise * rng.normal(size=(len(labels), D))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return FeatureBundle([str(i) for i in range(len(labels))], labels, tuple("abc"),
                             emb.astype(np.float32), None, "toy")

    class_emb = prior @ concepts
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    ctx = Context(tuple("abc"), [f"concept {i}" for i in range(K)], concepts.astype(np.float32),
                  prior.astype(np.float32), class_emb.astype(np.float32), "toy")
    return bundle(n_per_class), bundle(20), ctx


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module", params=["gumbel", "contrastive", "l1"])
def fitted(request, problem):
    train, _, ctx = problem
    return get_method("sparse_cbm", sparsity=request.param, **FAST).fit(train, ctx)


# --- the loss terms (bottlenecks/cbm.py) ------------------------------------------------------

def test_gumbel_loss_equals_the_reference_with_torch_gumbel_softmax():
    """criterion_gumbel: mean(-log F.gumbel_softmax) over dim 0 then dim 1, averaged; the same
    seed gives the same noise."""
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    torch.manual_seed(7)
    first = -torch.log(F.gumbel_softmax(z, tau=0.7, hard=False, dim=0)).mean()
    second = -torch.log(F.gumbel_softmax(z, tau=0.7, hard=False, dim=1)).mean()
    reference = (first + second) / 2.0
    ours = gumbel_loss(z, tau=0.7, generator=torch.Generator().manual_seed(7))
    assert float(ours) == pytest.approx(float(reference), rel=1e-10)


def test_gumbel_loss_by_hand_with_fixed_noise():
    z = np.array([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])
    g0, g1 = np.array([[0.1, -0.2], [0.3, 0.0], [-0.5, 0.4]]), np.array([[0.0, 1.0], [0.2, 0.2], [1.5, -1.0]])
    tau = 2.0

    def mean_neg_log_softmax(a, axis):
        a = a / tau
        return -(a - np.log(np.exp(a).sum(axis, keepdims=True))).mean()

    expected = (mean_neg_log_softmax(z + g0, 0) + mean_neg_log_softmax(z + g1, 1)) / 2
    got = gumbel_loss(torch.tensor(z), tau, noise=(torch.tensor(g0), torch.tensor(g1)))
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_gumbel_loss_stays_finite_where_the_reference_overflows():
    """Logits of CLIP's scale (x100) make some gumbel_softmax entries exactly 0 in float32:
    the reference's -log is inf there; log_softmax is the same quantity, finite."""
    z = torch.tensor([[0.0, 200.0], [150.0, 0.0]])
    torch.manual_seed(0)
    assert torch.isinf(-torch.log(F.gumbel_softmax(z, dim=1))).any()
    loss = gumbel_loss(z, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and float(loss) > 50


def test_gumbel_noise_is_torchs():
    torch.manual_seed(3)
    u = -torch.empty(4, 5).exponential_().log()
    np.testing.assert_array_equal(gumbel_noise((4, 5), torch.Generator().manual_seed(3)), u)


@pytest.mark.parametrize("shape", [(3, 3), (4, 3), (2, 5)])
def test_contrastive_loss_is_clips_symmetric_cross_entropy_on_the_diagonal(shape):
    z = np.random.default_rng(0).normal(size=shape) * 2
    d = min(shape)
    by_row = [z[i, i] - np.log(np.exp(z[i]).sum()) for i in range(d)]  # image i -> concept i
    by_col = [z[i, i] - np.log(np.exp(z[:, i]).sum()) for i in range(d)]  # concept i -> image i
    expected = -(np.mean(by_row) + np.mean(by_col)) / 2
    assert float(contrastive_loss(torch.tensor(z))) == pytest.approx(expected, rel=1e-12)


def test_l1_penalty_is_on_the_weights_and_its_gradient_is_sign():
    Mw = torch.tensor([[0.5, -2.0, 0.0], [1.0, 0.0, -0.1], [3.0, 0.2, -0.7]], requires_grad=True)
    pen = l1_penalty(Mw, 1e-3)
    assert pen.detach().item() == pytest.approx(1e-3 * 7.5 / 3)  # sum |M| = 7.5, divided by k = 3
    pen.backward()
    np.testing.assert_allclose(Mw.grad.numpy(), 1e-3 / 3 * np.sign(Mw.detach().numpy()), rtol=1e-6)


def test_l1_training_shrinks_the_bottleneck_weights(problem):
    train, _, ctx = problem
    plain = get_method("sparse_cbm", sparsity="l1", l1=0.0, **FAST).fit(train, ctx)
    strong = get_method("sparse_cbm", sparsity="l1", l1=50.0, **FAST).fit(train, ctx)
    assert np.abs(strong.cbl_weight_).sum() < 0.5 * np.abs(plain.cbl_weight_).sum()


# --- the fitted model: collapse, NEC, accuracy, files ---------------------------------------

@pytest.mark.parametrize("bias", [False, True])
def test_head_equals_the_two_layer_forward(problem, bias):
    train, test, ctx = problem
    model = get_method("sparse_cbm", bias=bias, **FAST).fit(train, ctx)
    A = 100.0 * test.embedding.astype(np.float64) @ ctx.concept_embedding.T.astype(np.float64)
    np.testing.assert_allclose(model.transform(test), A, rtol=1e-5, atol=1e-4)
    Mw, bM = model.cbl_weight_.astype(np.float64), model.cbl_bias_.astype(np.float64)
    W, b = model.head_weight_.astype(np.float64), model.head_bias_.astype(np.float64)
    assert Mw.shape == (K, K) and W.shape == (M, K)
    assert (np.abs(bM).sum() > 0) == bias and (np.abs(b).sum() > 0) == bias
    two_layer = (A @ Mw.T + bM) @ W.T + b
    out = model.decision_function(test)
    np.testing.assert_allclose(out, two_layer, rtol=1e-5, atol=1e-5 * np.abs(two_layer).max())
    np.testing.assert_allclose(model.cbl_activations(test), A @ Mw.T + bM, rtol=1e-4, atol=1e-3)


def test_nec_counts_the_original_concepts_reaching_each_class(problem):
    train, _, ctx = problem
    model = get_method("sparse_cbm", **FAST).fit(train, ctx)
    assert model.nec_ == K  # a trained dense k x k layer reaches every concept
    # zero every CBL weight out of concepts 0..3 (columns) and concept 5 -> class 1 only
    model.cbl_weight_[:, :4] = 0.0
    model.head_weight_[1, :] = 0.0
    model.head_weight_[1, 2] = 1.0
    model.cbl_weight_[2, 5:] = 0.0
    model._collapse()
    per_class = np.count_nonzero(model.head_weight_ @ model.cbl_weight_, axis=1)
    assert per_class.tolist() == [K - 4, 1, K - 4]
    assert model.nec_ == pytest.approx(per_class.mean())


def test_beats_chance_and_nears_logistic_regression(fitted, problem):
    from sklearn.linear_model import LogisticRegression

    train, test, _ = problem
    probe = LogisticRegression(max_iter=2000).fit(train.embedding, train.labels)
    acc = (fitted.predict(test) == test.labels).mean()
    assert acc > 0.75 and acc >= probe.score(test.embedding, test.labels) - 0.15  # chance is 1/3


def test_reference_schedule_runs(problem):
    """Mini-batches of 32 and 10 epochs, the reference's schedule, on the same estimator."""
    train, test, ctx = problem
    model = get_method("sparse_cbm", batch_size=32, epochs=10, lr=1e-2, cbl_lr=1e-2).fit(train, ctx)
    assert (model.predict(test) == test.labels).mean() > 0.6


def test_training_is_reproducible(problem):
    train, _, ctx = problem
    a = get_method("sparse_cbm", epochs=20).fit(train, ctx)
    b = get_method("sparse_cbm", epochs=20).fit(train, ctx)
    np.testing.assert_array_equal(a.class_weights_, b.class_weights_)


def test_save_load_round_trip(fitted, problem, tmp_path):
    _, test, _ = problem
    again = Method.load(fitted.save(tmp_path / "m"))
    assert type(again) is type(fitted) and again.get_params() == fitted.get_params()
    np.testing.assert_array_equal(again.decision_function(test), fitted.decision_function(test))
    np.testing.assert_array_equal(again.predict(test), fitted.predict(test))
    np.testing.assert_array_equal(again.cbl_weight_, fitted.cbl_weight_)


@pytest.mark.parametrize("params, match", [
    ({"sparsity": "sparse"}, "sparsity must be one of"),
    ({"logit_scale": 0}, "logit_scale must be a positive"),
    ({"temperature": -1.0}, "temperature must be a positive"),
    ({"l1": -1e-3}, "l1 must be a finite number >= 0"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1"),
    ({"batch_size": 0}, "batch_size must be None"),
    ({"lr": float("nan")}, "lr must be a positive"),
    ({"cbl_lr": 0.0}, "cbl_lr must be a positive"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"bias": "yes"}, "bias must be True or False"),
])
def test_bad_parameters_raise_at_fit(problem, params, match):
    train, _, ctx = problem
    model = get_method("sparse_cbm", **params)  # the constructor only stores
    with pytest.raises(ConfigError, match=match):
        model.fit(train, ctx)


# --- Concept Matrix Search (additional_evaluations/cms_scores.ipynb) -------------------------

def hand_case():
    """Concepts x, y, z = the axes; class a's name lies between x and y, class b's on z."""
    concepts = np.eye(3, dtype=np.float32)
    classes = np.array([[1, 1, 0], [0, 0.2, 1]], np.float32)
    ctx = Context(("a", "b"), ["x", "y", "z"], concepts, None, classes, "")
    emb = np.array([[1, 0, 0.1], [0.1, 0.2, 1], [0, 1, 0], [0.6, 0.5, 0.5]], np.float32)
    return ctx, FeatureBundle(list("0123"), np.array([0, 1, 0, 0]), ("a", "b"), emb, None, "")


def reference_cms(image, classes, concepts, variant):
    """The notebook's loops: get_dot_prods_matrix, then similarity() or max-score per image."""
    def dot_prods(a, b, eps=1e-8):
        m = a @ b.T / torch.sqrt((a.norm(dim=-1, keepdim=True) ** 2) @ (b.norm(dim=-1, keepdim=True) ** 2).T)
        return m / (m.sum(1, keepdim=True) + eps)

    V = dot_prods(torch.tensor(image, dtype=torch.float64), torch.tensor(concepts, dtype=torch.float64))
    T = dot_prods(torch.tensor(classes, dtype=torch.float64), torch.tensor(concepts, dtype=torch.float64))
    if variant == "similarity":
        scores = torch.tensor([[float(v @ t / (v.norm() * t.norm())) for t in T] for v in V])
        return scores, scores.argmax(1).numpy()
    return T[:, V.argmax(1)].T, np.array([int(T[:, int(torch.argmax(v))].argmax()) for v in V])


@pytest.mark.parametrize("variant", ["similarity", "max_score"])
def test_cms_equals_the_notebook_on_a_hand_built_case(variant):
    ctx, b = hand_case()
    model = get_method("cms", variant=variant).fit(b, ctx)
    scores, pred = reference_cms(b.embedding, ctx.class_embedding, ctx.concept_embedding, variant)
    np.testing.assert_allclose(model.decision_function(b), scores.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(b), pred)
    # the known answer: image 0 is mostly x (class a), 1 mostly z (b), 2 is y (a)
    assert model.predict(b)[:3].tolist() == [0, 1, 0]


def test_cms_variants_differ_where_the_top_concept_misleads():
    """Image 3 is spread over x, y, z with x on top: max-score follows x to class a, while
    the similarity score weighs all of them (z is b's only concept)."""
    ctx, b = hand_case()
    b.embedding[3] = [0.5, 0.0, 0.45]
    sim = get_method("cms").fit(b, ctx).predict(b)[3]
    top = get_method("cms", variant="max_score").fit(b, ctx).predict(b)[3]
    assert (sim, top) == (1, 0)


def test_cms_scores_are_real_valued_so_top1_and_per_class_agree(problem):
    """No discretised scores: no ties, so every tie rule gives the same prediction, and
    top-1 equals the per-class accuracy averaged with class counts."""
    from conceptlens.evaluation.metrics import evaluate, per_class_accuracy, predict_from_scores

    train, test, ctx = problem
    for variant, better_than in (("similarity", 0.75), ("max_score", 0.5)):  # chance is 1/3
        model = get_method("cms", variant=variant).fit(train, ctx)
        scores = model.decision_function(test)
        top2 = np.sort(scores, axis=1)[:, -2:]
        assert (top2[:, 1] > top2[:, 0]).all()  # a strict maximum in every row
        np.testing.assert_array_equal(predict_from_scores(scores), model.predict(test))
        per_class = per_class_accuracy(model.predict(test), test.labels, M)
        counts = np.bincount(test.labels, minlength=M)
        res = evaluate(model, test)
        assert res["top1"] == pytest.approx((per_class * counts).sum() / counts.sum())
        assert res["top1"] > better_than


def test_cms_save_load_round_trip(problem, tmp_path):
    train, test, ctx = problem
    model = get_method("cms", variant="max_score").fit(train, ctx)
    again = Method.load(model.save(tmp_path / "cms"))
    np.testing.assert_array_equal(again.decision_function(test), model.decision_function(test))


def test_cms_errors(problem):
    train, _, ctx = problem
    with pytest.raises(ConfigError, match="variant must be one of"):
        get_method("cms", variant="max").fit(train, ctx)
    no_classes = Context(ctx.classes, ctx.concepts, ctx.concept_embedding, ctx.class_prior, None)
    with pytest.raises(ConfigError, match="class_embedding"):
        get_method("cms").fit(train, no_classes)

"""The concept bottleneck model (Koh et al. 2020; yewsiang/ConceptBottleneck @d6353f2, CUB/train.py,
template_model.py, tti.py) against scikit-learn and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from conceptlens.annotations import ConceptAnnotations
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import FeatureBundle
from conceptlens.intervene import intervene, intervention_curve
from conceptlens.methods import Context, Method
from conceptlens.methods.cbm import CBM, concept_accuracy, masked_bce, truth_by_id

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ("a", "b", "c", "d")


def make_problem(n_per_class=40, seed=0, signal=1.0, noise=1.0, d=10):
    """Two binary concepts decide the class (class = 2 * c0 + c1) and each image's concepts are
    drawn per image from its class; features carry each concept along one direction, with noise.
    Concepts 2 and 3 are independent coin flips the features also carry (k = 4)."""
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(99)
    dirs = fixed.normal(size=(4, d))
    labels = np.repeat(np.arange(4), n_per_class)
    C = np.stack(
        [labels // 2, labels % 2, rng.integers(0, 2, len(labels)), rng.integers(0, 2, len(labels))], 1
    ).astype(np.float64)
    X = signal * (2 * C - 1) @ dirs + noise * rng.normal(size=(len(labels), d))
    ids = [f"s{seed}-{i}" for i in range(len(labels))]
    bundle = FeatureBundle(ids, labels, CLASSES, X.astype(np.float32), None, "toy")
    return bundle, C


def context(by_id=None, class_truth=None, k=4):
    concepts = [f"concept {j}" for j in range(k)]
    return Context(
        CLASSES,
        concepts,
        np.eye(k, 8, dtype=np.float32),
        backbone_id="toy",
        class_truth=class_truth,
        concept_truth_by_id=by_id,
    )


def by_id(bundle, C):
    return {i: C[n] for n, i in enumerate(bundle.ids)}


def test_independent_concept_head_is_per_concept_logistic_regression_with_masked_labels():
    """L-BFGS on (1/k) sum_k mean_known BCE_k + wd/2 ||W||^2 is, per concept, sklearn's L2 logistic
    regression on that concept's known rows with C = 1 / (n_known * k * wd); unknown (NaN) labels
    are left out, not read as 0."""
    train, C = make_problem(noise=2.0)
    C = C.copy()
    C[::3, 1] = np.nan  # a third of concept 1's labels unknown
    wd = 1e-2
    model = CBM(mode="independent", concept_weighting="none", weight_decay=wd).fit(
        train, context(by_id(train, C))
    )
    Z = (train.embedding - model.mean_) / model.scale_
    k = C.shape[1]
    for j in range(k):
        known = ~np.isnan(C[:, j])
        ref = LogisticRegression(C=1 / (known.sum() * k * wd), tol=1e-10, max_iter=10000).fit(
            Z[known], C[known, j]
        )
        np.testing.assert_allclose(model.concept_coef_[j], ref.coef_[0], atol=2e-3, rtol=2e-3)
        np.testing.assert_allclose(model.concept_intercept_[j], ref.intercept_[0], atol=2e-3)
    # reading unknown as 0 fits something else
    zeros = CBM(mode="independent", concept_weighting="none", weight_decay=wd).fit(
        train, context(by_id(train, np.nan_to_num(C)))
    )
    assert np.abs(zeros.concept_coef_[1] - model.concept_coef_[1]).max() > 1e-2


def test_masked_loss_ignores_the_value_under_an_unknown_label():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 3), torch.randint(0, 2, (6, 3)).double()
    known = torch.rand(6, 3) > 0.4
    known[0] = True
    flipped = torch.where(known, target, 1 - target)
    ones = torch.ones(3, dtype=torch.float64)
    a = masked_bce(logits.double(), target, known, ones, None)
    assert a == masked_bce(logits.double(), flipped, known, ones, None)
    # by hand: per concept the mean over known rows, then the mean over concepts
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), target, reduction="none")
    by_hand = sum(bce[known[:, j], j].mean() for j in range(3)) / 3
    assert float(a) == pytest.approx(float(by_hand))


def test_sequential_label_layer_is_logistic_regression_on_the_concept_logits():
    train, C = make_problem(noise=2.0)
    wd = 1e-2
    model = CBM(mode="sequential", weight_decay=wd, concept_weighting="none").fit(
        train, context(by_id(train, C))
    )
    A = model.transform(train).astype(np.float64)
    np.testing.assert_allclose(A, model.concept_logits(train))  # 'auto': sequential reads logits
    ref = LogisticRegression(C=1 / (len(A) * wd), tol=1e-10, max_iter=10000).fit(A, train.labels)
    # softmax logits are defined up to a constant per image: compare centred class weights
    W = model.class_weights_ - model.class_weights_.mean(0)
    np.testing.assert_allclose(W, ref.coef_ - ref.coef_.mean(0), atol=5e-3, rtol=5e-3)


def test_joint_with_zero_concept_weight_is_a_probe_through_the_bottleneck():
    """lambda = 0: only the task loss; with k >= classes the bottleneck is any linear map, so the
    training loss reaches an (almost) unregularised multinomial logistic regression's."""
    train, C = make_problem(noise=2.5)
    model = CBM(mode="joint", concept_weight=0.0, weight_decay=0.0, max_iter=2000).fit(
        train, context(by_id(train, C))
    )
    probe = LogisticRegression(C=1e6, tol=1e-10, max_iter=10000).fit(
        (train.embedding - model.mean_) / model.scale_, train.labels
    )
    Z = (train.embedding - model.mean_) / model.scale_

    def ce(logits):
        logits = logits - logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -logp[np.arange(len(logp)), train.labels].mean()

    assert ce(model.decision_function(train).astype(np.float64)) == pytest.approx(
        ce(probe.decision_function(Z)), abs=2e-3
    )
    test, _ = make_problem(seed=1, noise=2.5)
    agree = (model.predict(test) == probe.predict((test.embedding - model.mean_) / model.scale_)).mean()
    assert agree > 0.95


def test_intervening_with_true_concepts_raises_accuracy():
    """Weak concept signal, class = 2 c0 + c1: setting c0 and c1 to their truth fixes the class."""
    train, C = make_problem(signal=0.5, noise=1.5, n_per_class=60)
    test, Ct = make_problem(seed=1, signal=0.5, noise=1.5, n_per_class=60)
    model = CBM(mode="independent").fit(train, context(by_id(train, C)))
    curve = intervention_curve(model, test, Ct.astype(bool), steps=4, policy="random", reference=train)
    assert curve[0] < 0.8 and curve[-1] > 0.95 and curve[-1] > curve[0] + 0.15
    # the two class-deciding concepts by name
    _, logits = intervene(
        model, test, concepts=["concept 0", "concept 1"], truth=Ct.astype(bool), reference=train
    )
    assert (logits.argmax(1) == test.labels).mean() > 0.95


def test_intervention_on_a_concept_the_model_lacks_is_a_config_error():
    train, C = make_problem()
    model = CBM(mode="independent").fit(train, context(by_id(train, C)))
    with pytest.raises(ConfigError, match="Unknown concept.*no such concept"):
        intervene(model, train, concepts=["no such concept"], truth=C.astype(bool))


def test_class_level_truth_broadcasts_and_per_image_rows_override_it():
    train, _ = make_problem()
    class_truth = np.array([[0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, np.nan]], float)
    a = CBM(mode="independent").fit(train, context(class_truth=class_truth))
    b = CBM(mode="independent").fit(train, context(by_id(train, class_truth[train.labels])))
    np.testing.assert_allclose(a.concept_coef_, b.concept_coef_, atol=1e-6)
    # a per-image row wins over the class row
    rows = {train.ids[0]: np.array([1.0, 1.0, 1.0, 1.0])}
    c = CBM(mode="independent").fit(train, context(rows, class_truth=class_truth))
    assert np.abs(c.concept_coef_ - a.concept_coef_).max() > 1e-4


def test_truth_by_id_reorders_columns_and_names_missing_concepts():
    ann = ConceptAnnotations("image", ("x", "y"), np.array([[1.0, 0.0], [np.nan, 1.0]]), items=("i0", "i1"))
    out = truth_by_id(ann, ["y", "x"])
    np.testing.assert_array_equal(out["i0"], [0.0, 1.0])
    assert np.isnan(out["i1"][1])
    with pytest.raises(DataError, match="'z'.*not annotated"):
        truth_by_id(ann, ["z"])


def test_mlp_head_saves_and_loads(tmp_path):
    train, C = make_problem()
    model = CBM(mode="joint", concept_head="mlp", hidden=8, concept_weight=1.0).fit(
        train, context(by_id(train, C))
    )
    again = Method.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.decision_function(train), model.decision_function(train))
    np.testing.assert_array_equal(again.predict_concepts(train), model.predict_concepts(train))
    acc = concept_accuracy(model.predict_concepts(train), C)
    assert acc["mean"] > 0.8 and 0 <= acc["whole_vector"] <= 1


def test_concept_accuracy_counts_known_labels_only():
    pred = np.array([[1, 0], [1, 1], [0, 0]])
    truth = np.array([[1, 0], [0, np.nan], [0, 1]])
    acc = concept_accuracy(pred, truth)
    assert acc["per_concept"] == [pytest.approx(2 / 3), pytest.approx(1 / 2)]
    assert acc["whole_vector"] == pytest.approx(1 / 2)  # rows 0 and 2 are fully known; row 0 is right


@pytest.mark.parametrize(
    "ctx_kwargs, match",
    [
        ({}, "context has none"),
        ({"class_truth": np.zeros((3, 4))}, r"must be \(classes, concepts\) = \(4, 4\); got \(3, 4\)"),
        ({"class_truth": np.full((4, 4), 2.0)}, r"1 \(true\), 0 \(false\) or NaN"),
        ({"class_truth": np.c_[np.zeros((4, 3)), np.full(4, np.nan)]}, r"'concept 3'.*no known label"),
    ],
)
def test_bad_labels_are_data_errors(ctx_kwargs, match):
    train, _ = make_problem()
    with pytest.raises(DataError, match=match):
        CBM(mode="independent").fit(train, context(**ctx_kwargs))


def test_images_of_other_classes_than_the_annotations_are_a_data_error():
    train, C = make_problem()
    other = FeatureBundle(train.ids, train.labels, ("w", "x", "y", "z"), train.embedding, None, "toy")
    with pytest.raises(DataError, match="classes.*not the context's"):
        CBM().fit(other, context(by_id(train, C)))


def test_missing_rows_without_class_truth_are_a_data_error():
    train, C = make_problem()
    rows = by_id(train, C)
    rows.pop(train.ids[3])
    with pytest.raises(DataError, match="no row in context.concept_truth_by_id"):
        CBM().fit(train, context(rows))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"mode": "end2end"}, "mode must be one of independent, sequential, joint"),
        ({"concept_weight": -1.0}, "concept_weight must be a finite number >= 0"),
        ({"concept_head": "deep"}, "concept_head"),
        ({"hidden": 0}, "hidden"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_bad_parameters_are_config_errors(params, match):
    train, C = make_problem()
    with pytest.raises(ConfigError, match=match):
        CBM(**params).fit(train, context(by_id(train, C)))


def test_sgd_keeps_the_best_validation_epoch():
    train, C = make_problem(noise=2.0)
    val, Cv = make_problem(seed=2, noise=2.0)
    rows = {**by_id(train, C), **by_id(val, Cv)}
    model = CBM(mode="joint", optimizer="sgd", epochs=15, concept_weight=0.1).fit(train, context(rows), val)
    hist = model.history_["joint"]
    assert hist["epochs"] == 15 and 0 <= hist["best_epoch"] < 15
    without = CBM(mode="joint", optimizer="sgd", epochs=15, concept_weight=0.1).fit(train, context(rows))
    assert without.history_["joint"]["best_epoch"] == -1


@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_fit_leaves_the_callers_torch_rng_alone_and_is_seeded_by_seed(optimizer):
    train, C = make_problem()
    val, Cv = make_problem(seed=2)
    rows = {**by_id(train, C), **by_id(val, Cv)}
    torch.manual_seed(123)
    expected = torch.rand(3)
    fits = []
    for caller in (123, 7):  # the caller's global seed must not reach the fit either
        torch.manual_seed(caller)
        fits.append(CBM(mode="joint", optimizer=optimizer, epochs=3, seed=1).fit(train, context(rows), val))
        if caller == 123:
            assert torch.equal(torch.rand(3), expected)  # the draw the caller would have had
    np.testing.assert_array_equal(fits[0].class_weights_, fits[1].class_weights_)
    np.testing.assert_array_equal(fits[0].concept_coef_, fits[1].concept_coef_)


def test_independent_label_layer_is_selected_on_the_true_validation_concepts():
    """The reference selects the independent label layer (ModelOracleCtoY) on the validation
    images' true concepts: with every label known, their features cannot change the kept epoch."""
    train, C = make_problem(noise=2.0)
    val, Cv = make_problem(seed=2, noise=2.0)
    scrambled = FeatureBundle(val.ids, val.labels, CLASSES,
                              np.random.default_rng(3).normal(size=val.embedding.shape).astype(np.float32),
                              None, "toy")
    rows = {**by_id(train, C), **by_id(val, Cv)}
    params = {"mode": "independent", "optimizer": "sgd", "epochs": 30}
    a = CBM(**params).fit(train, context(rows), val)
    b = CBM(**params).fit(train, context(rows), scrambled)
    assert a.history_["labels"]["best_epoch"] == b.history_["labels"]["best_epoch"] >= 0
    np.testing.assert_array_equal(a.class_weights_, b.class_weights_)

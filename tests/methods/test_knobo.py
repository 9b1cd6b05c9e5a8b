"""KnoBo against scikit-learn, the reference's sampling code, brute force and hand computations
(YueYANG1996/KnoBo @53b3728: modules/train_grounding.py, utils.py, cbm.py)."""

from __future__ import annotations

import itertools
import logging
import math
import random

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from conceptlens.annotations import ConceptAnnotations
from conceptlens.concepts.questions import attribute_question, questions_from_annotations
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, KnoBo, Method, get_method
from conceptlens.methods.knobo import grounding_split, prior_loss, prior_matrix

M, K, D = 3, 8, 16
FAST = {"min_val": 2, "epochs": 30, "lr": 1e-2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_problem(n_train=40, n_val=15, n_test=20, seed=0, truth=None, noise=0.8):
    """Concept j holds for the classes where truth[c, j] == 1; an image is its class's mean plus
    noise, the means built from the concepts that hold (so grounding is learnable)."""
    fixed = np.random.default_rng(11)
    rng = np.random.default_rng(seed)
    if truth is None:
        truth = (fixed.random((M, K)) < 0.5).astype(np.float32)
        truth[0, 0], truth[1, 0], truth[2, 0] = 1, 0, 0  # every concept has both sides
        truth[:, 1] = [0, 1, 1]
    directions = fixed.normal(size=(K, D))
    means = (2 * np.nan_to_num(truth, nan=0.5) - 1) @ directions / math.sqrt(K)  # unknown: neither

    def bundle(n):
        y = np.repeat(np.arange(M), n)
        x = means[y] + noise * rng.normal(size=(len(y), D))
        return FeatureBundle([f"i{i}" for i in range(len(y))], y, tuple("abc"), x.astype(np.float32),
                             None, "toy")

    ctx = Context(tuple("abc"), [f"concept {j}" for j in range(K)],
                  np.eye(K, D, dtype=np.float32), None, None, "toy", class_truth=truth)
    return bundle(n_train), bundle(n_val), bundle(n_test), ctx


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- the reference's sampling (train_grounding.py, transcribed with image ids as list items) ----

def reference_mapping(positive_images, negative_images, max_examples=10000, train_samples=2000):
    random.seed(0)
    random.shuffle(positive_images)
    random.shuffle(negative_images)
    if len(positive_images) > len(negative_images):
        negative_images_selected = negative_images[:min(len(negative_images), max_examples // 2)]
        positive_images_selected = positive_images[:max_examples - len(negative_images_selected)]
    else:
        positive_images_selected = positive_images[:min(len(positive_images), max_examples // 2)]
        negative_images_selected = negative_images[:max_examples - len(positive_images_selected)]
    val_len = min(int(0.1 * min(len(positive_images_selected), len(negative_images_selected))), 50)
    if val_len < 10:
        return False
    positive_train, positive_val = train_test_split(positive_images_selected, test_size=val_len,
                                                    random_state=0)
    negative_train, negative_val = train_test_split(negative_images_selected, test_size=val_len,
                                                    random_state=0)
    pos_train = positive_train[:int(train_samples * 0.5)]
    neg_train = negative_train[:(train_samples - len(pos_train))]
    random.seed(0)
    if len(pos_train) > len(neg_train):
        pos_train = random.sample(pos_train, len(neg_train))
    else:
        neg_train = random.sample(neg_train, len(pos_train))
    return pos_train, neg_train, positive_val, negative_val


@pytest.mark.parametrize("n_pos, n_neg", [(150, 400), (400, 150), (120, 120), (2600, 1300), (90, 500)])
def test_grounding_split_is_the_reference_sampling(n_pos, n_neg):
    state = random.getstate()
    try:
        pos, neg = list(range(n_pos)), list(range(10_000, 10_000 + n_neg))
        expected = reference_mapping(list(pos), list(neg))
    finally:
        random.setstate(state)
    got = grounding_split(pos, neg)
    if expected is False:
        assert isinstance(got, str) and "fewer than min_val=10" in got
    else:
        assert got == expected
        assert len(got[0]) == len(got[1]) <= 1000 and len(got[2]) == len(got[3]) <= 50


def test_grounding_probabilities_are_sklearn_predict_proba():
    truth = np.array([[1, 0, 1, 1, 0, np.nan, 1, 0],
                      [0, 1, np.nan, 1, 1, 1, 0, 0],
                      [0, 1, 0, 0, 1, 0, 1, 1]], np.float32)
    train, val, test, ctx = make_problem(truth=truth)
    model = get_method("knobo", n_concepts=None, **FAST).fit(train, ctx, val)
    X, Xtest = unit(train.embedding), unit(test.embedding)
    P = np.where(np.isnan(truth), 0, 2 * truth - 1)
    assert not model.skipped_ and sorted(model.kept_.tolist()) == list(range(K))
    A = model.transform(test)
    for j in range(K):
        # positives / negatives by class; the class with unknown truth (NaN) is left out
        pos = np.flatnonzero(P[train.labels, j] == 1).tolist()
        neg = np.flatnonzero(P[train.labels, j] == -1).tolist()
        pt, nt, pv, nv = grounding_split(pos, neg, min_val=2)
        ref = LogisticRegression(max_iter=1000, class_weight="balanced").fit(
            X[pt + nt], [1] * len(pt) + [0] * len(nt))
        np.testing.assert_allclose(A[:, j], ref.predict_proba(Xtest)[:, 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(model.grounding_coef_[j], ref.coef_[0])
        assert model.concept_val_accuracy_[j] == ref.score(X[pv + nv], [1] * len(pv) + [0] * len(nv))
        assert model.concept_train_accuracy_[j] == ref.score(X[pt + nt], [1] * len(pt) + [0] * len(nt))
    # the logits are the head on those activations, exactly
    np.testing.assert_allclose(model.decision_function(test), A @ model.class_weights_.T + model.intercept_,
                               rtol=1e-6)


def test_prior_matrix_from_truth_and_from_class_prior():
    truth = np.array([[1, 0, np.nan], [0, np.nan, 1]])
    ctx = Context(("a", "b"), ["x", "y", "z"], class_truth=truth,
                  class_prior=np.ones((2, 3)))  # class_truth wins
    P, source = prior_matrix(ctx, 2, 3)
    np.testing.assert_array_equal(P, [[1, -1, 0], [-1, 0, 1]])
    assert source == "class_truth"
    P, source = prior_matrix(Context(("a", "b"), ["x", "y", "z"], class_prior=[[1, 0, 0], [0, 1, 1]]), 2, 3)
    np.testing.assert_array_equal(P, [[1, -1, -1], [-1, 1, 1]])  # closed world: not generated = no
    assert source == "class_prior"
    with pytest.raises(DataError, match="neither class_truth nor class_prior.*annotations"):
        prior_matrix(Context(("a", "b"), ["x", "y", "z"]), 2, 3)
    with pytest.raises(DataError, match=r"class_truth must be \(classes, concepts\) = \(2, 3\)"):
        prior_matrix(Context(("a", "b"), ["x", "y", "z"], class_truth=np.ones((3, 2))), 2, 3)
    with pytest.raises(DataError, match=r"1 \(yes\), 0 \(no\) or NaN"):
        prior_matrix(Context(("a", "b"), ["x", "y", "z"], class_truth=np.full((2, 3), 0.5)), 2, 3)


def test_prior_loss_by_hand():
    W = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    P = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    by_hand = (abs(math.tanh(0.5) - 1) + abs(math.tanh(-1.0) + 1) + abs(math.tanh(2.0)) + 1) / 4
    assert prior_loss(W, P).item() == pytest.approx(by_hand, rel=1e-6)


def sign_agreement(model, truth):
    P = np.where(np.isnan(truth), 0, 2 * truth - 1)
    W = model.class_weights_[:, model.kept_]
    Pk = P[:, model.kept_]
    known = Pk != 0
    return float((np.sign(W[known]) == Pk[known]).mean())


def knowledge_problem(seed, n=40, k=8, d=16):
    """Classes b and c look the same (one image distribution); the prior knows concept j holds
    for one of them and not the other (class a: unknown). The images cannot tell the head which
    sign to give those weights; the prior can."""
    fixed, rng = np.random.default_rng(5), np.random.default_rng(seed)
    s = fixed.random(k) < 0.5
    truth = np.stack([np.full(k, np.nan), s, ~s]).astype(np.float32)
    means = np.stack([fixed.normal(size=d), np.zeros(d), np.zeros(d)]) + 2.0 * np.eye(d)[0]
    y = np.repeat(np.arange(M), n)
    x = (means[y] + rng.normal(size=(len(y), d))).astype(np.float32)
    ctx = Context(tuple("abc"), [f"c{j}" for j in range(k)], np.eye(k, d, dtype=np.float32),
                  backbone_id="toy", class_truth=truth)
    return FeatureBundle([str(i) for i in range(len(y))], y, tuple("abc"), x, None, "toy"), ctx


def test_the_prior_makes_the_weights_follow_it():
    agree = {True: [], False: []}
    for seed in range(4):
        train, ctx = knowledge_problem(seed)
        for add_prior in (True, False):
            model = get_method("knobo", add_prior=add_prior, n_concepts=None, **FAST).fit(train, ctx)
            agree[add_prior].append(sign_agreement(model, ctx.class_truth))
    with_prior, without = np.mean(agree[True]), np.mean(agree[False])
    assert with_prior >= 0.95 and without <= 0.85 and with_prior - without >= 0.15, agree


def test_positive_keeps_weights_non_negative():
    train, val, test, ctx = make_problem()
    model = get_method("knobo", positive=True, **FAST).fit(train, ctx, val)
    assert (model.class_weights_ >= 0).all() and (model.class_weights_ > 0).any()
    assert (model.predict(test) == test.labels).mean() > 0.6


def brute_force_top(acc, n):
    """The size-n subset of grounded concepts (acc >= 0) with the highest total accuracy, the
    lexicographically first on ties (Python's stable sort keeps earlier concepts)."""
    grounded = [j for j in range(len(acc)) if acc[j] >= 0]
    n = min(n, len(grounded))
    best = max(itertools.combinations(grounded, n), key=lambda s: (sum(acc[j] for j in s),
                                                                  [-j for j in s]))
    return sorted(best, key=lambda j: (-acc[j], j))


@pytest.mark.parametrize("acc, n", [
    ([0.5, 0.9, -1, 0.9, 0.7, 0.9, 0.6], 3), ([0.8, 0.8, 0.8, 0.8], 2), ([0.6, -1, 0.95, 0.7], 10),
    ([0.7, 0.9, 0.7, 0.5, 0.7, 0.9], 4)])
def test_selection_is_the_top_n_by_validation_accuracy(acc, n):
    model = KnoBo(n_concepts=n)
    model.concepts_ = [f"c{j}" for j in range(len(acc))]
    model.concept_val_accuracy_ = np.array(acc)
    assert model._select().tolist() == brute_force_top(acc, n)


def test_fitted_selection_keeps_the_best_grounded_concepts():
    train, val, _, ctx = make_problem(n_train=20)
    model = get_method("knobo", n_concepts=3, **FAST).fit(train, ctx, val)
    assert model.kept_.tolist() == brute_force_top(model.concept_val_accuracy_.tolist(), 3)
    dropped = np.setdiff1d(np.arange(K), model.kept_)
    assert not model.class_weights_[:, dropped].any() and not model.transform(val)[:, dropped].any()
    assert model.nec_ == 3


def test_a_concept_without_enough_positives_is_skipped_with_its_reason(caplog):
    truth = np.array([[1, 0, 1, 1, 0, 0, 1, 0],
                      [0, 1, 0, 1, 1, 1, 0, 0],
                      [0, 1, 0, 0, 1, 0, 1, 1]], np.float32)
    truth[:, 5] = 0  # no class has concept 5: no positives
    train, val, test, ctx = make_problem(truth=truth)
    with caplog.at_level(logging.WARNING, logger="conceptlens"):
        model = get_method("knobo", **FAST).fit(train, ctx, val)
    assert list(model.skipped_) == ["concept 5"]
    assert model.skipped_["concept 5"].startswith("0 positive and 120 negative images give 0 validation")
    assert "1 of 8 concepts have no grounding function" in caplog.text
    assert model.concept_val_accuracy_[5] == -1 and 5 not in model.kept_
    assert not model.class_weights_[:, 5].any() and not model.transform(test)[:, 5].any()


def test_no_grounded_concept_is_a_clear_error():
    train, val, _, ctx = make_problem(n_train=20)  # 20-40 images a side: < 100, the reference's need
    with pytest.raises(DataError, match=r"no concept could be grounded.*min_val=10.*lower min_val"):
        get_method("knobo", epochs=1).fit(train, ctx, val)


def test_best_validation_epoch_is_kept_and_final_epoch_without_val():
    train, val, _, ctx = make_problem(n_train=20)
    model = get_method("knobo", **FAST).fit(train, ctx, val)
    assert len(model.val_history_) == FAST["epochs"] and model.used_validation_
    assert model.best_epoch_ == 1 + int(np.argmax(model.val_history_))  # first of the best
    assert (model.predict(val) == val.labels).mean() == pytest.approx(max(model.val_history_))
    alone = get_method("knobo", **FAST).fit(train, ctx, None)
    assert not alone.used_validation_ and alone.best_epoch_ == FAST["epochs"] and not alone.val_history_


def test_fit_is_deterministic_and_save_load_round_trips(tmp_path):
    train, val, test, ctx = make_problem()
    model = get_method("knobo", **FAST).fit(train, ctx, val)
    again = get_method("knobo", **FAST).fit(train, ctx, val)
    np.testing.assert_array_equal(model.class_weights_, again.class_weights_)
    loaded = Method.load(model.save(tmp_path / "knobo"))
    assert isinstance(loaded, KnoBo)
    np.testing.assert_array_equal(loaded.decision_function(test), model.decision_function(test))
    np.testing.assert_array_equal(loaded.transform(test), model.transform(test))
    for name in KnoBo._arrays:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.best_epoch_ == model.best_epoch_ and loaded.val_history_ == model.val_history_
    assert loaded.prior_source_ == "class_truth" and loaded.skipped_ == model.skipped_


@pytest.mark.parametrize("params, message", [
    ({"n_concepts": 0}, "n_concepts must be an integer >= 1 or None"),
    ({"add_prior": "True"}, "add_prior must be true or false"),
    ({"positive": 1}, "positive must be true or false"),
    ({"val_fraction": 1.5}, "val_fraction"), ({"lr": 0}, "lr"), ({"min_val": 0}, "min_val"),
])
def test_bad_parameters_are_config_errors_at_fit(params, message):
    train, val, _, ctx = make_problem(n_train=5)
    model = get_method("knobo", **params)
    with pytest.raises(ConfigError, match=message):
        model.fit(train, ctx, val)


# -- questions from annotations ----------------------------------------------------------

def test_attribute_questions_by_hand():
    cases = {"has laces": "Does it have laces?", "is worn on the feet": "Is it worn on the feet?",
             "reaches below the knees": "Does it reach below the knees?",
             "carries a bag": "Does it carry a bag?", "bill shape: curved (up or down)":
             "Is the bill shape curved (up or down)?", "Wearing_Hat".replace("_", " "):
             "Is it wearing Hat?", "stripes": "Does it have stripes?", "furry": "Is it furry?",
             "arched eyebrows": "Does it have arched eyebrows?", "can fly": "Can it fly?",
             "Is there lung opacity?": "Is there lung opacity?", "  has a sole. ": "Does it have a sole?"}
    assert {a: attribute_question(a) for a in cases} == cases


def test_questions_and_prior_from_class_annotations():
    ann = ConceptAnnotations("class", ("has laces", "is worn on the feet", "has sleeves"),
                             np.array([[1, 1, 0], [0, 0, 1], [np.nan, 1, 0]]),
                             classes=("sneaker", "shirt", "sandal"), provenance="hand")
    out = questions_from_annotations(ann, classes=("shirt", "sandal", "sneaker"))
    assert out.concepts == ("Does it have laces?", "Is it worn on the feet?", "Does it have sleeves?")
    assert out.classes == ("shirt", "sandal", "sneaker")
    np.testing.assert_array_equal(out.values, [[0, 0, 1], [np.nan, 1, 0], [1, 1, 0]])
    # the prior a KnoBo run reads from it: yes +1, no -1, unknown 0
    P, _ = prior_matrix(Context(out.classes, list(out.concepts), class_truth=out.values), 3, 3)
    np.testing.assert_array_equal(P, [[-1, -1, 1], [0, 1, -1], [1, 1, -1]])
    custom = questions_from_annotations(ann, overrides={"has sleeves": "Are there sleeves?"})
    assert custom.concepts[2] == "Are there sleeves?" and custom.classes == ann.classes


def test_questions_from_image_annotations_by_unanimity():
    ann = ConceptAnnotations("image", ("has laces", "has a sole"),
                             np.array([[1, 1], [1, 0], [0, 1], [0, np.nan]]), items=("p1", "p2", "p3", "p4"))
    out = questions_from_annotations(ann, classes=("boot", "bag"), ids=["p1", "p2", "p3", "p4"],
                                     labels=[0, 0, 1, 1])
    # boot: laces in both images (yes), sole in one of two (unknown); bag: no laces, sole in its one
    np.testing.assert_array_equal(out.values, [[1, np.nan], [0, 1]])
    with pytest.raises(DataError, match="per-image annotations need `classes`"):
        questions_from_annotations(ann)


def test_two_attributes_with_one_question_are_an_error():
    ann = ConceptAnnotations("class", ("has laces", "laces"), np.ones((1, 2)), classes=("boot",))
    with pytest.raises(DataError, match=r"'has laces' and 'laces' both become.*'Does it have laces\?'"):
        questions_from_annotations(ann)
    with pytest.raises(DataError, match="not annotated"):
        questions_from_annotations(ann, overrides={"has lace": "Is it laced?"})


def test_concepts_no_annotation_covers_fall_back_to_the_generated_for_prior():
    """A run that measures grounding fills class_truth from matched annotations; an unmatched
    concept (an all-unknown column) must still get the prior it would have without them."""
    import numpy as np

    from conceptlens.methods import Context
    from conceptlens.methods.knobo import prior_matrix

    nan = np.nan
    truth = np.array([[1, nan, 0], [0, nan, nan]])  # concept 1: covered by no annotation
    generated = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
    P, source = prior_matrix(Context(("a", "b"), class_truth=truth, class_prior=generated), 2, 3)
    np.testing.assert_array_equal(P, [[1, -1, -1], [-1, 1, 0]])  # column 1 from class_prior
    assert source == "class_truth+class_prior"
    P, source = prior_matrix(Context(("a", "b"), class_truth=truth), 2, 3)  # nothing to fall back on
    np.testing.assert_array_equal(P, [[1, 0, -1], [-1, 0, 0]])
    assert source == "class_truth"

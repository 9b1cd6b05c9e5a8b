"""Explanations, faithfulness, interventions, edits and test-time improvement."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.errors import ConfigError
from conceptlens.explain import contributions, deletion_curves, explain_image, top_images
from conceptlens.explain.contributions import as_text
from conceptlens.features import FeatureBundle
from conceptlens.intervene import (
    edit_model,
    evaluate_test_time_improvement,
    improve_at_test_time,
    intervene,
    intervention_curve,
)
from conceptlens.intervene.interventions import POLICIES, class_level_truth
from conceptlens.methods import METHODS, Method, get_method
from conceptlens.testing import FAST_PARAMS as FAST
from conceptlens.testing import M, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module")
def label_free(problem):
    train, val, _, ctx = problem
    return get_method("label_free", steps=200, lam=1e-3).fit(train, ctx, val)


@pytest.mark.parametrize("name", METHODS.names())
def test_contributions_sum_to_the_logit_for_every_method(name, problem):
    train, val, test, ctx = problem
    model = get_method(name, **FAST.get(name, {})).fit(train, ctx, val)
    logits = model.decision_function(test)
    for target in range(M):
        total = contributions(model, test, target).sum(1) + model.intercept()[target] \
            + np.broadcast_to(model.residual(test), logits.shape)[:, target]
        np.testing.assert_allclose(total, logits[:, target], rtol=1e-4, atol=1e-4)


def test_contributions_by_hand():
    """Two concepts, two classes, a plain linear head: every number checked by hand."""
    # a linear probe with an identity standardisation: its activations are the inputs
    model = get_method("linear_probe")
    model.classes_, model.concepts_ = ("a", "b"), ["red", "round"]
    model.input = "embedding"
    model.class_weights_ = np.array([[2.0, -1.0], [0.0, 3.0]], np.float32)
    model.intercept_ = np.zeros(2, np.float32)
    model.mean_, model.scale_ = np.zeros(2, np.float32), np.ones(2, np.float32)
    b = FeatureBundle(["x"], np.array([0]), ("a", "b"), np.array([[0.5, 0.25]], np.float32), None, "")
    # class a: 2 * 0.5 + (-1) * 0.25 = 0.75; class b: 0 + 3 * 0.25 = 0.75 -> tie, argmax a
    np.testing.assert_allclose(contributions(model, b, 0), [[1.0, -0.25]])
    np.testing.assert_allclose(contributions(model, b, 1), [[0.0, 0.75]])
    ex = explain_image(model, b, 0, target=0, top=1)
    assert ex["top"][0].concept == "red" and ex["top"][0].contribution == pytest.approx(1.0)
    assert ex["others"] == pytest.approx(-0.25) and ex["logit"] == pytest.approx(0.75)
    assert "+1.000  red  (activation 0.500 x weight 2.000)" in as_text(ex)


def test_top_images_for_a_concept(label_free, problem):
    train, *_ = problem
    best = top_images(label_free, train, 0, top=3)
    acts = label_free.transform(train)[:, 0]
    assert [a for _, a in best] == pytest.approx(sorted(acts)[-3:][::-1])


def test_deletion_removes_evidence_faster_than_random(label_free, problem):
    *_, test, _ = problem
    curves = deletion_curves(label_free, test, steps=5)
    assert curves["top"][0] == pytest.approx(curves["random"][0])  # same start
    assert curves["area_top"] < curves["area_random"]
    assert curves["top"][-1] < curves["top"][0]


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_with_true_concepts_helps(policy, problem):
    train, val, test, ctx = problem
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, val)
    truth = class_level_truth(model, test.labels, ctx.class_prior)
    curve = intervention_curve(model, test, truth, steps=6, policy=policy, reference=train)
    assert len(curve) == 7 and curve[0] == pytest.approx((model.predict(test) == test.labels).mean())
    assert curve[-1] >= curve[0] and curve[-1] > 0.9


def test_intervene_on_named_concepts_and_strategies(problem):
    train, val, test, ctx = problem
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, val)
    A0 = model.transform(test)
    A, logits = intervene(model, test, concepts=["concept 0"], strategy="value", value=7.0)
    assert (A[:, 0] == 7.0).all() and np.allclose(A[:, 1:], A0[:, 1:], atol=1e-6)
    np.testing.assert_allclose(logits, model.head(A, test), rtol=1e-6)
    A, _ = intervene(model, test, concepts=["concept 1"], strategy="mean")
    np.testing.assert_allclose(A[:, 1], A0[:, 1].mean(), rtol=1e-5)
    A, _ = intervene(model, test, concepts=["concept 2"], strategy="clamp", reference=train)
    lo, hi = np.percentile(model.transform(train)[:, 2], [5, 95])
    np.testing.assert_allclose(A[:, 2], np.clip(A0[:, 2], lo, hi), rtol=1e-5)
    assert (A0[:, 2] > hi).any() or (A0[:, 2] < lo).any()  # the clamp did something
    with pytest.raises(ConfigError, match="Unknown concept"):
        intervene(model, test, concepts=["nope"])
    with pytest.raises(ConfigError, match="needs concept truth"):
        intervene(model, test, n=2, strategy="truth")


def test_edit_removes_and_reweights_and_round_trips(label_free, problem, tmp_path):
    *_, test, _ = problem
    concept = label_free.concepts_[0]
    before = label_free.class_weights_.copy()
    edited = edit_model(label_free, remove=[concept], classes=["a"], note="spurious")
    edited = edit_model(edited, reweight={label_free.concepts_[1]: 2.0})
    np.testing.assert_array_equal(label_free.class_weights_, before)  # the original stays
    assert edited.class_weights_[0, 0] == 0 and edited.class_weights_[1, 0] == before[1, 0]
    np.testing.assert_allclose(edited.class_weights_[:, 1], 2 * before[:, 1])
    assert [e["factor"] for e in edited.edit_log_] == [0.0, 2.0]
    assert edited.edit_log_[0]["note"] == "spurious" and edited.edit_log_[0]["classes"] == ["a"]
    again = Method.load(edited.save(tmp_path / "edited"))
    assert again.edit_log_ == edited.edit_log_
    np.testing.assert_array_equal(again.decision_function(test), edited.decision_function(test))
    with pytest.raises(ConfigError, match="Unknown class"):
        edit_model(label_free, remove=[concept], classes=["zebra"])


def test_test_time_improvement_on_a_constructed_domain_shift():
    """In the new domain concept 0 (evidence for class a) fires for every class, and the
    concepts of class b fire at a third of their strength."""
    train, val, test, ctx = make_problem(n_per_class=40, seed=3)
    model = get_method("posthoc", lam=2e-3).fit(train, ctx, val)

    def shift(b):
        emb = b.embedding.copy()
        C = ctx.concept_embedding
        emb += 0.8 * C[0]  # concept 0 everywhere
        weak = b.labels == 1
        emb[weak] -= (2 / 3) * (emb[weak] @ C[3:6].T) @ C[3:6]
        return FeatureBundle(b.ids, b.labels, b.classes, emb.astype(np.float32), None, "")

    few = shift(make_problem(n_per_class=4, seed=9)[0])  # 4 labelled images per class
    held = shift(make_problem(n_per_class=25, seed=11)[0])  # the held-out part of the domain
    before = (model.predict(held) == held.labels).mean()
    improved = improve_at_test_time(model, train, few)
    after = (improved.predict(held) == held.labels).mean()
    assert after > before + 0.05
    notes = {e["note"] for e in improved.edit_log_}
    assert any("wrong classes" in n for n in notes)
    assert (model.predict(test) == test.labels).mean() > 0.8  # the source model is unchanged
    _, report = evaluate_test_time_improvement(model, train, few, held)
    assert report["before"] == pytest.approx(before) and report["after"] == pytest.approx(after)
    assert report["labelled_images"] == 16 and report["changes"] == len(improved.edit_log_)

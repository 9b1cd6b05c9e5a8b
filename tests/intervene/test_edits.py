"""Edits and interventions refuse non-finite values, and an edit never overwrites its source."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.errors import ConfigError
from conceptlens.features import FeatureBundle
from conceptlens.intervene import edit_model, intervene, intervention_curve
from conceptlens.intervene.edits import check_edit_destination, save_edited
from conceptlens.methods import Context, Method, get_method


@pytest.fixture
def model():
    """A linear probe on the embedding with identity standardisation and weights set by hand:
    activations are the embedding itself."""
    ctx = Context(("a", "b"), ["red", "round", "tall"], np.eye(3, dtype=np.float32),
                  np.array([[1, 1, 0], [0, 0, 1]], np.float32), np.eye(2, 3, dtype=np.float32))
    m = get_method("linear_probe", on="embedding").fit(bundle(), ctx)
    m.concepts_ = ["red", "round", "tall"]
    m.class_weights_ = np.array([[2.0, -1.0, 0.0], [0.0, 3.0, 1.0]], np.float32)
    m.intercept_ = np.array([0.5, -0.5], np.float32)
    m.mean_, m.scale_ = np.zeros(3, np.float32), np.ones(3, np.float32)
    return m


def bundle():
    emb = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 2.0], [0.3, 0.1, 0.2], [0.9, 0.0, 0.4]], np.float32)
    return FeatureBundle(list("0123"), np.array([0, 1, 0, 1]), ("a", "b"), emb, None, "toy")


@pytest.mark.parametrize("factor", [float("nan"), float("inf"), -float("inf"), "2", None, True])
def test_reweight_rejects_non_finite_and_non_numbers(model, factor):
    before = model.class_weights_.copy()
    with pytest.raises(ConfigError, match="reweight factor for concept 'red' must be a finite number"):
        edit_model(model, reweight={"red": factor})
    np.testing.assert_array_equal(model.class_weights_, before)


def test_overflowing_factor_is_refused(model):
    with pytest.raises(ConfigError, match="overflow"):
        edit_model(model, reweight={"red": 1e300})


def test_unknown_concept_is_refused_before_any_change(model):
    with pytest.raises(ConfigError, match=r"Unknown concept\(s\) \['blue'\]"):
        edit_model(model, remove=["red"], reweight={"blue": 2.0})


def test_edit_by_hand(model):
    edited = edit_model(model, remove=["round"], reweight={"tall": 0.5}, classes=["b"], note="n")
    np.testing.assert_array_equal(edited.class_weights_, [[2.0, -1.0, 0.0], [0.0, 0.0, 0.5]])
    np.testing.assert_array_equal(model.class_weights_, [[2.0, -1.0, 0.0], [0.0, 3.0, 1.0]])
    assert [(e["concept"], e["factor"], e["classes"]) for e in edited.edit_log_] == [
        ("round", 0.0, ["b"]), ("tall", 0.5, ["b"])]
    # logits by hand for image 0 (activations 1, .5, 0): a = 2 - .5 + .5, b = 0 + 0 + 0 - .5
    np.testing.assert_allclose(edited.decision_function(bundle())[0], [2.0, -0.5])


def test_an_edit_never_overwrites_its_source(model, tmp_path):
    src = model.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    loaded = Method.load(src)
    edited = edit_model(loaded, reweight={"red": 2.0})
    for out in (src, tmp_path / "model" / ".." / "model", tmp_path / "model" / "."):
        with pytest.raises(ConfigError, match="is the folder of the model being edited"):
            edited.save(out)
        with pytest.raises(ConfigError, match="never overwrites its source"):
            save_edited(edited, out)
    twice = edit_model(edited, remove=["tall"])  # an edit of an edit: still the same source
    with pytest.raises(ConfigError, match="never overwrites its source"):
        twice.save(src)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    out = save_edited(edited, tmp_path / "edited")
    assert Method.load(out).edit_log_ == edited.edit_log_
    # the edited copy is its own model now: re-saving it in place is allowed
    Method.load(out).save(out)
    loaded.save(src)  # and so is re-saving an unedited model where it came from


def test_check_edit_destination_with_a_symlink(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "m")
    with pytest.raises(ConfigError, match="--out .*link"):
        check_edit_destination(tmp_path / "link", tmp_path / "m")
    check_edit_destination(tmp_path / "other", tmp_path / "m")
    check_edit_destination(tmp_path / "m", None)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", None])
def test_intervention_value_must_be_finite(model, value):
    with pytest.raises(ConfigError, match="value must be a finite number"):
        intervene(model, bundle(), concepts=["red"], strategy="value", value=value)


def test_intervention_arguments_are_checked(model):
    b = bundle()
    with pytest.raises(ConfigError, match="Unknown strategy 'truthy'"):
        intervene(model, b, n=1, strategy="truthy")
    with pytest.raises(ConfigError, match="Unknown policy 'best'"):
        intervene(model, b, concepts=["red"], policy="best", strategy="mean")
    with pytest.raises(ConfigError, match="n .* must be an integer >= 0; got -1"):
        intervene(model, b, n=-1, strategy="mean")
    with pytest.raises(ConfigError, match=r"truth has shape \(4, 2\); expected \(4, 3\)"):
        intervene(model, b, n=1, truth=np.zeros((4, 2), bool))
    with pytest.raises(ConfigError, match="truth must be 0/1 or booleans"):
        intervene(model, b, n=1, truth=np.full((4, 3), np.nan))
    ref = FeatureBundle(["r"], np.array([0]), ("a", "b"), np.array([[np.nan, 0, 0]], np.float32),
                        None, "toy")
    with pytest.raises(ConfigError, match="reference activations has 1 non-finite"):
        intervene(model, b, n=1, strategy="mean", reference=ref)
    with pytest.raises(ConfigError, match="steps must be an integer >= 0"):
        intervention_curve(model, b, np.zeros((4, 3), bool), steps=-2)


def test_intervention_by_hand(model):
    b = bundle()
    A, logits = intervene(model, b, concepts=["round"], strategy="value", value=2.0)
    expected = b.embedding.astype(np.float64).copy()
    expected[:, 1] = 2.0
    np.testing.assert_array_equal(A, expected)
    np.testing.assert_allclose(logits, expected @ model.class_weights_.T + model.intercept_, rtol=1e-6)
    assert np.isfinite(logits).all()


def test_a_long_list_of_changes_copies_the_model_once_and_applies_them_in_order(model, monkeypatch):
    import copy
    import types

    from conceptlens.intervene import apply_edits, edits

    copies = []
    monkeypatch.setattr(edits, "copy", types.SimpleNamespace(
        deepcopy=lambda obj: copies.append(1) or copy.deepcopy(obj)))
    # 5,000 changes: 'round' doubled for class b then halved for all, repeatedly; 'red' negated
    changes = [[{"concept": "round", "factor": 2, "classes": ["b"]}, {"concept": "round", "factor": 0.5},
                {"concept": "red", "factor": -1, "note": "flip"}][i % 3] for i in range(5000)]
    edited = apply_edits(model, changes)
    assert len(copies) == 1  # one copy for the whole list (it was one per change: quadratic)
    W = model.class_weights_.astype(np.float64).copy()
    for ch in changes:  # the same changes, one at a time, by hand
        W[[1] if ch.get("classes") else [0, 1], ["red", "round", "tall"].index(ch["concept"])] *= ch["factor"]
    np.testing.assert_array_equal(edited.class_weights_, W.astype(np.float32))
    assert len(edited.edit_log_) == 5000 and edited.edit_log_[2]["note"] == "flip"
    assert edited.edit_log_[3]["before"] == [3.0] and edited.edit_log_[3]["classes"] == ["b"]
    # and exactly what applying them one edit at a time gives
    one_by_one = model
    for ch in changes[:7]:
        one_by_one = edit_model(one_by_one, reweight={ch["concept"]: ch["factor"]}, classes=ch.get("classes"),
                                note=ch.get("note", ""))
    short = apply_edits(model, changes[:7])
    np.testing.assert_array_equal(short.class_weights_, one_by_one.class_weights_)
    strip = [{k: v for k, v in e.items() if k != "time"} for e in short.edit_log_]
    assert strip == [{k: v for k, v in e.items() if k != "time"} for e in one_by_one.edit_log_]


def test_an_edit_holds_at_most_max_changes(model):
    from conceptlens.intervene import MAX_CHANGES, apply_edits

    before = model.class_weights_.copy()
    with pytest.raises(ConfigError, match=r"10,001 changes in one edit; at most 10,000 are accepted"):
        apply_edits(model, [{"concept": "red", "factor": 1.0}] * (MAX_CHANGES + 1))
    np.testing.assert_array_equal(model.class_weights_, before)
    assert len(apply_edits(model, [{"concept": "red", "factor": 1.0}] * MAX_CHANGES).edit_log_) == MAX_CHANGES

"""Concept-labelled methods (cbm, ecbm) in TOML runs: annotations reach the context (class level
broadcast, per image by id over every split), concept accuracy and the intervention curve are
recorded in results.json and results.md, and equal a direct computation on the saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conceptlens.errors import ConfigError
from conceptlens.report import run_report
from conceptlens.runs import run_experiment
from conceptlens.runs.config import GroundingConfig
from conceptlens.testing import CONCEPT_LABELS as LABELS
from conceptlens.testing import attribute_csv
from conceptlens.testing import spy_run as _spy
from conceptlens.testing import tiny_run_setup as tiny_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _class_csv(tmp_path):
    return attribute_csv(tmp_path, LABELS)


def _by_hand(pred: np.ndarray, truth: np.ndarray) -> tuple[list, float, float]:
    """Per-concept accuracy over known labels, their mean, whole-vector accuracy (all known)."""
    per = []
    for j in range(truth.shape[1]):
        known = ~np.isnan(truth[:, j])
        per.append(None if not known.any() else float(np.mean(pred[known, j] == truth[known, j])))
    full = ~np.isnan(truth).any(1)
    whole = float(np.mean([(pred[i] == truth[i]).all() for i in np.flatnonzero(full)]))
    return per, float(np.mean([p for p in per if p is not None])), whole


def test_class_level_annotations_train_cbm_and_its_concept_numbers_are_recorded(tmp_path, monkeypatch):
    from conceptlens.methods import Method

    make = tiny_setup(tmp_path, monkeypatch)
    path = _class_csv(tmp_path)
    seen = _spy(monkeypatch)
    cfg = make({"cbm": {"mode": "joint", "concept_weight": 1.0, "max_iter": 60}, "zero_shot": {}}, nec=0,
               grounding=GroundingConfig(str(path), 2, 0.8, "none"))
    cfg.concepts.per_class, cfg.concepts.filter = 4, False  # every concept word: 'whiskers' has unknowns
    out = run_experiment(cfg, report=run_report)
    folder = tmp_path / "out"
    ctx, test = seen["context"], seen["test"]
    assert ctx.concept_truth_by_id is None  # class level: cbm broadcasts class_truth by label

    # the truth, by hand from the CSV's table: each concept's matched attribute (case-folded)
    rows = {k.casefold(): [np.nan if v is None else v for v in row] for k, row in LABELS.items()}
    class_truth = np.array([rows.get(c, [np.nan] * 3) for c in ctx.concepts]).T
    truth = class_truth[np.asarray(test.labels)].astype(float)
    assert np.isnan(truth).any() and (~np.isnan(truth)).any()  # unknowns and knowns both present

    saved = Method.load(folder / "models" / "cbm")
    pred = saved.predict_concepts(test)
    per, mean, whole = _by_hand(pred, truth)
    results = json.loads((folder / "results.json").read_text())
    rec = results["concept_labels"]["methods"]["cbm"]
    assert rec["per_concept"] == pytest.approx(dict(zip(ctx.concepts, per, strict=True)))
    assert rec["mean"] == pytest.approx(mean) and rec["whole_vector"] == pytest.approx(whole)
    assert results["results"]["cbm"]["concept_accuracy"] == pytest.approx(mean)
    assert "zero_shot" not in results["concept_labels"]["methods"]
    assert "concept_accuracy" not in results["results"]["zero_shot"]

    # the curve: 0 corrections is the model itself; one point per concept
    curve = rec["intervention"]
    assert curve["steps"] == len(ctx.concepts) and len(curve["accuracy"]) == curve["steps"] + 1
    assert curve["accuracy"][0] == pytest.approx(results["results"]["cbm"]["top1"])
    assert results["results"]["cbm"]["intervention_gain"] == pytest.approx(
        curve["accuracy"][-1] - curve["accuracy"][0])

    md = (folder / "results.md").read_text()
    assert "Concept labels (class level)" in md and out["table"] in md
    below = md[md.index("Concept labels (class level)"):].splitlines()
    line = next(ln for ln in below if ln.startswith("| cbm |"))
    assert f"| {100 * mean:.1f} | {100 * whole:.1f} (" in line
    assert line.rstrip(" |").endswith(f"{100 * (curve['accuracy'][-1] - curve['accuracy'][0]):+.1f}")


def test_per_image_annotations_reach_every_split_by_id(tmp_path, monkeypatch):
    """Per-image annotations (as the composite dataset's): concept_truth_by_id holds every
    annotated image, train, val and test, each concept from its matched attribute's column (NaN
    where no attribute matches), and the recorded concept accuracy is against those labels."""
    from conceptlens.annotations import ConceptAnnotations
    from conceptlens.methods import Method

    make = tiny_setup(tmp_path, monkeypatch)
    ids = [f"{c}/{i}.png" for c in ("cat", "dog", "fox") for i in range(12)]
    attrs = ("fur", "Tail", "paws", "snout", "stripes", "spots", "claws", "whiskers")
    rng = np.random.default_rng(3)
    values = (rng.random((len(ids), len(attrs))) < 0.5).astype(float)
    values[rng.random(values.shape) < 0.1] = np.nan
    ConceptAnnotations("image", attrs, values, items=tuple(ids)).to_csv(tmp_path / "per_image.csv")
    seen = _spy(monkeypatch)
    cfg = make({"cbm": {"mode": "independent", "max_iter": 60}}, nec=0,
               grounding=GroundingConfig(str(tmp_path / "per_image.csv"), 2, 0.8, "none"))
    run_experiment(cfg, report=run_report)
    ctx = seen["context"]
    assert set(ctx.concept_truth_by_id) == set(ids)  # every image, whatever its split
    col = {a.casefold(): j for j, a in enumerate(attrs)}
    for i, item in enumerate(ids):
        expected = [values[i, col[c]] if c in col else np.nan for c in ctx.concepts]
        np.testing.assert_array_equal(ctx.concept_truth_by_id[item], expected)
    assert any(c not in col for c in ctx.concepts) or len(ctx.concepts) > 1

    test = seen["test"]
    truth = np.array([[values[ids.index(t), col[c]] if c in col else np.nan for c in ctx.concepts]
                      for t in test.ids])
    per, mean, _ = _by_hand(Method.load(tmp_path / "out" / "models" / "cbm").predict_concepts(test), truth)
    rec = json.loads((tmp_path / "out" / "results.json").read_text())["concept_labels"]
    assert rec["level"] == "image"
    assert rec["methods"]["cbm"]["per_concept"] == pytest.approx(dict(zip(ctx.concepts, per, strict=True)))
    assert rec["methods"]["cbm"]["mean"] == pytest.approx(mean)


def test_a_concept_labelled_method_without_annotations_fails_before_encoding(tmp_path, monkeypatch):
    import conceptlens.runs.experiment as experiment

    make = tiny_setup(tmp_path, monkeypatch)

    def never(*a, **k):
        raise AssertionError("encoded images before refusing the config")

    monkeypatch.setattr(experiment, "encode_dataset", never)
    cfg = make({"cbm": {}, "zero_shot": {}}, grounding=GroundingConfig("none", 2, 0.8, "none"))
    with pytest.raises(ConfigError, match=r"cbm train\(s\) on concept labels.*\[grounding\] annotations"):
        run_experiment(cfg, report=run_report)


# -- the curve itself --------------------------------------------------------------------------

def _fitted_cbm(seed=0):
    from conceptlens.methods import Context, get_method
    from conceptlens.testing import toy_bundles as _bundles

    train, test = _bundles(seed=seed, n=90)
    concepts = ["c0", "c1", "c2", "c3"]
    class_truth = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], float)
    ctx = Context(("a", "b", "c"), concepts, np.eye(4, 6), class_truth, class_truth=class_truth)
    model = get_method("cbm", mode="independent", max_iter=80).fit(train, ctx)
    return model, train, test, class_truth


@pytest.mark.parametrize("policy", ["uncertain", "random", "contribution"])
def test_curve_equals_the_intervention_api_when_every_label_is_known(policy):
    from conceptlens.intervene import intervention_curve, labelled_intervention_curve

    model, train, test, class_truth = _fitted_cbm()
    truth = class_truth[np.asarray(test.labels)]
    ours = labelled_intervention_curve(model, test, truth, policy=policy, reference=train)
    api = intervention_curve(model, test, truth.astype(bool), steps=4, policy=policy, strategy="truth",
                             reference=train)
    assert ours["accuracy"] == pytest.approx(api)
    assert api[-1] > api[0]  # the check compares curves that move


def test_curve_never_corrects_an_unknown_label():
    """Brute force through the public API, image by image: at step n an image gets its first n
    KNOWN concepts in the policy's order (intervene(concepts=...)), unknown ones never."""
    from conceptlens.intervene import intervene, labelled_intervention_curve
    from conceptlens.intervene.interventions import Reference, rank_concepts

    model, train, test, class_truth = _fitted_cbm(seed=1)
    truth = class_truth[np.asarray(test.labels)]
    rng = np.random.default_rng(0)
    truth[rng.random(truth.shape) < 0.4] = np.nan
    truth[0] = np.nan  # an image with no known label keeps its prediction throughout
    ours = labelled_intervention_curve(model, test, truth, reference=train)
    order = rank_concepts("uncertain", model, model.transform(test), test, Reference(model.transform(train)))
    labels = np.asarray(test.labels)
    for n in range(5):
        right = []
        for i in range(len(test)):
            chosen = [model.concepts_[j] for j in order[i] if not np.isnan(truth[i, j])][:n]
            one = test.rows([i])
            _, logits = intervene(model, one, concepts=chosen, strategy="truth",
                                  truth=np.nan_to_num(truth[[i]]).astype(int), reference=train)
            right.append(logits.argmax(1)[0] == labels[i])
        assert ours["accuracy"][n] == pytest.approx(np.mean(right)), n
    assert ours["known_per_image"] == pytest.approx((~np.isnan(truth)).sum(1).mean())


def test_curve_errors_say_what_is_wrong():
    from conceptlens.errors import DataError
    from conceptlens.intervene import labelled_intervention_curve

    model, _, test, class_truth = _fitted_cbm()
    truth = class_truth[np.asarray(test.labels)]
    with pytest.raises(DataError, match=r"truth has shape \(45, 3\); expected \(45, 4\)"):
        labelled_intervention_curve(model, test, truth[:, :3])
    with pytest.raises(ConfigError, match="Unknown policy 'best'"):
        labelled_intervention_curve(model, test, truth, policy="best")
    with pytest.raises(ConfigError, match="steps must be an integer >= 0; got -1"):
        labelled_intervention_curve(model, test, truth, steps=-1)


def test_ecbm_curve_goes_through_its_own_intervention():
    """ECBM's curve: at step n each image's first n known concepts (policy order) are held at
    their true labels by ecbm.intervene_concepts and the rest re-inferred; checked against that
    call with the mask built by hand."""
    from conceptlens.intervene import labelled_intervention_curve
    from conceptlens.intervene.interventions import Reference, rank_concepts
    from conceptlens.methods import Context, get_method
    from conceptlens.testing import toy_bundles as _bundles

    train, test = _bundles(seed=2, n=60)
    class_truth = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0]], float)
    ctx = Context(("a", "b", "c"), ["c0", "c1", "c2"], np.eye(3, 6), class_truth, class_truth=class_truth)
    model = get_method("ecbm", hidden=8, epochs=5, infer_steps=5).fit(train, ctx)
    truth = class_truth[np.asarray(test.labels)]
    truth[::4, 1] = np.nan
    ours = labelled_intervention_curve(model, test, truth, reference=train)
    A = model.transform(test)
    order = rank_concepts("uncertain", model, A, test, Reference(model.transform(train)))
    labels = np.asarray(test.labels)
    assert ours["accuracy"][0] == pytest.approx(np.mean(model.predict(test) == labels))
    for n in range(1, 4):
        mask = np.zeros(truth.shape, bool)
        for i in range(len(test)):
            mask[i, [j for j in order[i] if not np.isnan(truth[i, j])][:n]] = True
        _, _, Y = model.intervene_concepts(test, np.nan_to_num(truth).astype(int), mask=mask)
        assert ours["accuracy"][n] == pytest.approx(np.mean(Y.argmax(1) == labels)), n

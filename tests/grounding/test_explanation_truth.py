"""Honest measures: precision@k with its coverage, a person's judgements, the truth floor and the
report's choice, by hand-computed cases."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conceptlens.errors import DataError
from conceptlens.grounding.judgements import judged_precision, judgement_sheet, read_judgements, top_pairs
from conceptlens.grounding.measures import explanation_precision
from conceptlens.grounding.truth import TRUTH_FLOOR, explanation_evidence, truth_check
from conceptlens.methods import Context
from conceptlens.report import run_report
from conceptlens.runs.experiment import choose_report_method
from conceptlens.runs.tables import precision_cell, results_table

NAN = np.nan


def fake_model(W, concepts=("laces", "sole", "sleeve", "collar"), classes=("Sneaker", "Shirt"), name="m"):
    """What the measures read of a fitted model: weights, concepts, classes, activations."""
    W = np.asarray(W, dtype=np.float64)
    return SimpleNamespace(class_weights_=W, concepts_=list(concepts), classes_=tuple(classes), name=name,
                           transform=lambda bundle: np.asarray(bundle.activations))


def test_precision_coverage_by_hand():
    W = np.array([[3, 2, 1, 0], [0, 0, 2, 1]], float)
    truth = np.array([[1, NAN, NAN, NAN], [NAN, NAN, 1, 0]])
    p = explanation_precision(W, truth, k=2)
    # class 0's top-2: laces (1), sole (unknown); class 1's: sleeve (1), collar (0): 3 of 4 pairs known
    assert p["coverage"]["positive"] == pytest.approx(3 / 4)
    assert p["n_pairs"]["positive"] == 4 and p["n_known"]["positive"] == 3
    assert p["positive"] == pytest.approx((1.0 + 0.5) / 2)


def test_a_precision_on_too_few_pairs_is_not_measurable():
    from conceptlens.annotations import ConceptAnnotations
    from conceptlens.grounding.evaluate import grounding_measures

    ann = ConceptAnnotations("class", ("has laces",), np.array([[1.0], [0.0]]), ("Sneaker", "Shirt"), provenance="hand")
    W = np.array([[3, 2, 1, 0], [0, 1, 2, 3]], float)
    acts = np.random.default_rng(0).normal(size=(6, 4))
    g = grounding_measures(acts, ["laces", "sole", "sleeve", "collar"], ("Sneaker", "Shirt"), [0, 0, 0, 1, 1, 1],
                           ann, class_weights=W, k=3,
                           matches=[{"text": t, "match": "has laces" if t == "laces" else None, "how": None,
                                     "similarity": None, "nearest": None}
                                    for t in ["laces", "sole", "sleeve", "collar"]])
    # 1 of the 6 top-3 pairs (Sneaker: laces) is annotated: coverage 1/6, no headline figure
    assert g["precision_at_k_coverage"] == pytest.approx(1 / 6)
    assert g["precision_at_k"] is None and g["precision_at_k_on_covered"] == 1.0
    assert "not measurable" in g["precision_at_k_note"] and "1 of the 6" in g["precision_at_k_note"]
    assert precision_cell(None, 1 / 6, 1.0) == "n/m (1.00 on cov 0.17)"
    assert precision_cell(0.8, 0.6, 0.8) == "0.80 (cov 0.60)"
    assert precision_cell(None, 0.0, None) == "n/m (cov 0.00)"  # nothing covered is still said
    assert precision_cell(None) == "—"  # a method without concepts


# -- a person's judgements ------------------------------------------------------------------------

def test_judgement_sheet_round_trips_and_scores_by_hand(tmp_path):
    a = fake_model([[3, 2, 1, 0], [0, 0, 2, 1]], name="a")
    b = fake_model([[0, 2, 0, 3], [1, 0, 2, 0]], name="b")
    sheet = judgement_sheet({"a": a, "b": b}, k=2)
    lines = sheet.strip().split("\n")
    assert lines[0] == "class,concept,judgement,ranked_by"
    assert "Sneaker,sole,,a#2 b#2" in lines  # one row per pair, every model that ranks it
    marked = {"Sneaker,laces,,a#1": "Sneaker,laces,1,a#1", "Sneaker,sole,,a#2 b#2": "Sneaker,sole,1,a#2 b#2",
              "Sneaker,collar,,b#1": "Sneaker,collar,0,b#1", "Shirt,sleeve,,a#1 b#1": "Shirt,sleeve,yes,a#1 b#1"}
    path = tmp_path / "j.csv"
    path.write_text("\n".join(marked.get(line, line) for line in lines) + "\n")
    judged = read_judgements(path)
    assert judged == {("Sneaker", "laces"): 1, ("Sneaker", "sole"): 1, ("Sneaker", "collar"): 0,
                      ("Shirt", "sleeve"): 1}
    ra = judged_precision(a, judged, k=2)  # a's pairs: laces 1, sole 1, sleeve 1, collar (Shirt) blank
    assert ra["coverage"] == 0.75 and ra["precision"] == 1.0
    rb = judged_precision(b, judged, k=2)  # b's: collar 0, sole 1, sleeve 1, laces (Shirt) blank
    assert rb["precision"] == pytest.approx(2 / 3)
    assert judgement_sheet({"a": a}, 2, judged).count(",1,") == 3  # prefilled from the marks


def test_judgements_below_half_coverage_are_not_a_measure():
    a = fake_model([[3, 2, 1, 0], [0, 0, 2, 1]])
    r = judged_precision(a, {("Sneaker", "laces"): 0}, k=2)
    assert r["coverage"] == 0.25 and r["precision"] is None and r["precision_on_judged"] == 0.0


@pytest.mark.parametrize("text, message", [
    ("class,concept,judgement\nSneaker,laces,maybe\n", "line 2: judgement 'maybe' is not 1"),
    ("class,concept\nSneaker,laces\n", "lacks column"),
    ("class,concept,judgement\nSneaker,laces,1\nSneaker,laces,0\n", "line 3: 'laces' for class 'Sneaker' is judged both"),
    ('class,concept,judgement\nSneaker,"laces,1\n', "not a well-formed CSV file"),
    ("class,concept,judgement\nSneaker," + "x" * 200_000 + ",1\n", "not a well-formed CSV file"),
])
def test_bad_judgement_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "j.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_judgements(path)
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="not a UTF-8 CSV"):
        read_judgements(path)


def test_top_pairs_rank_only_positive_weights_in_the_bottleneck():
    m = fake_model([[3, -2, 1, 5], [0, 0, 2, 1]])
    m.bottleneck_ = np.array([0, 1, 2])  # concept 3 is not in the bottleneck
    assert top_pairs(m, 5) == [("Sneaker", 1, "laces", 3.0), ("Sneaker", 2, "sleeve", 1.0),
                               ("Shirt", 1, "sleeve", 2.0)]


# -- the truth floor --------------------------------------------------------------------------------

def evidence_case():
    """Sneaker's images light up laces and sole; the sources link laces/sole to Sneaker and
    sleeve/collar to Shirt, but collar's activation is noise."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    acts = rng.normal(size=(100, 4))
    acts[:, 0] += 3 * (y == 0)
    acts[:, 1] += 3 * (y == 0)
    acts[:, 2] += 3 * (y == 1)
    ctx = Context(("Sneaker", "Shirt"), ["laces", "sole", "sleeve", "collar"],
                  class_prior=np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.float32))
    return SimpleNamespace(activations=acts, labels=y), ctx


def test_explanation_evidence_by_hand():
    bundle, ctx = evidence_case()
    # Sneaker's top-2: laces, sleeve (not linked); Shirt's: collar (noise), sleeve
    m = fake_model([[3, 0, 2, 0], [0, 0, 1, 2]])
    ev = explanation_evidence(m, bundle, ctx, k=2, floor=0.6)
    assert ev["linked_at_k"] == 0.75 and ev["evidence_at_k"] == 0.5
    why = {(u["class"], u["concept"]): u["why"] for u in ev["unsupported"]}
    assert why[("Sneaker", "sleeve")] == "not linked to the class by its source"
    assert why[("Shirt", "collar")].startswith("evidence 0.")
    good = fake_model([[3, 2, 0, 0], [0, 0, 1, 0]])
    assert explanation_evidence(good, bundle, ctx, k=2)["evidence_at_k"] == 1.0


def test_truth_check_uses_annotations_only_with_enough_coverage():
    ev = {"evidence_at_k": 0.9}
    by_ann = truth_check({"precision_at_k": 0.5, "precision_at_k_coverage": 0.8}, ev)
    assert by_ann["by"] == "annotations" and not by_ann["passed"]
    thin = truth_check({"precision_at_k": None, "precision_at_k_coverage": 0.1}, ev)
    assert thin["by"] == "evidence" and thin["passed"] and "too few to judge by" in thin["why"]
    assert not truth_check(None, {"evidence_at_k": TRUTH_FLOOR - 0.01})["passed"]


def test_auto_report_takes_the_most_accurate_model_that_passes_the_floor():
    model = SimpleNamespace(needs_concepts=True, discovers_concepts=False)
    results = {"label_free": {"val_top1": 0.79, "truth": {"passed": False, "why": "0.40 of the pairs"}},
               "knobo": {"val_top1": 0.75, "truth": {"passed": True, "why": "1.00"}},
               "labo": {"val_top1": 0.60, "truth": {"passed": True, "why": "0.90"}}}
    models = dict.fromkeys(results, model)
    chosen = choose_report_method("auto", results, models)
    assert chosen["method"] == "knobo" and chosen["passed_truth_floor"]
    assert chosen["passed_over"] == {"label_free": "explanations fail the truth floor: 0.40 of the pairs"}
    for r in results.values():
        r["truth"] = {"passed": False, "why": "x", "value": 0.1}
    results["labo"]["truth"]["value"] = 0.5
    none = choose_report_method("auto", results, models)
    assert none["method"] == "labo" and none["passed_truth_floor"] is False


def test_results_table_shows_coverage_evidence_and_who_failed():
    row = {"top1": 0.8, "top5": 0.9, "mean_per_class": 0.8, "ece": 0.1, "nec": 5.0, "concept_auroc": 0.7,
           "concept_auroc_n": 3, "precision_at_k": None, "precision_at_k_coverage": 0.2,
           "precision_at_k_on_covered": 1.0, "evidence_at_k": 0.4,
           "truth": {"passed": False, "why": "0.40 of the top-k pairs linked and evidenced < 0.8"}}
    table = results_table({"label_free": row}, nec=0)
    assert "| n/m (1.00 on cov 0.20) | 0.40 ✗ |" in table
    assert "fails the truth floor: label_free (0.40 of the top-k pairs" in table


@pytest.mark.slow
def test_judge_and_evaluate_commands_end_to_end(tmp_path):
    """`concepts judge` writes the sheet of a saved model; `concepts evaluate --judgements` scores it."""
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import get_method

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    emb = rng.normal(size=(40, 4)).astype(np.float32) + np.eye(4, dtype=np.float32)[y * 2]
    bundle = FeatureBundle([str(i) for i in range(40)], y, ("Sneaker", "Shirt"), emb, None, "toy")
    ctx = Context(("Sneaker", "Shirt"), ["laces", "sole", "sleeve", "collar"], np.eye(4, dtype=np.float32),
                  np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.float32), np.eye(2, 4, dtype=np.float32), "toy")
    model = get_method("posthoc", lam=1e-3, class_consistent=True, evidence_floor=0.0).fit(bundle, ctx)
    folder = model.save(tmp_path / "model")
    run = [sys.executable, "-m", "conceptlens", "concepts"]
    out = subprocess.run([*run, "judge", str(folder), "--out", str(tmp_path / "j.csv"), "--k", "2"],
                         capture_output=True, text=True, check=True)
    assert "pairs from the top-2 of posthoc" in out.stdout
    lines = (tmp_path / "j.csv").read_text().strip().split("\n")
    marked = [lines[0]] + [",".join([*row.split(",")[:2], "0" if "collar" in row else "1", row.split(",")[3]])
                           for row in lines[1:]]
    (tmp_path / "j.csv").write_text("\n".join(marked) + "\n")
    pairs = top_pairs(model, 2)
    expected = np.mean([0.0 if c == "collar" else 1.0 for _, _, c, _ in pairs])
    out = subprocess.run([*run, "evaluate", str(folder), "--judgements", str(tmp_path / "j.csv"), "--k", "2"],
                         capture_output=True, text=True, check=True)
    assert f"posthoc: {expected:.2f} (coverage 1.00" in out.stdout
    again = subprocess.run([*run, "judge", str(folder), "--out", str(tmp_path / "j.csv")], capture_output=True,
                           text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_a_vocabulary_only_run_says_its_concepts_are_word_associations(tmp_path, monkeypatch):
    """Concepts that no source links to a class: the run, results.json and the report say they are
    word associations, no model passes the truth floor, and a slur in the list reaches nothing."""
    import json

    from conceptlens.runs import run_experiment
    from conceptlens.testing import tiny_run_setup as tiny_setup

    make = tiny_setup(tmp_path, monkeypatch, per_class=20)
    words = tmp_path / "words.txt"
    words.write_text("fur\ntail\nwhiskers\nnegro\npaws\nsnout\nstripes\n")
    cfg = make({"zero_shot": {}, "labo": {"epochs": 20}, "label_free": {}}, nec=0)
    cfg.concepts.file = str(words)
    cfg.data.val_per_class = 1
    out = run_experiment(cfg, report=run_report)
    warnings = out["concept_report"]["warnings"]
    assert any("word associations" in w and "not evidence" in w for w in warnings)
    assert out["report_method"]["passed_truth_floor"] is False
    assert all(out["results"][n]["truth"]["passed"] is False for n in ("labo", "label_free"))
    folder = tmp_path / "out"
    report = (folder / "report.html").read_text()
    assert "word associations" in report and "do not pass" in report
    assert json.loads((folder / "results.json").read_text())["concept_report"]["warnings"] == warnings
    for written in (report, (folder / "concepts.json").read_text()):
        assert "negro" not in written.casefold()

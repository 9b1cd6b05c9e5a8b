"""[report] method: which concept bottleneck report.html shows ("auto": the best on the
validation split, never the test split; without one, the first in config order), recorded with
the reason in results.json and in the report's title."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conceptlens.errors import ConfigError, DataError
from conceptlens.report import run_report
from conceptlens.runs import load_config, run_experiment
from conceptlens.runs.config import to_toml
from conceptlens.runs.experiment import NO_VALIDATION, choose_report_method
from conceptlens.testing import tiny_run_setup as tiny_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")
METHODS = {"zero_shot": {}, "linear_probe": {}, "labo": {"epochs": 20}, "label_free": {}}


# -- the config -------------------------------------------------------------------------

def test_report_table_defaults_parses_and_round_trips(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("[methods.zero_shot]\n\n[methods.labo]\n")
    assert load_config(f).report.method == "auto"
    f.write_text('[methods.zero_shot]\n\n[methods.labo]\n\n[report]\nmethod = "labo"\n')
    cfg = load_config(f)
    assert cfg.report.method == "labo"
    text = to_toml(cfg)
    assert '[report]\nmethod = "labo"\n' in text
    (tmp_path / "again.toml").write_text(text)
    assert load_config(tmp_path / "again.toml").to_dict() == cfg.to_dict()


@pytest.mark.parametrize("text, message", [
    ('[methods.zero_shot]\n\n[methods.labo]\n\n[report]\nmethod = "lab"\n',
     r"\[report\] method = 'lab' is not a method of this run; give one of 'zero_shot', 'labo'.*"
     r"Did you mean 'labo'\?"),
    ("[report]\nmethod = 3\n", r"\[report\] method must be a string; got 3"),
    ('[report]\nmetod = "auto"\n', r"Unknown key 'metod' in \[report\]\. Did you mean 'method'\?"),
    ('[reprot]\nmethod = "auto"\n', r"Unknown section \[reprot\].*Did you mean 'report'"),
])
def test_report_table_errors(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f)


# -- the choice, on hand-made results ----------------------------------------------------------

class _Fake:
    def __init__(self, needs=True, discovers=False):
        self.needs_concepts, self.discovers_concepts = needs, discovers


def test_choice_by_validation_never_test_first_in_config_on_ties():
    results = {"zero_shot": {"top1": 0.30, "val_top1": 0.99},  # best on val, but no concepts
               "labo": {"top1": 0.95, "val_top1": 0.60},       # best on test: must not matter
               "label_free": {"top1": 0.70, "val_top1": 0.80},
               "cbm": {"top1": 0.75, "val_top1": 0.80}}        # ties label_free: later in config
    models = {"zero_shot": _Fake(False), "labo": _Fake(), "label_free": _Fake(), "cbm": _Fake()}
    assert choose_report_method("auto", results, models) == {
        "method": "label_free", "chosen_by": "validation top-1 0.800"}
    # a method that finds its own concepts is a concept bottleneck too
    results["v2c"], models["v2c"] = {"top1": 0.5, "val_top1": 0.81}, _Fake(False, True)
    assert choose_report_method("auto", results, models)["method"] == "v2c"


def test_choice_without_validation_is_the_first_in_config(caplog):
    results = {"zero_shot": {"top1": 0.3}, "labo": {"top1": 0.4}, "label_free": {"top1": 0.9}}
    models = {"zero_shot": _Fake(False), "labo": _Fake(), "label_free": _Fake()}
    assert choose_report_method("auto", results, models) == {"method": "labo", "chosen_by": NO_VALIDATION}
    assert "No validation split: the report shows labo" in caplog.text
    assert choose_report_method("label_free", results, models) == {"method": "label_free",
                                                                    "chosen_by": "config"}
    assert choose_report_method("auto", {"zero_shot": {"top1": 0.3}}, {"zero_shot": _Fake(False)}) is None


def test_a_named_method_that_failed_or_has_no_concepts_is_refused():
    results = {"zero_shot": {"top1": 0.3}, "knobo": {"failed": "no concept could be grounded"}}
    models = {"zero_shot": _Fake(False)}
    with pytest.raises(ConfigError, match=r"\[report\] method = 'knobo' could not be fitted on these data "
                                          r"\(no concept could be grounded\)"):
        choose_report_method("knobo", results, models)
    with pytest.raises(ConfigError, match="'zero_shot' is not a concept bottleneck"):
        choose_report_method("zero_shot", results, models)


# -- in a run ----------------------------------------------------------------------------------

def _title(folder) -> str:
    return re.search("<h1>(.*?)</h1>", (folder / "report.html").read_text()).group(1)


def test_auto_picks_the_best_concept_bottleneck_on_the_validation_split(tmp_path, monkeypatch):
    """val_top1 is each model's accuracy on the run's validation images (recomputed here from the
    saved models and splits.json's ids), and the report shows the best concept bottleneck by it."""
    import conceptlens.runs.experiment as experiment
    from conceptlens.methods import Method

    make = tiny_setup(tmp_path, monkeypatch, per_class=20)
    seen = {}
    real_fit = experiment.fit_and_evaluate

    def spy(methods, train, val, test, context, *a, **k):
        seen.update(val=val, test=test)
        return real_fit(methods, train, val, test, context, *a, **k)

    monkeypatch.setattr(experiment, "fit_and_evaluate", spy)
    out = run_experiment(make(dict(METHODS), nec=0), report=run_report)
    folder = tmp_path / "out"
    recorded = json.loads((folder / "results.json").read_text())
    splits = json.loads((folder / "splits.json").read_text())
    val = seen["val"]
    assert splits["val"] == list(val.ids) and splits["test"] == list(seen["test"].ids)
    assert len(val) == out["sizes"]["val"] > 0 and not set(splits["val"]) & set(splits["test"])
    for name in METHODS:
        by_hand = float(np.mean(Method.load(folder / "models" / name).predict(val) == val.labels))
        assert recorded["results"][name]["val_top1"] == pytest.approx(by_hand, abs=1e-12)
    cbms = ["labo", "label_free"]  # config order
    rows = recorded["results"]
    assert all(rows[n]["truth"]["on"] == "validation" for n in cbms)
    passing = [n for n in cbms if rows[n]["truth"]["passed"]]
    chosen = recorded["report_method"]
    assert chosen == out["report_method"]
    assert set(chosen.get("passed_over", {})) == set(cbms) - set(passing)
    if passing:  # the best on validation among the models whose explanations pass the truth floor
        best = max(passing, key=lambda n: rows[n]["val_top1"])
        v = rows[best]["val_top1"]
        assert chosen["method"] == best and chosen["chosen_by"] == f"validation top-1 {v:.3f}"
        assert _title(folder).startswith(f"conceptlens: {best} on images (the best concept bottleneck")
    else:  # none passes: the highest truth figure, said in the title
        best = max(cbms, key=lambda n: (rows[n]["truth"]["value"] or 0, rows[n]["val_top1"]))
        assert chosen["method"] == best and chosen["passed_truth_floor"] is False
        assert "no model passes the truth floor" in _title(folder)


def test_without_a_validation_split_the_first_concept_bottleneck_is_reported(tmp_path, monkeypatch):
    make = tiny_setup(tmp_path, monkeypatch, per_class=20)
    cfg = make({"zero_shot": {}, "labo": {"epochs": 20}, "label_free": {}}, nec=0)
    cfg.data.train_fraction, cfg.data.val_fraction = 0.8, 0.0
    out = run_experiment(cfg, report=run_report)
    assert out["sizes"]["val"] == 0
    assert all("val_top1" not in row for row in out["results"].values())
    rows = out["results"]
    assert all(rows[n]["truth"]["on"] == "training" for n in ("labo", "label_free"))
    passing = [n for n in ("labo", "label_free") if rows[n]["truth"]["passed"]]
    if passing:
        assert out["report_method"]["method"] == passing[0]
        assert out["report_method"]["chosen_by"] == "first in config (no validation split)"
        assert _title(tmp_path / "out") == (f"conceptlens: {passing[0]} on images (the first concept bottleneck "
                                            "in the config; the run has no validation split)")
    else:
        assert out["report_method"]["passed_truth_floor"] is False


def test_a_named_method_is_reported(tmp_path, monkeypatch):
    from conceptlens.runs.config import ReportConfig

    make = tiny_setup(tmp_path, monkeypatch, per_class=20)
    out = run_experiment(make(dict(METHODS), nec=0, report=ReportConfig("labo")), report=run_report)
    assert out["report_method"] == {"method": "labo", "chosen_by": "config"}
    assert _title(tmp_path / "out") == "conceptlens: labo on images (named in [report] method)"
    assert load_config(tmp_path / "out" / "config.toml").report.method == "labo"


def test_a_named_method_without_concepts_is_refused_before_any_image_is_read(tmp_path, monkeypatch):
    import conceptlens.runs.experiment as experiment
    from conceptlens.runs.config import ReportConfig

    make = tiny_setup(tmp_path, monkeypatch)

    def no_data(*a, **k):
        raise AssertionError("the data were read before the config was refused")

    monkeypatch.setattr(experiment, "load_dataset", no_data)
    with pytest.raises(ConfigError, match=r"\[report\] method = 'linear_probe' is not a concept bottleneck.*"
                                          r"choose one of 'labo', 'label_free' or \"auto\""):
        run_experiment(make(dict(METHODS), report=ReportConfig("linear_probe")), report=run_report)
    with pytest.raises(ConfigError, match=r"\[report\] method = 'lf' is not a method of this run"):
        run_experiment(make(dict(METHODS), report=ReportConfig("lf")), report=run_report)
    assert not (tmp_path / "out").exists()


def test_a_named_method_that_could_not_be_fitted_is_a_config_error(tmp_path, monkeypatch):
    from conceptlens.methods.labo import LaBo
    from conceptlens.runs.config import ReportConfig

    make = tiny_setup(tmp_path, monkeypatch)

    def refuse(self, train, context, val):
        raise DataError("no concept could be grounded")

    monkeypatch.setattr(LaBo, "_fit", refuse)
    with pytest.raises(ConfigError, match=r"'labo' could not be fitted on these data \(no concept could be "
                                          r"grounded\), so there is no model to report"):
        run_experiment(make(dict(METHODS), nec=0, report=ReportConfig("labo")), report=run_report)
    assert not (tmp_path / "out").exists()
    # "auto" reports the concept bottleneck that did fit
    out = run_experiment(make(dict(METHODS), nec=0), report=run_report)
    assert out["report_method"]["method"] == "label_free" and "failed" in out["results"]["labo"]

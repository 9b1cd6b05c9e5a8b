"""The typed results of a run (runs/results.py), its stages' timings, and a run folder read back
(runs/folder.py: RunFolder.load), on one tiny real run."""

from __future__ import annotations

import json
import shutil

import pytest

from conceptlens.errors import ConfigError, DataError
from conceptlens.report import run_report
from conceptlens.runs.experiment import STAGES
from conceptlens.runs.folder import RunFolder
from conceptlens.runs.results import MethodResult, RunResult
from conceptlens.testing import tiny_run_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")
METHODS = {"zero_shot": {}, "linear_probe": {}, "labo": {"epochs": 20}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(the RunResult, the run folder) of one small recorded run (TinyBackbone)."""
    from conceptlens.runs import run_experiment

    tmp = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        make = tiny_run_setup(tmp, mp, per_class=12)
        result = run_experiment(make(dict(METHODS), nec=2), report=run_report)
    return result, tmp / "out"


def test_run_experiment_returns_a_run_result_that_is_results_json(run):
    result, folder = run
    assert isinstance(result, RunResult) and result.output_dir == str(folder)
    text = (folder / "results.json").read_text(encoding="utf-8")
    # results.json is the typed result's to_dict(), byte for byte
    assert json.dumps(result.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text
    recorded = json.loads(text)
    # ... and reading it back gives the same dict
    assert RunResult.from_dict(recorded).to_dict() == recorded
    assert set(recorded) >= {"results", "seconds", "stages", "report_method", "sizes"}
    labo = result.results["labo"]
    assert isinstance(labo, MethodResult) and labo.fitted and 0 <= labo.top1 <= 1
    assert labo.top1_at_nec == recorded["results"]["labo"]["top1_at_nec"]
    # the dict the run returned before it was typed, still readable
    assert result["results"]["labo"]["top1"] == labo.top1 and result["table"] == result.table
    assert "output_dir" in result and result.get("no such key") is None


def test_every_stage_is_timed_with_its_peak_memory(run):
    result, folder = run
    stages = json.loads((folder / "results.json").read_text())["stages"]
    assert list(result.stages) == [name for name, _ in STAGES]
    assert list(stages) == sorted(name for name, _ in STAGES)  # results.json's keys are sorted
    for name, row in stages.items():
        assert row["seconds"] > 0, name
        assert row["peak_rss_mb"] is None or row["peak_rss_mb"] > 0, name
    assert stages["fit"]["seconds"] > 0 and stages["encode"]["seconds"] > 0


def test_method_result_round_trip_of_fitted_and_failed_rows():
    fitted = {"top1": 0.5, "top5": 1.0, "mean_per_class": 0.5, "ece": 0.1, "nec": 2.0, "n": 6,
              "fit_seconds": 0.2, "val_top1": 0.4, "concept_auroc": None, "truth": {"passed": False, "why": "x"}}
    row = MethodResult.from_dict(fitted)
    assert row.to_dict() == fitted and row.passed_truth is False and row.grounded
    assert "concept_auroc" in row and "top1_at_nec" not in row
    failed = MethodResult.from_dict({"failed": "no concept", "fit_seconds": 0.1})
    assert not failed.fitted and failed.to_dict() == {"failed": "no concept", "fit_seconds": 0.1}
    with pytest.raises(DataError, match="no per-method results"):
        RunResult.from_dict({"sizes": {}})


def test_run_folder_load_reads_and_checks_a_run(run):
    result, folder = run
    loaded = RunFolder.load(folder)
    assert loaded.result == RunResult.from_dict(result.to_dict())
    assert list(loaded.result.results) == list(METHODS)  # the config's order, not results.json's
    assert loaded.config is not None and list(loaded.config.methods) == list(METHODS)
    assert loaded.config_problem is None and loaded.data_config.dataset == str(folder.parent / "images")
    assert loaded.split_ids["test"] == result.split_ids["test"]
    assert loaded.model_names() == list(METHODS)
    name = loaded.report_model_name()
    assert name == result.report_method["method"] and loaded.report_model().concepts_
    with pytest.raises(ConfigError, match=r"no model of 'lab'.*Did you mean 'labo'"):
        loaded.model("lab")


def _copy(folder, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    return copy


def test_run_folder_load_errors_name_the_folder_and_the_file(run, tmp_path):
    _, folder = run
    with pytest.raises(DataError, match="no such folder"):
        RunFolder.load(tmp_path / "missing")
    copy = _copy(folder, tmp_path)
    (copy / "results.json").write_text("{not json")
    with pytest.raises(DataError, match=r"Cannot read the run folder .*results.json"):
        RunFolder.load(copy)
    (copy / "results.json").write_text(json.dumps({"sizes": {}}))
    with pytest.raises(DataError, match="holds no per-method results"):
        RunFolder.load(copy)
    (copy / "results.json").unlink()
    with pytest.raises(DataError, match="is not a run folder: it has no results.json"):
        RunFolder.load(copy)
    shutil.rmtree(copy)
    copy = _copy(folder, tmp_path)
    config = copy / "config.toml"
    config.write_text(config.read_text() + "\n[data.extra]\n")  # a key [data] does not know
    with pytest.raises(DataError, match=r"config.toml: its \[data\] table is not one this version reads"):
        RunFolder.load(copy)
    config.write_text("[data\n")
    with pytest.raises(DataError, match="config.toml"):
        RunFolder.load(copy)


def test_a_run_whose_inputs_moved_still_loads_and_says_why_its_config_does_not_check(run, tmp_path):
    _, folder = run
    copy = _copy(folder, tmp_path)
    config = copy / "config.toml"
    concepts = str(folder.parent / "class2concepts.json")
    assert concepts in config.read_text()
    config.write_text(config.read_text().replace(concepts, str(tmp_path / "moved.json")))
    loaded = RunFolder.load(copy)  # the concept file is gone: [data] still checks, the rest does not
    assert loaded.config is None and "moved.json" in loaded.config_problem
    assert loaded.backbone_spec and loaded.report_model_name() in METHODS


def test_serve_and_explain_take_a_run_folder(run, capsys):
    from conceptlens.cli.model_commands import _load_model
    from conceptlens.cli.serve_commands import _model_dir

    result, folder = run
    chosen = result.report_method["method"]
    assert _model_dir(str(folder)) == folder / "models" / chosen
    assert f"serving its {chosen!r} model" in capsys.readouterr().err
    assert _model_dir(str(folder / "models" / "labo")) == folder / "models" / "labo"
    assert _load_model(str(folder), "explain").name == RunFolder.load(folder).report_model().name
    assert f"explain uses its {chosen!r} model" in capsys.readouterr().err

"""Output safety: a run folder is written whole, never mixed with an older run, and the CLI
never writes over a model it reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_runs import tiny_setup

import conceptlens.runs.experiment as experiment
from conceptlens.cli import main
from conceptlens.errors import ConfigError
from conceptlens.runs import load_config, run_experiment
from conceptlens.runs.record import check_output_dir


def _siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_rerun_refuses_an_existing_run_unless_overwrite(tmp_path, monkeypatch):
    make = tiny_setup(tmp_path, monkeypatch)
    out = tmp_path / "out"
    first = run_experiment(make({"zero_shot": {}, "linear_probe": {}}))
    assert sorted(p.name for p in (out / "models").iterdir()) == ["linear_probe", "zero_shot"]
    assert first["output_dir"] == str(out)

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    with monkeypatch.context() as m:
        m.setattr(experiment, "load_dataset", no_work)
        with pytest.raises(ConfigError, match=r"already exists and is not empty \(config.toml, "
                                              r"environment.json, models, results.json, results.md, \.\.\.\).*"
                                              r"--overwrite"):
            run_experiment(make({"zero_shot": {}}))

    run_experiment(make({"zero_shot": {}}), overwrite=True)
    # the old run is gone whole: no linear_probe model next to the new results
    assert [p.name for p in (out / "models").iterdir()] == ["zero_shot"]
    assert set(json.loads((out / "results.json").read_text())["results"]) == {"zero_shot"}
    assert load_config(out / "config.toml").methods == {"zero_shot": {}}
    assert _siblings(out) == []  # no temporary folder left behind


def test_a_failed_run_leaves_no_half_folder_and_keeps_the_old_one(tmp_path, monkeypatch):
    make = tiny_setup(tmp_path, monkeypatch)
    out = tmp_path / "out"
    run_experiment(make({"zero_shot": {}}))
    before = (out / "results.json").read_text()

    from conceptlens.methods.base import Method

    def broken_save(self, folder):
        raise OSError("disk full")

    monkeypatch.setattr(Method, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        run_experiment(make({"zero_shot": {}, "linear_probe": {}}), overwrite=True)
    assert (out / "results.json").read_text() == before  # the old run is intact
    assert _siblings(out) == []
    new = tmp_path / "new"
    with pytest.raises(OSError, match="disk full"):
        run_experiment(make(output_dir=str(new)))
    assert not new.exists() and _siblings(new) == []


def test_report_is_written_inside_the_run(tmp_path, monkeypatch):
    make = tiny_setup(tmp_path, monkeypatch)
    out = tmp_path / "out"
    seen = []
    real = experiment.record_run

    def spy(cfg, result, concepts, models, files=None, overwrite=False):
        seen.append(sorted(files or {}))
        assert not out.exists()  # nothing is written at the final place before the end
        return real(cfg, result, concepts, models, files, overwrite)

    monkeypatch.setattr(experiment, "record_run", spy)
    run_experiment(make({"zero_shot": {}, "labo": {"epochs": 20}}, nec=0))
    assert seen == [["report.html"]]
    # the only concept bottleneck here, chosen by the default rule ([report] method = "auto"): it is
    # shown whether or not its explanations pass the truth floor, and the title says which
    title = "<h1>conceptlens: labo on images ("
    assert title + "the best concept bottleneck by validation top-1 " in (out / "report.html").read_text() or \
        title + "no model passes the truth floor" in (out / "report.html").read_text()
    assert (out / "concepts.json").is_file() and (out / "models" / "labo" / "model.json").is_file()


def test_check_output_dir_refusals(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_output_dir(tmp_path / "a.txt")
    other = tmp_path / "photos"
    (other / "holiday.jpg").parent.mkdir()
    (other / "holiday.jpg").write_text("x")
    with pytest.raises(ConfigError, match=r"not a conceptlens run folder.*refusing to replace it even with "
                                          r"--overwrite"):
        check_output_dir(other, overwrite=True)
    with pytest.raises(ConfigError, match="cache folder .* lies inside the output folder"):
        check_output_dir(tmp_path / "run", cache_dir=tmp_path / "run" / "cache")
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty") == (tmp_path / "empty").resolve()


# -- the CLI: edit and report never write over the model they read ------------------------

def _saved_model(tmp_path, backbone_id="t"):
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method

    b = FeatureBundle(["a", "b"], np.array([0, 1]), ("cat", "dog"), np.eye(2, dtype=np.float32), None, "")
    ctx = Context(("cat", "dog"), ["fur", "bark"], np.eye(2, dtype=np.float32),
                  np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), backbone_id)
    return get_method("posthoc").fit(b, ctx).save(tmp_path / "model")


def test_edit_refuses_to_write_over_its_input(tmp_path, capsys):
    model = _saved_model(tmp_path)
    before = (model / "model.json").read_text()
    for out in (model, tmp_path / "model" / ".." / "model", model / "sub"):
        assert main(["edit", str(model), "--remove", "fur", "--out", str(out)]) == 2
        assert "is the folder of the model being edited" in capsys.readouterr().err
    assert (model / "model.json").read_text() == before
    assert not (model / "sub").exists()

    elsewhere = tmp_path / "edited"
    assert main(["edit", str(model), "--remove", "fur", "--out", str(elsewhere)]) == 0
    assert main(["edit", str(model), "--remove", "bark", "--out", str(elsewhere)]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["edit", str(model), "--remove", "bark", "--out", str(elsewhere), "--overwrite"]) == 0
    log = json.loads((elsewhere / "model.json").read_text())["edit_log"]
    assert [e["concept"] for e in log] == ["bark"]


def test_report_refuses_model_files_and_existing_files(tmp_path, capsys):
    model = _saved_model(tmp_path)
    weights = (model / "weights.safetensors").read_bytes()
    common = ["--dataset", "fashion-mnist", "--no-progress"]
    for target in (model / "weights.safetensors", model / "report.html", model / "x" / "r.html"):
        assert main(["report", str(model), *common, "--out", str(target), "--overwrite"]) == 2
        assert "inside the saved model folder" in capsys.readouterr().err
    assert (model / "weights.safetensors").read_bytes() == weights
    existing = tmp_path / "r.html"
    existing.write_text("keep me")
    assert main(["report", str(model), *common, "--out", str(existing)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert existing.read_text() == "keep me"

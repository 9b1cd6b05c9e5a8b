"""Output safety: a run folder is written whole, never mixed with an older run, and the CLI
never writes over a model it reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

import conceptlens.runs.experiment as experiment
from conceptlens.cli import main
from conceptlens.errors import ConfigError
from conceptlens.report import run_report
from conceptlens.runs import load_config, run_experiment
from conceptlens.runs.record import check_output_dir
from conceptlens.testing import tiny_run_setup as tiny_setup


def _siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_rerun_refuses_an_existing_run_unless_overwrite(tmp_path, monkeypatch):
    make = tiny_setup(tmp_path, monkeypatch)
    out = tmp_path / "out"
    first = run_experiment(make({"zero_shot": {}, "linear_probe": {}}), report=run_report)
    assert sorted(p.name for p in (out / "models").iterdir()) == ["linear_probe", "zero_shot"]
    assert first["output_dir"] == str(out)

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    with monkeypatch.context() as m:
        m.setattr(experiment, "load_dataset", no_work)
        with pytest.raises(ConfigError, match=r"already exists and is not empty \(config.toml, "
                                              r"environment.json, models, results.json, results.md, \.\.\.\).*"
                                              r"--overwrite"):
            run_experiment(make({"zero_shot": {}}), report=run_report)

    run_experiment(make({"zero_shot": {}}), overwrite=True, report=run_report)
    # the old run is gone whole: no linear_probe model next to the new results
    assert [p.name for p in (out / "models").iterdir()] == ["zero_shot"]
    assert set(json.loads((out / "results.json").read_text())["results"]) == {"zero_shot"}
    assert load_config(out / "config.toml").methods == {"zero_shot": {}}
    assert _siblings(out) == []  # no temporary folder left behind


def test_a_failed_run_leaves_no_half_folder_and_keeps_the_old_one(tmp_path, monkeypatch):
    make = tiny_setup(tmp_path, monkeypatch)
    out = tmp_path / "out"
    run_experiment(make({"zero_shot": {}}), report=run_report)
    before = (out / "results.json").read_text()

    from conceptlens.methods.base import Method

    def broken_save(self, folder):
        raise OSError("disk full")

    monkeypatch.setattr(Method, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        run_experiment(make({"zero_shot": {}, "linear_probe": {}}), overwrite=True, report=run_report)
    assert (out / "results.json").read_text() == before  # the old run is intact
    assert _siblings(out) == []
    new = tmp_path / "new"
    with pytest.raises(OSError, match="disk full"):
        run_experiment(make(output_dir=str(new)), report=run_report)
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
    run_experiment(make({"zero_shot": {}, "labo": {"epochs": 20}}, nec=0), report=run_report)
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
        assert main(["edit", str(model), "--remove", "fur", "--out", str(out)]) == 3
        assert "is the folder of the model being edited" in capsys.readouterr().err
    assert (model / "model.json").read_text() == before
    assert not (model / "sub").exists()

    elsewhere = tmp_path / "edited"
    assert main(["edit", str(model), "--remove", "fur", "--out", str(elsewhere)]) == 0
    assert main(["edit", str(model), "--remove", "bark", "--out", str(elsewhere)]) == 3
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["edit", str(model), "--remove", "bark", "--out", str(elsewhere), "--overwrite"]) == 0
    log = json.loads((elsewhere / "model.json").read_text())["edit_log"]
    assert [e["concept"] for e in log] == ["bark"]


def test_report_refuses_model_files_and_existing_files(tmp_path, capsys):
    model = _saved_model(tmp_path)
    weights = (model / "weights.safetensors").read_bytes()
    common = ["--dataset", "fashion-mnist", "--no-progress"]
    for target in (model / "weights.safetensors", model / "report.html", model / "x" / "r.html"):
        assert main(["report", str(model), *common, "--out", str(target), "--overwrite"]) == 3
        assert "inside the saved model folder" in capsys.readouterr().err
    assert (model / "weights.safetensors").read_bytes() == weights
    existing = tmp_path / "r.html"
    existing.write_text("keep me")
    assert main(["report", str(model), *common, "--out", str(existing)]) == 3
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


# -- writability, checked before any work --------------------------------------------------

def test_an_output_folder_below_a_file_is_refused_before_work(tmp_path, monkeypatch):
    # the whole run executed, then FileExistsError and the results were lost
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"Output folder .*afile/sub cannot be created: .*afile is a file"):
        check_output_dir(tmp_path / "afile" / "sub")
    with pytest.raises(ConfigError, match=r"Cache folder .*afile/c cannot be created: .*afile is a file"):
        check_output_dir(tmp_path / "run", cache_dir=tmp_path / "afile" / "c")
    cfg = tiny_setup(tmp_path, monkeypatch)(output_dir=str(tmp_path / "afile" / "sub"))
    monkeypatch.setattr(experiment, "load_dataset", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ConfigError, match="is a file"):
        run_experiment(cfg, report=run_report)


def _unwritable(monkeypatch, folder):
    """A read-only folder, also for root (who may write anywhere): the probe write fails there."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and str(dir).startswith(str(folder)):
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_read_only_output_or_cache_folder_is_refused_before_work(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    _unwritable(monkeypatch, ro)
    with pytest.raises(ConfigError, match=r"Output folder .*ro/run is not writable \(.*ro: Permission denied\)"):
        check_output_dir(ro / "run")
    with pytest.raises(ConfigError, match=r"Cache folder .*ro/cache is not writable"):
        check_output_dir(tmp_path / "run", cache_dir=ro / "cache")
    # --cache-dir on any command: a PermissionError traceback once the work was done, before
    assert main(["encode", str(tmp_path), "--out", str(tmp_path / "f.safetensors"),
                 "--cache-dir", str(ro / "cache")]) == 3
    assert "--cache-dir " + str(ro / "cache") + " is not writable" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_really_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            check_output_dir(ro / "run")
    finally:
        ro.chmod(0o700)


# -- exit codes -------------------------------------------------------------------------------

def test_exit_codes_tell_usage_input_and_internal_errors_apart(tmp_path, monkeypatch, capsys):
    # every error exited 2 before: usage 2, config/data 3, a bug 1 (docs/guides/reliability.md)
    from conceptlens import cli

    with pytest.raises(SystemExit) as e:  # argparse: a malformed command line
        main(["dataset"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:  # a flag value the CLI refuses
        main(["encode", str(tmp_path), "--out", "x.safetensors", "--seed=-1"])
    assert e.value.code == 2 and "--seed: '-1' must be a random seed" in capsys.readouterr().err
    assert main(["dataset", str(tmp_path / "missing")]) == 3  # bad input (DataError)
    assert "conceptlens: error: " in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[concepts]\nlam = inf\n")
    assert main(["run", str(tmp_path / "bad.toml")]) == 3  # a config error
    assert "lam = inf is not a finite number" in capsys.readouterr().err

    def broken(args):
        raise RuntimeError("an index went wrong")

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    commands.choices["dataset"].set_defaults(func=broken)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert main(["dataset", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: an index went wrong" in err and "a bug in conceptlens" in err
    assert "rerun with -v" in err and "Traceback" not in err
    assert main(["-v", "dataset", str(tmp_path)]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err

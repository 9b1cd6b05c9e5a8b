"""`conceptlens report RUN_DIR`: a run's model on exactly the run's test images (splits.json),
the run's other methods as baselines; `report MODEL --dataset` says its split is the CLI's own."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conceptlens.cli import main
from conceptlens.report import run_report
from conceptlens.testing import tiny_run_setup as tiny_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")
METHODS = {"zero_shot": {}, "linear_probe": {}, "labo": {"epochs": 20}, "label_free": {}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small run (TinyBackbone, 20 images per class) and the test ids its methods saw."""
    import conceptlens.runs.experiment as experiment
    from conceptlens.runs import run_experiment

    tmp = tmp_path_factory.mktemp("run")
    seen = {}
    with pytest.MonkeyPatch.context() as mp:
        make = tiny_setup(tmp, mp, per_class=20)
        real_fit = experiment.fit_and_evaluate

        def spy(methods, train, val, test, context, *a, **k):
            seen.setdefault("test", list(test.ids))
            return real_fit(methods, train, val, test, context, *a, **k)

        mp.setattr(experiment, "fit_and_evaluate", spy)
        run_experiment(make(dict(METHODS), nec=0), report=run_report)
    return tmp / "out", seen["test"]


@pytest.fixture
def report(tmp_path, monkeypatch):
    """`conceptlens report ...` in this process, on the TinyBackbone; returns (exit code, the
    test ids it encoded last, the evaluation rows it computed)."""
    import conceptlens.backbones
    import conceptlens.evaluation as evaluation
    import conceptlens.features as features
    from conceptlens.testing import TinyBackbone

    monkeypatch.setattr(conceptlens.backbones, "get_backbone", lambda spec: TinyBackbone())
    encoded, rows = [], []
    real_encode, real_evaluate = features.encode_dataset, evaluation.evaluate

    def spy_encode(backbone, data, *a, **k):
        encoded.append(list(data.ids))
        return real_encode(backbone, data, *a, **k)

    def spy_evaluate(model, bundle):
        rows.append(real_evaluate(model, bundle) | {"ids": list(bundle.ids)})
        return rows[-1]

    monkeypatch.setattr(features, "encode_dataset", spy_encode)
    monkeypatch.setattr(evaluation, "evaluate", spy_evaluate)

    def call(*argv):
        encoded.clear()
        rows.clear()
        code = main(["report", *map(str, argv), "--no-progress", "--overwrite"])
        return code, rows[-1] if rows else None

    return call


def _metric_rows(html: str) -> dict[str, str]:
    """method -> its top-1 cell in the report's metrics table."""
    table = re.search("<table id='metrics'>(.*?)</table>", html).group(1)
    return dict(re.findall(r"<tr><td>([^<]+)</td><td class='num'>([\d.]+)</td>", table))


def test_report_run_dir_reproduces_the_runs_split_top1_and_baselines(run, report, tmp_path, capsys):
    folder, run_test_ids = run
    recorded = json.loads((folder / "results.json").read_text())
    assert json.loads((folder / "splits.json").read_text())["test"] == run_test_ids
    for method in ("labo", "label_free"):
        out = tmp_path / f"{method}.html"
        code, row = report(folder, "--method", method, "--out", out)
        assert code == 0, capsys.readouterr().err
        assert row["ids"] == run_test_ids  # the same images, in the same order
        assert row["top1"] == recorded["results"][method]["top1"]
        assert row["n"] == recorded["sizes"]["test"]
        shown = _metric_rows(out.read_text())
        # every method of the run is in the table; the baselines with the run's own numbers
        assert set(shown) == set(METHODS)
        for name, r in recorded["results"].items():
            assert shown[name] == f"{100 * r['top1']:.1f}", name
        printed = capsys.readouterr().out
        assert (f"{method} (--method): top-1 {100 * row['top1']:.1f}% on the run's {row['n']} test images "
                f"(the run recorded {100 * row['top1']:.1f}%)") in printed
        assert f"<h1>conceptlens: {method} on images (chosen with --method), run out</h1>" in out.read_text()
    # without --method: the model the run's own report shows, for the same reason
    code, row = report(folder, "--out", tmp_path / "default.html")
    chosen = recorded["report_method"]
    assert code == 0 and row["top1"] == recorded["results"][chosen["method"]]["top1"]
    assert f"{chosen['method']} ({chosen['chosen_by']})" in capsys.readouterr().out
    # ... and it is the run's own report.html again, but for the title that names the run

    def untitled(path):
        return re.sub(r"<title>.*?</title>|<h1>.*?</h1>", "", path.read_text())

    assert untitled(tmp_path / "default.html") == untitled(folder / "report.html")


def test_the_recorded_ids_are_used_not_a_recomputed_split(run, report, tmp_path, capsys):
    folder, run_test_ids = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    config = copy / "config.toml"
    config.write_text(config.read_text().replace("seed = 0", "seed = 7", 1))  # would split otherwise
    code, row = report(copy, "--method", "labo", "--out", tmp_path / "a.html")
    assert code == 0 and row["ids"] == run_test_ids
    # a folder from before splits.json: the split is recomputed from [data], and says so
    (copy / "splits.json").unlink()
    code, row = report(copy, "--method", "labo", "--out", tmp_path / "b.html")
    assert code == 0 and "no splits.json" in capsys.readouterr().err
    assert sorted(row["ids"]) != sorted(run_test_ids)  # seed 7's split
    config.write_text(config.read_text().replace("seed = 7", "seed = 0", 1))
    code, row = report(copy, "--method", "labo", "--out", tmp_path / "c.html")
    assert code == 0 and row["ids"] == run_test_ids  # the run's [data] gives the run's split back


def test_a_different_top1_than_the_run_is_flagged(run, report, tmp_path, capsys):
    folder, _ = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    results = json.loads((copy / "results.json").read_text())
    results["results"]["labo"]["top1"] = 0.01234
    (copy / "results.json").write_text(json.dumps(results))
    code, row = report(copy, "--method", "labo", "--out", tmp_path / "r.html")
    assert code == 0
    err = capsys.readouterr().err
    assert f"top-1 on the run's test split is {row['top1']:.4f}, the run recorded 0.0123" in err
    assert _metric_rows((tmp_path / "r.html").read_text())["labo"] == f"{100 * row['top1']:.1f}"


def test_missing_images_of_the_runs_split_are_an_error(run, report, tmp_path, capsys):
    folder, run_test_ids = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    splits = json.loads((copy / "splits.json").read_text())
    splits["test"][0] = "cat/gone.png"
    (copy / "splits.json").write_text(json.dumps(splits))
    assert report(copy, "--out", tmp_path / "r.html")[0] == 3
    assert "1 of the run's test images are no longer in" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "fashion-mnist"], r"is a run folder: .* so --dataset do\(es\) not apply"),
    (["--method", "linear_probe"], "'linear_probe' is not a concept bottleneck .* choose one of labo, "
                                   "label_free"),
    (["--method", "lab"], r"--method 'lab' is not one of the run's methods .* Did you mean 'labo'\?"),
])
def test_report_run_dir_errors(run, report, tmp_path, capsys, extra, message):
    folder, _ = run
    assert report(folder, *extra, "--out", tmp_path / "r.html")[0] == 3
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "r.html").exists()


def test_a_bare_model_is_reported_on_the_clis_own_split_and_says_so(run, report, tmp_path, capsys):
    folder, run_test_ids = run
    model = folder / "models" / "labo"
    images = json.loads((folder / "splits.json").read_text())["dataset"]
    code, row = report(model, "--dataset", images, "--images-per-class", "2", "--out", tmp_path / "m.html")
    assert code == 0
    printed = capsys.readouterr().out
    assert "note: the split is the CLI's own (6 test images" in printed
    assert f"`conceptlens report {folder.resolve()} --method labo`" in printed
    assert row["n"] == 6 and row["ids"] != run_test_ids
    assert "the CLI&#x27;s own split: 6 test images, seed 0)</h1>" in (tmp_path / "m.html").read_text()
    assert report(model, "--out", tmp_path / "n.html")[0] == 3
    assert "is a saved model, not a run folder: pass --dataset" in capsys.readouterr().err
    assert report(tmp_path, "--out", tmp_path / "n.html")[0] == 3
    assert "is neither a run folder" in capsys.readouterr().err

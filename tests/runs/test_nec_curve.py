"""Accuracy against NEC ([evaluation] nec_curve, evaluation/nec.py accuracy_curve): VLG-CBM's
protocol at several NECs from one path (the same points as accuracy_at_nec one NEC at a time),
the fitted model last; in results.json per method, in the config and its TOML round trip."""

from __future__ import annotations

import json

import pytest

from conceptlens.errors import ConfigError
from conceptlens.evaluation import accuracy_at_nec, accuracy_curve, evaluate
from conceptlens.methods import make_method
from conceptlens.testing import FAST_PARAMS, make_problem, tiny_run_setup


@pytest.fixture(scope="module")
def fitted():
    train, val, test, context = make_problem()
    model = make_method("label_free", FAST_PARAMS["label_free"]).fit(train, context, val)
    return model, train, test, context


def test_the_curve_is_accuracy_at_nec_point_by_point(fitted):
    model, train, test, _ = fitted
    c = accuracy_curve(model, train, test, necs=(1, 3, 2, 50))  # 50 > 12 concepts: left out
    assert list(c["top1"]) == ["1", "2", "3", "full"] and c["protocol"] == "vlg"
    for nec in (1, 2, 3):
        one = accuracy_at_nec(model, train, test, nec)
        assert c["top1"][str(nec)] == pytest.approx(one["top1"])
        assert c["reached"][str(nec)] == pytest.approx(one["nec"])
    assert c["top1"]["full"] == pytest.approx(evaluate(model, test)["top1"])
    assert c["reached"]["full"] == pytest.approx(model.nec_)
    values = list(c["top1"].values())
    assert values[-2] >= values[0] - 0.05  # monotone-ish: more concepts per class help, up to noise
    prune = accuracy_curve(model, train, test, necs=(1, 12), protocol="prune", full_top1=0.5)
    assert prune["top1"]["full"] == 0.5 and prune["reached"]["12"] == pytest.approx(model.nec_)
    with pytest.raises(ConfigError, match="whole number"):
        accuracy_curve(model, train, test, necs=(0,))


def test_a_run_records_the_curve_for_each_concept_method(tmp_path, monkeypatch):
    make = tiny_run_setup(tmp_path, monkeypatch)
    cfg = make(methods={"zero_shot": {}, "label_free": {"steps": 50}}, nec_curve=[1, 2, 3], nec_protocol="prune")
    from conceptlens.report.run import run_report
    from conceptlens.runs import run_experiment

    out = run_experiment(cfg, report=run_report)
    res = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert "nec_curve" not in res["zero_shot"]  # no concept layer, no NEC
    curve = res["label_free"]["nec_curve"]
    k = len(out["results"]["label_free"]["nec_curve_reached"]) - 1
    assert list(curve)[-1] == "full" and curve["full"] == pytest.approx(res["label_free"]["top1"])
    assert k >= 1 and all(0 <= v <= 1 for v in curve.values())
    assert list(map(int, list(curve)[:-1])) == sorted(map(int, list(curve)[:-1]))
    first, best = curve[list(curve)[0]], max(curve.values())
    assert best >= first  # monotone-ish, ending at the fitted model
    # the point at the run's own NEC is the run's top-1 @ NEC
    assert curve["2"] == pytest.approx(res["label_free"]["top1_at_nec"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "id='nec-curve'" in html


def test_the_config_key(tmp_path):
    from conceptlens.runs.config import RunConfig, load_config, to_toml

    cfg = RunConfig(nec_curve=[10, 1, 5])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path).nec_curve == [1, 5, 10]
    assert RunConfig().nec_curve == []
    from conceptlens.demo import demo_config

    assert demo_config().nec_curve == [1, 2, 3, 5, 10, 20]
    for bad in ("[evaluation]\nnec_curve = [0]\n", "[evaluation]\nnec_curve = 5\n",
                "[evaluation]\nnec_curve = [2, 2]\n"):
        path.write_text(bad)
        with pytest.raises(ConfigError, match="nec_curve"):
            load_config(path)
    path.write_text("[evaluation]\nnec_curve = []\n")
    assert load_config(path).nec_curve == []

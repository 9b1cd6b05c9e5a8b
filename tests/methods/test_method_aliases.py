"""Method aliases (methods/aliases.py): a [methods.<display name>] table with `method = "<registered>"`,
so one run holds a method several times; the config round trip, clear errors, a run with two cbm
modes against direct fits, and the NEC refit of an aliased model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conceptlens.errors import ConfigError
from conceptlens.methods import METHODS, get_method, make_method
from conceptlens.methods.aliases import METHOD_KEY
from conceptlens.report import run_report
from conceptlens.runs import run_experiment
from conceptlens.runs.config import GroundingConfig, RunConfig, load_config, to_toml, validate_config
from conceptlens.testing import CONCEPT_LABELS, attribute_csv
from conceptlens.testing import spy_run as _spy
from conceptlens.testing import tiny_run_setup as tiny_setup

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TWO_MODES = {"cbm_independent": {"method": "cbm", "mode": "independent", "max_iter": 60},
             "cbm_joint": {"method": "cbm", "mode": "joint", "concept_weight": 1.0, "max_iter": 60}}


def test_no_registered_method_has_a_parameter_named_like_the_alias_key():
    for name in METHODS.names():
        assert METHOD_KEY not in METHODS.get(name)._param_names(), name


def test_make_method_builds_the_registered_method_with_the_other_keys_as_parameters():
    model = make_method("cbm_joint", {"method": "cbm", "mode": "joint", "concept_weight": 0.5})
    assert type(model) is METHODS.get("cbm") and model.name == "cbm"
    assert model.get_params()["mode"] == "joint" and model.get_params()["concept_weight"] == 0.5
    plain = make_method("cbm", {"mode": "sequential"})  # no `method` key: the table name is the method
    assert type(plain) is METHODS.get("cbm") and plain.mode == "sequential"


def test_what_a_run_asks_of_its_methods_follows_the_registered_method():
    """Discovery inputs, concept labels and the run's concept list are decided by the registered
    method behind each display name (runs/discovery.py, runs/experiment.py)."""
    from conceptlens.runs.discovery import discovery_needs
    from conceptlens.runs.experiment import labelled_methods, uses_run_concepts

    assert discovery_needs({"sae_names": {"method": "dn_cbm"}}) == set(METHODS.get("dn_cbm").discovery_needs)
    assert discovery_needs({"cbm_joint": {"method": "cbm"}}) is None
    methods = {"cbm_joint": {"method": "cbm"}, "probe": {"method": "linear_probe"}}
    assert labelled_methods(methods) == ["cbm_joint"]
    assert uses_run_concepts({"cbm_joint": {"method": "cbm"}})
    assert not uses_run_concepts({"probe": {"method": "linear_probe"}, "sae_names": {"method": "dn_cbm"}})


def test_aliases_survive_the_toml_round_trip(tmp_path):
    methods = {"zero_shot": {}, **TWO_MODES, "ecbm_small": {"method": "ecbm", "hidden": 16, "epochs": 3},
               "cbm": {"method": "cbm", "mode": "sequential"}}  # naming itself is allowed
    cfg = validate_config(RunConfig(methods={k: dict(v) for k, v in methods.items()}))
    text = to_toml(cfg)
    assert '[methods.cbm_joint]\nmethod = "cbm"\nmode = "joint"\n' in text
    path = tmp_path / "config.toml"
    path.write_text(text)
    back = load_config(path)
    assert back.methods == methods and list(back.methods) == list(methods)  # same order: same rows
    assert to_toml(back) == text


@pytest.mark.parametrize(("methods", "message"), [
    ({"cbm_joint": {"method": "lable_free"}},
     r"\[methods\.cbm_joint\] method = 'lable_free': Unknown method 'lable_free'\. "
     r"Did you mean 'label_free'\? "
     r"Known methods: cbm, cms, dn_cbm, ecbm, "),
    ({"cbm_joint": {"method": 3}}, r"\[methods\.cbm_joint\] method = 3: Unknown method 3\. Known "),
    ({"cbm_joint": {"mode": "joint"}},
     r"\[methods\.cbm_joint\]: Unknown method 'cbm_joint'\..*Known methods: cbm, "
     r".*add method = \"<registered name>\""),
    ({"ecbm": {"method": "cbm"}}, r"\[methods\.ecbm\] method = 'cbm': 'ecbm' is itself a registered method"),
    ({"cbm_joint": {"method": "cbm", "mdoe": "joint"}},
     r"\[methods\.cbm_joint\] \(method = 'cbm'\): Unknown parameter\(s\) \['mdoe'\] for method 'cbm'\. "
     r"Did you mean 'mode'\?"),
    ({"cbm_joint": {"method": "cbm", "mode": "jiont"}},
     r"\[methods\.cbm_joint\] \(method = 'cbm'\): .*jiont"),
])
def test_bad_aliases_are_refused_before_any_work(tmp_path, methods, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(RunConfig(methods=methods))
    if "jiont" not in message:  # names are checked by the run's constructor too (values by fit)
        with pytest.raises(ConfigError, match=message):
            for name, params in methods.items():
                make_method(name, params)
    lines = [f"[methods.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in p.items())
             for name, p in methods.items()]
    (tmp_path / "c.toml").write_text("".join(lines))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.toml")


def test_one_run_holds_two_cbm_modes_each_its_own_row(tmp_path, monkeypatch):
    """Two rows named after their tables, each equal to a direct fit of cbm in its mode on the run's
    own training set and context; the saved models record the registered method and their mode."""
    from conceptlens.evaluation import evaluate
    from conceptlens.methods import Method
    from conceptlens.methods.cbm import concept_accuracy, concept_truth

    make = tiny_setup(tmp_path, monkeypatch)
    seen = _spy(monkeypatch)
    cfg = make({k: dict(v) for k, v in TWO_MODES.items()}, nec=0,
               grounding=GroundingConfig(str(attribute_csv(tmp_path, CONCEPT_LABELS)), 2, 0.8, "none"))
    cfg.concepts.per_class, cfg.concepts.filter = 4, False
    out = run_experiment(cfg, report=run_report)
    folder = tmp_path / "out"
    results = json.loads((folder / "results.json").read_text())
    assert list(results["results"]) == ["cbm_independent", "cbm_joint"]
    assert set(results["concept_labels"]["methods"]) == {"cbm_independent", "cbm_joint"}
    train, test, ctx = seen["train"], seen["test"], seen["context"]
    truth = concept_truth("cbm", test, ctx)
    rows = {}
    for name, params in TWO_MODES.items():
        direct = get_method("cbm", **{k: v for k, v in params.items() if k != "method"}).fit(train, ctx)
        row = results["results"][name]
        assert row["top1"] == pytest.approx(evaluate(direct, test)["top1"])
        assert row["concept_accuracy"] == pytest.approx(concept_accuracy(direct.predict_concepts(test),
                                                                         truth)["mean"])
        saved = Method.load(folder / "models" / name)
        assert saved.name == "cbm" and saved.mode == params["mode"]
        np.testing.assert_allclose(saved.class_weights_, direct.class_weights_, rtol=1e-5, atol=1e-6)
        meta = json.loads((folder / "models" / name / "model.json").read_text())
        assert meta["method"] == "cbm" and meta["params"]["mode"] == params["mode"]
        rows[name] = row
    # the two modes are different models: their label layers and their calibration differ
    assert rows["cbm_independent"]["ece"] != pytest.approx(rows["cbm_joint"]["ece"])
    assert not np.allclose(Method.load(folder / "models" / "cbm_independent").class_weights_,
                           Method.load(folder / "models" / "cbm_joint").class_weights_)
    md = (folder / "results.md").read_text()
    assert "| cbm_independent |" in md and "| cbm_joint |" in md and out["table"] in md
    # the recorded config reads back with both aliases
    assert load_config(folder / "config.toml").methods == TWO_MODES


def test_an_aliased_model_refits_at_nec_as_its_registered_method():
    """protocol 'refit' refits with the registered method even when the table (and the fitted
    instance) carry a display name; the reference is a direct posthoc fit with target_nec."""
    from conceptlens.evaluation import evaluate
    from conceptlens.evaluation.nec import accuracy_at_nec
    from conceptlens.runs.experiment import fit_and_evaluate
    from conceptlens.testing import make_problem

    train, val, test, ctx = make_problem()
    methods = {"sparse_strong": {"method": "posthoc", "lam": 2e-3}}
    results, models = fit_and_evaluate(methods, train, None, test, ctx, nec=2, protocol="refit")
    refitted = get_method("posthoc", lam=2e-3, target_nec=2).fit(train, ctx)
    row = results["sparse_strong"]
    assert row["nec_how"] == "refit" and row["nec_at_nec"] <= 2
    assert row["nec_at_nec"] == pytest.approx(refitted.nec_)
    assert row["top1_at_nec"] == pytest.approx(evaluate(refitted, test)["top1"])
    model = models["sparse_strong"]
    model.name = "sparse_strong"  # an instance labelled with its display name still refits as posthoc
    again = accuracy_at_nec(model, train, test, 2, protocol="refit", context=ctx)
    assert again["how"] == "refit" and type(again["model"]) is METHODS.get("posthoc")
    assert again["top1"] == pytest.approx(row["top1_at_nec"])

"""Run configs: parsing, errors, round trip, and a recorded run on a small image folder."""

from __future__ import annotations

import json

import pytest

from conceptlens.errors import ConfigError
from conceptlens.report import run_report
from conceptlens.runs import load_config, run_experiment
from conceptlens.runs.config import to_toml
from conceptlens.testing import ATTRIBUTES, attribute_csv, toy_bundles
from conceptlens.testing import tiny_run_setup as tiny_setup


def test_config_defaults_and_round_trip(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[data]\ntrain_per_class = 7\n\n[methods.label_free]\ntarget_nec = 5\n\n'
                 '[fewshot]\nshots = [1, 2, "all"]\nseeds = [0, 1]\n')
    cfg = load_config(f)
    assert cfg.data.train_per_class == 7 and cfg.data.dataset == "fashion-mnist"
    assert cfg.methods == {"label_free": {"target_nec": 5}}
    assert cfg.fewshot.shots == [1, 2, "all"]
    (tmp_path / "again.toml").write_text(to_toml(cfg))
    assert load_config(tmp_path / "again.toml").to_dict() == cfg.to_dict()


@pytest.mark.parametrize("text, message", [
    ("[dta]\n", r"Unknown section \[dta\].*Did you mean 'data'"),
    ("[data]\ntrain_per_clas = 3\n", r"Unknown key 'train_per_clas' in \[data\]"),
    ("[methods.lab]\n", "Unknown method 'lab'"),
    ("[data\n", "Cannot read config"),
])
def test_config_errors(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_recorded_run_on_an_image_folder(tmp_path):
    """End to end on a real (tiny) dataset with a precomputed backbone: the output folder
    holds everything needed to reproduce the result, and saved models reload."""
    import numpy as np
    from safetensors.numpy import save_file

    from conceptlens.methods import Method
    from conceptlens.testing import write_png

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    ids, emb = [], []
    for c, name in enumerate(["cat", "dog"]):
        for i in range(12):
            write_png(root / name / f"{i}.png", (c * 100, i, 0))
            ids.append(f"{name}/{i}.png")
            v = np.eye(4)[c] + 0.3 * rng.normal(size=4)
            emb.append(v / np.linalg.norm(v))
    texts = ["a photo of a cat.", "a photo of a dog."]
    save_file({"embedding": np.asarray(emb, np.float32),
               "text_embedding": np.eye(4, dtype=np.float32)[:2]}, str(tmp_path / "f.safetensors"),
              metadata={"ids": json.dumps(ids), "texts": json.dumps(texts)})
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\ndataset = "{root}"\ntrain_per_class = 6\nval_per_class = 0\n'
                      f'test_per_class = 0\n\n[backbone]\nspec = "precomputed:{tmp_path / "f.safetensors"}"\n'
                      f'\n[methods.zero_shot]\n\n[methods.linear_probe]\n\n'
                      f'[output]\ndir = "{tmp_path / "out"}"\ncache_dir = "{tmp_path / "cache"}"\n')
    cfg = load_config(config)
    cfg.progress = False
    out = run_experiment(cfg, report=run_report)
    assert out["results"]["zero_shot"]["top1"] > 0.8
    folder = tmp_path / "out"
    assert {p.name for p in folder.iterdir()} == {"config.toml", "environment.json", "results.json",
                                                  "results.md", "models", "splits.json"}
    env = json.loads((folder / "environment.json").read_text())
    assert env["backbone_id"].startswith("precomputed:f.safetensors@") and env["packages"]["numpy"]
    assert load_config(folder / "config.toml").to_dict() | {"progress": False} == cfg.to_dict()
    model = Method.load(folder / "models" / "linear_probe")
    assert model.classes_ == ("cat", "dog")
    assert "| zero_shot |" in (folder / "results.md").read_text()


# -- small in-process runs on the TinyBackbone ------------------------------------------

def test_evaluate_at_nec_protocols():
    """"refit" refits a method with a sparse final layer and prunes a dense one; "prune" never
    refits; "vlg" fits a new layer (evaluation/nec.py). References: a fresh fit with
    target_nec, and prune_to_nec."""
    import numpy as np

    from conceptlens.evaluation import evaluate, prune_to_nec
    from conceptlens.methods import Context, get_method
    from conceptlens.runs.experiment import evaluate_at_nec

    train, test = toy_bundles()
    rng = np.random.default_rng(1)
    C = rng.normal(size=(8, 6))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    ctx = Context(("a", "b", "c"), [f"c{i}" for i in range(8)], C.astype("float32"),
                  (rng.random((3, 8)) < 0.5).astype("float32"), C[:3].astype("float32"), "t")
    sparse = get_method("posthoc").fit(train, ctx)
    dense = get_method("labo", epochs=50).fit(train, ctx)
    zero = get_method("zero_shot").fit(train, ctx)
    assert sparse.refit_at_nec and not dense.refit_at_nec

    refitted = get_method("posthoc", target_nec=2).fit(train, ctx)
    assert evaluate_at_nec(sparse, train, test, 2, "refit", context=ctx) == {
        "top1_at_nec": evaluate(refitted, test)["top1"], "nec_at_nec": refitted.nec_, "nec_how": "refit"}
    for model, protocol in ((dense, "refit"), (dense, "prune"), (sparse, "prune")):
        pruned = prune_to_nec(model, 2)
        assert evaluate_at_nec(model, train, test, 2, protocol, context=ctx) == {
            "top1_at_nec": evaluate(pruned, test)["top1"], "nec_at_nec": pruned.nec_, "nec_how": "prune"}
    row = evaluate_at_nec(dense, train, test, 2, "vlg", context=ctx)
    assert row["nec_how"] == "vlg" and 0 < row["nec_at_nec"] <= 2
    # more concepts asked for than the model has: measured at all 8
    assert evaluate_at_nec(dense, train, test, 50, "prune")["top1_at_nec"] == evaluate(dense, test)["top1"]
    assert evaluate_at_nec(zero, train, test, 2, "vlg", context=ctx) is None


def test_few_shot_protocol_is_fair(tmp_path, monkeypatch):
    """Every method gets the same validation split at every k; concepts are filtered and
    selected from the k-shot images alone."""
    import conceptlens.runs.experiment as experiment
    import conceptlens.runs.stages as stages

    make = tiny_setup(tmp_path, monkeypatch)
    seen = {"filter": [], "select": [], "fit": []}
    real_filter, real_select, real_make = (stages.filter_activation, stages.run_selection,
                                           stages.make_method)

    def spy_filter(concepts, image_embedding, *a, **k):
        seen["filter"].append(len(image_embedding))
        return real_filter(concepts, image_embedding, *a, **k)

    def spy_select(concepts, backbone, train, *a, **k):
        seen["select"].append(list(train.ids))
        return real_select(concepts, backbone, train, *a, **k)

    def spy_make(name, params):
        model = real_make(name, params)
        fit = model.fit

        def recorded(train, context, val=None):
            seen["fit"].append((name, list(train.ids), None if val is None else list(val.ids)))
            return fit(train, context, val)

        model.fit = recorded
        return model

    monkeypatch.setattr(stages, "filter_activation", spy_filter)
    monkeypatch.setattr(stages, "run_selection", spy_select)
    monkeypatch.setattr(stages, "make_method", spy_make)
    from conceptlens.runs.config import FewShotConfig

    cfg = make({"zero_shot": {}, "linear_probe": {}, "labo": {"epochs": 20}},
               fewshot=FewShotConfig([1, 2], [0, 1]), nec=0)
    out = experiment.run_experiment(cfg, write=False)
    n_classes = 3
    # main run (6 per class), then (seed, k) = (0,1), (0,2), (1,1), (1,2)
    assert seen["filter"] == [6 * n_classes] + [k * n_classes for k in (1, 2, 1, 2)]
    sizes = [len(ids) for ids in seen["select"]]
    assert sizes == [6 * n_classes] + [k * n_classes for k in (1, 2, 1, 2)]
    fits = seen["fit"]
    vals = {None if v is None else tuple(v) for _, _, v in fits}
    assert len(fits) == 15 and len(vals) == 1 and None not in vals  # one val split, for everyone
    train_by_fit = [(name, len(ids)) for name, ids, _ in fits]
    assert train_by_fit[:3] == [("zero_shot", 18), ("linear_probe", 18), ("labo", 18)]
    assert out["fewshot"]["labo"].keys() == {"1", "2"} and len(out["fewshot"]["labo"]["1"]) == 2
    assert out["fewshot_validation"] is True

    seen["fit"].clear()
    cfg.fewshot.use_val = False
    experiment.run_experiment(cfg, write=False)
    few = seen["fit"][3:]
    assert len(few) == 12 and all(v is None for _, _, v in few)  # no validation for anyone


def test_run_records_nec_protocol_and_data_options(tmp_path, monkeypatch):
    """[evaluation] nec_protocol reaches results and the table header; [data] on_error and
    allow_non_ascii reach the loader and the encoder."""
    make = tiny_setup(tmp_path, monkeypatch, classes=("café", "dog", "fox"))
    (tmp_path / "images" / "dog" / "broken.png").write_bytes(b"not a png")
    cfg = make({"zero_shot": {}, "labo": {"epochs": 20}}, nec_protocol="prune")
    cfg.data.train_per_class = 0  # every image lands in train, val or test
    with pytest.raises(Exception, match="non-ASCII|allow_non_ascii"):
        run_experiment(cfg, write=False)
    cfg.data.allow_non_ascii = True
    with pytest.raises(Exception, match="broken.png"):
        run_experiment(cfg, write=False)
    cfg.data.on_error = "skip"
    out = run_experiment(cfg, report=run_report)
    assert out["nec_protocol"] == "prune" and "top-1 @ NEC=2 (prune)" in out["table"]
    assert "top1_at_nec" in out["results"]["labo"] and "top1_at_nec" not in out["results"]["zero_shot"]
    assert sum(out["sizes"].values()) == 36  # 37 files, the corrupt one left out
    recorded = load_config(tmp_path / "out" / "config.toml")
    assert (recorded.data.on_error, recorded.data.allow_non_ascii, recorded.nec_protocol) == (
        "skip", True, "prune")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["nec_protocol"] == "prune"


def _attribute_csv(tmp_path):
    """Class-level annotations for tiny_setup's classes and concept words (testing.ATTRIBUTES)."""
    return attribute_csv(tmp_path)


def test_grounding_beside_accuracy_in_every_output(tmp_path, monkeypatch):
    """[grounding] reaches Context.class_truth, results.json, results.md, concept_matches.csv,
    the few-shot table and the report; the recorded numbers equal a direct computation on the
    saved model; methods without concepts show a dash."""
    import csv

    import numpy as np

    import conceptlens.runs.experiment as experiment
    from conceptlens.annotations import load_class_csv
    from conceptlens.grounding import evaluate_grounding
    from conceptlens.methods import Method
    from conceptlens.runs.config import FewShotConfig, GroundingConfig

    make = tiny_setup(tmp_path, monkeypatch)
    path = _attribute_csv(tmp_path)
    seen = {}
    real_ground = experiment.ground_models

    def spy(results, models, test, grounding):
        seen.setdefault("test", test)
        return real_ground(results, models, test, grounding)

    real_fit = experiment.fit_and_evaluate

    def spy_fit(methods, train, val, test, context, *a, **k):
        seen.setdefault("context", context)
        return real_fit(methods, train, val, test, context, *a, **k)

    monkeypatch.setattr(experiment, "ground_models", spy)
    monkeypatch.setattr(experiment, "fit_and_evaluate", spy_fit)
    cfg = make({"zero_shot": {}, "labo": {"epochs": 20}}, fewshot=FewShotConfig([1, 2], [0, 1]), nec=0,
               grounding=GroundingConfig(str(path), 2, 0.8, "none"))
    out = run_experiment(cfg, report=run_report)
    folder = tmp_path / "out"

    # class truth: each run concept takes its matched attribute's row (cat, dog, fox), else NaN
    ctx = seen["context"]
    rows = {k.casefold(): [np.nan if v is None else v for v in row] for k, row in ATTRIBUTES.items()}
    expected = np.array([rows.get(c, [np.nan] * 3) for c in ctx.concepts]).T
    np.testing.assert_array_equal(ctx.class_truth, expected)
    assert len(set(rows) & set(ctx.concepts)) >= 3  # the check above is not vacuous

    # results.json: the numbers beside accuracy, equal to a direct computation on the saved model
    results = json.loads((folder / "results.json").read_text())
    labo, zero = results["results"]["labo"], results["results"]["zero_shot"]
    saved = Method.load(folder / "models" / "labo")
    direct = evaluate_grounding(saved, seen["test"], load_class_csv(path), k=2)
    for key in ("concept_auroc", "precision_at_k", "negative_precision_at_k"):
        assert labo[key] == (None if direct[key] is None else pytest.approx(direct[key])), key
    assert labo["concept_auroc_n"] == direct["concept_auroc_n"] > 0
    assert zero["concept_auroc"] is None and zero["precision_at_k"] is None
    # the truth check: by annotations where they cover half the top-k pairs (on the run's images
    # held out for it), else by evidence; a method without concepts has none
    truth = labo["truth"]
    assert truth["by"] in ("annotations", "evidence") and "truth" not in zero
    if truth["by"] == "evidence":
        assert truth["value"] == labo["evidence_at_k"]
    assert truth["passed"] == (truth["value"] is not None and truth["value"] >= 0.8)
    assert results["grounding"]["k"] == 2 and results["grounding"]["methods"]["zero_shot"] is None
    assert results["grounding"]["methods"]["labo"]["matches"] == direct["matches"]

    # results.md: the columns, and a dash for the method without concepts
    md = (folder / "results.md").read_text()
    assert "| concept AUROC (n) | precision@2 (coverage) |" in md
    assert f"| {labo['concept_auroc']:.3f} ({labo['concept_auroc_n']}) |" in md
    assert next(ln for ln in md.splitlines() if ln.startswith("| zero_shot |")).endswith("| — | — |")

    # the matches a person can check
    with open(folder / "concept_matches.csv", newline="") as f:
        matches = list(csv.DictReader(f))
    assert [m["text"] for m in matches] == ctx.concepts
    by_text = {m["text"]: m for m in matches}
    for text, m in by_text.items():
        match = next((a for a in ATTRIBUTES if a.casefold() == text), "")
        assert (m["match"], m["how"]) == (match, "exact" if match else ""), text

    # few-shot: per seed, averaged like accuracy
    few = out["fewshot_grounding"]
    assert len(few["labo"]["1"]["concept_auroc"]) == 2
    assert few["zero_shot"]["2"]["concept_auroc"] == [None, None]
    aurocs = [v for v in few["labo"]["2"]["concept_auroc"] if v is not None]
    line = next(ln for ln in out["fewshot_table"].splitlines() if ln.startswith("| labo | concept AUROC |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == (f"{np.mean(aurocs):.3f} ± {np.std(aurocs):.3f}" if len(aurocs) == 2
                        else f"{np.mean(aurocs):.3f}")
    assert "| zero_shot | precision@2 | — | — |" in out["fewshot_table"] and "precision@2" in md

    # the report: the measures and the per-class flags
    page = (folder / "report.html").read_text()
    assert "id='grounding'" in page and "id='concept-matches'" in page and "id='grounding-classes'" in page
    flagged = [x for c in results["grounding"]["methods"]["labo"]["per_class"] for x in c["positive"]]
    assert page.count("class='flag truth-") == len(flagged) > 0
    assert page.count("class='flag truth-false'") == sum(x["truth"] == "false" for x in flagged)


def test_confounded_table_reaches_the_run(tmp_path, monkeypatch):
    """[confounded] is checked against the dataset's classes before any image is encoded, then
    run_confounded gets the run's pieces and its table lands in results.json and results.md."""
    import conceptlens.runs.confounded as confounded
    import conceptlens.runs.experiment as experiment
    from conceptlens.runs.confounded import ConfoundedConfig

    make = tiny_setup(tmp_path, monkeypatch)
    calls = []

    def fake(cfg, run_cfg, data, backbone, cache, cache_root, grounding, discovery):
        calls.append((cfg, run_cfg, tuple(data.classes), backbone.id, cache_root, grounding is not None))
        return {"results": {"zero_shot": {"mean": {"id": 90.0}}},
                "table": "| method | ID |\n|---|---|\n| x | 9 |"}

    monkeypatch.setattr(confounded, "run_confounded", fake)
    cfg = make({"zero_shot": {}}, confounded=ConfoundedConfig(pairs=[["cat", "wolf"]]))
    encoded = []
    monkeypatch.setattr(experiment, "encode_dataset", lambda *a, **k: encoded.append(1))
    from conceptlens.errors import DataError

    with pytest.raises(DataError, match=r"Class 'wolf' of the confounded pair \['cat', 'wolf'\]"):
        run_experiment(cfg, report=run_report)
    assert not encoded and not calls  # refused before any encoding
    monkeypatch.undo()
    make = tiny_setup(tmp_path, monkeypatch)
    monkeypatch.setattr(confounded, "run_confounded", fake)
    cfg = make({"zero_shot": {}}, confounded=ConfoundedConfig(pairs=[["cat", "dog"]]))
    run_experiment(cfg, report=run_report)
    (got, run_cfg, classes, backbone_id, cache_root, _), = calls
    assert got.pairs == [["cat", "dog"]] and run_cfg is cfg and classes == ("cat", "dog", "fox")
    assert backbone_id == "tiny:seed0" and str(cache_root) == str(tmp_path / "cache" / "features")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["confounded"]["results"]["zero_shot"]["mean"]["id"] == 90.0
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Confounded shift (top-1 %)\n\n| method | ID |\n|---|---|\n| x | 9 |" in md
    assert load_config(tmp_path / "out" / "config.toml").confounded.pairs == [["cat", "dog"]]


def test_a_method_that_cannot_fit_these_data_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    """A DataError from one method's fit (e.g. KnoBo grounding no concept in a few-shot subset)
    leaves that method out with its reason everywhere, instead of stopping the run."""
    from conceptlens.errors import DataError
    from conceptlens.methods.zero_shot import ZeroShot
    from conceptlens.runs import experiment
    from conceptlens.runs.config import FewShotConfig

    make = tiny_setup(tmp_path, monkeypatch)
    calls = []

    def refuse_two_shots(self, train, context, val):
        calls.append(len(train))
        if len(train) == 6:  # 2 shots x 3 classes: fails there only
            raise DataError("no concept could be grounded on 6 images")
        return real(self, train, context, val)

    real = ZeroShot._fit
    monkeypatch.setattr(ZeroShot, "_fit", refuse_two_shots)
    cfg = make({"zero_shot": {}, "linear_probe": {}}, fewshot=FewShotConfig([1, 2], [0, 1]), nec=0)
    cfg.data.train_per_class = 2
    out = experiment.run_experiment(cfg, write=False)
    assert out["results"]["zero_shot"]["failed"] == "no concept could be grounded on 6 images"
    assert "top1" in out["results"]["linear_probe"]
    assert "| zero_shot (failed) | — |" in out["table"]
    assert "zero_shot failed: no concept could be grounded on 6 images" in out["table"]
    # few-shot: 1 shot ran for both seeds, 2 shots failed for both; linear_probe everywhere
    zs = out["fewshot"]["zero_shot"]
    assert zs["2"] == [None, None] and all(v is not None for v in zs["1"])
    assert len(out["fewshot_failures"]["zero_shot"]) == 2
    assert "2-shot seed 0: no concept could be grounded" in out["fewshot_table"]
    assert None not in out["fewshot"]["linear_probe"]["2"]
    # a bug is not a data problem: it still stops the run
    monkeypatch.setattr(ZeroShot, "_fit", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        experiment.run_experiment(cfg, write=False)


def test_data_ray_sends_every_split_to_the_ray_encoder(tmp_path, monkeypatch):
    """[data] ray = "..." encodes through features/ray_encode.py (stand-ins here; the real cluster
    is tested in tests/features/test_ray_encode.py), connecting once for the three splits."""
    pytest.importorskip("ray", reason="ray is not installed")
    import conceptlens.features.ray_encode as ray_encode
    from conceptlens.features import encode_dataset
    from conceptlens.runs import experiment

    make = tiny_setup(tmp_path, monkeypatch)
    calls, connects = [], []

    def fake_ray(spec, dataset, cache, address, workers, num_gpus, cpus_per_worker, backbone, **kw):
        calls.append((spec, address, workers, num_gpus, cpus_per_worker, len(dataset)))
        return encode_dataset(backbone, dataset, cache, progress=False)

    monkeypatch.setattr(ray_encode, "connect", lambda address: connects.append(address) or False)
    monkeypatch.setattr(ray_encode, "encode_dataset_ray", fake_ray)
    cfg = make()
    cfg.data.ray, cfg.data.ray_workers, cfg.data.ray_gpus_per_worker = "local", 3, 0.5
    out = experiment.run_experiment(cfg, write=False)
    assert connects == ["local"]
    assert [c[:5] for c in calls] == [("offline", "local", 3, 0.5, 1.0)] * 3
    assert [c[5] for c in calls] == [out["sizes"][k] for k in ("train", "val", "test")]

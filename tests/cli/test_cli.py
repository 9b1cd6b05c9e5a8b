"""The CLI through its installed entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conceptlens.cli import main
from conceptlens.data.fashion_mnist import SYSTEM_DIR

# one cache for every CLI call in the session: --cache-dir now also holds the offline
# backbone's 1,000 ImageNet class-text embeddings, which take minutes to compute on a CPU
CACHE = os.environ["CONCEPTLENS_CACHE"]


def run(*args, cwd=None):
    exe = shutil.which("conceptlens")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "conceptlens", *args]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_entry_point_and_module_agree():
    a = run("backbones")
    b = subprocess.run([sys.executable, "-m", "conceptlens", "backbones"], capture_output=True,
                       text=True, timeout=120)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout and a.stdout.split() == ["hf", "offline", "open_clip", "precomputed"]


def test_dataset_command(image_folder):
    r = run("dataset", str(image_folder))
    assert r.returncode == 0, r.stderr
    assert "images: 12 images, 3 classes" in r.stdout and "4  red fox" in r.stdout


def test_bad_input_exits_3_with_a_message(tmp_path):
    r = run("encode", str(tmp_path / "missing"), "--out", str(tmp_path / "x.safetensors"))
    assert r.returncode == 3
    assert "conceptlens: error: Cannot read dataset" in r.stderr and "Traceback" not in r.stderr


def test_encode_then_reuse_as_precomputed(image_folder, tmp_path):
    out = tmp_path / "feats.safetensors"
    r = run("encode", str(image_folder), "--out", str(out), "--cache-dir", CACHE,
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "encoded 12 images (0 skipped)" in r.stdout
    from safetensors import safe_open

    with safe_open(str(out), framework="np") as f:
        emb = f.get_tensor("embedding")
        ids = json.loads(f.metadata()["ids"])
    assert emb.shape == (12, 384) and ids[0] == "cat/0.png"
    # the file is a valid precomputed backbone for the same dataset
    r2 = run("encode", str(image_folder), "--out", str(tmp_path / "again.safetensors"),
             "--backbone", f"precomputed:{out}")
    assert r2.returncode == 0, r2.stderr
    with safe_open(str(tmp_path / "again.safetensors"), framework="np") as f:
        np.testing.assert_allclose(f.get_tensor("embedding"), emb, rtol=1e-6)


def test_encode_skips_corrupt_image_when_asked(image_folder, tmp_path):
    (image_folder / "dog" / "bad.png").write_bytes(b"not a png")
    common = ["--out", str(tmp_path / "f.safetensors"), "--cache-dir", CACHE,
              "--no-progress"]
    failed = run("encode", str(image_folder), *common)
    assert failed.returncode == 3 and "dog/bad.png" in failed.stderr
    skipped = run("encode", str(image_folder), *common, "--on-error", "skip")
    assert skipped.returncode == 0 and "encoded 12 images (1 skipped)" in skipped.stdout


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_demo_then_explain_edit_intervene_report(tmp_path, image_folder):
    out = tmp_path / "demo"
    cache = ["--cache-dir", CACHE, "--no-progress"]
    r = run("demo", "--train-per-class", "3", "--val-per-class", "2", "--test-per-class", "3",
            *cache, "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "results.json").read_text())
    assert result["sizes"] == {"train": 30, "val": 20, "test": 30}
    assert set(result["results"]) == {"zero_shot", "linear_probe", "labo", "label_free", "knobo"}
    assert "min_val" in result["results"]["knobo"]["failed"]  # 3 images per class: too few to ground
    for row in (r for r in result["results"].values() if "failed" not in r):  # 3 test images per class
        assert row["top1"] * 30 == pytest.approx(round(row["top1"] * 30))
        assert row["mean_per_class"] == pytest.approx(row["top1"]) and row["top5"] >= row["top1"]
    assert "deletion_area_top" in result["results"]["label_free"]
    assert "| label_free |" in r.stdout and (out / "report.html").stat().st_size > 10_000
    # the grounding measures beside accuracy (the built-in attribute matrix), a dash without concepts
    assert "| concept AUROC (n) | precision@5 (coverage) | evidence@5 |" in r.stdout
    assert result["results"]["zero_shot"]["concept_auroc"] is None
    assert {"concept_auroc", "precision_at_k"} <= set(result["results"]["label_free"])
    matched = [m["text"] for m in result["grounding"]["methods"]["label_free"]["matches"]]
    assert matched == json.loads((out / "models" / "label_free" / "model.json").read_text())["concepts"]
    assert (out / "concept_matches.csv").is_file() and "id='grounding'" in (out / "report.html").read_text()

    model = out / "models" / "label_free"
    concept = json.loads((model / "model.json").read_text())["concepts"][0]
    r = run("edit", str(model), "--remove", concept, "--classes", "Sandal", "--note", "test",
            "--out", str(tmp_path / "edited"))
    assert r.returncode == 0, r.stderr
    assert f"{concept!r} x 0 for Sandal" in r.stdout
    saved = json.loads((tmp_path / "edited" / "model.json").read_text())
    assert saved["edit_log"][0]["concept"] == concept and saved["edit_log"][0]["note"] == "test"
    assert json.loads((model / "model.json").read_text())["edit_log"] == []  # original unchanged

    png = next(image_folder.rglob("*.png"))
    r = run("explain", str(tmp_path / "edited"), str(png), "--top", "3", *cache)
    assert r.returncode == 0, r.stderr
    assert "predicted" in r.stdout and "bias" in r.stdout

    r = run("intervene", str(model), "--dataset", "fashion-mnist", "--images-per-class", "2",
            "--concepts", str(out / "concepts.json"), "--steps", "3", *cache)
    assert r.returncode == 0, r.stderr
    curves = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("  ")]
    assert [c[0] for c in curves] == ["random", "uncertain", "contribution"]
    assert all(len(c) == 5 for c in curves)

    r = run("report", str(tmp_path / "edited"), "--dataset", "fashion-mnist",
            "--images-per-class", "2", "--out", str(tmp_path / "r.html"), *cache)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert "id='edit-log'" in page and concept in page
    # the built-in attributes reach the saved model's report; "none" leaves the section unmeasured
    assert "id='grounding-classes'" in page and "Not measured" not in page
    r = run("report", str(model), "--dataset", "fashion-mnist", "--images-per-class", "2",
            "--annotations", "none", "--out", str(tmp_path / "r2.html"), *cache)
    assert r.returncode == 0, r.stderr
    assert "Not measured" in (tmp_path / "r2.html").read_text()


def test_explain_refuses_another_backbone(tmp_path):
    import numpy as np

    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method

    b = FeatureBundle(["a", "b"], np.array([0, 1]), ("x", "y"), np.eye(2, dtype=np.float32), None, "")
    ctx = Context(("x", "y"), class_embedding=np.eye(2, dtype=np.float32), backbone_id="other@123")
    get_method("zero_shot").fit(b, ctx).save(tmp_path / "m")
    np.savez(tmp_path / "f.npz", ids=np.array(["a"]), embedding=np.ones((1, 2)))
    r = run("explain", str(tmp_path / "m"), "whatever.png", "--backbone",
            f"precomputed:{tmp_path / 'f.npz'}")
    assert r.returncode == 3 and "was fitted on features of 'other@123'" in r.stderr


def test_concepts_generate_filter_select_show(image_folder, tmp_path):
    gen, filt, sel = (tmp_path / f for f in ("gen.json", "filt.json", "sel.json"))
    r = run("concepts", "generate", "--source", "wordnet", "--dataset", str(image_folder),
            "--out", str(gen))
    assert r.returncode == 0, r.stderr
    assert "3 classes" in r.stdout
    common = ["--cache-dir", CACHE, "--no-progress"]
    r = run("concepts", "filter", str(gen), "--out", str(filt), "--dropped",
            str(tmp_path / "dropped.json"), "--dataset", str(image_folder),
            "--images-per-class", "2", "--activation-quantile", "0.2", *common)
    assert r.returncode == 0, r.stderr
    dropped = json.loads((tmp_path / "dropped.json").read_text())
    assert {d["filter"] for d in dropped} >= {"activation"}
    r = run("concepts", "select", str(filt), "--out", str(sel), "--per-class", "3",
            "--dataset", str(image_folder), "--images-per-class", "2", *common)
    assert r.returncode == 0, r.stderr
    selected = json.loads(sel.read_text())
    per_class = {c: sum(c in x["classes"] for x in selected["concepts"]) for c in selected["classes"]}
    assert all(1 <= n <= 3 for n in per_class.values()), per_class
    r = run("concepts", "show", str(sel), "--class", "dog")
    assert r.returncode == 0 and r.stdout.splitlines()[2].startswith("dog (")


def test_concepts_import_reports_and_writes(tmp_path):
    src = tmp_path / "class2concepts.json"
    src.write_text(json.dumps({"cat": ["whiskers", "", "fur"], "dog": ["fur"]}))
    r = run("concepts", "import", str(src), "--kind", "labo", "--out", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stderr
    assert "rejected '' (empty) for ['cat']" in r.stdout
    out = json.loads((tmp_path / "c.json").read_text())
    assert [c["text"] for c in out["concepts"]] == ["whiskers", "fur"]
    assert out["concepts"][1]["classes"] == ["cat", "dog"]


# -- flags reach what they name (in-process: the work itself is replaced by a recorder) ----

FAKE_RUN = {"backbone_id": "fake", "sizes": {}, "concept_report": {}, "table": "", "seconds": {}}


def test_demo_and_run_pass_their_flags(tmp_path, monkeypatch):
    import conceptlens.demo
    import conceptlens.runs

    calls = []

    def record(cfg, overwrite=False, **kw):
        calls.append((cfg, overwrite))
        return FAKE_RUN

    monkeypatch.setattr(conceptlens.demo, "run_experiment", record)
    assert main(["demo", "--batch-size", "7", "--workers", "3", "--no-progress", "--overwrite",
                 "--output-dir", str(tmp_path / "d"), "--cache-dir", str(tmp_path / "c")]) == 0
    cfg, overwrite = calls.pop()
    assert (cfg.batch_size, cfg.workers, cfg.progress, overwrite) == (7, 3, False, True)
    assert cfg.cache_dir == str(tmp_path / "c")

    monkeypatch.setattr(conceptlens.runs, "run_experiment", record)
    config = tmp_path / "run.toml"
    config.write_text("[methods.zero_shot]\n")
    assert main(["run", str(config), "--allow-non-ascii", "--on-error", "skip", "--batch-size", "5",
                 "--workers", "1", "--output-dir", str(tmp_path / "o")]) == 0
    cfg, overwrite = calls.pop()
    assert (cfg.data.allow_non_ascii, cfg.data.on_error, cfg.batch_size, cfg.workers) == (True, "skip", 5, 1)
    assert (cfg.output_dir, overwrite) == (str(tmp_path / "o"), False)
    assert main(["run", str(config)]) == 0
    cfg, _ = calls.pop()
    assert (cfg.data.allow_non_ascii, cfg.data.on_error, cfg.batch_size) == (False, "fail", 64)


def test_run_refuses_a_used_output_folder_before_work(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[data]\ndataset = "no/such/folder"\n\n[methods.zero_shot]\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert main(["run", str(config), "--output-dir", str(out)]) == 3
    err = capsys.readouterr().err
    assert "already exists and is not empty (results.json)" in err and "--overwrite" in err
    # with --overwrite the run starts, and fails on the missing dataset, leaving the old run
    assert main(["run", str(config), "--output-dir", str(out), "--overwrite"]) == 3
    assert "Cannot read dataset" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "{}"


def _precomputed_model(tmp_path):
    from conceptlens.backbones import get_backbone
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method

    images = [tmp_path / "a.png", tmp_path / "b.png"]
    np.savez(tmp_path / "f.npz", ids=np.array([str(p) for p in images]), embedding=np.eye(2))
    backbone = get_backbone(f"precomputed:{tmp_path / 'f.npz'}")
    b = FeatureBundle(["a", "b"], np.array([0, 1]), ("Ankle boot", "Sandal"), np.eye(2, dtype=np.float32),
                      None, "")
    ctx = Context(("Ankle boot", "Sandal"), ["laces", "straps"], np.eye(2, dtype=np.float32),
                  np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), backbone.id)
    get_method("posthoc").fit(b, ctx).save(tmp_path / "m")
    return tmp_path / "m", images, ["--backbone", f"precomputed:{tmp_path / 'f.npz'}"]


def test_explain_unknown_target_lists_the_classes(tmp_path, capsys):
    model, images, backbone = _precomputed_model(tmp_path)
    assert main(["explain", str(model), str(images[0]), *backbone, "--target", "sandal"]) == 2
    err = capsys.readouterr().err
    assert ("--target 'sandal' is not one of the model's classes. Did you mean 'Sandal'? "
            "Classes: Ankle boot, Sandal.") in err
    assert main(["explain", str(model), str(images[0]), *backbone, "--target", "Sandal"]) == 0
    assert "score for 'Sandal'" in capsys.readouterr().out


def test_explain_passes_batch_size_workers_progress(tmp_path, monkeypatch, capsys):
    import conceptlens.features

    model, images, backbone = _precomputed_model(tmp_path)
    seen = {}
    real = conceptlens.features.encode_dataset

    def spy(backbone, data, cache=None, **kw):
        seen.update(kw)
        return real(backbone, data, cache, **kw)

    monkeypatch.setattr(conceptlens.features, "encode_dataset", spy)
    assert main(["explain", str(model), *map(str, images), *backbone, "--batch-size", "3",
                 "--workers", "4", "--no-progress"]) == 0
    assert seen == {"batch_size": 3, "workers": 4, "progress": False}
    assert capsys.readouterr().out.count("predicted") == 2


def test_cache_dir_reaches_the_offline_text_cache(tmp_path, monkeypatch):
    """The offline backbone's ImageNet class-text embeddings go under --cache-dir/features,
    not into the user cache (a few stand-in class texts keep this fast)."""
    import conceptlens.backbones.offline as offline
    from conceptlens.backbones import open_backbone

    monkeypatch.setattr(offline, "imagenet_class_texts", lambda: ("a shoe", "a shirt", "a bag"))
    backbone = open_backbone("offline:top_t=2", tmp_path / "cache")
    assert backbone.feature_cache == tmp_path / "cache" / "features"
    backbone.encode_texts(["a sandal"])
    kinds = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "features").glob("*/namespace.json")]
    assert [k["kind"] for k in kinds] == ["sentence"] and kinds[0]["encoder"].startswith("all-MiniLM-L6-v2@")
    assert open_backbone("offline:top_t=2").feature_cache is None  # no --cache-dir: the user cache

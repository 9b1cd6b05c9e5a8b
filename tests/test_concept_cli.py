"""`conceptlens concepts ...` on bad input (outputs that exist, missing options) and
`concepts cav`, in process through `conceptlens.cli.main`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conceptlens.cli import main


def write_png(path, rgb):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), tuple(int(v) for v in rgb)).save(path)


@pytest.fixture
def concept_file(tmp_path):
    src = tmp_path / "class2concepts.json"
    src.write_text(json.dumps({"cat": ["whiskers", "fur"], "dog": ["fur", "floppy ears"]}))
    return src


def test_generate_refuses_to_overwrite_without_the_flag(tmp_path, concept_file, capsys):
    out = tmp_path / "out.json"
    out.write_text("keep me")
    args = ["concepts", "generate", "--source", "file", "--file", str(concept_file),
            "--classes", "cat,dog", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"conceptlens: error: {out} already exists; pass --overwrite to replace it" in err
    assert out.read_text() == "keep me"
    assert main([*args, "--overwrite"]) == 0
    assert {c["text"] for c in json.loads(out.read_text())["concepts"]} == {"whiskers", "fur",
                                                                            "floppy ears"}


def test_filter_refuses_to_overwrite_out_or_dropped(tmp_path, concept_file, capsys):
    out, dropped, cs = tmp_path / "filtered.json", tmp_path / "dropped.json", tmp_path / "cs.json"
    assert main(["concepts", "import", str(concept_file), "--out", str(cs)]) == 0
    dropped.write_text("[]")
    # refused before any backbone is loaded, so the backbone spec is never read
    args = ["concepts", "filter", str(cs), "--out", str(out), "--dropped", str(dropped),
            "--backbone", "precomputed:/nonexistent.safetensors"]
    assert main(args) == 2
    assert f"{dropped} already exists; pass --overwrite" in capsys.readouterr().err
    assert not out.exists() and dropped.read_text() == "[]"
    out.write_text("x")
    dropped.unlink()
    assert main(args) == 2
    assert f"{out} already exists; pass --overwrite" in capsys.readouterr().err
    # with --overwrite it gets past the check (and then fails on the missing feature file)
    assert main([*args, "--overwrite"]) == 2
    assert "precomputed feature file /nonexistent.safetensors does not exist" in capsys.readouterr().err


def test_import_refuses_to_overwrite(tmp_path, concept_file, capsys):
    out = tmp_path / "c.json"
    out.write_text("x")
    assert main(["concepts", "import", str(concept_file), "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["concepts", "import", str(concept_file), "--out", str(out), "--overwrite"]) == 0


def test_select_without_dataset_is_a_clear_error(tmp_path, concept_file, capsys):
    r = main(["concepts", "select", str(concept_file), "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert r == 2 and "concepts select needs training images" in err and "--dataset SPEC" in err
    assert "Traceback" not in err and not (tmp_path / "s.json").exists()


# -- concepts cav --------------------------------------------------------------------------

CONCEPTS = ["dotted", "plain", "striped"]


@pytest.fixture
def cav_setup(tmp_path):
    """Concept folders of PNGs and a precomputed backbone giving each image a chosen embedding:
    concept c's images lie along axis c. `plain/same.png` has the same bytes as
    `striped/same.png`, so it must not be a negative for 'striped'."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    images, negatives = tmp_path / "concepts", tmp_path / "negatives"
    ids, rows = [], []
    for c, name in enumerate(CONCEPTS):
        for i in range(8):
            write_png(images / name / f"{i}.png", (30 * c + i, 7 * i, 100))
            ids.append(f"{name}/{i}.png")
            rows.append(2 * np.eye(6)[c] + 0.5 * rng.normal(size=6))
        for i in range(6):
            write_png(negatives / name / f"n{i}.png", (200, 30 * c + i, 5 * i))
            ids.append(f"{name}/n{i}.png")
            rows.append(-np.eye(6)[c] + 0.5 * rng.normal(size=6))
    write_png(images / "striped" / "same.png", (1, 2, 3))
    write_png(images / "plain" / "same.png", (1, 2, 3))
    ids += ["striped/same.png", "plain/same.png"]
    rows += [2 * np.eye(6)[2], 2 * np.eye(6)[2]]
    feats = tmp_path / "feats.safetensors"
    save_file({"embedding": np.asarray(rows, np.float32)}, str(feats), metadata={"ids": json.dumps(ids)})
    emb = dict(zip(ids, np.asarray(rows) / np.linalg.norm(rows, axis=1, keepdims=True), strict=True))
    return images, negatives, feats, emb


def test_cav_command_learns_writes_and_feeds_posthoc(tmp_path, cav_setup, capsys):
    from conceptlens.backbones import get_backbone
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method
    from conceptlens.methods.posthoc import CAVBank, learn_cav_bank

    images, _, feats, emb = cav_setup
    out = tmp_path / "cavs.safetensors"
    args = ["concepts", "cav", "--images", str(images), "--backbone", f"precomputed:{feats}",
            "--out", str(out), "--n-samples", "4", "--seed", "5", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 CAVs (mean val accuracy" in printed and str(out) in printed
    bank = CAVBank.load(out)
    assert bank.concepts == CONCEPTS and bank.vectors.shape == (3, 6)
    assert bank.meta["on"] == "embedding" and bank.meta["backbone"].startswith("precomputed:")
    assert bank.val_accuracy.min() >= 0.75 and bank.meta["C"] == 0.1

    # the same bank from the examples the reference would use: negatives are the other
    # concepts' images, without the image whose bytes are also a 'striped' positive
    def rows(names):
        return np.asarray([emb[n] for n in names], np.float32)

    files = {c: sorted(p.relative_to(images).as_posix() for p in (images / c).glob("*.png"))
             for c in CONCEPTS}
    examples = {c: (rows(files[c]), rows([f for o in CONCEPTS if o != c for f in files[o]
                                          if not (c in ("striped", "plain") and f.endswith("same.png"))]))
                for c in CONCEPTS}
    direct = learn_cav_bank(examples, C=0.1, n_samples=4, seed=5)
    np.testing.assert_allclose(bank.vectors, direct.vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bank.val_accuracy, direct.val_accuracy)

    # no silent overwrite; --overwrite replaces
    assert main(args) == 2
    assert f"{out} already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--C", "1.0"]) == 0
    assert CAVBank.load(out).meta["C"] == 1.0

    # posthoc(cavs=...) uses these vectors as its concepts
    backbone_id = get_backbone(f"precomputed:{feats}").id
    X = rows(list(emb))
    labels = np.arange(len(X)) % 2
    train = FeatureBundle(list(emb), labels, ("x", "y"), X, None, backbone_id)
    model = get_method("posthoc", lam=1e-3, cavs=str(out))
    model.fit(train, Context(("x", "y"), backbone_id=backbone_id))
    assert model.concepts_ == CONCEPTS
    np.testing.assert_allclose(model.transform(train), CAVBank.load(out).margins(X), rtol=1e-4, atol=1e-5)


def test_cav_command_with_a_negatives_folder(tmp_path, cav_setup, capsys):
    from conceptlens.methods.posthoc import CAVBank

    images, negatives, feats, _ = cav_setup
    out = tmp_path / "cavs.safetensors"
    assert main(["concepts", "cav", "--images", str(images), "--negatives", str(negatives),
                 "--backbone", f"precomputed:{feats}", "--out", str(out), "--n-samples", "3",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "striped          9          6" in printed  # 8 + same.png positives, 6 negatives
    bank = CAVBank.load(out)
    assert bank.meta["negatives"] == str(negatives) and bank.val_accuracy.min() == 1.0
    assert bank.meta["sampled_with_replacement"] == []


def test_cav_command_errors(tmp_path, cav_setup, capsys):
    images, negatives, feats, _ = cav_setup
    base = ["concepts", "cav", "--backbone", f"precomputed:{feats}", "--no-progress"]
    assert main([*base, "--images", str(tmp_path / "none"), "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "--images" in capsys.readouterr().err
    import shutil

    shutil.rmtree(negatives / "plain")
    assert main([*base, "--images", str(images), "--negatives", str(negatives),
                 "--out", str(tmp_path / "b.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "has no subfolder for concept(s) ['plain']" in err and "leave out --negatives" in err
    assert main([*base, "--images", str(images), "--out", str(tmp_path / "c.safetensors"),
                 "--n-samples", "0"]) == 2
    assert "n_samples >= 1" in capsys.readouterr().err

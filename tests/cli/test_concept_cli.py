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
    assert main(args) == 3
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
    assert main(args) == 3
    assert f"{dropped} already exists; pass --overwrite" in capsys.readouterr().err
    assert not out.exists() and dropped.read_text() == "[]"
    out.write_text("x")
    dropped.unlink()
    assert main(args) == 3
    assert f"{out} already exists; pass --overwrite" in capsys.readouterr().err
    # with --overwrite it gets past the check (and then fails on the missing feature file)
    assert main([*args, "--overwrite"]) == 3
    assert "precomputed feature file /nonexistent.safetensors does not exist" in capsys.readouterr().err


def test_import_refuses_to_overwrite(tmp_path, concept_file, capsys):
    out = tmp_path / "c.json"
    out.write_text("x")
    assert main(["concepts", "import", str(concept_file), "--out", str(out)]) == 3
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
    assert main(args) == 3
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
    assert main([*base, "--images", str(tmp_path / "none"), "--out", str(tmp_path / "a.safetensors")]) == 3
    assert "--images" in capsys.readouterr().err
    import shutil

    shutil.rmtree(negatives / "plain")
    assert main([*base, "--images", str(images), "--negatives", str(negatives),
                 "--out", str(tmp_path / "b.safetensors")]) == 3
    err = capsys.readouterr().err
    assert "has no subfolder for concept(s) ['plain']" in err and "leave out --negatives" in err
    assert main([*base, "--images", str(images), "--out", str(tmp_path / "c.safetensors"),
                 "--n-samples", "0"]) == 3
    assert "n_samples >= 1" in capsys.readouterr().err


# -- concepts evaluate -----------------------------------------------------------------------

MODEL_CONCEPTS = ["striped", "dotted", "furry coat", "tail"]
ATTRIBUTES = {"Striped": [1, 0], "dotted": [1, 1], "fur": [0, 1], "wings": [0, 0]}  # (cat, dog)


@pytest.fixture
def evaluate_setup(tmp_path):
    """A folder of cat/dog PNGs, a precomputed backbone holding their embeddings and the texts'
    ('furry coat' lies near 'fur', so it matches by embedding; 'tail' matches nothing), a posthoc
    model saved on it, and a class-level annotation CSV."""
    from safetensors.numpy import save_file

    from conceptlens.annotations import ConceptAnnotations
    from conceptlens.backbones import get_backbone
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method

    rng = np.random.default_rng(0)
    root, ids, rows = tmp_path / "images", [], []
    for c, name in enumerate(["cat", "dog"]):
        for i in range(15):
            write_png(root / name / f"{i}.png", (40 * c + i, 9 * i, 50))
            ids.append(f"{name}/{i}.png")
            rows.append(np.eye(6)[c] + 0.8 * rng.normal(size=6))
    texts = {t: rng.normal(size=6) for t in [*MODEL_CONCEPTS[:2], "tail", *ATTRIBUTES]}
    texts["furry coat"] = texts["fur"] + 0.2 * rng.normal(size=6)
    names = list(texts)
    text_emb = np.asarray([texts[t] / np.linalg.norm(texts[t]) for t in names], np.float32)
    feats = tmp_path / "feats.safetensors"
    save_file({"embedding": np.asarray(rows, np.float32), "text_embedding": text_emb}, str(feats),
              metadata={"ids": json.dumps(ids), "texts": json.dumps(names)})
    backbone = get_backbone(f"precomputed:{feats}")
    X = np.asarray(rows) / np.linalg.norm(rows, axis=1, keepdims=True)
    train = FeatureBundle(ids, np.repeat([0, 1], 15), ("cat", "dog"), X.astype(np.float32), None, backbone.id)
    concept_emb = text_emb[[names.index(t) for t in MODEL_CONCEPTS]]
    ctx = Context(("cat", "dog"), MODEL_CONCEPTS, concept_emb, np.ones((2, 4), np.float32),
                  np.eye(2, 6, dtype=np.float32), backbone.id)
    get_method("posthoc", lam=1e-3).fit(train, ctx).save(tmp_path / "model")
    ann = ConceptAnnotations("class", tuple(ATTRIBUTES), np.array(list(ATTRIBUTES.values())).T,
                             classes=("cat", "dog"))
    csv = ann.to_csv(tmp_path / "attributes.csv")
    common = ["--annotations", str(csv), "--dataset", str(root), "--backbone", f"precomputed:{feats}",
              "--split", "train", "--images-per-class", "all", "--no-progress",
              "--cache-dir", str(tmp_path / "cache"), "--embed", "backbone", "--match-threshold", "0.8"]
    return tmp_path / "model", common, backbone, root, ann


def _split_bundle(backbone, root, tmp_path):
    from conceptlens.data import load_dataset
    from conceptlens.features import encode_split

    return encode_split(backbone, load_dataset(str(root)), "train", "all", 0, cache=tmp_path / "c2",
                        progress=False)


def _printed_aurocs(out: str) -> dict:
    """{concept: AUROC text} from the per-concept table."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("concept "))
    table = {}
    for ln in lines[start + 1:]:
        if not ln.strip():
            break
        cells = ln.split("  ")
        table[cells[0].strip()] = ln.split()[-1]
    return table


def test_concepts_evaluate_prints_the_measures_of_a_saved_model(tmp_path, evaluate_setup, capsys):
    from sklearn.metrics import roc_auc_score

    from conceptlens.grounding import evaluate_grounding
    from conceptlens.methods import Method

    model_dir, common, backbone, root, ann = evaluate_setup
    out_json = tmp_path / "g.json"
    assert main(["concepts", "evaluate", str(model_dir), *common, "--k", "2", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    # the direct computation: the saved model on the same split, sklearn for each AUROC
    model = Method.load(model_dir)
    test = _split_bundle(backbone, root, tmp_path)
    A, labels = model.transform(test), np.asarray(test.labels)
    truth = {"striped": ATTRIBUTES["Striped"], "furry coat": ATTRIBUTES["fur"]}
    expected = {c: roc_auc_score(np.asarray(t)[labels], A[:, MODEL_CONCEPTS.index(c)])
                for c, t in truth.items()}
    table = _printed_aurocs(printed)
    assert table == {"striped": f"{expected['striped']:.3f}", "dotted": "—",  # true of both: no AUROC
                     "furry coat": f"{expected['furry coat']:.3f}", "tail": "—"}
    assert "furry coat  fur" in printed and "embedding" in printed and "(nearest:" in printed
    mean = np.mean(list(expected.values()))
    assert (f"mean concept AUROC {mean:.3f} over 2 concepts (3 of 4 matched to an annotated attribute)"
            in printed)
    # the JSON equals evaluate_grounding with the backbone's text side as the matcher
    from conceptlens.grounding import text_embedder

    direct = evaluate_grounding(model, test, ann, embed=text_embedder(backbone, tmp_path / "c3"), k=2)
    saved = json.loads(out_json.read_text())
    assert saved["concept_auroc"] == pytest.approx(direct["concept_auroc"]) == pytest.approx(mean)
    assert saved["precision_at_k"] == (None if direct["precision_at_k"] is None
                                       else pytest.approx(direct["precision_at_k"]))
    assert f"precision@2 {direct['precision_at_k']:.3f}" in printed
    # --json is not overwritten without --overwrite
    assert main(["concepts", "evaluate", str(model_dir), *common, "--json", str(out_json)]) == 3
    assert f"{out_json} already exists; pass --overwrite" in capsys.readouterr().err


def test_concepts_evaluate_raw_scores_the_annotated_attributes(tmp_path, evaluate_setup, capsys):
    """--raw without a model: each annotated attribute scored by the cosine of image and text
    embeddings (the backbone's raw concept similarity)."""
    from sklearn.metrics import roc_auc_score

    _, common, backbone, root, _ = evaluate_setup
    assert main(["concepts", "evaluate", "--raw", *common]) == 0
    printed = capsys.readouterr().out
    test = _split_bundle(backbone, root, tmp_path)
    labels = np.asarray(test.labels)
    text = backbone.encode_texts(list(ATTRIBUTES))
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    scores = test.embedding @ text.T
    expected = {a: roc_auc_score(np.asarray(t)[labels], scores[:, j])
                for j, (a, t) in enumerate(ATTRIBUTES.items()) if len(set(t)) == 2}
    table = _printed_aurocs(printed)
    assert table == {"Striped": f"{expected['Striped']:.3f}", "dotted": "—", "fur": f"{expected['fur']:.3f}",
                     "wings": "—"}
    assert f"mean concept AUROC {np.mean(list(expected.values())):.3f} over 2 concepts" in printed
    assert "precision@" not in printed  # no weights, no explanation precision


def test_concepts_evaluate_errors(tmp_path, evaluate_setup, capsys):
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method

    model_dir, common, backbone, _, _ = evaluate_setup
    assert main(["concepts", "evaluate", *common]) == 2
    assert "needs a saved model folder (MODEL), or --raw" in capsys.readouterr().err
    assert main(["concepts", "evaluate", str(model_dir), *common, "--k", "0"]) == 2
    assert "--k must be a positive integer" in capsys.readouterr().err
    assert main(["concepts", "evaluate", str(model_dir), *common, "--match-threshold", "2"]) == 2
    assert "--match-threshold is a cosine similarity in [-1, 1]; got 2.0" in capsys.readouterr().err
    b = FeatureBundle(["a", "b"], np.array([0, 1]), ("cat", "dog"), np.eye(2, 6, dtype=np.float32), None,
                      backbone.id)
    ctx = Context(("cat", "dog"), class_embedding=np.eye(2, 6, dtype=np.float32), backbone_id=backbone.id)
    get_method("zero_shot").fit(b, ctx).save(tmp_path / "zs")
    assert main(["concepts", "evaluate", str(tmp_path / "zs"), *common]) == 3
    assert "'zero_shot' model, which has no concepts to ground" in capsys.readouterr().err
    i = common.index("--annotations")
    folder_default = common[:i] + common[i + 2:]  # 'auto' on an image folder: no annotations known
    assert main(["concepts", "evaluate", str(model_dir), *folder_default]) == 3
    assert "no concept annotations for dataset" in capsys.readouterr().err


def test_matching_embedders():
    """The default matcher is the sentence encoder: it links part words to the attributes that
    name them and keeps unrelated garment words apart, where the offline backbone's ConSE-mixed
    text side put 'sweater' next to 'has short sleeves' (0.82)."""
    from conceptlens.errors import DataError
    from conceptlens.grounding import match_concepts, matching_embedder

    attributes = ["has laces", "has short sleeves", "has a handle", "covers the ankle"]
    embed = matching_embedder("sentence")
    got = {m["text"]: m["match"] for m in match_concepts(["lace", "sweater", "handle", "zipper"], attributes,
                                                          embed, 0.7)}
    assert got == {"lace": "has laces", "sweater": None, "handle": "has a handle", "zipper": None}
    assert matching_embedder("none") is None
    with pytest.raises(DataError, match="unknown matching embedder 'clip'"):
        matching_embedder("clip")


@pytest.fixture
def mixed_set(tmp_path):
    from conceptlens.concepts import ConceptSet

    cs = ConceptSet(["cat", "dog"])
    cs.add("whiskers", ["cat"], [{"source": "wordnet"}])
    for i in range(30):
        cs.add(f"word {i}", [], [{"source": "vocabulary"}])
    return cs.save(tmp_path / "mixed.json")


def test_show_lists_global_concepts_and_json_prints_only_json(mixed_set, capsys):
    assert main(["concepts", "show", str(mixed_set)]) == 0
    out = capsys.readouterr().out
    assert "\ncat (1)\n  - whiskers  [wordnet]" in out and "\ndog (0)\n" in out
    assert "\nglobal concepts (tied to no class) (30)\n  - word 0  [vocabulary]" in out
    assert "... 20 more (--limit N to show more)" in out
    assert main(["concepts", "show", str(mixed_set), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)  # the whole output is JSON, and complete
    assert obj["format"] == "conceptlens.concepts" and len(obj["concepts"]) == 31


def test_show_into_a_closed_pipe_ends_quietly(mixed_set):
    import subprocess
    import sys

    # `| head -1`: the reader closes after one line; no BrokenPipeError traceback
    proc = subprocess.run(f"{sys.executable} -m conceptlens concepts show {mixed_set} --limit 100 | head -1",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("31 concepts for 2 classes")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_import_tells_label_free_from_labo_by_content(tmp_path, capsys):
    # Label-free CBM ships each class's list sorted (data/concept_sets/gpt3_init/*.json); LaBo's
    # class2concepts.json keeps generation order. Neither name says which it is.
    lf = tmp_path / "cifar_important.json"
    lf.write_text(json.dumps({"cat": ["a long tail", "pointed ears", "whiskers"], "dog": ["a snout"]}))
    labo = tmp_path / "concepts.json"
    labo.write_text(json.dumps({"cat": ["whiskers", "a long tail", "pointed ears"], "dog": ["a snout"]}))
    for path, kind in ((lf, "label_free"), (labo, "labo")):
        out = tmp_path / f"{kind}.out.json"
        assert main(["concepts", "import", str(path), "--out", str(out)]) == 0
        assert f"read {path} as {kind}" in capsys.readouterr().out
        concepts = json.loads(out.read_text())["concepts"]
        assert {p["source"] for c in concepts for p in c["provenance"]} == {kind}


def test_import_warns_about_a_class_without_concepts(tmp_path, capsys):
    src = tmp_path / "c.json"
    src.write_text(json.dumps({"cat": ["whiskers", "fur", "paws"], "dog": []}))
    assert main(["concepts", "import", str(src), "--out", str(tmp_path / "o.json")]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 class(es) have no concept in" in err and "'dog'" in err


def test_images_per_class_takes_run_sizes():
    from conceptlens.cli.concept_commands import _per_class
    from conceptlens.errors import ConfigError

    assert (_per_class("0"), _per_class("all"), _per_class("300")) == ("all", "all", 300)
    with pytest.raises(ConfigError, match="--images-per-class must be a positive integer, 0 or 'all'"):
        _per_class("-5")
    from conceptlens.cli import build_parser

    args = build_parser().parse_args(["concepts", "filter", "c.json", "--out", "o.json",
                                      "--train-per-class", "20", "--one-length-cap"])
    assert args.images_per_class == "20" and args.one_length_cap


def test_select_global_budget_is_checked(tmp_path, mixed_set, capsys):
    args = ["concepts", "select", str(mixed_set), "--out", str(tmp_path / "s.json"), "--dataset", "x",
            "--global-budget", "many"]
    assert main(args) == 2
    assert "--global-budget must be 'auto' or an integer >= 0; got 'many'" in capsys.readouterr().err

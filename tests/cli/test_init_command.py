"""`conceptlens init FOLDER` (a starter config that a run accepts) and the MNIST export script."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from conceptlens.cli import init_commands
from conceptlens.errors import ConfigError
from conceptlens.runs.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _run_init(*argv) -> int:
    parser = argparse.ArgumentParser()
    init_commands.add_commands(parser.add_subparsers())
    args = parser.parse_args(["init", *map(str, argv)])
    return args.func(args)


def _folder(root: Path, counts: dict[str, int]) -> Path:
    from PIL import Image

    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (4, 4), 10 * i).save(root / cls / f"{i}.png")
    return root


def test_init_writes_a_config_that_fits_the_data(tmp_path, capsys):
    data = _folder(tmp_path / "animals", {"bear": 20, "zebra": 30})
    out = tmp_path / "run.toml"
    assert _run_init(data, "--out", out) == 0
    cfg = load_config(out)
    # per class at the default 70/10/20: bear 14/2/4, zebra 21/3/6 -> sizes fit the smallest class
    assert (cfg.data.train_per_class, cfg.data.val_per_class, cfg.data.test_per_class) == (14, 2, 4)
    assert cfg.data.dataset == str(data) and cfg.concepts.sources == ["wordnet"]
    text = out.read_text()
    assert "# classes (2): bear, zebra" in text and "[concepts.sources.llm]" in text
    assert "Next: conceptlens run" in capsys.readouterr().out
    # every concept head class-consistent; KnoBo's min_val lowered to what 14 images per class allow
    heads = {name: cfg.methods[name] for name in ("labo", "label_free", "knobo")}
    assert all(p["class_consistent"] is True for p in heads.values())
    assert heads["knobo"]["on"] == "auto" and heads["knobo"]["min_val"] == 1
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        _run_init(data, "--out", out)
    assert _run_init(data, "--out", out, "--overwrite") == 0


def test_init_suggests_a_source_without_class_names_when_wordnet_cannot_separate(tmp_path, capsys):
    # WordNet 3.0 does not know these names
    data = _folder(tmp_path / "shapes", {"blorp": 10, "zlonk": 10})
    out = tmp_path / "run.toml"
    assert _run_init(data, "--out", out) == 0
    cfg = load_config(out)
    assert cfg.concepts.sources == ["vocabulary"] and cfg.concepts.global_budget == "auto"
    text = out.read_text()
    assert "WordNet knows 0 of 2 class names" in text
    # the honest refusal: the concepts are word associations, said in the config and on screen,
    # and no head is made class-consistent (no link to hold it to)
    assert "word\n# associations, not evidence" in text
    assert "word associations" in capsys.readouterr().out
    assert not any(p.get("class_consistent") for p in cfg.methods.values())


def _export_module():
    path = REPO / "scripts" / "export_mnist_digits.py"
    spec = importlib.util.spec_from_file_location("export_mnist_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_is_deterministic_and_lossless(tmp_path):
    from PIL import Image

    mod = _export_module()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 7, 3])
    a = mod.export(tmp_path / "a", images, labels)
    b = mod.export(tmp_path / "b", images, labels)
    assert a == b  # the same data give byte-identical files
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.png"))
    assert files == ["seven/0000.png", "seven/0002.png", "three/0003.png", "zero/0001.png"]
    for rel, i in (("seven/0002.png", 2), ("zero/0001.png", 1)):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / rel)), images[i])
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    digest = hashlib.sha256()
    for i in range(4):
        rel = f"{mod.NAMES[labels[i]]}/{i:04d}.png"
        digest.update(rel.encode() + b"\0" + (tmp_path / "a" / rel).read_bytes())
    assert digest.hexdigest() == a
    # files respect the umask (no 0600 from a temporary file)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a/zero/0001.png").stat().st_mode & 0o777 == 0o666 & ~mask

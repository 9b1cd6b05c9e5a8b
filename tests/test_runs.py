"""Run configs: parsing, errors, round trip, and a recorded run on a small image folder."""

from __future__ import annotations

import json

import pytest

from conceptlens.errors import ConfigError
from conceptlens.runs import load_config, run_experiment
from conceptlens.runs.config import to_toml


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
    from conftest import write_png
    from safetensors.numpy import save_file

    from conceptlens.methods import Method

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
    out = run_experiment(cfg)
    assert out["results"]["zero_shot"]["top1"] > 0.8
    folder = tmp_path / "out"
    assert {p.name for p in folder.iterdir()} == {"config.toml", "environment.json", "results.json",
                                                  "results.md", "models"}
    env = json.loads((folder / "environment.json").read_text())
    assert env["backbone_id"].startswith("precomputed:f.safetensors@") and env["packages"]["numpy"]
    assert load_config(folder / "config.toml").to_dict() | {"progress": False} == cfg.to_dict()
    model = Method.load(folder / "models" / "linear_probe")
    assert model.classes_ == ("cat", "dog")
    assert "| zero_shot |" in (folder / "results.md").read_text()

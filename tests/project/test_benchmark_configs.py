"""Every configs/benchmarks/*.toml is a valid run config; no data, no CLIP model needed."""

from pathlib import Path

import pytest

from conceptlens.data.catalog import parse_spec
from conceptlens.runs.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "benchmarks").glob("*.toml"))


def test_there_are_benchmark_configs():
    names = {p.stem for p in CONFIGS}
    for d in ("cifar10", "cifar100", "cub", "imagenet"):
        assert {f"{d}_labo", f"{d}_label_free"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_benchmark_config_loads(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the concept files are named from the repository root
    cfg = load_config(path)
    named = parse_spec(cfg.data.dataset)  # a named dataset, its options valid (no file is read)
    assert named is not None and named.kind.name == path.stem.split("_")[0]
    assert cfg.backbone.startswith("open_clip:")
    text = path.read_text()
    assert "Published top-1" in text  # the published numbers sit beside the setting

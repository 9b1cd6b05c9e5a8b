"""What an output folder records, so a result can be reproduced exactly."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .._io import write_json, write_text
from .config import RunConfig, to_toml

PACKAGES = ("conceptlens", "torch", "numpy", "scipy", "scikit-learn", "safetensors",
            "transformers", "sentence-transformers", "efficientnet-lite-pytorch", "wn")


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "packages": versions, "git_commit": commit}


def record_run(cfg: RunConfig, out: dict, concepts, models: dict) -> Path:
    folder = Path(cfg.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "config.toml", to_toml(cfg))
    write_json(folder / "environment.json", environment() | {
        "backbone_id": out["backbone_id"], "preprocess": out["preprocess"]})
    if concepts is not None:
        concepts.save(folder / "concepts.json")
    write_json(folder / "results.json", {k: v for k, v in out.items() if k not in ("table",)})
    text = "## Results\n\n" + out["table"] + "\n"
    if out.get("fewshot_table"):
        text += "\n## Few-shot (top-1 %)\n\n" + out["fewshot_table"] + "\n"
    write_text(folder / "results.md", text)
    for name, model in models.items():
        model.save(folder / "models" / name)
    return folder

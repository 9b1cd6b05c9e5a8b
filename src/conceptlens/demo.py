"""The main job on the built-in offline default: Fashion-MNIST -> features -> accuracies."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .backbones import DEFAULT_BACKBONE, get_backbone
from .data import few_shot, load_fashion_mnist, split_indices
from .features import encode_dataset, encode_texts
from .features.encode import image_cache
from .methods import LinearProbe, ZeroShot

log = logging.getLogger("conceptlens")


@dataclass
class DemoConfig:
    backbone: str = DEFAULT_BACKBONE
    train_per_class: int = 300
    val_per_class: int = 50
    test_per_class: int = 200  # 0 = the full 10,000-image test set
    seed: int = 0
    cache_dir: str | None = None
    data_dir: str | None = None
    download: bool = False
    batch_size: int = 64
    workers: int = 2
    progress: bool = True


@dataclass
class DemoResult:
    config: dict
    backbone_id: str
    sizes: dict[str, int]
    zero_shot_accuracy: float
    linear_probe_accuracy: float
    linear_probe_C: float
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"backbone     {self.backbone_id}",
            "images       " + ", ".join(f"{k} {v}" for k, v in self.sizes.items()),
            f"zero-shot    {100 * self.zero_shot_accuracy:.1f}% test accuracy",
            f"linear probe {100 * self.linear_probe_accuracy:.1f}% test accuracy "
            f"(C={self.linear_probe_C:g}, chosen on val)",
            "time         " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
        ]
        return "\n".join(lines)


def _take(dataset, indices, per_class: int, seed: int) -> np.ndarray:
    return few_shot(dataset, indices, "all" if per_class <= 0 else per_class, seed)


def run_demo(config: DemoConfig | None = None) -> DemoResult:
    cfg = config or DemoConfig()
    t0 = time.perf_counter()
    seconds = {}
    data = load_fashion_mnist(cfg.data_dir, download=cfg.download)
    splits = split_indices(data, seed=cfg.seed, val_fraction=0.1)
    parts = {
        "train": _take(data, splits["train"], cfg.train_per_class, cfg.seed),
        "val": _take(data, splits["val"], cfg.val_per_class, cfg.seed),
        "test": _take(data, splits["test"], cfg.test_per_class, cfg.seed),
    }
    backbone = get_backbone(cfg.backbone)
    seconds["load"] = time.perf_counter() - t0
    cache = image_cache(backbone, None if cfg.cache_dir is None else Path(cfg.cache_dir) / "features")
    t = time.perf_counter()
    bundles = {
        name: encode_dataset(backbone, data.subset(idx), cache, batch_size=cfg.batch_size,
                             workers=cfg.workers, progress=cfg.progress)
        for name, idx in parts.items()
    }
    seconds["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    text_cache = None if cfg.cache_dir is None else Path(cfg.cache_dir) / "features"
    zs = ZeroShot().fit(backbone, data.classes,
                        encode=lambda texts: encode_texts(backbone, texts, text_cache))
    test = bundles["test"]
    zs_acc = float((zs.predict(test.embedding) == test.labels).mean())
    probe_input = "features" if backbone.feature_dim else "embedding"
    tr, va = bundles["train"], bundles["val"]
    probe = LinearProbe().fit(getattr(tr, probe_input), tr.labels,
                              getattr(va, probe_input), va.labels)
    lp_acc = float((probe.predict(getattr(test, probe_input)) == test.labels).mean())
    seconds["fit"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return DemoResult(
        config=asdict(cfg), backbone_id=backbone.id,
        sizes={k: len(v) for k, v in bundles.items()},
        zero_shot_accuracy=zs_acc, linear_probe_accuracy=lp_acc, linear_probe_C=probe.C_,
        seconds=seconds,
    )

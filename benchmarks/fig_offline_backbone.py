"""The README's figures for the offline backbone on Fashion-MNIST: zero-shot and linear-probe
accuracy at several input resolutions, the ablation of its two adaptations (inverting
dark-background grey images, the ConSE projection of texts), and the full test set.

    .venv/bin/python benchmarks/fig_offline_backbone.py resolution  # -> results/resolution.json
    .venv/bin/python benchmarks/fig_offline_backbone.py ablation    # -> results/offline_ablation.json
    .venv/bin/python benchmarks/fig_offline_backbone.py full-test   # -> results/fashion_mnist_full_test.json

Subsets follow the demo (300 train / 50 val / 200 test images per class, seed 0) except
`full-test` (1,000 train / 100 val per class, the whole 10,000-image test set). Zero-shot
prompts are "a photo of a {class}."; the linear probe is conceptlens' `linear_probe` (C
chosen on validation). Encode seconds are wall clock on this machine, cold cache unless the
cache already held the images (the JSON says which cache folder was used).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from conceptlens._io import write_json
from conceptlens.backbones import get_backbone
from conceptlens.data import few_shot, load_dataset, split_indices
from conceptlens.features import encode_dataset, encode_texts
from conceptlens.features.encode import image_cache
from conceptlens.methods import Context, get_method

ROOT = Path(__file__).resolve().parent / "results"


def measure(spec: str, per_class: tuple[int, int, int], cache_dir: str | None, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    data = load_dataset("fashion-mnist")
    splits = split_indices(data, seed=seed)
    parts = {name: few_shot(data, splits[name], "all" if n == 0 else n, seed)
             for name, n in zip(("train", "val", "test"), per_class, strict=True)}
    backbone = get_backbone(spec)
    cache = image_cache(backbone, None if cache_dir is None else Path(cache_dir) / "features")
    t = time.perf_counter()
    bundles = {k: encode_dataset(backbone, data.subset(v), cache, progress=False) for k, v in parts.items()}
    encode_s = time.perf_counter() - t
    prompts = [f"a photo of a {c}." for c in data.classes]
    text_root = None if cache_dir is None else Path(cache_dir) / "features"
    class_emb = encode_texts(backbone, prompts, text_root)
    context = Context(tuple(data.classes), class_embedding=class_emb, backbone_id=backbone.id)
    t = time.perf_counter()
    test = bundles["test"]
    zs = get_method("zero_shot").fit(bundles["train"], context)
    probe = get_method("linear_probe").fit(bundles["train"], context, bundles["val"])
    fit_s = time.perf_counter() - t
    labels = np.asarray(test.labels)
    return {
        "backbone": spec, "backbone_id": backbone.id,
        "zero_shot": float((zs.predict(test) == labels).mean()),
        "linear_probe": float((probe.predict(test) == labels).mean()),
        "linear_probe_C": float(probe.C_),
        "sizes": {k: len(v) for k, v in bundles.items()},
        "seconds": {"encode": encode_s, "fit": fit_s, "total": time.perf_counter() - t0},
        "encode_images_per_s": sum(len(v) for v in bundles.values()) / encode_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("resolution", "ablation", "full-test"))
    ap.add_argument("--cache-dir", default=None, help="feature cache root (default: the user cache)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    demo = (300, 50, 200)
    if args.what == "resolution":
        runs = {str(px): measure(f"offline:image_size={px}", demo, args.cache_dir)
                for px in (128, 160, 192, 224)}
    elif args.what == "ablation":
        runs = {
            "default (invert=auto, text_mix=0.5)": measure("offline", demo, args.cache_dir),
            "no inversion (invert=never)": measure("offline:invert=never", demo, args.cache_dir),
            "texts without ConSE projection (text_mix=0)": measure("offline:text_mix=0", demo,
                                                                   args.cache_dir),
        }
    else:
        runs = {"192": measure("offline", (1000, 100, 0), args.cache_dir)}
    out = args.out or str(ROOT / {"resolution": "resolution.json", "ablation": "offline_ablation.json",
                                  "full-test": "fashion_mnist_full_test.json"}[args.what])
    write_json(out, {"figure": args.what, "script": "benchmarks/fig_offline_backbone.py",
                     "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
                     "cache_dir": args.cache_dir or "user cache", "runs": runs})
    for name, r in runs.items():
        print(f"{name}: zero-shot {r['zero_shot']:.4f}  linear probe {r['linear_probe']:.4f}  "
              f"encode {r['seconds']['encode']:.0f} s ({r['encode_images_per_s']:.1f} img/s)")


if __name__ == "__main__":
    main()

"""Encode-stage throughput against the bare model forward pass, and a fully cached rerun.

    .venv/bin/python benchmarks/bench_encode.py [--images 640] [--out benchmarks/results/encode.json]

On the same Fashion-MNIST test images and batches, times (a) the bare EfficientNet-Lite0
forward on tensors prepared beforehand, (b) the whole cold encode stage (read, hash,
decode, preprocess in threads, forward, ConSE, cache writes) and (c) a fully cached rerun.
Target: (b) reaches at least 0.8 of (a)'s images/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from conceptlens._io import write_json
from conceptlens.backbones import get_backbone
from conceptlens.data import load_fashion_mnist
from conceptlens.features import encode_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backbone", default="offline")
    ap.add_argument("--out", default="benchmarks/results/encode.json")
    args = ap.parse_args()

    data = load_fashion_mnist(split="test")
    data = data.subset(np.random.default_rng(0).permutation(len(data))[: args.images])
    bb = get_backbone(args.backbone)
    bb.encode_texts(["warm-up"])  # load the text side before timing
    prepared = torch.stack([bb.prepare(data.images.decode(i, data.images.read(i)))
                            for i in range(len(data))])
    batches = torch.split(prepared, args.batch_size)
    with torch.inference_mode():
        bb.model(batches[0])  # warm-up

    bare, stage, cached = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        t = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                bb.model(b)
        bare.append(len(data) / (time.perf_counter() - t))
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            encode_dataset(bb, data, tmp, batch_size=args.batch_size, progress=False)
            stage.append(len(data) / (time.perf_counter() - t))
            t = time.perf_counter()
            encode_dataset(bb, data, tmp, batch_size=args.batch_size, progress=False)
            cached.append(time.perf_counter() - t)

    result = {
        "backbone": bb.id, "preprocess": bb.preprocess_id, "images": len(data),
        "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "bare_forward_images_per_s": round(max(bare), 1),
        "encode_stage_images_per_s": round(max(stage), 1),
        "ratio_stage_to_bare": round(max(stage) / max(bare), 3),
        "cached_rerun_seconds": round(min(cached), 3),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()

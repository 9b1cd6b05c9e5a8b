"""Encode-stage throughput, PyTorch against ONNX Runtime, side by side in one run.

    .venv/bin/python benchmarks/bench_encode.py [--images 640] [--out benchmarks/results/encode.json]

On the same Fashion-MNIST test images and batches (offline backbone at its default 192 px),
times, interleaved so drift in machine load hits all alike:
(a) the bare EfficientNet-Lite0 forward on tensors prepared beforehand, in PyTorch and in ONNX
    Runtime (backbones/onnx_tower.py), and the cosine between their outputs;
(b) the whole cold encode stage (read, hash, decode, preprocess in threads, forward, ConSE,
    cache writes) with each runtime, and (c) a fully cached rerun.
Goals: ONNX Runtime >= 2x PyTorch's images/s, cosine >= 0.999; the stage >= 0.8 of its forward.
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


def _cosine(a, b) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/encode.json")
    args = ap.parse_args()

    data = load_fashion_mnist(split="test")
    data = data.subset(np.random.default_rng(0).permutation(len(data))[: args.images])
    with tempfile.TemporaryDirectory() as onnx_home:
        bbs = {rt: get_backbone(f"offline:runtime={rt}", feature_cache=Path(onnx_home) / "features")
               for rt in ("torch", "onnx")}
        t = time.perf_counter()
        towers = {rt: bb.tower() for rt, bb in bbs.items()}  # ONNX: exported once, then checked
        export_seconds = time.perf_counter() - t
        for bb in bbs.values():
            bb.encode_texts(["warm-up"])  # load the text side before timing
        prepared = torch.stack([bbs["torch"].prepare(data.images.decode(i, data.images.read(i)))
                                for i in range(len(data))])
        batches = torch.split(prepared, args.batch_size)
        outs = {}
        with torch.inference_mode():
            for rt, tower in towers.items():
                outs[rt] = tower(batches[0])  # warm-up, and the outputs to compare
        cosine = min(_cosine(outs["torch"][k].numpy(), outs["onnx"][k].numpy()) for k in (0, 1))

        bare = {rt: [] for rt in towers}
        stage = {rt: [] for rt in towers}
        cached = []
        for _ in range(args.repeats):
            for rt, tower in towers.items():
                t = time.perf_counter()
                with torch.inference_mode():
                    for b in batches:
                        tower(b)
                bare[rt].append(len(data) / (time.perf_counter() - t))
            for rt, bb in bbs.items():
                with tempfile.TemporaryDirectory() as tmp:
                    t = time.perf_counter()
                    encode_dataset(bb, data, tmp, batch_size=args.batch_size, progress=False)
                    stage[rt].append(len(data) / (time.perf_counter() - t))
                    t = time.perf_counter()
                    encode_dataset(bb, data, tmp, batch_size=args.batch_size, progress=False)
                    cached.append(time.perf_counter() - t)

    best = {k: {rt: round(max(v), 1) for rt, v in d.items()} for k, d in (("bare", bare), ("stage", stage))}
    result = {
        "backbone": bbs["torch"].id, "preprocess": bbs["torch"].preprocess_id, "images": len(data),
        "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "bare_forward_images_per_s": best["bare"],
        "encode_stage_images_per_s": best["stage"],
        "ratio_onnx_to_torch_forward": round(max(bare["onnx"]) / max(bare["torch"]), 2),
        "ratio_onnx_to_torch_stage": round(max(stage["onnx"]) / max(stage["torch"]), 2),
        "ratio_stage_to_forward": {rt: round(max(stage[rt]) / max(bare[rt]), 3) for rt in towers},
        "min_cosine_onnx_to_torch": round(cosine, 7),
        "onnx_export_and_check_seconds": round(export_seconds, 1),
        "cached_rerun_seconds": round(min(cached), 3),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()

"""Encode throughput: the local encode stage against Ray with 1 and 2 workers, and what that
means for ImageNet on N nodes.

    .venv/bin/python benchmarks/bench_ray.py [--images 640] [--workers 1 2] [--cpus N]
        [--gpu-images-per-s R] [--out benchmarks/results/ray]

On the same Fashion-MNIST test images (the subset bench_encode.py uses), each into a fresh
cache folder: (a) `encode_dataset` in this process; (b) `encode_dataset_ray` on a local Ray
cluster (this machine only, loopback) with 1 and 2 actors, `--cpus` split between them. A Ray
run pays a fixed start-up (the key pass, an actor and its model per worker), measured with a
run on one batch; the steady rate is (images - one batch) / (time - start-up), which is what
a long run (ImageNet) sees. Each Ray cache is checked against the local one (same tensors).

The per-image costs (core-seconds per image for the whole encode, and for decode + preprocess
alone) give the ImageNet arithmetic: CPU nodes, and GPU nodes whose rate per GPU is given
with --gpu-images-per-s (measure it: this script on one GPU node with --ray local
--gpus-per-worker 1) or left as a formula. Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

# the local cluster stays on loopback (Ray would otherwise advertise the machine's outward IP)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np
import torch

from conceptlens._io import write_json, write_text
from conceptlens.backbones import get_backbone
from conceptlens.data import load_fashion_mnist
from conceptlens.features import encode_dataset
from conceptlens.features.ray_encode import connect, encode_dataset_ray, require_ray

IMAGENET = 1_281_167  # ILSVRC-2012 training images


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="offline")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                    help="CPUs for the local cluster, split evenly between the actors")
    ap.add_argument("--gpus-per-worker", type=float, default=0)
    ap.add_argument("--gpu-images-per-s", type=float,
                    help="measured forward rate of one GPU, for the GPU rows of the ImageNet table")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--node-cpus", type=int, default=32, help="cores per node in the ImageNet table")
    ap.add_argument("--node-gpus", type=int, default=8, help="GPUs per node in the ImageNet table")
    ap.add_argument("--out", default="benchmarks/results/ray")
    args = ap.parse_args()

    ray = require_ray()
    data = load_fashion_mnist(split="test")
    data = data.subset(np.random.default_rng(0).permutation(len(data))[: args.images])
    one_batch = data.subset(range(args.batch_size))
    bb = get_backbone(args.backbone)

    with tempfile.TemporaryDirectory() as warm:  # model, class texts and their cache ready
        encode_dataset(bb, one_batch, warm, batch_size=args.batch_size, progress=False)
    # decode + preprocess alone, on one thread: the CPU work a GPU node must still do per image
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _, prep_s = timed(lambda: [bb.prepare(data.images.decode(i, data.images.read(i)))
                               for i in range(len(data))])
    torch.set_num_threads(torch_threads)

    results: dict = {"local": {}, "ray": {}}
    with tempfile.TemporaryDirectory() as tmp:
        local, local_s = timed(lambda: encode_dataset(bb, data, Path(tmp) / "local",
                                                      batch_size=args.batch_size, progress=False))
        results["local"] = {"seconds": round(local_s, 2), "images_per_s": round(len(data) / local_s, 1),
                            "torch_threads": torch_threads}
        connect("local", num_cpus=args.cpus)
        try:
            for w in args.workers:
                opts = {"workers": w, "batch_size": args.batch_size, "progress": False,
                        "cpus_per_worker": max(1, args.cpus // w), "num_gpus": args.gpus_per_worker,
                        "backbone": bb}  # the driver's copy: only its id is used
                _, start_s = timed(lambda o=opts, w=w: encode_dataset_ray(
                    args.backbone, one_batch, Path(tmp) / f"start{w}", **o))
                out, total_s = timed(lambda o=opts, w=w: encode_dataset_ray(
                    args.backbone, data, Path(tmp) / f"ray{w}", **o))
                steady = (len(data) - len(one_batch)) / max(total_s - start_s, 1e-9)
                results["ray"][str(w)] = {
                    "cpus_per_worker": opts["cpus_per_worker"], "seconds": round(total_s, 2),
                    "images_per_s": round(len(data) / total_s, 1),
                    "startup_seconds": round(start_s, 2), "steady_images_per_s": round(steady, 1),
                    "same_as_local": bool(np.array_equal(out.embedding, local.embedding)
                                          and np.array_equal(out.features, local.features)),
                    # a worker with fewer CPUs runs torch on fewer threads: another summation
                    # order, so float-level differences (the tests pin threads and get equality)
                    "max_abs_diff": float(max(np.abs(out.embedding - local.embedding).max(),
                                              np.abs(out.features - local.features).max())),
                }
        finally:
            ray.shutdown()

    # per-image costs in core-seconds: the whole local encode (on its torch threads) and the
    # decode + preprocess part (one thread)
    cost = local_s * torch_threads / len(data)
    prep = prep_s / len(data)
    rows = []
    for n in args.nodes:
        cpu_h = IMAGENET * cost / (n * args.node_cpus) / 3600
        row = {"nodes": n, "cpu_nodes_hours": round(cpu_h, 2)}
        if args.gpu_images_per_s:
            # a GPU node runs at the slower of its GPUs and its cores' decoding
            node_rate = min(args.node_gpus * args.gpu_images_per_s, args.node_cpus / prep)
            row["gpu_nodes_hours"] = round(IMAGENET / (n * node_rate) / 3600, 2)
        rows.append(row)
    result = {
        "backbone": bb.id, "images": len(data), "batch_size": args.batch_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "ray_version": ray.__version__,
        "date": time.strftime("%Y-%m-%d"), **results,
        "core_seconds_per_image": round(cost, 5), "prep_core_seconds_per_image": round(prep, 6),
        "imagenet": {"images": IMAGENET, "node_cpus": args.node_cpus, "node_gpus": args.node_gpus,
                     "gpu_images_per_s": args.gpu_images_per_s, "rows": rows},
    }
    print(json.dumps(result, indent=2))
    write_json(Path(args.out + ".json"), result)
    write_text(Path(args.out + ".md"), markdown(result))


def markdown(r: dict) -> str:
    lines = [f"Encode throughput, {r['images']} Fashion-MNIST test images, batch {r['batch_size']}, "
             f"{r['machine']}, Ray {r['ray_version']} (local cluster, loopback), {r['date']}.", "",
             "| run | images/s (end to end) | start-up (s) | images/s (steady) | same bytes as local "
             "(max abs difference) |",
             "|---|---|---|---|---|",
             "| local encode_dataset | {0} | - | {0} | - |".format(r["local"]["images_per_s"])]
    for w, x in r["ray"].items():
        lines.append(f"| Ray, {w} worker(s) x {x['cpus_per_worker']} CPU | {x['images_per_s']} | "
                     f"{x['startup_seconds']} | {x['steady_images_per_s']} | {x['same_as_local']} "
                     f"({x.get('max_abs_diff', float('nan')):.1e}) |")
    im = r["imagenet"]
    c, p = r["core_seconds_per_image"], r["prep_core_seconds_per_image"]
    lines += ["", f"Per image: {c} core-seconds for the whole encode, {p} for decode + preprocess "
              "(28x28 images; an ImageNet JPEG costs roughly 5-10 ms of one core to decode and "
              "resize, so measure `prep` on your own images before trusting the GPU rows).", "",
              f"ImageNet ({im['images']:,} images), hours = images x cost / (nodes x cores) on "
              f"CPU nodes of {im['node_cpus']} cores; on GPU nodes of {im['node_gpus']} GPUs, "
              f"images / (nodes x min(GPUs x GPU rate, cores / prep)):", "",
              "| nodes | CPU nodes (h) | GPU nodes (h) |", "|---|---|---|"]
    for row in im["rows"]:
        gpu = row.get("gpu_nodes_hours", "give --gpu-images-per-s")
        lines.append(f"| {row['nodes']} | {row['cpu_nodes_hours']} | {gpu} |")
    lines += ["", "What to set: `conceptlens encode DATA --ray HEAD:6379 --cache-dir /shared/cache "
              "--ray-workers <nodes x GPUs per node> --ray-gpus-per-worker 1 --ray-cpus-per-worker "
              "<cores per GPU> --batch-size 256` (GPU nodes), or `--ray-workers <nodes> "
              "--ray-cpus-per-worker <cores per node>` (CPU nodes). The images and --cache-dir "
              "must be on a filesystem every node mounts at the same path; a run that stops "
              "resumes from its finished shards, locally or on Ray."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

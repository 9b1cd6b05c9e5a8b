"""Streaming at a size whose features do not fit the memory cap: proximal Newton on float16
shards, peak memory against the cap, time per path point, and the arithmetic for ImageNet.

    .venv/bin/python benchmarks/bench_solver_stream_scale.py [--n 200000 --p 4500 --m 1000]
        [--cap-mb 1024] [--points 3] [--lam-fraction 0.25] [--solver newton]

Issue 15's streaming check: n x p standardised features x m classes in float16 shards (1.8 GB
at the defaults), generated chunk by chunk (the matrix never sits in memory, here either),
labels from a sparse ground truth plus Gumbel noise (bench_solver_scale.py's generator, by
chunks). A child process solves a path of --points lams from lambda_max down to
--lam-fraction x lambda_max with `solve_path(StreamedFeatures(shards, max_memory_bytes=cap),
..., solver=--solver)` and reports its RSS before the solve and its peak RSS during it
(VmHWM after clearing it), the planned bytes, disk passes and bytes read, and each point's
seconds, steps, full gradients and non-zeros. The ImageNet line scales the measured seconds
per full gradient to 1,281,167 x 4,500 x 1,000 (the features Label-free CBM fits on), on
this machine. Written to benchmarks/results/solver_stream_scale.{json,md} (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_solver_scale, beside this file

from bench_solver_scale import rss, rss_now_and_reset_peak  # noqa: E402
from conceptlens._io import write_json, write_text  # noqa: E402
from conceptlens.solvers import StreamedFeatures, solve_path, write_feature_shards  # noqa: E402

IMAGENET = (1_281_167, 4_500, 1_000)


class _Generated:
    """Rows of the problem, made on demand by row blocks (what write_feature_shards slices)."""

    def __init__(self, n, p, m, seed=0, block=16384):
        self.n, self.p, self.m, self.block, self.seed = n, p, m, block, seed
        rng = np.random.default_rng(seed)
        self.W = (rng.normal(size=(m, p)) * (rng.random((m, p)) < 0.02) * 2).astype(np.float32)
        self.shape = (n, p)
        self.dtype = np.dtype(np.float32)

    def __len__(self):
        return self.n

    def _block(self, k):  # rows k*block.. of X, the same whoever asks
        rows = min(self.block, self.n - k * self.block)
        return np.random.default_rng([self.seed, k]).standard_normal((rows, self.p), dtype=np.float32)

    def rows(self, a, b):
        B = self.block
        parts = [self._block(k) for k in range(a // B, (b + B - 1) // B)]
        return np.concatenate(parts)[a - (a // B) * B : b - (a // B) * B]

    def __getitem__(self, key):
        return self.rows(key.start or 0, min(self.n, key.stop))

    def labels(self):
        y = np.empty(self.n, dtype=np.int64)
        for a in range(0, self.n, self.block):
            b = min(self.n, a + self.block)
            x = self.rows(a, b).astype(np.float16).astype(np.float32)  # the values the shards hold
            g = np.random.default_rng([self.seed, a, 1]).gumbel(size=(b - a, self.m)).astype(np.float32)
            y[a:b] = (x @ self.W.T + g).argmax(1)
        return y


def worker(cfg_path: str) -> None:
    cfg = json.loads(Path(cfg_path).read_text())
    y = np.load(cfg["labels"])
    src = StreamedFeatures(cfg["shards"], max_memory_bytes=cfg["cap"])
    before = rss_now_and_reset_peak()
    t = time.perf_counter()
    path = solve_path(src, y, alpha=0.99, lam=cfg["lam"], n_lambdas=cfg["points"], n_classes=cfg["m"],
                      tol=cfg["tol"], solver=cfg["solver"], epsilon=cfg["lam_fraction"])
    seconds = time.perf_counter() - t
    out = {"seconds": seconds, "rss_before_bytes": before, "peak_rss_bytes": rss("VmHWM"),
           "solver": path.solver, "lambdas": path.lambdas, "point_seconds": path.seconds, "nec": path.nec,
           "full_gradients": path.full_gradients, "objectives": path.objectives,
           "active_features": path.active_features, "disk_passes": src.stats.passes,
           "bytes_read": src.stats.bytes_read, "chunk_rows": src.stats.chunk_rows,
           "planned_bytes": src.stats.planned_bytes}
    Path(cfg["dir"], "result.json").write_text(json.dumps(out))


def gemm_seconds_per_full_gradient(n, p, m) -> float:
    """This machine's float32 GEMM speed, timed on a 16,384-row slice, scaled to one full
    gradient (X W^T plus R^T X) of n x p x m."""
    rows = 16384
    x, w, r = torch.randn(rows, p), torch.randn(m, p), torch.randn(rows, m)
    x @ w.T
    t = time.perf_counter()
    for _ in range(3):
        x @ w.T
        r.T @ x
    per = (time.perf_counter() - t) / 3
    return per * n / rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--p", type=int, default=4_500)
    ap.add_argument("--m", type=int, default=1_000)
    ap.add_argument("--cap-mb", type=float, default=1024)
    ap.add_argument("--points", type=int, default=3)
    ap.add_argument("--lam-fraction", type=float, default=0.25)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--solver", default="newton", choices=["newton", "fista"])
    ap.add_argument("--shard-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results/solver_stream_scale.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    shard_dir = Path(args.shard_dir or tempfile.mkdtemp(prefix="solver-stream-shards-"))
    try:
        run(args, shard_dir)
    finally:
        if not args.shard_dir:
            shutil.rmtree(shard_dir, ignore_errors=True)


def run(args, shard_dir: Path) -> None:
    gen = _Generated(args.n, args.p, args.m)
    t = time.perf_counter()
    shards = write_feature_shards(shard_dir, gen, rows_per_shard=16384, dtype="float16")
    y = gen.labels()
    disk = sum(s.stat().st_size for s in shards)
    made = time.perf_counter() - t
    from conceptlens.solvers import lambda_max  # one pass, float64

    lmax = lambda_max(StreamedFeatures(shards, max_memory_bytes=int(args.cap_mb * 2**20)), y, 0.99, args.m)
    lam = args.lam_fraction * lmax
    cap = int(args.cap_mb * 2**20)
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "y.npy", y)
        cfg = {"shards": [str(s) for s in shards], "labels": str(Path(d) / "y.npy"), "dir": d, "cap": cap,
               "lam": lam, "m": args.m, "tol": args.tol, "points": args.points, "solver": args.solver,
               "lam_fraction": args.lam_fraction}
        Path(d, "cfg.json").write_text(json.dumps(cfg))
        subprocess.run([sys.executable, __file__, "--worker", str(Path(d) / "cfg.json")], check=True,
                       env={**os.environ})
        res = json.loads(Path(d, "result.json").read_text())
    fg_seconds = gemm_seconds_per_full_gradient(args.n, args.p, args.m)
    work = sum(res["full_gradients"])
    result = {"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(),
              "problem": {k: v for k, v in vars(args).items() if k not in ("worker", "shard_dir")},
              "shards": {"files": len(shards), "bytes": disk, "dtype": "float16",
                         "write_seconds": round(made, 1)},
              "lambda_max": lmax, "lam": lam, "cap_bytes": cap, **res,
              "gemm_seconds_per_full_gradient": round(fg_seconds, 2),
              "seconds_per_full_gradient": round(res["seconds"] / max(work, 1e-9), 2)}
    n, p, m = IMAGENET
    scale = (n * p * m) / (args.n * args.p * args.m)
    result["imagenet"] = {"n": n, "p": p, "m": m, "float16_bytes": n * p * 2,
                          "seconds_per_full_gradient": round(result["seconds_per_full_gradient"] * scale, 1),
                          "path_seconds_at_this_work": round(res["seconds"] * scale, 1)}
    write_json(args.out, result)
    write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("objectives",)}, indent=1))


def _mb(b) -> str:
    return f"{b / 2**20:.1f} MB"


def markdown(r) -> str:
    a = r["problem"]
    over = r["peak_rss_bytes"] - r["rss_before_bytes"]
    lines = [f"# Streaming at scale ({r['date']}, CPU, {r['threads']} threads)", "",
             f"n = {a['n']}, p = {a['p']}, m = {a['m']}, float16 shards: {_mb(r['shards']['bytes'])} on disk "
             f"({r['shards']['files']} files); cap (max_memory_bytes) {_mb(r['cap_bytes'])}; solver "
             f"{r['solver']}; alpha 0.99, tol {a['tol']}; path of {a['points']} lams from lambda_max "
             f"{r['lambda_max']:.4g} to {r['lam']:.4g}.", "",
             f"Total {r['seconds']:.1f} s; {sum(r['full_gradients']):.1f} full gradients "
             f"({r['seconds_per_full_gradient']} s each, all costs included; this machine's float32 GEMMs "
             f"alone: {r['gemm_seconds_per_full_gradient']} s); {r['disk_passes']} disk passes, "
             f"{r['bytes_read'] / 2**30:.2f} GiB read, chunks of {r['chunk_rows']} rows.", "",
             f"Memory: RSS {_mb(r['rss_before_bytes'])} before the solve, peak {_mb(r['peak_rss_bytes'])} "
             f"during it: {_mb(over)} above, for a cap of {_mb(r['cap_bytes'])} (planned "
             f"{_mb(r['planned_bytes'])}; the returned path's float64 weights, "
             f"{_mb(8 * a['m'] * a['p'] * a['points'])}, are outside the cap).", "",
             "| lam | seconds | full gradients | non-zeros / class | features in the last working set |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for lam, s, fg, nec, act in zip(r["lambdas"], r["point_seconds"], r["full_gradients"], r["nec"],
                                    r["active_features"], strict=True):
        lines.append(f"| {lam:.4g} | {s:.1f} | {fg:.2f} | {nec:.1f} | {act} |")
    i = r["imagenet"]
    lines += ["", f"ImageNet (Label-free CBM's final layer: {i['n']:,} x {i['p']:,} x {i['m']:,}, "
              f"{i['float16_bytes'] / 2**30:.1f} GiB in float16): a full gradient here would take "
              f"{i['seconds_per_full_gradient']} s on this 2-core machine, and this path's work "
              f"{i['path_seconds_at_this_work'] / 3600:.1f} h; the memory stays the cap's, not n's."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

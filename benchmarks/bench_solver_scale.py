"""The elastic-net solver at scale: working sets on against off (today's solver), one lam and a path.

    .venv/bin/python benchmarks/bench_solver_scale.py [--n 50000 --p 2000 --m 200] [--lam L]

Issue 15's problem: n standardised concept activations, p concepts, m classes, labels from a
sparse ground truth plus Gumbel noise (benchmarks/bench_solver.py's generator), alpha = 0.99,
float32, tol 1e-6. Without --lam, lam is chosen first by the working-set path with
target_nec = --target-nec (about 40 non-zeros per class), and that selection is reported too.

Rows, each scored with one float64 objective:
- single lam: today's `fit_elastic_net` cold from zero (what a fixed lam costs today) and
  `solve_path(lam=..., n_lambdas=--single-points, working_set=True)`: the strong rule needs a
  path, so the working-set answer to one lam is a short path to it;
- a path of --path-points lams from lambda_max to lam: `solve_path` with working sets off
  (today) and on, per point: seconds, objective, non-zeros per class, full-gradient
  equivalents (one = X W^T plus R^T X over all features), features in the working set.
Written to benchmarks/results/solver_scale.{json,md} (--out). Peers (the patched glm_saga)
and streaming from disk are later parts of issue 15.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from conceptlens._io import write_json, write_text
from conceptlens.solvers import elastic_net_objective, fit_elastic_net, solve_path


def problem(n, p, m, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    W = rng.normal(size=(m, p)) * (rng.random((m, p)) < 0.05) * 2
    y = (X @ W.T + rng.gumbel(size=(n, m))).argmax(1)
    X = (X - X.mean(0)) / X.std(0)
    return X, y


def path_rows(path, m) -> list[dict]:
    return [{"lam": lam, "seconds": round(s, 3), "objective_f32": obj, "nonzeros_per_class": nec,
             "full_gradients": round(fg, 2), "active_features": a, "kkt_added": k}
            for lam, s, obj, nec, fg, a, k in zip(path.lambdas, path.seconds, path.objectives, path.nec,
                                                  path.full_gradients, path.active_features, path.kkt_added,
                                                  strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--p", type=int, default=2000)
    ap.add_argument("--m", type=int, default=200)
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--target-nec", type=float, default=40.0, help="picks lam when --lam is not given")
    ap.add_argument("--alpha", type=float, default=0.99)
    ap.add_argument("--path-points", type=int, default=20)
    ap.add_argument("--single-points", type=int, default=10)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--out", default="benchmarks/results/solver_scale.json")
    args = ap.parse_args()
    X, y = problem(args.n, args.p, args.m)
    alpha, m = args.alpha, args.m
    common = dict(alpha=alpha, n_classes=m, tol=args.tol, dtype=torch.float32)
    result = {"problem": vars(args), "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
              "device": "CPU"}

    def save():
        if args.out:
            write_json(args.out, result)

    lam = args.lam
    if lam is None:
        t = time.perf_counter()
        sel = solve_path(X, y, target_nec=args.target_nec, working_set=True, **common)
        lam = sel.lambdas[-1]
        result["selection"] = {"lam": lam, "seconds": round(time.perf_counter() - t, 2), "nec": sel.nec[-1],
                               "points": len(sel.lambdas),
                               "full_gradients": round(sum(sel.full_gradients), 1)}
        print("selection", result["selection"], flush=True)
    result["lam"] = lam

    def score(W, b):
        return elastic_net_objective(W, b, X, y, lam, alpha, n_classes=m)

    single = {}
    t = time.perf_counter()
    W, b, info = fit_elastic_net(X, y, lam, **common)
    single["today"] = {"seconds": round(time.perf_counter() - t, 2), "objective": score(W, b),
                       "nonzeros_per_class": float((W != 0).sum() / m), "iterations": info.iterations,
                       "full_gradients": round(info.products / 2, 1)}
    print("single today", single["today"], flush=True)
    result["single_lambda"] = single
    save()
    t = time.perf_counter()
    path = solve_path(X, y, lam=lam, n_lambdas=args.single_points, working_set=True, **common)
    single["working_set"] = {"seconds": round(time.perf_counter() - t, 2),
                             "objective": score(path.weights[-1], path.biases[-1]),
                             "nonzeros_per_class": path.nec[-1], "points": len(path.lambdas),
                             "full_gradients": round(sum(path.full_gradients), 1)}
    print("single working set", single["working_set"], flush=True)
    save()

    result["path"] = {}
    for name, ws in (("today", False), ("working_set", True)):
        t = time.perf_counter()
        path = solve_path(X, y, lam=lam, n_lambdas=args.path_points, working_set=ws, **common)
        result["path"][name] = {"seconds": round(time.perf_counter() - t, 2),
                                "objective": score(path.weights[-1], path.biases[-1]),
                                "full_gradients": round(sum(path.full_gradients), 1),
                                "points": path_rows(path, m)}
        print("path", name, {k: v for k, v in result["path"][name].items() if k != "points"}, flush=True)
        save()
    result["speedup_single"] = round(single["today"]["seconds"] / single["working_set"]["seconds"], 2)
    result["speedup_path"] = round(result["path"]["today"]["seconds"]
                                   / result["path"]["working_set"]["seconds"], 2)
    save()
    if args.out:
        write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "path"}, indent=2))


def markdown(r) -> str:
    a = r["problem"]
    lines = [f"# Elastic-net solver at scale: working sets on/off ({r['date']}, {r['device']}, "
             f"{r['threads']} threads)", "",
             f"n = {a['n']}, p = {a['p']}, m = {a['m']}, alpha = {a['alpha']}, lam = {r['lam']:.4g}, "
             f"tol = {a['tol']}, float32. Full gradient = X W^T plus R^T X over all features.", "",
             "## One lam", "", "| solver | seconds | objective | non-zeros / class | full gradients |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in r["single_lambda"].items():
        lines.append(f"| {name} | {row['seconds']} | {row['objective']:.7f} "
                     f"| {row['nonzeros_per_class']:.1f} | {row['full_gradients']} |")
    lines += ["", f"Speed-up: {r['speedup_single']}x.", "", f"## Path of {a['path_points']} lams", ""]
    for name, row in r["path"].items():
        lines += [f"### {name}: {row['seconds']} s, final objective {row['objective']:.7f}, "
                  f"{row['full_gradients']} full gradients", "",
                  "| lam | seconds | objective (f32) | non-zeros / class | full gradients "
                  "| features solved on | KKT added |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {p['lam']:.4g} | {p['seconds']} | {p['objective_f32']:.7f} "
                  f"| {p['nonzeros_per_class']:.1f} | {p['full_gradients']} | {p['active_features']} "
                  f"| {p['kkt_added']} |" for p in row["points"]]
        lines.append("")
    lines.append(f"Speed-up of the path: {r['speedup_path']}x.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

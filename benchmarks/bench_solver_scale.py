"""The elastic-net solver at scale, side by side: patched glm_saga, today's solver, working sets,
and streaming from disk under a memory cap; one lam and a path of lams.

    .venv/bin/python benchmarks/bench_solver_scale.py [--n 50000 --p 2000 --m 200] [--lam L]
        [--solvers glm_saga,today,working_set,streaming] [--stream-cap-mb C]

Issue 15's problem: n standardised concept activations, p concepts, m classes, labels from a
sparse ground truth plus Gumbel noise (benchmarks/bench_solver.py's generator), then rounded to
float16 (--stream-dtype) so that the streamed shards hold exactly the matrix every solver gets;
alpha = 0.99, float32, tol 1e-6. Without --lam, lam is chosen first by the working-set path with
target_nec = --target-nec (about 40 non-zeros per class); that selection is reported too.

Solvers (--solvers picks a subset):
- glm_saga: benchmarks/glm_saga_patched.py, glm_saga's SAGA with one product per step instead of
  its (B, m, p) broadcasts, called with Label-free CBM's settings (step 0.1, batch 256,
  --saga-epochs 1000 epochs per lam at most, tol 1e-4, zero init); one lam is its k=1 grid
  [lam], the path its k-point grid from lambda_max (glm_saga's own max_reg) to lam, warm-started.
- today: `fit_elastic_net(..., solver="fista")` cold (one lam) and `solve_path(...,
  solver="fista")` with working sets off (path): the solver before Newton (issue 15's "today").
- working_set: `solve_path(..., working_set=True, solver="fista")`; one lam is a --single-points
  path to it (the strong rule screens from the previous point).
- newton: `fit_elastic_net(..., solver="newton")` cold (one lam) and `solve_path(...,
  solver="newton")` (path): proximal Newton steps on per-class working sets with Hessian blocks
  from a subsample (src/conceptlens/solvers/newton.py).
- streaming, streaming_newton (--stream-solver): the working-set FISTA solves (Newton's) on
  `StreamedFeatures` over float16 shards written to --shard-dir, capped at --stream-cap-mb
  (default: half the shards' size), in a child process whose peak RSS during the solve (and its
  RSS before) is reported; then one full gradient pass is timed against reading the shards plus
  its matrix products (issue 15's goal: within 2x).
Every answer is scored by one float64 objective (the streamed scorer over the shards, which hold
X exactly). Work is counted in full-gradient equivalents: one = X W^T plus R^T X over all
features (2 n p m multiply-adds); glm_saga's epoch is one. Written to
benchmarks/results/solver_scale.{json,md} (--out), the JSON after every row.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # glm_saga_patched, beside this file

from conceptlens._io import write_json, write_text  # noqa: E402
from conceptlens.solvers import elastic_net_objective, fit_elastic_net, lambda_max, solve_path  # noqa: E402
from conceptlens.solvers.streaming import StreamedFeatures, write_feature_shards  # noqa: E402

SOLVERS = ("glm_saga", "today", "working_set", "newton", "streaming")


def problem(n, p, m, seed=0, dtype="float16"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    W = rng.normal(size=(m, p)) * (rng.random((m, p)) < 0.05) * 2
    y = (X @ W.T + rng.gumbel(size=(n, m))).argmax(1)
    X = (X - X.mean(0)) / X.std(0)
    # the values the shards can hold, so every solver gets the streamed matrix
    X = torch.from_numpy(X).to(getattr(torch, dtype)).float().numpy()
    return X, y


def path_rows(path, score) -> list[dict]:
    """Per point of an ElasticNetPath (or a dict of its fields): seconds, objective
    (`score(W, b, lam, is_last)`, which may skip all but the last), sparsity, work, working set."""
    get = (lambda k: path[k]) if isinstance(path, dict) else (lambda k: getattr(path, k))
    lams, last = get("lambdas"), len(get("lambdas")) - 1
    return [{"lam": lam, "seconds": round(s, 3), "objective": score(W, b, lam, i == last),
             "nonzeros_per_class": nec, "full_gradients": round(fg, 2), "active_features": a, "kkt_added": k}
            for i, (lam, s, W, b, nec, fg, a, k) in enumerate(zip(
                lams, get("seconds"), get("weights"), get("biases"), get("nec"), get("full_gradients"),
                get("active_features"), get("kkt_added"), strict=True))]


def summary(rows: list[dict], seconds: float) -> dict:
    """A solve's totals from its points: the last point's answer, the work of all of them."""
    work = sum(r["full_gradients"] for r in rows)
    return {"seconds": round(seconds, 2), "objective": rows[-1]["objective"],
            "nonzeros_per_class": rows[-1]["nonzeros_per_class"], "points": len(rows),
            "full_gradients": round(work, 1), "full_gradients_per_lambda": round(work / len(rows), 1)}


def run_glm_saga(X, y, lams, m, alpha, epochs, score) -> list[dict]:
    from glm_saga_patched import glm_saga_path

    rows = []
    t = time.perf_counter()
    # Label-free CBM's call: step 0.1, batch 256, tol 1e-4, zero init, `epochs` per lam at most
    for point in glm_saga_path(torch.from_numpy(X), torch.from_numpy(y), lams, m, max_lr=0.1,
                               nepochs=epochs, alpha=alpha, tol=1e-4, batch_size=256):
        now = time.perf_counter()
        W, b = point["weight"].numpy(), point["bias"].numpy()
        rows.append({"lam": point["lam"], "seconds": round(now - t, 3),
                     "objective": score(W, b, point["lam"], True),
                     "nonzeros_per_class": float((np.abs(W) > 1e-5).sum() / m),  # glm_saga's count
                     "full_gradients": round(point["rows"] / len(X), 2), "converged": point["converged"]})
        t = time.perf_counter()  # the scorer's time is not glm_saga's
    return rows


def last_only(score):
    return lambda W, b, lam, last: score(W, b, lam) if last else None


def rss(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def rss_now_and_reset_peak() -> int:
    """This process's RSS, with its peak (VmHWM) reset to it, so a later VmHWM is the solve's."""
    before = rss("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return before


def pass_timing(src: StreamedFeatures, y: np.ndarray, m: int) -> dict:
    """Issue 15's yardstick: one full gradient pass over the shards (all columns, no column
    cache) against the time to read and convert them plus the time of its matrix products
    (X_c W^T and R_c^T X_c on an in-memory chunk, as many times as there are chunks)."""
    from conceptlens.solvers.streaming import Stream  # the solver's own pass

    stream = Stream(src, torch.as_tensor(y), m, "multinomial", torch.float32)
    stream.cache_room = 0  # time the disk, not the cache
    W = torch.randn(m, src.p, generator=torch.Generator().manual_seed(0)) * 1e-3
    b = torch.zeros(m)
    t = time.perf_counter()
    for _, raw in src.raw_chunks(stream.rows):
        raw.float()
    read = time.perf_counter() - t
    x = torch.randn(stream.rows, src.p)
    t = time.perf_counter()
    for a in range(0, src.n, stream.rows):
        r = min(stream.rows, src.n - a)
        torch.softmax(torch.addmm(b, x[:r], W.T), 1).T @ x[:r]
    products = time.perf_counter() - t
    t = time.perf_counter()
    stream.run(None, [(W, b)], grad=0)
    full = time.perf_counter() - t
    return {"read_seconds": round(read, 3), "products_seconds": round(products, 3),
            "full_gradient_pass_seconds": round(full, 3), "ratio": round(full / (read + products), 2)}


def stream_worker(config_path: str) -> None:
    """Child process: the streaming solves, with this process's peak RSS around each, then
    the pass timing."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    cfg = json.loads(Path(config_path).read_text())
    y = np.load(cfg["labels"])
    out = {}
    for name, points in (("single", cfg["single_points"]), ("path", cfg["path_points"])):
        src = StreamedFeatures(cfg["shards"], max_memory_bytes=cfg["cap"])
        before = rss_now_and_reset_peak()
        t = time.perf_counter()
        path = solve_path(src, y, alpha=cfg["alpha"], lam=cfg["lam"], n_lambdas=points, n_classes=cfg["m"],
                          tol=cfg["tol"], working_set=cfg["working_set"], solver=cfg.get("solver", "fista"))
        seconds = time.perf_counter() - t
        np.savez(Path(cfg["dir"]) / f"{name}.npz", weights=np.stack(path.weights),
                 biases=np.stack(path.biases))
        out[name] = {"seconds": seconds, "rss_before_bytes": before, "peak_rss_bytes": rss("VmHWM"),
                     "lambdas": path.lambdas, "path_seconds": path.seconds, "nec": path.nec,
                     "full_gradients": path.full_gradients, "active_features": path.active_features,
                     "kkt_added": path.kkt_added, "disk_passes": src.stats.passes,
                     "bytes_read": src.stats.bytes_read, "chunk_rows": src.stats.chunk_rows,
                     "column_cache_bytes": src.stats.cache_bytes, "planned_bytes": src.stats.planned_bytes}
        del path
    src = StreamedFeatures(cfg["shards"], max_memory_bytes=cfg["cap"])
    out["pass_timing"] = pass_timing(src, y, cfg["m"])
    Path(cfg["dir"], "result.json").write_text(json.dumps(out))


def run_streaming(args, shards, y, lam, cap, score, solver: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "y.npy", y)
        cfg = {"shards": [str(s) for s in shards], "labels": str(Path(d) / "y.npy"), "dir": d, "cap": cap,
               "lam": lam, "alpha": args.alpha, "m": args.m, "tol": args.tol,
               "single_points": args.single_points, "path_points": args.path_points,
               "working_set": args.stream_working_set, "solver": solver}
        Path(d, "config.json").write_text(json.dumps(cfg))
        env = {**os.environ, "BENCH_THREADS": str(torch.get_num_threads())}
        subprocess.run([sys.executable, __file__, "--stream-worker", str(Path(d) / "config.json")],
                       check=True, env=env)
        res = json.loads(Path(d, "result.json").read_text())
        for name in ("single", "path"):
            r = res[name]
            arrays = np.load(Path(d) / f"{name}.npz")
            fields = {**r, "seconds": r["path_seconds"], "weights": arrays["weights"],
                      "biases": arrays["biases"]}
            r["points"] = path_rows(fields, score if name == "path" else last_only(score))
    return res


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
    ap.add_argument("--solvers", default=",".join(SOLVERS), help=f"comma-separated subset of {SOLVERS}")
    ap.add_argument("--saga-epochs", type=int, default=1000,
                    help="glm_saga's nepochs per lam (Label-free CBM's n_iters)")
    ap.add_argument("--stream-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--stream-cap-mb", type=float, default=None, help="default: half the shards' size")
    ap.add_argument("--stream-working-set", type=int, default=1, choices=[0, 1])
    ap.add_argument("--stream-solver", default="both", choices=["fista", "newton", "both"],
                    help="the streamed rows' solver: fista (row 'streaming'), newton ('streaming_newton')")
    ap.add_argument("--shard-dir", default=None, help="where the shards go (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default="benchmarks/results/solver_scale.json")
    ap.add_argument("--stream-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stream_worker:
        return stream_worker(args.stream_worker)
    solvers = [s for s in args.solvers.split(",") if s]
    unknown = set(solvers) - set(SOLVERS)
    if unknown:
        ap.error(f"unknown solvers {sorted(unknown)}; choose from {SOLVERS}")
    args.stream_working_set = bool(args.stream_working_set)
    if args.threads:
        torch.set_num_threads(args.threads)
    X, y = problem(args.n, args.p, args.m, dtype=args.stream_dtype)
    result = {"problem": {k: v for k, v in vars(args).items() if k != "stream_worker"},
              "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(), "device": "CPU",
              "cpu_count": os.cpu_count()}
    shard_dir = Path(args.shard_dir or tempfile.mkdtemp(prefix="solver-scale-shards-"))
    try:
        run(args, solvers, X, y, result, shard_dir)
    finally:
        if not args.shard_dir:  # the shards are only this run's
            shutil.rmtree(shard_dir, ignore_errors=True)


def run(args, solvers, X, y, result, shard_dir) -> None:
    """Every row of the benchmark, into `result` (written after each row)."""
    alpha, m = args.alpha, args.m
    common = dict(alpha=alpha, n_classes=m, tol=args.tol, dtype=torch.float32)

    def save():
        if args.out:
            write_json(args.out, result)

    t = time.perf_counter()
    shards = write_feature_shards(shard_dir, X, rows_per_shard=8192, dtype=args.stream_dtype)
    disk = sum(s.stat().st_size for s in shards)
    scorer_src = StreamedFeatures(shards, max_memory_bytes=1 << 30)
    assert np.array_equal(scorer_src.read(0, 64), X[:64].astype(np.float64))  # the shards hold X exactly
    result["shards"] = {"files": len(shards), "bytes": disk, "dtype": args.stream_dtype,
                        "write_seconds": round(time.perf_counter() - t, 2),
                        "in_memory_float32_bytes": X.nbytes}

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
    lmax = lambda_max(X, y, alpha, m)
    result["lambda_max"] = lmax

    def score(W, b, lam_k, last=True):
        return elastic_net_objective(W, b, scorer_src, y, lam_k, alpha, n_classes=m)

    single, paths = {}, {}
    result["single_lambda"], result["path"] = single, paths

    if "glm_saga" in solvers:
        from glm_saga_patched import glm_saga_lams

        rows = run_glm_saga(X, y, glm_saga_lams(lam * alpha, alpha, 1, 1), m, alpha, args.saga_epochs, score)
        single["glm_saga"] = {**summary(rows, rows[0]["seconds"]), "converged": rows[0]["converged"]}
        print("single glm_saga", single["glm_saga"], flush=True)
        save()
    for name, solver in (("today", "fista"), ("working_set", None), ("newton", "newton")):
        if name not in solvers:
            continue
        t = time.perf_counter()
        if solver is None:  # working sets: a short path to screen from
            path = solve_path(X, y, lam=lam, n_lambdas=args.single_points, working_set=True, solver="fista",
                              **common)
            single[name] = summary(path_rows(path, last_only(score)), time.perf_counter() - t)
        else:
            W, b, info = fit_elastic_net(X, y, lam, solver=solver, **common)
            single[name] = {"seconds": round(time.perf_counter() - t, 2), "objective": score(W, b, lam),
                            "nonzeros_per_class": float((W != 0).sum() / m), "points": 1,
                            "iterations": info.iterations, "full_gradients": round(info.products / 2, 1),
                            "full_gradients_per_lambda": round(info.products / 2, 1)}
        print("single", name, single[name], flush=True)
        save()

    if "glm_saga" in solvers:
        from glm_saga_patched import glm_saga_lams

        lams = glm_saga_lams(lmax * alpha, alpha, lam / lmax, args.path_points)  # = geomspace(lmax, lam)
        rows = run_glm_saga(X, y, lams, m, alpha, args.saga_epochs, score)
        paths["glm_saga"] = {**summary(rows, sum(r["seconds"] for r in rows)), "per_lambda": rows}
        print("path glm_saga", {k: v for k, v in paths["glm_saga"].items() if k != "per_lambda"}, flush=True)
        save()
    variants = {"today": {"solver": "fista"}, "working_set": {"working_set": True, "solver": "fista"},
                "newton": {"solver": "newton"}}
    for name, kw in variants.items():
        if name not in solvers:
            continue
        t = time.perf_counter()
        path = solve_path(X, y, lam=lam, n_lambdas=args.path_points, **kw, **common)
        seconds = time.perf_counter() - t
        rows = path_rows(path, score)
        paths[name] = {**summary(rows, seconds), "per_lambda": rows}
        print("path", name, {k: v for k, v in paths[name].items() if k != "per_lambda"}, flush=True)
        save()

    if "streaming" in solvers:
        cap = int(args.stream_cap_mb * 2**20) if args.stream_cap_mb else disk // 2
        memory = {"cap_bytes": cap, "shards_bytes": disk}
        for solver in (["fista", "newton"] if args.stream_solver == "both" else [args.stream_solver]):
            key = "streaming" if solver == "fista" else "streaming_newton"
            res = run_streaming(args, shards, y, lam, cap, score, solver)
            for name, target in (("single", single), ("path", paths)):
                r = res[name]
                row = summary(r["points"], r["seconds"])
                row.update({k: r[k] for k in ("rss_before_bytes", "peak_rss_bytes", "disk_passes",
                                              "bytes_read", "chunk_rows", "column_cache_bytes",
                                              "planned_bytes")}, **memory)
                row["peak_rss_increase_bytes"] = r["peak_rss_bytes"] - r["rss_before_bytes"]
                if name == "path":
                    row["per_lambda"] = r["points"]
                target[key] = row
                print(name, key, {k: v for k, v in row.items() if k != "per_lambda"}, flush=True)
            result["streaming_pass"] = res["pass_timing"]
            print("streaming pass", res["pass_timing"], flush=True)
            save()

    if "glm_saga" in single:
        base = single["glm_saga"]["seconds"]
        result["speedup_single_vs_glm_saga"] = {k: round(base / v["seconds"], 2) for k, v in single.items()}
    if "glm_saga" in paths:
        base = paths["glm_saga"]["seconds"]
        result["speedup_path_vs_glm_saga"] = {k: round(base / v["seconds"], 2) for k, v in paths.items()}
    save()
    if args.out:
        write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("path", "single_lambda")}, indent=2))


def _mb(b) -> str:
    return f"{b / 2**20:.1f} MB"


def markdown(r) -> str:
    a = r["problem"]
    lines = [f"# Elastic-net solver at scale ({r['date']}, {r['device']}, {r['threads']} threads)", "",
             f"n = {a['n']}, p = {a['p']}, m = {a['m']}, alpha = {a['alpha']}, lam = {r['lam']:.4g} "
             f"(lambda_max {r['lambda_max']:.4g}), tol = {a['tol']}, float32; X rounded to "
             f"{a['stream_dtype']} (the shards: {_mb(r['shards']['bytes'])} on disk). Objective: "
             "float64, one scorer. Full gradient = X W^T plus R^T X over all features; a glm_saga epoch "
             "is one. glm_saga: benchmarks/glm_saga_patched.py with Label-free CBM's settings (step 0.1, "
             f"batch 256, tol 1e-4, {a['saga_epochs']} epochs per lam at most).", ""]
    if "selection" in r:
        s = r["selection"]
        lines += [f"lam chosen by the working-set path to {a['target_nec']} non-zeros per class: "
                  f"{s['seconds']} s, {s['points']} points, {s['full_gradients']} full gradients.", ""]
    speed = r.get("speedup_single_vs_glm_saga", {})
    lines += ["## One lam", "", "| solver | seconds | x glm_saga | objective | non-zeros / class "
              "| full gradients | points |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in r["single_lambda"].items():
        lines.append(f"| {name} | {row['seconds']} | {speed.get(name, '')} | {row['objective']:.7f} "
                     f"| {row['nonzeros_per_class']:.1f} | {row['full_gradients']} | {row['points']} |")
    speed = r.get("speedup_path_vs_glm_saga", {})
    lines += ["", f"## Path of {a['path_points']} lams, lambda_max to lam", "",
              "| solver | seconds | x glm_saga | final objective | full gradients | per lam |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in r["path"].items():
        lines.append(f"| {name} | {row['seconds']} | {speed.get(name, '')} | {row['objective']:.7f} "
                     f"| {row['full_gradients']} | {row['full_gradients_per_lambda']} |")
    for name, target in (("one lam", r["single_lambda"]), ("path", r["path"])):
        for key in ("streaming", "streaming_newton"):
            if key not in target:
                continue
            s = target[key]
            lines += ["", f"{key} ({name}): cap {_mb(s['cap_bytes'])} for {_mb(s['shards_bytes'])} of "
                      f"shards; peak RSS {_mb(s['peak_rss_bytes'])} "
                      f"({_mb(s['peak_rss_increase_bytes'])} above the {_mb(s['rss_before_bytes'])} before "
                      f"the solve); planned {_mb(s['planned_bytes'])} (chunks of {s['chunk_rows']} rows, "
                      f"column cache up to {_mb(s['column_cache_bytes'])}); {s['disk_passes']} disk passes, "
                      f"{s['bytes_read'] / 2**30:.2f} GiB read."]
    if "streaming_pass" in r:
        t = r["streaming_pass"]
        lines += ["", "One full gradient pass over the shards (no column cache): "
                  f"{t['full_gradient_pass_seconds']} s = {t['ratio']}x (reading and converting them: "
                  f"{t['read_seconds']} s, plus its matrix products in memory: {t['products_seconds']} s)."]
    for name, row in r["path"].items():
        note = (["glm_saga runs its path in one call: its first row holds the whole path's seconds.", ""]
                if name == "glm_saga" else [])
        lines += ["", f"### Path, {name}", "", *note, "| lam | seconds | objective | non-zeros / class "
                  "| full gradients | features solved on | KKT added |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {p['lam']:.4g} | {p['seconds']} | {p['objective']:.7f} | {p['nonzeros_per_class']:.1f} "
                  f"| {p['full_gradients']} | {p.get('active_features', '')} | {p.get('kkt_added', '')} |"
                  for p in row["per_lambda"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

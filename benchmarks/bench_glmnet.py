"""The sparse layer's solver side by side with glmnet (issue 23): one lam and a 20-lam path.

    nice -n 5 .venv/bin/python benchmarks/bench_glmnet.py --sizes demo,10k --peer-python /tmp/peers/bin/python
    nice -n 5 .venv/bin/python benchmarks/bench_glmnet.py --sizes 50k --budget-s 900 --peer-python ...

Problems: benchmarks/bench_solver.py's synthetic generator (standardised features, labels from a
sparse ground truth plus Gumbel noise) at the demo's size (3,000 x 71 x 10), 10,000 x 1,000 x
100 and 50,000 x 2,000 x 200 (n x p x m), alpha 0.99. The lam of each size is the one whose
solution has about the demo's sparsity (`--target-nec`, default 5 non-zero weights per class;
label_free's NEC in the demo is 3.9, labo's 6.2), found once by solve_path(target_nec=...),
untimed; the path is 20 lams from lambda_max down to it, geometric, the same lams for every
solver. conceptlens runs through its public API with its defaults (fit_elastic_net for one
lam, solve_path(lam=..., n_lambdas=20) for the path; solver="auto").

glmnet is python-glmnet (Fortran coordinate descent; `LogitNet`, standardize=False,
ungrouped multinomial), which minimises exactly conceptlens's objective (module
benchmarks/glmnet_peer.py says why). It runs in its own venv (`--peer-python`; made once with
`python3 -m venv /tmp/peers && /tmp/peers/bin/pip install "numpy<2" scipy scikit-learn
python-glmnet==2.6.1`: the peers' older numpy must never reach .venv), in a
subprocess, timing only its fit; a fit that has not finished after `--budget-s` is stopped
and reported as "> budget" (the ratio is then a lower bound). Every result, ours and glmnet's,
is scored by one function, conceptlens.solvers.elastic_net_objective (float64).

Not run, because they do not solve this objective (NOT_SAME_OBJECTIVE below): adelie, skglm,
celer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_solver import problem

from conceptlens._io import write_json, write_text
from conceptlens.solvers import elastic_net_objective, fit_elastic_net, lambda_max, solve_path

SIZES = {"demo": (3000, 71, 10), "10k": (10000, 1000, 100), "50k": (50000, 2000, 200)}
PEER_SCRIPT = Path(__file__).resolve().parent / "glmnet_peer.py"
GLMNET_TOL = 1e-7  # python-glmnet's default convergence threshold

NOT_SAME_OBJECTIVE = {
    "adelie": "adelie 1.1.52's multinomial (glm.multinomial + grpnet) always groups a feature's K class "
              "coefficients: its groups index features and are expanded by K, so the penalty is the "
              "group lasso alpha * sum_j ||W[:, j]||_2 (glmnet's type.multinomial='grouped'), never the "
              "ungrouped |W|_1; its loss is also divided by K. A different objective, so not run.",
    "skglm": "skglm 0.5 has no multinomial datafit (Logistic and LogisticGroup are binary); its "
             "SparseLogisticRegression handles several classes one-vs-rest, a different objective "
             "(conceptlens's loss='ovr', not the softmax), so not run.",
    "celer": "celer 0.7.4's LogisticRegression is binary L1 only (penalty='l1', no l2 term, "
             "fit_intercept=True not supported) and several classes one-vs-rest: a different objective "
             "(no intercept, alpha = 1, no softmax), so not run.",
}


def parse_size(text: str) -> tuple[str, tuple[int, int, int]]:
    """'demo' / '10k' / '50k', or 'NxPxM'."""
    if text in SIZES:
        return text, SIZES[text]
    try:
        n, p, m = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"size {text!r}: one of {', '.join(SIZES)} or NxPxM") from None
    return text, (n, p, m)


def choose_lam(X, y, alpha: float, target_nec: float) -> float:
    """The lam whose solution has about `target_nec` non-zero weights per class (untimed)."""
    return float(solve_path(X, y, alpha, target_nec=target_nec, refine=3).lambdas[-1])


def lam_grid(X, y, alpha: float, lam: float, n_lambdas: int) -> np.ndarray:
    """solve_path's grid: geometric from lambda_max down to lam."""
    return np.geomspace(lambda_max(X, y, alpha), lam, n_lambdas)


def run_ours(X, y, lams: np.ndarray, alpha: float, mode: str):
    """conceptlens through its public API with its defaults: (weights, biases, seconds, solver)."""
    start = time.perf_counter()
    if mode == "single":
        W, b, _ = fit_elastic_net(X, y, float(lams[-1]), alpha)
        seconds = time.perf_counter() - start
        return [W], [b], seconds, "fit_elastic_net"
    path = solve_path(X, y, alpha, lam=float(lams[-1]), n_lambdas=len(lams))
    seconds = time.perf_counter() - start
    if not np.allclose(path.lambdas, lams, rtol=1e-9):
        raise RuntimeError("solve_path's grid differs from the lams given to glmnet")
    return path.weights, path.biases, seconds, f"solve_path ({path.solver})"


def run_peer(peer_python: str, name: str, X, y, lams: np.ndarray, alpha: float, budget_s: float) -> dict:
    """One fit of `name` in the peers' interpreter: {"seconds", "W", "b", "version"}, or
    {"timed_out": True, "budget_s"} when it ran past the budget."""
    with tempfile.TemporaryDirectory(prefix="bench_glmnet_") as tmp:
        folder = Path(tmp)
        np.save(folder / "X.npy", np.asarray(X, dtype=np.float64))
        np.save(folder / "y.npy", np.asarray(y, dtype=np.int64))
        np.save(folder / "lams.npy", np.asarray(lams, dtype=np.float64))
        (folder / "args.json").write_text(json.dumps({"alpha": alpha, "tol": GLMNET_TOL}))
        # one thread, as glmnet's Fortran uses; the grace covers its start and the load, which are untimed
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        try:
            subprocess.run([peer_python, str(PEER_SCRIPT), name, str(folder)], check=True, env=env,
                           timeout=budget_s + 30, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"timed_out": True, "budget_s": budget_s}
        except subprocess.CalledProcessError as err:
            raise RuntimeError(f"{name} failed:\n{err.stderr[-3000:]}") from None
        result = json.loads((folder / "result.json").read_text())
        if result["seconds"] > budget_s:
            return {"timed_out": True, "budget_s": budget_s}
        return {**result, "W": np.load(folder / "W.npy"), "b": np.load(folder / "b.npy")}


def score(weights, biases, X, y, lams, alpha: float, m: int) -> dict:
    """The one scorer for every solver: objectives at each lam, non-zeros per class at the last."""
    objectives = [elastic_net_objective(W, b, X, y, float(lam), alpha, n_classes=m)
                  for W, b, lam in zip(weights, biases, lams, strict=True)]
    return {"objectives": objectives, "objective": objectives[-1],
            "nonzeros_per_class": float((np.asarray(weights[-1]) != 0).sum() / m)}


def bench_mode(X, y, lams, alpha, m, mode, repeats, peer_python, budget_s) -> dict:
    """conceptlens and glmnet on one mode ('single': lams[-1] only; 'path': all lams)."""
    fit_lams = lams[-1:] if mode == "single" else lams
    times, ours = [], None
    for _ in range(repeats):
        W, b, secs, how = run_ours(X, y, fit_lams, alpha, mode)
        times.append(secs)
        ours = (W, b)
    row = {"conceptlens": {"api": how, "seconds": statistics.median(times), "runs": times,
                           **score(*ours, X, y, fit_lams, alpha, m)}}
    if peer_python:
        runs, fit = [], None
        for _ in range(repeats):
            fit = run_peer(peer_python, "glmnet", X, y, fit_lams, alpha, budget_s)
            if fit.get("timed_out"):
                break
            runs.append(fit["seconds"])
        if fit.get("timed_out"):
            row["glmnet"] = {"timed_out": True, "budget_s": budget_s, "runs": runs}
            row["speedup"] = f">{budget_s / row['conceptlens']['seconds']:.1f}"
        elif len(fit["W"]) < len(fit_lams):  # glmnet ended its path early: no solution at the last lam
            part = score(list(fit["W"]), list(fit["b"]), X, y, fit_lams[:len(fit["W"])], alpha, m)
            row["glmnet"] = {"seconds": statistics.median(runs), "runs": runs, "version": fit["version"],
                             "stopped_early": f"{len(fit['W'])} of {len(fit_lams)} lams",
                             "objectives": part["objectives"]}
        else:
            row["glmnet"] = {"seconds": statistics.median(runs), "runs": runs, "version": fit["version"],
                             **score(list(fit["W"]), list(fit["b"]), X, y, fit_lams, alpha, m)}
        if "objective" in row["glmnet"]:
            g, o = row["glmnet"], row["conceptlens"]
            row["speedup"] = round(g["seconds"] / o["seconds"], 2)
            row["objective_gap"] = (o["objective"] - g["objective"]) / abs(g["objective"])
            row["max_objective_gap_over_lams"] = max(
                (a - c) / abs(c) for a, c in zip(o["objectives"], g["objectives"], strict=True))
    print(mode, json.dumps({k: v if not isinstance(v, dict) else
                            {kk: vv for kk, vv in v.items() if kk != "objectives"} for k, v in row.items()}),
          flush=True)
    return row


def bench_size(name, shape, alpha, target_nec, n_lambdas, repeats, peer_python, budget_s) -> dict:
    n, p, m = shape
    X, y = problem(n, p, m)
    lam = choose_lam(X, y, alpha, target_nec)
    lams = lam_grid(X, y, alpha, lam, n_lambdas)
    print(f"{name}: n={n} p={p} m={m} lam={lam:.6g} lambda_max={lams[0]:.6g}", flush=True)
    return {"n": n, "p": p, "m": m, "alpha": alpha, "lam": lam, "lambda_max": float(lams[0]),
            "lambdas": lams.tolist(), "repeats": repeats, "target_nec": target_nec,
            "single": bench_mode(X, y, lams, alpha, m, "single", repeats, peer_python, budget_s),
            "path": bench_mode(X, y, lams, alpha, m, "path", repeats, peer_python, budget_s)}


def _seconds(entry: dict) -> str:
    if entry.get("timed_out"):
        return f"> {entry['budget_s']:g} (budget)"
    return f"{entry['seconds']:.3f}"


def _speed(row: dict) -> str:
    if "speedup" not in row:
        return "-"
    bound = " (lower bound)" if isinstance(row["speedup"], str) else ""
    return f"**{row['speedup']}x**{bound}"


def _glmnet_objective(g: dict | None) -> str:
    if g is None or g.get("timed_out"):
        return "-"
    if "stopped_early" in g:
        return f"none: its path stopped after {g['stopped_early']}"
    # a relative excess above 1e-3 is no tolerance effect: the fit did not converge
    return f"{g['objective']:.7f}"


def _gap(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    text = f"{row[key]:.1e}"
    return text + " (glmnet not converged)" if row[key] < -1e-3 else text


def _nnz(g: dict | None) -> str:
    return "-" if g is None or "nonzeros_per_class" not in g else f"{g['nonzeros_per_class']:.1f}"


def markdown(results: dict) -> str:
    """benchmarks/results/glmnet.md from the json."""
    meta = results["meta"]
    lines = [f"# conceptlens's elastic-net solver vs glmnet ({meta['date']})", "",
             "`benchmarks/bench_glmnet.py` (issue 23). Multinomial elastic net, alpha 0.99, intercept "
             "unpenalised; glmnet = python-glmnet " + meta.get("glmnet_version", "?") + " (Fortran "
             "coordinate descent, `LogitNet(standardize=False, lambda_path=..., n_splits=0)`, tol 1e-7, one "
             "thread), which minimises the same objective; conceptlens through its public API with its "
             "defaults (one lam: `fit_elastic_net`, float64, tol 1e-7; path: `solve_path(lam=..., "
             "n_lambdas=20)`, float32, tol 1e-6; `solver=\"auto\"`), torch with "
             f"{meta['threads']} threads. Every result is scored by one function, "
             "`conceptlens.solvers.elastic_net_objective` (float64). gap = (ours - glmnet) / glmnet: "
             "negative is a lower objective for conceptlens. Seconds: median of the runs (fit only; "
             "glmnet's load into its subprocess is not timed).", "",
             f"Machine: {meta['machine']}", "",
             "| size (n x p x m) | lam (lambda_max) | mode | conceptlens s | glmnet s | glmnet / conceptlens "
             "| objective conceptlens | objective glmnet | gap | max gap over lams | non-zeros / class "
             "(ours, glmnet) | runs |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for name, r in results["sizes"].items():
        for mode in ("single", "path"):
            row = r[mode]
            o, g = row["conceptlens"], row.get("glmnet")
            label = ("one lam" if mode == "single" else f"{len(r['lambdas'])}-lam path") + f", {o['api']}"
            lines.append(f"| {name} ({r['n']:,} x {r['p']:,} x {r['m']}) "
                         f"| {r['lam']:.4g} ({r['lambda_max']:.4g}) "
                         f"| {label} | {o['seconds']:.3f} | {_seconds(g) if g else '-'} | {_speed(row)} "
                         f"| {o['objective']:.7f} | {_glmnet_objective(g)} | {_gap(row, 'objective_gap')} "
                         f"| {_gap(row, 'max_objective_gap_over_lams') if mode == 'path' else '-'} "
                         f"| {o['nonzeros_per_class']:.1f}, {_nnz(g)} | {r['repeats']} |")
    lines += ["", "Runs: " + "; ".join(f"{name}: {r.get('date', '?')}, commit {r.get('commit', '?')}, "
                                   f"{r.get('machine', '?')}" for name, r in results["sizes"].items()) + "."]
    lines += ["", "The lam of each size: the solution with about the demo's sparsity (5 non-zero weights "
              "per class; label_free's NEC in the demo is 3.9), found once by `solve_path(target_nec=5)`, "
              "untimed; the path: 20 lams geometric from lambda_max down to it, the same lams for both.", "",
              "Not run, because they do not solve this objective:", ""]
    lines += [f"- **{k}**: {v}" for k, v in NOT_SAME_OBJECTIVE.items()]
    if results.get("notes"):  # written by hand into the json: what a reader of the figures must know
        lines += ["", "Notes:", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="demo,10k,50k", help="comma-separated: demo, 10k, 50k or NxPxM")
    ap.add_argument("--alpha", type=float, default=0.99)
    ap.add_argument("--target-nec", type=float, default=5.0)
    ap.add_argument("--n-lambdas", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=None, help="runs per fit (median); default 3, 1 for 50k")
    ap.add_argument("--budget-s", type=float, default=900.0, help="wall seconds per peer fit")
    ap.add_argument("--peer-python", default="/tmp/peers/bin/python",
                    help="the peers' interpreter (python-glmnet installed); '' skips the peers")
    ap.add_argument("--machine", default="2-core CPU shared with other jobs", help="recorded in the .md")
    ap.add_argument("--out", default="benchmarks/results/glmnet.json")
    args = ap.parse_args()
    peer = args.peer_python if args.peer_python and Path(args.peer_python).exists() else ""
    if args.peer_python and not peer:
        print(f"no peer interpreter at {args.peer_python}: conceptlens only", flush=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"sizes": {}}
    fit_elastic_net(*problem(200, 5, 3), 1e-2)  # warm-up: torch's first call is not part of a fit
    for text in args.sizes.split(","):
        name, shape = parse_size(text.strip())
        repeats = args.repeats or (1 if shape[0] * shape[1] * shape[2] >= 1e10 else 3)
        results["sizes"][name] = bench_size(name, shape, args.alpha, args.target_nec, args.n_lambdas,
                                            repeats, peer, args.budget_s)
        results["sizes"][name].update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                      machine=args.machine, commit=_commit())
        versions = [r[m]["glmnet"]["version"] for r in results["sizes"].values() for m in ("single", "path")
                    if "version" in r[m].get("glmnet", {})]
        results["meta"] = {"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
                           "machine": args.machine, "glmnet_version": versions[0] if versions else "?",
                           "not_same_objective": NOT_SAME_OBJECTIVE}
        write_json(out, results)  # after each size, so a stopped run keeps what finished
        write_text(out.with_suffix(".md"), markdown(results))


if __name__ == "__main__":
    main()

"""The sparse GLM solver against glm_saga (as Label-free CBM calls it) and scikit-learn saga.

    .venv/bin/python benchmarks/bench_solver.py [--n 10000 --p 1000 --m 100] [--peers glm_saga,sklearn]

A synthetic problem shaped like real work: n standardised concept activations with p
concepts and m classes, labels from a sparse ground-truth weight matrix plus Gumbel noise.
All three solve the same elastic-net objective at the same lam (alpha = 0.99); each
result is scored with one objective function, and its sparsity (non-zeros per class) is
reported. glm_saga runs as Label-free CBM runs it: one lam (k=1, epsilon=1, no zero step),
step 0.1, batch 256, up to 1000 epochs (its n_iters), its own tolerance 1e-4. glm_saga
runs on this machine's CPU here; its authors run it on a GPU, where it is much faster.
scikit-learn's saga gets a stated wall-clock budget (`--sklearn-budget-s`): independent fits
with max_iter doubling (8, 16, 32, ...) until one converges or the budget would be overrun,
each fit's time and objective recorded, so the entry says how far it got, not only that it
was slow.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from conceptlens._io import write_json
from conceptlens.solvers import elastic_net_objective, fit_elastic_net


def problem(n, p, m, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    W = rng.normal(size=(m, p)) * (rng.random((m, p)) < 0.05) * 2
    y = (X @ W.T + rng.gumbel(size=(n, m))).argmax(1)
    X = (X - X.mean(0)) / X.std(0)
    return X, y


def run_glm_saga(X, y, lam, alpha, epochs):
    from glm_saga.elasticnet import IndexedTensorDataset, glm_saga

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()
    loader = torch.utils.data.DataLoader(IndexedTensorDataset(Xt, yt), batch_size=256, shuffle=True)
    linear = torch.nn.Linear(X.shape[1], int(y.max()) + 1)
    linear.weight.data.zero_()
    linear.bias.data.zero_()
    metadata = {"max_reg": {"nongrouped": lam * alpha}}  # so its lam path is exactly [lam]
    out = glm_saga(linear, loader, 0.1, epochs, alpha, epsilon=1, k=1, do_zero=False,
                   metadata=metadata, n_ex=len(X), n_classes=int(y.max()) + 1, verbose=0)
    path = out["path"][0]
    return path["weight"].numpy(), path["bias"].numpy()


def run_sklearn_saga(X, y, lam, alpha, budget_s, first_iter, m) -> dict:
    """scikit-learn's saga on the same objective (tol 1e-4): independent fits with max_iter
    doubling from `first_iter`, until one converges or the next would overrun the budget;
    each fit's time and objective are recorded, so the entry says how far saga got."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    trajectory, spent, max_iter = [], 0.0, first_iter
    while True:
        model = LogisticRegression(l1_ratio=alpha, C=1 / (lam * len(X)), solver="saga", tol=1e-4,
                                   max_iter=max_iter)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        secs = time.perf_counter() - t
        spent += secs
        converged = int(np.max(model.n_iter_)) < max_iter
        trajectory.append({"max_iter": max_iter, "epochs": int(np.max(model.n_iter_)),
                           "seconds": round(secs, 1), "converged": converged,
                           "objective": elastic_net_objective(model.coef_, model.intercept_, X, y, lam,
                                                              alpha),
                           "nonzeros_per_class": float((np.abs(model.coef_) > 1e-5).sum() / m)})
        print("  sklearn saga", trajectory[-1], flush=True)
        if converged or spent + 2 * secs > budget_s:  # the next fit takes about twice as long
            break
        max_iter *= 2
    last = trajectory[-1]
    return {"seconds": last["seconds"], "objective": last["objective"], "converged": last["converged"],
            "epochs": last["epochs"], "nonzeros_per_class": last["nonzeros_per_class"],
            "budget_s": budget_s, "total_seconds": round(spent, 1), "trajectory": trajectory}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--p", type=int, default=1000)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--lam", type=float, default=2e-3)
    ap.add_argument("--alpha", type=float, default=0.99)
    ap.add_argument("--saga-epochs", type=int, default=1000)  # Label-free CBM's n_iters
    ap.add_argument("--peers", default="glm_saga,sklearn",
                    help="comma-separated peers to run beside conceptlens: glm_saga, sklearn")
    ap.add_argument("--sklearn-budget-s", type=float, default=600.0)
    ap.add_argument("--sklearn-first-iter", type=int, default=8, help="max_iter of the first saga fit")
    ap.add_argument("--out", default="benchmarks/results/solver.json")
    args = ap.parse_args()
    X, y = problem(args.n, args.p, args.m)
    lam, alpha, m = args.lam, args.alpha, args.m
    rows = {}

    def record(name, fn):
        t = time.perf_counter()
        W, b = fn()
        secs = time.perf_counter() - t
        rows[name] = {"seconds": round(secs, 2),
                      "objective": elastic_net_objective(W, b, X, y, lam, alpha),
                      "nonzeros_per_class": float((np.abs(W) > 1e-5).sum() / m)}
        print(name, rows[name], flush=True)
        if args.out:  # keep what finished, in case a slow peer is stopped
            write_json(args.out, {"problem": vars(args), "solvers": rows})

    record("conceptlens_fista", lambda: fit_elastic_net(X, y, lam, alpha, tol=1e-6, dtype=torch.float32,
                                                         solver="fista")[:2])
    peers = set(args.peers.split(","))
    if "glm_saga" in peers:
        record("glm_saga", lambda: run_glm_saga(X, y, lam, alpha, args.saga_epochs))
    if "sklearn" in peers:
        rows["sklearn_saga"] = run_sklearn_saga(X, y, lam, alpha, args.sklearn_budget_s,
                                                args.sklearn_first_iter, m)
        print("sklearn_saga", {k: v for k, v in rows["sklearn_saga"].items() if k != "trajectory"})
    ours = rows["conceptlens_fista"]
    result = {
        "problem": {"n": args.n, "p": args.p, "m": m, "lam": lam, "alpha": alpha},
        "solvers": rows,
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "device": "CPU (2 cores) for every solver; glm_saga's authors run it on a GPU",
    }
    if "glm_saga" in rows:
        result["speedup_vs_glm_saga"] = round(rows["glm_saga"]["seconds"] / ours["seconds"], 1)
        result["objective_gap_vs_glm_saga"] = (ours["objective"] - rows["glm_saga"]["objective"]) \
            / rows["glm_saga"]["objective"]
    if "sklearn_saga" in rows:
        sk = rows["sklearn_saga"]
        result["speedup_vs_sklearn_saga"] = (round(sk["seconds"] / ours["seconds"], 1) if sk["converged"]
                                             else f">{sk['seconds'] / ours['seconds']:.0f} (not converged)")
        result["objective_gap_vs_sklearn_saga"] = (ours["objective"] - rows["sklearn_saga"]["objective"]) \
            / rows["sklearn_saga"]["objective"]
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()

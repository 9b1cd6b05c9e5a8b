"""One peer fit for benchmarks/bench_glmnet.py, run by the peers' own interpreter (a separate
venv: python-glmnet needs numpy < 2 here, and conceptlens is not imported).

    /tmp/peers/bin/python benchmarks/glmnet_peer.py glmnet DIR

DIR holds X.npy (n, p), y.npy (n,) int labels 0..m-1, lams.npy (k,) decreasing, and
args.json ({"alpha": ..., "tol": ...}). Writes W.npy (k, m, p), b.npy (k, m) and
result.json ({"seconds": fit wall time, "version": ...}); only the fit is timed, not the load.

glmnet (python-glmnet's LogitNet, Fortran coordinate descent) minimises, with
standardize=False and the default ungrouped multinomial,
    (1/n) sum_i -log softmax(W x_i + b)_{y_i} + lam * (alpha |W|_1 + (1 - alpha) / 2 |W|_2^2)
(the Fortran lognet normalises the observation weights to sum to 1; the intercept is not
penalised): conceptlens's objective with the same lam and alpha. lambda_path is passed as
given (flmin = 1: no early stop along the path); n_splits=0 skips its cross-validation.
LogitNet overwrites its reported lambda_path_[0] by an extrapolation (meant for glmnet's own
+inf first value), so the caller scores against the lams it passed, not lambda_path_.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def fit_glmnet(X, y, lams, alpha, tol):
    from glmnet import LogitNet

    model = LogitNet(alpha=alpha, lambda_path=lams, standardize=False, fit_intercept=True, n_splits=0,
                     tol=tol)
    start = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - start
    # glmnet ends a path early when its fit looks saturated (deviance ratio near 1): then fewer
    # lams come back, which the caller reports
    W = np.moveaxis(model.coef_path_, -1, 0)  # (k, m, p)
    b = np.moveaxis(np.atleast_2d(model.intercept_path_), -1, 0)  # (k, m)
    return W, b, seconds


PEERS = {"glmnet": fit_glmnet}


def main() -> None:
    name, folder = sys.argv[1], Path(sys.argv[2])
    args = json.loads((folder / "args.json").read_text())
    X = np.load(folder / "X.npy")
    y = np.load(folder / "y.npy")
    lams = np.load(folder / "lams.npy")
    W, b, seconds = PEERS[name](X, y, lams, args["alpha"], args["tol"])
    np.save(folder / "W.npy", W)
    np.save(folder / "b.npy", b)
    from importlib.metadata import version

    dist = {"glmnet": "python_glmnet"}[name]
    (folder / "result.json").write_text(json.dumps({"seconds": seconds, "version": version(dist)}))


if __name__ == "__main__":
    main()

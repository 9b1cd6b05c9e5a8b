"""benchmarks/bench_glmnet.py's machinery on a tiny problem, and its one objective scorer by hand.
The glmnet parts need the peers' venv (/tmp/peers, python-glmnet) and are skipped without it."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from conceptlens.solvers import elastic_net_objective

PEER_PYTHON = Path("/tmp/peers/bin/python")
needs_peers = pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no peers' venv at /tmp/peers")


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_glmnet.py"
    spec = importlib.util.spec_from_file_location("bench_glmnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def brute_force_objective(W, b, X, y, lam, alpha):
    """mean_i -log softmax(W x_i + b)_{y_i} + lam (alpha |W|_1 + (1 - alpha) / 2 |W|_2^2), one sample
    and one class at a time in plain Python floats."""
    total = 0.0
    for xi, yi in zip(X.tolist(), y.tolist(), strict=True):
        logits = [sum(w * x for w, x in zip(row, xi, strict=True)) + bc
                  for row, bc in zip(W.tolist(), b.tolist(), strict=True)]
        top = max(logits)
        total += top + math.log(sum(math.exp(z - top) for z in logits)) - logits[yi]
    l1 = sum(abs(w) for row in W.tolist() for w in row)
    l2 = sum(w * w for row in W.tolist() for w in row)
    return total / len(y) + lam * (alpha * l1 + (1 - alpha) / 2 * l2)


@pytest.mark.parametrize("lam, alpha", [(0.02, 0.99), (0.1, 0.5), (0.0, 1.0)])
def test_scorer_equals_brute_force(lam, alpha):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    W = rng.normal(size=(4, 6)) * (rng.random((4, 6)) < 0.5) * 3  # large logits: the softmax must be stable
    b = rng.normal(size=4)
    y = rng.integers(0, 4, size=40)
    expected = brute_force_objective(W, b, X.astype(np.float64), y, lam, alpha)
    assert elastic_net_objective(W, b, X, y, lam, alpha) == pytest.approx(expected, rel=1e-12)


def test_machinery_without_peers(bench):
    result = bench.bench_size("tiny", (300, 8, 3), 0.99, 2.0, 4, 2, "", 60.0)
    assert len(result["lambdas"]) == 4 and result["lambdas"][0] == pytest.approx(result["lambda_max"])
    assert result["lambdas"][-1] == pytest.approx(result["lam"])
    for mode in ("single", "path"):
        ours = result[mode]["conceptlens"]
        assert "glmnet" not in result[mode] and len(ours["runs"]) == 2
    # one lam and the path's last point solve the same problem: the same objective to the solvers' tolerance
    path, single = result["path"]["conceptlens"], result["single"]["conceptlens"]
    assert path["objective"] == pytest.approx(single["objective"], rel=1e-5)
    assert result["path"]["conceptlens"]["objectives"][0] > result["path"]["conceptlens"]["objective"]
    text = bench.markdown({"meta": {"date": "d", "threads": 1, "machine": "m"}, "sizes": {"tiny": result}})
    assert "| tiny (300 x 8 x 3) |" in text and "adelie" in text and "skglm" in text and "celer" in text


@needs_peers
def test_glmnet_solves_our_objective(bench):
    """glmnet's path and ours reach the same objective at every lam (so the scaling of lam and of the
    l2 term is the same), and the ratio is recorded."""
    result = bench.bench_size("tiny", (400, 10, 3), 0.99, 3.0, 5, 1, str(PEER_PYTHON), 120.0)
    row = result["path"]
    assert row["glmnet"]["version"] == "2.6.1"
    assert abs(row["max_objective_gap_over_lams"]) < 1e-5 and abs(row["objective_gap"]) < 1e-5
    ratio = row["glmnet"]["seconds"] / row["conceptlens"]["seconds"]
    assert row["speedup"] == pytest.approx(ratio, abs=0.006)


@needs_peers
def test_peer_past_its_budget_is_reported(bench):
    X = np.random.default_rng(0).normal(size=(200, 5))
    y = np.arange(200) % 3
    fit = bench.run_peer(str(PEER_PYTHON), "glmnet", X, y, np.array([0.05, 0.01]), 0.99, 0.0)
    assert fit == {"timed_out": True, "budget_s": 0.0}

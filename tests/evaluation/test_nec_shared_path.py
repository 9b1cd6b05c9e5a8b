"""One VLG path per bottleneck (evaluation/nec.py VLGPaths, issue 23): the NEC column and the
accuracy-vs-NEC curve of a run come from one solve, with the numbers of separate solves."""

from __future__ import annotations

import numpy as np
import pytest

import conceptlens.evaluation.nec as nec_module
from conceptlens.evaluation import accuracy_at_nec, accuracy_curve
from conceptlens.evaluation.nec import VLGPaths, vlg_path
from conceptlens.runs.stages import fit_and_evaluate
from conceptlens.testing import FAST_PARAMS, make_problem

CURVE = (1, 2, 3, 5)


@pytest.fixture(scope="module")
def problem():
    train, val, test, context = make_problem()
    return train, val, test, context


@pytest.fixture
def calls(monkeypatch):
    """Counts the per-lam solves of the VLG protocol (every one goes through fit_elastic_net)."""
    count = {"n": 0}
    real = nec_module.fit_elastic_net

    def counted(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(nec_module, "fit_elastic_net", counted)
    return count


def test_a_shared_path_is_the_prefix_of_a_fresh_solve_in_any_order(problem, calls):
    train = problem[0]
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(len(train.labels), 12)).astype(np.float32) + np.eye(12)[train.labels % 12]
    grid = np.geomspace(0.4, 1e-3, 25)
    fresh = {t: vlg_path(Z, train.labels, 4, t, grid) for t in (0.2, 0.6)}
    alone = calls["n"]
    paths = VLGPaths()
    calls["n"] = 0
    shared = {t: vlg_path(Z, train.labels, 4, t, grid, paths=paths) for t in (0.6, 0.2, 0.6)}  # long first
    assert paths.solves == 1 and calls["n"] == len(fresh[0.6].lambdas) < alone
    for t in (0.2, 0.6):
        assert shared[t].lambdas == fresh[t].lambdas and shared[t].densities == fresh[t].densities
        for a, b in zip(shared[t].weights, fresh[t].weights, strict=True):
            np.testing.assert_array_equal(a, b)
    other = vlg_path(Z + 1, train.labels, 4, 0.2, grid, paths=paths)  # another bottleneck: its own path
    assert paths.solves == 2 and len(other.lambdas) >= 1


def test_the_run_solves_one_path_per_model_for_column_and_curve(problem, calls):
    train, val, test, context = problem
    methods = {"label_free": FAST_PARAMS["label_free"], "labo": FAST_PARAMS["labo"]}
    results, models = fit_and_evaluate(methods, train, val, test, context, 3, "vlg", CURVE)
    in_run = calls["n"]
    separate = 0
    for name, model in models.items():
        calls["n"] = 0
        column = accuracy_at_nec(model, train, test, 3)  # without sharing: the old computation
        curve = accuracy_curve(model, train, test, CURVE)
        separate += calls["n"]
        assert results[name]["top1_at_nec"] == column["top1"]
        assert results[name]["nec_at_nec"] == column["nec"]
        assert results[name]["nec_curve"] == curve["top1"]
        assert results[name]["nec_curve_reached"] == curve["reached"]
        assert results[name]["nec_curve"]["3"] == results[name]["top1_at_nec"]
    # the column's path (to NEC 3) is a prefix of the curve's (to NEC 5): solved once, no more
    calls["n"] = 0
    for model in models.values():
        accuracy_curve(model, train, test, CURVE)
    assert in_run == calls["n"] < separate

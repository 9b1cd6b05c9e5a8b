"""The thread policy (conceptlens/threads.py) and the small-problem numpy FISTA (solvers/small.py)."""

import numpy as np
import pytest
import torch

from conceptlens import threads
from conceptlens.solvers import elastic_net_objective, small, solve_path


def test_small_work_gets_one_thread_and_limits_restore():
    assert threads.threads_for(1e5) == 1
    before = torch.get_num_threads()
    with threads.limit_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_user_setting_caps_threads(monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_THREADS", "1")
    assert threads.threads_for(1e12) == 1
    threads.set_threads(None)
    with pytest.raises(ValueError):
        threads.set_threads(0)


def test_free_cores_is_within_the_available_ones():
    assert 1 <= threads.free_cores() <= threads.available_cores()


@pytest.mark.parametrize("positive", [False, True])
def test_numpy_and_torch_fista_reach_the_same_optimum(monkeypatch, positive):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12)).astype(np.float32)
    y = (X @ rng.normal(size=(4, 12)).T + rng.gumbel(size=(300, 4))).argmax(1)
    objs = []
    for limit in (small.SMALL_PRODUCT, 0):
        monkeypatch.setattr(small, "SMALL_PRODUCT", limit)
        path = solve_path(X, y, alpha=0.99, lam=0.01, n_classes=4, positive=positive, tol=1e-8)
        objs.append(elastic_net_objective(path.weights[-1], path.biases[-1], X, y, path.lambdas[-1], 0.99))
    assert objs[0] == pytest.approx(objs[1], rel=1e-5)

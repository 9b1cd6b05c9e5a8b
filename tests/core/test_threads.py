"""The thread policy (conceptlens/threads.py) and the small-problem numpy FISTA (solvers/small.py)."""

import subprocess
import sys
import time

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


@pytest.mark.parametrize(("average", "running", "free"), [
    (0.0, 1.0, 4),   # quiet: only this process's own thread runs
    (0.0, 3.0, 2),   # two jobs began a moment ago: the 1-minute average has not seen them yet
    (3.0, 1.0, 2),   # two jobs that pause for an instant still count through the average
    (9.0, 9.0, 1),   # a machine busier than its cores: still one thread, never zero
])
def test_free_cores_takes_the_larger_of_the_average_and_the_instant_load(monkeypatch, average,
                                                                        running, free):
    monkeypatch.setattr(threads, "_free", None)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (average, average, average))
    monkeypatch.setattr(threads, "running_now", lambda: running)
    assert threads.free_cores() == free


@pytest.mark.skipif(threads.running_now() is None, reason="no /proc/loadavg on this system")
def test_running_now_sees_spinning_processes_at_once():
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)  # both are past start-up and spinning: always runnable
        assert threads.running_now() >= 3  # the two spinners and this test's own thread
    finally:
        for p in spinners:
            p.kill()
            p.wait()


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

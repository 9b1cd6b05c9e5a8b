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
def test_free_cores_without_proc_stat_takes_the_larger_of_the_average_and_the_instant_load(
        monkeypatch, average, running, free):
    monkeypatch.setattr(threads, "_free", None)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "cpu_elsewhere", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (average, average, average))
    monkeypatch.setattr(threads, "running_now", lambda: running)
    assert threads.free_cores() == free


@pytest.mark.parametrize(("used", "running", "free"), [
    (0.0, 1.0, 4),   # quiet now, whatever this process ran in the last minute
    (2.0, 1.0, 2),   # two jobs used two cores over the window
    (0.0, 3.0, 2),   # two jobs runnable this instant
    (1.4, 1.0, 3),   # a job at 70% of two cores: rounded to one core taken
])
def test_free_cores_takes_the_cpu_others_use_not_the_load_average(monkeypatch, used, running, free):
    monkeypatch.setattr(threads, "_free", None)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "cpu_elsewhere", lambda: used)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # ignored: /proc/stat is there
    monkeypatch.setattr(threads, "running_now", lambda: running)
    assert threads.free_cores() == free


@pytest.mark.skipif(threads.cpu_elsewhere() is None, reason="no /proc/stat on this system")
def test_cpu_elsewhere_counts_other_processes_not_this_one():
    import threading

    if threads.cpu_elsewhere(0.3) > 0.3:
        pytest.skip("other processes are using this machine: the difference is not measurable")
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()  # this process's own busy thread: not another process's load
    try:
        time.sleep(0.2)
        assert threads.cpu_elsewhere(0.3) < 0.5
    finally:
        stop.set()
        spinner.join()
    other = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads.cpu_elsewhere(0.3) > 0.6  # one core, less rounding of the clock ticks
    finally:
        other.kill()
        other.wait()


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


def test_only_numpy_blas_gets_the_threads_other_blas_pools_one():
    """Two OpenBLAS pools (numpy's and scipy's) with two threads each spin against each other on
    two cores: inside limit_threads(n) numpy's gets n, any other BLAS 1, and both are restored."""
    import os

    import scipy.optimize  # noqa: F401 - loads scipy's own OpenBLAS where its wheel ships one
    from threadpoolctl import threadpool_info

    def blas():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas()
    own = [p for p in before if threads._numpy_blas(p)]
    if not own or len(before) < 2:
        pytest.skip("one BLAS library here: nothing to tell apart")
    with threads.limit_threads(2) as n:
        inside = blas()
    assert all(inside[p] == min(n, before[p]) for p in own)
    assert all(inside[p] == 1 for p in inside if p not in own)
    assert blas() == before
    assert threads._numpy_blas(os.path.join("site-packages", "numpy.libs", "libopenblas.so"))
    assert not threads._numpy_blas(os.path.join("site-packages", "scipy.libs", "libopenblas.so"))

"""How many intra-op threads a computation gets: from its size and the cores actually free.

A loaded machine (a shared workstation, a CI runner, Ray workers) breaks the default of one
thread per core: every small torch or BLAS call wakes a team of threads that then wait for
cores the other processes hold, and a fit of a few seconds took 17 times as long beside other
jobs (issue 23). The policy here:

- `user_threads()`: the user's setting is respected and never exceeded: `set_threads(n)` (the
  run config's and the CLI's option call it), else $CONCEPTLENS_THREADS, else
  $OMP_NUM_THREADS; and torch's own thread count where conceptlens starts limiting (a
  `torch.set_num_threads(n)` of the caller's) is a cap as well.
- `free_cores()`: the cores this process may run on (`os.sched_getaffinity`) minus the load
  the other processes put on them (the larger of the cores they used over the last 50 ms, from
  /proc/stat less this process's own ticks, and the threads runnable right now in
  /proc/loadavg less this process's own running thread), at least 1. The 1-minute load
  average stands in only without /proc/stat: it counts this process's own recent work.
- `threads_for(work)`: one thread below GRAIN multiply-adds per thread (a problem that small
  is all fixed cost), otherwise as many as the work fills, capped by the free cores and the
  user's setting.
- `limit_threads(n)` / `threads_for_work(work)`: context managers that set torch's intra-op
  threads and the BLAS / OpenMP pools (threadpoolctl) for the block, and restore them after.
- No spinning: `passive_wait()` sets OMP_WAIT_POLICY=PASSIVE (unless the user set a policy)
  so idle OpenMP threads sleep instead of burning the cores the other threads wait for. It only
  takes effect when called before torch starts its OpenMP pool: the CLI calls it first thing.

Everything here is core: it imports no other conceptlens module.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

GRAIN = 2e6  # multiply-adds one more thread must have to be worth waking (about 0.5 ms)
ENV = "CONCEPTLENS_THREADS"

_user: int | None = None  # set_threads


def passive_wait() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless set: idle OpenMP threads sleep (before torch loads)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def set_threads(n: int | None) -> None:
    """The user's cap on intra-op threads for everything conceptlens runs (None: no cap)."""
    global _user
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise ValueError(f"threads must be a positive integer or None; got {n!r}")
    _user = None if n is None else int(n)


def _env_int(name: str) -> int | None:
    try:
        v = int(os.environ.get(name, ""))
    except ValueError:
        return None
    return v if v >= 1 else None


def user_threads() -> int | None:
    """The user's setting: `set_threads`, else $CONCEPTLENS_THREADS, else $OMP_NUM_THREADS; None
    when none is set (torch's own thread count is a cap too: `limit_threads`)."""
    if _user is not None:
        return _user
    for name in (ENV, "OMP_NUM_THREADS"):
        if (v := _env_int(name)) is not None:
            return v
    return None


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def own_running() -> int:
    """This process's threads runnable right now (state R in /proc/self/task/*/stat), the calling
    one included; 1 where there is no /proc (the calling thread)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    n = 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
    return max(1, n)


def running_now(samples: int = 5, interval: float = 0.001) -> float | None:
    """The median number of runnable threads on the machine right now, from /proc/loadavg's
    fourth field ("running/total"), over a few samples, each less this process's own runnable
    threads but one (`own_running`: an OpenMP team still spinning after a parallel region is not
    another job); None where there is no /proc (macOS, Windows). The 1-minute load average takes
    a minute to see jobs that just started; this sees them at once."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                total = int(f.read().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return None
        counts.append(max(1, total - own_running() + 1))
        if i + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(counts))


CPU_WINDOW = 0.05  # seconds over which `cpu_elsewhere` measures the other processes' use


def _cpu_ticks(cpus) -> tuple[int, int] | None:
    """(busy, total) clock ticks of the cpus `cpus` from /proc/stat (steal counts as busy: a
    hypervisor's other guests hold it); None without /proc/stat."""
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                busy += sum(ticks) - ticks[3] - ticks[4]
                total += sum(ticks)
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total else None


def _own_ticks() -> int | None:
    """This process's user + system clock ticks, all its threads (/proc/self/stat)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def cpu_elsewhere(window: float = CPU_WINDOW) -> float | None:
    """Cores the other processes use right now: the busy ticks of this process's cpus over
    `window` seconds, less this process's own, per tick of one cpu; None where there is no
    /proc/stat (macOS, Windows). Unlike the load average, what this process itself ran in the
    last minute (a warm run's encode and concept stages, 2 threads) does not count."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    before, own_before = _cpu_ticks(cpus), _own_ticks()
    if before is None or own_before is None:
        return None
    time.sleep(window)
    after, own_after = _cpu_ticks(cpus), _own_ticks()
    if after is None or own_after is None or after[1] <= before[1]:
        return None
    per_cpu = (after[1] - before[1]) / len(cpus)  # the window in ticks of one cpu
    others = (after[0] - before[0]) - (own_after - own_before)
    return max(0.0, others / per_cpu)


_free: tuple[float, int] | None = None  # (when, free cores): read at most every FREE_TTL seconds
FREE_TTL = 1.0


def free_cores() -> int:
    """The available cores minus the other processes' load, at least 1. The load is the larger of
    the cores the others use over a short window (`cpu_elsewhere`) and the threads runnable right
    now (`running_now`, less this process's own running thread). Where /proc/stat is missing the
    1-minute load average stands in for the first; it counts this process's own recent work as
    load, which made a warm demo fit on one of two quiet cores."""
    global _free
    now = time.monotonic()
    if _free is not None and now - _free[0] < FREE_TTL:
        return _free[1]
    cores = available_cores()
    loads = []
    if (used := cpu_elsewhere()) is not None:
        loads.append(used + 1.0)  # as a load: with this process's own running thread
    else:
        with contextlib.suppress(AttributeError, OSError):  # no load average on Windows
            loads.append(os.getloadavg()[0])
    if (running := running_now()) is not None:
        loads.append(running)
    if not loads:
        return cores
    others = max(0.0, max(loads) - 1.0)  # this process's own running thread is part of the load
    free = max(1, min(cores, int(cores - others + 0.5)))
    _free = (now, free)
    return free


def threads_for(work: float) -> int:
    """Intra-op threads for one operation (or a loop of them) of `work` multiply-adds each."""
    cap = user_threads()
    want = max(1, int(work // GRAIN))
    n = min(want, free_cores())
    return max(1, min(n, cap) if cap is not None else n)


_outer_cap: list[int] = []  # torch's thread count where the outermost limit_threads block began


@contextlib.contextmanager
def limit_threads(n: int):
    """torch's intra-op threads and the BLAS pools at `n` inside the block, restored after;
    never above the user's setting nor above torch's thread count outside any such block (a
    `torch.set_num_threads` the caller made is a cap too)."""
    import torch

    before = torch.get_num_threads()
    caps = [c for c in (user_threads(), _outer_cap[0] if _outer_cap else before) if c is not None]
    n = max(1, min([int(n), *caps]))
    _outer_cap.append(_outer_cap[0] if _outer_cap else before)
    try:
        if n != before:
            torch.set_num_threads(n)
        with _blas_limits(n):
            yield n
    finally:
        _outer_cap.pop()
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def threads_for_work(work: float):
    """`limit_threads(threads_for(work))`."""
    with limit_threads(threads_for(work)) as n:
        yield n


_BLAS: tuple[int, object] | None = None  # (len(sys.modules) when found, ThreadpoolController)


def _controller():
    """threadpoolctl's view of the loaded thread pools, found again after new imports (scipy's
    own OpenBLAS loads with scipy, after the first fit may have begun)."""
    global _BLAS
    from threadpoolctl import ThreadpoolController

    if _BLAS is None or _BLAS[0] != len(sys.modules):
        _BLAS = (len(sys.modules), ThreadpoolController())  # it costs milliseconds
    return _BLAS[1]


def _numpy_blas(path: str) -> bool:
    """Whether a BLAS library is numpy's own (its wheel's numpy.libs, or inside the package)."""
    parts = os.path.normpath(path).split(os.sep)
    return any(part == "numpy.libs" or part == "numpy" for part in parts)


@contextlib.contextmanager
def _blas_limits(n: int):
    """threadpoolctl's limit on the BLAS pools, when it is installed: numpy's BLAS at `n`, any
    other BLAS (scipy's own OpenBLAS, under L-BFGS-B's vector operations) at one thread. Two
    OpenBLAS pools of two threads each on two cores spin against each other: scikit-learn's
    L-BFGS over the demo's linear probe took 6.7 s so, 1.2 s with only numpy's pool at two
    threads (issue 23). Where numpy's library is not told apart, every BLAS gets `n`."""
    try:
        ctl = _controller()
    except ImportError:  # pragma: no cover - a dependency; kept optional for embedders
        yield
        return
    libs = ctl.select(user_api="blas").lib_controllers
    own = [lib.filepath for lib in libs if _numpy_blas(lib.filepath)]
    others = [lib.filepath for lib in libs if not _numpy_blas(lib.filepath)]
    with contextlib.ExitStack() as stack:
        if own and others and n > 1:
            stack.enter_context(ctl.select(filepath=own).limit(limits=n))
            stack.enter_context(ctl.select(filepath=others).limit(limits=1))
        else:
            stack.enter_context(ctl.limit(limits=n, user_api="blas"))
        yield

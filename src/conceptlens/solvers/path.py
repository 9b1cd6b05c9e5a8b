"""The regularisation path: lams from lambda_max down, each solve warm-started from the
previous one, stopping at a fixed lam or at a target NEC (then bisecting in log lam), and
what it records (`ElasticNetPath`).

`run_path` drives any per-lam solver (`PathSolver`: modules `in_memory`, `streaming`,
`streaming_newton`); module `glm` picks the solver and checks the input.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from ..progress import progress


class PathSolver(Protocol):
    """One lam at a time, warm-started from a path state (lam_prev, W_prev, b_prev, step,
    G_prev); `solve` returns (W, b, info, step, G or None, features solved on, features the KKT
    check added)."""

    start_step: float | None  # the step the first lam starts from (None: the safe one)

    def solve(self, lam: float, state: tuple) -> tuple: ...

    def gradient_at_zero(self, lmax: float) -> torch.Tensor:
        """The loss gradient at W = 0 with the optimal intercepts: working sets screen the first
        lam from it (only solvers with working sets need it)."""


@dataclass
class ElasticNetPath:
    lambdas: list[float] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)
    nec: list[float] = field(default_factory=list)  # mean non-zero weights per class
    objectives: list[float] = field(default_factory=list)
    # work per point, in full-gradient equivalents: one = a forward X W^T plus a gradient
    # R^T X over all p features (2 n p m multiply-adds); the repeated last point of a bisection costs 0
    full_gradients: list[float] = field(default_factory=list)
    # working sets only: features solved on at each point, and features the KKT check added
    active_features: list[int] = field(default_factory=list)
    kkt_added: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each point's solve
    solver: str = "fista"  # which solved it ("auto" resolved)


def run_path(solver_: PathSolver, lmax: float, m: int, lam: float | None, target_nec: float | None,
             n_lambdas: int, epsilon: float, refine: int, screen_from_zero: bool,
             solver: str) -> ElasticNetPath:
    """The path of `solver_` (module glm's `solve_path` docstring) from lambda_max `lmax`
    over m classes; `screen_from_zero`: the first lam screens from the gradient at W = 0
    (working sets); `solver`: the name the path records."""
    if lmax <= 0:  # no weight can leave zero (w >= 0 and no feature correlates positively): intercepts only
        lmax = 1e-12
    lo = lam if lam is not None else epsilon * lmax
    grid = np.geomspace(lmax, max(lo, 1e-12), n_lambdas).tolist()
    if lam is not None and lam >= lmax:
        grid = [lam]
    path = ElasticNetPath(solver=solver)

    def solve(value, state):
        """state: (lam, W, b, step, gradient at the solution or None) of the warm start."""
        start = time.perf_counter()
        Wn, bn, info, step, G, n_active, n_added = solver_.solve(value, state)
        work = info.products / 2
        nec = float((Wn != 0).sum()) / m
        path.lambdas.append(float(value))
        path.weights.append(Wn.numpy().astype(np.float64))
        path.biases.append(bn.numpy().astype(np.float64))
        path.nec.append(nec)
        path.objectives.append(info.objective)
        path.full_gradients.append(float(work))
        path.active_features.append(int(n_active))
        path.kkt_added.append(int(n_added))
        path.seconds.append(time.perf_counter() - start)
        return (value, Wn, bn, step, G), nec

    G0 = solver_.gradient_at_zero(lmax) if screen_from_zero else None
    prev = (lmax, None, None, solver_.start_step, G0)
    first = True
    for value in progress(grid, desc=f"path ({solver})", unit="lam"):
        state, nec = solve(value, prev)
        if target_nec is not None and nec >= target_nec:
            if not first and nec > target_nec:
                _bisect(path, solve, prev, state, target_nec, refine)
            return path
        prev, first = state, False
    return path


def _bisect(path, solve, hi_state, lo_state, target, steps):
    """hi: larger lam (NEC < target); lo: smaller lam (NEC > target). Keep the best <= target."""
    best = (path.nec[-2], len(path.nec) - 2)  # the previous path point is <= target
    for _ in range(steps):
        mid = math.sqrt(hi_state[0] * lo_state[0])
        state, nec = solve(mid, hi_state)
        if nec > target:
            lo_state = state
        else:
            hi_state = state
            if nec >= best[0]:
                best = (nec, len(path.nec) - 1)
        if nec == target:
            break
    i = best[1]
    for name in ("lambdas", "weights", "biases", "nec", "objectives", "active_features"):
        getattr(path, name).append(getattr(path, name)[i])
    path.full_gradients.append(0.0)
    path.kkt_added.append(0)
    path.seconds.append(0.0)

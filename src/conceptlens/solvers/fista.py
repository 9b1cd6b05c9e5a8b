"""FISTA for the elastic-net GLM, written once for every backend.

Accelerated proximal gradient with backtracking that starts from the step it is given (never
below the safe step 1 / L, L = ||[X, 1]||_2^2 / (2 n): the softmax Hessian is bounded by 1/2,
the sigmoid's by 1/4), lets the step grow by 2% an iteration while the sufficient-decrease
test allows, and restarts momentum when it points uphill (gradient-mapping restart:
O'Donoghue & Candes, 2015). The proximal step is the exact prox of the penalty plus the
indicators of W >= 0 (`positive`) and of W = 0 off `support` (module `kernels`).

The iteration asks its data (`FistaData`) for the products it needs, so the same loop runs
on an in-memory X (module `memory`, which keeps the logits and extrapolates them: one
forward and one gradient an iteration) and on shards streamed from disk (module
`streaming`, which computes the loss at the new point and the loss and gradient at the next
extrapolated point in one pass).
"""

from __future__ import annotations

from typing import Protocol

import torch

from .kernels import SolveInfo, next_theta, penalty, soft_threshold, sufficient_decrease


class FistaData(Protocol):
    """What FISTA needs from the features and labels; `products` counts the work (module glm)."""

    products: float

    def start(self, W: torch.Tensor, b: torch.Tensor) -> float:
        """The mean loss at the starting point, which is the first extrapolated point."""

    def gradient(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """The mean loss and its gradient (gW, gb) at the current extrapolated point."""

    def trial(self, Wn, bn, W, b, beta: float) -> float:
        """The mean loss at a candidate point (Wn, bn) (from the iterate (W, b) with momentum
        `beta`, should it be accepted)."""

    def accept(self, Wn, bn, W, b, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidate (Wn, bn) is the new iterate: the next extrapolated point,
        Wn + beta (Wn - W), bn + beta (bn - b)."""


def initial_point(W0, b0, m: int, p: int, dtype, positive: bool, support=None):
    """The warm start as (W, b) tensors (zeros without one), projected onto W >= 0 and the support."""
    W = torch.zeros(m, p, dtype=dtype) if W0 is None else torch.as_tensor(W0, dtype=dtype).clone()
    b = torch.zeros(m, dtype=dtype) if b0 is None else torch.as_tensor(b0, dtype=dtype).clone()
    if positive:  # start feasible: every iterate is then a prox output, hence >= 0
        W = W.clamp(min=0)
    if support is not None:
        W = W * support
    return W, b


def fista(data: FistaData, W: torch.Tensor, b: torch.Tensor, lam: float, alpha: float, tol: float,
          max_iter: int, t: float, safe: float, positive: bool = False, support=None):
    """Minimise the objective at lam from the feasible point (W, b) with first step t >= safe;
    `support`: an (m, p) 0/1 tensor, W = 0 where it is 0. Stops when the objective changes by
    at most tol (relative) three iterations in a row. Returns W, b, info, the last step."""
    l1, l2 = lam * alpha, lam * (1 - alpha)

    def prox(V, s):
        out = soft_threshold(V, s * l1, 1 + s * l2, positive)
        # the indicator of W = 0 off the support is separable too: its prox zeroes those entries
        return out if support is None else out * support

    obj = data.start(W, b) + penalty(W, l1, l2)
    Wy, by, theta = W, b, 1.0
    quiet, converged, it = 0, False, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported in SolveInfo
        f_y, gW, gb = data.gradient()
        while True:  # backtracking from the current step, never below the safe one
            Wn = prox(Wy - t * gW, t)
            bn = by - t * gb
            dW, db = Wn - Wy, bn - by
            # gradient-mapping restart: drop the momentum when it points uphill (decided per
            # candidate, so a streamed pass can evaluate the next extrapolated point with it)
            th = 1.0 if float(((Wy - Wn) * (Wn - W)).sum() + ((by - bn) * (bn - b)).sum()) > 0 else theta
            theta_n = next_theta(th)
            beta = (th - 1) / theta_n
            f_n = data.trial(Wn, bn, W, b, beta)
            if sufficient_decrease(f_n, f_y, gW, gb, dW, db, t) or t <= safe:
                break
            t = max(t * 0.5, safe)
        new_obj = f_n + penalty(Wn, l1, l2)
        Wy, by = data.accept(Wn, bn, W, b, beta)
        W, b, theta = Wn, bn, theta_n
        quiet = quiet + 1 if abs(obj - new_obj) <= tol * max(abs(new_obj), 1e-12) else 0
        obj = new_obj
        if quiet >= 3:
            converged = True
            break
        t *= 1.02  # probe a longer step; backtracking keeps it honest
    return W, b, SolveInfo(it, obj, converged, data.products), t

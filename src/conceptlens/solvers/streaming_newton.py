"""Proximal Newton on features that stay on disk (`solve_path(StreamedFeatures(...), ...,
solver="newton")`).

The steps of module `newton` (working sets per class, Hessian blocks from a subsample of
images, FISTA on the blocks, Armijo line search), with the passes of module `streaming`:
logits are never stored for all n rows, so each quantity over all images is one pass over
the shards, chunk by chunk, under `max_memory_bytes`.

- The Hessian rows (a seeded uniform subsample of `hessian_rows` images) are read once,
  when the solver opens, and kept in memory with a row of ones; their probabilities at a
  point are computed in memory, so the blocks cost no pass.
- A step's line search is one pass that computes the loss at W + t D for t = 1, 1/2, 1/4
  and the gradient at t = 1 over all features (the next step's gradient and KKT check,
  assuming the full step is accepted, as Newton's usually is); a shorter step costs one more
  gradient pass, and a step shorter than 1/4 one more pass per three halvings.
- So a step is one pass: three forwards over the features the points touch plus one
  gradient, about two full gradients of arithmetic where the in-memory solver, which keeps
  the logits, spends about one and a quarter.

Memory: a third of `max_memory_bytes` is Newton's own: half of it for the Hessian rows, kept
in the shards' storage dtype (the same numbers; fewer rows than asked when they do not fit:
at least 64, else a ConfigError saying how much to give), a quarter for one gather of the
blocks' features and a quarter for the blocks (which bound the working set per class); the
passes get the other two thirds, planned as in module
`streaming` (its fixed part covers Newton's iterates: W, G, D and the trial points).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .newton import NewtonSteps, hessian_rows_for, start_point, subsample
from .streaming import _DTYPES, StreamedFeatures, _Stream

MIN_HESSIAN_ROWS = 64
TRIALS_PER_PASS = 3


class _Passes:
    """`NewtonSteps.run`'s data, from passes over the shards."""

    def __init__(self, stream: _Stream, XsT: torch.Tensor, steps: NewtonSteps):
        self.stream, self.XsT, self.steps = stream, XsT, steps
        self.p = stream.X.p
        self.ahead = None  # (loss, G, gb) at the full step of the last line search

    def _hessian_probabilities(self, W, b):
        """Probabilities at the Hessian rows, converted from their storage dtype 4,096 at a time."""
        nh = self.XsT.shape[1]
        Z = torch.empty(nh, len(W), dtype=W.dtype)
        for a in range(0, nh, 4096):
            Z[a:a + 4096] = (W @ self.XsT[:-1, a:a + 4096].to(W.dtype)).T
        return self.steps.probabilities(Z + b)

    def start(self, W, b):
        (ce,), G, gb = self.stream.run(None, [(W, b)], grad=0)
        return ce, G, gb, self._hessian_probabilities(W, b), 2.0

    def trials(self, W, b, D, db, halvings):
        cols = ((W != 0) | (D != 0)).any(0).nonzero().flatten()
        ts = [0.5 ** k for k in range(halvings)]
        for i in range(0, len(ts), TRIALS_PER_PASS):
            group = ts[i:i + TRIALS_PER_PASS]
            points = [((W + t * D)[:, cols], b + t * db) for t in group]
            first = i == 0
            losses, G, gb = self.stream.run(cols, points, grad=0 if first else None, grad_all=first)
            cost = len(group) * len(cols) / self.p + (1.0 if first else 0.0)
            if first:
                self.ahead = (losses[0], G, gb)
            for t, ce in zip(group, losses, strict=True):
                yield t, ce, cost
                cost = 0.0

    def move(self, W, b, t):
        ahead, self.ahead = self.ahead, None
        if t == 1.0 and ahead is not None:  # the line search's pass computed this point's gradient
            ce, G, gb = ahead
            return ce, G, gb, self._hessian_probabilities(W, b), 0.0
        return self.start(W, b)


class StreamingNewtonSolver:
    """One lam at a time on a StreamedFeatures, with the interface module glm's path uses."""

    start_step = None

    def __init__(self, X: StreamedFeatures, y: torch.Tensor, m: int, alpha: float, tol: float, max_iter: int,
                 positive: bool, loss: str, dtype, hessian_rows: int = 4096, min_set: int = 128,
                 seed: int = 0):
        n, p = X.shape
        c = torch.empty((), dtype=dtype).element_size()
        cap = X.max_memory_bytes
        own = cap // 3
        store = X.itemsize  # the Hessian rows stay in the shards' dtype: the same numbers, fewer bytes
        rows = min(n, hessian_rows_for(m, hessian_rows), own // 2 // ((p + 1) * store))
        if rows < min(n, MIN_HESSIAN_ROWS):
            need = 3 * 2 * min(n, MIN_HESSIAN_ROWS) * (p + 1) * store
            raise ConfigError(f"max_memory_bytes={cap} is too small for solver='newton' on {p} features: its "
                              f"Hessian rows alone need a sixth of the cap; give at least {need} bytes, or "
                              "use solver='fista'.")
        gather = max(1, own // 4 // c)
        max_set = max(1, int(math.isqrt(max(1, own // 4 // (m * c)))) - 1)  # blocks: m (s + 1)^2 numbers
        passes_X = X.with_options(max_memory_bytes=cap - own)
        passes_X.stats = X.stats  # one account of passes and bytes for the caller
        self.stream = _Stream(passes_X, y, m, loss, dtype)
        self.H, _, _ = self.stream.scan(bound=False)  # the gradient at W = 0: lambda_max
        self.sub = subsample(n, rows, seed)
        raw_dtype = _DTYPES[X.storage][1]
        XsT = torch.empty(p + 1, len(self.sub), dtype=raw_dtype if X.center is None and X.scale is None
                          else dtype)
        XsT[p] = 1.0
        for a, Xc in self.stream.chunks(None):  # one pass collects the Hessian rows
            lo, hi = torch.searchsorted(self.sub, torch.tensor([a, a + len(Xc)]))
            XsT[:p, lo:hi] = Xc[self.sub[lo:hi] - a].T.to(XsT.dtype)
        X.stats.planned_bytes = max(X.stats.planned_bytes,
                                    self.stream.fixed + self.stream.rows * self.stream.per_row + own)
        self.steps = NewtonSteps(n, m, p, alpha, tol, max_iter, positive, loss, XsT, min_set, max_set, gather)
        self.passes = _Passes(self.stream, XsT, self.steps)
        self.freq = torch.bincount(y, minlength=m).to(torch.float64) / n
        self.n, self.p, self.m, self.dtype = n, p, m, dtype
        self.alpha, self.positive, self.loss = alpha, positive, loss
        self.pending = 1.0  # the first pass: X^T (Y - pi), one product (the rows pass only reads)

    def lambda_max(self) -> float:
        top = self.H.max().clamp(min=0) if self.positive else self.H.abs().max()
        return float(top / max(self.alpha, 1e-3))

    def solve(self, lam: float, state):
        _, W0, b0, _, _ = state
        W, b = start_point(W0, b0, self.freq, self.m, self.p, self.dtype, self.positive, self.loss)
        W, b, info, G, active = self.steps.run(lam, W, b, self.passes)
        info.products += self.pending
        self.pending = 0.0
        return W, b, info, None, G, active, 0

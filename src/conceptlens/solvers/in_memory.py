"""The in-memory backend: features as an (n, p) tensor.

It gives the algorithms the products they ask for on an X that fits in memory, keeping the
logits Z = X W^T + b between steps (they are linear in (W, b), so an extrapolated point's
logits are extrapolated too):

- `FistaArrays`: module `fista`'s data, one forward X W^T and one gradient R^T X an iteration;
  `fista(X, y, ...)` runs it on a matrix (all its columns).
- `FullSolver` (FISTA over all columns at each lam), `WorkingSetSolver` (module
  `working_set`) and `NewtonSolver` (module `newton`, with `NewtonArrays` as its data): the
  per-lam solvers module `path` drives, all with one interface.
- `as_tensors` (the input checks), `safe_step`, `lambda_max`, `objective` and
  `lowest_top_logit` on arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .fista import fista as run_fista
from .fista import initial_point
from .kernels import lambda_max_of, mean_loss, objective_value, probabilities, residuals, support_mask
from .newton import NewtonSteps, hessian_rows_for, start_point, subsample
from .small import fista_numpy, transposed, use_numpy
from .working_set import solve_on_working_sets


def as_tensors(X, y, dtype, n_classes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, p) as `dtype` and y (n,) as long, checked: shapes, at least one row, finite
    features, labels in [0, n_classes)."""
    X = torch.as_tensor(np.asarray(X), dtype=dtype)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ConfigError(f"X must be (n, p) and y (n,); got {tuple(X.shape)} and {tuple(y.shape)}.")
    if len(X) == 0:
        raise DataError("X has no rows: the elastic-net GLM needs at least one labelled sample.")
    if not _all_finite(X):
        bad = (~torch.isfinite(X)).any(0).nonzero().flatten()[:10].tolist()
        raise DataError(f"X has non-finite values (NaN or inf) in columns {bad}"
                        f"{' (first 10)' if len(bad) == 10 else ''}; the GLM needs finite features: "
                        "drop or impute those entries (or the concepts) before fitting.")
    if int(y.min()) < 0 or (n_classes is not None and int(y.max()) >= n_classes):
        raise DataError(f"labels must lie in [0, {n_classes or 'n_classes'}); got min {int(y.min())}, "
                        f"max {int(y.max())}. Map the labels to 0..n_classes-1 or pass a larger n_classes.")
    return X, y


def _all_finite(X: torch.Tensor) -> bool:
    # numpy's test on a CPU float array: torch's isfinite wakes its thread pool, milliseconds on
    # a loaded machine for the demo's 3,000 x 71 (issue 23); the same answer
    if X.dtype in (torch.float32, torch.float64) and X.device.type == "cpu" and not X.requires_grad:
        return bool(np.isfinite(X.numpy()).all())
    return bool(torch.isfinite(X).all())


def safe_step(X: torch.Tensor) -> float:
    """The safe FISTA step 2 n / ||[X, 1]||_2^2 (x 1.01), by 30 power iterations."""
    v = torch.randn(X.shape[1] + 1, dtype=X.dtype, generator=torch.Generator().manual_seed(0))
    for _ in range(30):
        u = X @ v[:-1] + v[-1]
        v = torch.cat([X.T @ u, u.sum()[None]])
        v /= v.norm()
    u = X @ v[:-1] + v[-1]
    sigma2 = float(u @ u)
    return 2.0 * len(X) / (sigma2 * 1.01)


def lambda_max(X, y, alpha: float, n_classes: int | None = None, positive: bool = False,
               support=None) -> float:
    """module glm's `lambda_max` on an array (float64)."""
    X, y = as_tensors(X, y, torch.float64)
    m = n_classes or int(y.max()) + 1
    Y = torch.nn.functional.one_hot(y, m).to(torch.float64)
    H = X.T @ (Y - Y.mean(0)) / len(X)
    if support is not None:
        H = H * support_mask(support, m, X.shape[1], H.dtype).T
    return lambda_max_of(H, alpha, positive)


def objective(W, b, X, y, lam: float, alpha: float, loss: str = "multinomial",
              n_classes: int | None = None) -> float:
    """module glm's `elastic_net_objective` on an array, in float64."""
    W = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    Y = torch.nn.functional.one_hot(y, n_classes or W.shape[0]).to(torch.float64)
    return objective_value(mean_loss(X @ W.T + b, Y, loss), W, lam, alpha)


def lowest_top_logit(X, W, b) -> float:
    """min over rows of max over classes of X W^T + b."""
    return float((np.asarray(X) @ W.T + b).max(1).min())


# -- FISTA ---------------------------------------------------------------------------------------

class FistaArrays:
    """module `fista`'s data on an in-memory X: the logits of the iterate, the candidate and the
    extrapolated point are kept, so an iteration costs one forward and one gradient."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, loss: str, products: float = 0.0):
        self.X, self.Y, self.loss, self.products = X, Y, loss, products
        self.n = len(X)
        self.Z = self.Zy = self.Zn = None

    def _ce(self, Z) -> float:
        return float(mean_loss(Z, self.Y, self.loss))

    def start(self, W, b) -> float:
        self.Z = self.X @ W.T + b
        self.products += 1
        self.Zy = self.Z
        return self._ce(self.Z)

    def gradient(self):
        f_y = self._ce(self.Zy)
        R = residuals(self.Zy, self.Y, self.n, self.loss)
        gW, gb = R.T @ self.X, R.sum(0)
        self.products += 1
        return f_y, gW, gb

    def trial(self, Wn, bn, W, b, beta) -> float:
        self.Zn = self.X @ Wn.T + bn
        self.products += 1
        return self._ce(self.Zn)

    def accept(self, Wn, bn, W, b, beta):
        Wy, by, self.Zy = Wn + beta * (Wn - W), bn + beta * (bn - b), self.Zn + beta * (self.Zn - self.Z)
        self.Z = self.Zn
        return Wy, by


def fista(X: torch.Tensor, y: torch.Tensor, lam, alpha, W0, b0, n_classes, tol, max_iter, step,
          positive=False, loss="multinomial", safe=None, Y=None, support=None, XT=None):
    """FISTA on the columns of X; `safe`: a known safe step (one for a matrix with more
    columns is safe here too, since dropping columns cannot raise ||[X, 1]||_2); `support`:
    an (m, p) 0/1 tensor, W = 0 where it is 0; `XT`: module small's `transposed(X)` when the
    caller keeps one across solves (small problems only). Returns W, b, info, the last step and
    the logits X W^T + b."""
    p = X.shape[1]
    m = n_classes or int(y.max()) + 1
    if Y is None:
        Y = torch.nn.functional.one_hot(y, m).to(X.dtype)
    W, b = initial_point(W0, b0, m, p, X.dtype, positive, support)
    # the safe step 1/L holds for both losses (softmax Hessian <= 1/2, sigmoid's <= 1/4)
    products = 0.0
    if safe is None:
        safe = safe_step(X)
        products += 62 / m  # 31 matrix-vector pairs, each 1/m of a product
    t = max(step or safe, safe)
    if use_numpy(len(X), p, m):  # a small problem: numpy on one thread (module small)
        return fista_numpy(X, y, W, b, m, lam, alpha, tol, max_iter, t, safe, positive, loss, products,
                           support, XT)
    data = FistaArrays(X, Y, loss, products)
    W, b, info, t = run_fista(data, W, b, lam, alpha, tol, max_iter, t, safe, positive, support)
    return W, b, info, t, data.Z


# -- the path's per-lam solvers (state: lam_prev, W_prev, b_prev, step, G_prev) -----------------

class FullSolver:
    """FISTA over all columns at each lam (`working_set=False`), with WorkingSetSolver's interface."""

    start_step = None

    def __init__(self, X, y, m, alpha, tol, max_iter, positive, loss, support=None):
        self.X, self.y, self.m, self.alpha, self.tol, self.max_iter = X, y, m, alpha, tol, max_iter
        self.positive, self.loss, self.support = positive, loss, support
        self.Y = torch.nn.functional.one_hot(y, m).to(X.dtype)
        self.safe = None
        # small problems: X^T made contiguous once per path, not once per lam (module small)
        self.XT = transposed(X.numpy()) if use_numpy(*X.shape, m) else None

    def solve(self, lam, state):
        pending = 0.0
        if self.safe is None:  # once per path: the safe step depends on X only
            self.safe, pending = safe_step(self.X), 62 / self.m
        W, b, info, step, _ = fista(self.X, self.y, lam, self.alpha, state[1], state[2], self.m, self.tol,
                                    self.max_iter, state[3], self.positive, self.loss, safe=self.safe,
                                    Y=self.Y, support=self.support, XT=self.XT)
        info.products += pending
        return W, b, info, step, None, self.X.shape[1], 0


class WorkingSetSolver:
    """Solves one lam at a time on X (n, p) by module `working_set`'s loop, warm-started from a
    path state (lam_prev, W_prev, b_prev, step, G_prev)."""

    start_step = None  # the first lam starts from the safe step

    def __init__(self, X: torch.Tensor, y: torch.Tensor, m: int, alpha: float, tol: float, max_iter: int,
                 positive: bool, loss: str, screen=None):
        self.X, self.y, self.m = X, y, m
        self.n, self.p = X.shape
        self.dtype = X.dtype
        self.Y = torch.nn.functional.one_hot(y, m).to(X.dtype)
        self.alpha, self.tol, self.max_iter = alpha, tol, max_iter
        self.positive, self.loss, self.screen = positive, loss, screen
        self.safe = safe_step(X)
        self.pending = 62 / m  # the power iteration's matrix-vector products, charged to the first solve
        self._Z = None  # the logits at the last inner solve's point

    def gradient_at_zero(self, lmax: float) -> torch.Tensor:
        """G at W = 0 with the optimal intercept (class frequencies, both losses): -H."""
        self.pending += 1
        return -(self.X.T @ (self.Y - self.Y.mean(0))).T / self.n

    # module working_set's data
    def fista_on(self, cols, lam, W0, b0, step):
        W, b, info, step, self._Z = fista(self.X[:, cols], self.y, lam, self.alpha, W0, b0, self.m, self.tol,
                                          self.max_iter, step, self.positive, self.loss, safe=self.safe,
                                          Y=self.Y)
        return W, b, info, step

    def full_gradient(self, cols, W, b):
        return residuals(self._Z, self.Y, self.n, self.loss).T @ self.X, 1.0  # one R^T X over all features

    def solve(self, lam: float, state):
        products, self.pending = self.pending, 0.0
        return solve_on_working_sets(self, lam, state, self.alpha, self.positive, self.screen, products)


# -- Newton --------------------------------------------------------------------------------------

class NewtonArrays:
    """module `newton`'s data on an in-memory X: passes that keep the logits Z = X W^T + b
    between them."""

    def __init__(self, X, Y, sub, steps: NewtonSteps, loss: str, Z=None):
        self.X, self.Y, self.sub, self.steps, self.loss = X, Y, sub, steps, loss
        self.n, self.p = X.shape
        self.Z, self.XD = Z, None  # Z: the start's logits when known

    def times(self, D: torch.Tensor) -> tuple[torch.Tensor, float]:
        """X D^T over the features D touches, and its cost in products."""
        cols = (D != 0).any(0).nonzero().flatten()
        if len(cols) > self.p // 2:
            return self.X @ D.T, 1.0
        if len(cols) == 0:
            return torch.zeros(self.n, D.shape[0], dtype=self.X.dtype), 0.0
        return self.X[:, cols] @ D[:, cols].T, len(cols) / self.p

    def _at(self):
        P = probabilities(self.Z, self.loss)
        R = (P - self.Y) / self.n
        return float(mean_loss(self.Z, self.Y, self.loss)), R.T @ self.X, R.sum(0), P[self.sub]

    def start(self, W, b):
        cost = 0.0
        if self.Z is None:
            Z, cost = self.times(W)
            self.Z = Z + b
        return (*self._at(), cost + 1)

    def trials(self, W, b, D, db, halvings):
        XD, cost = self.times(D)
        self.XD = XD + db
        t = 1.0
        for _ in range(halvings):
            yield t, float(mean_loss(self.Z + t * self.XD, self.Y, self.loss)), cost
            t, cost = t * 0.5, 0.0

    def move(self, W, b, t):
        self.Z = self.Z + t * self.XD
        return (*self._at(), 1.0)


class NewtonSolver:
    """Solves one lam at a time on X (n, p) by module `newton`'s steps, warm-started from a
    path state (lam_prev, W_prev, b_prev, step, G_prev); the interface of `WorkingSetSolver`."""

    start_step = None

    def __init__(self, X: torch.Tensor, y: torch.Tensor, m: int, alpha: float, tol: float, max_iter: int,
                 positive: bool, loss: str, hessian_rows: int = 4096, min_set: int = 128, seed: int = 0):
        self.X, self.m = X, m
        self.n, self.p = X.shape
        self.Y = torch.nn.functional.one_hot(y, m).to(X.dtype)
        self.positive, self.loss = positive, loss
        self.sub = subsample(self.n, hessian_rows_for(m, hessian_rows), seed)
        # the Hessian rows' features and a row of ones (the intercept), one row per feature
        XsT = torch.cat([X[self.sub].T, torch.ones(1, len(self.sub), dtype=X.dtype)]).contiguous()
        self.steps = NewtonSteps(self.n, m, self.p, alpha, tol, max_iter, positive, loss, XsT, min_set)
        self._last = None  # (W, b, Z) of the last solve: the next lam starts from its logits
        self.pending = 0.0

    def solve(self, lam: float, state):
        _, W0, b0, _, _ = state
        W, b = start_point(W0, b0, self.Y.mean(0), self.m, self.p, self.X.dtype, self.positive, self.loss)
        last = self._last
        Z = last[2] if last is not None and last[0] is W0 and last[1] is b0 else None
        data = NewtonArrays(self.X, self.Y, self.sub, self.steps, self.loss, Z)
        W, b, info, G, active = self.steps.run(lam, W, b, data)
        info.products += self.pending
        self.pending = 0.0
        self._last = (W, b, data.Z)
        return W, b, info, None, G, active, 0

"""Elastic-net multinomial logistic regression, and its regularisation path.

Objective (glm_saga's and glmnet's; scikit-learn's with C = 1 / (lam * n), l1_ratio = alpha):

    mean_i CE(W x_i + b, y_i) + lam * alpha * |W|_1 + lam * (1 - alpha) / 2 * |W|_2^2

(the intercept b is not penalised). `loss="ovr"` replaces the softmax cross-entropy by the
sum over classes of the binary log-loss of class c against the rest (logit W_c x + b_c):
one-vs-rest, m independent problems, each scikit-learn's SGDClassifier objective with
alpha = lam, l1_ratio = alpha.

`positive=True` adds the constraint W >= 0 (the intercept stays free): the proximal step is
then the exact prox of the elastic net plus the indicator of W >= 0,
max(0, V - s * l1) / (1 + s * l2), i.e. the soft-threshold keeping only its positive part
(not a clip of an unconstrained iterate), so FISTA solves the constrained problem.

`support` (an (m, p) 0/1 mask; ours) adds the constraint W_cj = 0 wherever support_cj = 0: a
class may weigh only the features it is linked to (class-consistent concept bottlenecks). The
prox of the penalty plus that indicator is the elastic-net prox followed by zeroing the masked
entries (the penalty is separable), so FISTA solves the constrained problem exactly, and
lambda_max is taken over the allowed entries only. It is solved by in-memory FISTA over all
columns (the working-set, Newton and streamed solvers do not take a mask: asking for them with
one is a ConfigError).

lambda_max. At W = 0 the optimal intercept makes the predicted probabilities the class
frequencies pi (both losses), and the gradient of the loss in W is -H^T with
H = X^T (Y - 1 pi^T) / n (p x m). W = 0 is optimal iff 0 is in the gradient plus the
subdifferential of the penalty (plus the normal cone of W >= 0 under positivity):
unconstrained, |H_jc| <= lam * alpha for every (j, c); with W >= 0 only increases are
feasible, the directional derivative along e_jc is -H_jc + lam * alpha, so the condition is
H_jc <= lam * alpha: lambda_max = max(0, max H) / alpha (only the positive part of -gradient).
(Each row of H sums to 0 over the classes, so max H > 0 unless H = 0.)

Solved by accelerated proximal gradient (FISTA) with
backtracking that starts from the safe step 1 / L, L = ||[X, 1]||_2^2 / (2 n) (the softmax
Hessian is bounded by 1/2), lets the step grow while the sufficient-decrease test allows,
and restarts momentum when it stops helping (O'Donoghue & Candes, 2015). Along a path of
decreasing lam each solve is warm-started from the previous one, which is what makes
stopping at a target sparsity cheap. `solve_path(..., working_set=True)` (off by default)
solves each lam on the features the strong rule keeps and checks the KKT conditions over
all features, re-solving with the violators: the same optimum, fewer products (module
`working_set`). Every path reports its cost in full-gradient equivalents (`full_gradients`).
`solver="newton"` replaces FISTA by proximal Newton steps on per-class working sets (module
`newton`; streamed: `streaming_newton`): the same optimum in a few full gradients per lam;
`solver="auto"` (the default) takes it for in-memory problems whose n x p x m product reaches
AUTO_NEWTON_PRODUCT.

Features that do not fit in memory: every function here also takes a
`streaming.StreamedFeatures` (shards on disk, float32/float16/bfloat16, read in chunks under a
memory cap) in place of X, with the same objective, lam, path and working sets (module
`streaming`). Arrays stay on the in-memory path.

Bad input: non-finite features and labels outside [0, n_classes) are a DataError; a
constant column gets weight 0 (it is the intercept's direction); lam >= lambda_max gives
W = 0 with the class-frequency intercepts; a class with no sample (solve_path and
fit_elastic_net) gets W = 0 and an intercept 40 below every sample's largest logit, the
limit of the optimum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError, DataError


def _tensors(X, y, dtype, n_classes=None):
    X = torch.as_tensor(np.asarray(X), dtype=dtype)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ConfigError(f"X must be (n, p) and y (n,); got {tuple(X.shape)} and {tuple(y.shape)}.")
    if len(X) == 0:
        raise DataError("X has no rows: the elastic-net GLM needs at least one labelled sample.")
    if not bool(torch.isfinite(X).all()):
        bad = (~torch.isfinite(X)).any(0).nonzero().flatten()[:10].tolist()
        raise DataError(f"X has non-finite values (NaN or inf) in columns {bad}"
                        f"{' (first 10)' if len(bad) == 10 else ''}; the GLM needs finite features: "
                        "drop or impute those entries (or the concepts) before fitting.")
    if int(y.min()) < 0 or (n_classes is not None and int(y.max()) >= n_classes):
        raise DataError(f"labels must lie in [0, {n_classes or 'n_classes'}); got min {int(y.min())}, "
                        f"max {int(y.max())}. Map the labels to 0..n_classes-1 or pass a larger n_classes.")
    return X, y


LOSSES = ("multinomial", "ovr")


SOLVERS = ("auto", "fista", "newton")
# "auto" takes Newton when one n x p x m product is at least this many multiply-adds (in
# memory): there a FISTA iteration is slow and Newton's few steps pay for their fixed costs.
# Measured: Newton 5.3-6.2x the patched glm_saga at 2e10 (FISTA 1.1-1.3x); FISTA 314x the
# original glm_saga at 1e9 (benchmarks/bench_solver.py); the crossover is not measured.
AUTO_NEWTON_PRODUCT = 5e9


def _pick_solver(solver: str, X, m: int) -> str:
    if solver != "auto":
        return solver
    if _streamed(X):
        return "fista"
    n, p = X.shape
    return "newton" if n * p * m >= AUTO_NEWTON_PRODUCT else "fista"


def _check_solver(solver) -> None:
    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {SOLVERS}; got {solver!r}.")


def _newton(X, y, m, alpha, tol, max_iter, positive, loss, dtype):
    """Module newton's solver on an in-memory X, module streaming_newton's on StreamedFeatures."""
    if _streamed(X):
        from .streaming_newton import StreamingNewtonSolver

        return StreamingNewtonSolver(X, y, m, alpha, tol, max_iter, positive, loss, dtype)
    from .newton import NewtonSolver

    return NewtonSolver(X, y, m, alpha, tol, max_iter, positive, loss)


def _check(lam, alpha, loss, positive) -> None:
    if not lam >= 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"lam must be >= 0 and alpha in [0, 1]; got {lam}, {alpha}.")
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}; got {loss!r}.")
    if not isinstance(positive, (bool, np.bool_)):
        raise ConfigError(f"positive must be True or False; got {positive!r}.")


def _loss(Z: torch.Tensor, Y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean over images of the softmax cross-entropy, or of the summed one-vs-rest log-losses."""
    if loss == "ovr":
        return torch.nn.functional.binary_cross_entropy_with_logits(Z, Y, reduction="sum") / len(Z)
    return -(Y * torch.log_softmax(Z, dim=1)).sum() / len(Z)


def _streamed(X) -> bool:
    from .streaming import StreamedFeatures

    return isinstance(X, StreamedFeatures)


SUPPORT_IN_MEMORY = ("support (a class x feature mask) is solved by in-memory FISTA only: pass the features "
                     "as an array and solver='fista' or 'auto', without working_set.")


def _support(support, m: int, p: int, dtype) -> torch.Tensor:
    """The (m, p) 0/1 support mask as a tensor, checked."""
    S = torch.as_tensor(np.asarray(support, dtype=np.float64), dtype=dtype)
    if tuple(S.shape) != (m, p):
        raise ConfigError(f"support must be (classes, features) = ({m}, {p}); got {tuple(S.shape)}.")
    if not bool(((S == 0) | (S == 1)).all()):
        raise ConfigError("support must hold only 0 (weight fixed at 0) and 1 (weight free).")
    return S


def _support_solver(solver: str, streamed: bool, working_set: bool = False) -> None:
    if streamed or working_set or solver == "newton":
        raise ConfigError(SUPPORT_IN_MEMORY)


def elastic_net_objective(W, b, X, y, lam: float, alpha: float, loss: str = "multinomial",
                          n_classes: int | None = None) -> float:
    """The objective above, in float64, for any (W, b) (numpy or torch); the constraint of
    `positive` is not part of it (check W >= 0 separately)."""
    if _streamed(X):
        from .streaming import objective

        return objective(W, b, X, y, lam, alpha, loss, n_classes)
    W = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    Y = torch.nn.functional.one_hot(y, n_classes or W.shape[0]).to(torch.float64)
    ce = _loss(X @ W.T + b, Y, loss)
    return float(ce + lam * alpha * W.abs().sum() + 0.5 * lam * (1 - alpha) * (W * W).sum())


def lambda_max(X, y, alpha: float, n_classes: int | None = None, positive: bool = False,
               support=None) -> float:
    """The smallest lam at which W = 0 is optimal (with the intercept fitted), for either
    loss; with `positive`, under W >= 0 (module docstring: max(0, max H) / alpha); with
    `support`, over the allowed (class, feature) entries only."""
    if _streamed(X):
        if support is not None:
            raise ConfigError(SUPPORT_IN_MEMORY)
        from .streaming import lambda_max as streamed_lambda_max

        return streamed_lambda_max(X, y, alpha, n_classes, positive)
    X, y = _tensors(X, y, torch.float64)
    m = n_classes or int(y.max()) + 1
    Y = torch.nn.functional.one_hot(y, m).to(torch.float64)
    H = X.T @ (Y - Y.mean(0)) / len(X)
    if support is not None:
        H = H * _support(support, m, X.shape[1], H.dtype).T
    top = H.max().clamp(min=0) if positive else H.abs().max()
    return float(top / max(alpha, 1e-3))


@dataclass
class SolveInfo:
    iterations: int
    objective: float
    converged: bool
    # matrix products of the size n x (columns solved on) x m: forwards X W^T and gradients R^T X
    products: float = 0.0


def fit_elastic_net(X, y, lam: float, alpha: float = 0.99, W0=None, b0=None, n_classes=None,
                    tol: float = 1e-7, max_iter: int = 5000, step: float | None = None,
                    dtype=torch.float64, positive: bool = False,
                    loss: str = "multinomial",
                    solver: str = "auto", support=None) -> tuple[np.ndarray, np.ndarray, SolveInfo]:
    """Minimise the objective at one lam (under W >= 0 with `positive`, and W = 0 outside
    `support`, an (m, p) 0/1 mask; a warm start W0 is projected onto both). Returns W (m, p),
    b (m,), info. `solver`: "fista" (accelerated proximal gradient), "newton" (module `newton`; in-memory X) or "auto" (Newton when one
    n x p x m product reaches AUTO_NEWTON_PRODUCT multiply-adds, FISTA below and when streamed)."""
    _check(lam, alpha, loss, positive)
    _check_solver(solver)
    if streamed := _streamed(X):
        yt = X.labels(y, n_classes)
    else:
        Xt, yt = _tensors(X, y, dtype, n_classes)
    m = n_classes or int(yt.max()) + 1
    if support is not None:
        _support_solver(solver, streamed)
        _support(support, m, Xt.shape[1], Xt.dtype)
        solver = "fista"
    present = torch.bincount(yt, minlength=m) > 0
    if not bool(present.all()):  # solved without the empty classes, as solve_path does
        keep = _classes_with_samples(present, loss)
        rows = (lambda A: None if A is None else np.asarray(A)[keep])
        yy = np.searchsorted(keep, np.asarray(y))
        Wk, bk, info = fit_elastic_net(X, yy, lam, alpha, rows(W0), rows(b0), len(keep), tol, max_iter, step,
                                       dtype, positive, loss, solver, rows(support))
        W, b = _with_empty_classes(X, Wk, bk, keep, m, loss)
        info.objective = elastic_net_objective(W, b, X, y, lam, alpha, loss, m)
        return W.astype(Wk.dtype), b.astype(bk.dtype), info
    solver = _pick_solver(solver, X if streamed else Xt, m)
    if solver == "newton":
        start = tuple(None if A is None else torch.as_tensor(np.asarray(A), dtype=dtype) for A in (W0, b0))
        W, b, info, *_ = _newton(X if streamed else Xt, yt, m, alpha, tol, max_iter, positive, loss,
                                 dtype).solve(lam, (lam, *start, None, None))
        return W.numpy(), b.numpy(), info
    if streamed:
        from .streaming import fit

        return fit(X, yt, lam, alpha, W0, b0, m, tol, max_iter, step, dtype, positive, loss)
    mask = None if support is None else _support(support, m, Xt.shape[1], Xt.dtype)
    W, b, info, _, _ = _fista(Xt, yt, lam, alpha, W0, b0, m, tol, max_iter, step, positive, loss,
                              support=mask)
    return W.numpy(), b.numpy(), info


def _safe_step(X: torch.Tensor) -> float:
    # power iteration for ||[X, 1]||_2^2
    v = torch.randn(X.shape[1] + 1, dtype=X.dtype, generator=torch.Generator().manual_seed(0))
    for _ in range(30):
        u = X @ v[:-1] + v[-1]
        v = torch.cat([X.T @ u, u.sum()[None]])
        v /= v.norm()
    u = X @ v[:-1] + v[-1]
    sigma2 = float(u @ u)
    return 2.0 * len(X) / (sigma2 * 1.01)


def sufficient_decrease(f_n, f_y, gW, gb, dW, db, t: float) -> bool:
    """FISTA's backtracking test: the loss at the step (dW, db) from the extrapolated point is
    below its quadratic upper model for step size t (1e-7 relative slack for float32 sums)."""
    step_term = float((dW * dW).sum() + (db * db).sum()) / (2 * t)
    bound = f_y + float((gW * dW).sum() + (gb * db).sum()) + step_term
    return f_n <= bound + 1e-7 * abs(bound)


def _fista(X, y, lam, alpha, W0, b0, n_classes, tol, max_iter, step, positive=False,
           loss="multinomial", safe=None, Y=None, support=None):
    """FISTA on the columns of X; `safe`: a known safe step (one for a matrix with more
    columns is safe here too, since dropping columns cannot raise ||[X, 1]||_2); `support`:
    an (m, p) 0/1 tensor, W = 0 where it is 0. Returns W, b, info, the last step and the
    logits X W^T + b."""
    n, p = X.shape
    m = n_classes or int(y.max()) + 1
    if Y is None:
        Y = torch.nn.functional.one_hot(y, m).to(X.dtype)
    W = torch.zeros(m, p, dtype=X.dtype) if W0 is None else torch.as_tensor(W0, dtype=X.dtype).clone()
    b = torch.zeros(m, dtype=X.dtype) if b0 is None else torch.as_tensor(b0, dtype=X.dtype).clone()
    if positive:  # start feasible: every iterate is then a prox output, hence >= 0
        W = W.clamp(min=0)
    if support is not None:
        W = W * support
    # the safe step 1/L holds for both losses (softmax Hessian <= 1/2, sigmoid's <= 1/4)
    products = 0.0
    if safe is None:
        safe = _safe_step(X)
        products += 62 / m  # 31 matrix-vector pairs, each 1/m of a product
    t = max(step or safe, safe)
    l1, l2 = lam * alpha, lam * (1 - alpha)

    def prox(V, s):
        if positive:  # prox of s * (l1 |w| + l2/2 w^2 + indicator(w >= 0)), coordinate-wise
            out = torch.clamp(V - s * l1, min=0) / (1 + s * l2)
        else:
            out = torch.sign(V) * torch.clamp(V.abs() - s * l1, min=0) / (1 + s * l2)
        # the indicator of W = 0 off the support is separable too: its prox zeroes those entries
        return out if support is None else out * support

    def penalty(Wx):
        return float(l1 * Wx.abs().sum() + 0.5 * l2 * (Wx * Wx).sum())

    def ce(Z):
        return float(_loss(Z, Y, loss))

    def residuals(Z):  # d loss / d logits
        return ((torch.sigmoid(Z) if loss == "ovr" else torch.softmax(Z, dim=1)) - Y) / n

    # logits are linear in (W, b), so the extrapolated point's logits are extrapolated too:
    # each iteration costs one forward (X W^T) and one gradient (R^T X) matmul
    Z = X @ W.T + b
    products += 1
    Wy, by, Zy, theta = W, b, Z, 1.0
    obj = ce(Z) + penalty(W)
    quiet, converged, it = 0, False, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported in SolveInfo
        f_y = ce(Zy)
        R = residuals(Zy)
        gW, gb = R.T @ X, R.sum(0)
        products += 1
        while True:  # backtracking from the current step, never below the safe one
            Wn = prox(Wy - t * gW, t)
            bn = by - t * gb
            Zn = X @ Wn.T + bn
            products += 1
            f_n = ce(Zn)
            dW, db = Wn - Wy, bn - by
            if sufficient_decrease(f_n, f_y, gW, gb, dW, db, t) or t <= safe:
                break
            t = max(t * 0.5, safe)
        new_obj = f_n + penalty(Wn)
        # gradient-mapping restart: drop the momentum when it points uphill
        if float(((Wy - Wn) * (Wn - W)).sum() + ((by - bn) * (bn - b)).sum()) > 0:
            theta = 1.0
        theta_n = (1 + math.sqrt(1 + 4 * theta * theta)) / 2
        beta = (theta - 1) / theta_n
        Wy, by, Zy = Wn + beta * (Wn - W), bn + beta * (bn - b), Zn + beta * (Zn - Z)
        W, b, Z, theta = Wn, bn, Zn, theta_n
        quiet = quiet + 1 if abs(obj - new_obj) <= tol * max(abs(new_obj), 1e-12) else 0
        obj = new_obj
        if quiet >= 3:
            converged = True
            break
        t *= 1.02  # probe a longer step; backtracking keeps it honest
    return W, b, SolveInfo(it, obj, converged, products), t, Z


class _FullSolver:
    """FISTA over all columns at each lam (`working_set=False`), with WorkingSetSolver's interface."""

    start_step = None

    def __init__(self, X, y, m, alpha, tol, max_iter, positive, loss, support=None):
        self.X, self.y, self.m, self.alpha, self.tol, self.max_iter = X, y, m, alpha, tol, max_iter
        self.positive, self.loss, self.support = positive, loss, support

    def solve(self, lam, state):
        W, b, info, step, _ = _fista(self.X, self.y, lam, self.alpha, state[1], state[2], self.m, self.tol,
                                     self.max_iter, state[3], self.positive, self.loss, support=self.support)
        return W, b, info, step, None, self.X.shape[1], 0


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


def solve_path(X, y, alpha: float = 0.99, lam: float | None = None, target_nec: float | None = None,
               n_lambdas: int = 50, epsilon: float = 1e-3, n_classes=None, tol: float = 1e-6,
               max_iter: int = 2000, dtype=torch.float32, refine: int = 6, positive: bool = False,
               loss: str = "multinomial", working_set: bool = False, solver: str = "auto",
               support=None, _screen=None) -> ElasticNetPath:
    """Warm-started path from lambda_max down, stopping at `lam` or at `target_nec`
    (`positive`: every point under W >= 0, from the constrained lambda_max). X: an (n, p)
    array, or a `streaming.StreamedFeatures` (features on disk, memory capped).

    With `target_nec`, the path stops at the first lam whose NEC reaches the target, then
    bisects (in log lam) between it and the previous one `refine` times; the last entry is
    the solution with the largest NEC not above the target (or the first at/above it if no
    lam gives NEC <= target exactly). If no lam of the grid reaches the target (possible
    under `positive`, where some weights stay 0 at every lam), the path ends at its smallest lam.

    `working_set`: solve each lam on the features the sequential strong rule keeps (from the
    gradient at the previous lam), then check the KKT conditions over all features and
    re-solve with the violators until there are none: the same optimum, with most products
    over a few columns (module `working_set` docstring). `solver="newton"`: proximal Newton
    steps on per-class working sets (module `newton`; on StreamedFeatures module
    `streaming_newton`): the same optimum in a handful of full gradients per lam (its working
    sets are its own: `working_set` is ignored); "auto" (the default) takes it for in-memory X
    when one n x p x m product reaches AUTO_NEWTON_PRODUCT multiply-adds, FISTA below that and
    for streamed features; the path records which (`ElasticNetPath.solver`). `_screen(G, W, lam, lam_prev)`:
    tests only, replaces the strong rule (a boolean mask over features). `support`: an (m, p)
    0/1 mask, W = 0 where it is 0 at every point (module docstring; in-memory FISTA only).

    Classes in range(n_classes) with no sample have no finite optimum (their intercept
    goes to -inf); they get zero weights and an intercept 40 below every sample's largest
    logit (a probability below e^-40), and the others are solved without them.
    """
    if lam is None and target_nec is None:
        raise ConfigError("solve_path needs lam= (a fixed regularisation) or target_nec=.")
    _check(0.0 if lam is None else lam, alpha, loss, positive)
    _check_solver(solver)
    if n_classes is not None and (not isinstance(n_classes, (int, np.integer)) or n_classes < 1):
        raise ConfigError(f"n_classes must be a positive integer; got {n_classes!r}.")
    if streamed := _streamed(X):
        yt = X.labels(y, n_classes)
    else:
        Xt, yt = _tensors(X, y, dtype, n_classes)
    m = n_classes or int(yt.max()) + 1
    if support is not None:
        _support_solver(solver, streamed, working_set)
        _support(support, m, Xt.shape[1], Xt.dtype)  # its shape, before any row is taken from it
        solver = "fista"
    solver = _pick_solver(solver, X if streamed else Xt, m)
    counts = torch.bincount(yt, minlength=m)
    present = counts > 0
    if not bool(present.all()):
        return _path_without_empty_classes(X, y, present, dict(
            alpha=alpha, lam=lam, target_nec=target_nec, n_lambdas=n_lambdas, epsilon=epsilon, tol=tol,
            max_iter=max_iter, dtype=dtype, refine=refine, positive=positive, loss=loss,
            working_set=working_set, solver=solver, _screen=_screen,
            support=None if support is None else np.asarray(support)[present.numpy()]))
    if solver == "newton":
        solver_ = _newton(X if streamed else Xt, yt, m, alpha, tol, max_iter, positive, loss, dtype)
        lmax = solver_.lambda_max() if streamed else lambda_max(X, y, alpha, m, positive)
        working_set = False  # Newton's working sets are its own
    elif streamed:
        from .streaming import StreamingSolver

        solver_ = StreamingSolver(X, yt, m, alpha, tol, max_iter, positive, loss, dtype, working_set, _screen)
        lmax = solver_.lambda_max()
    else:
        lmax = lambda_max(X, y, alpha, m, positive)
        if working_set:
            from .working_set import WorkingSetSolver

            solver_ = WorkingSetSolver(Xt, yt, m, alpha, tol, max_iter, positive, loss, screen=_screen)
        elif support is not None:
            lmax = lambda_max(X, y, alpha, m, positive, support)
            solver_ = _FullSolver(Xt, yt, m, alpha, tol, max_iter, positive, loss,
                                  _support(support, m, Xt.shape[1], Xt.dtype))
        else:
            solver_ = _FullSolver(Xt, yt, m, alpha, tol, max_iter, positive, loss)
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

    prev = (lmax, None, None, solver_.start_step, solver_.gradient_at_zero(lmax) if working_set else None)
    first = True
    for value in grid:
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


def _classes_with_samples(present: torch.Tensor, loss: str) -> np.ndarray:
    keep = present.nonzero().flatten().numpy()
    if len(keep) < 2 and loss == "multinomial":
        raise DataError(f"only {len(keep)} of {len(present)} classes have samples (classes "
                        f"{keep.tolist()}); a softmax GLM needs at least two. Check the labels / split.")
    return keep


def _with_empty_classes(X, Wk, bk, keep, m, loss) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) over all m classes from the solution over the classes `keep`: absent classes get
    W = 0 and an intercept 40 below every sample's largest logit (softmax), or -40 (one-vs-rest)."""
    W = np.zeros((m, Wk.shape[1]))
    W[keep] = Wk
    if loss != "multinomial":
        floor = 0.0
    elif _streamed(X):
        from .streaming import lowest_top_logit

        floor = lowest_top_logit(X, Wk, bk)
    else:
        floor = float((np.asarray(X) @ Wk.T + bk).max(1).min())
    b = np.full(m, floor - 40.0)
    b[keep] = bk
    return W, b


def _path_without_empty_classes(X, y, present, kwargs) -> ElasticNetPath:
    """The path on the classes that have samples, re-indexed, then written back into all m
    rows: absent classes get W = 0 and an intercept 40 below every sample's largest logit."""
    if not _streamed(X):
        X = np.asarray(X)
    keep = _classes_with_samples(present, kwargs["loss"])
    yy = np.searchsorted(keep, np.asarray(y))
    m = len(present)
    if kwargs["target_nec"] is not None:  # NEC is per class over all m; the sub-problem has fewer rows
        kwargs = {**kwargs, "target_nec": kwargs["target_nec"] * m / len(keep)}
    sub = solve_path(X, yy, n_classes=len(keep), **kwargs)
    for k, (Wk, bk) in enumerate(zip(sub.weights, sub.biases, strict=True)):
        W, b = _with_empty_classes(X, Wk, bk, keep, m, kwargs["loss"])
        sub.weights[k], sub.biases[k] = W, b
        sub.nec[k] = float((W != 0).sum()) / m
        sub.objectives[k] = elastic_net_objective(W, b, X, y, sub.lambdas[k], kwargs["alpha"],
                                                  kwargs["loss"], m)
    return sub

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

Where the code is (each module's docstring says more): `kernels` (losses, prox, penalty,
lambda_max, KKT checks), `params` (the parameter constraints), the algorithms `fista`,
`newton`, `working_set` and `path`, the backends `in_memory` (arrays) and `shards` /
`streaming` / `streaming_newton` (features on disk), and this module, the public entry
points: they check the input, pick the solver and the backend, and drop classes without
samples.

Bad input: non-finite features and labels outside [0, n_classes) are a DataError; a
constant column gets weight 0 (it is the intercept's direction); lam >= lambda_max gives
W = 0 with the class-frequency intercepts; a class with no sample (solve_path and
fit_elastic_net) gets W = 0 and an intercept 40 below every sample's largest logit, the
limit of the optimum.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from . import in_memory, streaming
from .in_memory import FullSolver, NewtonSolver, WorkingSetSolver, as_tensors
from .kernels import SUPPORT_IN_MEMORY, SolveInfo, sufficient_decrease, support_mask
from .params import FIT_CONSTRAINTS, LOSSES, PATH_CONSTRAINTS, SOLVERS, check
from .path import ElasticNetPath, run_path
from .shards import StreamedFeatures
from .streaming import StreamingSolver
from .streaming_newton import StreamingNewtonSolver

__all__ = ["AUTO_NEWTON_PRODUCT", "LOSSES", "SOLVERS", "SUPPORT_IN_MEMORY", "ElasticNetPath", "SolveInfo",
           "elastic_net_objective", "fit_elastic_net", "is_streamed", "lambda_max", "newton_solver",
           "pick_solver", "solve_path", "sufficient_decrease"]

# "auto" takes Newton when one n x p x m product is at least this many multiply-adds (in
# memory): there a FISTA iteration is slow and Newton's few steps pay for their fixed costs.
# Measured: Newton 5.3-6.2x the patched glm_saga at 2e10 (FISTA 1.1-1.3x); at the sparsity of
# benchmarks/bench_glmnet.py (5 weights per class; 2-core CPU, loaded), one lam / 20-lam path:
# 5,000 x 500 x 100 (2.5e8) Newton 3.1 s / 9.2 s, FISTA 8.8 s / 13.5 s; 10,000 x 1,000 x 100
# (1e9) Newton 1.8 s / 5.9 s, FISTA 64 s / 9.4 s, Newton's objectives the lower (issue 23).
# Below 2.5e8 the crossover is not measured (module small's numpy FISTA takes n p m <= 5e7).
AUTO_NEWTON_PRODUCT = 2.5e8


def is_streamed(X) -> bool:
    """Whether X is features on disk (a StreamedFeatures) rather than an array."""
    return isinstance(X, StreamedFeatures)


def pick_solver(solver: str, X, m: int) -> str:
    """ "auto" resolved: Newton for in-memory X whose n x p x m reaches AUTO_NEWTON_PRODUCT, else FISTA."""
    if solver != "auto":
        return solver
    if is_streamed(X):
        return "fista"
    n, p = X.shape
    return "newton" if n * p * m >= AUTO_NEWTON_PRODUCT else "fista"


def newton_solver(X, y, m, alpha, tol, max_iter, positive, loss, dtype):
    """Module newton's solver on an in-memory X (a tensor), module streaming_newton's on StreamedFeatures."""
    if is_streamed(X):
        return StreamingNewtonSolver(X, y, m, alpha, tol, max_iter, positive, loss, dtype)
    return NewtonSolver(X, y, m, alpha, tol, max_iter, positive, loss)


def _refuse_support(solver: str, streamed: bool, working_set: bool = False) -> None:
    if streamed or working_set or solver == "newton":
        raise ConfigError(SUPPORT_IN_MEMORY)


def elastic_net_objective(W, b, X, y, lam: float, alpha: float, loss: str = "multinomial",
                          n_classes: int | None = None) -> float:
    """The objective above, in float64, for any (W, b) (numpy or torch); the constraint of
    `positive` is not part of it (check W >= 0 separately)."""
    if is_streamed(X):
        return streaming.objective(W, b, X, y, lam, alpha, loss, n_classes)
    return in_memory.objective(W, b, X, y, lam, alpha, loss, n_classes)


def lambda_max(X, y, alpha: float, n_classes: int | None = None, positive: bool = False,
               support=None) -> float:
    """The smallest lam at which W = 0 is optimal (with the intercept fitted), for either
    loss; with `positive`, under W >= 0 (module docstring: max(0, max H) / alpha); with
    `support`, over the allowed (class, feature) entries only."""
    if is_streamed(X):
        if support is not None:
            raise ConfigError(SUPPORT_IN_MEMORY)
        return streaming.lambda_max(X, y, alpha, n_classes, positive)
    return in_memory.lambda_max(X, y, alpha, n_classes, positive, support)


def fit_elastic_net(X, y, lam: float, alpha: float = 0.99, W0=None, b0=None, n_classes=None,
                    tol: float = 1e-7, max_iter: int = 5000, step: float | None = None,
                    dtype=torch.float64, positive: bool = False,
                    loss: str = "multinomial",
                    solver: str = "auto", support=None) -> tuple[np.ndarray, np.ndarray, SolveInfo]:
    """Minimise the objective at one lam (under W >= 0 with `positive`, and W = 0 outside
    `support`, an (m, p) 0/1 mask; a warm start W0 is projected onto both). Returns W (m, p),
    b (m,), info. `solver`: "fista" (accelerated proximal gradient), "newton" (module `newton`;
    module `streaming_newton` on StreamedFeatures) or "auto" (Newton when one n x p x m product
    reaches AUTO_NEWTON_PRODUCT multiply-adds, FISTA below and when streamed)."""
    check("fit_elastic_net", FIT_CONSTRAINTS, lam=lam, alpha=alpha, loss=loss, positive=positive,
          solver=solver)
    if streamed := is_streamed(X):
        yt = X.labels(y, n_classes)
    else:
        Xt, yt = as_tensors(X, y, dtype, n_classes)
    m = n_classes or int(yt.max()) + 1
    if support is not None:
        _refuse_support(solver, streamed)
        support_mask(support, m, Xt.shape[1], Xt.dtype)
        solver = "fista"
    present = torch.bincount(yt, minlength=m) > 0
    if not bool(present.all()):  # solved without the empty classes, as solve_path does
        keep = _classes_with_samples(present, loss)

        def rows(A):
            return None if A is None else np.asarray(A)[keep]

        yy = np.searchsorted(keep, np.asarray(y))
        Wk, bk, info = fit_elastic_net(X, yy, lam, alpha, rows(W0), rows(b0), len(keep), tol, max_iter, step,
                                       dtype, positive, loss, solver, rows(support))
        W, b = _with_empty_classes(X, Wk, bk, keep, m, loss)
        info.objective = elastic_net_objective(W, b, X, y, lam, alpha, loss, m)
        return W.astype(Wk.dtype), b.astype(bk.dtype), info
    solver = pick_solver(solver, X if streamed else Xt, m)
    if solver == "newton":
        start = tuple(None if A is None else torch.as_tensor(np.asarray(A), dtype=dtype) for A in (W0, b0))
        W, b, info, *_ = newton_solver(X if streamed else Xt, yt, m, alpha, tol, max_iter, positive, loss,
                                       dtype).solve(lam, (lam, *start, None, None))
        return W.numpy(), b.numpy(), info
    if streamed:
        return streaming.fit(X, yt, lam, alpha, W0, b0, m, tol, max_iter, step, dtype, positive, loss)
    mask = None if support is None else support_mask(support, m, Xt.shape[1], Xt.dtype)
    W, b, info, _, _ = in_memory.fista(Xt, yt, lam, alpha, W0, b0, m, tol, max_iter, step, positive, loss,
                                       support=mask)
    return W.numpy(), b.numpy(), info


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
    check("solve_path", PATH_CONSTRAINTS, lam=lam, alpha=alpha, loss=loss, positive=positive, solver=solver,
          n_classes=n_classes)
    if streamed := is_streamed(X):
        yt = X.labels(y, n_classes)
    else:
        Xt, yt = as_tensors(X, y, dtype, n_classes)
    m = n_classes or int(yt.max()) + 1
    if support is not None:
        _refuse_support(solver, streamed, working_set)
        support_mask(support, m, Xt.shape[1], Xt.dtype)  # its shape, before any row is taken from it
        solver = "fista"
    solver = pick_solver(solver, X if streamed else Xt, m)
    counts = torch.bincount(yt, minlength=m)
    present = counts > 0
    if not bool(present.all()):
        return _path_without_empty_classes(X, y, present, dict(
            alpha=alpha, lam=lam, target_nec=target_nec, n_lambdas=n_lambdas, epsilon=epsilon, tol=tol,
            max_iter=max_iter, dtype=dtype, refine=refine, positive=positive, loss=loss,
            working_set=working_set, solver=solver, _screen=_screen,
            support=None if support is None else np.asarray(support)[present.numpy()]))
    if solver == "newton":
        solver_ = newton_solver(X if streamed else Xt, yt, m, alpha, tol, max_iter, positive, loss, dtype)
        lmax = solver_.lambda_max() if streamed else lambda_max(X, y, alpha, m, positive)
        working_set = False  # Newton's working sets are its own
    elif streamed:
        solver_ = StreamingSolver(X, yt, m, alpha, tol, max_iter, positive, loss, dtype, working_set, _screen)
        lmax = solver_.lambda_max()
    else:
        lmax = lambda_max(X, y, alpha, m, positive)
        if working_set:
            solver_ = WorkingSetSolver(Xt, yt, m, alpha, tol, max_iter, positive, loss, screen=_screen)
        elif support is not None:
            lmax = lambda_max(X, y, alpha, m, positive, support)
            solver_ = FullSolver(Xt, yt, m, alpha, tol, max_iter, positive, loss,
                                 support_mask(support, m, Xt.shape[1], Xt.dtype))
        else:
            solver_ = FullSolver(Xt, yt, m, alpha, tol, max_iter, positive, loss)
    return run_path(solver_, lmax, m, lam, target_nec, n_lambdas, epsilon, refine, working_set, solver)


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
    elif is_streamed(X):
        floor = streaming.lowest_top_logit(X, Wk, bk)
    else:
        floor = in_memory.lowest_top_logit(X, Wk, bk)
    b = np.full(m, floor - 40.0)
    b[keep] = bk
    return W, b


def _path_without_empty_classes(X, y, present, kwargs) -> ElasticNetPath:
    """The path on the classes that have samples, re-indexed, then written back into all m
    rows: absent classes get W = 0 and an intercept 40 below every sample's largest logit."""
    if not is_streamed(X):
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

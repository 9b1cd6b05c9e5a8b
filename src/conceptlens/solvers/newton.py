"""Proximal Newton for the elastic-net GLM (`solve_path(..., solver="newton")`).

The same objective, lam, path and answers as FISTA (module `glm`), in far fewer passes over
X when X is large. FISTA needs a few dozen to a hundred full gradients per lam because its
step only knows one curvature (the largest); here each step minimises a quadratic model
that knows every class's curvature on the features that matter, so a lam takes a handful of
steps (about 1 to 1.5 full gradients each).

One outer step at (W, b), logits Z = X W^T + b, probabilities P, residuals R = (P - Y) / n:

1. The full gradient G = R^T X (one product over all features; it is also the KKT check).
2. A working set per class c: the features with W_cj != 0, then those that violate the
   optimality of a zero weight (|G_cj| > l1; with W >= 0, -G_cj > l1) by the most, at most
   `max(min_set, 2 x the largest support)` per class (Blitz / celer-style growth:
   Johnson & Guestrin, 2015; Massias et al., 2018). Pairs outside it keep their weight.
3. The quadratic model: each class's exact Hessian block on its working set plus its
   intercept, X_S^T diag(p_c (1 - p_c)) X_S, from a fixed uniform subsample of
   `hessian_rows` images (all images when n is smaller; sub-sampled Newton: Byrd et al.,
   2011, "On the use of stochastic Hessian information in optimization methods for machine
   learning"). Cross-class terms (-p_c p_d) are dropped: block-diagonal over classes, as
   glmnet's multinomial partial Newton (Friedman, Hastie & Tibshirani, 2010, section 4);
   for one-vs-rest the blocks are the whole Hessian.
4. The model plus the penalty (with W >= 0 under `positive`) is minimised over each class's
   working set by FISTA on the small blocks, all classes at once (inexact: the model is only
   a model): direction D, db.
5. Backtracking line search on the true objective along (D, db), Armijo's condition with
   the model's predicted decrease (Lee, Sun & Saunders, 2014, "Proximal Newton-type methods
   for minimizing composite functions", SIAM J. Optim.); X D^T costs one product over the
   features D touches.

Stops when two steps in a row lower the objective by at most tol (relative), or the model
predicts no more than that, AND the optimality (KKT) conditions over all features hold to
min(0.05, 5e4 x tol) of lam x alpha: small steps alone are no proof (with too few Hessian
rows the model makes small steps far from the optimum, note [3]); two line searches that find
no descent at the same point end the solve, `converged` only if that KKT check holds. The stop
is at a point whose full gradient was just computed, so the returned G is that point's. The answer is the
unique optimum of the strictly convex objective (alpha < 1), so this solver and FISTA agree
to their tolerances (tests: against FISTA, scikit-learn and the KKT conditions).

The Hessian rows are max(`hessian_rows`, 20 x m): each class needs images where it has
curvature, and with more classes each has fewer.

Cost (`SolveInfo.products`, in products of n x p x m multiply-adds): the full gradient 1,
the line search's X D^T the fraction of features touched, the Hessian blocks
hessian_rows x (s + 1)^2 / (n x p) with s the working-set size per class.

Deviations from the references (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| Hessian [1] | full multinomial Hessian | per-class blocks on a subsample | more steps, each cheap |
| inner solver [2] | coordinate descent (glmnet) | FISTA on the blocks | batched over classes |

[1] The exact Hessian couples all classes and all features: its blocks on all images cost
about a full gradient per class working set. Measured at 50,000 x 2,000 x 200 (issue 15,
one lam from W = 0): the uniform subsample of 4,096 images takes it in 11 steps (12 s); the
class-averaged curvature times the Gram matrix (no subsample) needed 42 steps; the 1,024
images with the largest curvature per class (not a uniform sample: it drops the many small
ones) underestimated it, steps of 1/64, 93 steps. Block-diagonal over classes over-weights
moves shared by all classes (the softmax is flat along them): linear convergence, which
the line search keeps a descent.
[2] Coordinate descent is sequential; Python cannot run it fast. The model is solved to
1e-3 relative change (an inexact Newton step; the line search keeps every step a descent).
[3] With 1,490 Hessian rows (a small memory cap) the same lam stopped, on small steps alone,
at objective 4.0638 instead of 4.0370 with the KKT violation at 4x lam x alpha; the KKT
condition of the stop rule is what rules that out.
"""

from __future__ import annotations

import math

import torch

from .kernels import SolveInfo, kkt_violation, next_theta, probabilities, soft_threshold
from .kernels import penalty as elastic_penalty

INNER_ITERATIONS = 200
INNER_TOL = 1e-3
LINE_SEARCH_HALVINGS = 12
# a stop needs the optimality conditions' largest violation, relative to lam * alpha, below
# min(KKT_TOL, KKT_PER_TOL * tol): 0.05 at the default tol 1e-6, tighter for tighter tols
KKT_TOL = 0.05
KKT_PER_TOL = 5e4
ROWS_PER_CLASS = 20


def hessian_rows_for(m: int, hessian_rows: int) -> int:
    """Hessian rows for m classes: at least ROWS_PER_CLASS per class, so that each class's
    block sees enough images where it has curvature."""
    return max(hessian_rows, ROWS_PER_CLASS * m)


def subsample(n: int, rows: int, seed: int = 0) -> torch.Tensor:
    """The Hessian rows: all n, or `rows` of them drawn uniformly (seeded), sorted."""
    if rows >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows].sort().values


class NewtonSteps:
    """The model and the step (module docstring, steps 2 to 5), for any source of passes:
    `run(lam, W, b, data)` where `data` gives the loss, gradient and the probabilities at the
    Hessian rows of a point (`start`, `move`) and the losses along a direction (`trials`):
    module `in_memory` (`NewtonArrays`) and module `streaming_newton` (`NewtonPasses`)."""

    def __init__(self, n: int, m: int, p: int, alpha: float, tol: float, max_iter: int, positive: bool,
                 loss: str, XsT: torch.Tensor, min_set: int = 128, max_set: int | None = None,
                 gather_floats: int = 1 << 24):
        self.n, self.m, self.p, self.alpha, self.tol, self.max_iter = n, m, p, alpha, tol, max_iter
        self.positive, self.loss, self.min_set = positive, loss, min_set
        self.max_set = p if max_set is None else max(1, min(p, max_set))
        self.XsT, self.gather_floats = XsT, gather_floats  # (p + 1, nh): the Hessian rows, and ones

    def probabilities(self, Z):
        return probabilities(Z, self.loss)

    def violation(self, W, G, gb, l1, l2, zeros_exact: bool = False) -> float:
        """`kernels.kkt_violation` under this problem's constraint (W >= 0 or not)."""
        return kkt_violation(W, G, gb, l1, l2, self.positive, zeros_exact)

    def _working_set(self, W, G, l1):
        nz = W != 0
        push = -G if self.positive else G.abs()
        viol = (push - l1).clamp(min=0).masked_fill(nz, 0)
        score = torch.where(nz, torch.full_like(G, math.inf), viol)
        wanted = int((nz | (viol > 0)).sum(1).max())
        cap = max(self.min_set, 2 * int(nz.sum(1).max()))
        s = max(1, min(self.max_set, cap, wanted))
        val, idx = score.topk(s, dim=1)
        return idx, val > 0

    def _blocks(self, Ph, idx, mask):
        """Per class, the Hessian of the loss on its working set plus intercept, from the
        Hessian rows (Ph: their probabilities, (nh, m))."""
        m, s = idx.shape
        nh = self.XsT.shape[1]
        rows = torch.cat([idx, torch.full((m, 1), self.p, dtype=idx.dtype)], 1)
        root = (Ph * (1 - Ph)).sqrt_().T.contiguous()  # (m, nh): each image's curvature, square-rooted
        H = torch.empty(m, s + 1, s + 1, dtype=Ph.dtype)
        chunk = max(1, self.gather_floats // ((s + 1) * nh))  # classes gathered at once
        for c0 in range(0, m, chunk):
            c1 = min(m, c0 + chunk)
            A = self.XsT.index_select(0, rows[c0:c1].reshape(-1)).view(c1 - c0, s + 1, nh)
            A = A.to(Ph.dtype) if A.dtype != Ph.dtype else A  # streamed rows stay in the shards' dtype
            A.mul_(root[c0:c1, None, :])
            torch.bmm(A, A.transpose(1, 2), out=H[c0:c1])
        H /= nh
        keep = torch.cat([mask, torch.ones(m, 1, dtype=torch.bool)], 1).to(Ph.dtype)
        H *= keep[:, :, None] * keep[:, None, :]
        return H, keep, (s + 1) ** 2 * nh / (self.p * self.n)

    def _direction(self, H, keep, G, gb, W, idx, l1, l2):
        """Minimise, per class, g.d + d^T H d / 2 + penalty(w + d) over its working set (FISTA)."""
        g0 = torch.cat([G.gather(1, idx), gb[:, None]], 1) * keep
        w0 = torch.cat([W.gather(1, idx), torch.zeros(len(W), 1, dtype=W.dtype)], 1) * keep
        penalised = torch.ones_like(w0, dtype=torch.bool)
        penalised[:, -1] = False
        v = torch.ones_like(w0)  # power iteration for each block's largest eigenvalue
        for _ in range(15):
            v = torch.bmm(H, v[:, :, None])[:, :, 0]
            v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-30)
        L = (torch.bmm(H, v[:, :, None])[:, :, 0] * v).sum(1, keepdim=True).clamp(min=1e-12) * 1.05
        d = torch.zeros_like(w0)
        dy, theta = d, 1.0
        for _ in range(INNER_ITERATIONS):
            V = w0 + dy - (g0 + torch.bmm(H, dy[:, :, None])[:, :, 0]) / L
            shrunk = soft_threshold(V, l1 / L, 1 + l2 / L, self.positive)
            dn = (torch.where(penalised, shrunk, V) - w0) * keep
            theta_n = next_theta(theta)
            change = float((dn - d).abs().max())
            dy = dn + (theta - 1) / theta_n * (dn - d)
            d, theta = dn, theta_n
            if change <= INNER_TOL * max(float(d.abs().max()), 1e-30):
                break
        D = torch.zeros_like(W)
        D.scatter_(1, idx, d[:, :-1])
        return D, d[:, -1]

    # -- one lam ---------------------------------------------------------------------------
    def run(self, lam: float, W: torch.Tensor, b: torch.Tensor, data):
        """Minimise at lam from (W, b); returns W, b, SolveInfo, the loss gradient at the
        returned point and the number of features the last working set held."""
        l1, l2 = lam * self.alpha, lam * (1 - self.alpha)

        def penalty(Wx):
            return elastic_penalty(Wx, l1, l2)

        kkt_tol = min(KKT_TOL, KKT_PER_TOL * self.tol)
        ce, G, gb, Ph, products = data.start(W, b)
        F = ce + penalty(W)
        quiet, converged, it, active, failures = 0, False, 0, 0, 0
        for it in range(1, self.max_iter + 1):  # noqa: B007 - reported in SolveInfo
            # a stop needs small steps AND the optimality conditions over all features: a poor
            # model (few Hessian rows) makes small steps far from the optimum
            if quiet >= 2 and self.violation(W, G, gb, l1, l2) <= kkt_tol:
                converged = True
                break
            idx, mask = self._working_set(W, G, l1)
            active = int(idx[mask].unique().numel())
            H, keep, cost = self._blocks(Ph, idx, mask)
            products += cost
            D, db = self._direction(H, keep, G, gb, W, idx, l1, l2)
            predicted = float((G * D).sum() + (gb * db).sum()) + penalty(W + D) - penalty(W)
            # the model's own decrease below tol: optimal on it (a Newton-decrement test); with the
            # optimality conditions met too, the step is not worth its pass
            small = -predicted <= self.tol * max(abs(F), 1e-12)
            if small and self.violation(W, G, gb, l1, l2, zeros_exact=True) <= kkt_tol:
                quiet = 2
                continue
            accepted = False
            if predicted < 0:
                for t, ce_t, cost in data.trials(W, b, D, db, LINE_SEARCH_HALVINGS):
                    products += cost
                    F_new = ce_t + penalty(W + t * D)
                    if F_new <= F + 1e-4 * t * predicted + 1e-7 * abs(F):
                        accepted = True
                        break
            if not accepted:  # no descent left on this model: optimal to float rounding, or a poor model
                failures += 1
                if failures >= 2:  # the same point, model and direction again: stop, judged by the KKT check
                    converged = self.violation(W, G, gb, l1, l2) <= kkt_tol
                    break
                quiet = 2 if small else quiet + 1
                continue
            failures = 0
            W, b = W + t * D, b + t * db
            if self.positive:
                W = W.clamp(min=0)  # W + t D is a convex combination of points >= 0: removes rounding only
            ce, G, gb, Ph, cost = data.move(W, b, t)
            products += cost
            quiet = quiet + 1 if F - F_new <= self.tol * max(abs(F_new), 1e-12) else 0
            if small and t == 1.0:
                quiet = 2
            F = F_new
        return W, b, SolveInfo(it, F, converged, products), G, active


def start_point(W0, b0, freq: torch.Tensor, m: int, p: int, dtype, positive: bool, loss: str):
    """The warm start (projected onto W >= 0), or W = 0 with the optimal intercepts at W = 0:
    the log-odds of the class frequencies `freq`."""
    W = torch.zeros(m, p, dtype=dtype) if W0 is None else W0.clone()
    if positive:
        W = W.clamp(min=0)
    if b0 is not None:
        return W, b0.clone()
    freq = freq.to(dtype).clamp(min=1e-12)
    b = torch.log(freq)
    if loss == "ovr":
        b = b - torch.log((1 - freq).clamp(min=1e-12))
    return W, b

"""The elastic-net GLM's building blocks, as plain tensor functions: losses and their
residuals, the proximal step (soft-threshold, W >= 0, support mask), the penalty and the
objective's value, lambda_max from the gradient at W = 0, the backtracking test, the KKT
(optimality) checks, and the record every solve returns (`SolveInfo`).

Nothing here reads data: the algorithms (modules `fista`, `newton`, `working_set`, `path`)
and the backends (modules `memory`, `streaming`) call these on the tensors they hold. The
maths is in module `glm`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

SUPPORT_IN_MEMORY = ("support (a class x feature mask) is solved by in-memory FISTA only: pass the features "
                     "as an array and solver='fista' or 'auto', without working_set.")


@dataclass
class SolveInfo:
    iterations: int
    objective: float
    converged: bool
    # matrix products of the size n x (columns solved on) x m: forwards X W^T and gradients R^T X
    products: float = 0.0


# -- losses ------------------------------------------------------------------------------------

def probabilities(Z: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-class probabilities at logits Z: the sigmoid (one-vs-rest) or the softmax."""
    return torch.sigmoid(Z) if loss == "ovr" else torch.softmax(Z, dim=1)


def mean_loss(Z: torch.Tensor, Y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean over images of the softmax cross-entropy, or of the summed one-vs-rest log-losses."""
    if loss == "ovr":
        return torch.nn.functional.binary_cross_entropy_with_logits(Z, Y, reduction="sum") / len(Z)
    return -(Y * torch.log_softmax(Z, dim=1)).sum() / len(Z)


def residuals(Z: torch.Tensor, Y: torch.Tensor, n: int, loss: str) -> torch.Tensor:
    """d mean loss / d logits, (P - Y) / n, for one-hot labels Y."""
    return (probabilities(Z, loss) - Y) / n


def summed_loss(Z: torch.Tensor, y: torch.Tensor, loss: str) -> float:
    """The loss summed over the rows of a chunk, from integer labels y (no one-hot)."""
    picked = Z.gather(1, y[:, None]).sum()
    if loss == "ovr":  # sum over classes of log(1 + e^z) - [c = y] z
        return float(torch.nn.functional.softplus(Z).sum() - picked)
    return float(torch.logsumexp(Z, 1).sum() - picked)


def label_residuals(Z: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """P - Y for a chunk, from integer labels y (not divided by n)."""
    R = probabilities(Z, loss)
    R[torch.arange(len(y)), y] -= 1
    return R


# -- the penalty and its proximal step ----------------------------------------------------------

def penalty(W: torch.Tensor, l1: float, l2: float) -> float:
    """l1 |W|_1 + l2 / 2 |W|_2^2 (W a tensor or a numpy array)."""
    if isinstance(W, np.ndarray):
        return float(l1 * np.abs(W).sum() + 0.5 * l2 * np.vdot(W, W))
    return float(l1 * W.abs().sum() + 0.5 * l2 * (W * W).sum())


def objective_value(ce, W: torch.Tensor, lam: float, alpha: float) -> float:
    """The elastic-net objective from the mean loss `ce` at (W, b)."""
    return float(ce + lam * alpha * W.abs().sum() + 0.5 * lam * (1 - alpha) * (W * W).sum())


def soft_threshold(V: torch.Tensor, threshold, scale, positive: bool) -> torch.Tensor:
    """The prox of the elastic net (plus the indicator of W >= 0 with `positive`), coordinate-wise:
    shrink(V, threshold) / scale, with threshold = s l1 and scale = 1 + s l2 for step s; under
    W >= 0 only the positive part of the soft-threshold is kept (not a clip of it). V: a tensor
    or a numpy array (module `small`)."""
    if isinstance(V, np.ndarray):
        if positive:
            return np.maximum(V - threshold, 0) / scale
        return np.sign(V) * np.maximum(np.abs(V) - threshold, 0) / scale
    if positive:
        return torch.clamp(V - threshold, min=0) / scale
    return torch.sign(V) * torch.clamp(V.abs() - threshold, min=0) / scale


def support_mask(support, m: int, p: int, dtype) -> torch.Tensor:
    """The (m, p) 0/1 support mask as a tensor, checked (the prox of its indicator multiplies by it)."""
    S = torch.as_tensor(np.asarray(support, dtype=np.float64), dtype=dtype)
    if tuple(S.shape) != (m, p):
        raise ConfigError(f"support must be (classes, features) = ({m}, {p}); got {tuple(S.shape)}.")
    if not bool(((S == 0) | (S == 1)).all()):
        raise ConfigError("support must hold only 0 (weight fixed at 0) and 1 (weight free).")
    return S


def lambda_max_of(H: torch.Tensor, alpha: float, positive: bool) -> float:
    """lambda_max from H = X^T (Y - 1 pi^T) / n, minus the gradient at W = 0 (module glm):
    max |H| / alpha, or max(0, max H) / alpha under W >= 0."""
    top = H.max().clamp(min=0) if positive else H.abs().max()
    return float(top / max(alpha, 1e-3))


# -- FISTA's step rules ----------------------------------------------------------------------------

def sufficient_decrease(f_n, f_y, gW, gb, dW, db, t: float) -> bool:
    """FISTA's backtracking test: the loss at the step (dW, db) from the extrapolated point is
    below its quadratic upper model for step size t (1e-7 relative slack for float32 sums)."""
    step_term = float((dW * dW).sum() + (db * db).sum()) / (2 * t)
    bound = f_y + float((gW * dW).sum() + (gb * db).sum()) + step_term
    return f_n <= bound + 1e-7 * abs(bound)


def next_theta(theta: float) -> float:
    """Nesterov's momentum sequence: theta_{k+1} = (1 + sqrt(1 + 4 theta_k^2)) / 2."""
    return (1 + math.sqrt(1 + 4 * theta * theta)) / 2


# -- optimality (KKT) checks ---------------------------------------------------------------------

def kkt_score(G: torch.Tensor, positive: bool) -> torch.Tensor:
    """Per feature, the largest amount by which a class's gradient pushes W away from 0."""
    return (-G if positive else G.abs()).max(0).values


def add_violators(keep: torch.Tensor, G: torch.Tensor, l1: float, positive: bool) -> int:
    """Add to `keep` (in place) the features outside it that violate the KKT conditions at the
    gradient G; returns how many (0: the point is optimal over all features)."""
    violators = (kkt_score(G, positive) > l1) & ~keep
    keep |= violators
    return int(violators.sum())


def kkt_violation(W, G, gb, l1, l2, positive: bool, zeros_exact: bool = False) -> float:
    """The largest violation of the optimality conditions at W (gradient G, gb), over l1:
    0 <= -G +- l1 for zero weights (one-sided under W >= 0), G + l1 sign(W) + l2 W = 0 for
    the others, gb = 0 for the intercepts. `zeros_exact`: inf if any zero weight violates
    at all (one that should leave zero, however little)."""
    nz = W != 0
    on = (G + l1 * torch.sign(W) + l2 * W).abs().masked_fill(~nz, 0)
    push = -G if positive else G.abs()
    off = (push - l1).clamp(min=0).masked_fill(nz, 0)
    if zeros_exact and bool((off > 0).any()):
        return math.inf
    return max(float(on.max()), float(off.max()), float(gb.abs().max())) / max(l1, 1e-30)

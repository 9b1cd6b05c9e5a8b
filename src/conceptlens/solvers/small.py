"""FISTA's data for small in-memory problems, in numpy on one thread (issue 23).

A concept head's GLM is small: the demo's is 3,000 images x 55 concepts x 10 classes, one
forward X W^T plus one gradient R^T X about 3.3 MFLOP. There an iteration of module `fista`
is some twenty array operations on 3,000 x 10 logits, and the time is their fixed cost, not
their arithmetic: torch's `log_softmax` over rows of 10 entries took milliseconds (6.1 ms on a
loaded machine with torch's intra-op threads, issue 23), and every operation wakes the thread
pool. `NumpyFistaArrays` is module `in_memory`'s `FistaArrays` in numpy, on one BLAS thread
(module `conceptlens.threads`), with the logits stored transposed, classes x images: the
softmax's reductions over classes are then element-wise over m contiguous rows of n, the
products are one BLAS call each (W X^T and R X, no copy of X), and the loss and the residuals
share one exp pass. The algorithm is module `fista`'s, unchanged (its prox and penalty take
numpy arrays as well): the same iterates up to float rounding, hence the same optimum to the
solver's tolerance.

`use_numpy(n, p, m)` is the choice: n x p x m at most SMALL_PRODUCT multiply-adds. Above it
the products dominate, and torch's threaded kernels are the better choice.
"""

from __future__ import annotations

import numpy as np
import torch

from ..threads import limit_threads
from .fista import fista as run_fista
from .kernels import SolveInfo

# n x p x m at or below this runs in numpy on one thread: the demo (1.7e6), the few-shot
# table and every concept head of the benchmark configs (up to about 2e7)
SMALL_PRODUCT = 5e7


# X^T is copied contiguous (for the forward W X^T) only up to this size: beside X it doubles
# the features' memory; above it the forward reads X through a transposed view
TRANSPOSED_BYTES = 1 << 26


def transposed(X: np.ndarray) -> np.ndarray:
    """X^T (p, n) for the forward: contiguous when small. One BLAS call W X^T on a contiguous
    (p, n) took 0.10 ms against 0.26-0.36 ms through the transposed view of a C-ordered X (the
    demo's 3,000 x 71, one thread, issue 23); the gradient R X keeps X as it is."""
    return np.ascontiguousarray(X.T) if X.nbytes <= TRANSPOSED_BYTES else X.T


def use_numpy(n: int, p: int, m: int) -> bool:
    """Whether a problem of n images x p features x m classes runs in numpy (module docstring)."""
    return n * p * m <= SMALL_PRODUCT


class NumpyFistaArrays:
    """module `fista`'s data on an in-memory X (n, p) numpy array: logits kept as (m, n)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, m: int, loss: str, products: float = 0.0, XT=None):
        self.X, self.loss, self.products = X, loss, products
        self.XT = transposed(X) if XT is None else XT  # (p, n), for the forward
        self.n = len(X)
        self.YT = np.zeros((m, self.n), dtype=X.dtype)
        self.YT[y, np.arange(self.n)] = 1
        self._picked = np.asarray(y) * self.n + np.arange(self.n)  # flat index of each image's label logit
        self.Z = self.Zy = self.Zn = None
        self._P = None  # the probabilities at Zy, from the loss's exp pass

    def _forward(self, W, b):
        Z = W @ self.XT
        Z += b[:, None]
        self.products += 1
        return Z

    def _loss(self, Z, keep: bool = False) -> float:
        """The mean loss at logits Z (m, n); `keep`: store the probabilities for the gradient."""
        # sums in float64: the stopping rule compares objectives to a relative 1e-6 or so
        picked = float(Z.ravel()[self._picked].sum(dtype=np.float64))
        if self.loss == "ovr":
            total = float(np.logaddexp(0, Z).sum(dtype=np.float64))
            if keep:
                self._P = 0.5 * (1 + np.tanh(0.5 * Z))  # the sigmoid, without overflow
        else:
            top = Z.max(0)
            E = np.exp(Z - top)
            s = E.sum(0)
            total = float(np.log(s).sum(dtype=np.float64) + top.sum(dtype=np.float64))
            if keep:
                E /= s
                self._P = E
        return (total - picked) / self.n

    def start(self, W, b) -> float:
        self.Z = self.Zy = self._forward(W, b)
        return self._loss(self.Z)

    def gradient(self):
        f_y = self._loss(self.Zy, keep=True)
        R = self._P
        R -= self.YT
        R /= self.n
        gW, gb = R @ self.X, R.sum(1)
        self.products += 1
        return f_y, gW, gb

    def trial(self, Wn, bn, W, b, beta) -> float:
        self.Zn = self._forward(Wn, bn)
        return self._loss(self.Zn)

    def accept(self, Wn, bn, W, b, beta):
        Wy, by = Wn + beta * (Wn - W), bn + beta * (bn - b)
        self.Zy = self.Zn + beta * (self.Zn - self.Z)
        self.Z = self.Zn
        return Wy, by


def fista_numpy(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, m: int, lam, alpha,
                tol, max_iter, t, safe, positive, loss, products: float, support=None, XT=None):
    """module `fista` on NumpyFistaArrays from the feasible torch point (W, b); `XT`: `transposed(X)`
    when the caller keeps one; returns torch W, b, info, the last step and the logits X W^T + b
    (n, m), as module `in_memory`'s `fista`."""
    Xn = X.numpy()
    dtype = Xn.dtype
    S = None if support is None else support.numpy().astype(dtype)
    data = NumpyFistaArrays(Xn, y.numpy(), m, loss, products, XT)
    with limit_threads(1):
        Wn, bn, info, t = run_fista(data, W.numpy().astype(dtype), b.numpy().astype(dtype), lam, alpha, tol,
                                    max_iter, t, safe, positive, S)
    info = SolveInfo(info.iterations, info.objective, info.converged, info.products)
    return (torch.from_numpy(np.ascontiguousarray(Wn, dtype=dtype)),
            torch.from_numpy(np.ascontiguousarray(bn, dtype=dtype)), info, t,
            torch.from_numpy(np.ascontiguousarray(data.Z.T)))

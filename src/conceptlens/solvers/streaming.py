"""The elastic-net solver on features that stay on disk, in memory bounded by a parameter.

`StreamedFeatures` (module `shards`) is an (n, p) matrix kept in row-major safetensors shards (the
feature cache's file format; `write_feature_shards` writes float32, float16 or bfloat16 ones). Every
function of module `glm` takes one in place of X: `solve_path(StreamedFeatures(paths), y,
...)` minimises the same objective at the same lams (same lambda_max, grid, bisection,
intercepts, classes without samples), with or without working sets, and with
`solver="newton"` by proximal Newton (module `streaming_newton`, which reuses this module's
passes). Arrays stay on the in-memory path: use this when the features do not fit.

Passes. A pass reads each shard once, chunk by chunk, into one reused buffer (`readinto`, not a
memory map: pages of a mapping count towards the process's RSS until the kernel reclaims
them), converts the chunk to the compute dtype (float32 by default, so float16/bfloat16
storage is accumulated in float32) and computes, per chunk, the logits X_c W^T + b, the loss
and the gradient R_c^T X_c added into one (m, p) accumulator. Logits are never stored for all
n rows (ImageNet's would be 1.28 M x 1,000 floats): FISTA's sufficient-decrease test needs the
loss at the new point, so each iteration is one pass computing the loss at the new point and
the loss and gradient at the next extrapolated point (assuming the step is accepted; a
rejected step repeats the pass with half the step): 1.5 full gradients of arithmetic per
iteration where the in-memory solver, which keeps the logits, needs 1. The iteration itself
is module `fista`'s (`FistaPasses` is its data here); the working-set loop is module
`working_set`'s.

Working sets (`working_set=True`): the inner iterations multiply only the working set's
columns of each chunk, and when those columns of all n rows fit in the memory left after the
chunk buffers, the first inner pass keeps them (in the storage dtype) so later inner passes
do not touch the disk; the KKT check over all features is one full pass per check.

Memory. `max_memory_bytes` bounds what the solver allocates besides the path it returns:
a fixed part of about 16 m p compute-dtype numbers (iterates, gradients, H) plus chunks of
`chunk_rows` rows (the raw bytes, their compute-dtype copy, a float64 copy in the first pass,
the logits of two points; `shards.row_bytes`), plus the working-set column cache in what is left.
`chunk_rows` follows from the cap, not from n. The labels (8 bytes a row) and the returned
`ElasticNetPath`, which keeps every point's (m, p) float64 weights, are outside the cap.

Step size. The first pass bounds ||[X, 1]||_2^2 by the sum over chunks of ||[X_c, 1]||_2^2
(each by power iteration, warm-started from the previous chunk's vector, x 1.01 as in the
in-memory solver): a safe step, and backtracking never goes below it. The first step tried is
2n over the Rayleigh quotient of [X, 1] at the first chunk's top vector (a lower bound of the
norm, so a step at or above the safe one; backtracking halves it if it is too long).

Cost accounting, as in module `glm`: a product is n x (columns) x m multiply-adds, a full
gradient two products over all p columns; the first pass counts half of one (X^T (Y - pi))
plus its power iterations (60 / m products), each KKT check 1 + |U| / p products (its forward
is recomputed). `StreamedFeatures.stats` counts disk passes, bytes read and the largest chunk.
Checksums of the shards are not verified here (a verifying read is a full extra pass).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .fista import fista as run_fista
from .fista import initial_point
from .kernels import label_residuals, lambda_max_of, objective_value, summed_loss
from .shards import MAX_CHUNK_ROWS, PassStats, StreamedFeatures, row_bytes, write_feature_shards
from .working_set import solve_on_working_sets

# the shards' names are re-exported (`from conceptlens.solvers.streaming import StreamedFeatures`)
__all__ = ["MAX_CHUNK_ROWS", "FistaPasses", "PassStats", "Stream", "StreamedFeatures", "StreamingSolver",
           "fit", "lambda_max", "lowest_top_logit", "objective", "row_bytes", "write_feature_shards"]


class Stream:
    """Passes over a StreamedFeatures with its labels, under the cap (module docstring)."""

    def __init__(self, X: StreamedFeatures, y: torch.Tensor, m: int, loss: str, dtype):
        self.X, self.y, self.m, self.loss, self.dtype = X, y, m, loss, dtype
        n, p = X.shape
        c = torch.empty((), dtype=dtype).element_size()
        fixed = 16 * m * p * c + 16 * m * p  # iterates, gradients and prox temporaries; H in float64
        per_row = row_bytes(p, m, X.itemsize, c)
        room = X.max_memory_bytes - fixed
        if X.chunk_rows is not None:
            rows = min(X.chunk_rows, n)
        else:
            # up to half the room for chunks (larger ones gain little in GEMM speed), the rest for
            # the working-set column cache
            rows = min(n, MAX_CHUNK_ROWS, room // 2 // per_row)
        if rows < 1 or room - rows * per_row < 0:
            need = fixed + (2 if X.chunk_rows is None else min(n, X.chunk_rows)) * per_row
            raise ConfigError(f"max_memory_bytes={X.max_memory_bytes} is too small for {p} features x {m} "
                              f"classes: the weights and gradients alone need {fixed} bytes and each chunk "
                              f"row {per_row}; give at least {need} (more means fewer, larger chunks).")
        self.rows, self.fixed, self.per_row = int(rows), fixed, per_row
        self.cache_room = room - rows * per_row
        self.cache, self.cache_cols = None, None
        X.stats.chunk_rows = self.rows
        X.stats.planned_bytes = max(X.stats.planned_bytes, fixed + self.rows * per_row)

    def chunks(self, cols):
        """Yield (first row, chunk in the compute dtype) over columns `cols` (None: all), from
        the column cache when it holds them, else from the disk (filling the cache if they fit)."""
        n, rows = self.X.n, self.rows
        if cols is not None and len(cols) == 0:  # an intercept-only model reads nothing
            for a in range(0, n, rows):
                yield a, torch.zeros(min(rows, n - a), 0, dtype=self.dtype)
            return
        key = torch.arange(self.X.p) if cols is None else cols
        if self.cache_cols is not None and torch.equal(self.cache_cols, key):
            for a in range(0, n, rows):
                yield a, self.X.convert(self.cache[a : a + rows], cols, self.dtype)
            return
        size = n * len(key) * self.X.itemsize
        fill = size <= self.cache_room
        if fill:
            self.cache, self.cache_cols = None, None  # free the old columns before taking the new
            cache = torch.empty(n, len(key), dtype=self.X.storage_dtype)
            self.X.stats.cache_bytes = max(self.X.stats.cache_bytes, size)
            planned = self.fixed + rows * self.per_row + size
            self.X.stats.planned_bytes = max(self.X.stats.planned_bytes, planned)
        for a, raw in self.X.raw_chunks(rows):
            sel = raw if cols is None else raw[:, cols]
            if fill:
                cache[a : a + len(sel)] = sel
            yield a, self.X.convert(sel, cols, self.dtype)
        if fill:
            self.cache, self.cache_cols = cache, key.clone()

    def run(self, cols, points, grad: int | None = None, grad_all: bool = False):
        """One pass over columns `cols` (None: all): the mean loss at each point (W over
        `cols`, b) and, for points[grad], the gradient (gW, gb) of the mean loss, over `cols` or
        (`grad_all`: the KKT check, reading all columns) over all p. Accumulated in the compute dtype."""
        n = self.X.n
        read = None if grad_all else cols
        width = self.X.p if read is None else len(read)
        losses = [0.0] * len(points)
        gW = torch.zeros(self.m, width, dtype=self.dtype) if grad is not None else None
        gb = torch.zeros(self.m, dtype=self.dtype) if grad is not None else None
        for a, Xc in self.chunks(read):
            yc = self.y[a : a + len(Xc)]
            XU = Xc[:, cols] if grad_all and cols is not None else Xc
            for k, (W, b) in enumerate(points):
                Z = torch.addmm(b, XU, W.T)
                losses[k] += summed_loss(Z, yc, self.loss)
                if k == grad:
                    R = label_residuals(Z, yc, self.loss)
                    gW.addmm_(R.T, Xc)
                    gb += R.sum(0)
        losses = [v / n for v in losses]
        return (losses, gW / n, gb / n) if grad is not None else (losses, None, None)

    def scan(self, bound: bool = True):
        """The first pass, over all columns in float64: non-finite values (a DataError naming
        the columns), H = X^T (Y - 1 pi^T) / n and, with `bound`, the safe step and the first
        step to try (module docstring)."""
        n, p, m = self.X.n, self.X.p, self.m
        pi = torch.bincount(self.y, minlength=m).to(torch.float64) / n
        H = torch.zeros(p, m, dtype=torch.float64)
        bad = torch.zeros(p, dtype=torch.bool)
        norm_sum, v, top, rayleigh = 0.0, None, None, 0.0
        gen = torch.Generator().manual_seed(0)
        for a, raw in self.X.raw_chunks(self.rows):
            x = self.X.convert(raw, None, torch.float64)
            finite = torch.isfinite(x)
            if not bool(finite.all()):
                bad |= ~finite.all(0)
                continue
            if bool(bad.any()):
                continue
            Yc = torch.nn.functional.one_hot(self.y[a : a + len(x)], m).to(torch.float64)
            H.addmm_(x.T, Yc - pi)
            if not bound:
                continue
            # power iteration for ||[x, 1]||_2^2, warm-started from the previous chunk's vector
            if v is None:
                v = torch.randn(p + 1, dtype=torch.float64, generator=gen)
            for _ in range(30):
                u = x @ v[:-1] + v[-1]
                v = torch.cat([x.T @ u, u.sum()[None]])
                v /= v.norm()
            u = x @ v[:-1] + v[-1]
            norm_sum += float(u @ u) * 1.01
            if top is None:  # the first chunk's top vector: its Rayleigh quotient over all chunks
                top = v.clone()
                rayleigh += float(u @ u)
            else:
                w = x @ top[:-1] + top[-1]
                rayleigh += float(w @ w)
        if bool(bad.any()):
            cols = bad.nonzero().flatten()[:10].tolist()
            raise DataError(f"the features have non-finite values (NaN or inf) in columns {cols}"
                            f"{' (first 10)' if len(cols) == 10 else ''}; the GLM needs finite features: "
                            "drop or impute those entries (or the concepts) before writing the shards.")
        H /= n
        if not bound:
            return H, None, None
        safe = 2.0 * n / max(norm_sum, 1e-300)
        first = max(2.0 * n / max(rayleigh, 1e-300), safe)
        return H, safe, first


class FistaPasses:
    """module `fista`'s data on the shards, over columns `cols` (None: all): one pass per
    candidate computes the loss at it and, with the momentum it would get, the loss and the
    gradient at the next extrapolated point (module docstring)."""

    def __init__(self, stream: Stream, cols):
        self.stream, self.cols, self.products = stream, cols, 0.0
        self.ahead = self.pending = None  # (extrapolated W, b, its loss, gW, gb): current, candidate's

    def start(self, W, b) -> float:
        (f_y,), gW, gb = self.stream.run(self.cols, [(W, b)], grad=0)
        self.products += 2.0
        self.ahead = (W, b, f_y, gW, gb)
        return f_y

    def gradient(self):
        return self.ahead[2:]

    def trial(self, Wn, bn, W, b, beta) -> float:
        if beta == 0:
            Wy_n, by_n = Wn, bn
            (f_n,), gW_n, gb_n = self.stream.run(self.cols, [(Wn, bn)], grad=0)
            f_yn = f_n
            self.products += 2
        else:
            Wy_n, by_n = Wn + beta * (Wn - W), bn + beta * (bn - b)
            (f_n, f_yn), gW_n, gb_n = self.stream.run(self.cols, [(Wn, bn), (Wy_n, by_n)], grad=1)
            self.products += 3
        self.pending = (Wy_n, by_n, f_yn, gW_n, gb_n)
        return f_n

    def accept(self, Wn, bn, W, b, beta):
        self.ahead = self.pending
        return self.ahead[:2]


def fista(stream: Stream, cols, lam, alpha, W0, b0, tol, max_iter, step, safe, positive):
    """module `fista`'s iteration over columns `cols` (None: all) of the shards, one pass per
    iteration (module docstring). Returns W, b, info (products over the columns solved on),
    the last step."""
    k = stream.X.p if cols is None else len(cols)
    W, b = initial_point(W0, b0, stream.m, k, stream.dtype, positive)
    t = max(step or safe, safe)
    return run_fista(FistaPasses(stream, cols), W, b, lam, alpha, tol, max_iter, t, safe, positive)


class StreamingSolver:
    """One lam at a time on a StreamedFeatures, all columns or module `working_set`'s loop, with
    the interface module `path` uses (solve, gradient_at_zero, start_step)."""

    def __init__(self, X: StreamedFeatures, y: torch.Tensor, m: int, alpha: float, tol: float, max_iter: int,
                 positive: bool, loss: str, dtype, working_set: bool, screen=None):
        self.X, self.m, self.p, self.dtype = X, m, X.p, dtype
        self.alpha, self.tol, self.max_iter = alpha, tol, max_iter
        self.positive, self.working_set, self.screen = positive, working_set, screen
        self.stream = Stream(X, y, m, loss, dtype)
        self.H, self.safe, self.start_step = self.stream.scan()
        self.pending = 1 + 60 / m  # the first pass: X^T (Y - pi) and the power iterations, in products

    def lambda_max(self) -> float:
        return lambda_max_of(self.H, self.alpha, self.positive)

    def gradient_at_zero(self, lmax: float) -> torch.Tensor:
        return -self.H.T.to(self.stream.dtype)  # computed by the first pass

    # module working_set's data
    def fista_on(self, cols, lam, W0, b0, step):
        return fista(self.stream, cols, lam, self.alpha, W0, b0, self.tol, self.max_iter, step, self.safe,
                     self.positive)

    def full_gradient(self, cols, W, b):
        _, G, _ = self.stream.run(cols, [(W, b)], grad=0, grad_all=True)  # reads all columns
        return G, 1 + len(cols) / self.p

    def solve(self, lam: float, state):
        products, self.pending = self.pending, 0.0
        if not self.working_set:
            _, W_prev, b, step, _ = state
            W, b, info, step = fista(self.stream, None, lam, self.alpha, W_prev, b, self.tol, self.max_iter,
                                     step, self.safe, self.positive)
            info.products += products
            return W, b, info, step, None, self.p, 0
        return solve_on_working_sets(self, lam, state, self.alpha, self.positive, self.screen, products)


# --- module glm's functions on a StreamedFeatures --------------------------------------------------

def fit(X: StreamedFeatures, y, lam, alpha, W0, b0, n_classes, tol, max_iter, step, dtype, positive, loss):
    """`fit_elastic_net` on streamed features (y checked, every class with samples): all columns."""
    yt, m = y, n_classes
    stream = Stream(X, yt, m, loss, dtype)
    _, safe, first = stream.scan()
    W, b, info, _ = fista(stream, None, lam, alpha, W0, b0, tol, max_iter, step or first, safe, positive)
    info.products += 1 + 60 / m
    return W.numpy(), b.numpy(), info


def lambda_max(X: StreamedFeatures, y, alpha, n_classes=None, positive=False) -> float:
    yt = X.labels(y, n_classes)
    m = n_classes or int(yt.max()) + 1
    H, _, _ = Stream(X, yt, m, "multinomial", torch.float64).scan(bound=False)
    return lambda_max_of(H, alpha, positive)


def objective(W, b, X: StreamedFeatures, y, lam, alpha, loss="multinomial", n_classes=None) -> float:
    """`elastic_net_objective` in float64, one pass."""
    W = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    yt = X.labels(y, n_classes or W.shape[0])
    (ce,), _, _ = Stream(X, yt, W.shape[0], loss, torch.float64).run(None, [(W, b)])
    return objective_value(ce, W, lam, alpha)


def lowest_top_logit(X: StreamedFeatures, W, b) -> float:
    """min over rows of max over classes of X W^T + b (float64, one pass)."""
    W = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    stream = Stream(X, torch.zeros(X.n, dtype=torch.long), W.shape[0], "multinomial", torch.float64)
    return min(float(torch.addmm(b, Xc, W.T).max(1).values.min()) for _, Xc in stream.chunks(None))

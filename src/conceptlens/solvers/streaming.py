"""The elastic-net solver on features that stay on disk, in memory bounded by a parameter.

`StreamedFeatures` is an (n, p) matrix kept in row-major safetensors shards (the feature
cache's file format; `write_feature_shards` writes float32, float16 or bfloat16 ones). Every
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
iteration where the in-memory solver, which keeps the logits, needs 1.

Working sets (`working_set=True`): the inner iterations multiply only the working set's
columns of each chunk, and when those columns of all n rows fit in the memory left after the
chunk buffers, the first inner pass keeps them (in the storage dtype) so later inner passes
do not touch the disk; the KKT check over all features is one full pass per check.

Memory. `max_memory_bytes` bounds what the solver allocates besides the path it returns:
a fixed part of about 16 m p compute-dtype numbers (iterates, gradients, H) plus chunks of
`chunk_rows` rows (the raw bytes, their compute-dtype copy, a float64 copy in the first pass,
the logits of two points; `_row_bytes`), plus the working-set column cache in what is left.
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

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write
from ..errors import ConfigError, DataError
from .glm import SolveInfo, sufficient_decrease
from .working_set import add_violators, initial_set

# safetensors dtype code -> (numpy dtype the bytes are read as, torch dtype they are viewed as)
_DTYPES = {
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.int16, torch.bfloat16),  # numpy has no bfloat16: read the bits, view them in torch
}
_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


@dataclass
class _Shard:
    path: Path
    offset: int  # byte offset of the tensor's data in the file
    rows: int
    cols: int
    dtype: str


def _layout(path, name: str) -> _Shard:
    """Where tensor `name` lies in the safetensors file `path` (format: an 8-byte little-endian
    header size, a JSON header of dtype / shape / data offsets, then the data)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            if header_size > min(size, 100 << 20):
                raise ValueError(f"header size {header_size} exceeds the file")
            header = json.loads(f.read(header_size))
    except (OSError, ValueError, struct.error) as e:
        raise DataError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}).") from e
    if name not in header:
        names = sorted(k for k in header if k != "__metadata__")
        raise DataError(f"{path} has no tensor {name!r} (it has {names}); pass name= one of them.")
    entry = header[name]
    dtype, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPES:
        raise DataError(f"{path}: tensor {name!r} is {dtype}; streaming reads F32, F16 or BF16 features.")
    if len(shape) != 2:
        raise DataError(f"{path}: tensor {name!r} has shape {shape}; features must be 2-D (rows, features).")
    itemsize = np.dtype(_DTYPES[dtype][0]).itemsize
    if stop - start != shape[0] * shape[1] * itemsize or 8 + header_size + stop > size:
        raise DataError(f"{path}: tensor {name!r} ({shape}, {dtype}) does not fit its data offsets "
                        f"{[start, stop]} in a file of {size} bytes (truncated or not safetensors).")
    return _Shard(path, 8 + header_size + start, shape[0], shape[1], dtype)


def write_feature_shards(directory, X, rows_per_shard: int = 65536, dtype: str = "float16",
                         name: str = "features") -> list[Path]:
    """Write X (n, p; anything that slices by rows, e.g. an np.memmap) as safetensors shards
    `shard-00000.safetensors`, ... in `directory`, stored as `dtype` (float32, float16 or
    bfloat16, rounded to nearest). Returns the paths, in row order."""
    from safetensors.torch import save_file

    if dtype not in _CODES:
        raise ConfigError(f"dtype must be one of {sorted(_CODES)}; got {dtype!r}.")
    if len(getattr(X, "shape", ())) != 2 or X.shape[0] == 0:
        raise ConfigError(f"X must be a non-empty 2-D array (n, p); got shape {getattr(X, 'shape', None)}.")
    if rows_per_shard < 1:
        raise ConfigError(f"rows_per_shard must be >= 1; got {rows_per_shard}.")
    directory = Path(directory)
    torch_dtype = _DTYPES[_CODES[dtype]][1]
    paths = []
    for k, a in enumerate(range(0, X.shape[0], rows_per_shard)):
        block = torch.as_tensor(np.asarray(X[a : a + rows_per_shard], dtype=np.float32))
        stored = block.to(torch_dtype).contiguous()
        overflow = torch.isfinite(block) & ~torch.isfinite(stored)
        if bool(overflow.any()):
            cols = overflow.any(0).nonzero().flatten()[:10].tolist()
            raise DataError(f"X has values beyond {dtype}'s range in columns {cols} (rows {a}..): store "
                            "standardised features, or use dtype='bfloat16' or 'float32'.")
        path = directory / f"shard-{k:05d}.safetensors"
        atomic_write(path, lambda p, t=stored: save_file({name: t}, str(p)))
        paths.append(path)
    return paths


@dataclass
class PassStats:
    """What the reads cost: full passes over the shards, bytes read, the largest chunk."""

    passes: int = 0
    bytes_read: int = 0
    max_chunk_rows: int = 0
    chunk_rows: int = 0  # the planned chunk size (0 before the first solve)
    cache_bytes: int = 0  # the working-set column cache's size (the largest so far)
    planned_bytes: int = 0  # fixed part + chunk buffers + cache, the bound checked against the cap
    rows_per_pass: list[int] = field(default_factory=list)


class StreamedFeatures:
    """An (n, p) feature matrix in safetensors shards (tensor `name`, rows in file order),
    optionally standardised on the fly: the solvers see (X - center) / scale.

    `max_memory_bytes`: the solver's memory cap (module docstring); `chunk_rows` overrides the
    chunk size it implies (it must still fit the cap)."""

    def __init__(self, paths, name: str = "features", center=None, scale=None,
                 max_memory_bytes: int = 1 << 30, chunk_rows: int | None = None):
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise ConfigError("StreamedFeatures needs at least one shard path.")
        self.name = name
        self.shards = [_layout(p, name) for p in paths]
        cols = {s.cols for s in self.shards}
        if len(cols) > 1:
            raise DataError(f"the shards disagree on the number of features: {sorted(cols)}; every shard "
                            "must hold the same concepts in the same order.")
        dtypes = {s.dtype for s in self.shards}
        if len(dtypes) > 1:
            raise DataError(f"the shards mix storage dtypes {sorted(dtypes)}; write them with one dtype.")
        self.p, self.storage = cols.pop(), dtypes.pop()
        self.n = sum(s.rows for s in self.shards)
        if self.n == 0:
            raise DataError("the shards hold no rows: the elastic-net GLM needs at least one sample.")
        self.itemsize = np.dtype(_DTYPES[self.storage][0]).itemsize
        self.center = None if center is None else self._vector(center, "center")
        self.scale = None if scale is None else self._vector(scale, "scale")
        if self.scale is not None and not bool((self.scale > 0).all()):
            bad = (self.scale <= 0).nonzero().flatten()[:10].tolist()
            raise ConfigError(f"scale must be > 0; it is not at columns {bad}. A constant column has std 0: "
                              "give it scale 1 (centred it is 0 and gets no weight), as `standardized` does.")
        if not (isinstance(max_memory_bytes, (int, np.integer)) and max_memory_bytes > 0):
            raise ConfigError(f"max_memory_bytes must be a positive integer; got {max_memory_bytes!r}.")
        if chunk_rows is not None and not (isinstance(chunk_rows, (int, np.integer)) and chunk_rows >= 1):
            raise ConfigError(f"chunk_rows must be a positive integer or None; got {chunk_rows!r}.")
        self.max_memory_bytes, self.chunk_rows = int(max_memory_bytes), chunk_rows
        self.stats = PassStats()

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.p

    def _vector(self, v, what) -> torch.Tensor:
        v = torch.as_tensor(np.asarray(v, dtype=np.float64))
        if v.shape != (self.p,) or not bool(torch.isfinite(v).all()):
            raise ConfigError(f"{what} must be a finite vector of the {self.p} features; got shape "
                              f"{tuple(v.shape)}.")
        return v

    def with_options(self, **kw) -> StreamedFeatures:
        """The same shards with other center / scale / max_memory_bytes / chunk_rows."""
        opts = dict(name=self.name, center=self.center, scale=self.scale,
                    max_memory_bytes=self.max_memory_bytes, chunk_rows=self.chunk_rows)
        return StreamedFeatures([s.path for s in self.shards], **{**opts, **kw})

    def moments(self, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each stored column (one pass, float64, Chan et al.'s
        merge of per-chunk moments so large means do not cancel), in chunks within the cap."""
        mean = torch.zeros(self.p, dtype=torch.float64)
        m2, count = torch.zeros(self.p, dtype=torch.float64), 0
        rows = max(1, min(self.chunk_rows or _MAX_CHUNK_ROWS,
                          self.max_memory_bytes // _row_bytes(self.p, 0, self.itemsize, 8)))
        for _, raw in self._raw_chunks(rows):
            x = raw.to(torch.float64)
            k = len(x)
            mu = x.mean(0)
            delta = mu - mean
            mean += delta * k / (count + k)
            m2 += ((x - mu) ** 2).sum(0) + delta**2 * count * k / (count + k)
            count += k
        return mean.numpy(), (m2 / max(count - ddof, 1)).sqrt().numpy()

    def standardized(self, ddof: int = 0) -> StreamedFeatures:
        """The same shards seen as (X - mean) / std (std 1 for a constant column, which is
        then 0): what fitting on standardised features in memory fits."""
        mean, std = self.moments(ddof)
        return self.with_options(center=mean, scale=np.where(std > 0, std, 1.0))

    def labels(self, y, n_classes=None) -> torch.Tensor:
        """y as a long tensor, checked against the rows and the classes (as module glm checks)."""
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        if y.ndim != 1 or len(y) != self.n:
            raise ConfigError(f"y must be (n,) = ({self.n},), one label per row of the shards; got "
                              f"{tuple(y.shape)}.")
        if int(y.min()) < 0 or (n_classes is not None and int(y.max()) >= n_classes):
            raise DataError(f"labels must lie in [0, {n_classes or 'n_classes'}); got min {int(y.min())}, "
                            f"max {int(y.max())}. Map the labels to 0..n_classes-1 or pass a larger "
                            "n_classes.")
        return y

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float64, standardised like the solver sees them (small data and tests)."""
        stop = self.n if stop is None else stop
        out = [self._convert(raw, None, torch.float64)[max(start - a, 0) : stop - a]
               for a, raw in self._raw_chunks(4096) if a < stop and a + len(raw) > start]
        return torch.cat(out).numpy()

    def _raw_chunks(self, rows: int):
        """Yield (first row, chunk in the storage dtype); the chunk is only valid until the
        next one (one buffer is reused)."""
        buf = np.empty(rows * self.p * self.itemsize, dtype=np.uint8)
        np_dtype, torch_dtype = _DTYPES[self.storage]
        row0, sizes = 0, []
        for s in self.shards:
            with open(s.path, "rb") as f:
                for a in range(0, s.rows, rows):
                    r = min(rows, s.rows - a)
                    nbytes = r * self.p * self.itemsize
                    f.seek(s.offset + a * self.p * self.itemsize)
                    if f.readinto(memoryview(buf)[:nbytes]) != nbytes:
                        raise DataError(f"{s.path} ended early (rows {a}..{a + r}): the file was truncated.")
                    raw = torch.from_numpy(buf[:nbytes].view(np_dtype).reshape(r, self.p))
                    if torch_dtype == torch.bfloat16:
                        raw = raw.view(torch.bfloat16)
                    self.stats.bytes_read += nbytes
                    self.stats.max_chunk_rows = max(self.stats.max_chunk_rows, r)
                    sizes.append(r)
                    yield row0 + a, raw
            row0 += s.rows
        self.stats.passes += 1
        self.stats.rows_per_pass.append(max(sizes))

    def _convert(self, raw: torch.Tensor, cols, dtype) -> torch.Tensor:
        """Storage -> compute dtype, then (x - center) / scale on the chunk's columns."""
        x = raw.to(dtype)
        if self.center is not None:
            x = x - (self.center if cols is None else self.center[cols]).to(dtype)
        if self.scale is not None:
            x = x / (self.scale if cols is None else self.scale[cols]).to(dtype)
        return x


_MAX_CHUNK_ROWS = 8192


def _row_bytes(p: int, m: int, itemsize: int, c: int) -> int:
    """Bytes a chunk row can hold at once: the raw row and a column selection of it (storage
    dtype), two compute-dtype copies (converted, standardised) or the first pass's float64
    ones, and eight m-vectors (logits of two points, probabilities, residuals, temporaries)."""
    return p * (2 * itemsize + 2 * max(c, 8)) + 8 * m * c


class _Stream:
    """Passes over a StreamedFeatures with its labels, under the cap (module docstring)."""

    def __init__(self, X: StreamedFeatures, y: torch.Tensor, m: int, loss: str, dtype):
        self.X, self.y, self.m, self.loss, self.dtype = X, y, m, loss, dtype
        n, p = X.shape
        c = torch.empty((), dtype=dtype).element_size()
        fixed = 16 * m * p * c + 16 * m * p  # iterates, gradients and prox temporaries; H in float64
        per_row = _row_bytes(p, m, X.itemsize, c)
        room = X.max_memory_bytes - fixed
        if X.chunk_rows is not None:
            rows = min(X.chunk_rows, n)
        else:
            # up to half the room for chunks (larger ones gain little in GEMM speed), the rest for
            # the working-set column cache
            rows = min(n, _MAX_CHUNK_ROWS, room // 2 // per_row)
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
                yield a, self.X._convert(self.cache[a : a + rows], cols, self.dtype)
            return
        size = n * len(key) * self.X.itemsize
        fill = size <= self.cache_room
        if fill:
            self.cache, self.cache_cols = None, None  # free the old columns before taking the new
            cache = torch.empty(n, len(key), dtype=_DTYPES[self.X.storage][1])
            self.X.stats.cache_bytes = max(self.X.stats.cache_bytes, size)
            planned = self.fixed + rows * self.per_row + size
            self.X.stats.planned_bytes = max(self.X.stats.planned_bytes, planned)
        for a, raw in self.X._raw_chunks(rows):
            sel = raw if cols is None else raw[:, cols]
            if fill:
                cache[a : a + len(sel)] = sel
            yield a, self.X._convert(sel, cols, self.dtype)
        if fill:
            self.cache, self.cache_cols = cache, key.clone()

    def _loss_sum(self, Z, yc) -> float:
        picked = Z.gather(1, yc[:, None]).sum()
        if self.loss == "ovr":  # sum over classes of log(1 + e^z) - [c = y] z
            return float(torch.nn.functional.softplus(Z).sum() - picked)
        return float(torch.logsumexp(Z, 1).sum() - picked)

    def _residuals(self, Z, yc):
        R = torch.sigmoid(Z) if self.loss == "ovr" else torch.softmax(Z, dim=1)
        R[torch.arange(len(yc)), yc] -= 1
        return R

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
                losses[k] += self._loss_sum(Z, yc)
                if k == grad:
                    R = self._residuals(Z, yc)
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
        for a, raw in self.X._raw_chunks(self.rows):
            x = self.X._convert(raw, None, torch.float64)
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


def _fista(stream: _Stream, cols, lam, alpha, W0, b0, tol, max_iter, step, safe, positive):
    """FISTA with backtracking and gradient-mapping restart (module glm's iteration) over
    columns `cols` (None: all), one pass per iteration (module docstring). Returns W, b, info
    (products over the columns solved on), the last step."""
    dtype, m = stream.dtype, stream.m
    k = stream.X.p if cols is None else len(cols)
    W = torch.zeros(m, k, dtype=dtype) if W0 is None else torch.as_tensor(W0, dtype=dtype).clone()
    b = torch.zeros(m, dtype=dtype) if b0 is None else torch.as_tensor(b0, dtype=dtype).clone()
    if positive:
        W = W.clamp(min=0)
    t = max(step or safe, safe)
    l1, l2 = lam * alpha, lam * (1 - alpha)

    def prox(V, s):
        if positive:
            return torch.clamp(V - s * l1, min=0) / (1 + s * l2)
        return torch.sign(V) * torch.clamp(V.abs() - s * l1, min=0) / (1 + s * l2)

    def penalty(Wx):
        return float(l1 * Wx.abs().sum() + 0.5 * l2 * (Wx * Wx).sum())

    (f_y,), gW, gb = stream.run(cols, [(W, b)], grad=0)
    products = 2.0
    obj = f_y + penalty(W)
    Wy, by, theta = W, b, 1.0
    quiet, converged, it = 0, False, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported in SolveInfo
        while True:
            Wn = prox(Wy - t * gW, t)
            bn = by - t * gb
            dW, db = Wn - Wy, bn - by
            # the momentum for the next point, decided now so one pass serves both points
            th = 1.0 if float(-(dW * (Wn - W)).sum() - (db * (bn - b)).sum()) > 0 else theta
            theta_n = (1 + math.sqrt(1 + 4 * th * th)) / 2
            beta = (th - 1) / theta_n
            if beta == 0:
                Wy_n, by_n = Wn, bn
                (f_n,), gW_n, gb_n = stream.run(cols, [(Wn, bn)], grad=0)
                f_yn, products = f_n, products + 2
            else:
                Wy_n, by_n = Wn + beta * (Wn - W), bn + beta * (bn - b)
                (f_n, f_yn), gW_n, gb_n = stream.run(cols, [(Wn, bn), (Wy_n, by_n)], grad=1)
                products += 3
            if sufficient_decrease(f_n, f_y, gW, gb, dW, db, t) or t <= safe:
                break
            t = max(t * 0.5, safe)
        new_obj = f_n + penalty(Wn)
        W, b, theta = Wn, bn, theta_n
        Wy, by, f_y, gW, gb = Wy_n, by_n, f_yn, gW_n, gb_n
        quiet = quiet + 1 if abs(obj - new_obj) <= tol * max(abs(new_obj), 1e-12) else 0
        obj = new_obj
        if quiet >= 3:
            converged = True
            break
        t *= 1.02
    return W, b, SolveInfo(it, obj, converged, products), t


class StreamingSolver:
    """One lam at a time on a StreamedFeatures, all columns or working sets, with the
    interface module glm's path uses (solve, gradient_at_zero, start_step)."""

    def __init__(self, X: StreamedFeatures, y: torch.Tensor, m: int, alpha: float, tol: float, max_iter: int,
                 positive: bool, loss: str, dtype, working_set: bool, screen=None):
        self.X, self.m, self.p = X, m, X.p
        self.alpha, self.tol, self.max_iter = alpha, tol, max_iter
        self.positive, self.working_set, self.screen = positive, working_set, screen
        self.stream = _Stream(X, y, m, loss, dtype)
        self.H, self.safe, self.start_step = self.stream.scan()
        self.pending = 1 + 60 / m  # the first pass: X^T (Y - pi) and the power iterations, in products

    def lambda_max(self) -> float:
        top = self.H.max().clamp(min=0) if self.positive else self.H.abs().max()
        return float(top / max(self.alpha, 1e-3))

    def gradient_at_zero(self, lmax: float) -> torch.Tensor:
        return -self.H.T.to(self.stream.dtype)  # computed by the first pass

    def solve(self, lam: float, state):
        lam_prev, W_prev, b, step, G_prev = state
        p, m, dtype = self.p, self.m, self.stream.dtype
        products, self.pending = self.pending, 0.0
        if not self.working_set:
            W, b, info, step = _fista(self.stream, None, lam, self.alpha, W_prev, b, self.tol, self.max_iter,
                                      step, self.safe, self.positive)
            info.products += products
            return W, b, info, step, None, p, 0
        keep = initial_set(lam, lam_prev, W_prev, G_prev, p, self.alpha, self.positive, self.screen)
        W_full = torch.zeros(m, p, dtype=dtype) if W_prev is None else W_prev.clone()
        iterations, added, l1 = 0, 0, lam * self.alpha
        while True:
            idx = keep.nonzero().flatten()
            W, b, info, step = _fista(self.stream, idx, lam, self.alpha, W_full[:, idx], b, self.tol,
                                      self.max_iter, step, self.safe, self.positive)
            products += info.products * len(idx) / p
            iterations += info.iterations
            W_full = torch.zeros(m, p, dtype=dtype)
            W_full[:, idx] = W
            _, G, _ = self.stream.run(idx, [(W, b)], grad=0, grad_all=True)  # the KKT check
            products += 1 + len(idx) / p
            new = add_violators(keep, G, l1, self.positive)
            if not new:
                break
            added += new
        info = SolveInfo(iterations, info.objective, info.converged, products)
        return W_full, b, info, step, G, int(keep.sum()), added


# --- module glm's functions on a StreamedFeatures --------------------------------------------------

def fit(X: StreamedFeatures, y, lam, alpha, W0, b0, n_classes, tol, max_iter, step, dtype, positive, loss):
    """`fit_elastic_net` on streamed features (y checked, every class with samples): all columns."""
    yt, m = y, n_classes
    stream = _Stream(X, yt, m, loss, dtype)
    _, safe, first = stream.scan()
    W, b, info, _ = _fista(stream, None, lam, alpha, W0, b0, tol, max_iter, step or first, safe, positive)
    info.products += 1 + 60 / m
    return W.numpy(), b.numpy(), info


def lambda_max(X: StreamedFeatures, y, alpha, n_classes=None, positive=False) -> float:
    yt = X.labels(y, n_classes)
    m = n_classes or int(yt.max()) + 1
    H, _, _ = _Stream(X, yt, m, "multinomial", torch.float64).scan(bound=False)
    top = H.max().clamp(min=0) if positive else H.abs().max()
    return float(top / max(alpha, 1e-3))


def objective(W, b, X: StreamedFeatures, y, lam, alpha, loss="multinomial", n_classes=None) -> float:
    """`elastic_net_objective` in float64, one pass."""
    W = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    yt = X.labels(y, n_classes or W.shape[0])
    (ce,), _, _ = _Stream(X, yt, W.shape[0], loss, torch.float64).run(None, [(W, b)])
    return float(ce + lam * alpha * W.abs().sum() + 0.5 * lam * (1 - alpha) * (W * W).sum())


def lowest_top_logit(X: StreamedFeatures, W, b) -> float:
    """min over rows of max over classes of X W^T + b (float64, one pass)."""
    W = torch.as_tensor(np.asarray(W), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    stream = _Stream(X, torch.zeros(X.n, dtype=torch.long), W.shape[0], "multinomial", torch.float64)
    return min(float(torch.addmm(b, Xc, W.T).max(1).values.min()) for _, Xc in stream.chunks(None))

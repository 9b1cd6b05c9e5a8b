"""Features on disk: an (n, p) matrix in row-major safetensors shards, read in chunks.

`write_feature_shards` writes X as shards (float32, float16 or bfloat16: the feature cache's
file format); `StreamedFeatures` opens them (checking the format, the shapes and the dtypes),
optionally standardised on the fly, and reads them chunk by chunk into one reused buffer
(`raw_chunks`: `readinto`, not a memory map, whose pages count towards the process's RSS
until the kernel reclaims them), counting what it reads (`PassStats`). `row_bytes` is the
memory a chunk row takes while a pass holds it (the plan of module `streaming`). The solvers
that run on these shards are in module `streaming` (FISTA, working sets) and module
`streaming_newton`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .._io import atomic_write
from ..errors import ConfigError, DataError
from .params import SHARD_CONSTRAINTS, STREAM_CONSTRAINTS, check

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
    check("write_feature_shards", SHARD_CONSTRAINTS, dtype=dtype, rows_per_shard=rows_per_shard)
    if len(getattr(X, "shape", ())) != 2 or X.shape[0] == 0:
        raise ConfigError(f"X must be a non-empty 2-D array (n, p); got shape {getattr(X, 'shape', None)}.")
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

    `max_memory_bytes`: the solver's memory cap (module `streaming`'s docstring); `chunk_rows` overrides the
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
        check("StreamedFeatures", STREAM_CONSTRAINTS, max_memory_bytes=max_memory_bytes,
              chunk_rows=chunk_rows)
        self.max_memory_bytes, self.chunk_rows = int(max_memory_bytes), chunk_rows
        self.stats = PassStats()

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.p

    @property
    def storage_dtype(self) -> torch.dtype:
        """The torch dtype the shards store (float32, float16 or bfloat16)."""
        return _DTYPES[self.storage][1]

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
        rows = max(1, min(self.chunk_rows or MAX_CHUNK_ROWS,
                          self.max_memory_bytes // row_bytes(self.p, 0, self.itemsize, 8)))
        for _, raw in self.raw_chunks(rows):
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
        out = [self.convert(raw, None, torch.float64)[max(start - a, 0) : stop - a]
               for a, raw in self.raw_chunks(4096) if a < stop and a + len(raw) > start]
        return torch.cat(out).numpy()

    def raw_chunks(self, rows: int):
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

    def convert(self, raw: torch.Tensor, cols, dtype) -> torch.Tensor:
        """Storage -> compute dtype, then (x - center) / scale on the chunk's columns."""
        x = raw.to(dtype)
        if self.center is not None:
            x = x - (self.center if cols is None else self.center[cols]).to(dtype)
        if self.scale is not None:
            x = x / (self.scale if cols is None else self.scale[cols]).to(dtype)
        return x


MAX_CHUNK_ROWS = 8192


def row_bytes(p: int, m: int, itemsize: int, c: int) -> int:
    """Bytes a chunk row can hold at once: the raw row and a column selection of it (storage
    dtype), two compute-dtype copies (converted, standardised) or the first pass's float64
    ones, and eight m-vectors (logits of two points, probabilities, residuals, temporaries)."""
    return p * (2 * itemsize + 2 * max(c, 8)) + 8 * m * c

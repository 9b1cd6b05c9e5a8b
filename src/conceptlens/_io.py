"""Atomic file writes and content hashing: the only place that knows how bytes hit the disk."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError, IntegrityError, MissingChecksumError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any threads
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp_path)` then rename over `path`, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def fingerprint_file(path: str | os.PathLike) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime) for this process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(path)
    return _FILE_HASHES[key]


def cache_root() -> Path:
    """Where conceptlens keeps caches: $CONCEPTLENS_CACHE, else $XDG_CACHE_HOME/conceptlens."""
    if env := os.environ.get("CONCEPTLENS_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "conceptlens"


TENSOR_DIGEST_KEY = "conceptlens.sha256"


def tensor_digest(arrays) -> str:
    """sha256 over each array's name, dtype, shape and bytes, in name order: independent of
    how a file lays the tensors out, so it can be computed before writing and after reading."""
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def save_tensors(path: str | os.PathLike, arrays, metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically with the arrays' `tensor_digest` in its metadata."""
    from safetensors.numpy import save_file

    meta = {**(metadata or {}), TENSOR_DIGEST_KEY: tensor_digest(arrays)}
    return atomic_write(path, lambda p: save_file(dict(arrays), str(p), metadata=meta))


def load_tensors(path: str | os.PathLike, require_digest: bool = True):
    """(arrays, metadata) of a safetensors file written by `save_tensors`, verified against its
    stored digest. Raises IntegrityError when unreadable, when the digest differs, or (with
    `require_digest`) when there is none; the message names the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = dict(f.metadata() or {})
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as e:  # safetensors raises several types for a damaged header
        raise IntegrityError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}).") from e
    stored = meta.get(TENSOR_DIGEST_KEY)
    if stored is None:
        if require_digest:
            raise MissingChecksumError(f"{path} has no checksum in its metadata (written by another tool "
                                 "or an older conceptlens).")
    elif stored != tensor_digest(arrays):
        raise IntegrityError(f"{path}: its tensor data does not match the sha256 stored in its "
                             "metadata (the file is corrupt or was modified).")
    return arrays, meta


def check_edit_destination(out: str | Path, source: str | Path | None) -> None:
    """ConfigError when `out` is the `source` model folder or inside it: an edit must not
    overwrite its source."""
    if source is None:
        return
    out, source = Path(out), Path(source)
    same = out.resolve() == source.resolve() or source.resolve() in out.resolve().parents or (
        out.exists() and source.exists() and out.samefile(source))
    if same:
        raise ConfigError(f"--out {out} is the folder of the model being edited, or inside it; "
                          "an edit never overwrites its source. Choose another output folder, e.g. "
                          f"{source.name}-edited.")

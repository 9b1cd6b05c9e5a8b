"""`precomputed:<file>`: features a user brings, looked up by item id (and texts by text).

File formats:
- safetensors: tensors `embedding` (n, d), optional `features` (n, f) and
  `text_embedding` (t, d); metadata `ids` and `texts` as JSON lists of strings.
- npz: arrays `ids`, `embedding`, optional `features`, `texts`, `text_embedding` (loaded
  with allow_pickle=False, so string arrays must be fixed-width unicode).
Both may hold `embedding_norm` (n,) and `text_embedding_norm` (t,): the raw (unnormalised)
embeddings' norms, which LaBo's reference similarity needs; `conceptlens encode` writes the
first. Without them the norms are unknown (None), even if `embedding` itself is unnormalised:
whether it is raw in the model's sense only the file's author knows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._io import fingerprint_file, load_tensors
from ..errors import ConfigError, DataError
from .base import BACKBONES, Backbone, l2_normalize


def _names(value, path: Path, key: str) -> list[str]:
    """safetensors metadata `key` (JSON text) as a list of strings; anything else is a DataError."""
    if value is None:
        return []
    try:
        names = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: metadata {key!r} must be a JSON list of strings (one per row); got "
                        f"{str(value)[:60]!r}. Write it with json.dumps(list_of_{key}).")
    return names


def _strings(arrays: dict, path: Path, key: str) -> list[str]:
    """npz array `key` as a list of strings: a 1-d unicode (or bytes) array."""
    if key not in arrays:
        return []
    a = arrays.pop(key)
    if a.ndim != 1 or a.dtype.kind not in "US":
        raise DataError(f"{path}: {key!r} must be a 1-d array of strings (np.array(list_of_{key})); got "
                        f"shape {a.shape}, dtype {a.dtype}.")
    return [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in a.tolist()]


def _matrix(arrays: dict, path: Path, key: str, rows: int, what: str, cols: int | None = None) -> None:
    """arrays[key] must be a finite (rows, cols) number matrix: a short one was an IndexError at
    lookup, a narrow one a matmul error, NaN scikit-learn's error deep in a fit."""
    a = arrays[key]
    if a.dtype.kind not in "fiu" or a.ndim != 2 or a.shape[0] != rows or (cols is not None and a.shape[1] != cols):
        want = f"({rows}, {cols if cols is not None else 'd'})"
        raise DataError(f"{path}: {key!r} must be a {want} matrix of numbers, one row per {what}; got shape "
                        f"{a.shape}, dtype {a.dtype}.")
    if a.shape[1] == 0:
        raise DataError(f"{path}: {key!r} has no columns.")
    bad = int((~np.isfinite(a)).sum()) if a.dtype.kind == "f" else 0
    if bad:
        raise DataError(f"{path}: {key!r} has {bad} non-finite value(s) (NaN or inf); recompute or drop "
                        "those rows.")


def _read(path: Path) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    if path.suffix == ".safetensors":
        # `conceptlens encode` stores a checksum, verified here; files from other tools have none
        arrays, meta = load_tensors(path, require_digest=False)
        ids = _names(meta.get("ids"), path, "ids")
        texts = _names(meta.get("texts"), path, "texts")
    elif path.suffix == ".npz":
        try:
            # our own handle: np.load leaks the one it opens when the zip is damaged
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError as e:
            raise DataError(f"{path}: {e}. Store ids and texts as unicode arrays, not objects.") from e
        except Exception as e:  # zipfile, zlib and numpy raise several types for a damaged file
            raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}).") from e
        ids = _strings(arrays, path, "ids")
        texts = _strings(arrays, path, "texts")
    else:
        raise ConfigError(f"precomputed features must be .safetensors or .npz; got {path.name}.")
    if "embedding" not in arrays:
        raise DataError(f"{path} has no 'embedding' array; it has {sorted(arrays)}.")
    emb = arrays["embedding"]
    if len(ids) != (len(emb) if emb.ndim else 0):
        raise DataError(f"{path}: {len(ids)} ids for {len(emb) if emb.ndim else 0} embeddings.")
    _matrix(arrays, path, "embedding", len(ids), "item id")
    if "features" in arrays:
        _matrix(arrays, path, "features", len(ids), "item id")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: item ids are not unique.")
    if texts and "text_embedding" not in arrays:
        raise DataError(f"{path}: {len(texts)} texts but no matching 'text_embedding' rows.")
    if texts:
        # the text side must live in the image side's space: same width
        _matrix(arrays, path, "text_embedding", len(texts), "text", cols=emb.shape[1])
        if len(set(texts)) != len(texts):
            raise DataError(f"{path}: texts are not unique.")
    for name, n in (("embedding_norm", len(ids)), ("text_embedding_norm", len(texts))):
        if name in arrays:
            if arrays[name].dtype.kind not in "fiu":
                raise DataError(f"{path}: {name!r} must hold numbers; got dtype {arrays[name].dtype}.")
            norm = arrays[name] = np.asarray(arrays[name], dtype=np.float32)
            if norm.shape != (n,) or not np.all(np.isfinite(norm)) or np.any(norm <= 0):
                raise DataError(f"{path}: {name!r} must hold {n} finite positive norms, one per "
                                f"row of {name.removesuffix('_norm')!r}; got shape {norm.shape}.")
    return arrays, ids, texts


class PrecomputedBackbone(Backbone):
    preprocess_id = "none"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"precomputed feature file {self.path} does not exist.")
        arrays, ids, texts = _read(self.path)
        self.embedding = l2_normalize(arrays["embedding"])
        self.features = arrays.get("features")
        self.feature_dim = None if self.features is None else int(self.features.shape[1])
        self.embed_dim = int(self.embedding.shape[1])
        self.row = {item: i for i, item in enumerate(ids)}
        self.text_row = {t: i for i, t in enumerate(texts)}
        self.text_embedding = l2_normalize(arrays["text_embedding"]) if texts else None
        self.embedding_norm = arrays.get("embedding_norm")  # raw norms, when the file has them
        self.text_embedding_norm = arrays.get("text_embedding_norm") if texts else None
        self.id = f"precomputed:{self.path.name}@{fingerprint_file(self.path)[:16]}"

    def lookup_ids(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        missing = [i for i in ids if i not in self.row]
        if missing:
            raise DataError(
                f"{len(missing)} item id(s) are not in {self.path}, e.g. {missing[:3]}; the file "
                "must hold one row per dataset item, keyed by the dataset's ids."
            )
        rows = np.fromiter((self.row[i] for i in ids), dtype=np.int64, count=len(ids))
        out = {"embedding": self.embedding[rows]}
        if self.features is not None:
            out["features"] = self.features[rows].astype(np.float32)
        if self.embedding_norm is not None:
            out["embedding_norm"] = self.embedding_norm[rows]
        return out

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        raise ConfigError("precomputed features are looked up by item id, not computed from pixels.")

    def encode_prepared(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        raise ConfigError("precomputed features are looked up by item id, not computed from pixels.")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_texts_with_norms(texts)[0]

    def encode_texts_with_norms(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        missing = [t for t in texts if t not in self.text_row]
        if missing:
            raise DataError(
                f"{len(missing)} text(s) have no precomputed embedding in {self.path}, e.g. "
                f"{missing[:3]}; add them under 'texts'/'text_embedding'."
            )
        rows = [self.text_row[t] for t in texts]
        norms = None if self.text_embedding_norm is None else self.text_embedding_norm[rows]
        return self.text_embedding[rows], norms


@BACKBONES.register("precomputed")
def _make_precomputed(spec: str, **options) -> PrecomputedBackbone:
    if not spec:
        raise ConfigError("precomputed backbone spec is 'precomputed:<file.safetensors|file.npz>'.")
    return PrecomputedBackbone(spec, **options)

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

from .._io import fingerprint_file
from ..errors import ConfigError, DataError
from .base import BACKBONES, Backbone, l2_normalize


def _read(path: Path) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    if path.suffix == ".safetensors":
        from .._io import load_tensors

        # `conceptlens encode` stores a checksum, verified here; files from other tools have none
        arrays, meta = load_tensors(path, require_digest=False)
        ids = json.loads(meta.get("ids", "[]"))
        texts = json.loads(meta.get("texts", "[]"))
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except ValueError as e:
            raise DataError(f"{path}: {e}. Store ids and texts as unicode arrays, not objects.") from e
        ids = [str(s) for s in arrays.pop("ids", [])]
        texts = [str(s) for s in arrays.pop("texts", [])]
    else:
        raise ConfigError(f"precomputed features must be .safetensors or .npz; got {path.name}.")
    if "embedding" not in arrays:
        raise DataError(f"{path} has no 'embedding' array; it has {sorted(arrays)}.")
    if len(ids) != len(arrays["embedding"]):
        raise DataError(f"{path}: {len(ids)} ids for {len(arrays['embedding'])} embeddings.")
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: item ids are not unique.")
    if texts and len(texts) != len(arrays.get("text_embedding", [])):
        raise DataError(f"{path}: {len(texts)} texts but no matching 'text_embedding' rows.")
    for name, n in (("embedding_norm", len(ids)), ("text_embedding_norm", len(texts))):
        if name in arrays:
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

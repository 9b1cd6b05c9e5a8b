"""An on-disk feature cache: safetensors shards keyed by content hashes.

A cache namespace is a hash of everything that determines an output besides the input
itself (backbone id with its weights fingerprint, preprocessing, output kind); an entry's
key is the sha256 of the input's bytes (image file bytes, pixel array bytes, or the text).
Each finished batch is one shard, written atomically with its keys in the file's own
metadata, so a run killed mid-way leaves only whole shards and the next run skips them.
The metadata also holds a sha256 of the tensor data (`_io.tensor_digest`); a shard is
verified the first time one of its keys is looked up, and a shard that is unreadable, fails
its checksum, has no checksum, or whose row count differs from its keys is a cache miss: its
entries are recomputed (a warning names it) and never returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._io import cache_root, load_tensors, save_tensors, write_json
from .errors import DataError, IntegrityError, MissingChecksumError

log = logging.getLogger("conceptlens")


class FeatureCache:
    def __init__(self, root: str | Path | None = None, **identity: str):
        """`identity` (e.g. backbone=..., preprocess=..., kind=...) selects the namespace."""
        self.identity = {k: str(v) for k, v in sorted(identity.items())}
        digest = hashlib.sha256(json.dumps(self.identity).encode()).hexdigest()[:24]
        self.dir = Path(root or cache_root() / "features") / digest
        self._index: dict[str, tuple[Path, int]] | None = None
        self._shards: dict[Path, dict[str, np.ndarray]] = {}  # verified shards' tensors
        self._bad: set[Path] = set()
        self._legacy: set[Path] = set()  # shards from before checksums (warned about once)

    def _load_index(self) -> dict[str, tuple[Path, int]]:
        """key -> (shard, row), from the shards' headers only (cheap); data is verified later."""
        if self._index is None:
            from safetensors import safe_open

            self._index = {}
            for shard in sorted(self.dir.glob("shard-*.safetensors")):
                if shard in self._bad:
                    continue
                try:
                    with safe_open(str(shard), framework="np") as f:
                        keys = json.loads((f.metadata() or {})["keys"])
                except Exception as e:  # a damaged shard is a miss, never a wrong answer
                    log.warning("Ignoring unreadable cache shard %s (%s)", shard, e)
                    self._bad.add(shard)
                    continue
                for row, key in enumerate(keys):
                    self._index.setdefault(key, (shard, row))
        return self._index

    def _verified(self, shard: Path) -> bool:
        """Load and check `shard` once; a bad one is dropped from the index (a miss)."""
        if shard in self._shards:
            return True
        try:
            arrays, meta = load_tensors(shard)
            n_keys = len(json.loads(meta["keys"]))
            if not arrays or any(a.ndim == 0 or len(a) != n_keys for a in arrays.values()):
                raise IntegrityError(f"{shard}: its arrays' rows do not match its {n_keys} keys.")
        except IntegrityError as e:
            if isinstance(e, MissingChecksumError):  # written by an older conceptlens: say it once
                if not self._legacy:
                    log.warning("Cache shards written by an older conceptlens (no checksum) are "
                                "ignored and their entries recomputed, e.g. %s", shard)
                self._legacy.add(shard)
            else:
                log.warning("Ignoring damaged cache shard (its entries will be recomputed): %s", e)
            self._bad.add(shard)
            self._index = None  # rebuild without it; another shard may hold the same keys
            return False
        self._shards[shard] = arrays
        return True

    def __len__(self) -> int:
        return len(self._load_index())

    def __contains__(self, key: str) -> bool:
        while (loc := self._load_index().get(key)) is not None:
            if self._verified(loc[0]):
                return True
        return False

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Stack the cached outputs for `keys` (all must be present: check with `in`)."""
        missing = [k for k in keys if k not in self]
        if missing:
            raise DataError(f"{len(missing)} key(s) are not in the feature cache {self.dir} "
                            f"(e.g. {missing[0]}); check `key in cache` and compute them first.")
        index = self._load_index()
        locs = [index[k] for k in keys]
        # only outputs every shard holds: shards written before an output existed (e.g.
        # 'embedding_norm') lack it, and a partly filled array would be wrong, not old
        names = set.intersection(*(set(self._shards[s]) for s in {s for s, _ in locs})) if locs else ()
        return {n: np.stack([self._shards[s][n][r] for s, r in locs]) for n in sorted(names)}

    def put(self, keys: Sequence[str], outputs: dict[str, np.ndarray]) -> Path:
        keys = list(keys)
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
        path = self.dir / f"shard-{name}.safetensors"
        if not (self.dir / "namespace.json").exists():
            write_json(self.dir / "namespace.json", self.identity)
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in outputs.items()}
        save_tensors(path, tensors, {"keys": json.dumps(keys)})
        self._bad.discard(path)  # a recomputed batch may reuse a damaged shard's name
        index = self._load_index()
        for row, key in enumerate(keys):
            index.setdefault(key, (path, row))
        self._shards[path] = tensors
        return path


def cached_texts(cache: FeatureCache, texts: Sequence[str], encode, batch_size: int = 256,
                 dim: int = 0) -> np.ndarray:
    """Embeddings of `texts` through `cache`: each distinct missing text is encoded once, by
    `encode(list_of_texts) -> (n, d)` in batches; the rest is read back."""
    return cached_texts_with_norms(cache, texts, lambda t: (encode(t), None), batch_size, dim)[0]


def cached_texts_with_norms(cache: FeatureCache, texts: Sequence[str], encode, batch_size: int = 256,
                            dim: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """`cached_texts` with `encode(list_of_texts) -> ((n, d), (n,) raw norms or None)`; returns
    (embeddings, norms), norms None when any text's entry lacks them (older cache entries)."""
    keys = [content_key(t.encode("utf-8")) for t in texts]
    todo = [(k, t) for k, t in dict(zip(keys, texts, strict=True)).items() if k not in cache]
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        emb, norms = encode([t for _, t in chunk])
        outputs = {"embedding": emb} if norms is None else {"embedding": emb, "embedding_norm": norms}
        cache.put([k for k, _ in chunk], outputs)
    if not keys:
        return np.zeros((0, dim), np.float32), None
    out = cache.get(keys)
    return out["embedding"], out.get("embedding_norm")


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

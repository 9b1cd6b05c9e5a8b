"""The encode stage: dataset -> FeatureBundle through a backbone and the feature cache.

Misses are decoded and preprocessed in worker threads (PIL and torch's resize release the
GIL) while the model runs the previous batch; every finished batch becomes a cache shard.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone
from ..cache import FeatureCache, cached_texts_with_norms, content_key
from ..data import ImageDataset, few_shot, split_indices
from ..errors import ConfigError, DataError
from .bundle import FeatureBundle

log = logging.getLogger("conceptlens")

ON_ERROR = ("fail", "skip")


def image_cache(backbone: Backbone, root: str | Path | None = None) -> FeatureCache:
    # the runtime (offline: ONNX or PyTorch, equal to float rounding only) keeps its own entries;
    # absent for one-runtime backbones, whose identity is as before
    runtime = getattr(backbone, "runtime_id", "")
    return FeatureCache(root, backbone=backbone.id, preprocess=backbone.preprocess_id, kind="image",
                        **({"runtime": runtime} if runtime else {}))


def _progress(total: int, desc: str, enabled: bool):
    from ..progress import progress

    return progress(total=total, desc=desc, unit="img", disable=not enabled or total == 0,
                    smoothing=0.1, leave=True)


def encode_dataset(
    backbone: Backbone,
    dataset: ImageDataset,
    cache: FeatureCache | str | Path | None = None,
    batch_size: int = 64,
    workers: int = 2,
    on_error: str = "fail",
    progress: bool = True,
) -> FeatureBundle:
    """Encode every image of `dataset`; cached images are read back, not recomputed.

    `cache`: a FeatureCache, a cache root folder, or None for the user cache.
    `on_error`: 'fail' raises on the first corrupt image (naming its path); 'skip' leaves
    such images out, logs them and lists them in `bundle.skipped` as (id, reason). Images
    over the dataset's pixel cap (`load_dataset(..., max_pixels=...)`, a decompression-bomb
    guard) count as corrupt; so do unreadable files.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}; got {on_error!r}.")
    if batch_size < 1 or workers < 1:
        raise ConfigError(f"batch_size and workers must be >= 1; got {batch_size}, {workers}.")
    if hasattr(backbone, "lookup_ids"):  # features the user brought: nothing to compute
        out = backbone.lookup_ids(dataset.ids)
        return FeatureBundle(list(dataset.ids), dataset.labels, dataset.classes,
                             out["embedding"], out.get("features"), backbone.id,
                             embedding_norm=out.get("embedding_norm"))
    if not isinstance(cache, FeatureCache):
        cache = image_cache(backbone, cache)

    skipped: list[tuple[str, str]] = []

    # the decoder's version is part of a file image's key: features from an older decoder
    # (before 16-bit scaling and EXIF orientation) are stale for the same bytes
    prefix = getattr(dataset.images, "key_prefix", b"")

    def read_key(i: int) -> str | None:
        try:
            return content_key(prefix + dataset.images.read(i))
        except DataError as e:
            if on_error == "fail":
                raise
            skipped.append((dataset.ids[i], str(e)))
            return None

    with ThreadPoolExecutor(workers) as pool:
        keys = list(pool.map(read_key, range(len(dataset))))
        todo: dict[str, int] = {}  # unique missing key -> first item with it
        for i, k in enumerate(keys):
            if k is not None and k not in cache and k not in todo:
                todo[k] = i
        _encode_missing(backbone, dataset, cache, todo, pool, batch_size, on_error, skipped,
                        progress)

    return bundle_from_cache(backbone, dataset, cache, keys, skipped)


def bundle_from_cache(backbone, dataset, cache, keys, skipped) -> FeatureBundle:
    """The rows whose key (`keys[i]` for item i, None = unreadable) is cached, in dataset order;
    items whose bytes equal an unreadable one's are added to `skipped` (shared by the local and
    the Ray encode, so both return the same bundle)."""
    rows = [i for i, k in enumerate(keys) if k is not None and k in cache]
    reported = {item for item, _ in skipped}
    skipped = skipped + [(dataset.ids[i], "same bytes as an unreadable image")
                         for i in sorted(set(range(len(keys))) - set(rows)) if dataset.ids[i] not in reported]
    if skipped:
        log.warning("Skipped %d unreadable image(s): %s", len(skipped),
                    "; ".join(f"{i} ({r})" for i, r in skipped[:5]))
    out = cache.get([keys[i] for i in rows])
    if not rows:
        out = {"embedding": np.zeros((0, backbone.embed_dim), np.float32)}
    return FeatureBundle(
        ids=[dataset.ids[i] for i in rows], labels=dataset.labels[rows], classes=dataset.classes,
        embedding=out["embedding"], features=out.get("features"), backbone_id=backbone.id,
        skipped=skipped, embedding_norm=out.get("embedding_norm"),  # None if any row lacks it
    )


def _encode_missing(backbone, dataset, cache, todo, pool, batch_size, on_error, skipped,
                    progress):
    def load(i: int) -> torch.Tensor | None:
        try:
            return backbone.prepare(dataset.images.decode(i, dataset.images.read(i)))
        except DataError as e:
            if on_error == "fail":
                raise
            skipped.append((dataset.ids[i], str(e)))
            return None

    items = list(todo.items())
    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    # keep two batches in flight so decoding overlaps the forward pass
    pending = [[pool.submit(load, i) for _, i in b] for b in batches[:2]]
    with _progress(len(items), "encode", progress) as bar, torch.inference_mode():
        for b, batch in enumerate(batches):
            prepared = [f.result() for f in pending.pop(0)]
            if b + 2 < len(batches):
                pending.append([pool.submit(load, i) for _, i in batches[b + 2]])
            ok = [(k, x) for (k, _), x in zip(batch, prepared, strict=True) if x is not None]
            if ok:
                outputs = backbone.encode_prepared(torch.stack([x for _, x in ok]))
                cache.put([k for k, _ in ok], outputs)
            bar.update(len(batch))


def encode_texts(
    backbone: Backbone, texts: Sequence[str], cache: FeatureCache | str | Path | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Text embeddings (len(texts), d), cached by the sha256 of each text."""
    return encode_texts_with_norms(backbone, texts, cache, batch_size)[0]


def encode_texts_with_norms(
    backbone: Backbone, texts: Sequence[str], cache: FeatureCache | str | Path | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray | None]:
    """`encode_texts` and the raw embeddings' norms (len(texts),), or None when the backbone
    cannot say or any text's cache entry predates norms (then LaBo's 'auto' uses cosine)."""
    if not isinstance(cache, FeatureCache):
        cache = FeatureCache(cache, backbone=backbone.id, kind="text")
    # one cache for both: the norms are stored beside the embeddings they belong to
    return cached_texts_with_norms(cache, texts, backbone.encode_texts_with_norms, batch_size,
                                   backbone.embed_dim)


def encode_split(backbone: Backbone, dataset: ImageDataset, split: str = "train",
                 per_class: int | str = "all", seed: int = 0, val_fraction: float = 0.1,
                 cache: FeatureCache | str | Path | None = None, **options) -> FeatureBundle:
    """Encode one split of `dataset` (optionally `per_class` images per class of it)."""
    idx = split_indices(dataset, seed=seed, val_fraction=val_fraction)[split]
    idx = few_shot(dataset, idx, "all" if per_class in ("all", 0) else int(per_class), seed)
    return encode_dataset(backbone, dataset.subset(idx), cache, **options)

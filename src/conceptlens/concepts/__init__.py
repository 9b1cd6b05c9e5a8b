"""Concepts: from class names to the concept set a bottleneck is built on.

sources (generate) -> ConceptSet (normalise, merge) -> filters -> selection.
"""

from .conceptset import Concept, ConceptSet, clean_text, concept_key
from .filters import (
                      Dropped,
                      TextSimilarity,
                      filter_activation,
                      filter_class_similarity,
                      filter_duplicates,
                      filter_length,
)
from .importers import import_concepts
from .normalize import Rejected, collect, merge_near_duplicates
from .selection import Selection, mi_score, select_concepts

__all__ = [
    "Concept", "ConceptSet", "Dropped", "Rejected", "Selection", "TextSimilarity", "clean_text",
    "collect", "concept_key", "filter_activation", "filter_class_similarity", "filter_duplicates",
    "filter_length", "import_concepts", "merge_near_duplicates", "mi_score", "select_concepts",
]

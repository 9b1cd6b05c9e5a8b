"""Grounding: does a concept's activation (or a model's use of it) mean what its text says?"""

from .evaluate import (
    Grounding,
    class_level,
    evaluate_grounding,
    grounding_measures,
    matching_embedder,
    resolve_annotations,
    text_embedder,
)
from .measures import concept_auroc, explanation_precision, match_concepts, normalise_text

__all__ = ["Grounding", "class_level", "concept_auroc", "evaluate_grounding", "explanation_precision",
           "grounding_measures", "match_concepts", "matching_embedder", "normalise_text",
           "resolve_annotations", "text_embedder"]

"""Grounding: does a concept's activation (or a model's use of it) mean what its text says?"""

from .measures import concept_auroc, explanation_precision, match_concepts, normalise_text

__all__ = ["concept_auroc", "explanation_precision", "match_concepts", "normalise_text"]

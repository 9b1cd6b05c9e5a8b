"""Fixing a model: test-time interventions, global edits, training-free test-time improvement."""

from .edits import MAX_CHANGES, apply_edits, edit_model
from .interventions import POLICIES, STRATEGIES, intervene, intervention_curve, labelled_intervention_curve
from .test_time import evaluate_test_time_improvement, improve_at_test_time

__all__ = [
           "MAX_CHANGES",
           "POLICIES",
           "STRATEGIES",
           "apply_edits",
           "edit_model",
           "evaluate_test_time_improvement",
           "improve_at_test_time",
           "intervene",
           "intervention_curve",
           "labelled_intervention_curve",
]

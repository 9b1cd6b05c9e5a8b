"""Fixing a model: test-time interventions, global edits, training-free test-time improvement."""

from .edits import edit_model
from .interventions import POLICIES, STRATEGIES, intervene, intervention_curve
from .test_time import improve_at_test_time

__all__ = ["POLICIES", "STRATEGIES", "edit_model", "improve_at_test_time", "intervene",
           "intervention_curve"]

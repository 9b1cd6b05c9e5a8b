"""Evaluation: metrics, sparsity-controlled comparisons, and the few-shot protocol."""

from .metrics import evaluate, expected_calibration_error, per_class_accuracy, prune_to_nec, top_k_accuracy

__all__ = ["evaluate", "expected_calibration_error", "per_class_accuracy", "prune_to_nec",
           "top_k_accuracy"]

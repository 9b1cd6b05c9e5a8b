"""Evaluation: metrics, sparsity-controlled comparisons, and the few-shot protocol."""

from .metrics import (
    evaluate,
    expected_calibration_error,
    per_class_accuracy,
    predict_from_scores,
    prune_to_nec,
    ranked_classes,
    top_k_accuracy,
)
from .nec import PROTOCOLS, accuracy_at_nec, global_truncation

__all__ = ["PROTOCOLS", "accuracy_at_nec", "evaluate", "expected_calibration_error", "global_truncation",
           "per_class_accuracy", "predict_from_scores", "prune_to_nec", "ranked_classes",
           "top_k_accuracy"]

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
from .nec import PROTOCOLS, accuracy_at_nec, accuracy_curve, global_truncation, nec_curve_fields

__all__ = ["PROTOCOLS", "accuracy_at_nec", "accuracy_curve", "evaluate", "expected_calibration_error",
           "global_truncation", "nec_curve_fields", "per_class_accuracy", "predict_from_scores", "prune_to_nec",
           "ranked_classes", "top_k_accuracy"]

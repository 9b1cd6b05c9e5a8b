"""Accuracy under a confounded shift: in-distribution (ID), out-of-distribution (OOD), their gap.

KnoBo's four numbers (Yang et al. 2024, modules/cbm.py `get_results`): ID top-1, OOD top-1,
gap = |ID - OOD| and average = (ID + OOD) / 2, in percent, per dataset. Accuracy follows
`evaluate` (the one prediction rule every table uses), so ID here equals the run's top-1 on
the same bundle. Over several tasks, `mean_shift` averages each number; the mean gap is the
mean of the per-task gaps (a task with ID < OOD does not cancel one with ID > OOD).

Deviations from the reference (KnoBo: modules/cbm.py `get_results`)
| what | reference | here | effect |
|---|---|---|---|
| rounding | to 2 decimals before averaging | unrounded (tables round) | < 0.01 points |
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..intervene.test_time import improve_at_test_time
from .metrics import evaluate

KEYS = ("id", "ood", "gap", "average")


def shift_row(id_acc: float, ood_acc: float) -> dict:
    """KnoBo's four numbers from ID and OOD top-1 (in %)."""
    return {"id": float(id_acc), "ood": float(ood_acc), "gap": abs(float(id_acc) - float(ood_acc)),
            "average": (float(id_acc) + float(ood_acc)) / 2}


def evaluate_shift(model, id_bundle, ood_bundle) -> dict:
    """{"id", "ood", "gap", "average"}: top-1 (%) of `model` on the ID and the OOD bundle."""
    for name, b in (("ID", id_bundle), ("OOD", ood_bundle)):
        if not len(b):
            raise DataError(f"evaluate_shift: the {name} bundle has no image; a confounded evaluation "
                            "needs images in both.")
    return shift_row(100 * evaluate(model, id_bundle)["top1"], 100 * evaluate(model, ood_bundle)["top1"])


def mean_shift(rows) -> dict:
    """The mean of each of the four numbers over tasks (`rows`: a list of shift rows)."""
    rows = list(rows)
    if not rows:
        raise DataError("mean_shift: no task to average over.")
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def supports_test_time(model) -> bool:
    """Test-time improvement edits a concept layer's weights: methods with one only."""
    from ..methods.tags import get_tags
    return get_tags(model).needs_concepts and hasattr(model, "class_weights_") \
        and hasattr(model, "concepts_")


def evaluate_test_time_shift(model, train, adapt, id_bundle, ood_bundle, **options) -> dict | None:
    """The built test-time improvement (intervene/test_time.py) applied to `model` with the
    labelled new-domain images `adapt` (`train`: the source features it was fitted on), and
    the four numbers for the improved model on `id_bundle` and `ood_bundle`, plus "changes"
    (edits made) and "adapt_images". None for a model without a concept layer. `adapt` must
    not overlap `ood_bundle`, or OOD accuracy is measured on images the edit has seen."""
    if not supports_test_time(model):
        return None
    if not len(adapt):
        raise DataError("Test-time improvement needs a few labelled images of the new domain; "
                        "`adapt` is empty (set [confounded] adapt_per_class > 0).")
    overlap = set(adapt.ids) & set(ood_bundle.ids)
    if overlap:
        raise DataError(f"{len(overlap)} adapt image(s) are also OOD test images (e.g. "
                        f"{sorted(overlap)[0]!r}); the improved model would be scored on images it "
                        "was edited with. Draw them from separate items.")
    improved = improve_at_test_time(model, train, adapt, **options)
    changes = len(improved.edit_log_) - len(getattr(model, "edit_log_", []))
    return evaluate_shift(improved, id_bundle, ood_bundle) | {"changes": changes,
                                                             "adapt_images": len(adapt)}

"""Each concept's "absent" value: what the concept layer puts out on images without the concept.

One definition for every method and for test-time interventions (intervene/interventions.py,
whose 'truth' strategy writes it for a concept that is false): the ABSENT_PERCENTILE-th
percentile of the concept's activations on the training images, in the space `transform`
returns (so in the space the explorer edits). It is not 0 in general: Label-free CBM's activations
are standardised, where 0 is the average image, and Post-hoc CBM's are raw margins. A fitted
model keeps it as `absent_values_` and saves it in model.json; a folder saved before it was
recorded loads without it (`absent_values` then returns None and callers say so).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

ABSENT_PERCENTILE = 5.0
# training images the percentile is read from at fit (evenly spaced beyond this): a percentile
# estimate, cheap next to any fit, on training sets of any size
MAX_ROWS = 20_000
RULE = (f"the {ABSENT_PERCENTILE:g}th percentile of the concept's activations on the training images "
        "(the value a test-time intervention writes for an absent concept)")


def absent_from_activations(activations: np.ndarray) -> np.ndarray:
    """(k,) the absent value of each column of (n, k) activations."""
    return np.percentile(np.asarray(activations, dtype=np.float64), ABSENT_PERCENTILE, axis=0)


def fit_absent_values(model, train) -> np.ndarray:
    """(k,) float64: the absent values of a model just fitted on `train` (at most MAX_ROWS of it)."""
    if len(train) > MAX_ROWS and hasattr(train, "rows"):
        train = train.rows(np.linspace(0, len(train) - 1, MAX_ROWS).round().astype(np.int64))
    return absent_from_activations(model.transform(train))


def absent_values(model) -> np.ndarray | None:
    """The model's recorded absent values (k,), or None for a model saved before they were."""
    values = getattr(model, "absent_values_", None)
    return None if values is None else np.asarray(values, dtype=np.float64)


def load_absent_values(raw, n_concepts: int, where) -> np.ndarray | None:
    """model.json's "absent_values" checked: None when absent (an older folder); DataError naming
    `where` when it is not one finite number per concept."""
    if raw is None:
        return None
    ok = isinstance(raw, list) and len(raw) == n_concepts and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
    values = np.asarray(raw, dtype=np.float64) if ok else None
    if values is None or not np.isfinite(values).all():
        raise DataError(f"{where}: field 'absent_values' must hold one finite number per concept "
                        f"({n_concepts}); the file is damaged or was not written by conceptlens.")
    return values

"""Global model edits (Post-hoc CBM): remove or reweight a concept for one class or all.

An edit returns a new model whose `edit_log_` records every change; the original is
untouched, and saving the edited model keeps the log.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import numpy as np

from ..errors import ConfigError


def edit_model(model, remove: list[str] = (), reweight: dict[str, float] | None = None,
               classes: list[str] | None = None, note: str = ""):
    model.check_fitted()
    edited = copy.deepcopy(model)
    W = np.array(edited.class_weights_, dtype=np.float32, copy=True)
    rows = list(range(len(model.classes_)))
    if classes:
        unknown = [c for c in classes if c not in model.classes_]
        if unknown:
            raise ConfigError(f"Unknown class(es) {unknown}; classes: {list(model.classes_)[:10]}.")
        rows = [model.classes_.index(c) for c in classes]
    changes = [(c, 0.0) for c in remove] + list((reweight or {}).items())
    log = list(getattr(model, "edit_log_", []))
    for concept, factor in changes:
        if concept not in model.concepts_:
            raise ConfigError(f"Unknown concept {concept!r}; it is not among the model's "
                              f"{len(model.concepts_)} concepts.")
        k = model.concepts_.index(concept)
        before = W[rows, k].copy()
        W[rows, k] *= factor
        log.append({"concept": concept, "factor": float(factor),
                    "classes": [model.classes_[r] for r in rows],
                    "before": before.tolist(), "after": W[rows, k].tolist(), "note": note,
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    edited.class_weights_ = W
    edited.edit_log_ = log
    return edited

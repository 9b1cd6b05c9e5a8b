"""Global model edits (Post-hoc CBM): remove or reweight a concept for one class or all.

An edit returns a new model whose `edit_log_` records every change; the original is
untouched, and saving the edited model keeps the log. An edited model remembers the folder
its source was loaded from (`derived_from_`), and `Method.save` refuses to write it there:
an edit never overwrites its source (use `save_edited` to check before any work).
"""

from __future__ import annotations

import copy
import math
import numbers
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import ConfigError


def _factor(concept: str, factor) -> float:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not math.isfinite(factor):
        raise ConfigError(f"The reweight factor for concept {concept!r} must be a finite number; "
                          f"got {factor!r}. Use 0 to remove the concept, 2 to double its weight.")
    return float(factor)


def edit_model(model, remove: list[str] = (), reweight: dict[str, float] | None = None,
               classes: list[str] | None = None, note: str = ""):
    model.check_fitted()
    # check every change before copying anything: a bad one leaves no partial edit
    changes = [(c, 0.0) for c in remove] + [(c, _factor(c, f)) for c, f in (reweight or {}).items()]
    unknown = [c for c, _ in changes if c not in model.concepts_]
    if unknown:
        raise ConfigError(f"Unknown concept(s) {unknown[:5]}; they are not among the model's "
                          f"{len(model.concepts_)} concepts (see `conceptlens explain` or concepts_).")
    rows = list(range(len(model.classes_)))
    if classes:
        missing = [c for c in classes if c not in model.classes_]
        if missing:
            raise ConfigError(f"Unknown class(es) {missing}; classes: {list(model.classes_)[:10]}.")
        rows = [model.classes_.index(c) for c in classes]
    edited = copy.deepcopy(model)
    W = np.array(edited.class_weights_, dtype=np.float32, copy=True)
    log = list(getattr(model, "edit_log_", []))
    for concept, factor in changes:
        k = model.concepts_.index(concept)
        before = W[rows, k].copy()
        after = before.astype(np.float64) * factor
        if np.abs(after).max(initial=0.0) > np.finfo(np.float32).max:
            raise ConfigError(f"Reweighting {concept!r} by {factor:g} overflows the weights (float32); "
                              "use a smaller factor.")
        W[rows, k] = after
        log.append({"concept": concept, "factor": factor,
                    "classes": [model.classes_[r] for r in rows],
                    "before": before.tolist(), "after": W[rows, k].tolist(), "note": note,
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    edited.class_weights_ = W
    edited.edit_log_ = log
    # the folder this model came from (or the one its own source came from): never saved over
    edited.derived_from_ = getattr(model, "loaded_from_", None) or getattr(model, "derived_from_", None)
    return edited


def check_edit_destination(out: str | Path, source: str | Path | None) -> None:
    """ConfigError when `out` is the `source` model folder or inside it: an edit must not
    overwrite its source."""
    if source is None:
        return
    out, source = Path(out), Path(source)
    same = out.resolve() == source.resolve() or source.resolve() in out.resolve().parents or (
        out.exists() and source.exists() and out.samefile(source))
    if same:
        raise ConfigError(f"--out {out} is the folder of the model being edited, or inside it; "
                          "an edit never overwrites its source. Choose another output folder, e.g. "
                          f"{source.name}-edited.")


def save_edited(edited, out: str | Path, source: str | Path | None = None) -> Path:
    """Save an edited model to `out`, refusing its source folder (`source`, or the one recorded
    by `edit_model`)."""
    check_edit_destination(out, source or getattr(edited, "derived_from_", None))
    return edited.save(out)

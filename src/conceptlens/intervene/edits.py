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

from .._io import check_edit_destination
from ..errors import ConfigError

# changes in one edit: far more than a model has weights worth changing one at a time (the
# service's 10 MiB body cap alone would allow about 300,000)
MAX_CHANGES = 10_000


def _factor(concept: str, factor) -> float:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not math.isfinite(factor):
        raise ConfigError(f"The reweight factor for concept {concept!r} must be a finite number; "
                          f"got {factor!r}. Use 0 to remove the concept, 2 to double its weight.")
    return float(factor)


def edit_model(model, remove: list[str] = (), reweight: dict[str, float] | None = None,
               classes: list[str] | None = None, note: str = ""):
    """`model` with the concepts in `remove` set to 0 and those in `reweight` multiplied by
    their factor, for `classes` (None: all), as one `apply_edits` call."""
    changes = [{"concept": c, "factor": 0.0} for c in remove] + [
        {"concept": c, "factor": f} for c, f in (reweight or {}).items()]
    return apply_edits(model, [ch | {"classes": classes, "note": note} for ch in changes])


def apply_edits(model, changes: list[dict]):
    """A new model after `changes` [{concept, factor, classes (None: all), note}], in order.

    At most MAX_CHANGES changes: each is checked before anything is copied (a bad one leaves no
    partial edit), then the model is copied once and every change applied to that copy, in time
    linear in the number of changes (one deep copy per change made a long list quadratic).
    """
    model.check_fitted()
    if len(changes) > MAX_CHANGES:
        raise ConfigError(f"{len(changes):,} changes in one edit; at most {MAX_CHANGES:,} are accepted "
                          "(a model has far fewer weights worth changing one at a time). Merge repeated "
                          "changes of a concept into one factor, or apply them in several edits.")
    concept_index = {c: k for k, c in enumerate(model.concepts_)}
    class_index = {c: r for r, c in enumerate(model.classes_)}
    checked = []
    for ch in changes:
        concept = ch["concept"]
        if concept not in concept_index:
            unknown = [c["concept"] for c in changes if c["concept"] not in concept_index]
            raise ConfigError(f"Unknown concept(s) {unknown[:5]}; they are not among the model's "
                              f"{len(model.concepts_)} concepts (see `conceptlens explain` or concepts_).")
        missing = [c for c in ch.get("classes") or [] if c not in class_index]
        if missing:
            raise ConfigError(f"Unknown class(es) {missing}; classes: {list(model.classes_)[:10]}.")
        rows = [class_index[c] for c in ch["classes"]] if ch.get("classes") else list(class_index.values())
        checked.append((concept, concept_index[concept], _factor(concept, ch["factor"]), rows,
                        ch.get("note") or ""))
    edited = copy.deepcopy(model)
    W = np.array(edited.class_weights_, dtype=np.float32, copy=True)
    log = list(getattr(model, "edit_log_", []))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for concept, k, factor, rows, note in checked:
        before = W[rows, k].copy()
        after = before.astype(np.float64) * factor
        if np.abs(after).max(initial=0.0) > np.finfo(np.float32).max:
            raise ConfigError(f"Reweighting {concept!r} by {factor:g} overflows the weights (float32); "
                              "use a smaller factor.")
        W[rows, k] = after
        log.append({"concept": concept, "factor": factor, "classes": [model.classes_[r] for r in rows],
                    "before": before.tolist(), "after": W[rows, k].tolist(), "note": note, "time": now})
    edited.class_weights_ = W
    edited.edit_log_ = log
    # the folder this model came from (or the one its own source came from): never saved over
    edited.derived_from_ = getattr(model, "loaded_from_", None) or getattr(model, "derived_from_", None)
    return edited


def save_edited(edited, out: str | Path, source: str | Path | None = None) -> Path:
    """Save an edited model to `out`, refusing its source folder (`source`, or the one recorded
    by `edit_model`)."""
    check_edit_destination(out, source or getattr(edited, "derived_from_", None))
    return edited.save(out)

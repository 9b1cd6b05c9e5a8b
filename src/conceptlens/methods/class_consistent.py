"""Class-consistent concept heads: a class may weigh only concepts linked to it, with W >= 0.

An unconstrained sparse head explains "Ankle boot" by whatever concept column happens to
separate it ("lap", +2.57): the column's name is then no reason. Under `class_consistent=True`
(an option of the concept heads: label_free, posthoc, labo, knobo) class c may put weight only on
a concept j when

1. a source links j to c (`links`): "generated" (the concept was generated for c: WordNet,
   LLM, file and attribute sources all record it; Context.class_prior) or "truth" (the class x
   concept truth an LLM's yes/no answers through the `knobo` prompt family, or annotations, put in
   Context.class_truth: 1 links, 0 / unknown do not); and
2. j's activation is evidence of its classes (concepts/evidence.py: AUROC of "the image's class
   is linked to j" at least `evidence_floor`) on the training images the head is fitted on, so
   the run's truth check (grounding/truth.py), on validation images, is a second, independent
   measurement and not a repeat of this one.

and every weight is >= 0, so a class's explanation names concepts that are present. The
constraint is exact (the solver's support mask, solvers/glm.py). Concepts that fail the floor
carry no weight for any class; `concept_evidence_` records every concept's figure so reports list
them. A class left with no allowed concept is predicted from its intercept alone, and a warning
says so (the concept set does not describe it on this backbone).
"""

from __future__ import annotations

import logging

import numpy as np

from ..concepts.evidence import EVIDENCE_FLOOR, concept_evidence
from ..errors import DataError
from ..validation import Boolean, Interval, Options

log = logging.getLogger("conceptlens")
LINKS = ("generated", "truth")


# the three parameters of a class-consistent head (plain values: they are saved in model.json), for
# the heads' _parameter_constraints
CONSTRAINTS = {
    "class_consistent": [Boolean("true or false (true lets a class weigh only concepts its source links to "
                                 "it, with weights >= 0)")],
    "links": [Options(LINKS, description=f"one of {list(LINKS)} ('generated': the classes each concept was "
                                         "generated for; 'truth': annotations or an LLM's yes/no answers)")],
    "evidence_floor": [Interval(float, 0, 1, description=f"a number in [0, 1] (an AUROC; 0.5 is chance, "
                                                         f"default {EVIDENCE_FLOOR})")],
}


def class_links(name: str, context, links: str, m: int, k: int) -> np.ndarray:
    """(m, k) bool: which concepts the chosen source links to each class."""
    if links == "generated":
        L = context.class_prior
        if L is None:
            raise DataError(f"{name}: class_consistent with links = 'generated' needs the classes each "
                            "concept was generated for (Context.class_prior), and this concept set has "
                            "none; use links = 'truth' with annotations or an LLM's answers, or turn "
                            "class_consistent off.")
        L = np.asarray(L, dtype=np.float64) > 0
    else:
        T = context.class_truth
        if T is None:
            raise DataError(f"{name}: class_consistent with links = 'truth' needs a class x concept truth "
                            "(annotations via [grounding], or an LLM's yes/no answers); this run has none. "
                            "Use links = 'generated' or turn class_consistent off.")
        L = np.nan_to_num(np.asarray(T, dtype=np.float64), nan=0.0) == 1
    if L.shape != (m, k):
        raise DataError(f"{name}: the class links are {L.shape}; expected (classes, concepts) = ({m}, {k}).")
    return L


def consistent_support(name: str, links: np.ndarray, held_activations, held_labels, floor: float,
                       concepts, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """The (m, k) 0/1 support of a class-consistent head and each concept's evidence (k,): a class
    may weigh a concept linked to it whose evidence on the held-out images is at least `floor`."""
    evidence = concept_evidence(held_activations, held_labels, links)
    # a concept linked to every class (or none) has no AUROC: it cannot be evidence of its classes
    passed = np.nan_to_num(evidence, nan=0.0) >= floor
    support = links & passed[None, :]
    failed = [f"{concepts[j]!r} ({'no evidence' if np.isnan(evidence[j]) else f'{evidence[j]:.2f}'})"
              for j in np.flatnonzero(links.any(0) & ~passed)]
    if failed:
        log.info("%s: %d concept(s) below the evidence floor %.2f carry no weight: %s", name, len(failed),
                 floor, ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""))
    empty = np.flatnonzero(~support.any(1))
    if len(empty):
        shown = [str(classes[i]) for i in empty[:10]] if classes is not None else empty[:10].tolist()
        log.warning("%s: %d class(es) have no linked concept with evidence >= %.2f and are predicted from "
                    "their intercept alone (the concepts do not describe them on this backbone): %s", name,
                    len(empty), floor, shown)
    return support.astype(np.float64), evidence


def fit_support(method, context, held_activations, held_labels, columns=None) -> np.ndarray | None:
    """For a head with `class_consistent` on: its (m, k) support over the concepts `columns` of the
    context (all by default), and `method.concept_evidence_` set; None when the option is off."""
    if not method.class_consistent:
        method.concept_evidence_ = None
        return None
    m, k = len(context.classes), len(context.concepts)
    L = class_links(method.name, context, method.links, m, k)
    names = list(context.concepts)
    if columns is not None:
        columns = np.asarray(columns, dtype=np.int64)
        L, names = L[:, columns], [names[j] for j in columns]
    support, evidence = consistent_support(method.name, L, held_activations, held_labels,
                                           method.evidence_floor, names, context.classes)
    method.concept_evidence_ = evidence
    return support


def evidence_state(method) -> dict:
    """model.json's record of the evidence (NaN as null), for `_extra_state`."""
    ev = getattr(method, "concept_evidence_", None)
    return {"concept_evidence": None if ev is None else [None if np.isnan(v) else float(v) for v in ev]}


def load_evidence(method, extra: dict) -> None:
    ev = extra.get("concept_evidence")
    if ev is not None and (not isinstance(ev, list) or len(ev) != len(method.concepts_)):
        raise ValueError(f"concept_evidence must be a list of one figure per concept ({len(method.concepts_)})")
    method.concept_evidence_ = None if ev is None else np.array(
        [np.nan if v is None else float(v) for v in ev], dtype=np.float64)

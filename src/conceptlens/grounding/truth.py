"""Whether a model's explanations may be shown as reasons: the truth floor.

A model's explanation is each class's top-k positive-weight concepts. It passes the truth floor
(TRUTH_FLOOR of those (class, concept) pairs) on

1. annotations, where they cover the explanation: precision@k against the annotated attributes
   with coverage >= MIN_COVERAGE (grounding/measures.py), on validation images; else
2. concept evidence, without annotations: the share of the top-k pairs whose concept the source
   links to that class (the concept was generated for it) and whose activation separates its
   linked classes from the others on validation images (AUROC >= the evidence floor;
   concepts/evidence.py). A concept linked to no class (a word vocabulary, a discovered
   latent's name) is never evidence: such a model cannot pass.

`[report] method = "auto"` shows the most accurate concept bottleneck on validation among those
that pass, and records the others with the figure that failed (runs/experiment.py).
"""

from __future__ import annotations

import numpy as np

from ..concepts.evidence import EVIDENCE_FLOOR, concept_evidence
from .judgements import top_pairs
from .measures import MIN_COVERAGE

TRUTH_FLOOR = 0.8


def concept_links(concepts, context) -> np.ndarray:
    """(m, k) bool links of `concepts` (a model's own list) from the run's context, by text: a
    concept the context does not hold, or a context without generated-for links, links nowhere."""
    m = len(context.classes)
    out = np.zeros((m, len(concepts)), dtype=bool)
    if context.class_prior is None or not len(context.concepts):
        return out
    prior = np.asarray(context.class_prior, dtype=np.float64) > 0
    index = {c: j for j, c in enumerate(context.concepts)}
    for j, c in enumerate(concepts):
        if c in index:
            out[:, j] = prior[:, index[c]]
    return out


def explanation_evidence(model, bundle, context, k: int = 5, floor: float = EVIDENCE_FLOOR) -> dict:
    """The share of `model`'s top-k pairs that are linked and evidenced on `bundle` (module
    docstring, 2): {"evidence_at_k", "linked_at_k", "n_pairs", "unsupported": [{"class",
    "concept", "why"}]}. Evidence is measured on the model's own activations (`transform`)."""
    concepts = list(model.concepts_)
    links = concept_links(concepts, context)
    A = np.asarray(model.transform(bundle), dtype=np.float64)
    evidence = concept_evidence(A, np.asarray(bundle.labels), links)
    index = {c: j for j, c in enumerate(concepts)}
    classes = {c: i for i, c in enumerate(model.classes_)}
    pairs = top_pairs(model, k)
    linked = supported = 0
    unsupported = []
    for cls, _, concept, _ in pairs:
        i, j = classes[cls], index[concept]
        if not links[i, j]:
            unsupported.append({"class": cls, "concept": concept,
                                "why": "not linked to the class by its source"})
            continue
        linked += 1
        ev = evidence[j]
        if np.isnan(ev) or ev < floor:
            unsupported.append({"class": cls, "concept": concept,
                                "why": f"evidence {ev:.2f} < {floor}" if not np.isnan(ev) else "no evidence"})
            continue
        supported += 1
    n = len(pairs)
    return {"evidence_at_k": supported / n if n else None, "linked_at_k": linked / n if n else None,
            "n_pairs": n, "floor": floor, "unsupported": unsupported}


def truth_check(grounding_row: dict | None, evidence: dict | None) -> dict:
    """{"passed", "by" ("annotations" | "evidence" | None), "value", "why"} from a model's
    validation grounding numbers (row_fields) and its explanation_evidence."""
    row = grounding_row or {}
    coverage = row.get("precision_at_k_coverage")
    precision = row.get("precision_at_k")
    if precision is not None and coverage is not None and coverage >= MIN_COVERAGE:
        passed = precision >= TRUTH_FLOOR
        return {"passed": passed, "by": "annotations", "value": precision,
                "why": f"precision@k {precision:.2f} on annotations (coverage {coverage:.2f})"
                       + ("" if passed else f" < {TRUTH_FLOOR}")}
    value = None if evidence is None else evidence.get("evidence_at_k")
    if value is None:
        return {"passed": False, "by": None, "value": None,
                "why": "no explanation to check (no positive-weight concept)"}
    passed = value >= TRUTH_FLOOR
    cover = "" if coverage is None else f" (annotations cover {coverage:.2f} of the pairs, too few to judge by)"
    return {"passed": passed, "by": "evidence", "value": value,
            "why": f"{value:.2f} of the top-k pairs linked and evidenced" + ("" if passed else f" < {TRUTH_FLOOR}")
                   + cover}

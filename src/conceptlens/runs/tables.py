"""Result tables as Markdown (what the CLI prints and the output folder keeps).

Where a run measured grounding (concept annotations known), the tables carry concept AUROC and
explanation precision@k beside accuracy; a method without concepts shows "—" there.
"""

from __future__ import annotations

import numpy as np

from .results import MethodResult, as_method_results

DASH = "—"


def _grounded(results: dict) -> bool:
    return any(r.grounded for r in as_method_results(results).values())


def auroc_cell(r: MethodResult | dict) -> str:
    """'0.712 (8)': mean concept AUROC over the n concepts it is defined for."""
    r = MethodResult.from_dict(r)
    v = r.concept_auroc
    return DASH if v is None else f"{v:.3f} ({r.get('concept_auroc_n', 0)})"


def precision_cell(v, coverage=None, on_covered=None) -> str:
    """'0.80 (cov 0.62)'; 'n/m (0.40 on cov 0.16)' where too few top-k pairs could be scored to
    call it the model's precision (grounding/measures.py MIN_COVERAGE); the bare value where no
    coverage is known (older results)."""
    if coverage is None:
        return DASH if v is None else f"{v:.2f}"
    if v is None and on_covered is None:  # none of the top-k pairs could be scored
        return f"n/m (cov {coverage:.2f})"
    if v is None:
        return f"n/m ({on_covered:.2f} on cov {coverage:.2f})"
    return f"{v:.2f} (cov {coverage:.2f})"


def evidence_cell(r: MethodResult | dict) -> str:
    """The share of top-k pairs linked and evidenced on held-out images, with a mark when the
    model's explanations failed the truth floor (grounding/truth.py)."""
    r = MethodResult.from_dict(r)
    v = r.evidence_at_k
    if v is None:
        return DASH
    passed = r.passed_truth
    return f"{v:.2f}" + ("" if passed is None or passed else " ✗")


def has_top5(results: dict) -> bool:
    """Whether the run reported top-5 (evaluation.metrics.reported_top_k: more than 5 classes);
    rows are results.json dicts or MethodResults."""
    return any(r.get("top5") is not None for r in results.values() if r.get("failed") is None)


def top5_cell(r) -> str:
    return DASH if r.get("top5") is None else f"{100 * r.get('top5'):.1f}"


def results_table(results: dict, nec: int, protocol: str = "vlg", k: int = 5) -> str:
    """`protocol` names how accuracy at `nec` was measured (see evaluate_at_nec), so a table
    never hides which comparison it makes. Rows with grounding numbers add concept AUROC
    (mean, concepts scored) and precision@`k` of the positive-weight concepts with its coverage;
    rows with a truth check add evidence@`k`."""
    rows = as_method_results(results)
    grounded = _grounded(rows)
    checked = any("evidence_at_k" in r.measures for r in rows.values())
    top5 = has_top5(rows)
    head = ["method", "top-1", *(["top-5"] if top5 else []), "per-class", "ECE", "NEC"]
    if nec:
        head.append(f"top-1 @ NEC={nec} ({protocol})")
    if grounded:
        head += ["concept AUROC (n)", f"precision@{k} (coverage)"]
    if checked:
        head.append(f"evidence@{k}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    failed = {name: r.failed for name, r in rows.items() if not r.fitted}
    for name, r in rows.items():
        if name in failed:  # fit_and_evaluate: the method could not be fitted on these data
            lines.append("| " + " | ".join([f"{name} (failed)", *[DASH] * (len(head) - 1)]) + " |")
            continue
        cells = [name, f"{100 * r.top1:.1f}", *([top5_cell(r)] if top5 else []),
                 f"{100 * r.mean_per_class:.1f}", f"{r.ece:.3f}", f"{r.nec:.1f}"]
        if nec:
            cells.append(f"{100 * r.top1_at_nec:.1f}" if "top1_at_nec" in r.measures else "-")
        if grounded:
            cells += [auroc_cell(r), precision_cell(r.get("precision_at_k"), r.get("precision_at_k_coverage"),
                                                    r.get("precision_at_k_on_covered"))]
        if checked:
            cells.append(evidence_cell(r))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + failure_notes(failed) + (truth_notes(rows, k, grounded) if checked else "")


def truth_notes(results: dict, k: int, grounded: bool = True) -> str:
    """What the coverage and evidence columns mean, and which models failed the truth floor."""
    failing = [f"{n} ({(r.truth or {}).get('why')})" for n, r in as_method_results(results).items()
               if r.passed_truth is False]
    text = ((f"\n\nprecision@{k}: share of each class's top-{k} concepts annotated true of it, over the pairs "
             "that match an annotated attribute (coverage: their share; n/m below 0.5).") if grounded else "\n")
    text += (f" evidence@{k}: share of the top-{k} pairs whose concept the source links to the class and whose "
             "activation separates its classes on held-out images (AUROC >= the evidence floor).")
    return text + ("".join(f"\nfails the truth floor: {f}" for f in failing))


def failure_notes(failed: dict) -> str:
    """Lines under a table saying why each failed method has no numbers ('' when none failed)."""
    return "".join(f"\n\n{name} failed: {why}" for name, why in failed.items())


def _mean_sd(values, scale: float = 1.0, digits: int = 1) -> str:
    """Mean ± sd over seeds of the defined values ('—' when none is)."""
    v = np.asarray([x for x in values if x is not None], dtype=float) * scale
    if not v.size:
        return DASH
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"


def few_shot_table(rows: dict, grounding: dict | None = None, k: int = 5,
                   failures: dict | None = None) -> str:
    """Top-1 (%) per method and shots, mean ± sd over seeds. With `grounding` ({method: {shots:
    {"concept_auroc": [...], "precision_at_k": [...]}}}, see run_few_shot) each method also gets
    rows for mean concept AUROC and precision@k, averaged over the same seeds. A method that
    failed at some k and seed (None there; `failures` {method: [why, ...]}) is averaged over the
    seeds where it ran, and the notes under the table say where and why it failed."""
    shots = list(next(iter(rows.values())).keys())
    names = [f"{s}-shot" if s != "all" else "all" for s in shots]
    if grounding is None:
        lines = ["| method | " + " | ".join(names) + " |", "|" + "---|" * (len(shots) + 1)]
        for name, by_shot in rows.items():
            cells = [_mean_sd(by_shot[s], 100) for s in shots]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + _few_shot_failures(failures)
    lines = ["| method | measure | " + " | ".join(names) + " |", "|" + "---|" * (len(shots) + 2)]
    for name, by_shot in rows.items():
        lines.append(f"| {name} | top-1 % | " + " | ".join(_mean_sd(by_shot[s], 100) for s in shots) + " |")
        measured = grounding.get(name, {})
        for key, label in (("concept_auroc", "concept AUROC"), ("precision_at_k", f"precision@{k}"),
                           ("precision_at_k_coverage", f"precision@{k} coverage")):
            if key == "precision_at_k_coverage" and not any(measured.get(s, {}).get(key) for s in shots):
                continue  # results from before coverage was recorded
            cells = [_mean_sd(measured.get(s, {}).get(key, [None]), 1, 3 if key == "concept_auroc" else 2)
                     for s in shots]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + _few_shot_failures(failures)


def _few_shot_failures(failures: dict | None) -> str:
    return failure_notes({name: f"{len(why)} fit(s) left out ({'; '.join(why)})"
                          for name, why in (failures or {}).items()})


def concept_label_table(concept_labels: dict, marks=(1, 2, 5, 10)) -> str:
    """Methods trained on concept labels (cbm, ecbm; runs/experiment.score_concept_labels): concept
    accuracy (mean over concepts, whole vector over the images with every label known) and top-1
    (%) after correcting 0, `marks`... and all concepts per image with their true labels."""
    methods = concept_labels["methods"]
    if not methods:
        return ""
    steps = max(d["intervention"]["steps"] for d in methods.values())
    cols = [0, *[s for s in marks if s < steps], steps]
    head = ["method", "concept acc", "whole-vector (images)",
            *[f"top-1 @ {s} corrected" if s != steps else f"top-1 @ all ({s})" for s in cols], "gain"]
    lines = [f"Concept labels ({concept_labels['level']} level): concept accuracy on the test images, and "
             f"top-1 % after correcting that many concepts per image with their true labels "
             f"('{concept_labels['policy']}' order, known labels only).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, d in methods.items():
        acc = d["intervention"]["accuracy"]
        whole = (DASH if d["whole_vector"] is None
                 else f"{100 * d['whole_vector']:.1f} ({d['whole_vector_images']})")
        at = [f"{100 * acc[min(s, len(acc) - 1)]:.1f}" for s in cols]
        cells = [name, f"{100 * d['mean']:.1f}", whole, *at, f"{100 * (acc[-1] - acc[0]):+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""The report's "Can these reasons be trusted?" section (grounding/truth.py, concepts/evidence.py).

It says, before any concept weight is shown: whether the reported model's explanations passed the
truth floor and on what (annotations with their coverage, or concept evidence), which models were
passed over and why, which concepts carry no weight because their activation is no evidence of
their classes (with the figure), and, when the run's concepts are word associations that no source
links to the classes, that they are not reasons.
"""

from __future__ import annotations

import html

import numpy as np


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def truth_section(model, results: dict, chosen: dict | None = None, warnings: list[str] | None = None) -> str:
    from ..runs.results import MethodResult

    truth = MethodResult.from_dict(results.get(model.name, {})).truth
    parts = ["<section id='truth'><h2>Can these reasons be trusted?</h2>"]
    for w in warnings or []:
        parts.append(f"<p class='truth-false' id='concept-warning'>{_esc(w)}</p>")
    if truth is None:
        parts.append("<p class='small'>No truth check is recorded for this model (results from a version "
                     "before truth checks were recorded).</p>")
    else:
        verdict = "pass" if truth["passed"] else "do not pass"
        cls = "truth-true" if truth["passed"] else "truth-false"
        parts.append(f"<p id='truth-verdict' class='{cls}'>Its explanations <b>{verdict}</b> the truth floor on "
                     f"{_esc(truth.get('on', 'validation'))} images: {_esc(truth['why'])}.</p>")
        if not truth["passed"]:
            parts.append("<p>Read its concept weights as what the model uses, not as reasons: the named "
                         "concepts are not shown to be true of the classes they explain.</p>")
        bad = truth.get("unsupported") or []
        if bad:
            items = "".join(f"<li>{_esc(b['class'])}: {_esc(b['concept'])} ({_esc(b['why'])})</li>" for b in bad)
            parts.append(f"<details><summary>{len(bad)} top-k (class, concept) pair(s) without support"
                         f"</summary><ul id='unsupported'>{items}</ul></details>")
    for name, why in sorted(((chosen or {}).get("passed_over") or {}).items()):
        parts.append(f"<p class='small passed-over'>Passed over: <b>{_esc(name)}</b> ({_esc(why)}).</p>")
    ev = getattr(model, "concept_evidence_", None)
    if ev is not None:
        floor = getattr(model, "evidence_floor", None)
        concepts = list(model.concepts_)
        weighed = np.asarray(model.class_weights_) != 0
        low = [(concepts[j], v) for j, v in enumerate(ev)
               if floor is not None and not weighed[:, j].any() and (np.isnan(v) or v < floor)]
        if low:
            items = "".join(f"<li>{_esc(c)} ({'no evidence: linked to every class or none' if np.isnan(v) else f'{v:.2f}'})"
                            "</li>" for c, v in sorted(low, key=lambda t: -1 if np.isnan(t[1]) else t[1]))
            parts.append(f"<details><summary>{len(low)} concept(s) below the evidence floor {floor} carry no "
                         f"weight (AUROC of their activation for their linked classes)</summary>"
                         f"<ul id='below-floor'>{items}</ul></details>")
    parts.append("</section>")
    return "".join(parts)

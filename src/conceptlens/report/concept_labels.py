"""The report's "Concept labels" section, for runs with methods trained on concept labels (cbm,
ecbm): concept accuracy against the annotated labels (mean over concepts, whole vector, per
concept) and the intervention curve (top-1 after correcting 0..k concepts per image with their
true labels), from the run's `concept_labels` record (runs/experiment.score_concept_labels)."""

from __future__ import annotations

import html
import json

PALETTE = ("#2b7bb9", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#2c3e50")


def _esc(x) -> str:
    return html.escape(str(x))


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _summary(methods: dict) -> str:
    rows = []
    for name, d in methods.items():
        acc = d["intervention"]["accuracy"]
        whole = ("—" if d["whole_vector"] is None
                 else f"{_pct(d['whole_vector'])} ({d['whole_vector_images']})")
        rows.append(f"<tr data-method='{_esc(name)}'><td>{_esc(name)}</td>"
                    f"<td class='num'>{_pct(d['mean'])}</td>"
                    f"<td class='num'>{whole}</td><td class='num'>{_pct(acc[0])}</td>"
                    f"<td class='num'>{_pct(acc[-1])} ({d['intervention']['steps']})</td>"
                    f"<td class='num'>{100 * (acc[-1] - acc[0]):+.1f}</td></tr>")
    return ("<table id='concept-label-summary'><tr><th>method</th><th>concept accuracy %</th>"
            "<th>whole vector % (images)</th><th>top-1 %</th><th>top-1 % after correcting (n)</th>"
            f"<th>gain</th></tr>{''.join(rows)}</table>")


def _per_concept(methods: dict) -> str:
    concepts = list(dict.fromkeys(c for d in methods.values() for c in d["per_concept"]))
    head = "".join(f"<th>{_esc(name)}</th>" for name in methods)
    rows = []
    for c in concepts:
        cells = "".join(f"<td class='num'>{_pct(d['per_concept'].get(c))}</td>" for d in methods.values())
        rows.append(f"<tr><td>{_esc(c)}</td>{cells}</tr>")
    return (f"<table id='concept-accuracy'><tr><th>concept</th>{head}</tr>{''.join(rows)}</table>"
            "<p class='small'>accuracy % over the test images whose label of that concept is known; "
            "— where none is.</p>")


def _curve_svg(methods: dict, width: int = 520, height: int = 260) -> str:
    """Top-1 (%) against the number of concepts corrected, one polyline per method; each line
    carries its values (data-accuracy), so the figure can be read back."""
    left, right, top, bottom = 48, 150, 12, 36
    steps = max(1, max(d["intervention"]["steps"] for d in methods.values()))
    values = [a for d in methods.values() for a in d["intervention"]["accuracy"]]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    w, h = width - left - right, height - top - bottom

    def xy(n, a):
        return left + w * n / steps, top + h * (1 - (a - lo) / (hi - lo))

    parts = [f"<line x1='{left}' y1='{top + h}' x2='{left + w}' y2='{top + h}' stroke='#999'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + h}' stroke='#999'/>",
             f"<text x='{left + w / 2:.0f}' y='{height - 4}' font-size='11' text-anchor='middle'>concepts "
             "corrected per image</text>",
             f"<text x='12' y='{top + h / 2:.0f}' font-size='11' text-anchor='middle' "
             f"transform='rotate(-90 12 {top + h / 2:.0f})'>top-1 %</text>"]
    for a in (lo, hi):
        parts.append(f"<text x='{left - 4}' y='{xy(0, a)[1] + 4:.1f}' font-size='10' text-anchor='end'>"
                     f"{100 * a:.1f}</text>")
    for n in (0, steps):
        parts.append(f"<text x='{xy(n, lo)[0]:.1f}' y='{top + h + 14}' font-size='10' "
                     f"text-anchor='middle'>{n}</text>")
    for i, (name, d) in enumerate(methods.items()):
        colour = PALETTE[i % len(PALETTE)]
        acc = d["intervention"]["accuracy"]
        points = " ".join("{:.1f},{:.1f}".format(*xy(n, a)) for n, a in enumerate(acc))
        parts.append(f"<polyline class='curve' data-method='{_esc(name)}' "
                     f"data-accuracy='{_esc(json.dumps(acc))}' fill='none' stroke='{colour}' "
                     f"stroke-width='2' points='{points}'/>")
        y = top + 14 * i + 8
        parts.append(f"<line x1='{left + w + 10}' y1='{y}' x2='{left + w + 28}' y2='{y}' stroke='{colour}' "
                     f"stroke-width='2'/><text x='{left + w + 32}' y='{y + 4}' font-size='11'>"
                     f"{_esc(str(name)[:18])}</text>")
    return (f"<svg id='intervention-curve' width='{width}' height='{height}' role='img' "
            f"aria-label='top-1 after correcting concepts'>{''.join(parts)}</svg>")


def concept_label_section(concept_labels: dict | None) -> str:
    """`<section id='concept-labels'>` from a run's `concept_labels` record ({"level", "policy",
    "reference", "methods": {name: score_concept_labels' details}}); None or no methods: a note
    that nothing was measured."""
    head = "<section id='concept-labels'><h2>Concept labels</h2>"
    methods = (concept_labels or {}).get("methods") or {}
    if not methods:
        return (head + "<p class='small'>Not measured: this report was built without the run's "
                "concept-label scores (results.json \"concept_labels\", written by <code>conceptlens run"
                "</code> for methods trained on concept labels).</p></section>")
    c = concept_labels
    intro = (f"<p>Against the annotated concept labels ({_esc(c.get('level', '?'))} level) on the test "
             "images; unknown labels are never counted. Concept accuracy: mean over concepts of each "
             "one's accuracy; whole vector: every concept right, over the images with all labels known. "
             "Interventions: top-1 after correcting that many concepts per image with their true labels "
             f"('{_esc(c.get('policy', '?'))}' order, known labels only; a model with its own "
             "intervention, such as ECBM, re-infers the other concepts at each step).</p>")
    return (head + intro + _summary(methods) + "<h3>Intervention curve</h3>" + _curve_svg(methods)
            + "<h3>Accuracy per concept</h3>" + _per_concept(methods) + "</section>")

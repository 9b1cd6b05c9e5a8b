"""The HTML report: metrics against the baselines, per-class concept weights, concept grounding
(measures against human annotations, the concept-to-attribute matches, and per class the top
concepts flagged when annotated false), discovered concepts (for methods that find their own:
each used latent's name, how similar it is to its word, the runner-up word and the test images
that activate it most; V2C's tokens per class), example predictions with their contributions, a
concept gallery, a confusion matrix, faithfulness, and the edit log. For a model trained on concept
labels (cbm, ecbm) also its concept labels (concept accuracy per concept and whole vector, the
intervention curve; report/concept_labels.py) and, given the backbone, where its concepts look:
attribution heat maps of the top concepts of the first example images (report/heatmaps.py). One
file; images are embedded PNG thumbnails."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from .._io import write_text
from ..errors import ConfigError
from ..explain import class_weights, deletion_curves, explain_image, top_images
from ..methods.protocols import Discovering
from ..methods.tags import get_tags
from .concept_labels import concept_label_section
from .truth import truth_section

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .5rem}
th{background:#f4f4f4}.num{text-align:right}.pos{fill:#2b7bb9}.neg{fill:#c0392b}
.cards{display:flex;flex-wrap:wrap;gap:1rem}.card{border:1px solid #ddd;border-radius:6px;
padding:.6rem;width:320px}.card img,.gallery img{image-rendering:pixelated;width:64px;height:64px}
.wrong{color:#c0392b}.right{color:#27ae60}.small{font-size:.8rem;color:#666}
.gallery{display:flex;gap:.3rem;align-items:center;margin:.3rem 0}
button{margin:.1rem;padding:.2rem .5rem}.hidden{display:none}
.flag{display:inline-block;margin:.1rem .3rem .1rem 0;padding:0 .3rem;border-radius:3px}
.truth-false{background:#fbe3e0;color:#a93226;font-weight:bold}.truth-true{background:#e3f4e8}
.truth-unknown,.truth-not-annotated{background:#f0f0f0;color:#666}
.weak-name{color:#999}.weak-name .name{font-style:italic}
"""
WEAK_SIMILARITY = 0.2  # default: latent names whose word similarity is below this are shown weak


SCRIPT = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
const origError = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); origError(...a); };
function showClass(name) {
  document.querySelectorAll('.class-weights').forEach(el =>
    el.classList.toggle('hidden', name !== 'all' && el.dataset.cls !== name));
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('button[data-cls]').forEach(b =>
    b.addEventListener('click', () => showClass(b.dataset.cls)));
  document.body.dataset.ready = window.__errors.length ? 'errors' : 'ok';
  document.getElementById('js-errors').textContent = window.__errors.join('\\n');
});
"""


def png_data_uri(image: np.ndarray, size: int = 64) -> str:
    from PIL import Image

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _esc(x) -> str:
    return html.escape(str(x))


# characters that could end a <script> element or open a comment/CDATA inside it; in JSON
# they occur only inside strings, where the \uXXXX form means the same
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                  "\u2029": "\\u2029"}


def script_json(obj) -> str:
    """JSON safe to embed in a <script> element: a label like `</script><script>...` stays
    inside its string (escaped as \u003c/script\u003e), and JSON.parse returns it unchanged."""
    text = json.dumps(obj)
    for ch, sub in _SCRIPT_UNSAFE.items():
        text = text.replace(ch, sub)
    return text


def _edit_row(e) -> str:
    """One edit-log row, every field HTML-escaped (a saved model's log is untrusted text)."""
    if not isinstance(e, dict):
        e = {"note": e}
    classes = e.get("classes", [])
    classes = ", ".join(map(str, classes)) if isinstance(classes, list | tuple) else classes
    return (f"<tr><td>{_esc(e.get('concept', ''))}</td><td>{_esc(classes)}</td>"
            f"<td class='num'>{_esc(e.get('factor', ''))}</td><td>{_esc(e.get('note', ''))}</td></tr>")


def _bars(items: list[tuple[str, float]], width: int = 420) -> str:
    """Horizontal signed bar chart as inline SVG."""
    if not items:
        return "<p class='small'>no non-zero weights</p>"
    top = max(abs(v) for _, v in items) or 1.0
    h, half = 18, width // 2
    rows = []
    for i, (name, v) in enumerate(items):
        w = abs(v) / top * (half - 10)
        x = half if v >= 0 else half - w
        rows.append(f"<rect class='{'pos' if v >= 0 else 'neg'}' x='{x:.1f}' y='{i * h + 2}' "
                    f"width='{w:.1f}' height='{h - 4}'/><text x='{half + (5 if v < 0 else -5)}' "
                    f"y='{i * h + 13}' font-size='11' text-anchor='{'start' if v < 0 else 'end'}'>"
                    f"{_esc(name[:40])} ({v:+.2f})</text>")
    return f"<svg width='{width}' height='{len(items) * h + 4}' role='img'>{''.join(rows)}</svg>"


def _metrics_table(results: dict, k: int = 5) -> str:
    from ..runs.results import as_method_results
    from ..runs.tables import auroc_cell, evidence_cell, has_top5, precision_cell, top5_cell

    rows_in = as_method_results(results)
    grounded = any(r.grounded for r in rows_in.values())
    checked = any("evidence_at_k" in r.measures for r in rows_in.values())
    top5 = has_top5(rows_in)
    head = "<tr><th>method</th><th>top-1</th>" + ("<th>top-5</th>" if top5 else "") + \
           "<th>per-class</th><th>ECE</th>" \
           "<th>NEC</th><th>top-1 @ NEC</th>" + \
           (f"<th>concept AUROC (n)</th><th>precision@{k} (coverage)</th><th>negative precision@{k}</th>"
            if grounded else "") + (f"<th>evidence@{k}</th>" if checked else "") + "</tr>"
    rows = []
    for name, r in rows_in.items():
        if not r.fitted:  # could not be fitted on these data (runs/stages.fit_and_evaluate)
            rows.append(f"<tr><td>{_esc(name)}</td><td colspan='{5 + top5 + 3 * grounded + checked}'>failed: "
                        f"{_esc(r.failed)}</td></tr>")
            continue
        at = f"{100 * r.top1_at_nec:.1f}" if "top1_at_nec" in r.measures else "-"
        extra = "" if not grounded else (
            f"<td class='num'>{auroc_cell(r)}</td><td class='num'>"
            f"{precision_cell(r.get('precision_at_k'), r.get('precision_at_k_coverage'), r.get('precision_at_k_on_covered'))}"
            f"</td><td class='num'>{precision_cell(r.get('negative_precision_at_k'))}</td>")
        if checked:
            extra += f"<td class='num'>{_esc(evidence_cell(r))}</td>"
        rows.append(f"<tr><td>{_esc(name)}</td><td class='num'>{100 * r.top1:.1f}</td>"
                    + (f"<td class='num'>{top5_cell(r)}</td>" if top5 else "") +
                    f"<td class='num'>{100 * r.mean_per_class:.1f}</td>"
                    f"<td class='num'>{r.ece:.3f}</td><td class='num'>{r.nec:.1f}</td>"
                    f"<td class='num'>{at}</td>{extra}</tr>")
    return f"<table id='metrics'>{head}{''.join(rows)}</table>"


TRUTH_LABEL = {"false": "annotated false", "true": "annotated true", "unknown": "unknown",
               "not annotated": "no annotated match"}


def _flag(item: dict) -> str:
    truth = item["truth"]
    mark = {"false": "\u2717 ", "true": "\u2713 "}.get(truth, "? ")
    match = "" if item["match"] in (None, item["concept"]) else f" \u2192 {item['match']}"
    return (f"<span class='flag truth-{truth.replace(' ', '-')}' title='{_esc(TRUTH_LABEL[truth])}"
            f"{_esc(match)}'>{mark}{_esc(item['concept'])} ({item['weight']:+.2f})"
            f"<span class='small'> {_esc(TRUTH_LABEL[truth])}</span></span>")


def _grounding_section(g: dict | None) -> str:
    """The measures, each class's top positive-weight concepts with their annotated truth
    (annotated false flagged), and the concept-to-attribute matches for a person to check."""
    head = "<section id='grounding'><h2>Concept grounding</h2>"
    if g is None:
        return (head + "<p class='small'>Not measured: no concept annotations for this dataset (set "
                "[grounding] annotations in the run config, or run <code>conceptlens concepts "
                "evaluate</code>).</p></section>")

    def num(v, digits):
        return "—" if v is None else f"{v:.{digits}f}"

    k, src = g["k"], g["annotations"]
    n_false = sum(item["truth"] == "false" for c in g["per_class"] for item in c["positive"])
    source = _esc(src["provenance"] or "the given annotations")
    parts = [head, f"<p>Against {source} ({_esc(src['level'])} level, {src['n_attributes']} attributes): "
             f"mean concept AUROC <b id='concept-auroc'>{num(g['concept_auroc'], 3)}</b> over "
             f"{g['concept_auroc_n']} concepts ({g['n_annotated_concepts']} of {g['n_concepts']} matched "
             f"to an annotated attribute); precision@{k} <b id='precision-at-k'>"
             f"{num(g['precision_at_k'], 2) if g['precision_at_k'] is not None or g.get('precision_at_k_coverage') is None else 'not measurable'}</b> "
             f"(top-{k} positive-weight concepts annotated true of the class; coverage "
             f"<b id='precision-coverage'>{num(g.get('precision_at_k_coverage'), 2)}</b> of the top-{k} pairs "
             f"could be scored{_esc('; ' + g['precision_at_k_note']) if g.get('precision_at_k_note') else ''}), negative precision@{k} <b>{num(g['negative_precision_at_k'], 2)}</b> (top-{k} "
             f"negative-weight concepts annotated false). <b id='n-annotated-false'>{n_false}</b> top "
             "concept(s) annotated false.</p>"]
    rows = []
    for c in g["per_class"]:
        flags = ("".join(_flag(item) for item in c["positive"])
                 or "<span class='small'>no positive weights</span>")
        rows.append(f"<tr><th>{_esc(c['class'])}</th><td>{flags}</td></tr>")
    parts.append(f"<h3>Top-{k} positive-weight concepts per class</h3><table id='grounding-classes'>"
                 f"<tr><th>class</th><th>concepts (weight), annotated truth</th></tr>{''.join(rows)}</table>")
    auc = g["concept_auroc_per_concept"]
    rows = []
    for m in g["matches"]:
        sim = "" if m["similarity"] is None else f"{m['similarity']:.3f}"
        rows.append(f"<tr><td>{_esc(m['text'])}</td><td>{_esc(m['match'] or '—')}</td>"
                    f"<td>{_esc(m['how'] or 'unmatched')}</td><td class='num'>{sim}</td>"
                    f"<td>{_esc(m['nearest'] or '')}</td>"
                    f"<td class='num'>{num(auc.get(m['text']), 3)}</td></tr>")
    parts.append("<h3>Concept matches</h3><p class='small'>free-text concept &rarr; annotated attribute: "
                 "exact (normalised text) or by embedding above the threshold; the nearest attribute is "
                 "shown even when below it, so the cut-off can be judged.</p><table id='concept-matches'>"
                 "<tr><th>concept</th><th>attribute</th><th>how</th><th>similarity</th><th>nearest</th>"
                 f"<th>AUROC</th></tr>{''.join(rows)}</table></section>")
    return "".join(parts)


def _thumbs(items, image) -> str:
    """Thumbnails of (id, activation) items, the activation in each one's tooltip."""
    return "".join(f"<img alt='{_esc(i)}' title='{_esc(i)} ({a:.2f})' src='{png_data_uri(image(i))}'>"
                   for i, a in items)


def _gallery_row(label: str, items, image) -> str:
    """One concept-gallery line: the (escaped) label and its top images."""
    return f"<div class='gallery'><span style='width:260px'>{_esc(label)}</span>{_thumbs(items, image)}</div>"


def latent_naming(model) -> list[dict] | None:
    """Per concept of a model that discovers SAE latents (methods/protocols.py: Discovering, kind
    "latents"), its naming record aligned with `concepts_`; None when the model cannot say."""
    if not isinstance(model, Discovering):
        return None
    record = model.discovery_record()
    return record.latents if record.kind == "latents" else None


def _num_cell(v, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _latent_table(model, test, image, weak: float, limit: int) -> str:
    """Each used latent (non-zero weight for some class, largest first): its name, naming
    similarity (weak ones in grey), the runner-up word, how often it fired, its top test images."""
    W = np.abs(np.asarray(model.class_weights_))
    used = [int(k) for k in np.argsort(-W.max(0), kind="stable") if W[:, k].max() > 0]
    naming = latent_naming(model) or [{} for _ in model.concepts_]
    A = model.transform(test) if len(test) else np.zeros((0, len(model.concepts_)))
    n_weak = sum(1 for k in used if (naming[k].get("similarity") is not None
                                     and naming[k]["similarity"] < weak))
    rows = []
    for k in used[:limit]:
        rec = naming[k]
        sim = rec.get("similarity")
        is_weak = sim is not None and sim < weak
        order = np.argsort(-A[:, k], kind="stable")[:6] if len(A) else []
        thumbs = _thumbs([(test.ids[i], float(A[i, k])) for i in order], image)
        second = rec.get("second")
        second_sim = rec.get("second_similarity")
        classes = ", ".join(f"{model.classes_[c]} ({model.class_weights_[c, k]:+.2f})"
                            for c in np.argsort(-W[:, k])[:3] if W[c, k] > 0)
        rows.append(f"<tr class='latent{' weak-name' if is_weak else ''}' data-weak='{int(is_weak)}'>"
                    f"<td class='num'>{_esc(rec.get('latent', k))}</td>"
                    f"<td class='name'>{_esc(model.concepts_[k])}</td>"
                    f"<td class='num similarity'>{_num_cell(sim)}</td>"
                    f"<td>{_esc(second or '—')}"
                    f"{'' if second_sim is None else f' ({second_sim:.3f})'}</td>"
                    f"<td class='small'>{_esc(classes)}</td>"
                    f"<td><div class='gallery'>{thumbs}</div></td></tr>")
    more = f" ({len(used) - limit} more not shown)" if len(used) > limit else ""
    return (f"<p>{len(used)} latent(s) used by the classifier{more}; <b class='n-weak'>{n_weak}</b> with a "
            f"weak name (similarity to their word below {weak:g}, in grey: read those names with care). "
            "Similarity is the cosine between the latent's decoder direction and the word's text embedding."
            "</p><table class='latents'><tr><th>latent</th><th>name</th><th>similarity</th>"
            "<th>second-best name</th><th>classes (weight)</th><th>test images that activate it most</th>"
            f"</tr>{''.join(rows)}</table>")


def class_tokens(model, top: int = 10) -> dict[str, list[str]]:
    """Concepts per class: the tokens each class drew, from the model's discovery record
    (methods/protocols.py: Discovering, kind "tokens"); else each class's `top` concepts by weight."""
    if isinstance(model, Discovering):
        record = model.discovery_record()
        if record.kind == "tokens" and record.class_tokens:
            return {str(c): list(v) for c, v in record.class_tokens.items()}
    W = np.asarray(model.class_weights_)
    return {c: [model.concepts_[j] for j in np.argsort(-W[i], kind="stable")[:top] if W[i, j] > 0]
            for i, c in enumerate(model.classes_)}


def _token_table(model) -> str:
    rows = "".join(f"<tr><th>{_esc(c)}</th><td>{_esc(', '.join(tokens) or '—')}</td></tr>"
                   for c, tokens in class_tokens(model).items())
    return ("<p>Tokens each class drew from the unlabelled images nearest to it (most frequent first).</p>"
            f"<table class='class-tokens'><tr><th>class</th><th>tokens</th></tr>{rows}</table>")


def _discovered_section(models: dict, test, image, weak: float, gallery: int) -> str:
    parts = ["<section id='discovered'><h2>Discovered concepts</h2><p class='small'>Concepts these "
             "methods found in unlabelled images and named afterwards, not taken from the run's concept "
             "list.</p>"]
    for name, model in models.items():
        parts.append(f"<div class='discovered-model' data-method='{_esc(name)}'><h3>{_esc(name)}</h3>")
        if isinstance(model, Discovering) and model.discovery_record().kind == "latents":
            parts.append(_latent_table(model, test, image, weak, gallery))
        else:
            parts.append(_token_table(model))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _confusion(model, test) -> str:
    m = len(model.classes_)
    pred = model.predict(test)
    cm = np.zeros((m, m), int)
    np.add.at(cm, (np.asarray(test.labels), pred), 1)
    top = cm.max() or 1
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{_esc(c)}</th>" for c in model.classes_)
    rows = []
    for i, c in enumerate(model.classes_):
        cells = "".join(
            f"<td class='num' style='background:rgba(43,123,185,{cm[i, j] / top:.2f})'>{cm[i, j]}</td>"
            for j in range(m))
        rows.append(f"<tr><th>{_esc(c)}</th>{cells}</tr>")
    return f"<table id='confusion'>{head}</tr>{''.join(rows)}</table>"


def _heatmaps(model, test, image, backbone, picks, concepts: int, steps: int) -> str:
    if backbone is None:
        return ("<section id='heatmaps'><h2>Where concepts look</h2><p class='small heatmaps-missing'>Not "
                "shown: the report was built without the backbone (heat maps need its differentiable path "
                "from pixels).</p></section>")
    from .heatmaps import top_concept_heatmaps

    return top_concept_heatmaps(model, test, image, backbone, picks, concepts=concepts, steps=steps)


@dataclass
class ReportOptions:
    """How much the report shows: `examples` example predictions, `gallery` concepts in the gallery,
    up to `gallery_latents` discovered latents (names less similar to their word than
    `weak_similarity` shown weak), and heat maps for the first `heatmap_images` examples (each one's
    `heatmap_concepts` top concepts, `heatmap_steps` integrated-gradient steps; 0 images: none)."""

    examples: int = 8
    gallery: int = 8
    weak_similarity: float = WEAK_SIMILARITY
    gallery_latents: int = 24
    heatmap_images: int = 4
    heatmap_concepts: int = 3
    heatmap_steps: int = 16


@dataclass
class RunContext:
    """What of the run the report shows beside the model (all optional): `faithfulness` (its
    deletion-curve areas; None: measured now), `grounding` (its grounding measures), `discovered`
    ({name: model} of the run's concept-discovering methods), `concept_labels` (results.json's
    record), `backbone` (for heat maps), `chosen` (results.json report_method) and `warnings` (the
    run's concept warnings)."""

    faithfulness: dict | None = None
    grounding: dict | None = None
    discovered: dict | None = None
    concept_labels: dict | None = None
    backbone: object = None
    chosen: dict | None = None
    warnings: list[str] | None = None


_RUN_KEYS = tuple(f.name for f in fields(RunContext))
_OPTION_KEYS = tuple(f.name for f in fields(ReportOptions))


def build_report(model, results: dict, test, train, image: Callable[[str], np.ndarray],
                 title: str = "conceptlens report", run: RunContext | None = None,
                 options: ReportOptions | None = None, **given) -> str:
    """The report as one HTML string. `image(id)` returns the decoded image of an item; `results`
    ({name: MethodResult or results row}) fill the summary table; `run` (a RunContext) is what of
    the run is shown beside the model, `options` (ReportOptions) how much is shown. Their fields
    may also be given as keywords (grounding=..., heatmap_images=...).

    `run.grounding` is the model's measures from `conceptlens.grounding.evaluate_grounding` (None:
    the section says they were not measured). `run.discovered` ({name: fitted model}) are the
    run's methods that found their own concepts, shown in "Discovered concepts" (None: the
    reported model itself when it is one).

    A model trained on concept labels (`concept_labelled`: cbm, ecbm) gets a "Concept labels" section
    from `run.concept_labels`, the run's record of them (results.json "concept_labels"; every such
    method of the run is shown), and, when `run.backbone` (the run's, with a differentiable path from
    pixels: offline, hf) is given, "Where concepts look": integrated-gradient heat maps of the first
    example images' top concepts. Each image costs about heatmap_concepts x heatmap_steps backbone
    passes. `run.chosen` (the run's report_method record) and `run.warnings` (the run's concept
    warnings) fill "Can these reasons be trusted?" (report/truth.py)."""
    unknown = sorted(set(given) - set(_RUN_KEYS) - set(_OPTION_KEYS))
    if unknown:
        raise TypeError(f"build_report() got unexpected keyword argument(s) {', '.join(unknown)}")
    run = replace(run or RunContext(), **{k: v for k, v in given.items() if k in _RUN_KEYS})
    options = replace(options or ReportOptions(), **{k: v for k, v in given.items() if k in _OPTION_KEYS})
    return _build(model, results, test, train, image, title, run, options)


def _build(model, results, test, train, image, title: str, run: RunContext, options: ReportOptions) -> str:
    grounding, discovered, faithfulness = run.grounding, run.discovered, run.faithfulness
    concept_labels, backbone, chosen, warnings = run.concept_labels, run.backbone, run.chosen, run.warnings
    examples, gallery, weak_similarity = options.examples, options.gallery, options.weak_similarity
    gallery_latents, heatmap_images = options.gallery_latents, options.heatmap_images
    heatmap_concepts, heatmap_steps = options.heatmap_concepts, options.heatmap_steps
    model.check_fitted()
    parts = [f"<h1>{_esc(title)}</h1>",
             f"<p class='small'>model <b>{_esc(model.name)}</b> on backbone "
             f"{_esc(model.backbone_id_)}; {len(model.concepts_)} concepts, NEC "
             f"{model.nec_:.1f}</p>"]
    parts.append("<section id='summary'><h2>Summary</h2>"
                 + _metrics_table(results, grounding["k"] if grounding else 5) + "</section>")
    from .nec_curve import nec_curve_section

    parts.append(nec_curve_section(results))
    parts.append(truth_section(model, results, chosen, warnings))

    buttons = "<button data-cls='all'>all classes</button>" + "".join(
        f"<button data-cls='{_esc(c)}'>{_esc(c)}</button>" for c in model.classes_)
    charts = []
    for c in model.classes_:
        items = class_weights(model, c, top=8)
        charts.append(f"<div class='class-weights' data-cls='{_esc(c)}'><h3>{_esc(c)}</h3>"
                      f"{_bars(items)}</div>")
    parts.append("<section id='class-weights'><h2>Concept weights per class</h2>"
                 f"<div>{buttons}</div>{''.join(charts)}</section>")
    parts.append(_grounding_section(grounding))
    labelled = get_tags(model).concept_labelled
    if isinstance(heatmap_images, bool) or not isinstance(heatmap_images, int) or heatmap_images < 0:
        raise ConfigError(f"heatmap_images must be an integer >= 0 (0: no heat maps); got "
                          f"{heatmap_images!r}.")
    if labelled or concept_labels:
        parts.append(concept_label_section(concept_labels))
    if discovered is None:
        discovered = {model.name: model} if get_tags(model).discovers_concepts else {}
    if discovered:
        parts.append(_discovered_section(discovered, test, image, weak_similarity, gallery=gallery_latents))

    rng = np.random.default_rng(0)
    picks = rng.choice(len(test), size=min(examples, len(test)), replace=False)
    cards = []
    for i in picks:
        ex = explain_image(model, test, int(i), top=5)
        truth = model.classes_[int(test.labels[i])]
        ok = "right" if ex["predicted"] == truth else "wrong"
        items = [(c.concept, c.contribution) for c in ex["top"]]
        cards.append(f"<div class='card'><img alt='{_esc(ex['id'])}' src='{png_data_uri(image(ex['id']))}'>"
                     f"<div>true <b>{_esc(truth)}</b>; predicted <b class='{ok}'>"
                     f"{_esc(ex['predicted'])}</b></div>{_bars(items, 300)}"
                     f"<div class='small'>other concepts {ex['others']:+.2f}, bias "
                     f"{ex['intercept']:+.2f}</div></div>")
    parts.append("<section id='examples'><h2>Example predictions</h2>"
                 "<p class='small'>bars: each concept's contribution (activation x weight) to the "
                 f"predicted class</p><div class='cards'>{''.join(cards)}</div></section>")
    if labelled and heatmap_images:
        parts.append(_heatmaps(model, test, image, backbone, picks[:heatmap_images], heatmap_concepts,
                               heatmap_steps))

    used = np.argsort(-np.abs(model.class_weights_).max(0))[:gallery]
    rows = [_gallery_row(model.concepts_[k], top_images(model, train, int(k), 6), image) for k in used]
    parts.append("<section id='gallery'><h2>Concept gallery</h2><p class='small'>training images "
                 f"that activate each concept most</p>{''.join(rows)}</section>")
    parts.append("<section id='confusion-matrix'><h2>Confusion matrix</h2>"
                 f"{_confusion(model, test)}</section>")
    if faithfulness is None:
        faithfulness = deletion_curves(model, test)
    parts.append("<section id='faithfulness'><h2>Faithfulness</h2><p>Deleting each image's top "
                 f"contributing concepts: area under the class-probability curve "
                 f"<b>{faithfulness['area_top']:.3f}</b>, against <b>{faithfulness['area_random']:.3f}"
                 "</b> for random concepts (lower is more faithful).</p></section>")
    log = getattr(model, "edit_log_", [])
    log_rows = "".join(_edit_row(e) for e in log) or "<tr><td colspan='4'>no edits</td></tr>"
    parts.append("<section id='edit-log'><h2>Edit log</h2><table><tr><th>concept</th><th>classes"
                 f"</th><th>factor</th><th>note</th></tr>{log_rows}</table></section>")
    parts.append("<pre id='js-errors' class='small'></pre>")
    data = script_json({"classes": list(model.classes_), "concepts": list(model.concepts_),
                        "nec": model.nec_, "edit_log": list(log)})
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
            f"{''.join(parts)}<script type='application/json' id='report-data'>{data}</script>"
            "</body></html>")


def write_report(path: str | Path, *args, **kwargs) -> Path:
    return write_text(path, build_report(*args, **kwargs))


__all__ = ["ReportOptions", "RunContext", "build_report", "png_data_uri", "script_json", "write_report"]

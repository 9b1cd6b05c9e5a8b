"""The HTML report: self-contained, and loaded in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from conceptlens.intervene import edit_model
from conceptlens.methods import get_method
from conceptlens.report import build_report, write_report
from conceptlens.testing import make_problem

SECTIONS = ("summary", "class-weights", "grounding", "examples", "gallery", "confusion-matrix",
            "faithfulness", "edit-log")


@pytest.fixture(scope="module")
def report_inputs():
    train, val, test, ctx = make_problem()
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, val)
    model = edit_model(model, remove=[model.concepts_[0]], note="spurious background")
    rng = np.random.default_rng(0)
    images = {i: rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for i in train.ids + test.ids}
    results = {"posthoc": {"top1": 0.9, "top5": 1.0, "mean_per_class": 0.9, "ece": 0.05,
                           "nec": model.nec_, "top1_at_nec": 0.8},
               "linear_probe": {"top1": 0.95, "top5": 1.0, "mean_per_class": 0.95, "ece": 0.02,
                                "nec": 24.0}}
    return model, results, test, train, images.__getitem__


def _annotations(model):
    """Class-level truth for the first 9 concepts: each class's own three concepts are true of it
    (as the toy problem makes them), except concept 3c+1, annotated false; concept 3c+2 unknown."""
    from conceptlens.annotations import ConceptAnnotations

    values = np.zeros((4, 9))
    for c in range(3):
        values[c, 3 * c: 3 * c + 3] = [1, 0, np.nan]
    return ConceptAnnotations("class", [f"concept {i}" for i in range(9)], values, classes=model.classes_,
                              provenance="toy annotations")


def test_report_shows_grounding_and_flags_concepts_annotated_false(report_inputs):
    import html

    from conceptlens.grounding import evaluate_grounding

    model, results, test, train, image = report_inputs
    g = evaluate_grounding(model, test, _annotations(model), k=3)
    results = {name: dict(r) for name, r in results.items()}
    results["posthoc"] |= {"concept_auroc": g["concept_auroc"], "concept_auroc_n": g["concept_auroc_n"],
                           "precision_at_k": g["precision_at_k"],
                           "negative_precision_at_k": g["negative_precision_at_k"]}
    results["linear_probe"] |= {"concept_auroc": None, "concept_auroc_n": 0, "precision_at_k": None,
                                "negative_precision_at_k": None}
    page = build_report(model, results, test, train, image, grounding=g)
    section = page[page.index("<section id='grounding'>"):]
    section = section[:section.index("</section>")]
    assert f"<b id='concept-auroc'>{g['concept_auroc']:.3f}</b>" in section
    assert f"<b id='precision-at-k'>{g['precision_at_k']:.2f}</b>" in section
    # per class, each top positive-weight concept with its annotated truth, false ones flagged
    tops = [(c["class"], x) for c in g["per_class"] for x in c["positive"]]
    truths = {x["truth"] for _, x in tops}
    assert {"false", "true"} <= truths, truths  # the toy model leans on some concepts annotated false
    classes = section[section.index("id='grounding-classes'"):section.index("id='concept-matches'")]
    for cls, x in tops:
        row = classes[classes.index(f"<th>{html.escape(cls)}</th>"):]
        row = row[:row.index("</tr>")]
        flag = f"<span class='flag truth-{x['truth'].replace(' ', '-')}'"
        assert flag in row and f"{html.escape(x['concept'])} ({x['weight']:+.2f})" in row
    assert classes.count("class='flag truth-false'") == sum(x["truth"] == "false" for _, x in tops)
    assert section.count("<b id='n-annotated-false'>") == 1
    assert f"<b id='n-annotated-false'>{sum(x['truth'] == 'false' for _, x in tops)}</b>" in section
    # concepts 9..11 match no attribute: listed as unmatched in the match table
    matches = section[section.index("id='concept-matches'"):]
    assert matches.count("<td>unmatched</td>") == sum(m["match"] is None for m in g["matches"]) == 3
    # the summary table carries the measures beside accuracy, a dash for the method without concepts
    summary = page[page.index("id='metrics'"):page.index("</table>", page.index("id='metrics'"))]
    assert "<th>concept AUROC (n)</th><th>precision@3 (coverage)</th>" in summary
    assert f"{g['concept_auroc']:.3f} ({g['concept_auroc_n']})" in summary
    probe = summary[summary.index("<td>linear_probe</td>"):]
    assert probe[:probe.index("</tr>")].count("<td class='num'>—</td>") == 3


def test_report_without_annotations_says_grounding_was_not_measured(report_inputs):
    page = build_report(*report_inputs)
    assert "Not measured: no concept annotations" in page and "concept AUROC" not in page


def test_report_is_self_contained(report_inputs):
    page = build_report(*report_inputs)
    assert not re.search(r"""(src|href)=['"]https?:""", page)  # no network fetches
    assert page.count("data:image/png;base64,") >= 8 + 8  # example and gallery thumbnails
    for section in SECTIONS:
        assert f"id='{section}'" in page
    assert "spurious background" in page  # the edit log


from conceptlens.testing import CHROMIUM  # noqa: E402
from conceptlens.testing import CHROMIUM_FLAGS as FLAGS  # noqa: E402


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_in_a_real_browser(report_inputs, tmp_path):
    from conceptlens.grounding import evaluate_grounding

    model, _, test = report_inputs[:3]
    path = write_report(tmp_path / "report.html", *report_inputs,
                        grounding=evaluate_grounding(model, test, _annotations(model), k=3))
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # the page's own script ran, saw no error and no console.error, and marked itself ready
    assert re.search(r'<body[^>]*data-ready="ok"', html), html[:500]
    assert re.search(r'<pre id="js-errors" class="small"></pre>', html)
    for section in SECTIONS:
        assert f'id="{section}"' in html
    shot = tmp_path / "report.png"
    r = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2400", path.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


PAYLOAD = "</script><script>document.title='pwned'</script><!--"
CONCEPT = "<img src=x onerror=alert(1)> & </script><script>alert(2)</script>"


@pytest.fixture(scope="module")
def hostile_inputs(report_inputs):
    """A model whose class name, concept text and edit-log entry are markup."""
    import copy

    model, results, test, train, image = report_inputs
    model = copy.deepcopy(model)
    model.classes_ = (PAYLOAD, *model.classes_[1:])
    model.concepts_ = [CONCEPT, *model.concepts_[1:]]
    model.edit_log_ = [{"concept": CONCEPT, "classes": [PAYLOAD, "b"], "factor": "<b>2</b>",
                        "note": "</td></tr></table><script>alert(3)</script>"}]
    return model, {PAYLOAD: results["posthoc"]}, test, train, image


def test_hostile_names_cannot_inject_markup(hostile_inputs):
    import html
    import json

    model = hostile_inputs[0]
    page = build_report(*hostile_inputs)
    assert "</script><script>" not in page and "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script") == 2  # the page's own script and its JSON data, nothing injected
    blob = re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", page, re.S)
    data = json.loads(blob.group(1))
    assert data["classes"] == list(model.classes_) and data["concepts"] == model.concepts_
    assert data["edit_log"] == model.edit_log_
    log = page[page.index("id='edit-log'"):]
    for field in (CONCEPT, PAYLOAD, "<b>2</b>", model.edit_log_[0]["note"]):
        assert html.escape(field) in log


def test_hostile_names_in_the_grounding_section_are_escaped(hostile_inputs):
    import html

    from conceptlens.annotations import ConceptAnnotations
    from conceptlens.grounding import evaluate_grounding

    model, _, test = hostile_inputs[:3]
    # an annotated attribute spelled like the hostile concept: it matches, and shows in every column
    ann = ConceptAnnotations("class", [CONCEPT, "concept 1"], np.ones((4, 2)), classes=model.classes_)
    g = evaluate_grounding(model, test, ann, k=12)
    assert g["matches"][0]["match"] == CONCEPT
    page = build_report(*hostile_inputs, grounding=g)
    assert "</script><script>" not in page and "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script") == 2
    section = page[page.index("<section id='grounding'>"):]
    assert html.escape(CONCEPT) in section and html.escape(PAYLOAD) in section


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_hostile_report_runs_no_injected_script_in_a_browser(hostile_inputs, tmp_path):
    path = write_report(tmp_path / "report.html", *hostile_inputs)
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom.stdout, re.S).group(1)
    assert re.search(r'<body[^>]*data-ready="ok"', dom.stdout), dom.stdout[:500]


def _discovering(model, needs):
    """A copy of `model` that says it found its own concepts (as dn_cbm / v2c do)."""
    import copy

    from conceptlens.methods.dn_cbm import latent_naming
    from conceptlens.methods.protocols import DiscoveryRecord
    from conceptlens.methods.v2c import class_tokens

    model = copy.deepcopy(model)
    model.discovers_concepts, model.discovery_needs = True, needs
    # what dn_cbm and v2c tell the report (methods/protocols.py: Discovering), read when the report is built
    if "sae" in needs:
        model.discovery_record = lambda: DiscoveryRecord("latents", latents=latent_naming(model))
    else:
        model.discovery_record = lambda: DiscoveryRecord("tokens", class_tokens=class_tokens(model))
    return model


def test_discovered_concepts_section_shows_names_their_strength_and_top_images(report_inputs):
    """Each used latent (non-zero weight) with its naming similarity, weak ones (below the
    threshold) marked grey, the runner-up word, and the test images that activate it most."""
    import html

    model, results, test, train, image = report_inputs
    dn = _discovering(model, ("sae", "words"))
    dn.naming_ = [{"latent": 100 + j, "name": c, "nearest": c, "similarity": 0.04 * j,
                   "second": f"runner-up {j}", "second_similarity": 0.04 * j - 0.01, "dead": False}
                  for j, c in enumerate(dn.concepts_)]
    page = build_report(dn, results, test, train, image, weak_similarity=0.2, gallery_latents=100)
    section = page[page.index("<section id='discovered'>"):]
    section = section[:section.index("</section>")]
    rows = re.findall(r"<tr class='latent( weak-name)?' data-weak='(\d)'>(.*?)</tr>", section, re.S)
    used = [j for j in range(len(dn.concepts_)) if np.abs(dn.class_weights_[:, j]).max() > 0]
    assert 0 not in used  # the edited model removed concept 0: an unused latent is not listed
    assert sorted(int(re.search(r"<td class='num'>(\d+)</td>", r[2]).group(1)) - 100 for r in rows) == used
    A = dn.transform(test)
    for grey, weak, cells in rows:
        j = int(re.search(r"<td class='num'>(\d+)</td>", cells).group(1)) - 100
        assert (weak == "1") == (0.04 * j < 0.2) == (grey == " weak-name")
        assert f"<td class='num similarity'>{0.04 * j:.3f}</td>" in cells
        assert f"runner-up {j} ({0.04 * j - 0.01:.3f})" in cells
        first = re.search(r"<img alt='([^']*)'", cells).group(1)
        assert html.unescape(first) == test.ids[int(np.argmax(A[:, j]))]  # brute force: the top image
        assert cells.count("<img ") == min(6, len(test))
    n_weak = sum(0.04 * j < 0.2 for j in used)
    assert f"<b class='n-weak'>{n_weak}</b>" in section and 0 < n_weak < len(used)
    assert "color:#999" in page  # weak names are grey


def test_discovered_concepts_section_lists_v2c_tokens_per_class(report_inputs):
    model, results, test, train, image = report_inputs
    v2c = _discovering(model, ("pool", "codebook"))
    v2c.class_tokens_ = {c: [f"token {i}", f"<b>{c}</b> pair"] for i, c in enumerate(v2c.classes_)}
    page = build_report(v2c, results, test, train, image)
    section = page[page.index("<section id='discovered'>"):]
    for i, c in enumerate(v2c.classes_):
        assert f"<tr><th>{c}</th><td>token {i}, &lt;b&gt;{c}&lt;/b&gt; pair</td></tr>" in section
    assert "<section id='discovered'>" not in build_report(*report_inputs)  # only for such methods

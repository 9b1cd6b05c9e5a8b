"""The report for models trained on concept labels (cbm, ecbm): the "Concept labels" section against
the run's own scores (score_concept_labels), the intervention curve read back from the SVG, the heat
maps of each shown image's top concepts against independent attribute() calls, ECBM's concept
predictor against its energies, and the page in a real browser. HTML is parsed with the stdlib."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from conceptlens.explain import explain_image
from conceptlens.explain.attribution import attribute, predictor_for
from conceptlens.features.bundle import FeatureBundle
from conceptlens.methods import Context, get_method
from conceptlens.report import build_report, write_report
from conceptlens.report.heatmaps import overlay, png_uri
from conceptlens.runs.experiment import score_concept_labels
from conceptlens.testing import CHROMIUM, QuadrantBackbone
from conceptlens.testing import CHROMIUM_FLAGS as FLAGS
from conceptlens.testing import patch_image as _patch_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONCEPTS = ["bright patch", "dim patch", "<b>left</b> & half"]  # a concept name that is markup


class Page(HTMLParser):
    """Every element as (tag, attributes, text inside it up to the next tag)."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[list] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append([tag, dict(attrs), ""])

    def handle_data(self, data):
        if self.elements:
            self.elements[-1][2] += data

    def find(self, tag=None, **attrs) -> list[list]:
        return [e for e in self.elements if (tag is None or e[0] == tag)
                and all(e[1].get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())]


def _section(page: str, sid: str) -> str:
    start = page.index(f"<section id='{sid}'>")
    return page[start:page.index("</section>", start) + len("</section>")]


def _problem(n: int, seed: int):
    """Quadrant images: class 'yes' = a bright patch somewhere; concepts: the bright patch, the dim
    patch (always there) and whether the bright patch is in the left half."""
    rng = np.random.default_rng(seed)
    bb = QuadrantBackbone()
    images, truth, labels = {}, {}, []
    for i in range(n):
        has = i % 2 == 0
        quads = rng.permutation(4)
        q = int(quads[0]) if has else None
        item = f"s{seed}/{i}"
        images[item] = _patch_image(rng, q, int(quads[1]))
        truth[item] = np.array([float(has), 1.0, float(q is not None and q % 2 == 0)])
        labels.append(int(has))
    ids = list(images)
    bundle = FeatureBundle(ids, np.array(labels, np.int64), ("no", "yes"), np.zeros((n, 8), np.float32),
                           bb.features([images[i] for i in ids]), bb.id)
    return bundle, images, truth


@pytest.fixture(scope="module")
def labelled_run():
    train, images, truth = _problem(120, 0)
    test, test_images, test_truth = _problem(24, 1)
    images |= test_images
    ctx = Context(classes=("no", "yes"), concepts=list(CONCEPTS),
                  concept_embedding=np.eye(3, 8, dtype=np.float32),
                  concept_truth_by_id=truth | test_truth)
    models = {"cbm_independent": get_method("cbm", mode="independent").fit(train, ctx),
              "cbm_joint": get_method("cbm", mode="joint", concept_weight=1.0).fit(train, ctx)}
    results = {name: {"top1": float((m.predict(test) == test.labels).mean()), "top5": 1.0,
                      "mean_per_class": 0.5, "ece": 0.1, "nec": m.nec_} for name, m in models.items()}
    details = score_concept_labels(results, models, train, test, ctx)
    concept_labels = {"policy": "uncertain", "strategy": "truth", "reference": "train", "level": "image",
                      "methods": details}
    return models, results, test, train, images.__getitem__, concept_labels, ctx


def test_concept_label_section_shows_the_runs_scores_and_its_curves(labelled_run):
    models, results, test, train, image, concept_labels, _ = labelled_run
    page = build_report(models["cbm_joint"], results, test, train, image, concept_labels=concept_labels,
                        heatmap_images=0)
    doc = Page(_section(page, "concept-labels"))
    details = concept_labels["methods"]
    for name, d in details.items():
        row = doc.find("tr", data_method=name)
        assert len(row) == 1
        cells = [e[2] for e in doc.elements[doc.elements.index(row[0]) + 1:][:7] if e[0] == "td"]
        acc = d["intervention"]["accuracy"]
        assert cells[0] == name and cells[1] == f"{100 * d['mean']:.1f}"
        assert cells[2] == f"{100 * d['whole_vector']:.1f} ({d['whole_vector_images']})"
        assert cells[3] == f"{100 * acc[0]:.1f}" and cells[4] == f"{100 * acc[-1]:.1f} ({len(CONCEPTS)})"
        assert cells[5] == f"{100 * (acc[-1] - acc[0]):+.1f}"
        # the curve: its values, one point per step, higher accuracy drawn higher (smaller y)
        (line,) = doc.find("polyline", data_method=name)
        assert json.loads(line[1]["data-accuracy"]) == pytest.approx(acc)
        points = [tuple(map(float, p.split(","))) for p in line[1]["points"].split()]
        assert len(points) == len(acc) == len(CONCEPTS) + 1
        xs, ys = zip(*points, strict=True)
        assert list(xs) == sorted(xs)
        for a, b in zip(range(len(acc)), range(1, len(acc)), strict=False):
            assert (ys[a] > ys[b]) == (acc[a] < acc[b]) or acc[a] == pytest.approx(acc[b])
    # per concept: one row per concept, one column per method, the recorded accuracies
    table = _section(page, "concept-labels")
    table = table[table.index("id='concept-accuracy'"):]
    for c in CONCEPTS:
        row = table[table.index(f"<td>{html.escape(c)}</td>"):]
        row = row[:row.index("</tr>")]
        want = [f"{100 * d['per_concept'][c]:.1f}" for d in details.values()]
        assert re.findall(r"<td class='num'>([^<]*)</td>", row) == want
    assert "<b>left</b>" not in page  # the markup concept is escaped everywhere


def test_heat_maps_of_each_shown_images_top_concepts(labelled_run):
    """Rows = the first heatmap_images example images; each row's overlays are its top concepts
    (explain_image, as the example cards) and equal an independent attribute() call's overlays."""
    models, results, test, train, image, concept_labels, _ = labelled_run
    model, bb = models["cbm_independent"], QuadrantBackbone()
    page = build_report(model, results, test, train, image, concept_labels=concept_labels, backbone=bb,
                        heatmap_images=3, heatmap_concepts=2, heatmap_steps=8)
    section = _section(page, "heatmaps")
    doc = Page(section)
    rows = doc.find("tr", class_="heatmap-row")
    assert len(rows) == 3 and "heatmaps-missing" not in section
    # the example cards' images, in order: their alt is the item id
    examples = [e[1]["alt"] for e in Page(_section(page, "examples")).find("img")][:3]
    cells = [e for e in doc.find("td") if "data-concept" in e[1]]
    assert len(cells) == 3 * 2
    overlays = [e[1]["src"] for e in doc.find("img") if not e[1]["alt"].startswith("image ")]
    for r, item in enumerate(examples):
        i = test.ids.index(item)
        top = [c.concept for c in explain_image(model, test, i, top=2)["top"]]
        assert [c[1]["data-concept"] for c in cells[2 * r: 2 * r + 2]] == top
        maps = attribute(bb, model, [image(item)], top, n_steps=8).maps[0]
        for j in range(2):
            assert overlays[2 * r + j] == png_uri(overlay(image(item), maps[j])[0], 112)
    assert "8 steps" in section and "<b>left</b>" not in section


def test_heat_maps_say_why_they_are_missing(labelled_run):
    models, results, test, train, image, concept_labels, _ = labelled_run

    class NoPath:
        id = "precomputed:x"
        embed_dim = feature_dim = 8

    model = models["cbm_joint"]
    for backbone, why in ((None, "built without the backbone"), (NoPath(), "has no differentiable path")):
        section = _section(build_report(model, results, test, train, image, backbone=backbone), "heatmaps")
        assert "heatmaps-missing" in section and why in section and "<img" not in section
    # without the run's scores the section says they were not measured
    assert "Not measured" in _section(build_report(model, results, test, train, image, heatmap_images=0),
                                      "concept-labels")


def test_a_model_without_concept_labels_gets_neither_section():
    from conceptlens.testing import make_problem

    train, val, test, ctx = make_problem()
    model = get_method("posthoc", lam=1e-3).fit(train, ctx, val)
    rng = np.random.default_rng(0)
    images = {i: rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for i in train.ids + test.ids}
    results = {"posthoc": {"top1": 0.9, "top5": 1.0, "mean_per_class": 0.9, "ece": 0.05, "nec": model.nec_}}
    page = build_report(model, results, test, train, images.__getitem__, backbone=QuadrantBackbone())
    assert "id='concept-labels'" not in page and "id='heatmaps'" not in page


def test_ecbm_concept_predictor_is_its_concept_energy_and_its_heat_maps_reach_the_report(labelled_run):
    import torch

    from conceptlens.methods import ECBM

    _, _, test, train, image, _, ctx = labelled_run
    model = ECBM(hidden=16, epochs=40, seed=0).fit(train, ctx)
    pred = predictor_for(model)
    X = torch.from_numpy(test.features)
    with torch.no_grad():
        got = pred.concept_fn(X).numpy()
        E = model.net_.concept_energies(model.net_.xc(model._z(test))).numpy()  # (n, k, 2)
    np.testing.assert_allclose(got, E[..., 0] - E[..., 1], rtol=1e-5, atol=1e-5)
    # the evidence's sign is (nearly) the inferred concept: the global energy weighs 0.01 at inference
    assert ((got > 0) == model.predict_concepts(test).astype(bool)).mean() >= 0.9
    results = {"ecbm": {"top1": 0.9, "top5": 1.0, "mean_per_class": 0.9, "ece": 0.05, "nec": model.nec_}}
    section = _section(build_report(model, results, test, train, image, backbone=QuadrantBackbone(),
                                    heatmap_images=2, heatmap_concepts=1, heatmap_steps=4), "heatmaps")
    assert "heatmaps-missing" not in section and len(Page(section).find("tr", class_="heatmap-row")) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_labelled_report_in_a_real_browser(labelled_run, tmp_path):
    import subprocess

    models, results, test, train, image, concept_labels, _ = labelled_run
    path = write_report(tmp_path / "report.html", models["cbm_joint"], results, test, train, image,
                        concept_labels=concept_labels, backbone=QuadrantBackbone(), heatmap_images=2,
                        heatmap_concepts=2, heatmap_steps=4)
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'<body[^>]*data-ready="ok"', dom.stdout), dom.stdout[:500]
    for sid in ("concept-labels", "heatmaps", "intervention-curve", "concept-accuracy"):
        assert f'id="{sid}"' in dom.stdout
    assert dom.stdout.count('class="curve"') == 2 and dom.stdout.count('class="heatmap-row"') == 2


def test_bad_heat_map_settings_are_refused(labelled_run):
    from conceptlens.errors import ConfigError

    models, results, test, train, image, _, _ = labelled_run
    for kwargs, message in (({"heatmap_steps": 0}, "steps must be an integer >= 1"),
                            ({"heatmap_concepts": 1.5}, "concepts must be an integer >= 1"),
                            ({"heatmap_images": -1}, "heatmap_images must be an integer >= 0")):
        with pytest.raises(ConfigError, match=message):
            build_report(models["cbm_joint"], results, test, train, image, backbone=QuadrantBackbone(),
                         **kwargs)

"""Model-level grounding measures (grounding/evaluate.py) against hand-computed cases and
scikit-learn, and Context.class_truth as a run fills it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from conceptlens.annotations import ConceptAnnotations
from conceptlens.errors import DataError
from conceptlens.grounding import Grounding, class_level, evaluate_grounding, grounding_measures

NAN = np.nan
ATTRS = ("whiskers", "fur", "bark")
# cat: whiskers, fur, no bark; dog: fur, bark, no whiskers
CLASS_ANN = ConceptAnnotations("class", ATTRS, [[1, 1, 0], [0, 1, 1]], classes=("cat", "dog"),
                               provenance="hand")


def test_measures_by_hand():
    """4 images (cat, cat, dog, dog), 4 model concepts of which 3 match by normalised text."""
    concepts = ["Whiskers", "the bark", "tail", "fur"]
    acts = np.array([[0.9, 0.1, 5.0, 1.0],
                     [0.2, 0.3, 4.0, 2.0],
                     [0.5, 0.4, 3.0, 3.0],
                     [0.1, 0.8, 2.0, 4.0]])
    weights = np.array([[2.0, -1.0, 3.0, 0.5],     # cat: top-2 positive = tail (unmatched), whiskers (true)
                        [1.5, 2.0, 0.0, -1.0]])    # dog: top-2 positive = bark (true), whiskers (false)
    g = grounding_measures(acts, concepts, ("cat", "dog"), np.array([0, 0, 1, 1]), CLASS_ANN,
                           class_weights=weights, k=2)
    # whiskers: positives {0.9, 0.2} vs negatives {0.5, 0.1}: 3 of 4 pairs ordered -> 0.75
    # bark: positives {0.4, 0.8} vs negatives {0.1, 0.3}: all 4 -> 1.0; fur: every image has it -> undefined
    assert g["concept_auroc_per_concept"] == {"Whiskers": 0.75, "the bark": 1.0, "fur": None}
    assert g["concept_auroc"] == pytest.approx(0.875) and g["concept_auroc_n"] == 2
    assert g["n_annotated_concepts"] == 3 and g["n_concepts"] == 4
    assert [(m["text"], m["match"], m["how"]) for m in g["matches"]] == [
        ("Whiskers", "whiskers", "exact"), ("the bark", "bark", "exact"), ("tail", None, None),
        ("fur", "fur", "exact")]
    # positive: cat 1/1 (tail unknown, left out), dog 1/2 -> 0.75
    assert g["precision_at_k"] == pytest.approx(0.75)
    # negative: cat's only negative is bark (false of cats: right), dog's is fur (true of dogs: wrong)
    assert g["negative_precision_at_k"] == pytest.approx(0.5)
    assert g["n_classes_scored"] == {"positive": 2, "negative": 2}
    cat, dog = g["per_class"]
    assert [(x["concept"], x["truth"]) for x in cat["positive"]] == [("tail", "not annotated"),
                                                                     ("Whiskers", "true")]
    assert [(x["concept"], x["truth"], x["weight"]) for x in dog["positive"]] == [
        ("the bark", "true", 2.0), ("Whiskers", "false", 1.5)]


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_embedding_match_above_the_threshold_only():
    vectors = {"whiskers": [1, 0, 0], "fur": [0, 1, 0], "bark": [0, 0, 1],
               "long whiskers": [0.95, 0.31, 0], "furry coat": [0.3, 0.7, 0.648]}

    def embed(texts):
        return _unit([vectors[t] for t in texts])

    acts = np.random.default_rng(0).random((4, 2))
    g = grounding_measures(acts, ["long whiskers", "furry coat"], ("cat", "dog"), np.array([0, 0, 1, 1]),
                           CLASS_ANN, embed=embed, threshold=0.8)
    long, furry = g["matches"]
    assert long["match"] == "whiskers" and long["how"] == "embedding"
    assert long["similarity"] == pytest.approx(_unit([vectors["long whiskers"]])[0, 0])
    # best cosine 0.7 with fur: below 0.8, so unmatched, the nearest still shown for a person to judge
    assert furry["match"] is None and furry["nearest"] == "fur"
    assert furry["similarity"] == pytest.approx(0.7, abs=1e-3)
    assert g["n_annotated_concepts"] == 1 and list(g["concept_auroc_per_concept"]) == ["long whiskers"]
    assert g["precision_at_k"] is None  # no weights given: no explanation precision


def _tiny_problem(grey_dataset, tmp_path):
    from conceptlens.features import encode_dataset, encode_texts
    from conceptlens.methods import Context
    from conceptlens.testing import TinyBackbone

    bb = TinyBackbone()
    bundle = encode_dataset(bb, grey_dataset, tmp_path, progress=False)
    concepts = ["red", "round", "soft", "shiny", "tall", "striped"]
    emb = encode_texts(bb, concepts, tmp_path)
    rng = np.random.default_rng(3)
    ctx = Context(grey_dataset.classes, concepts, emb, (rng.random((3, 6)) < 0.5).astype(np.float32),
                  emb[:3], bb.id)
    return bundle, ctx


def test_model_level_against_sklearn(grey_dataset, tmp_path):
    """A fitted model on the TinyBackbone: each concept's AUROC is roc_auc_score of its
    transform column against its class row per image; precision@k from the class truth."""
    from conceptlens.grounding import explanation_precision
    from conceptlens.methods import get_method

    bundle, ctx = _tiny_problem(grey_dataset, tmp_path)
    model = get_method("posthoc", lam=1e-3).fit(bundle, ctx)
    attrs = ("red", "round", "soft", "shiny", "velvet")
    truth = np.array([[1, 0, NAN, 1, 1], [0, 1, 1, 0, 0], [1, 1, 0, NAN, 1]], float)
    ann = ConceptAnnotations("class", attrs, truth, classes=("a", "b", "c"))
    g = evaluate_grounding(model, bundle, ann, k=2)
    A = model.transform(bundle)
    labels = np.asarray(bundle.labels)
    expected = {}
    for j, c in enumerate(model.concepts_[:4]):
        t = truth[labels, j]
        known = ~np.isnan(t)
        expected[c] = roc_auc_score(t[known], A[known, j]) if len(set(t[known])) == 2 else None
    assert g["concept_auroc_per_concept"].keys() == expected.keys()
    for c, v in expected.items():
        assert g["concept_auroc_per_concept"][c] == pytest.approx(v)
    defined = [v for v in expected.values() if v is not None]
    assert g["concept_auroc"] == pytest.approx(np.mean(defined)) and g["concept_auroc_n"] == len(defined)
    class_truth = np.full((3, 6), NAN)
    class_truth[:, :4] = truth[:, :4]
    ref = explanation_precision(model.class_weights_, class_truth, 2)
    assert g["precision_at_k_on_covered"] == pytest.approx(ref["positive"])
    assert g["precision_at_k_coverage"] == pytest.approx(ref["coverage"]["positive"])
    # the headline figures only where half the top-k pairs could be scored (MIN_COVERAGE)
    for key, side in (("precision_at_k", "positive"), ("negative_precision_at_k", "negative")):
        covered = ref["coverage"][side] >= 0.5
        assert g[key] == (pytest.approx(ref[side]) if covered else None), key
    # methods without concepts are not scored
    assert evaluate_grounding(get_method("zero_shot").fit(bundle, ctx), bundle, ann) is None


def test_image_level_annotations(grey_dataset, tmp_path):
    """Per-image truth is found by id (images without a row are unknown); class truth for
    precision@k is by unanimity over each class's annotated images."""
    from conceptlens.methods import get_method

    bundle, ctx = _tiny_problem(grey_dataset, tmp_path)
    model = get_method("labo", epochs=20).fit(bundle, ctx)
    rng = np.random.default_rng(1)
    items = list(bundle.ids[:50])  # the last 10 images have no annotations
    values = (rng.random((50, 2)) < 0.5).astype(float)
    values[3, 0] = NAN
    ann = ConceptAnnotations("image", ("red", "soft"), values, items=items)
    g = evaluate_grounding(model, bundle, ann)
    A = model.transform(bundle)
    for j, name in ((0, "red"), (1, "soft")):
        known = ~np.isnan(values[:, j])
        col = model.concepts_.index(name)
        assert g["concept_auroc_per_concept"][name] == pytest.approx(
            roc_auc_score(values[known, j], A[:50][known, col]))
    with pytest.raises(DataError, match="none of the 2 annotated images"):
        class_level(ConceptAnnotations("image", ("red",), [[1], [0]], items=("x", "y")), ("a", "b"),
                    ["p", "q"], [0, 1])


def test_class_level_by_unanimity():
    ann = ConceptAnnotations("image", ("x", "y", "z"),
                             [[1, 0, 1], [1, 0, NAN], [1, 1, NAN], [0, 0, NAN], [0, 0, NAN], [1, 1, 1]],
                             items=("i0", "i1", "i2", "i3", "i4", "unused"))
    out = class_level(ann, ("a", "b", "c"), ["i0", "i1", "i2", "i3", "i4"], [0, 0, 1, 2, 2])
    # a: x all 1, y all 0, z one known 1; b: x 1, y 1, z unknown; c: x 0, y 0, z unknown
    np.testing.assert_array_equal(out.values, [[1, 0, 1], [1, 1, NAN], [0, 0, NAN]])
    mixed = class_level(ann, ("a", "b"), ["i0", "i2", "i3"], [0, 0, 1])
    np.testing.assert_array_equal(mixed.values[0], [1, NAN, 1])  # i0 and i2 disagree on y only


def test_build_context_fills_class_truth(tmp_path):
    """Each run concept takes its matched attribute's class row; unmatched concepts are NaN."""
    from conceptlens.concepts import ConceptSet
    from conceptlens.runs.experiment import build_context
    from conceptlens.testing import TinyBackbone

    bb = TinyBackbone()
    concepts = ConceptSet(("dog", "cat"))
    for cls, text in (("cat", "Whiskers"), ("dog", "bark"), ("dog", "wagging tail"), ("cat", "fur")):
        concepts.add(text, [cls])
    grounding = Grounding.build(CLASS_ANN, ("dog", "cat"))  # rows in the run's class order
    ctx = build_context(bb, ("dog", "cat"), concepts, tmp_path, grounding)
    assert ctx.concepts == ["Whiskers", "bark", "wagging tail", "fur"]
    np.testing.assert_array_equal(ctx.class_truth, [[0, 1, NAN, 1], [1, 0, NAN, 1]])
    assert build_context(bb, ("dog", "cat"), concepts, tmp_path).class_truth is None
    # the memoised matches are what a run records
    assert [m["match"] for m in grounding.match(ctx.concepts)] == ["whiskers", "bark", None, "fur"]
    # a subset of the classes (a confounded pair) in its own order
    np.testing.assert_array_equal(grounding.for_classes(("cat",)).class_truth(ctx.concepts), [[1, 0, NAN, 1]])


def test_bad_inputs_are_named():
    with pytest.raises(DataError, match=r"activations have shape \(2, 3\); expected \(images, 2 concepts\)"):
        grounding_measures(np.zeros((2, 3)), ["fur", "bark"], ("cat", "dog"), [0, 1], CLASS_ANN)
    with pytest.raises(DataError, match="classes with no annotations: \\['fox'\\]"):
        grounding_measures(np.zeros((2, 1)), ["fur"], ("cat", "fox"), [0, 1], CLASS_ANN)


def test_resolve_annotations(tmp_path, monkeypatch, grey_dataset):
    import conceptlens.grounding.evaluate as grounding_evaluate
    from conceptlens.annotations import fashion_mnist_attributes
    from conceptlens.grounding import resolve_annotations

    assert resolve_annotations("none", "fashion-mnist") is None
    assert resolve_annotations("auto", str(tmp_path)) is None  # an image folder: nothing known
    builtin = resolve_annotations("auto", "fashion-mnist")
    assert builtin.concepts == fashion_mnist_attributes().concepts and builtin.level == "class"
    path = CLASS_ANN.to_csv(tmp_path / "a.csv")
    loaded = resolve_annotations(str(path), "anything")
    assert loaded.concepts == ATTRS and np.array_equal(loaded.values, CLASS_ANN.values)
    seen = []
    # where resolve_annotations looks it up
    monkeypatch.setattr(grounding_evaluate, "composite_annotations",
                        lambda data: seen.append(data) or "per-image")
    assert resolve_annotations("auto", "fashion-mnist-composite:n=40", grey_dataset) == "per-image"
    assert seen == [grey_dataset]


def test_a_bottleneck_that_dropped_concepts_is_scored_on_what_it_kept():
    """KnoBo keeps only grounded concepts (kept_); a dropped one (activation 0 everywhere) is no
    part of the model and must not enter the AUROC mean as 0.5 or precision@k."""
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    X[:, 0] += 3 * labels  # separable
    train = FeatureBundle([f"i{i}" for i in range(80)], labels, ("cat", "dog"), X, None, "t")
    # 'whiskers' and 'bark' have a yes and a no side; 'fur' (true of both) has no negatives: skipped
    ctx = Context(("cat", "dog"), ["whiskers", "fur", "bark"], np.eye(3, 6, dtype=np.float32),
                  class_truth=CLASS_ANN.values)
    model = get_method("knobo", min_val=2, epochs=20, lr=1e-2).fit(train, ctx)
    assert sorted(model.kept_) == [0, 2] and "fur" in model.skipped_  # kept_ is by val accuracy
    g = evaluate_grounding(model, train, CLASS_ANN)
    assert set(g["concept_auroc_per_concept"]) == {"whiskers", "bark"} and g["n_concepts"] == 2
    acts = model.transform(train)
    expected = np.mean([roc_auc_score(labels == 0, acts[:, 0]), roc_auc_score(labels == 1, acts[:, 2])])
    assert g["concept_auroc"] == pytest.approx(expected)


def test_run_class_truth_from_per_image_annotations_uses_training_images_only(tmp_path):
    """The class-level truth a run derives from per-image annotations is KnoBo's training prior,
    so a test image that disagrees must not turn a class's 'yes' into 'unknown'."""
    from conceptlens.data.dataset import ImageDataset
    from conceptlens.data.images import ArrayImages
    from conceptlens.runs.config import GroundingConfig, RunConfig
    from conceptlens.runs.experiment import open_grounding

    csv = tmp_path / "per_image.csv"
    csv.write_text("path,whiskers\ncat/0.png,1\ncat/1.png,1\ncat/2.png,0\ndog/0.png,0\ndog/1.png,0\n")
    data = ImageDataset("toy", ("cat", "dog"), np.array([0, 0, 0, 1, 1]),
                        ("cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png"),
                        ArrayImages(np.zeros((5, 2, 2), np.uint8)))
    cfg = RunConfig(grounding=GroundingConfig(annotations=str(csv)))
    train = np.array([0, 1, 3])  # cat/2.png (no whiskers) is a test image
    _, from_train = open_grounding(cfg, data, train)
    np.testing.assert_array_equal(from_train.values, [[1], [0]])
    _, from_all = open_grounding(cfg, data)  # every image: the cats disagree -> unknown
    assert np.isnan(from_all.values[0, 0]) and from_all.values[1, 0] == 0

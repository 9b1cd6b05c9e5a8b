"""Model-level grounding: a fitted model's concepts checked against human concept annotations.

`evaluate_grounding(model, bundle, annotations)` links the model's free-text concepts to the
annotated attributes (`match_concepts`: normalised text first, then the text encoder with a
threshold), then measures
- concept AUROC: for each matched concept, how well the model's activation (`model.transform`)
  separates the images where the attribute holds from those where it does not. Per-image truth
  comes from image-level annotations (rows found by the bundle's ids) or, for class-level ones,
  from each image's class row (`for_classes(...).per_image(labels)`);
- explanation precision@k: the share of each class's top-k positive-weight concepts annotated
  true of that class (and of its top-k negative-weight concepts annotated false), on class-level
  truth. Image-level annotations become class-level by unanimity: an attribute is true (false) of
  a class when every annotated image of that class has it (lacks it), unknown when they differ.

Unmatched concepts have unknown truth (NaN): they are shown, never counted as right or wrong.
`Grounding` holds what a run reuses (annotations, text encoder, matches memoised per text) so the
main run and every few-shot fit are scored the same way; `class_truth` is what fills
`Context.class_truth`. Methods without concepts (zero-shot, linear probe) get None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..annotations import ConceptAnnotations, class_level, load_annotations
from ..data import BUILTIN
from ..data.composite import composite_annotations
from ..errors import DataError
from .measures import MIN_COVERAGE, concept_auroc, explanation_precision, match_concepts

ANNOTATION_NAMES = ("auto", "none", "fashion-mnist")
COMPOSITE = "fashion-mnist-composite"


def _num(x) -> float | None:
    """A JSON-safe number: NaN (undefined) becomes None."""
    x = float(x)
    return None if math.isnan(x) else x


def text_embedder(backbone, cache=None) -> Callable[[list[str]], np.ndarray]:
    """texts -> L2-normalised rows from the backbone's text side (cached like concept texts)."""
    from ..features import encode_texts  # deferred: torch (grounding imports without it)

    def embed(texts: list[str]) -> np.ndarray:
        v = np.asarray(encode_texts(backbone, list(texts), cache), dtype=np.float64)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.where(norms > 0, norms, 1.0)  # a zero row stays zero and match_concepts refuses it

    return embed


EMBEDDERS = EMBED_CHOICES = ("sentence", "backbone", "none")


def matching_embedder(kind: str, backbone=None, cache=None) -> Callable[[list[str]], np.ndarray] | None:
    """The text embedder that matches free-text concepts to annotated attributes.

    "sentence" (default): the offline sentence encoder (all-MiniLM-L6-v2), trained for
    text-to-text similarity; "backbone": the backbone's text side, which is trained to match
    images, not texts (the offline backbone's is ConSE-mixed, so unrelated garment words sit
    near each other: 'sweater' -> 'has short sleeves' at 0.82); "none": normalised text only.
    """
    if kind == "none":
        return None
    if kind == "backbone":
        return text_embedder(backbone, cache)
    if kind == "sentence":
        from ..backbones.text_encoder import cached_sentences  # deferred: torch

        return lambda texts: cached_sentences(list(texts), cache).astype(np.float64)
    raise DataError(f"unknown matching embedder {kind!r}; choose one of {', '.join(EMBEDDERS)}.")


def resolve_annotations(spec: str, dataset_spec: str, data=None) -> ConceptAnnotations | None:
    """The annotations a run or `concepts evaluate` scores against.

    spec: "none" -> None; "auto" -> the built-in Fashion-MNIST attributes for fashion-mnist, the
    composite's own per-image annotations for fashion-mnist-composite (needs the loaded dataset
    `data`), else None; anything else goes to `load_annotations` ("fashion-mnist" or a CSV path).
    """
    if spec == "none":
        return None
    if spec == "auto":
        name = str(dataset_spec).strip()
        if name.casefold() == COMPOSITE or name.casefold().startswith(COMPOSITE + ":"):
            if data is None:
                raise DataError(f"the {COMPOSITE} annotations need the loaded dataset; got none.")
            return composite_annotations(data)
        from ..data.cub import cub_root  # a cub: dataset: its own per-image attributes (#25)

        if data is not None and (root := cub_root(data)) is not None:
            from ..annotations import load_cub

            return load_cub(root)
        if name in BUILTIN:
            spec = "fashion-mnist"
        else:
            return None

    return load_annotations(spec)


def image_truth(annotations: ConceptAnnotations, columns: Sequence[int], ids: Sequence[str] | None,
                labels, class_annotations: ConceptAnnotations | None = None) -> np.ndarray:
    """(n, len(columns)) truth of the annotated attributes `columns` for n images: image level by
    id (an image without annotations is all NaN), class level by the image's class row."""
    cols = np.asarray(columns, dtype=np.intp)
    if annotations.level == "image":
        row = {item: i for i, item in enumerate(annotations.items)}
        out = np.full((len(ids), len(cols)), np.nan)
        hit = [(r, row[str(item)]) for r, item in enumerate(ids) if str(item) in row]
        if hit:
            r, a = map(np.asarray, zip(*hit, strict=True))
            out[r] = np.asarray(annotations.values, dtype=np.float64)[a][:, cols]
        return out
    per = (class_annotations or annotations).per_image(np.asarray(labels).astype(np.int64))
    return np.asarray(per, dtype=np.float64)[:, cols]


def truth_matrix(matches: Sequence[dict], class_annotations: ConceptAnnotations) -> np.ndarray:
    """(m, k) class truth for k free-text concepts: the matched attribute's column, NaN if unmatched."""
    index = {c: j for j, c in enumerate(class_annotations.concepts)}
    values = np.asarray(class_annotations.values, dtype=np.float64)
    out = np.full((values.shape[0], len(matches)), np.nan)
    for j, m in enumerate(matches):
        if m["match"] is not None:
            out[:, j] = values[:, index[m["match"]]]
    return out


def _truth_word(t: float, matched: bool) -> str:
    if not matched:
        return "not annotated"
    return "unknown" if math.isnan(t) else ("true" if t == 1 else "false")


def _top_concepts(weights: np.ndarray, truth: np.ndarray, concepts: Sequence[str], matches: Sequence[dict],
                  k: int, sign: int) -> list[dict]:
    """The concepts `explanation_precision` scores for one class, in its order (stable sort on -s)."""
    s = sign * weights
    order = np.argsort(-s, kind="stable")
    top = order[s[order] > 0][:k]
    return [{"concept": concepts[j], "weight": float(weights[j]), "match": matches[j]["match"],
             "truth": _truth_word(truth[j], matches[j]["match"] is not None)} for j in top]


def grounding_measures(activations, concepts: Sequence[str], classes: Sequence[str], labels,
                       annotations: ConceptAnnotations, *, ids: Sequence[str] | None = None,
                       class_weights=None, class_annotations: ConceptAnnotations | None = None,
                       matches: Sequence[dict] | None = None, embed=None, k: int = 5,
                       threshold: float = 0.8) -> dict:
    """The measures for activations (n, K) of K free-text `concepts` on n images (`labels` into
    `classes`, `ids` for image-level annotations); `class_weights` (m, K) adds precision@k.

    Returns {"concept_auroc" (mean over concepts with a defined AUROC, None if none),
    "concept_auroc_n" (how many), "concept_auroc_per_concept" {matched concept: AUROC or None},
    "n_annotated_concepts" (matched), "n_concepts", "precision_at_k", "negative_precision_at_k"
    (None without weights or scored classes), "n_classes_scored", "k", "matches", "per_class"
    [{"class", "positive": [{concept, weight, match, truth}], "negative": [...]}], "annotations"}.
    """
    a = np.asarray(activations, dtype=np.float64)
    concepts = [str(c) for c in concepts]
    if a.ndim != 2 or a.shape[1] != len(concepts):
        raise DataError(f"activations have shape {a.shape}; expected (images, {len(concepts)} concepts).")
    if len(labels) != a.shape[0] or (ids is not None and len(ids) != a.shape[0]):
        raise DataError(f"{a.shape[0]} activation rows but {len(labels)} labels"
                        + ("" if ids is None else f" and {len(ids)} ids") + ".")
    if class_annotations is None:
        class_annotations = class_level(annotations, classes, ids, labels)
    if tuple(class_annotations.classes) != tuple(map(str, classes)):
        raise DataError(f"class annotations are for {list(class_annotations.classes)[:5]}, not the "
                        f"model's classes {list(classes)[:5]}.")
    if matches is None:
        matches = match_concepts(concepts, annotations.concepts, embed, threshold)
    matches = [dict(m) for m in matches]
    if [m["text"] for m in matches] != concepts:
        raise DataError("matches must list the concepts in order, one each.")

    attr = {c: j for j, c in enumerate(annotations.concepts)}
    matched = [j for j, m in enumerate(matches) if m["match"] is not None]
    per_concept: dict[str, float | None] = {}
    mean, n_defined = None, 0
    if matched:
        truth = image_truth(annotations, [attr[matches[j]["match"]] for j in matched], ids, labels,
                            class_annotations)
        auc = concept_auroc(a[:, matched], truth)
        per_concept = {concepts[j]: _num(v) for j, v in zip(matched, auc["per_concept"], strict=True)}
        mean, n_defined = _num(auc["mean"]), auc["n_defined"]

    out = {"concept_auroc": mean, "concept_auroc_n": n_defined, "concept_auroc_per_concept": per_concept,
           "n_annotated_concepts": len(matched), "n_concepts": len(concepts),
           "precision_at_k": None, "negative_precision_at_k": None,
           "precision_at_k_coverage": None, "precision_at_k_on_covered": None,
           "negative_precision_at_k_coverage": None, "precision_at_k_note": None,
           "n_classes_scored": {"positive": 0, "negative": 0}, "k": int(k), "matches": matches,
           "per_class": [], "annotations": {"provenance": annotations.provenance, "level": annotations.level,
                                            "n_attributes": len(annotations.concepts)}}
    if class_weights is None:
        return out
    w = np.asarray(class_weights, dtype=np.float64)
    ctruth = truth_matrix(matches, class_annotations)
    prec = explanation_precision(w, ctruth, int(k))
    cover = {side: _num(prec["coverage"][side]) for side in ("positive", "negative")}
    out["precision_at_k_on_covered"] = _num(prec["positive"])
    out["precision_at_k_coverage"], out["negative_precision_at_k_coverage"] = cover["positive"], cover["negative"]
    # a headline precision only where at least MIN_COVERAGE of the top-k pairs could be scored
    for side, key in (("positive", "precision_at_k"), ("negative", "negative_precision_at_k")):
        out[key] = _num(prec[side]) if (cover[side] or 0) >= MIN_COVERAGE else None
    if (cover["positive"] or 0) < MIN_COVERAGE:
        out["precision_at_k_note"] = (
            f"not measurable: {prec['n_known']['positive']} of the {prec['n_pairs']['positive']} top-{k} "
            f"(class, concept) pairs have an annotated truth (coverage {cover['positive'] or 0:.2f} < "
            f"{MIN_COVERAGE}); the others match no annotated attribute")
    out["n_classes_scored"] = prec["n_scored"]
    out["per_class"] = [{"class": str(c),
                         "positive": _top_concepts(w[i], ctruth[i], concepts, matches, int(k), 1),
                         "negative": _top_concepts(w[i], ctruth[i], concepts, matches, int(k), -1)}
                        for i, c in enumerate(classes)]
    return out


@dataclass
class Grounding:
    """What a run scores every model against: the annotations (as given), their class-level
    form for the run's classes, the text encoder for matching (or None: text matches only), k
    and the match threshold. Matches are memoised per concept text (a text's match does not
    depend on the other texts), so few-shot fits reuse them."""

    annotations: ConceptAnnotations
    class_annotations: ConceptAnnotations
    embed: Callable[[list[str]], np.ndarray] | None = None
    k: int = 5
    threshold: float = 0.8
    _memo: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, annotations: ConceptAnnotations, classes: Sequence[str], ids=None, labels=None,
              embed=None, k: int = 5, threshold: float = 0.8) -> Grounding:
        return cls(annotations, class_level(annotations, classes, ids, labels), embed, k, threshold)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.class_annotations.classes)

    def for_classes(self, classes: Sequence[str]) -> Grounding:
        """The same grounding for a subset of the classes (e.g. a confounded pair), in that order;
        the memoised matches are shared."""
        return Grounding(self.annotations, self.class_annotations.for_classes(classes), self.embed, self.k,
                         self.threshold, self._memo)

    def match(self, texts: Sequence[str]) -> list[dict]:
        texts = [str(t) for t in texts]
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            for r in match_concepts(new, self.annotations.concepts, self.embed, self.threshold):
                self._memo[r["text"]] = r
        return [dict(self._memo[t]) for t in texts]

    def class_truth(self, texts: Sequence[str]) -> np.ndarray:
        """(m, k) for Context.class_truth: matched attribute's class row, NaN when unmatched."""
        return truth_matrix(self.match(texts), self.class_annotations)

    def evaluate(self, model, bundle) -> dict | None:
        """The measures of a fitted model on `bundle`; None for a method without concepts."""
        from ..methods.tags import get_tags
        if not get_tags(model).needs_concepts:
            return None
        model.check_fitted()
        if tuple(model.classes_) != self.classes:
            raise DataError(f"the model's classes {list(model.classes_)[:5]} differ from the annotated "
                            f"run's {list(self.classes)[:5]}.")
        A, concepts, W = model.transform(bundle), list(model.concepts_), np.asarray(model.class_weights_)
        from ..methods.protocols import HasBottleneck
        kept = model.bottleneck_ if isinstance(model, HasBottleneck) else None
        if kept is not None:  # a bottleneck that dropped concepts (KnoBo): score only what it kept
            kept = np.asarray(kept, dtype=np.int64)
            A, concepts, W = A[:, kept], [concepts[j] for j in kept], W[:, kept]
        return grounding_measures(A, concepts, model.classes_, bundle.labels, self.annotations,
                                  ids=list(bundle.ids), class_weights=W,
                                  class_annotations=self.class_annotations, matches=self.match(concepts),
                                  k=self.k)


def evaluate_grounding(model, bundle, annotations: ConceptAnnotations, embed=None, k: int = 5,
                       threshold: float = 0.8, class_ids: Sequence[str] | None = None,
                       class_labels=None) -> dict | None:
    """Grounding measures of a fitted `model` on a FeatureBundle (see `grounding_measures`).

    Image-level annotations become class-level (for precision@k) from `class_ids`/`class_labels`
    when given (e.g. the whole dataset), else from the bundle's own images. None for a method
    without concepts."""
    from ..methods.tags import get_tags
    if not get_tags(model).needs_concepts:
        return None
    ids, labels = (bundle.ids, bundle.labels) if class_ids is None else (class_ids, class_labels)
    grounding = Grounding.build(annotations, model.classes_, ids, labels, embed, k, threshold)
    return grounding.evaluate(model, bundle)


def row_fields(details: dict | None) -> dict:
    """The flat numbers a results row carries beside accuracy (None: no concepts)."""
    if details is None:
        return {"concept_auroc": None, "concept_auroc_n": 0, "precision_at_k": None,
                "negative_precision_at_k": None, "precision_at_k_coverage": None,
                "precision_at_k_on_covered": None}
    return {key: details.get(key) for key in ("concept_auroc", "concept_auroc_n", "precision_at_k",
                                              "negative_precision_at_k", "precision_at_k_coverage",
                                              "precision_at_k_on_covered")}


def matches_csv(matches: Sequence[Mapping]) -> str:
    """The matches as CSV (text, match, how, similarity, nearest) for a person to check."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["text", "match", "how", "similarity", "nearest"])
    for m in matches:
        sim = m.get("similarity")
        w.writerow([m["text"], m.get("match") or "", m.get("how") or "",
                    "" if sim is None else f"{sim:.4f}", m.get("nearest") or ""])
    return buf.getvalue()

"""Contract suites: what every method, backbone and concept source must do.

    from conceptlens.testing import check_method, check_backbone, check_source

    check_method(MyMethod)                 # a class (registered or not), a registered name or an instance
    check_backbone(my_backbone)            # an instance
    check_source(my_source, ["cat", "dog"])

Each raises AssertionError naming the broken rule (and the method, backbone or source); the
project's tests run them over every registered entry (tests/testing/test_contracts.py), so a new entry is
checked without an edit. Plain asserts and numpy.testing only: usable from any test runner.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

__all__ = ["check_backbone", "check_method", "check_source"]


def _fail(who: str, rule: str, detail: str = "") -> None:
    raise AssertionError(f"{who}: {rule}" + (f" ({detail})" if detail else ""))


# -- methods -------------------------------------------------------------------------------------

def _method_class(method):
    from ..methods import METHODS, Method

    if isinstance(method, str):
        return METHODS.get(method), {}
    if isinstance(method, Method):
        return type(method), method.get_params(deep=False)
    return method, {}


def check_method(method, params: dict | None = None, problem=None, *, min_accuracy: float = 0.6) -> None:
    """Run the method contract on `method` (a Method subclass, a registered name or an unfitted
    instance, whose parameters are used) over `problem` (default: testing.make_problem()), with
    `params` (default: testing.FAST_PARAMS for its name, or the instance's):

    - the registry: a registered name gives back this class;
    - parameters (scikit-learn's rules): the constructor only stores its keyword arguments;
      get_params / set_params round-trip, an unknown name is a ConfigError; sklearn's clone gives an
      unfitted copy with equal parameters;
    - NotFittedError before fit;
    - fit returns the estimator; transform (n, k), decision_function (n, m), class_weights_ (m, k),
      predict_proba rows sum to 1, 0 < nec_ <= k, classes_ the context's; the logits are
      head(transform(x), x) (what makes explanations exact); it beats chance on the toy;
    - save / load round-trip: the same class, parameters, concepts and exactly equal predictions;
    - the tags (methods/tags.py) match what it does: every Context field in `requires` is really
      required (a ConfigError without it), uses_validation=False means `val` changes nothing,
      refit_at_nec means a `target_nec` parameter that reaches that NEC, concept_labelled means no
      fit without concept labels, discovers_concepts declares its discovery_needs and requires
      context.discovery, intervenable / differentiable / takes_video match the protocols
      (Intervenable, TorchForward, VideoModel)."""
    from sklearn.base import clone

    from ..errors import ConceptLensError, ConfigError, NotFittedError
    from ..methods import METHODS, Method
    from ..methods.protocols import Exportable, Intervenable, TorchForward, VideoModel
    from ..methods.tags import MethodTags, get_tags
    from .toy import FAST_PARAMS, make_problem

    cls, own = _method_class(method)
    name = getattr(cls, "name", cls.__name__)
    who = f"method {name!r} ({cls.__name__})"
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        _fail(who, "is not a conceptlens.methods.Method subclass")
    params = dict(own or FAST_PARAMS.get(name, {})) if params is None else dict(params)
    train, val, test, ctx = make_problem() if problem is None else problem
    if name in METHODS and METHODS.get(name) is not cls:
        _fail(who, "its registered name gives another class", repr(METHODS.get(name)))

    # -- tags ------------------------------------------------------------------------------------
    tags = get_tags(cls)
    if not isinstance(cls.tags, MethodTags):
        _fail(who, "declares no MethodTags (tags = replace(Method.tags, ...))")
    for flag in ("needs_concepts", "refit_at_nec", "uses_validation", "discovers_concepts",
                 "concept_labelled", "takes_video", "intervenable", "differentiable"):
        if not isinstance(getattr(tags, flag), bool):
            _fail(who, f"tag {flag} must be a bool", repr(getattr(tags, flag)))
    if tags.discovers_concepts and (not tags.discovery_needs or "discovery" not in tags.requires):
        _fail(who, "discovers_concepts needs discovery_needs and requires=(..., 'discovery')")
    if not tags.discovers_concepts and tags.discovery_needs:
        _fail(who, "declares discovery_needs but not discovers_concepts")

    # -- parameters ------------------------------------------------------------------------------
    defaults = cls().get_params(deep=False)
    sentinels = {k: object() for k in defaults}
    stored = cls(**sentinels).get_params(deep=False)
    if any(stored[k] is not v for k, v in sentinels.items()):
        _fail(who, "the constructor must only store its keyword arguments (scikit-learn's rule)")
    if tags.refit_at_nec and "target_nec" not in defaults:
        _fail(who, "refit_at_nec needs a target_nec constructor parameter")
    model = cls(**params)
    got = model.get_params()
    if model.set_params(**got) is not model or model.get_params() != got:
        _fail(who, "set_params(**get_params()) must return the estimator unchanged")
    try:
        model.set_params(no_such_param=1)
    except ConfigError:
        pass
    else:
        _fail(who, "set_params with an unknown name must raise ConfigError")
    model = cls(**params)
    try:
        model.predict(test)
    except NotFittedError:
        pass
    else:
        _fail(who, "predict before fit must raise NotFittedError")
    if isinstance(model, Intervenable) != tags.intervenable:
        _fail(who, "tag intervenable must match having intervene_concepts (methods.protocols.Intervenable)")
    if isinstance(model, TorchForward) != tags.differentiable:
        _fail(who, "tag differentiable must match having torch_forward() (methods.protocols.TorchForward)")
    if isinstance(model, VideoModel) != tags.takes_video:
        _fail(who, "tag takes_video must match having video_sampling() (methods.protocols.VideoModel)")

    # -- fit and predict -------------------------------------------------------------------------
    if model.fit(train, ctx, val) is not model:
        _fail(who, "fit must return the estimator")
    n, m, k = len(test), len(ctx.classes), len(model.concepts_)
    A, logits = model.transform(test), model.decision_function(test)
    if A.shape != (n, k):
        _fail(who, "transform must be (images, concepts_)", f"{A.shape} != {(n, k)}")
    if logits.shape != (n, m):
        _fail(who, "decision_function must be (images, classes)", f"{logits.shape} != {(n, m)}")
    if np.shape(model.class_weights_) != (m, k):
        _fail(who, "class_weights_ must be (classes, concepts_)", str(np.shape(model.class_weights_)))
    np.testing.assert_allclose(model.head(A, test), logits, rtol=1e-5, atol=1e-5,
                               err_msg=f"{who}: logits must be head(transform(x), x)")
    proba = model.predict_proba(test)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5, err_msg=f"{who}: predict_proba rows must sum to 1")
    if not 0 < model.nec_ <= k:
        _fail(who, "0 < nec_ <= concepts", str(model.nec_))
    if tuple(model.classes_) != tuple(ctx.classes):
        _fail(who, "classes_ must be the context's classes")
    acc = float((model.predict(test) == test.labels).mean())
    if acc <= min_accuracy:
        _fail(who, f"must beat chance on the toy problem (accuracy > {min_accuracy})", f"{acc:.3f}")

    # -- files and clones ------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save(Path(tmp) / "model")
        again = Method.load(folder)
        if type(again) is not type(model) or again.concepts_ != model.concepts_:
            _fail(who, "load(save(model)) must give the same class and concepts")
        np.testing.assert_array_equal(again.decision_function(test), model.decision_function(test),
                                      err_msg=f"{who}: a reloaded model must predict exactly the same")
    if isinstance(model, Exportable):  # its torch module computes what transform/decision_function do
        _check_torch_head(who, model, test, A, logits)
    twin = clone(model)
    if twin.get_params() != model.get_params() or [a for a in vars(twin) if a.endswith("_")]:
        _fail(who, "sklearn.base.clone must give an unfitted copy with equal parameters")

    # -- the tags match the behaviour ------------------------------------------------------------
    for field in tags.requires:
        without = replace(ctx, **{field: None})
        try:
            cls(**params).fit(train, without, val)
        except ConfigError as e:
            if name not in str(e):
                _fail(who, f"the error for a missing context.{field} must name the method", str(e))
        else:
            _fail(who, f"tags.requires names context.{field}, but fit succeeds without it")
        # and the method really needs a field it adds to the base's (concepts and their embeddings,
        # which every concept model is given): with Method.fit's check lifted for it, fit fails
        if field in MethodTags().requires:
            continue
        probe = cls(**params)
        probe.tags = replace(tags, requires=tuple(f for f in tags.requires if f != field))
        try:
            probe.fit(train, without, val)
        except Exception:  # any failure shows the field is needed
            pass
        else:
            _fail(who, f"tags.requires names context.{field}, but fit works without it: drop it")
    if tags.concept_labelled:
        try:
            cls(**params).fit(train, replace(ctx, class_truth=None, concept_truth_by_id=None), val)
        except ConceptLensError:
            pass
        else:
            _fail(who, "concept_labelled, yet fit succeeds without concept labels")
    if not tags.uses_validation:
        without = cls(**params).fit(train, ctx).decision_function(test)
        np.testing.assert_array_equal(model.decision_function(test), without,
                                      err_msg=f"{who}: val changes the fit: declare uses_validation=True")
    if tags.refit_at_nec:
        sparse = cls(**{**params, "target_nec": 2}).fit(train, copy.copy(ctx), val)
        if not 0 < sparse.nec_ <= 2:
            _fail(who, "refit_at_nec: target_nec=2 must give 0 < nec_ <= 2", str(sparse.nec_))


def _check_torch_head(who: str, model, test, A, logits) -> None:
    import torch

    head = model.torch_head()
    x = torch.as_tensor(np.asarray(getattr(test, head.input), np.float32))
    norm = getattr(test, "embedding_norm", None)
    with torch.no_grad():
        a, z = head(x, None if norm is None else torch.as_tensor(np.asarray(norm, np.float32)))
    np.testing.assert_allclose(a.numpy(), A, rtol=1e-4, atol=1e-5,
                               err_msg=f"{who}: torch_head()'s activations must be transform(x)")
    np.testing.assert_allclose(z.numpy(), logits, rtol=1e-4, atol=1e-4,
                               err_msg=f"{who}: torch_head()'s logits must be decision_function(x)")


# -- backbones -----------------------------------------------------------------------------------

def _images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8) for i in range(n)]


def check_backbone(backbone, images=None, texts=("a red crest", "striped fur", "x" * 300)) -> None:
    """Run the backbone contract on an instance: a non-empty `id` and `preprocess_id` (strings,
    stable), `embed_dim` > 0, `encode_images` gives 'embedding' (n, embed_dim) float L2-normalised
    (and 'features' (n, feature_dim) where feature_dim is set, 'embedding_norm' (n,) > 0 where
    given), `encode_texts` (n, embed_dim) L2-normalised in the same space (same width, finite
    cosines to the images), `encode_texts_with_norms` agrees with it, and both are deterministic."""
    from ..backbones import Backbone

    who = f"backbone {getattr(backbone, 'id', type(backbone).__name__)!r}"
    if not isinstance(backbone, Backbone):
        _fail(who, "is not a conceptlens.backbones.Backbone")
    for attr in ("id", "preprocess_id"):
        v = getattr(backbone, attr, None)
        if not isinstance(v, str) or not v:
            _fail(who, f"{attr} must be a non-empty string", repr(v))
    ident, prep = backbone.id, backbone.preprocess_id
    d = backbone.embed_dim
    if not isinstance(d, int | np.integer) or d <= 0:
        _fail(who, "embed_dim must be a positive int", repr(d))
    images = _images() if images is None else list(images)
    out = backbone.encode_images(images)
    emb = np.asarray(out.get("embedding"))
    if emb.shape != (len(images), d):
        _fail(who, "encode_images()['embedding'] must be (images, embed_dim)", str(emb.shape))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-4,
                               err_msg=f"{who}: image embeddings must be L2-normalised")
    if backbone.feature_dim:
        f = np.asarray(out.get("features"))
        if f.shape != (len(images), backbone.feature_dim):
            _fail(who, "encode_images()['features'] must be (images, feature_dim)", str(f.shape))
    if set(backbone.outputs()) - set(out):
        _fail(who, "encode_images must give every output it declares",
              f"{backbone.outputs()} vs {sorted(out)}")
    if "embedding_norm" in out:
        norm = np.asarray(out["embedding_norm"])
        if norm.shape != (len(images),) or not (norm > 0).all():
            _fail(who, "embedding_norm must be (images,) and positive", str(norm.shape))
    again = np.asarray(backbone.encode_images(images)["embedding"])
    np.testing.assert_allclose(again, emb, rtol=1e-5, atol=1e-6,
                               err_msg=f"{who}: encode_images must be deterministic")
    txt = np.asarray(backbone.encode_texts(list(texts)))
    if txt.shape != (len(texts), d):
        _fail(who, "encode_texts must be (texts, embed_dim): text and images in one space",
              str(txt.shape))
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, rtol=1e-4,
                               err_msg=f"{who}: text embeddings must be L2-normalised")
    if not np.isfinite(emb @ txt.T).all():
        _fail(who, "image-text cosines must be finite")
    with_norms, norms = backbone.encode_texts_with_norms(list(texts))
    np.testing.assert_allclose(with_norms, txt, rtol=1e-5, atol=1e-6,
                               err_msg=f"{who}: encode_texts_with_norms must agree with encode_texts")
    if norms is not None and (np.shape(norms) != (len(texts),) or not (np.asarray(norms) > 0).all()):
        _fail(who, "text norms must be (texts,) and positive, or None", str(np.shape(norms)))
    np.testing.assert_allclose(backbone.encode_texts(list(texts)), txt, rtol=1e-5, atol=1e-6,
                               err_msg=f"{who}: encode_texts must be deterministic")
    if (backbone.id, backbone.preprocess_id) != (ident, prep):
        _fail(who, "id and preprocess_id must not change while encoding")


# -- concept sources -----------------------------------------------------------------------------

def check_source(source, classes=("cat", "dog")) -> None:
    """Run the concept-source contract on an instance: `generate(classes)` returns a SourceResult
    holding a ConceptSet, whose concepts name only the given classes, whose unresolved classes are
    given ones; the default blocklist applies to its concepts as a run applies it (the pipeline's
    drop_blocked leaves no blocked text: sources need not filter themselves); and it is
    deterministic (the same concepts, with the same classes, twice)."""
    from ..concepts.blocklist import blocked
    from ..concepts.conceptset import ConceptSet
    from ..concepts.pipeline import drop_blocked
    from ..concepts.sources import SourceResult

    who = f"concept source {getattr(source, 'name', type(source).__name__)!r}"
    classes = list(classes)
    result = source.generate(classes)
    if not isinstance(result, SourceResult) or not isinstance(result.concepts, ConceptSet):
        _fail(who, "generate must return a SourceResult holding a ConceptSet", type(result).__name__)
    foreign = {c for concept in result.concepts for c in concept.classes} - set(classes)
    if foreign:
        _fail(who, "concepts may name only the given classes", str(sorted(foreign)[:5]))
    if set(result.unresolved) - set(classes):
        _fail(who, "unresolved may name only the given classes", str(sorted(result.unresolved)[:5]))
    # a run takes a source's concepts through the pipeline's blocklist (concepts/pipeline.py): what
    # comes out of it is a ConceptSet of the source's concepts without one blocked text
    kept = drop_blocked(result.concepts)
    if not isinstance(kept, ConceptSet) or any(blocked(t) for t in kept.texts) \
            or not set(kept.texts) <= set(result.concepts.texts):
        _fail(who, "the blocklist must apply to its concepts (concepts.pipeline.drop_blocked)")
    again = source.generate(classes)
    first = [(c.text, sorted(c.classes)) for c in result.concepts]
    second = [(c.text, sorted(c.classes)) for c in again.concepts]
    if first != second:
        _fail(who, "generate must be deterministic (the same concepts twice)")

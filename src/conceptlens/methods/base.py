"""The one contract every method follows (scikit-learn style), and save/load.

`fit(train, context, val=None)` returns the estimator. `train`/`val` are FeatureBundles
(image `embedding` in the text space, optional backbone `features`, `labels`);
`context` carries what the language side gives: the concept set, concept and class-prompt
embeddings and the backbone id. Fitted attributes end in `_`. A saved model is a folder:
`model.json` (method, parameters, classes, concepts, backbone id, feature key, version)
and `weights.safetensors`; no pickle.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from .._io import TENSOR_DIGEST_KEY, check_edit_destination, load_tensors, save_tensors, write_json
from .._version import __version__
from ..errors import ConfigError, DataError, NotFittedError, closest
from ..ranking import predict_from_scores
from ..registry import Registry
from ..validation import validate_params
from .absent import fit_absent_values, load_absent_values
from .tags import TAG_NAMES, MethodTags, get_tags, missing_context

log = logging.getLogger("conceptlens")
METHODS: Registry = Registry("method")
FORMAT = "conceptlens.model"
VERSION = 1
FEATURE_KEYS = ("embedding", "features")  # the image inputs a model reads (FeatureBundle attributes)
# a method's `on` parameter: which image input it reads ("auto": features when the backbone has them)
INPUTS = ("auto", "features", "embedding")


@dataclass
class DiscoveryInputs:
    """What methods that find their own concepts (Discover-then-Name, V2C-CBM) read: an
    unlabelled image pool, a word list and the models built from them. The run fills only what
    the configured methods declare in `discovery_needs`."""

    pool_embedding: np.ndarray | None = None  # (n, d) unlabelled images, L2-normalised ("pool")
    pool_norm: np.ndarray | None = None  # (n,) their raw norms where the backbone reports them
    pool_id: str = ""  # fingerprint of the pool (which images, which backbone)
    words: tuple[str, ...] = ()  # naming vocabulary ("words")
    word_embedding: np.ndarray | None = None  # (V, d) plain words, no template, L2-normalised
    sae: object | None = None  # a trained discovery.sae.SparseAutoencoder ("sae")
    codebook_texts: tuple[str, ...] = ()  # V2C's vocabulary ("codebook")
    codebook_embedding: np.ndarray | None = None  # (C, d) mean over templates of unit vectors


@dataclass
class Context:
    """The language side of a run."""

    classes: tuple[str, ...]
    concepts: list[str] = field(default_factory=list)
    concept_embedding: np.ndarray | None = None  # (k, d), L2-normalised
    class_prior: np.ndarray | None = None  # (m, k) 0/1: concept generated for class
    class_embedding: np.ndarray | None = None  # (m, d) class prompt embeddings
    backbone_id: str = ""
    # (k,) norms of the raw concept text embeddings (raw = concept_embedding * norm), for
    # LaBo's unnormalised similarity; None when the backbone or the text cache cannot say
    concept_norm: np.ndarray | None = None
    # (m, k) annotated truth of each concept for each class: 1 true, 0 false, NaN unknown/not
    # annotated; KnoBo's prior P and the grounding measures read it; None when nothing is annotated
    class_truth: np.ndarray | None = None
    discovery: DiscoveryInputs | None = None  # for methods with discovers_concepts
    # per-image concept truth, image id -> (k,) row of 1 / 0 / NaN (unknown) over `concepts`, for
    # methods trained on concept labels (cbm, ecbm); an image not in it takes class_truth[label]
    concept_truth_by_id: dict[str, np.ndarray] | None = None
    # how images were prepared for the backbone (Backbone.preprocess_id): not part of the id, yet
    # other preprocessing changes every embedding, so a model records it and refuses another
    preprocess_id: str = ""
    # the spec that reopens the backbone (Backbone.spec: 'offline', 'hf:/absolute/folder', ...); a
    # model records it, so explain, serve and report reopen its own backbone without --backbone
    backbone_spec: str = ""


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class _TagAlias:
    """`model.needs_concepts` and the like: a read of the method's tags (methods/tags.py), on the
    class or an instance, kept so that code written against the old class flags still works.
    Setting one on an instance replaces that instance's tags; a subclass that sets one as a class
    attribute declares that tag (Method.__init_subclass__)."""

    def __set_name__(self, owner, name):
        self.field = name

    def __get__(self, obj, owner=None):
        return getattr(get_tags(owner if obj is None else obj), self.field)

    def __set__(self, obj, value):
        obj.tags = replace(get_tags(obj), **{self.field: value})


class Method:
    """Base class. Subclasses implement `_fit` and `transform`, declare `_arrays` (the fitted
    array attributes saved to weights.safetensors; optionally `_array_shapes` hints, see
    `_check_arrays`), declare `_parameter_constraints` (every constructor parameter; override
    `_validate` only for checks across parameters) and declare their `tags` (methods/tags.py:
    which Context fields fit requires, whether it uses `val`, ...). Optional abilities are public
    methods typed by methods/protocols.py. Constructors only store their keyword arguments
    (scikit-learn's rule, so `sklearn.base.clone` works); `fit` validates. The registry sets
    `name`. Every method's logits are `head(transform(x))`, which is what makes explanations
    exact."""

    name = "base"
    # what the run, the evaluation, the report and the benchmarks may ask of a method
    tags: ClassVar[MethodTags] = MethodTags()
    # the instance's image input ("embedding" / "features"); a method with an `on` parameter sets
    # it in fit; the class default is tags.input
    input = "embedding"
    # the tags under their old flag names (setting one on an instance changes that instance's tags)
    needs_concepts = _TagAlias()
    refit_at_nec = _TagAlias()
    uses_validation = _TagAlias()
    discovers_concepts = _TagAlias()
    discovery_needs = _TagAlias()
    concept_labelled = _TagAlias()
    grounds_from_links = _TagAlias()
    _arrays: tuple[str, ...] = ()
    # shape hints per array name: a tuple whose entries are an int, "m" (classes), "k" (concepts)
    # or None (any); class_weights_ (m, k) and intercept_ (m,) are always checked
    _array_shapes: ClassVar[dict[str, tuple]] = {}
    # what each constructor parameter may be, as conceptlens.validation constraints (a list: any
    # one will do; None in it allows None), e.g. {"lam": [Interval(float, 0, None)]}; `_validate`
    # checks them at fit, and tests/methods/test_methods.py checks that every parameter has one
    _parameter_constraints: ClassVar[dict[str, list]] = {}
    # an example setting per parameter, shown after a bad value's message ("lam = 7e-4")
    _parameter_examples: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # a subclass that still sets the old flags (needs_concepts = False, ...) declares those tags
        legacy = {n: cls.__dict__[n] for n in TAG_NAMES if n in cls.__dict__
                  and not isinstance(cls.__dict__[n], _TagAlias) and n != "input"}
        if legacy:
            for n in legacy:
                delattr(cls, n)
            tags = replace(cls.tags, **legacy)
            if "requires" not in legacy:  # the old flags implied what fit checked
                base = ("concepts", "concept_embedding")
                kept = tuple(f for f in tags.requires if f not in base)
                if tags.discovers_concepts:
                    tags = replace(tags, requires=tuple(dict.fromkeys((*kept, "discovery"))))
                elif not tags.needs_concepts:
                    tags = replace(tags, requires=kept)
            cls.tags = tags
        if isinstance(cls.__dict__.get("input"), str) and cls.__dict__["input"] != cls.tags.input:
            cls.tags = replace(cls.tags, input=cls.__dict__["input"])  # the old spelling of tags.input
        if "input" not in cls.__dict__:
            cls.input = cls.tags.input

    # -- parameters -------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        """The constructor's keyword arguments: the estimator's parameters."""
        names = []
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must not take *args/**kwargs: "
                                "its parameters are its explicit keyword arguments.")
            names.append(p.name)
        return names

    def get_params(self, deep: bool = True) -> dict:
        out = {}
        for k in self._param_names():
            v = getattr(self, k)
            if deep and hasattr(v, "get_params") and not isinstance(v, type):
                out.update({f"{k}__{kk}": vv for kk, vv in v.get_params().items()})
            out[k] = v
        return out

    def set_params(self, **params) -> Method:
        """Set parameters (no validation: `fit` validates, as in scikit-learn); `inner__p`
        sets parameter p of a nested estimator `inner`."""
        nested = {k: v for k, v in params.items() if "__" in k}
        own = {k: v for k, v in params.items() if "__" not in k}
        _check_param_names(type(self), {**own, **{k.split("__", 1)[0]: None for k in nested}})
        for k, v in own.items():
            setattr(self, k, v)
        for k, v in nested.items():
            outer, inner = k.split("__", 1)
            if not hasattr(getattr(self, outer), "set_params"):
                raise ConfigError(f"{k!r}: parameter {outer!r} of {self.name!r} is not an estimator, so "
                                  f"it has no parameter {inner!r}; set {outer!r} itself.")
            getattr(self, outer).set_params(**{inner: v})
        return self

    def _validate(self) -> None:
        """Check the parameters against `_parameter_constraints`; raise ConfigError naming the
        method, the parameter, what it must be and what it got. A subclass overrides this (calling
        super()._validate() first) only for checks across parameters or beyond a constraint."""
        validate_params(self.name, self.get_params(deep=False), self._parameter_constraints,
                        self._parameter_examples)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params(deep=False).items())
        return f"{type(self).__name__}({args})"

    # -- fitting ----------------------------------------------------------------------
    def fit(self, train, context: Context, val=None) -> Method:
        self._validate()
        self._check_context(context)
        if len(train) == 0:
            raise DataError(f"{self.name}: no training images.")
        self.classes_ = tuple(context.classes)
        self.backbone_id_ = context.backbone_id
        self.preprocess_id_ = context.preprocess_id
        self.backbone_spec_ = getattr(context, "backbone_spec", "") or ""
        self.feature_key_ = self.input
        self._fit(train, context, val)
        try:  # each concept's "absent" value (methods/absent.py), for the explorer's "off"
            self.absent_values_ = fit_absent_values(self, train)
        except NotImplementedError:  # a method without activations has nothing to switch off
            self.absent_values_ = None
        return self

    def _check_context(self, context: Context) -> None:
        """Every Context field the tags' `requires` names must be given (ConfigError otherwise)."""
        from .tags import CONTEXT_FIELD_HINTS

        tags = get_tags(self)
        missing = missing_context(tags, context)
        if not missing:
            return
        if "discovery" in missing:
            raise ConfigError(f"{self.name} finds its own concepts and needs context.discovery "
                              f"({', '.join(tags.discovery_needs)}); a run fills it from [discovery].")
        if {"concepts", "concept_embedding"} & set(missing):
            raise ConfigError(f"{self.name} needs concepts and their embeddings in the context (missing: "
                              f"{', '.join('context.' + f for f in missing)}).")
        f = missing[0]
        raise ConfigError(f"{self.name} needs context.{f} ({CONTEXT_FIELD_HINTS[f]}).")

    def _fit(self, train, context: Context, val) -> None:
        raise NotImplementedError

    def _x(self, bundle) -> np.ndarray:
        x = getattr(bundle, self.input, None)
        if x is None:
            raise DataError(f"{self.name} needs image '{self.input}', which these features lack.")
        return np.asarray(x, dtype=np.float32)

    def check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first.")

    # -- predicting -------------------------------------------------------------------
    def transform(self, bundle) -> np.ndarray:
        """Concept activations (n, k): what the bottleneck sees."""
        raise NotImplementedError

    def decision_function(self, bundle) -> np.ndarray:
        return self.head(self.transform(bundle), bundle)

    # -- the linear head: logits = head_scale * A W^T + intercept + residual --------------
    head_scale = 1.0

    def intercept(self) -> np.ndarray:
        return np.asarray(getattr(self, "intercept_", np.zeros(len(self.classes_))), np.float32)

    def residual(self, bundle) -> np.ndarray | float:
        """Logit terms that do not go through concepts (PCBM-h's residual layer)."""
        return 0.0

    def head(self, activations: np.ndarray, bundle=None) -> np.ndarray:
        """Logits from (possibly edited or intervened) concept activations."""
        out = self.head_scale * activations @ self.class_weights_.T + self.intercept()
        return out + (self.residual(bundle) if bundle is not None else 0.0)

    def predict_proba(self, bundle) -> np.ndarray:
        return softmax(self.decision_function(bundle).astype(np.float64))

    def predict(self, bundle) -> np.ndarray:
        # scikit-learn's tie rule, the one every metric uses, so predictions and accuracy agree
        return predict_from_scores(self.decision_function(bundle))

    @property
    def nec_(self) -> float:
        """Number of effective concepts: mean non-zero concept weights per class."""
        self.check_fitted()
        return float((np.abs(self.class_weights_) > 0).sum(1).mean())

    def check_backbone(self, backbone, how: str = "pass the backbone it was fitted with (--backbone)") -> None:
        """Refuse (ConfigError) a backbone other than the one the model was fitted with: another id,
        or the same model with other preprocessing (image_size, invert, ...), which changes every
        embedding and so the predictions. A model saved before preprocessing was recorded is
        checked on the id alone."""
        self.check_fitted()
        if backbone.id != self.backbone_id_:
            raise ConfigError(f"The model was fitted on features of {self.backbone_id_!r}, but the backbone "
                              f"is {backbone.id!r}; {how}.")
        fitted = getattr(self, "preprocess_id_", "")
        if fitted and backbone.preprocess_id != fitted:
            raise ConfigError(f"The model was fitted on images preprocessed as {fitted!r}, but the backbone "
                              f"{backbone.id!r} preprocesses them as {backbone.preprocess_id!r} (another "
                              f"image_size, invert, ... option); {how}, options included.")

    # -- files ------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write `model.json` and `weights.safetensors` (with a sha256 of the tensor data in its
        metadata, checked by `load`) into `folder`."""
        self.check_fitted()
        folder = Path(folder)
        # an edited model never overwrites the model it was edited from
        check_edit_destination(folder, getattr(self, "derived_from_", None))
        meta = {
            "format": FORMAT, "version": VERSION, "conceptlens": __version__,
            "method": self.name, "params": self.get_params(deep=False),
            "classes": list(self.classes_), "concepts": list(self.concepts_),
            "backbone_id": self.backbone_id_, "preprocess_id": getattr(self, "preprocess_id_", ""),
            "backbone_spec": getattr(self, "backbone_spec_", ""),
            "feature_key": self.feature_key_, "extra": self._extra_state(), "edit_log": list(getattr(self, "edit_log_", [])),
        }
        absent = getattr(self, "absent_values_", None)
        if absent is not None:  # methods/absent.py; a folder without it still loads
            meta["absent_values"] = [float(v) for v in absent]
        arrays = {k: np.ascontiguousarray(getattr(self, k)) for k in self._saved_arrays()}
        save_tensors(folder / "weights.safetensors", arrays)
        write_json(folder / "model.json", meta)
        return folder

    def _extra_state(self) -> dict:
        return {}

    def _load_extra(self, extra: dict) -> None:
        pass

    def _saved_arrays(self) -> tuple[str, ...]:
        """The declared arrays, plus an intercept_ that an NEC protocol's new final layer gave
        a method that has none of its own (LaBo, CMS, zero-shot)."""
        extra = ("intercept_",) if "intercept_" not in self._arrays and hasattr(self, "intercept_") else ()
        return (*self._arrays, *extra)

    def _check_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        """The weights file must hold exactly the declared `_arrays`, finite, with the shapes
        the model's classes (m) and concepts (k) imply; raise DataError naming the file."""
        names, declared = set(arrays), set(self._arrays)
        if "intercept_" in names:  # optional for every method (see _saved_arrays)
            declared.add("intercept_")
        if names != declared:
            raise DataError(
                f"{where} does not hold the arrays a {self.name!r} model has: unexpected "
                f"{sorted(names - declared)}, missing {sorted(declared - names)}; expected "
                f"{sorted(declared)}. Re-save the model with this version of conceptlens.")
        dims = {"m": len(self.classes_), "k": len(self.concepts_)}
        shapes = {"class_weights_": ("m", "k"), "intercept_": ("m",), **self._array_shapes}
        for name, a in arrays.items():
            if a.dtype.kind not in "fiub":
                raise DataError(f"{where}: array {name!r} has dtype {a.dtype}; expected numbers.")
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise DataError(f"{where}: array {name!r} has {int((~np.isfinite(a)).sum())} "
                                "non-finite value(s) (NaN or inf); the model file is damaged.")
            want = shapes.get(name)
            if want is not None:
                expected = tuple(dims.get(d, d) if isinstance(d, str) else d for d in want)
                if len(a.shape) != len(expected) or any(
                        e is not None and e != got for e, got in zip(expected, a.shape, strict=True)):
                    raise DataError(
                        f"{where}: array {name!r} has shape {a.shape}; expected "
                        f"{tuple('any' if e is None else e for e in expected)} for "
                        f"{dims['m']} classes and {dims['k']} concepts in model.json.")

    @staticmethod
    def load(folder: str | Path) -> Method:
        """A saved model; a damaged, tampered or inconsistent folder raises DataError naming the
        file. model.json sets only the parameters (validated), the names and the ids; arrays
        come only from the declared `_arrays` in the verified weights file."""
        folder = Path(folder)
        where = folder / "model.json"
        try:
            meta = json.loads(where.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{folder} is not a saved conceptlens model: {e}.") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DataError(f"{where} is not a conceptlens model of version {VERSION}.")
        _check_meta(meta, where)
        try:
            model = check_params(meta["method"], meta["params"])
        except ConfigError as e:
            raise DataError(f"{where}: {e}") from e
        model.classes_ = tuple(meta["classes"])
        model.concepts_ = list(meta["concepts"])
        model.backbone_id_ = meta["backbone_id"]
        model.preprocess_id_ = meta.get("preprocess_id", "")  # "" = saved before it was recorded
        model.backbone_spec_ = meta.get("backbone_spec", "")  # "" = saved before it was recorded
        model.feature_key_ = meta["feature_key"]
        arrays, file_meta = load_tensors(folder / "weights.safetensors", require_digest=False)
        if TENSOR_DIGEST_KEY not in file_meta:  # saved before checksums: still loadable
            log.warning("%s has no checksum (saved by an older conceptlens); its integrity is not "
                        "verified. Save the model again to add one.", folder / "weights.safetensors")
        model._check_arrays(arrays, str(folder / "weights.safetensors"))
        for k, v in arrays.items():
            setattr(model, k, v)
        try:
            model._load_extra(meta.get("extra", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: bad 'extra' state for {model.name!r}: {e!r}.") from e
        model.edit_log_ = list(meta.get("edit_log", []))
        model.absent_values_ = load_absent_values(meta.get("absent_values"), len(model.concepts_), where)
        model.loaded_from_ = folder.resolve()  # not saved: lets an edit refuse to overwrite it
        return model


def _check_meta(meta: dict, where: Path) -> None:
    """Types of model.json's fields (anything else in it is ignored)."""
    def strings(v):
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    checks = {
        "method": lambda v: isinstance(v, str), "params": lambda v: isinstance(v, dict),
        "classes": strings, "concepts": strings, "backbone_id": lambda v: isinstance(v, str),
        "feature_key": lambda v: v in FEATURE_KEYS,
        "extra": lambda v: isinstance(v, dict), "edit_log": lambda v: isinstance(v, list),
        "preprocess_id": lambda v: isinstance(v, str), "backbone_spec": lambda v: isinstance(v, str),
    }
    optional = {"extra", "edit_log", "preprocess_id", "backbone_spec"}
    for key, ok in checks.items():
        if key not in meta and key in optional:
            continue
        if key not in meta or not ok(meta[key]):
            raise DataError(f"{where}: field {key!r} is missing or invalid (got "
                            f"{str(meta.get(key))[:80]!r}); the file is damaged or was not written "
                            "by conceptlens.")
    if not meta["classes"]:
        raise DataError(f"{where}: a model needs at least one class; got none.")


def _method_class(method: str | type) -> type:
    return METHODS.get(method) if isinstance(method, str) else method


def _check_param_names(cls: type, params: dict) -> None:
    valid = cls._param_names()
    unknown = [k for k in params if k not in valid]
    if unknown:
        hint = "".join(closest(k, valid) for k in unknown[:1])
        raise ConfigError(
            f"Unknown parameter(s) {unknown} for method {cls.name!r}.{hint} "
            f"Valid parameters: {', '.join(valid) or '(none)'}.")


def check_params(method: str | type, params: dict) -> Method:
    """Check a method's parameters before any work: unknown names and bad values raise
    ConfigError. Returns the (unfitted) estimator."""
    cls = _method_class(method)
    _check_param_names(cls, params)
    model = cls(**params)
    model._validate()
    return model


def get_method(name: str, **params) -> Method:
    """An unfitted estimator; unknown parameter names raise ConfigError (values are checked
    by fit, or up front by `check_params`)."""
    cls = _method_class(name)
    _check_param_names(cls, params)
    return cls(**params)

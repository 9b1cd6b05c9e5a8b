"""scikit-learn estimators on precomputed embeddings: any registered method as a classifier with
`fit(X, y)`.

`X` is an (n, d) array of image embeddings in the text space of the backbone that embedded the
concepts (what `conceptlens encode` or any CLIP-like model gives); the concept set and its text
embeddings are estimator parameters, so `Pipeline`, `GridSearchCV`, `cross_val_score`, `clone`
and `is_classifier` work as for any scikit-learn classifier::

    from sklearn.model_selection import GridSearchCV
    from conceptlens.sklearn import ConceptBottleneckClassifier

    cbm = ConceptBottleneckClassifier("label_free", concept_embeddings=C, concepts=texts, steps=200)
    search = GridSearchCV(cbm, {"lam": [1e-4, 1e-3, 1e-2]}, cv=3).fit(X, y)
    search.best_estimator_.concepts_          # the concepts the best model kept

The method's own parameters (`lam`, `steps`, `target_nec`, ... of `conceptlens.methods.LabelFree`)
are keyword arguments of the estimator and estimator parameters in every scikit-learn sense
(`get_params`, `set_params`, grid keys, `Pipeline`'s `step__lam`). The fitted method is
`model_` (a `conceptlens.methods.Method`: `save`, explanations, interventions and edits work on
it, given a FeatureBundle).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .features import FeatureBundle
from .methods import METHODS, Context, Method
from .methods.tags import get_tags

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

__all__ = ["ConceptBottleneckClassifier"]

IDENTITY = "identity"  # concept_embeddings="identity": each embedding dimension is a concept


def _method_class(method) -> type[Method]:
    if isinstance(method, type) and issubclass(method, Method):
        return method
    if isinstance(method, Method):
        return type(method)
    return METHODS.get(method)


class ConceptBottleneckClassifier(ClassifierMixin, BaseEstimator):
    """A conceptlens method as a scikit-learn classifier on precomputed image embeddings.

    Parameters
    ----------
    method : str, default 'label_free'
        A registered method name (`conceptlens.methods.METHODS.names()`: 'label_free', 'labo',
        'posthoc', 'linear_probe', ...) or a Method subclass.
    concept_embeddings : array of shape (k, d), 'identity' or None, default None
        The concepts' text embeddings, in the space of `X` (rows L2-normalised here when
        `normalize`). 'identity': each of the d embedding dimensions is a concept (named
        'dim 0', 'dim 1', ...). None: no concepts (only for methods that need none:
        'linear_probe', 'zero_shot').
    concepts : sequence of str or None, default None
        The concept texts, one per row of `concept_embeddings` (None: 'concept 0', 'concept 1', ...).
    class_embeddings : array of shape (m, d) or None, default None
        Class-prompt text embeddings ('a photo of a {class}.'), one row per class in the order of
        `classes_` (the sorted labels); needed by 'zero_shot' and used by 'labo'.
    class_prior : array of shape (m, k) or None, default None
        1 where a concept was generated for a class (rows in `classes_` order); needed by LaBo's
        and KnoBo's initialisation and by `class_consistent` heads.
    backbone_id : str, default ''
        The id of the backbone that made the embeddings, recorded in `model_` (so a saved model
        refuses features of another backbone).
    normalize : bool, default True
        L2-normalise the rows of `X` (and of the concept and class embeddings), as the pipeline
        does with every embedding; a zero row stays zero.
    **method_params
        The method's own parameters (see its class, e.g. `help(conceptlens.methods.LabelFree)`).

    Attributes
    ----------
    model_ : conceptlens.methods.Method
        The fitted method (its `classes_` are the string forms of `classes_`).
    classes_ : ndarray of shape (m,)
        The class labels, sorted (as `numpy.unique(y)`).
    concepts_ : list of str
        The concepts the fitted model weighs (a method may drop some, as Label-free's cutoff does).
    class_weights_ : ndarray of shape (m, k)
        The final layer's weights over `concepts_`.
    n_features_in_ : int
        The embedding dimension d.
    """

    _estimator_type = "classifier"  # scikit-learn < 1.6 reads it

    def __init__(self, method="label_free", concept_embeddings=None, concepts=None,
                 class_embeddings=None, class_prior=None, backbone_id="", normalize=True,
                 **method_params):
        self.method = method
        self.concept_embeddings = concept_embeddings
        self.concepts = concepts
        self.class_embeddings = class_embeddings
        self.class_prior = class_prior
        self.backbone_id = backbone_id
        self.normalize = normalize
        # private, so scikit-learn's "init stores only its parameters" check holds; get_params
        # reports them as parameters
        self._method_params = dict(method_params)

    # -- parameters: the constructor's, plus the method's keyword arguments ----------------------
    def get_params(self, deep=True):
        out = super().get_params(deep=deep)
        for k, v in self._method_params.items():
            out[k] = v
            if deep and hasattr(v, "get_params") and not isinstance(v, type):
                out.update({f"{k}__{kk}": vv for kk, vv in v.get_params().items()})
        return out

    def set_params(self, **params):
        """Set parameters; a method parameter (`lam`, `steps`, ...) may be set whether or not it
        was given to the constructor."""
        if "method" in params:
            self.method = params["method"]
        own = set(self._get_param_names())
        unknown = [k for k in params if k.split("__", 1)[0] not in own | set(self._method_params)]
        if unknown:
            try:
                valid = set(_method_class(self.method)._param_names())
            except Exception:  # an invalid `method`: fit reports it
                valid = set()
            for k in unknown:
                name = k.split("__", 1)[0]
                if name not in valid:
                    raise ValueError(f"Invalid parameter {name!r} for estimator {self}: not a parameter "
                                     f"of the estimator nor of method {self.method!r}. Valid: "
                                     f"{sorted(own | valid)}.")
                self._method_params.setdefault(name, None)
        nested = {}
        for k, v in params.items():
            name, _, sub = k.partition("__")
            if sub:
                nested.setdefault(name, {})[sub] = v
            elif name in own:
                setattr(self, name, v)
            else:
                self._method_params[name] = v
        for name, sub in nested.items():
            target = getattr(self, name) if name in own else self._method_params[name]
            target.set_params(**sub)
        return self

    def __getattr__(self, name):
        # est.lam reads a method parameter (never called for the attributes set in __init__)
        if name.startswith("_") or "_method_params" not in self.__dict__:
            raise AttributeError(name)
        try:
            return self.__dict__["_method_params"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"allow_nan": False, "multilabel": False}

    # -- fitting ---------------------------------------------------------------------------------
    def _method(self) -> Method:
        cls = _method_class(self.method)
        params = {k: v for k, v in self._method_params.items()}
        if isinstance(self.method, Method):  # an instance: its parameters, overridden by ours
            params = {**self.method.get_params(deep=False), **params}
        return cls(**params)

    def _rows(self, a) -> np.ndarray:
        a = np.array(a, dtype=np.float32)  # a copy: read-only input stays untouched
        if self.normalize and a.ndim == 2:
            norm = np.linalg.norm(a, axis=1, keepdims=True)
            a = a / np.where(norm > 0, norm, 1.0)
        return a

    def _bundle(self, X, labels=None) -> FeatureBundle:
        X = self._rows(X)
        labels = np.zeros(len(X), np.int64) if labels is None else labels
        return FeatureBundle([str(i) for i in range(len(X))], labels, self._class_names, X, None,
                             self.backbone_id)

    def _context(self, model: Method, d: int) -> Context:
        m = len(self._class_names)
        tags = get_tags(model)
        C, texts = self.concept_embeddings, self.concepts
        if isinstance(C, str) and C == IDENTITY:
            C = np.eye(d, dtype=np.float32)
            texts = [f"dim {i}" for i in range(d)] if texts is None else texts
        if C is None:
            if tags.needs_concepts and not tags.discovers_concepts:
                raise ValueError(f"method {model.name!r} needs concepts: pass concept_embeddings (k, {d}) "
                                 "and their concepts texts, or concept_embeddings='identity'.")
            concepts, C = [], None
        else:
            C = self._rows(C)
            if C.ndim != 2 or C.shape[1] != d:
                raise ValueError(f"concept_embeddings must have shape (k, {d}) to match X's {d} features; "
                                 f"got {C.shape}.")
            concepts = [f"concept {i}" for i in range(len(C))] if texts is None else [str(t) for t in texts]
            if len(concepts) != len(C):
                raise ValueError(f"{len(concepts)} concepts for {len(C)} concept embeddings; they must be "
                                 "equally many.")
        class_emb = None if self.class_embeddings is None else self._rows(self.class_embeddings)
        if class_emb is not None and class_emb.shape != (m, d):
            raise ValueError(f"class_embeddings must have shape ({m}, {d}) (classes_ x features); got "
                             f"{class_emb.shape}.")
        prior = None if self.class_prior is None else np.asarray(self.class_prior, np.float32)
        if prior is not None and (C is None or prior.shape != (m, len(C))):
            raise ValueError(f"class_prior must have shape ({m}, k) (classes_ x concepts); got {prior.shape}.")
        return Context(tuple(self._class_names), concepts, C, prior, class_emb, self.backbone_id)

    def fit(self, X, y):
        """Fit the method on embeddings `X` (n, d) and labels `y` (n,)."""
        X, y = _validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes; got 1 class "
                             f"({self.classes_[0]!r}).")
        self._class_names = tuple(str(c) for c in self.classes_)
        if len(set(self._class_names)) != len(self._class_names):
            raise ValueError("two labels have the same string form; use distinct labels.")
        model = self._method()
        context = self._context(model, X.shape[1])
        model.fit(self._bundle(X, labels.astype(np.int64)), context)
        self.model_ = model
        self.concepts_ = list(model.concepts_)
        self.class_weights_ = np.asarray(model.class_weights_)
        return self

    # -- predicting ------------------------------------------------------------------------------
    def _check(self, X) -> FeatureBundle:
        check_is_fitted(self, "model_")
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self._bundle(X)

    def _logits(self, X) -> np.ndarray:
        b = self._check(X)
        return np.asarray(self.model_.decision_function(b), dtype=np.float64)

    def decision_function(self, X):
        """Class logits (n, m); for two classes, the (n,) logit of classes_[1] minus classes_[0]."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        """The softmax of the logits (n, m)."""
        b = self._check(X)
        return np.asarray(self.model_.predict_proba(b), dtype=np.float64)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The labels (from `classes_`) of the highest logits (ties: the first class)."""
        b = self._check(X)
        return self.classes_[np.asarray(self.model_.predict(b))]

    def concept_activations(self, X):
        """What the bottleneck sees: the concept activations (n, k) over `concepts_`."""
        b = self._check(X)
        return np.asarray(self.model_.transform(b))

    def bundle(self, X, y=None) -> FeatureBundle:
        """`X` (and labels `y` from `classes_`) as the FeatureBundle that `model_`, `conceptlens.explain`
        and `conceptlens.intervene` take."""
        b = self._check(X)
        if y is not None:
            b.labels = np.searchsorted(self.classes_, np.asarray(y))
        return b

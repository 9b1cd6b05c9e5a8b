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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write, write_json
from ..errors import ConfigError, DataError, NotFittedError
from ..registry import Registry

METHODS: Registry = Registry("method")
FORMAT = "conceptlens.model"
VERSION = 1


@dataclass
class Context:
    """The language side of a run."""

    classes: tuple[str, ...]
    concepts: list[str] = field(default_factory=list)
    concept_embedding: np.ndarray | None = None  # (k, d), L2-normalised
    class_prior: np.ndarray | None = None  # (m, k) 0/1: concept generated for class
    class_embedding: np.ndarray | None = None  # (m, d) class prompt embeddings
    backbone_id: str = ""


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


class Method:
    """Base class. Subclasses set `name`, `input` ('embedding' or 'features'), `_arrays`
    (fitted array attributes to save) and implement `_fit` and `transform`; every method's
    logits are `head(transform(x))`, which is what makes explanations exact."""

    name = "base"
    input = "embedding"
    needs_concepts = True
    _arrays: tuple[str, ...] = ()

    # -- parameters -------------------------------------------------------------------
    def get_params(self) -> dict:
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitting ----------------------------------------------------------------------
    def fit(self, train, context: Context, val=None) -> Method:
        if self.needs_concepts and (context.concept_embedding is None or not len(context.concepts)):
            raise ConfigError(f"{self.name} needs concepts and their embeddings in the context.")
        if len(train) == 0:
            raise DataError(f"{self.name}: no training images.")
        self.classes_ = tuple(context.classes)
        self.backbone_id_ = context.backbone_id
        self.feature_key_ = self.input
        self._fit(train, context, val)
        return self

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
        return self.decision_function(bundle).argmax(1)

    @property
    def nec_(self) -> float:
        """Number of effective concepts: mean non-zero concept weights per class."""
        self.check_fitted()
        return float((np.abs(self.class_weights_) > 0).sum(1).mean())

    # -- files ------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        from .. import __version__

        self.check_fitted()
        folder = Path(folder)
        meta = {
            "format": FORMAT, "version": VERSION, "conceptlens": __version__,
            "method": self.name, "params": self.get_params(), "classes": list(self.classes_),
            "concepts": list(self.concepts_), "backbone_id": self.backbone_id_,
            "feature_key": self.feature_key_, "extra": self._extra_state(),
            "edit_log": list(getattr(self, "edit_log_", [])),
        }
        arrays = {k: np.ascontiguousarray(getattr(self, k)) for k in self._arrays}
        atomic_write(folder / "weights.safetensors", lambda p: save_file(arrays, str(p)))
        write_json(folder / "model.json", meta)
        return folder

    def _extra_state(self) -> dict:
        return {}

    def _load_extra(self, extra: dict) -> None:
        pass

    @staticmethod
    def load(folder: str | Path) -> Method:
        from safetensors.numpy import load_file

        folder = Path(folder)
        try:
            meta = json.loads((folder / "model.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{folder} is not a saved conceptlens model: {e}.") from e
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DataError(f"{folder}/model.json is not a conceptlens model of version {VERSION}.")
        model = METHODS.get(meta["method"])(**meta["params"])
        for k, v in load_file(str(folder / "weights.safetensors")).items():
            setattr(model, k, v)
        model.classes_ = tuple(meta["classes"])
        model.concepts_ = list(meta["concepts"])
        model.backbone_id_ = meta["backbone_id"]
        model.feature_key_ = meta["feature_key"]
        model._load_extra(meta.get("extra", {}))
        model.edit_log_ = list(meta.get("edit_log", []))
        return model


def get_method(name: str, **params) -> Method:
    return METHODS.get(name)(**params)

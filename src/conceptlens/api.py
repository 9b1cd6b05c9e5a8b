"""The notebook user's estimator: images and labels in, a fitted concept bottleneck out.

`ImageConceptClassifier.fit(images, labels)` does what a run does with its defaults (runs/config.py,
runs/experiment.py, reused, not repeated): encode the images with the backbone, build the candidate
concepts from the [concepts] sources (WordNet by default), filter them (Label-free CBM's filters)
and select them per class, build the Context, fit the method. `images` are file paths, PIL
images, uint8 arrays (one (N, H, W[, 3]) array or a list of equal-sized (H, W[, 3]) ones) or a
conceptlens `ImageDataset` (its labels are used when `labels` is None)::

    from conceptlens import ImageConceptClassifier
    clf = ImageConceptClassifier("label_free", backbone="offline").fit(paths, labels)
    clf.predict(new_paths), clf.concepts_, clf.model_.save("my_model")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backbones import Backbone, open_backbone
from .concepts import ConceptSet
from .data import ImageDataset
from .data.images import ArrayImages, FileImages
from .errors import DataError
from .features import encode_dataset
from .features.encode import image_cache
from .methods import make_method
from .methods.tags import get_tags
from .runs.config import RunConfig
from .runs.experiment import build_candidates, build_context, concepts_from, text_filters

__all__ = ["ImageConceptClassifier", "as_dataset"]


def as_dataset(images, labels=None, classes=None, name: str = "images") -> ImageDataset:
    """`images` (paths, PIL images, uint8 arrays or an ImageDataset) and `labels` (class names or
    indices into `classes`; None: all 0) as an ImageDataset."""
    if isinstance(images, ImageDataset):
        return images
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        store = ArrayImages(images)
        n = len(images)
    else:
        items = list(images)
        n = len(items)
        if all(isinstance(i, (str, Path)) for i in items):
            store = FileImages(items)
        else:
            arrays = [np.asarray(i.convert("RGB")) if hasattr(i, "convert") else np.asarray(i) for i in items]
            if len({a.shape for a in arrays}) > 1:
                raise DataError("In-memory images must all have one size (resize them, or save them as "
                                f"files); got sizes {sorted({a.shape for a in arrays})[:3]}.")
            store = ArrayImages(np.stack(arrays).astype(np.uint8))
    if labels is None:
        idx, classes = np.zeros(n, np.int64), tuple(classes or ("unlabelled",))
    else:
        labels = np.asarray(labels)
        if classes is None:
            classes = tuple(str(c) for c in np.unique(labels))
        classes = tuple(classes)
        if labels.dtype.kind in "iu":
            idx = labels.astype(np.int64)
        else:
            names = [str(v) for v in labels]
            unknown = sorted(set(names) - set(classes))
            if unknown:
                raise DataError(f"labels {unknown[:3]} are not among the classes {list(classes)}.")
            idx = np.array([classes.index(v) for v in names], np.int64)
    return ImageDataset(name, classes, idx, tuple(str(i) for i in range(n)), store)


class ImageConceptClassifier:
    """encode -> concepts -> fit with a run's defaults, on images.

    Parameters
    ----------
    method : str, default 'label_free'
        A registered method (or a run-config alias, methods/aliases.py).
    backbone : str or Backbone, default 'offline'
        A backbone spec ('offline', 'hf:...', 'open_clip:...') or a Backbone.
    concepts : ConceptSet, list of str, dict class -> list of str, or None, default None
        The concept set as given (no filter, no selection); None: the run's [concepts] defaults
        (`concept_config`): generated from the sources, filtered and selected on the training images.
    concept_config : runs.config.ConceptConfig or None, default None
        The [concepts] section used when `concepts` is None (None: its defaults).
    cache_dir : str or None, default None
        The feature cache's root (as `--cache-dir`; None: the user cache).
    seed : int, default 0
        The concept selection's seed.
    progress : bool, default False
        Show the encoding's progress bars.
    **method_params
        The method's parameters.
    """

    def __init__(self, method="label_free", backbone="offline", concepts=None, concept_config=None,
                 cache_dir=None, seed=0, progress=False, **method_params):
        self.method, self.backbone, self.concepts, self.concept_config = method, backbone, concepts, concept_config
        self.cache_dir, self.seed, self.progress, self.method_params = cache_dir, seed, progress, method_params

    def _open(self) -> Backbone:
        if not isinstance(self.backbone, str):
            return self.backbone
        return open_backbone(self.backbone, self.cache_dir)

    def _cache_root(self):
        return None if self.cache_dir is None else Path(self.cache_dir) / "features"

    def _encode(self, dataset: ImageDataset):
        return encode_dataset(self.backbone_, dataset, image_cache(self.backbone_, self._cache_root()),
                              progress=self.progress)

    def fit(self, images, labels=None, classes=None, val=None, val_labels=None):
        """Fit on `images` and `labels` (optional validation images `val`, `val_labels`)."""
        data = as_dataset(images, labels, classes)
        self.backbone_ = self._open()
        self.classes_ = data.classes
        train = self._encode(data)
        held = None if val is None else self._encode(as_dataset(val, val_labels, data.classes))
        model = make_method(self.method, dict(self.method_params))
        cache_root = self._cache_root()
        selected = None
        tags = get_tags(model)
        if tags.needs_concepts and not tags.discovers_concepts:
            if self.concepts is not None:
                selected = ConceptSet.from_user(self.concepts, data.classes)
            else:
                cfg = RunConfig(backbone=getattr(self.backbone_, "id", "offline"), cache_dir=self.cache_dir)
                if self.concept_config is not None:
                    cfg.concepts = self.concept_config
                candidates = build_candidates(cfg, data.classes)
                texts = text_filters(cfg, candidates, self.backbone_, data.classes, cache_root)
                _, selected = concepts_from(cfg, texts, self.backbone_, train, cache_root, self.seed)
        self.context_ = build_context(self.backbone_, data.classes, selected, cache_root)
        self.model_ = model.fit(train, self.context_, held)
        self.concepts_ = list(model.concepts_)
        return self

    def features(self, images):
        """The FeatureBundle of `images` (what `model_`, explain and intervene take)."""
        return self._encode(as_dataset(images, classes=self.classes_))

    def predict(self, images) -> list[str]:
        """Class names."""
        return [self.classes_[i] for i in self.model_.predict(self.features(images))]

    def predict_proba(self, images) -> np.ndarray:
        return self.model_.predict_proba(self.features(images))

    def score(self, images, labels) -> float:
        return float(np.mean(np.array(self.predict(images)) == np.array([str(v) for v in labels])))

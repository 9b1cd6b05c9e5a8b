"""Deterministic, stratified splits and k-shot sampling.

`split_indices` carves train/val/test per class with the given fractions (a run's [data]
train_fraction/val_fraction/test_fraction, 70/10/20 by default), keeping a split the data
came with (Fashion-MNIST's official test set, a manifest's `split` column) unless told not to.
`take_splits` then draws a run's per-class sizes from each split, with an error that names
the split and the config key when a split is too small.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import ImageDataset


def _class_permutations(labels: np.ndarray, n_classes: int, seed: int) -> list[np.ndarray]:
    # one generator per class, seeded by (seed, class): adding a class never reshuffles others
    return [
        np.flatnonzero(labels == c)[np.random.default_rng([seed, c]).permutation((labels == c).sum())]
        for c in range(n_classes)
    ]


def split_indices(
    dataset: ImageDataset, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
    use_given: bool = True,
) -> dict[str, np.ndarray]:
    """Indices of train/val/test, stratified per class and fixed by `seed`.

    A split the data came with (Fashion-MNIST's official test set, a manifest's column) is
    kept unless `use_given` is False; what is missing is carved out of train with the given
    fractions (of the images without a given split). Fewer than two classes, or a class with
    no training image (when there are training images), is a DataError.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 <= frac < 1:
            raise ConfigError(f"{name} must be a number in [0, 1); got {frac!r}.")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"val_fraction + test_fraction must be below 1 (the rest is train); got "
                          f"{val_fraction} + {test_fraction}.")
    if not use_given and dataset.split is not None:
        dataset = dataclasses.replace(dataset, split=None)
    n = len(dataset)
    present = np.unique(dataset.labels)
    if len(present) < 2:
        found = ", ".join(repr(dataset.classes[c]) for c in present) or "none"
        raise DataError(
            f"Dataset {dataset.name!r} needs at least 2 classes to split and train on; found "
            f"{len(present)}: {found}. Add images of other classes."
        )
    given = np.asarray(dataset.split if dataset.split is not None else [""] * n)
    out = {s: np.flatnonzero(given == s) for s in ("train", "val", "test")}
    if dataset.split is None:
        out["train"] = np.arange(n)
    pool = out["train"]
    carve = [(s, f) for s, f in (("test", test_fraction), ("val", val_fraction)) if not len(out[s])]
    if carve:
        labels = dataset.labels[pool]
        parts: dict[str, list[np.ndarray]] = {s: [] for s, _ in carve} | {"train": []}
        for idx in _class_permutations(labels, len(dataset.classes), seed):
            start = 0
            for s, f in carve:
                # round per class so small classes still get one item in each split
                k = round(len(idx) * f)
                if f > 0 and len(idx) - start > 1:
                    k = max(k, 1)
                parts[s].append(idx[start : start + k])
                start += k
            parts["train"].append(idx[start:])
        for s, chunks in parts.items():
            out[s] = pool[np.concatenate(chunks)]
    out = {s: np.sort(v).astype(np.int64) for s, v in out.items()}
    # a class with images but none to train on cannot be learnt, only scored as wrong. (No
    # train split at all is an evaluation-only dataset, e.g. a test-only manifest: allowed.)
    untrained = sorted(set(present.tolist()) - set(dataset.labels[out["train"]].tolist()))
    if untrained and len(out["train"]):
        names = ", ".join(repr(dataset.classes[c]) for c in untrained)
        how = ("give each some 'train' rows in the split column" if dataset.split is not None
               else "lower val_fraction/test_fraction or add images")
        raise DataError(
            f"Dataset {dataset.name!r}: class(es) {names} have no image in the train split; "
            f"{how}."
        )
    return out


def few_shot(
    dataset: ImageDataset, indices: np.ndarray, shots: int | str, seed: int = 0,
    split: str | None = None,
) -> np.ndarray:
    """`shots` items per class from `indices` (or all of them for 'all').

    Each class's items are permuted by a generator seeded with (seed, class) and the first
    `shots` are taken, so the 1-shot set lies inside the 2-shot set, and so on: comparisons
    across shot counts differ only by the added images. `split` ("train", "val", "test")
    names the split in the error when a class has too few images (default: shots of training
    images).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if shots == "all":
        return np.sort(indices)
    if not isinstance(shots, int | np.integer) or shots < 1:
        raise ConfigError(f"shots must be a positive integer or 'all'; got {shots!r}.")
    labels = dataset.labels[indices]
    chosen = []
    for c, idx in enumerate(_class_permutations(labels, len(dataset.classes), seed)):
        if len(idx) < shots:
            if split is None:
                raise DataError(
                    f"Class {dataset.classes[c]!r} has {len(idx)} training image(s), fewer than "
                    f"{shots} shots; lower the shots or add images."
                )
            raise DataError(
                f"Class {dataset.classes[c]!r} has {len(idx)} image(s) in the {split} split, fewer "
                f"than the {shots} asked for ([data] {split}_per_class = {shots}). Lower "
                f"{split}_per_class (0 = every image of the split), raise [data] {split}_fraction, "
                "or add images."
            )
        chosen.append(idx[:shots])
    return np.sort(indices[np.concatenate(chosen)])


def take_splits(dataset: ImageDataset, data_cfg) -> dict[str, np.ndarray]:
    """A run's train/val/test indices from its [data] table (`runs.config.DataConfig`): the
    split by fractions and seed, then `<split>_per_class` images per class of each split (0 =
    all of them). A class with too few images in a split is a DataError naming that split."""
    splits = split_indices(dataset, seed=data_cfg.seed, val_fraction=data_cfg.val_fraction,
                           test_fraction=data_cfg.test_fraction, use_given=data_cfg.use_given_split)
    out = {}
    for name in ("train", "val", "test"):
        per_class = getattr(data_cfg, f"{name}_per_class")
        out[name] = few_shot(dataset, splits[name], "all" if per_class == 0 else per_class,
                             data_cfg.seed, split=name)
    for name in ("train", "test"):  # a run trains and scores: neither may be empty (NaN results)
        if not len(out[name]):
            raise DataError(_empty_split(dataset, name, data_cfg))
    return out


def _empty_split(dataset: ImageDataset, name: str, data_cfg) -> str:
    """Why a run's `name` split is empty, and what to change. (Train is empty only when a given
    split has no 'train' row; test, carved from train when not given, when its fraction is 0 or
    every class is too small to spare an image.)"""
    counts = np.bincount(dataset.labels, minlength=len(dataset.classes))
    if name == "train":
        why = "the split column gives no 'train' row"
        fix = "give some rows 'train' in the split column, or set [data] use_given_split = false"
    elif data_cfg.test_fraction == 0:
        why, fix = "[data] test_fraction = 0", "raise [data] test_fraction, e.g. to 0.2"
    else:
        why = (f"its classes are too small to divide ({int(counts.min())} to {int(counts.max())} "
               "image(s) per class)")
        fix = "add images: a class needs at least 2, one to train and one to test"
    return (f"Dataset {dataset.name!r} has no {name} image after the split: {why}. A run needs "
            f"{'training images to fit' if name == 'train' else 'test images to score'} its methods; "
            f"{fix}.")

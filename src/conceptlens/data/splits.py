"""Deterministic, stratified splits and k-shot sampling."""

from __future__ import annotations

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
    dataset: ImageDataset, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> dict[str, np.ndarray]:
    """Indices of train/val/test, stratified per class and fixed by `seed`.

    A split the data came with (Fashion-MNIST's official test set, a manifest's column) is
    kept; what is missing is carved out of train with the given fractions. Fewer than two
    classes, or a class with no training image (when there are training images), is a
    DataError.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise ConfigError(f"{name} must be in [0, 1); got {frac}.")
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
    dataset: ImageDataset, indices: np.ndarray, shots: int | str, seed: int = 0
) -> np.ndarray:
    """`shots` items per class from `indices` (or all of them for 'all').

    Each class's items are permuted by a generator seeded with (seed, class) and the first
    `shots` are taken, so the 1-shot set lies inside the 2-shot set, and so on: comparisons
    across shot counts differ only by the added images.
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
            raise DataError(
                f"Class {dataset.classes[c]!r} has {len(idx)} training image(s), fewer than "
                f"{shots} shots; lower the shots or add images."
            )
        chosen.append(idx[:shots])
    return np.sort(indices[np.concatenate(chosen)])

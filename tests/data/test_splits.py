"""Deterministic stratified splits and nested k-shot sampling."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.data import ImageDataset, few_shot, split_indices
from conceptlens.data.images import ArrayImages
from conceptlens.errors import ConfigError, DataError


def make(labels, split=None):
    labels = np.asarray(labels)
    return ImageDataset("d", tuple("abcdef"[: labels.max() + 1]), labels,
                        tuple(map(str, range(len(labels)))),
                        ArrayImages(np.zeros((len(labels), 2, 2), np.uint8)), split)


def test_splits_partition_and_stratify():
    data = make(np.repeat([0, 1, 2], [50, 30, 20]))
    s = split_indices(data, seed=1, val_fraction=0.1, test_fraction=0.2)
    allidx = np.concatenate(list(s.values()))
    assert sorted(allidx.tolist()) == list(range(100))  # a partition: nothing lost or doubled
    test_counts = np.bincount(data.labels[s["test"]], minlength=3).tolist()
    val_counts = np.bincount(data.labels[s["val"]], minlength=3).tolist()
    assert test_counts == [10, 6, 4] and val_counts == [5, 3, 2]


def test_splits_are_deterministic_by_seed():
    data = make(np.arange(200) % 4)
    a, b, c = (split_indices(data, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_given_split_is_kept_and_val_carved_from_train():
    split = tuple(["train"] * 40 + ["test"] * 10)
    data = make(np.arange(50) % 2, split)
    s = split_indices(data, seed=0, val_fraction=0.25)
    assert s["test"].tolist() == list(range(40, 50))
    assert len(s["val"]) == 10 and set(s["val"]) | set(s["train"]) == set(range(40))


def test_tiny_class_keeps_a_training_item():
    s = split_indices(make([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]), seed=0)
    assert (make([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]).labels[s["train"]] == 0).sum() >= 1


def test_few_shot_counts_nesting_and_all():
    data = make(np.arange(300) % 3)
    train = np.arange(300)
    prev = set()
    for k in (1, 2, 4, 8, 16):
        idx = few_shot(data, train, k, seed=7)
        assert np.bincount(data.labels[idx]).tolist() == [k, k, k]
        assert prev <= set(idx.tolist())  # k-shot contains the smaller k-shot sets
        prev = set(idx.tolist())
    assert few_shot(data, train, 4, seed=7).tolist() == few_shot(data, train, 4, seed=7).tolist()
    assert few_shot(data, train, 4, seed=7).tolist() != few_shot(data, train, 4, seed=8).tolist()
    assert few_shot(data, train, "all").tolist() == train.tolist()


def test_few_shot_bad_input():
    data = make([0, 0, 1])
    with pytest.raises(DataError, match="Class 'b' has 1 training image"):
        few_shot(data, np.arange(3), 2)
    with pytest.raises(ConfigError, match="positive integer or 'all'"):
        few_shot(data, np.arange(3), 0)


def test_one_class_is_an_error_before_any_split():
    with pytest.raises(DataError, match=r"needs at least 2 classes to split and train on; found 1: 'a'"):
        split_indices(make([0, 0, 0, 0]))


def test_class_with_no_training_image_is_an_error():
    # 'c' only appears in the given test split: it could never be predicted
    split = ("train", "train", "train", "train", "test", "test")
    with pytest.raises(DataError, match=r"class\(es\) 'c' have no image in the train split; give each"):
        split_indices(make([0, 1, 0, 1, 2, 2], split))
    # carving: with 0.6 + 0.3 held out, a 2-image class loses both of its images
    with pytest.raises(DataError, match=r"'b' have no image in the train split; lower val_fraction"):
        split_indices(make([0] * 10 + [1] * 2), val_fraction=0.3, test_fraction=0.6)


def test_test_only_dataset_is_allowed():
    s = split_indices(make([0, 1, 0, 1], ("test",) * 4))
    assert s["test"].tolist() == [0, 1, 2, 3] and len(s["train"]) == 0


def test_take_splits_uses_the_config_fractions_and_names_the_split():
    from conceptlens.data.splits import take_splits
    from conceptlens.runs.config import DataConfig

    data = make(np.repeat([0, 1], 50))
    cfg = DataConfig(train_per_class=0, val_per_class=0, test_per_class=0, train_fraction=0.5,
                     val_fraction=0.2, test_fraction=0.3)
    parts = take_splits(data, cfg)
    # per class: 30% of 50 = 15 test, 20% = 10 val, the other 25 train
    assert [np.bincount(data.labels[parts[s]]).tolist() for s in ("train", "val", "test")] == \
        [[25, 25], [10, 10], [15, 15]]
    cfg.test_per_class = 20
    with pytest.raises(DataError, match=r"Class 'a' has 15 image\(s\) in the test split, fewer than the 20 "
                                        r"asked for \(\[data\] test_per_class = 20\)\. Lower test_per_class "
                                        r"\(0 = every image of the split\), raise \[data\] test_fraction"):
        take_splits(data, cfg)


def test_use_given_split_false_divides_every_image_by_the_fractions():
    split = tuple(["train"] * 40 + ["test"] * 20)
    data = make(np.arange(60) % 2, split)
    kept = split_indices(data, seed=0, test_fraction=0.5)
    assert kept["test"].tolist() == list(range(40, 60))  # the given split wins
    redone = split_indices(data, seed=0, val_fraction=0.0, test_fraction=0.5, use_given=False)
    assert np.bincount(data.labels[redone["test"]]).tolist() == [15, 15]  # half of each class's 30
    assert set(redone["test"].tolist()) & set(range(40)), "test now draws from every image"
    with pytest.raises(ConfigError, match=r"val_fraction \+ test_fraction must be below 1"):
        split_indices(data, val_fraction=0.5, test_fraction=0.5)


def test_take_splits_refuses_an_empty_test_or_train_split_saying_why():
    # two classes of one image each: nothing to spare for test; a run scored NaN and exited 0
    from conceptlens.data.splits import take_splits
    from conceptlens.runs.config import DataConfig

    cfg = DataConfig(train_per_class=0, val_per_class=0, test_per_class=0)
    with pytest.raises(DataError, match=r"no test image after the split: its classes are too small to "
                                        r"divide \(1 to 1 image\(s\) per class\).*at least 2"):
        take_splits(make([0, 1]), cfg)
    zero = DataConfig(train_per_class=0, val_per_class=0, test_per_class=0, train_fraction=0.9,
                      val_fraction=0.1, test_fraction=0.0)
    with pytest.raises(DataError, match=r"no test image after the split: \[data\] test_fraction = 0"):
        take_splits(make(np.arange(20) % 2), zero)
    with pytest.raises(DataError, match=r"no train image after the split: the split column gives no "
                                        r"'train' row.*use_given_split = false"):
        take_splits(make([0, 1, 0, 1], ("test",) * 4), cfg)
    assert len(take_splits(make([0, 1, 0, 1]), cfg)["test"]) == 2  # two per class: one each

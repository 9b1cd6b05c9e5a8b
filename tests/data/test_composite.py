"""Composite datasets: per-region labels and pixels on drawn examples, rules, cooccurrence, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.annotations import ConceptAnnotations
from conceptlens.data import FASHION_MNIST_CLASSES, ImageDataset, load_dataset, split_indices
from conceptlens.data.composite import (
    REGIONS,
    Rule,
    class_rules,
    composite_annotations,
    make_composite,
    parse_id,
    rules_for,
)
from conceptlens.data.fashion_mnist import SYSTEM_DIR
from conceptlens.data.images import ArrayImages
from conceptlens.errors import ConfigError, DataError

N = np.nan
CLASSES = ("sneaker", "sandal", "bag", "shirt", "boot")
CONCEPTS = ("laces", "handles", "worn on the feet", "sleeves", "zip")
MATRIX = [  # rows CLASSES, columns CONCEPTS
    [1, 0, 1, 0, 0],  # sneaker
    [0, 0, 1, 0, N],  # sandal: zip unknown
    [0, 1, 0, 0, 1],  # bag
    [0, 0, 0, 1, 0],  # shirt
    [N, 0, 1, 0, 1],  # boot: laces unknown
]
# by hand from MATRIX: laces' carriers (sneaker) all have 'worn on the feet'; handles' (bag) all
# have 'zip'; sandal is the laces decoy (feet without laces), boot the handles decoy (zip, no handle)
COMPANIONS = {"laces": ("worn on the feet",), "handles": ("zip",)}
RULES = rules_for(["laces", "handles"])


def hand_annotations(matrix=MATRIX, classes=CLASSES) -> ConceptAnnotations:
    return ConceptAnnotations("class", CONCEPTS, np.array(matrix, dtype=float), classes=classes,
                              provenance="hand")


def fake_source(per_class: int = 20, shape=(6, 5)) -> ImageDataset:
    """Every item has distinct random pixels, so a region's pixels identify its item."""
    rng = np.random.default_rng(7)
    n = per_class * len(CLASSES)
    return ImageDataset(
        name="fake", classes=CLASSES, labels=np.repeat(np.arange(len(CLASSES)), per_class),
        ids=tuple(f"fake/{i}" for i in range(n)),
        images=ArrayImages(rng.integers(0, 256, (n, *shape), dtype=np.uint8)), split=None,
    )


def brute_truth(class_names: list[str]) -> list[float]:
    """Per-image truth by the stated rule, one concept at a time: 1 if any region is 1, 0 if
    all are 0, else unknown."""
    rows = [MATRIX[CLASSES.index(c)] for c in class_names]
    out = []
    for j in range(len(CONCEPTS)):
        col = [r[j] for r in rows]
        out.append(1.0 if any(v == 1 for v in col) else 0.0 if all(v == 0 for v in col) else N)
    return out


@pytest.fixture(scope="module")
def drawn():
    source = fake_source()
    return source, make_composite(source, 400, seed=3, cooccurrence=0.5,
                                  annotations=hand_annotations(), rules=RULES)


def test_region_pixels_are_the_recorded_source_items(drawn):
    source, comp = drawn
    index = {i: k for k, i in enumerate(source.ids)}
    h, w = source.images.array.shape[1:]
    offsets = {"top-left": (0, 0), "top-right": (0, w), "bottom-left": (h, 0), "bottom-right": (h, w)}
    images = comp.dataset.images.array
    assert images.shape == (400, 2 * h, 2 * w) and images.dtype == np.uint8
    for i in (0, 1, 17, 123, 399):
        for r, name in enumerate(REGIONS):
            y, x = offsets[name]
            item = index[comp.region_items[i][r]]
            np.testing.assert_array_equal(images[i, y:y + h, x:x + w], source.images.array[item])
            # the recorded class is the item's class
            assert comp.regions[i, r] == source.labels[item]


def test_region_and_image_truth_match_the_class_matrix_by_hand(drawn):
    _, comp = drawn
    assert comp.concepts == CONCEPTS
    for i in (0, 5, 50, 200, 399):
        names = [CLASSES[c] for c in comp.regions[i]]
        for r, c in enumerate(names):
            np.testing.assert_array_equal(comp.region_values[i, r], np.array(MATRIX[CLASSES.index(c)], float))
        np.testing.assert_array_equal(comp.annotations.values[i], np.array(brute_truth(names), np.float32))
    assert comp.annotations.items == comp.dataset.ids and comp.annotations.level == "image"


def test_unknown_stays_unknown():
    # a source of sandals and shirts only: zip is unknown for sandals and absent for shirts
    src = fake_source()
    keep = np.flatnonzero(np.isin(src.labels, [1, 3]))
    matrix = [row[:] for row in MATRIX]
    rules = {"sleeves": Rule(("sleeves",)), "no sleeves": Rule((), ("sleeves",))}
    comp = make_composite(src.subset(keep), 60, annotations=hand_annotations(matrix), rules=rules)
    zip_col = comp.annotations.values[:, CONCEPTS.index("zip")]
    has_sandal = (comp.regions == 1).any(1)
    assert has_sandal.any() and (~has_sandal).any()
    assert np.isnan(zip_col[has_sandal]).all() and (zip_col[~has_sandal] == 0).all()


def test_every_image_satisfies_exactly_its_class_rule(drawn):
    _, comp = drawn
    values = comp.annotations.values
    col = {c: j for j, c in enumerate(CONCEPTS)}
    assert comp.dataset.classes == tuple(RULES)
    for i, y in enumerate(comp.dataset.labels):
        satisfied = [
            name for name, rule in RULES.items()
            if all(values[i, col[c]] == 1 for c in rule.present)
            and all(values[i, col[c]] == 0 for c in rule.absent)
        ]
        assert satisfied == [comp.dataset.classes[y]]
    assert comp.rules == {
        "laces and handles": "'laces' present and 'handles' present",
        "laces, not handles": "'laces' present and 'handles' absent",
        "handles, not laces": "'handles' present and 'laces' absent",
        "neither laces nor handles": "'laces' absent and 'handles' absent",
    }
    # classes are balanced within each split
    for s in ("train", "val", "test"):
        counts = np.bincount(comp.dataset.labels[np.array(comp.dataset.split) == s], minlength=4)
        assert counts.max() - counts.min() <= 1


def test_splits_use_disjoint_source_items(drawn):
    source, comp = drawn
    pools = split_indices(source, seed=3)
    where = {source.ids[i]: s for s, idx in pools.items() for i in idx}
    assert comp.dataset.split.count("train") == 240 and comp.dataset.split.count("test") == 120
    for items, s in zip(comp.region_items, comp.dataset.split, strict=True):
        assert {where[i] for i in items} == {s}
    # counts per split: 60 / 10 / 30 % by largest remainder, or as given
    small = make_composite(source, 7, annotations=hand_annotations(), rules=RULES).dataset.split
    assert [small.count(s) for s in ("train", "val", "test")] == [4, 1, 2]
    given = make_composite(source, {"train": 6, "test": 3}, annotations=hand_annotations(), rules=RULES)
    assert given.dataset.split == ("train",) * 6 + ("test",) * 3
    # load_dataset's splitter keeps the composite's own split
    again = split_indices(comp.dataset, seed=99)
    assert all(comp.dataset.split[i] == s for s, idx in again.items() for i in idx)


def test_companions_and_the_cooccurrence_statistic():
    source = fake_source()
    laces, feet = CONCEPTS.index("laces"), CONCEPTS.index("worn on the feet")
    stats = {}
    for q in (0.0, 0.5, 1.0):
        comp = make_composite(source, 600, seed=1, cooccurrence=q, annotations=hand_annotations(),
                              rules=RULES)
        assert comp.companions == COMPANIONS
        v = comp.annotations.values
        absent = v[:, laces] == 0
        assert (v[~absent, feet] == 1).all()  # the companion is wherever its concept is
        stats[q] = (v[absent, feet] == 1).mean()
        # exactly the decoyed images (not aligned) show the companion without its concept
        np.testing.assert_array_equal(v[absent, feet] == 1, ~comp.aligned[absent])
        phi = np.corrcoef(v[:, laces], v[:, feet])[0, 1] if v[:, feet].std() else 0.0
        stats[q] = (stats[q], phi)
    assert stats[0.0][0] == 1.0 and stats[1.0][0] == 0.0
    assert abs(stats[0.5][0] - 0.5) < 0.1  # 1 - q, up to sampling noise (300 images)
    assert stats[0.0][1] == 0.0 < stats[0.5][1] < stats[1.0][1] == pytest.approx(1.0)


def test_same_seed_same_data_other_seed_other_data():
    source = fake_source()
    kw = dict(annotations=hand_annotations(), rules=RULES, cooccurrence=0.3)
    a, b = (make_composite(source, 50, seed=5, **kw) for _ in range(2))
    np.testing.assert_array_equal(a.dataset.images.array, b.dataset.images.array)
    np.testing.assert_array_equal(a.dataset.labels, b.dataset.labels)
    np.testing.assert_array_equal(a.regions, b.regions)
    assert a.dataset.ids == b.dataset.ids and a.dataset.ids[0].startswith("fake-composite/seed5/train/0|")
    c = make_composite(source, 50, seed=6, **kw)
    assert c.dataset.ids != a.dataset.ids
    assert not np.array_equal(c.dataset.images.array, a.dataset.images.array)


def test_annotations_rebuilt_from_ids_alone(drawn):
    _, comp = drawn
    rebuilt = composite_annotations(comp.dataset, hand_annotations(), RULES)
    assert rebuilt.items == comp.dataset.ids and rebuilt.concepts == CONCEPTS
    np.testing.assert_array_equal(rebuilt.values, comp.annotations.values)  # NaN == NaN here
    name, seed, split, index, regions = parse_id(comp.dataset.ids[7])
    assert (name, seed, split, index) == ("fake-composite", 3, "train", 7)
    assert regions == [(CLASSES[c], i) for c, i in zip(comp.regions[7], comp.region_items[7], strict=True)]
    # labels that do not follow the rules (here: rules in another order) are refused, not trusted
    swapped = dict(reversed(list(RULES.items())))
    relabelled = ImageDataset("x", tuple(swapped), comp.dataset.labels, comp.dataset.ids, comp.dataset.images)
    with pytest.raises(DataError, match="do not satisfy exactly their class's rule"):
        composite_annotations(relabelled, hand_annotations(), swapped)
    with pytest.raises(ConfigError, match="are not the dataset's"):
        composite_annotations(comp.dataset, hand_annotations(), swapped)
    with pytest.raises(DataError, match="not a composite image id"):
        composite_annotations(fake_source(), hand_annotations(), RULES)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"cooccurrence": 1.5}, ConfigError, r"cooccurrence must be a number in \[0, 1\]"),
    ({"cooccurrence": float("nan")}, ConfigError, "cooccurrence must be"),
    ({"cooccurrence": True}, ConfigError, "cooccurrence must be"),
    ({"n": 0}, ConfigError, "n must be a positive integer"),
    ({"n": {"train": 5, "dev": 1}}, ConfigError, r"unknown splits \['dev'\]"),
    ({"n": {"train": 0}}, ConfigError, "no image at all"),
    ({"seed": -1}, ConfigError, "seed must be a non-negative integer"),
    ({"rules": {"a": Rule(("laces",)), "b": Rule(("handles",))}}, ConfigError, "can both hold for one image"),
    ({"rules": {"a": Rule(("lace",)), "b": Rule((), ("lace",))}}, ConfigError, "Did you mean 'laces'"),
    ({"rules": {"a": Rule(("zip",), ("zip",)), "b": Rule((), ("zip",))}}, ConfigError,
     "both present and absent"),
    ({"rules": {"only": Rule(("zip",))}}, ConfigError, "at least 2 class names"),
    ({"annotations": ConceptAnnotations("image", ("laces",), np.ones((1, 1)), items=("x",))},
     ConfigError, "must be class-level"),
    ({"annotations": ConceptAnnotations("class", CONCEPTS, np.zeros((1, 5)), classes=("sneaker",))},
     DataError, "classes with no annotations"),
])
def test_bad_parameters_say_what_to_fix(kwargs, error, message):
    kw = {"n": 20, "annotations": hand_annotations(), "rules": RULES} | kwargs
    with pytest.raises(error, match=message):
        make_composite(fake_source(), **kw)


def test_rules_that_cannot_be_drawn_are_refused():
    # without a clean filler ('shirt' gone): a 'neither' image has no region free of the companions
    matrix = [row[:] for row in MATRIX]
    matrix[3] = [0, 0, 1, 1, 0]  # shirts now 'worn on the feet'
    with pytest.raises(DataError, match="no source class can fill a region of aligned images"):
        make_composite(fake_source(), 20, annotations=hand_annotations(matrix), rules=RULES)
    src = fake_source()
    bad = ImageDataset("bad", ("a|b", *CLASSES[1:]), src.labels, src.ids, src.images)
    with pytest.raises(DataError, match="contain '\\|'"):
        make_composite(bad, 20, annotations=hand_annotations(classes=bad.classes), rules=RULES)


def test_load_dataset_options_are_checked():
    with pytest.raises(ConfigError, match="expected n=<int>, seed=<int> or cooccurrence"):
        load_dataset("fashion-mnist-composite:size=10")
    with pytest.raises(ConfigError, match="not a number"):
        load_dataset("fashion-mnist-composite:n=many")


def test_default_rules_on_the_built_in_attributes():
    # a stand-in source with Fashion-MNIST's classes: the built-in matrix, not the images, decides
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 12)
    source = ImageDataset("fashion-mnist", FASHION_MNIST_CLASSES, labels, tuple(f"f/{i}" for i in range(120)),
                          ArrayImages(rng.integers(0, 256, (120, 4, 4), dtype=np.uint8)))
    assert class_rules() == {
        "laces and a handle": "'has laces' present and 'has a handle' present",
        "laces, no handle": "'has laces' present and 'has a handle' absent",
        "a handle, no laces": "'has a handle' present and 'has laces' absent",
        "neither laces nor a handle": "'has laces' absent and 'has a handle' absent",
    }
    comp = make_composite(source, 400, seed=0, cooccurrence=0.0)
    assert comp.dataset.name == "fashion-mnist-composite"
    # the companions and the decoy the module docstring names
    assert comp.companions["has laces"] == (
        "is worn on the feet", "is wider than it is tall", "has a sole", "covers the whole foot",
        "has a tongue under the laces", "has a flat sole", "has a rubber sole")
    assert "is used to carry things" in comp.companions["has a handle"]
    names = np.array(FASHION_MNIST_CLASSES)[comp.regions]
    v, col = comp.annotations.values, {c: j for j, c in enumerate(comp.concepts)}
    no_handle = v[:, col["has a handle"]] == 0
    handle_companions = [col[c] for c in comp.companions["has a handle"]]
    assert not (v[no_handle][:, handle_companions] == 1).any()  # no decoy, even at q = 0
    no_laces = v[:, col["has laces"]] == 0
    assert (names[no_laces] == "Sandal").any(1).all()  # q = 0: every image without laces has the decoy
    assert not (names[no_laces] == "Ankle boot").any()  # laces unknown: never where laces must be absent
    # Sandal carries 'has a sole' (so it follows 1 - q), not 'has a flat sole' (Sandal: unknown)
    assert (v[no_laces, col["has a sole"]] == 1).all()
    assert not (v[no_laces, col["has a flat sole"]] == 1).any()
    truth = composite_annotations(comp.dataset)  # the default annotations and rules
    np.testing.assert_array_equal(truth.values, comp.annotations.values)


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist_composite():
    from conceptlens.data import load_fashion_mnist

    data = load_dataset("fashion-mnist-composite:n=200,seed=2,cooccurrence=0.5", root=SYSTEM_DIR)
    assert len(data) == 200 and data.images.array.shape == (200, 56, 56)
    assert data.split.count("train") == 120 and data.split.count("val") == 20
    source = load_fashion_mnist(SYSTEM_DIR)
    index = {i: k for k, i in enumerate(source.ids)}
    for i in (0, 150, 199):
        _, seed, split, _, regions = parse_id(data.ids[i])
        assert seed == 2 and split == data.split[i]
        for r, (cls, item) in enumerate(regions):
            y, x = divmod(r, 2)
            np.testing.assert_array_equal(data.images.array[i, 28 * y:28 * y + 28, 28 * x:28 * x + 28],
                                          source.images.array[index[item]])
            assert source.classes[source.labels[index[item]]] == cls
    truth = composite_annotations(data)  # checks every label against the default rules
    assert truth.items == data.ids
    test = load_dataset("fashion-mnist-composite:n=200,seed=2", root=SYSTEM_DIR, split="test")
    assert set(test.split) == {"test"} and len(test) == 60

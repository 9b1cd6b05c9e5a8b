"""Composite images whose concepts are known per image and per region, and whose class is a
stated rule over those concepts ("fashion-mnist-composite"; no download beyond Fashion-MNIST's).

Why: on a real dataset nobody knows which concepts an image truly shows, so a concept
bottleneck that scores well may be reading the wrong concepts. Here every image is a 2 x 2 grid
of four source items (four Fashion-MNIST images: 56 x 56 grey), and the truth follows from what
was put where.

**What is recorded.** For each image: the source class and source item id in each region, in
the order of `REGIONS` (top-left, top-right, bottom-left, bottom-right); the per-region concept
truth, which is the class-level annotation row of the region's source class (1 / 0 / NaN
unknown, unknown staying unknown); and the per-image truth: 1 where some region has the
concept as 1, 0 where every region has it as 0, unknown otherwise.

**Classes follow rules.** A rule names defining concepts that must be present (image-level 1)
and ones that must be absent (image-level 0); `Composite.rules` gives each class's rule text.
`rules_for([A, B])` makes the four classes "A and B", "A, not B", "B, not A", "neither A nor
B". The default (`default_rules`, `class_rules`) does so for A = 'has laces' (Sneaker; Ankle
boot unknown) and B = 'has a handle' (Bag) of the built-in attributes, with the classes 'laces
and a handle', 'laces, no handle', 'a handle, no laces' and 'neither laces nor a handle': a
class is decided by the concepts, not by one item's class (it takes two items to show both,
and an image without laces may hold any of six clothing classes or sandals). Rules must be
mutually exclusive (every pair disagrees on some concept), and every image is checked after it
is drawn to satisfy its own class's rule and no other. Any class-level annotations and rules
can be passed instead.

**How an image is drawn.** The classes are balanced within each split. For an image of class y
(present concepts P, absent concepts N): *allowed* source classes are those with every concept
of N known 0 (so N stays absent, and known). One *carrier* region per concept of P (a source
class with that concept 1; a carrier that has several of P serves them all), the rest
*filler*, all from allowed classes; the four regions are then shuffled.

**`cooccurrence` (q in [0, 1]).** Fashion-MNIST's concepts come in bundles: whatever has laces
is worn on the feet. The *companions* of a defining concept A are the non-defining concepts
that every source class with A = 1 has as 1, minus those that every carrier of another
defining concept also has (those cannot be pulled apart from both). A companion is therefore
present wherever A is. q sets whether it is also present where A is absent:

- each image is *aligned* with probability q: all of its regions are *clean*, i.e. have no
  companion of an absent defining concept as 1 (0, or unknown where the matrix does not know);
- otherwise it is *decoyed*: for each absent defining concept that has *decoys* (allowed source
  classes with at least one of its companions = 1) one filler region is such a decoy; the other
  regions are drawn from the allowed classes at random, as chance has it.

So, for every defining concept A with decoys, P(some companion of A is 1 | A is 1) = 1 and
P(some companion of A is 1 | A is 0) = 1 - q (it is the fraction of decoyed images among those
without A: exact up to sampling noise). q = 1: the companions are 1 exactly where A is (they
always co-occur, so a model can predict the class from a companion as well as from A); q = 0:
every image without A still has a companion of A (those its decoys carry), so that companion
says nothing about A and only A itself (or a companion no decoy carries) does. The default 0.5
lies between. A defining concept without companions or decoys is unaffected by q. Which images
were aligned is kept in `Composite.aligned`, the companions in `Composite.companions`.

With the built-in attributes, the companions of 'has laces' are 'is worn on the feet', 'is
wider than it is tall', 'has a sole', 'covers the whole foot', 'has a tongue under the laces',
'has a flat sole' and 'has a rubber sole'; its decoy is Sandal (the Ankle boot's laces are
unknown, so it never stands in an image that must lack laces), which carries the first three:
these three follow 1 - q, the other four stay perfectly correlated with 'has laces'. 'has a
handle' has companions (what only bags have, such as 'is used to carry things') but no decoy (no
class without a handle has them), so q does not act on it: they stay perfectly correlated.

**Splits.** The source is split by `split_indices(source, seed)` (Fashion-MNIST keeps its
official test set; val is carved out of train per class); composite train / val / test images
use only source train / val / test items, so no source item is in two composite splits. An int
`n` is divided 60 / 10 / 30 % over train / val / test (enough for the default run sizes of
300 / 50 / 200 per class with the four default classes at n = 3000); a mapping gives each
split's count. Within an image items may repeat only by chance.

**Ids** are `<name>/seed<seed>/<split>/<index>|<class>=<source id>|...` (four regions in
`REGIONS` order): stable for a seed, and enough to rebuild the truth without the images
(`composite_annotations`), as a run that only has the `ImageDataset` needs.

**Loading.** `make_composite(source, n, seed, cooccurrence, annotations, rules)` gives the
images with every record above; `load_dataset("fashion-mnist-composite")` (options after a
colon: "fashion-mnist-composite:n=3000,seed=0,cooccurrence=0.5"; `root`, `download` and `split`
as for "fashion-mnist") gives the `ImageDataset` alone, and `composite_annotations(dataset)` its
per-image truth. Everything is deterministic from `seed` (NumPy generators seeded with
(seed, split)): the same seed gives identical pixels, labels and ids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..annotations.annotations import ConceptAnnotations
from ..annotations.fashion_mnist import fashion_mnist_attributes
from ..errors import ConfigError, DataError, closest
from .dataset import SPLITS, ImageDataset, normalize_class_names
from .fashion_mnist import load_fashion_mnist
from .images import ArrayImages
from .splits import split_indices

NAME = "fashion-mnist-composite"
REGIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.1, "test": 0.3}
DEFAULT_N = 3000  # ~1 minute to encode on 2 CPU cores with the offline backbone
# The default defining concepts, matched (ignoring case) against the annotation texts: carried by
# different kinds of item (footwear, bags), each with companions that other items also have
# ("worn on the feet": sandals, boots), so cooccurrence has something to act on.
DEFAULT_CONCEPTS = ("has laces", "has a handle")
DEFAULT_NAMES = ("laces and a handle", "laces, no handle", "a handle, no laces", "neither laces nor a handle")
_SEP, _EQ = "|", "="  # id separators; refused inside class names and source ids


@dataclass(frozen=True)
class Rule:
    """A class's rule: every concept of `present` is present and every one of `absent` absent."""

    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        parts = [f"{c!r} present" for c in self.present] + [f"{c!r} absent" for c in self.absent]
        return " and ".join(parts)

    def __str__(self) -> str:
        return self.text

    def holds(self, values: np.ndarray, concepts: Sequence[str]) -> np.ndarray:
        """(n,) bool: which rows of image-level `values` (n, len(concepts)) satisfy the rule
        (an unknown value satisfies neither 'present' nor 'absent')."""
        col = {c: j for j, c in enumerate(concepts)}
        ok = np.ones(len(values), dtype=bool)
        for c in self.present:
            ok &= values[:, col[c]] == 1
        for c in self.absent:
            ok &= values[:, col[c]] == 0
        return ok


@dataclass(frozen=True, eq=False)
class Composite:
    """What `make_composite` drew. Row i of every array is image i of `dataset`."""

    dataset: ImageDataset
    annotations: ConceptAnnotations  # image level, items = dataset.ids
    regions: np.ndarray  # (n, 4) source class index (into source_classes), REGIONS order
    region_items: tuple[tuple[str, ...], ...]  # (n, 4) source item ids
    region_values: np.ndarray  # (n, 4, concepts) per-region truth, 1 / 0 / NaN
    rules: dict[str, str]  # class -> rule text
    rule_defs: dict[str, Rule]
    companions: dict[str, tuple[str, ...]]  # defining concept -> its companions
    aligned: np.ndarray  # (n,) bool: drawn aligned (probability cooccurrence)
    source_classes: tuple[str, ...]
    seed: int = 0
    cooccurrence: float = 0.5
    concepts: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "concepts", self.annotations.concepts)


def _default_annotations() -> ConceptAnnotations:
    return fashion_mnist_attributes()


def _match_concept(text: str, concepts: Sequence[str], what: str) -> str:
    """The annotation's spelling of `text` (ignoring case and outer spaces)."""
    key = str(text).strip().casefold()
    for c in concepts:
        if c.strip().casefold() == key:
            return c
    raise ConfigError(
        f"{what}: concept {text!r} is not in the annotations.{closest(str(text), concepts)} "
        f"Annotated concepts: {list(concepts)}."
    )


def rules_for(concepts: Sequence[str], names: Sequence[str] | None = None) -> dict[str, Rule]:
    """One class per present/absent pattern of `concepts` (2**k classes, mutually exclusive).

    Names default to readable phrases ('laces and handles', 'laces, not handles', ...); pass
    `names` (one per pattern, in the order: all present first, then as binary counting with
    present = 0) to choose them.
    """
    concepts = tuple(str(c) for c in concepts)
    if not concepts or len(set(concepts)) != len(concepts):
        raise ConfigError(f"rules_for needs distinct defining concepts; got {list(concepts)}.")
    patterns = [tuple(not (m >> (len(concepts) - 1 - j)) & 1 for j in range(len(concepts)))
                for m in range(2 ** len(concepts))]
    if names is not None and len(names) != len(patterns):
        raise ConfigError(
            f"rules_for: {len(patterns)} patterns need {len(patterns)} names; got {len(names)}."
        )
    out = {}
    for i, pat in enumerate(patterns):
        present = tuple(c for c, p in zip(concepts, pat, strict=True) if p)
        absent = tuple(c for c, p in zip(concepts, pat, strict=True) if not p)
        if names is not None:
            name = str(names[i])
        elif len(concepts) == 2 and len(present) == 0:
            name = f"neither {concepts[0]} nor {concepts[1]}"
        elif not absent:
            name = " and ".join(present)
        elif not present:
            name = "no " + ", no ".join(absent)
        else:
            name = " and ".join(present) + ", not " + " or ".join(absent)
        out[name] = Rule(present, absent)
    return out


def default_rules(annotations: ConceptAnnotations | None = None) -> dict[str, Rule]:
    """The four default classes over `DEFAULT_CONCEPTS`, spelled as in `annotations`."""
    annotations = _default_annotations() if annotations is None else annotations
    what = "the default rules (pass rules= to name your own defining concepts)"
    return rules_for([_match_concept(c, annotations.concepts, what) for c in DEFAULT_CONCEPTS], DEFAULT_NAMES)


def class_rules(annotations: ConceptAnnotations | None = None) -> dict[str, str]:
    """class -> rule text of the default classes."""
    return {name: rule.text for name, rule in default_rules(annotations).items()}


def _check_rules(rules, concepts: Sequence[str]) -> dict[str, Rule]:
    if not isinstance(rules, Mapping) or len(rules) < 2:
        raise ConfigError(
            f"rules must map at least 2 class names to Rule(present=..., absent=...); got {rules!r}."
        )
    out: dict[str, Rule] = {}
    names = normalize_class_names(list(rules))
    for name, (raw, rule) in zip(names, rules.items(), strict=True):
        if isinstance(rule, Mapping):
            extra = set(rule) - {"present", "absent"}
            if extra:
                raise ConfigError(f"rule {raw!r}: unknown keys {sorted(extra)}; use 'present' and 'absent'.")
            rule = Rule(tuple(rule.get("present", ())), tuple(rule.get("absent", ())))
        if not isinstance(rule, Rule):
            raise ConfigError(
                f"rule {raw!r} must be a Rule or a mapping with 'present'/'absent'; got {rule!r}."
            )
        what = f"rule {raw!r}"
        present = tuple(_match_concept(c, concepts, what) for c in rule.present)
        absent = tuple(_match_concept(c, concepts, what) for c in rule.absent)
        if not present and not absent:
            raise ConfigError(f"{what} names no concept; give it present and/or absent concepts.")
        both = sorted(set(present) & set(absent))
        if both:
            raise ConfigError(f"{what} asks for {both} both present and absent; it can never hold.")
        out[name] = Rule(tuple(dict.fromkeys(present)), tuple(dict.fromkeys(absent)))
    items = list(out.items())
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1:]:
            if not (set(ra.present) & set(rb.absent) or set(ra.absent) & set(rb.present)):
                raise ConfigError(
                    f"rules {a!r} ({ra.text}) and {b!r} ({rb.text}) can both hold for one image; "
                    "every pair of rules must disagree on some concept (present in one, absent in "
                    "the other) so each image has exactly one class."
                )
    return out


def _check_params(n, seed, cooccurrence) -> dict[str, int]:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}.")
    if (isinstance(cooccurrence, bool) or not isinstance(cooccurrence, int | float | np.number)
            or not math.isfinite(cooccurrence) or not 0 <= cooccurrence <= 1):
        raise ConfigError(
            f"cooccurrence must be a number in [0, 1] (the fraction of images whose regions keep "
            f"the defining concepts' companions away from where the concept is absent); got {cooccurrence!r}."
        )
    if isinstance(n, Mapping):
        unknown = sorted(set(n) - set(SPLITS))
        if unknown:
            raise ConfigError(f"n has unknown splits {unknown}; use {list(SPLITS)}.")
        counts = {s: n.get(s, 0) for s in SPLITS}
    elif isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(
            f"n must be a positive integer (images in all) or a split -> count mapping; got {n!r}."
        )
    else:
        # largest remainder, so the counts add up to n
        exact = {s: n * f for s, f in SPLIT_FRACTIONS.items()}
        counts = {s: int(v) for s, v in exact.items()}
        for s in sorted(exact, key=lambda s: counts[s] - exact[s])[: n - sum(counts.values())]:
            counts[s] += 1
    for s, c in counts.items():
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 0:
            raise ConfigError(f"n[{s!r}] must be a non-negative integer; got {c!r}.")
    if sum(counts.values()) < 1:
        raise ConfigError(f"n asks for no image at all ({counts}); ask for at least one.")
    return {s: int(c) for s, c in counts.items()}


def _companions(values: np.ndarray, defining: list[int]) -> dict[int, np.ndarray]:
    """Defining concept column -> companion columns (see the module docstring)."""
    implied = {}
    for a in defining:
        carriers = values[:, a] == 1
        implied[a] = set(np.flatnonzero((values[carriers] == 1).all(0)).tolist()) if carriers.any() else set()
    out = {}
    for a in defining:
        shared = set().union(*(implied[b] for b in defining if b != a))
        out[a] = np.array(sorted(implied[a] - shared - set(defining)), dtype=np.int64)
    return out


class _Plan:
    """Per rule: which source classes may fill which role (see the module docstring)."""

    def __init__(self, name: str, rule: Rule, values: np.ndarray, col: dict[str, int],
                 companions: dict[int, np.ndarray]):
        self.name, self.rule = name, rule
        present = [col[c] for c in rule.present]
        absent = [col[c] for c in rule.absent]
        self.present = present
        allowed = (values[:, absent] == 0).all(1)
        comp = np.concatenate([companions[a] for a in absent] + [np.zeros(0, np.int64)])
        self.allowed = allowed
        self.clean = allowed & (values[:, comp] != 1).all(1)
        self.carriers = {p: values[:, p] == 1 for p in present}
        self.decoys = [allowed & (values[:, companions[a]] == 1).any(1) for a in absent
                       if len(companions[a])]
        self.decoys = [d for d in self.decoys if d.any()]

    def check(self, have: np.ndarray, split: str, classes: Sequence[str], concepts: Sequence[str]) -> None:
        """Raise a DataError if this rule cannot be drawn from the source classes in `have`."""
        where = f"rule {self.name!r} ({self.rule.text}), {split} split"
        if len(self.present) + len(self.decoys) > len(REGIONS):
            raise DataError(
                f"{where}: needs {len(self.present)} carrier and {len(self.decoys)} decoy regions, "
                f"more than the {len(REGIONS)} an image has; use fewer defining concepts."
            )
        for mode, pool in (("aligned", self.clean & have), ("decoyed", self.allowed & have)):
            if not pool.any():
                raise DataError(
                    f"{where}: no source class can fill a region of {mode} images (every class "
                    "has an absent concept as 1 or unknown, or, in aligned images, a companion of "
                    "one as 1). Choose other defining concepts, or a source with such classes."
                )
            for p, mask in self.carriers.items():
                if not (mask & pool).any():
                    raise DataError(
                        f"{where}: no source class carries {concepts[p]!r} in {mode} images "
                        f"(source classes with it: {[classes[c] for c in np.flatnonzero(mask)]}; "
                        "in this split, these must have every absent concept known 0, and in aligned "
                        "images no companion of them as 1). Choose other defining concepts."
                    )

    def draw(self, rng: np.random.Generator, aligned: bool, have: np.ndarray) -> list[int]:
        pool = (self.clean if aligned else self.allowed) & have
        regions: list[int] = []
        for mask in self.carriers.values():
            if mask[regions].any():
                continue  # an earlier carrier already has it
            regions.append(int(rng.choice(np.flatnonzero(mask & pool))))
        if not aligned:
            for d in self.decoys:
                if (d & have).any():
                    regions.append(int(rng.choice(np.flatnonzero(d & have))))
        while len(regions) < len(REGIONS):
            regions.append(int(rng.choice(np.flatnonzero(pool))))
        return [regions[i] for i in rng.permutation(len(REGIONS))]


def _pixels(source: ImageDataset, idx: np.ndarray) -> np.ndarray:
    """Pixels of source items `idx`, (m, H, W) or (m, H, W, 3) uint8, all one shape."""
    if isinstance(source.images, ArrayImages):
        return source.images.array[idx]
    unique, inverse = np.unique(idx, return_inverse=True)
    decoded = [source.images.decode(int(i), source.images.read(int(i))) for i in unique]
    shapes = {a.shape for a in decoded}
    if len(shapes) > 1:
        raise DataError(
            f"Dataset {source.name!r}: composite images need source images of one size; found "
            f"{sorted(shapes)[:4]}. Resize them to one size first."
        )
    return np.stack(decoded)[inverse]


def _grid(tiles: np.ndarray) -> np.ndarray:
    """(n, 4, H, W[, 3]) tiles in REGIONS order -> (n, 2H, 2W[, 3]) images."""
    top = np.concatenate([tiles[:, 0], tiles[:, 1]], axis=2)
    bottom = np.concatenate([tiles[:, 2], tiles[:, 3]], axis=2)
    return np.ascontiguousarray(np.concatenate([top, bottom], axis=1))


def image_truth(region_values: np.ndarray) -> np.ndarray:
    """(n, 4, k) per-region truth -> (n, k) per-image: 1 if any region is 1, 0 if all are 0,
    else NaN (unknown stays unknown)."""
    any_one = (region_values == 1).any(1)
    all_zero = (region_values == 0).all(1)
    return np.where(any_one, 1.0, np.where(all_zero, 0.0, np.nan)).astype(np.float32)


def _check_source(source: ImageDataset) -> None:
    if not isinstance(source, ImageDataset):
        raise ConfigError(
            f"source must be an ImageDataset (e.g. load_dataset('fashion-mnist')); got {type(source)}."
        )
    bad = [c for c in source.classes if _SEP in c or _EQ in c]
    if bad:
        raise DataError(
            f"source class names {bad[:3]} contain {_SEP!r} or {_EQ!r}, which composite ids use; rename them."
        )
    bad = [i for i in source.ids if _SEP in i]
    if bad:
        raise DataError(f"source ids {bad[:3]} contain {_SEP!r}, which composite ids use; rename them.")


def make_composite(
    source: ImageDataset,
    n: int | Mapping[str, int] = DEFAULT_N,
    seed: int = 0,
    cooccurrence: float = 0.5,
    annotations: ConceptAnnotations | None = None,
    rules: Mapping[str, Rule] | None = None,
) -> Composite:
    """Draw `n` composite images from `source` (see the module docstring for every rule).

    `annotations`: class-level concept annotations covering the source's classes (default: the
    built-in Fashion-MNIST attributes). `rules`: class name -> Rule (default `default_rules`).
    """
    counts = _check_params(n, seed, cooccurrence)
    _check_source(source)
    annotations = _default_annotations() if annotations is None else annotations
    if not isinstance(annotations, ConceptAnnotations) or annotations.level != "class":
        raise ConfigError(
            "annotations must be class-level ConceptAnnotations (one row per source class), e.g. "
            f"fashion_mnist_attributes(); got {getattr(annotations, 'level', type(annotations))!r}."
        )
    ann = annotations.for_classes(source.classes)  # a DataError names any class without a row
    concepts = ann.concepts
    rule_defs = _check_rules(default_rules(ann) if rules is None else rules, concepts)
    col = {c: j for j, c in enumerate(concepts)}
    values = np.asarray(ann.values)
    defining = list(dict.fromkeys(col[c] for r in rule_defs.values() for c in (*r.present, *r.absent)))
    companions = _companions(values, defining)
    plans = [_Plan(name, r, values, col, companions) for name, r in rule_defs.items()]

    pools = split_indices(source, seed=seed)
    n_cls = len(source.classes)
    name = NAME if source.name == "fashion-mnist" else f"{source.name}-composite"
    regions, items, labels, ids, split_col, aligned = [], [], [], [], [], []
    for s_no, split in enumerate(SPLITS):
        if not counts[split]:
            continue
        pool = pools[split]
        by_class = [pool[source.labels[pool] == c] for c in range(n_cls)]
        have = np.array([len(b) > 0 for b in by_class])
        if not have.any():
            raise DataError(
                f"the {split} split of {source.name!r} has no image to draw {counts[split]} composite "
                f"{split} images from; ask for n={{'{split}': 0, ...}} or use a larger source."
            )
        for plan in plans:
            plan.check(have, split, source.classes, concepts)
        rng = np.random.default_rng([seed, s_no])
        ys = rng.permutation(np.resize(np.arange(len(plans)), counts[split]))
        for j, y in enumerate(ys):
            al = bool(rng.random() < cooccurrence)
            cls = plans[y].draw(rng, al, have)
            idx = [int(by_class[c][rng.integers(len(by_class[c]))]) for c in cls]
            regions.append(cls)
            items.append(idx)
            labels.append(int(y))
            aligned.append(al)
            split_col.append(split)
            ids.append(f"{name}/seed{seed}/{split}/{j}" + "".join(
                f"{_SEP}{source.classes[c]}{_EQ}{source.ids[i]}" for c, i in zip(cls, idx, strict=True)))

    regions_a = np.array(regions, dtype=np.int64).reshape(-1, len(REGIONS))
    items_a = np.array(items, dtype=np.int64).reshape(-1, len(REGIONS))
    tiles = _pixels(source, items_a.ravel())
    images = _grid(tiles.reshape(len(items_a), len(REGIONS), *tiles.shape[1:]))
    region_values = values[regions_a]
    truth = image_truth(region_values)
    labels_a = np.array(labels, dtype=np.int64)
    _verify(truth, labels_a, rule_defs, concepts)

    classes = tuple(rule_defs)
    dataset = ImageDataset(name=name, classes=classes, labels=labels_a, ids=tuple(ids),
                           images=ArrayImages(images), split=tuple(split_col))
    image_ann = ConceptAnnotations("image", concepts, truth, items=tuple(ids),
                                   provenance=f"composite of {annotations.provenance or 'class annotations'}")
    return Composite(
        dataset=dataset, annotations=image_ann, regions=regions_a,
        region_items=tuple(tuple(source.ids[i] for i in row) for row in items_a),
        region_values=region_values, rules={k: r.text for k, r in rule_defs.items()}, rule_defs=rule_defs,
        companions={concepts[a]: tuple(concepts[c] for c in cs) for a, cs in companions.items()},
        aligned=np.array(aligned, dtype=bool), source_classes=tuple(source.classes),
        seed=int(seed), cooccurrence=float(cooccurrence),
    )


def _verify(truth: np.ndarray, labels: np.ndarray, rules: dict[str, Rule], concepts) -> None:
    """Every image satisfies its class's rule and no other (else a bug here, or labels that do
    not belong to these annotations)."""
    holds = np.stack([r.holds(truth, concepts) for r in rules.values()], axis=1)
    bad = np.flatnonzero((holds.sum(1) != 1) | ~holds[np.arange(len(labels)), labels])
    if bad.size:
        i = int(bad[0])
        satisfied = [n for n, h in zip(rules, holds[i], strict=True) if h]
        raise DataError(
            f"{bad.size} composite image(s) do not satisfy exactly their class's rule; e.g. image {i} "
            f"labelled {list(rules)[labels[i]]!r} satisfies {satisfied}. "
            "Were these ids made with other annotations or rules?"
        )


def parse_id(item: str) -> tuple[str, int, str, int, list[tuple[str, str]]]:
    """(name, seed, split, index, [(source class, source id)] in REGIONS order) from a composite id."""
    head, *parts = item.split(_SEP)
    bits = head.rsplit("/", 3)
    ok = (len(parts) == len(REGIONS) and len(bits) == 4 and bits[1].startswith("seed")
          and bits[1][4:].isdigit() and bits[2] in SPLITS and bits[3].isdigit()
          and all(_EQ in p for p in parts))
    if not ok:
        raise DataError(
            f"{item!r} is not a composite image id (expected '<name>/seed<seed>/<split>/<index>' and "
            f"{len(REGIONS)} '|<class>=<source id>' parts); was the dataset made by make_composite?"
        )
    return bits[0], int(bits[1][4:]), bits[2], int(bits[3]), [tuple(p.split(_EQ, 1)) for p in parts]


def composite_annotations(
    dataset: ImageDataset,
    annotations: ConceptAnnotations | None = None,
    rules: Mapping[str, Rule] | None = None,
) -> ConceptAnnotations:
    """The per-image truth of a composite dataset, rebuilt from its ids alone.

    `annotations` must be the class-level annotations it was made with (default: the built-in
    Fashion-MNIST attributes). When the dataset's classes are the rules' (`rules`, default
    `default_rules`), every label is also checked against the rules: a mismatch means other
    annotations or rules were used, and is a DataError rather than a wrong truth.
    """
    annotations = _default_annotations() if annotations is None else annotations
    if not isinstance(annotations, ConceptAnnotations) or annotations.level != "class":
        raise ConfigError("annotations must be class-level ConceptAnnotations, as given to make_composite.")
    parsed = [parse_id(i) for i in dataset.ids]
    names = sorted({c for p in parsed for c, _ in p[4]})
    ann = annotations.for_classes(names)
    row = {c: i for i, c in enumerate(names)}
    regions = np.array([[row[c] for c, _ in p[4]] for p in parsed], dtype=np.int64).reshape(-1, len(REGIONS))
    truth = image_truth(np.asarray(ann.values)[regions])
    rule_defs = None
    if rules is not None:
        rule_defs = _check_rules(rules, ann.concepts)
        if tuple(rule_defs) != tuple(dataset.classes):
            raise ConfigError(
                f"the rules' classes {list(rule_defs)} are not the dataset's {list(dataset.classes)} "
                "(same names, same order); pass the rules the dataset was made with."
            )
    else:
        try:
            rule_defs = _check_rules(default_rules(ann), ann.concepts)
        except ConfigError:
            rule_defs = None  # annotations without the default concepts: nothing to check against
    if rule_defs is not None and tuple(rule_defs) == tuple(dataset.classes):
        _verify(truth, np.asarray(dataset.labels), rule_defs, ann.concepts)
    return ConceptAnnotations("image", ann.concepts, truth, items=dataset.ids,
                              provenance=f"composite of {annotations.provenance or 'class annotations'}")


def load_composite(
    spec: str = NAME, root=None, download: bool = False, split: str | None = None
) -> ImageDataset:
    """`load_dataset`'s entry: 'fashion-mnist-composite[:n=3000,seed=0,cooccurrence=0.5]' drawn from
    Fashion-MNIST (found under `root` as `load_fashion_mnist` finds it), or one `split` of it."""
    _, _, opts = spec.partition(":")
    kwargs: dict = {}
    for part in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq or key not in ("n", "seed", "cooccurrence"):
            raise ConfigError(
                f"dataset option {part!r} in {spec!r}: expected n=<int>, seed=<int> or cooccurrence=<0..1>, "
                f"e.g. '{NAME}:n=3000,seed=0,cooccurrence=0.5'."
            )
        try:
            kwargs[key] = float(value) if key == "cooccurrence" else int(value)
        except ValueError:
            raise ConfigError(f"dataset option {key}={value!r} in {spec!r} is not a number.") from None
    if split not in (None, *SPLITS):
        raise ConfigError(f"split must be one of {list(SPLITS)} or None; got {split!r}.")
    data = make_composite(load_fashion_mnist(root, download=download), **kwargs).dataset
    if split is None:
        return data
    return data.subset([i for i, s in enumerate(data.split) if s == split])

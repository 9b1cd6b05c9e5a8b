"""Confounded binary tasks (KnoBo's protocol, Yang et al. 2024) built from any dataset.

KnoBo's confounded datasets (e.g. NIH-CheXpert: Atelectasis always from one hospital, Effusion
always from the other) tie a nuisance factor to the label: perfectly correlated with the label
in train and in the in-distribution (ID) test, reversed in the out-of-distribution (OOD) test.
A model that learnt the nuisance instead of the class scores high on ID and low on OOD. We
build the same kind of task from a dataset whose images we can edit: a synthetic nuisance
(inversion, a bright border, brightness, a background texture) is painted onto every image of
class A in train/val/id and onto every image of class B in ood (and adapt), never onto the other.

Parts (source items are disjoint across all of them):
    train, val   from the source's train (and val) split; val is drawn exactly like train
    id           from the source's test split, confounded like train
    ood          from the source's test split, confound reversed
    adapt        (optional, `n_adapt`) more reversed test-split images: the few labelled
                 images of the new domain that test-time improvement may use; never scored

Each part is a binary ImageDataset with classes (A, B), labels 0/1, class A's items first.
Ids are `<source id>#<nuisance>=<strength>` for an image that carries the nuisance and
`<source id>#clean` for one that does not (`parse_id` reads them back). Pixels are stored in
memory (ArrayImages), so the feature cache, which keys on content, never confuses an edited
image with its source; a clean grey image keeps exactly its source's bytes and cache key.

Nuisances are pure functions of one uint8 image (H, W) or (H, W, C) and a strength; each is
the identity at strength 0:
    invert      x + s (255 - 2x): at s = 1 (default) 255 - x
    border      a frame of value 255, `s` pixels wide (default 2)
    brightness  (1 - s) x + 255 s: scale 1 - s, offset 255 s, towards white (default 0.5)
    texture     diagonal stripes of value 255 s (period 4 px) wherever the image is dark
                (every channel < 32): a background texture behind a bright item (default 0.6)

The default nuisance is "border", not "invert": the offline backbone's preprocessing inverts
grey images whose border is dark (`invert="auto"`), so a clean Fashion-MNIST image and its
inverted copy reach the network as the same pixels and an "invert" confound is invisible to
it (embeddings 1e-7 apart in cosine distance on Fashion-MNIST test images, against 0.06-0.23
for a 2 px border), so ID and OOD agree. Use "invert" with a backbone that does not do this
(e.g. `offline:invert=never`); run_confounded measures and reports how much the backbone
sees of the nuisance.

Deviations from the reference (KnoBo: modules/cbm.py, DATASETS.md; notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| nuisance [1] | a real factor of the data | a synthetic edit of the pixels | exact, checkable confound |
| model selection [2] | on the ID split | on a val split drawn like train | ID not optimistic |
| sizes [3] | e.g. 1500 train, 250 ID, 500 OOD per class | 200 / 50 / 100 / 100 per class | fast |

[1] KnoBo's factors are sex, age, hospital, view position, race, body site, skin colour; no
confounded medical images exist offline, and an edit makes the confound exact.
[2] KnoBo keeps the best epoch by accuracy on the ID split (its "val"), so its ID numbers
are optimistic; we select on a separate split confounded like train and report ID unbiased.
[3] three pairs at the defaults (and 10 adapt images per class) are about 2,800 images: 70-120 s
of encoding on 2 CPU cores with the offline backbone (23-40 images/s measured), less where
clean images are already cached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError, closest
from .dataset import ImageDataset
from .images import ArrayImages
from .splits import split_indices

PARTS = ("train", "val", "id", "ood", "adapt")
# Fashion-MNIST pairs of similar items (a nuisance has the most room to become the shortcut
# where the classes are hard to tell apart) that the built-in attributes still tell apart: KnoBo
# needs a concept annotated true of one class and false of the other (none separates T-shirt/top
# from Shirt, whose collars, buttons and sleeves vary within the class)
DEFAULT_PAIRS = (("Pullover", "Coat"), ("Sneaker", "Ankle boot"), ("Sandal", "Sneaker"))
DEFAULT_NUISANCE = "border"
DARK = 32  # below this in every channel a pixel counts as background for "texture"
STRIPE_PERIOD = 4


def _check_image(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim not in (2, 3):
        raise DataError(f"A nuisance applies to one uint8 image (H, W) or (H, W, C); got "
                        f"{x.dtype} {x.shape}.")
    return x


def _fraction(name: str, s) -> float:
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s <= 1:
        raise ConfigError(f"The {name!r} nuisance's strength must be a number in [0, 1]; got {s!r}. "
                          "0 leaves the image unchanged, 1 is the strongest.")
    return float(s)


def _to_uint8(v: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def invert(x: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Blend towards the negative: x + s (255 - 2x); s = 1 gives 255 - x exactly."""
    x, s = _check_image(x), _fraction("invert", strength)
    if s == 1:
        return 255 - x
    return _to_uint8(x + s * (255.0 - 2.0 * x))


def border(x: np.ndarray, strength: int = 2) -> np.ndarray:
    """A white (255) frame `strength` pixels wide along every edge."""
    x = _check_image(x)
    w = strength
    if isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 0 or 2 * w >= min(x.shape[:2]):
        raise ConfigError(f"The 'border' nuisance's strength is the frame's width in pixels: an integer "
                          f">= 0 and under half the image's side ({min(x.shape[:2])} px); got {w!r}.")
    out = x.copy()
    if w:
        out[:w], out[-w:], out[:, :w], out[:, -w:] = 255, 255, 255, 255
    return out


def brightness(x: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Brighter and flatter: (1 - s) x + 255 s (scale 1 - s, offset 255 s)."""
    x, s = _check_image(x), _fraction("brightness", strength)
    return _to_uint8((1.0 - s) * x + 255.0 * s)


def stripes(shape: tuple[int, int], strength: float = 0.6) -> np.ndarray:
    """The fixed texture: diagonal stripes of value round(255 s), STRIPE_PERIOD px apart."""
    i, j = np.indices(shape[:2])
    on = ((i + j) // (STRIPE_PERIOD // 2)) % 2 == 0
    return np.where(on, int(np.rint(255 * _fraction("texture", strength))), 0).astype(np.uint8)


def texture(x: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """The stripes shown wherever the image is dark (every channel < DARK): a background
    texture behind a bright item; bright pixels are untouched."""
    x = _check_image(x)
    pattern = stripes(x.shape[:2], strength)
    dark = x < DARK if x.ndim == 2 else (x < DARK).all(-1)
    if x.ndim == 3:
        pattern, dark = pattern[..., None], dark[..., None]
    return np.where(dark, np.maximum(x, pattern), x).astype(np.uint8)


# name -> (function, default strength)
NUISANCES: dict[str, tuple[Callable, float | int]] = {
    "invert": (invert, 1.0), "border": (border, 2), "brightness": (brightness, 0.5),
    "texture": (texture, 0.6),
}


def check_nuisance(name: str, strength=None) -> float | int:
    """The strength to use for nuisance `name` (its default for None); ConfigError for an
    unknown name or a strength out of range."""
    if name not in NUISANCES:
        raise ConfigError(f"Unknown nuisance {name!r}.{closest(str(name), NUISANCES)} "
                          f"Known: {', '.join(NUISANCES)}.")
    fn, default = NUISANCES[name]
    strength = default if strength is None else strength
    # raises ConfigError for a bad strength (a border too wide for the actual images is
    # refused when it is applied to them)
    fn(np.zeros((64, 64), np.uint8), strength)
    return strength


def apply_nuisance(x: np.ndarray, name: str, strength=None) -> np.ndarray:
    """Nuisance `name` at `strength` (None: its default) on one image."""
    strength = check_nuisance(name, strength)  # first: an unknown name is a ConfigError, not a KeyError
    return NUISANCES[name][0](x, strength)


def nuisance_tag(name: str, strength=None) -> str:
    return f"{name}={check_nuisance(name, strength):g}"


def parse_id(item: str) -> tuple[str, str | None]:
    """(source id, nuisance tag or None for a clean image) of a confounded item's id."""
    source, sep, tag = item.rpartition("#")
    if not sep:
        raise DataError(f"{item!r} is not a confounded item id (<source id>#<tag>).")
    return source, None if tag == "clean" else tag


class ImageList:
    """In-memory images of different sizes (a folder's photos); the same bytes and keys as
    ArrayImages gives one image of that shape."""

    key_prefix = b""

    def __init__(self, images: Sequence[np.ndarray]):
        self.images = [_check_image(im) for im in images]

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> bytes:
        img = self.images[i]
        return repr(img.shape).encode() + np.ascontiguousarray(img).tobytes()

    def decode(self, i: int, data: bytes) -> np.ndarray:
        img = self.images[i]
        return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img

    def subset(self, indices: Sequence[int]) -> ImageList:
        return ImageList([self.images[i] for i in np.asarray(indices, dtype=np.int64)])


def images_from(arrays: Sequence[np.ndarray], like: np.ndarray | None = None) -> ArrayImages | ImageList:
    """ArrayImages when all images share a shape (`like`: the shape of an empty part), else an
    ImageList."""
    if not len(arrays):
        shape = (0, *like.shape[1:]) if like is not None else (0, 1, 1)
        return ArrayImages(np.zeros(shape, np.uint8))
    if len({a.shape for a in arrays}) == 1:
        return ArrayImages(np.stack(arrays))
    return ImageList(arrays)


def _source_image(data: ImageDataset, i: int) -> np.ndarray:
    # a grey array stays grey (2-D), so a clean image keeps its source's bytes and cache key
    if isinstance(data.images, ArrayImages):
        return data.images.array[i]
    if isinstance(data.images, ImageList):
        return data.images.images[i]
    return data.images.decode(i, data.images.read(i))


def check_pair(data: ImageDataset, classes: Sequence[str]) -> tuple[int, int]:
    """The source class indices of a pair; DataError unless it names two different classes
    of `data`."""
    if isinstance(classes, str) or len(classes) != 2 or classes[0] == classes[1]:
        raise DataError(f"A confounded task needs a pair of two different class names; got {classes!r}.")
    out = []
    for name in classes:
        if name not in data.classes:
            raise DataError(f"Class {name!r} of the confounded pair {list(classes)} is not a class of "
                            f"dataset {data.name!r}.{closest(str(name), data.classes)} Its classes: "
                            f"{', '.join(data.classes)}. Correct [confounded] pairs.")
        out.append(data.classes.index(name))
    return out[0], out[1]


def _pools(data: ImageDataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices the training parts (train, val) and the test parts (id, ood, adapt) draw from:
    the source's train+val split and its test split (a dataset without a given split gets one
    carved by split_indices, the same carving a run uses)."""
    s = split_indices(data, seed=seed, val_fraction=0.0)
    return np.sort(np.concatenate([s["train"], s["val"]])), s["test"]


def confounded_task(data: ImageDataset, classes: tuple[str, str], nuisance: str = DEFAULT_NUISANCE,
                    n_train: int = 200, n_val: int = 50, n_id: int = 100, n_ood: int = 100,
                    seed: int = 0, *, strength=None, n_adapt: int = 0) -> dict[str, ImageDataset]:
    """The confounded binary task on `classes` = (A, B); sizes are per class.

    Returns {"train", "val", "id", "ood", "adapt"} (adapt empty unless n_adapt > 0). In train,
    val and id every image of A carries the nuisance and none of B does; in ood and adapt the
    reverse. Items are drawn per class by a generator seeded with (seed, source class), so a
    class's items do not depend on the class it is paired with.
    """
    sizes = {"n_train": n_train, "n_val": n_val, "n_id": n_id, "n_ood": n_ood, "n_adapt": n_adapt}
    for key, v in sizes.items():
        least = 0 if key in ("n_val", "n_adapt") else 1
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < least:
            raise ConfigError(f"confounded_task: {key} must be an integer >= {least} (images per class); "
                              f"got {v!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"confounded_task: seed must be an integer >= 0; got {seed!r}.")
    tag = nuisance_tag(nuisance, strength)
    strength = check_nuisance(nuisance, strength)
    a, b = check_pair(data, classes)
    fit_pool, test_pool = _pools(data, seed)
    counts = {"fit": (("train", n_train), ("val", n_val)),
              "test": (("id", n_id), ("ood", n_ood), ("adapt", n_adapt))}
    chosen: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
    for c in (a, b):
        for pool_name, pool in (("fit", fit_pool), ("test", test_pool)):
            items = pool[data.labels[pool] == c]
            need = sum(n for _, n in counts[pool_name])
            if len(items) < need:
                split = "train" if pool_name == "fit" else "test"
                wanted = " + ".join(f"{n} {p}" for p, n in counts[pool_name])
                raise DataError(f"Class {data.classes[c]!r} has {len(items)} image(s) in the {split} split "
                                f"of {data.name!r}; the confounded task needs {need} ({wanted}). Lower "
                                "the [confounded] sizes or add images.")
            items = items[np.random.default_rng([seed, c, int(pool_name == "test")]).permutation(len(items))]
            start = 0
            for part, n in counts[pool_name]:
                chosen[part].append(items[start:start + n])
                start += n
    like = data.images.array if isinstance(data.images, ArrayImages) else None
    out = {}
    for part in PARTS:
        reversed_ = part in ("ood", "adapt")
        arrays, ids, labels = [], [], []
        for label, idx in enumerate(chosen[part]):
            carries = (label == 0) != reversed_
            for i in idx:
                x = _source_image(data, int(i))
                arrays.append(NUISANCES[nuisance][0](x, strength) if carries else x)
                ids.append(f"{data.ids[i]}#{tag if carries else 'clean'}")
                labels.append(label)
        out[part] = ImageDataset(name=f"{data.name}-confounded-{nuisance}", classes=tuple(classes),
                                 labels=np.asarray(labels, dtype=np.int64), ids=tuple(ids),
                                 images=images_from(arrays, like))
    return out


def pair_name(classes: Sequence[str]) -> str:
    return f"{classes[0]} vs {classes[1]}"


def confounded_tasks(data: ImageDataset, pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
                     nuisance: str = DEFAULT_NUISANCE, n_train: int = 200, n_val: int = 50,
                     n_id: int = 100, n_ood: int = 100, seed: int = 0, *, strength=None,
                     n_adapt: int = 0) -> dict[str, dict[str, ImageDataset]]:
    """`confounded_task` for each pair, keyed by "A vs B"; every pair is checked first."""
    for p in pairs:
        check_pair(data, p)
    names = [pair_name(p) for p in pairs]
    if len(set(names)) != len(names):
        raise DataError(f"A confounded pair is listed twice: {names}.")
    return {pair_name(p): confounded_task(data, tuple(p), nuisance, n_train, n_val, n_id, n_ood, seed,
                                          strength=strength, n_adapt=n_adapt)
            for p in pairs}


def with_nuisance(part: ImageDataset, indices: Sequence[int], nuisance: str, strength=None) -> ImageDataset:
    """Items `indices` of a confounded part with the nuisance painted on (ids re-tagged): the
    same items with and without it, to measure how far the backbone moves an image for it."""
    tag = nuisance_tag(nuisance, strength)
    strength = check_nuisance(nuisance, strength)
    idx = [int(i) for i in indices]
    arrays = [NUISANCES[nuisance][0](_source_image(part, i), strength) for i in idx]
    ids = tuple(f"{parse_id(part.ids[i])[0]}#{tag}" for i in idx)
    like = part.images.array if isinstance(part.images, ArrayImages) else None
    return ImageDataset(part.name, part.classes, part.labels[idx], ids, images_from(arrays, like))

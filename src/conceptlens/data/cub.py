"""CUB-200-2011 (Wah et al., 2011): 11,788 bird photos of 200 species, with the official split.

    CUB_200_2011/
        images.txt              <image_id> <path under images/>
        image_class_labels.txt  <image_id> <class_id>           (1-based class ids)
        train_test_split.txt    <image_id> <is_training_image>  (1 = train, 0 = test)
        classes.txt             <class_id> <NNN.Class_name>
        images/<NNN.Class_name>/<file>.jpg
        attributes/             the 312 attribute labels: annotations.load_cub reads them

Ids are the paths of images.txt, the items of `conceptlens.annotations.load_cub`, so the
per-image attributes match the images by id ([grounding] annotations = "auto" finds them for
a cub: dataset). Class names drop the `NNN.` prefix ('001.Black_footed_Albatross' ->
'Black footed Albatross').
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import ImageDataset, normalize_class_names
from .images import DEFAULT_MAX_PIXELS, FileImages
from .kinds import DatasetKind, register

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
NAME = "CUB-200-2011"


def _table(path: Path) -> dict[int, str]:
    """`<id> <value>` lines -> {id: value}; a malformed line or a repeated id names the line."""
    out: dict[int, str] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value.strip():
            raise DataError(f"{path} line {n}: expected '<id> <value>', found {line.strip()!r}.")
        if int(key) in out:
            raise DataError(f"{path} line {n}: id {key} appears twice.")
        out[int(key)] = value.strip()
    if not out:
        raise DataError(f"{path} has no entries.")
    return out


def _root(location: Path) -> Path:
    if (location / "CUB_200_2011").is_dir() and not (location / "images.txt").is_file():
        location = location / "CUB_200_2011"
    if not location.is_dir():
        raise DataError(f"CUB folder {location} does not exist; give the unpacked CUB_200_2011/ ({URL}).")
    missing = [f for f in FILES if not (location / f).is_file()]
    if missing:
        raise DataError(f"{location} lacks {', '.join(missing)}: a CUB-200-2011 folder holds "
                        f"{', '.join(FILES)} "
                        f"and images/. Give the CUB_200_2011/ folder of the official archive ({URL}).")
    return location


def load_cub(location, allow_non_ascii: bool = False,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageDataset:
    """CUB-200-2011's images, 200 classes and official train/test split from `location`."""
    root = _root(Path(location))
    images = _table(root / "images.txt")
    labels = _table(root / "image_class_labels.txt")
    split = _table(root / "train_test_split.txt")
    classes = _table(root / "classes.txt")
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        absent = sorted(set(images) - set(table))
        extra = sorted(set(table) - set(images))
        if absent:
            raise DataError(f"{root / name} gives no entry for image id(s) {absent[:10]} of images.txt; "
                            f"every "
                            "image needs one. Restore the file from the official archive.")
        if extra:
            raise DataError(f"{root / name} names image id(s) {extra[:10]} that images.txt does not list; "
                            "the files come from different copies. Restore them from the official archive.")
    bad_split = [(i, v) for i, v in split.items() if v not in ("0", "1")]
    if bad_split:
        raise DataError(f"{root / 'train_test_split.txt'}: image {bad_split[0][0]} has {bad_split[0][1]!r}; "
                        "expected 1 (train) or 0 (test).")
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise DataError(f"{root / 'classes.txt'}: class ids must be 1..{len(class_ids)}; got "
                        f"{class_ids[:10]}.")
    unknown = [(i, v) for i, v in labels.items() if not v.isdigit() or int(v) not in classes]
    if unknown:
        raise DataError(f"{root / 'image_class_labels.txt'}: image {unknown[0][0]} has class "
                        f"{unknown[0][1]!r}, "
                        f"not a class id of classes.txt (1..{len(classes)}).")
    order = sorted(images)
    paths = [root / "images" / images[i] for i in order]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) listed in {root / 'images.txt'} are missing: "
                        + "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                        + f". Unpack images/ of the official archive into {root}.")
    names = [re.sub(r"^\d+\.", "", classes[c]) for c in class_ids]
    return ImageDataset(
        name=NAME,
        classes=tuple(normalize_class_names(names, allow_non_ascii)),
        labels=np.asarray([int(labels[i]) - 1 for i in order], dtype=np.int64),
        ids=tuple(images[i] for i in order),
        images=FileImages(paths, max_pixels),
        split=tuple("train" if split[i] == "1" else "test" for i in order),
    )


def cub_root(dataset: ImageDataset) -> Path | None:
    """The CUB_200_2011/ folder a `load_cub` dataset came from (for its attribute annotations)."""
    if dataset.name != NAME or not isinstance(dataset.images, FileImages) or not len(dataset):
        return None
    path, item = dataset.images.paths[0], dataset.ids[0]
    return path.parents[len(Path(item).parts)]


register(DatasetKind(
    "cub", load_cub, example='"cub:/data/CUB_200_2011"',
    layout="CUB_200_2011/ with images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
           "images/<class>/<file>.jpg"))

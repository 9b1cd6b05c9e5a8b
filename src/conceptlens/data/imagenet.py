"""ImageNet-style folders with a synset map, and torchvision's ImageFolder layout.

`imagenet:<root>` (ILSVRC-2012 as unpacked for torchvision or from Kaggle's ILSVRC/Data/CLS-LOC):

    <root>/train/<wnid>/*.JPEG           one folder per WordNet id (n01440764, ...)
    <root>/val/<wnid>/*.JPEG             the validation images in class folders, or
    <root>/val/*.JPEG + LOC_val_solution.csv   flat, labelled by Kaggle's solution file
                                         (ImageId,PredictionString; the first wnid is the label)
                    or + ILSVRC2012_devkit_t12/data/{ILSVRC2012_validation_ground_truth.txt, meta.mat}
                                         (the official devkit, in <root> or beside it)
    LOC_synset_mapping.txt | synset_words.txt | words.txt   wnid -> readable names
                                         ("n01440764 tench, Tinca tinca"; words.txt is tab-separated)

The map and solution files are looked for in <root> and its parent. A class is named by its
first readable name; a name two wnids share (ImageNet has two 'crane's and two 'maillot's)
gets its full synonym list, then its wnid. The validation images are the run's test split
(ImageNet's test labels were never published; papers report validation accuracy).

`imagefolder:<root>` is torchvision's ImageFolder: <root>/<class>/<image> (data/folder.py), or,
when <root> holds only train/, val/ and test/ folders, one ImageFolder per split.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import ImageDataset, normalize_class_names
from .folder import class_folders, load_image_folder
from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, FileImages
from .kinds import DatasetKind, register

MAPS = ("LOC_synset_mapping.txt", "synset_words.txt", "words.txt")
SOLUTION = "LOC_val_solution.csv"
KAGGLE = Path("ILSVRC") / "Data" / "CLS-LOC"
DEVKIT = Path("ILSVRC2012_devkit_t12") / "data"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


def _search(root: Path, names: tuple[str, ...]) -> Path | None:
    folders = [root, root.parent] + ([root.parents[2]] if root.parts[-3:] == KAGGLE.parts else [])
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def read_synsets(path: Path) -> dict[str, list[str]]:
    """wnid -> its readable names, from LOC_synset_mapping.txt / synset_words.txt / words.txt."""
    out: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, names = line.strip().partition("\t" if "\t" in line else " ")
        if not (wnid.startswith("n") and wnid[1:].isdigit()) or not names.strip():
            raise DataError(f"{path} line {n}: expected '<wnid> <name>[, <name>...]' (e.g. 'n01440764 tench, "
                            f"Tinca tinca'), found {line.strip()!r}.")
        if wnid in out:
            raise DataError(f"{path} line {n}: wnid {wnid} appears twice.")
        out[wnid] = [s.strip() for s in names.split(",") if s.strip()]
    return out


def class_names(wnids: list[str], synsets: dict[str, list[str]]) -> list[str]:
    """The first readable name of each wnid; shared first names get the full list, then the wnid."""
    first = [synsets[w][0] for w in wnids]
    full = [", ".join(synsets[w]) for w in wnids]
    key = [s.casefold() for s in first]
    names = [full[i] if key.count(key[i]) > 1 else first[i] for i in range(len(wnids))]
    key = [s.casefold() for s in names]
    return [f"{names[i]} ({w})" if key.count(key[i]) > 1 else names[i] for i, w in enumerate(wnids)]


def _unknown(where: Path, wnids, synsets, map_path: Path) -> None:
    unknown = sorted(set(wnids) - set(synsets))
    if unknown:
        raise DataError(f"{where}: wnid(s) {unknown[:10]} are not in {map_path} ({len(synsets)} wnids); the "
                        "folder and the synset map come from different releases, or a folder is "
                        "misnamed. Use "
                        "the map that ships with these images.")


def _devkit_labels(root: Path, files: list[Path]) -> list[str] | None:
    """The devkit's labels of the flat val images (ILSVRC2012_validation_ground_truth.txt holds one
    ILSVRC2012_ID per image, in file-number order; data/meta.mat maps the ids to wnids), or None."""
    folders = [root / DEVKIT, root.parent / DEVKIT, root / "data", root]
    base = next((d for d in folders if (d / GROUND_TRUTH).is_file()), None)
    if base is None:
        return None
    meta = base / "meta.mat"
    if not meta.is_file():
        raise DataError(f"{base / GROUND_TRUTH} gives ILSVRC2012 class ids, and {meta}, which maps them to "
                        "wnids, is missing. Unpack the whole devkit (ILSVRC2012_devkit_t12.tar.gz).")
    import scipy.io

    try:
        synsets = scipy.io.loadmat(str(meta), squeeze_me=True)["synsets"]
        wnid_of = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], strict=True)}
    except (OSError, ValueError, KeyError, TypeError, NotImplementedError) as e:
        raise DataError(f"{meta} is not the devkit's meta.mat (a 'synsets' struct with ILSVRC2012_ID and "
                        f"WNID): {type(e).__name__}: {e}.") from e
    truth = [int(x) for x in (base / GROUND_TRUTH).read_text().split()]
    labels = []
    for p in files:
        digits = p.stem.rpartition("_")[2]
        if not digits.isdigit() or not 1 <= int(digits) <= len(truth):
            raise DataError(f"{p}: the devkit labels images ILSVRC2012_val_00000001 .. {len(truth):08d} by "
                            "number; this name has no number in that range.")
        cid = truth[int(digits) - 1]
        if cid not in wnid_of:
            raise DataError(f"{base / GROUND_TRUTH} line {int(digits)}: class id {cid} is not in {meta}.")
        labels.append(wnid_of[cid])
    return labels


def _flat_val(val: Path, root: Path, max_pixels) -> tuple[list[Path], list[str]]:
    solution = _search(root, (SOLUTION,))
    files = sorted(p for p in val.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if solution is None and (devkit := _devkit_labels(root, files)) is not None:
        return files, devkit
    if solution is None:
        raise DataError(f"{val} holds images without class folders, and neither {SOLUTION} nor the devkit's "
                        f"{GROUND_TRUTH} (+ meta.mat) was found in {root} or {root.parent} to label them. "
                        f"Put Kaggle's {SOLUTION} or the devkit there, or sort the images into {val}/<wnid>/ "
                        "folders (e.g. with the valprep.sh script torchvision's docs point to).")
    labels: dict[str, str] = {}
    try:
        with open(solution, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
                raise DataError(f"{solution}: expected the header ImageId,PredictionString; got "
                                f"{reader.fieldnames}.")
            for n, row in enumerate(reader, 2):
                pred = (row["PredictionString"] or "").split()
                if not row["ImageId"] or not pred:
                    raise DataError(f"{solution} line {n}: empty ImageId or PredictionString.")
                labels[row["ImageId"].strip()] = pred[0]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"Cannot read {solution}: {e}.") from e
    unlabelled = [p.name for p in files if p.stem not in labels]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} image(s) in {val} have no row in {solution}: {unlabelled[:5]}. "
                        "Use the solution file of this validation set, or remove those images.")
    return files, [labels[p.stem] for p in files]


def load_imagenet(location, allow_non_ascii: bool = False,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageDataset:
    """ImageNet-style train/ and val/ folders with a synset map (see the module docstring)."""
    root = Path(location)
    if (root / KAGGLE).is_dir():
        root = root / KAGGLE
    train, val = root / "train", root / "val"
    if not train.is_dir():
        raise DataError(f"{root} has no train/ folder: expected {root}/train/<wnid>/*.JPEG and {root}/val/ "
                        "(class folders, or flat with LOC_val_solution.csv).")
    map_path = _search(root, MAPS)
    if map_path is None:
        raise DataError(f"No synset map ({', '.join(MAPS)}) in {root} or {root.parent}: it names each wnid "
                        "(n01440764 -> tench). Put LOC_synset_mapping.txt (Kaggle) or the devkit's "
                        "synset_words.txt there.")
    synsets = read_synsets(map_path)
    tr = load_image_folder(train, allow_non_ascii=True, max_pixels=max_pixels)
    wnids = [d.name for d in class_folders(train)]
    _unknown(train, wnids, synsets, map_path)
    index = {w: i for i, w in enumerate(wnids)}
    paths = list(tr.images.paths)
    labels = tr.labels.tolist()
    split = ["train"] * len(paths)
    if val.is_dir():
        val_dirs = [d.name for d in class_folders(val)]
        if val_dirs:
            vf = load_image_folder(val, allow_non_ascii=True, max_pixels=max_pixels)
            vpaths, vwnids = list(vf.images.paths), [val_dirs[y] for y in vf.labels]
        else:
            vpaths, vwnids = _flat_val(val, root, max_pixels)
        _unknown(val, vwnids, synsets, map_path)
        untrained = sorted(set(vwnids) - set(index))
        if untrained:
            raise DataError(f"{val}: wnid(s) {untrained[:10]} have validation images but no folder in "
                            f"{train}; "
                            "add their training images or remove them.")
        paths += vpaths
        labels += [index[w] for w in vwnids]
        split += ["test"] * len(vpaths)
    names = class_names(wnids, synsets)
    return ImageDataset(
        name=root.name if root.name not in ("CLS-LOC", "") else "imagenet",
        classes=tuple(normalize_class_names(names, allow_non_ascii)),
        labels=np.asarray(labels, dtype=np.int64),
        ids=tuple(str(p.relative_to(root)) for p in paths),
        images=FileImages(paths, max_pixels),
        split=tuple(split),
    )


SPLIT_DIRS = {"train": "train", "val": "val", "test": "test"}


def load_imagefolder(location, allow_non_ascii: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageDataset:
    """torchvision's ImageFolder: <root>/<class>/<image>; or <root>/{train,val,test}/<class>/<image>."""
    root = Path(location)
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a folder.")
    top = [d.name for d in class_folders(root)]
    if not top or not set(top) <= set(SPLIT_DIRS) or "train" not in top:
        return load_image_folder(root, allow_non_ascii, max_pixels)
    parts = {s: load_image_folder(root / s, allow_non_ascii, max_pixels) for s in top}
    classes = parts["train"].classes
    for s, part in parts.items():
        extra = sorted(set(part.classes) - set(classes))
        if extra:
            raise DataError(f"{root / s} has class folder(s) {extra[:10]} that {root / 'train'} lacks; "
                            f"every class "
                            "needs training images. Add them to train/ or remove the folders.")
    index = {c: i for i, c in enumerate(classes)}
    paths, labels, ids, split = [], [], [], []
    for s in ("train", "val", "test"):
        if s in parts:
            part = parts[s]
            paths += part.images.paths
            labels += [index[part.classes[y]] for y in part.labels]
            ids += [f"{s}/{i}" for i in part.ids]
            split += [s] * len(part)
    return dataclasses.replace(parts["train"], name=root.name, labels=np.asarray(labels, dtype=np.int64),
                               ids=tuple(ids), images=FileImages(paths, max_pixels), split=tuple(split))


register(DatasetKind(
    "imagenet", load_imagenet, example='"imagenet:/data/imagenet"',
    layout="train/<wnid>/*.JPEG, val/<wnid>/*.JPEG (or val/*.JPEG with LOC_val_solution.csv) and a synset "
           "map LOC_synset_mapping.txt / synset_words.txt / words.txt"))
register(DatasetKind(
    "imagefolder", load_imagefolder, example='"imagefolder:/data/pets"',
    layout="<root>/<class>/<image>, or <root>/train/<class>/<image> with val/ and test/ alike"))

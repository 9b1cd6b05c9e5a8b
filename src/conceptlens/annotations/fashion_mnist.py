"""Built-in class-level concept annotations for Fashion-MNIST, shipped with the package.

`fashion_mnist_attributes()` gives 36 visual attributes (parts, shapes, materials, uses) of the
10 Fashion-MNIST classes as short concept texts a CLIP-style text encoder reads ("has laces",
"covers the ankle", "has two legs"). `attribute_rules()` gives, for each attribute, the one
sentence that decided its cells. They are the ground truth of every grounding number computed
on Fashion-MNIST, so each cell follows its written rule and nothing else.

Provenance: the attributes and rules were written for conceptlens from the Fashion-MNIST class
definitions (Xiao et al., 2017: Zalando product photos sorted into 10 product classes), checked
against the first 80 test images of each class and, for the two shape attributes, against the
bounding boxes of all 10,000 test images. They are not crowd-sourced and not per image: a cell
says what holds for the class's items, not for every image of it.

Cell convention (the same for every rule):

- 1: holds for nearly every item of the class (about 85% or more);
- 0: holds for nearly none (about 15% or fewer), including attributes of parts the item does
  not have ("has an open toe" for a T-shirt is 0);
- empty (unknown): the class mixes both (Dress: sleeveless, short- and long-sleeved), or the
  photos and the class definition cannot decide it (pockets on trousers). Unknown cells are
  never guessed; grounding measures skip them.

Every attribute is 1 for at least one class and 0 for at least one (otherwise it separates
nothing), and every class has at least 3 attributes that are 1; `fashion_mnist_attributes`
checks this on every load. Attributes one might expect but which no class has for nearly
every item are left out rather than guessed: a collar (about 6 in 10 Shirts; Coats mix collars
and hoods), buttons down the front (Shirt and Coat mix buttons, zips and pull-on tops), a hood,
a zipper, a (high) heel (Sandal and Ankle boot mix flat and heeled), and knitted wool (Pullover
mixes knitted sweaters with printed sweatshirts).

The files (package data, validated on load like a user's file):
`data/fashion_mnist_attributes.csv` (the class-level CSV `load_class_csv` reads: header
`attribute,<class>,...`, one row per attribute, cells 1 / 0 / empty) and
`data/fashion_mnist_rules.csv` (`attribute,rule`).
"""

from __future__ import annotations

import csv
import io
import os
from functools import cache
from importlib import resources
from pathlib import Path

from conceptlens.annotations.annotations import (
    ConceptAnnotations,
    _concept_key,
    load_class_csv,
    load_image_csv,
)
from conceptlens.errors import DataError

# Fashion-MNIST's classes in label order. Defined here, below the data layer (conceptlens.data
# re-exports it), so that the built-in table can check its rows without importing the datasets.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
PROVENANCE = (
    "conceptlens built-in Fashion-MNIST attributes: rules written for conceptlens from the "
    "Fashion-MNIST class definitions and checked against test images; not crowd-sourced"
)
# name -> (annotation CSV, rules CSV, expected class order) under annotations/data/
BUILTINS = {
    "fashion-mnist": ("fashion_mnist_attributes.csv", "fashion_mnist_rules.csv", FASHION_MNIST_CLASSES),
}
MIN_TRUE_PER_CLASS = 3


def _builtin(name: str) -> tuple[str, str, tuple[str, ...]]:
    try:
        return BUILTINS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise DataError(
            f"unknown built-in annotation set {name!r}; built-ins: {sorted(BUILTINS)}"
        ) from None


def _data_file(filename: str):
    return resources.files("conceptlens.annotations").joinpath("data", filename)


def _read_rules(filename: str) -> dict[str, str]:
    """`attribute,rule` rows -> {attribute: rule}, every fault named with its line."""
    where = f"conceptlens/annotations/data/{filename}"
    try:
        text = _data_file(filename).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the packaged rules file {where}: {exc}; reinstall conceptlens") from exc
    reader = csv.reader(io.StringIO(text))
    rules: dict[str, str] = {}
    seen: dict[str, int] = {}
    header = None
    for cells in reader:
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if header is None:
            header = cells
            if header != ["attribute", "rule"]:
                raise DataError(
                    f"{where}, line {reader.line_num}: header must be 'attribute,rule', got {cells}"
                )
            continue
        if len(cells) != 2 or not all(cells):
            raise DataError(
                f"{where}, line {reader.line_num}: expected a non-empty attribute and rule, got {cells}"
            )
        key = _concept_key(cells[0])
        if key in seen:
            raise DataError(f"{where}, line {reader.line_num}: {cells[0]!r} repeats line {seen[key]}")
        seen[key] = reader.line_num
        rules[cells[0]] = cells[1]
    if not rules:
        raise DataError(f"{where} has no rules")
    return rules


def check_builtin(ann: ConceptAnnotations, rules: dict[str, str], classes: tuple[str, ...],
                  where: str = "built-in annotations") -> None:
    """The checks a built-in annotation set must pass (see the module docstring); DataError if not."""
    if ann.classes != tuple(classes):
        raise DataError(
            f"{where}: classes {list(ann.classes)}, expected the dataset's {list(classes)} in order"
        )
    missing_rule = [c for c in ann.concepts if c not in rules]
    no_row = [r for r in rules if r not in ann.concepts]
    if missing_rule or no_row:
        raise DataError(
            f"{where}: attributes without a rule {missing_rule}; rules without an attribute {no_row}"
        )
    v = ann.values
    never_true = [c for j, c in enumerate(ann.concepts) if not (v[:, j] == 1).any()]
    never_false = [c for j, c in enumerate(ann.concepts) if not (v[:, j] == 0).any()]
    if never_true or never_false:
        raise DataError(
            f"{where}: every attribute must be 1 for some class and 0 for another (else it separates "
            f"nothing); never 1: {never_true}; never 0: {never_false}"
        )
    per_class = (v == 1).sum(1)
    thin = [f"{c} ({n})" for c, n in zip(ann.classes, per_class, strict=True) if n < MIN_TRUE_PER_CLASS]
    if thin:
        raise DataError(f"{where}: classes with fewer than {MIN_TRUE_PER_CLASS} true attributes: {thin}")


@cache
def _load_builtin(name: str) -> tuple[ConceptAnnotations, dict[str, str]]:
    csv_name, rules_name, classes = _builtin(name)
    with resources.as_file(_data_file(csv_name)) as path:
        # through the public loader, so the shipped file gets exactly a user file's checks
        ann = load_class_csv(path)
    rules = _read_rules(rules_name)
    check_builtin(ann, rules, classes, f"conceptlens/annotations/data/{csv_name}")
    ann = ConceptAnnotations("class", ann.concepts, ann.values, classes=ann.classes, provenance=PROVENANCE)
    return ann, rules


def fashion_mnist_attributes() -> ConceptAnnotations:
    """The built-in class-level attributes, rows in Fashion-MNIST's class order (values read-only)."""
    return _load_builtin("fashion-mnist")[0]


def attribute_rules(name: str = "fashion-mnist") -> dict[str, str]:
    """attribute text -> the rule that decided its cells, for a built-in annotation set."""
    _builtin(name)  # an unknown or unhashable name: DataError listing the built-ins
    return dict(_load_builtin(name)[1])


def _first_cell(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc
    for cells in csv.reader(io.StringIO(text)):
        if any(c.strip() for c in cells):
            return cells[0].strip()
    raise DataError(f"annotation file {path} is empty: no header")


def load_annotations(spec: str | os.PathLike) -> ConceptAnnotations:
    """A built-in annotation set by name ("fashion-mnist"), or a CSV file by path.

    A file is read as class-level (header `attribute,<class>,...`) or per-image (header
    `path,<attribute>,...`), told apart by the header's first cell.
    """
    if isinstance(spec, str) and spec in BUILTINS:
        return _load_builtin(spec)[0]
    path = Path(spec)
    if not path.is_file():
        raise DataError(
            f"annotations {str(spec)!r} are neither a built-in set ({', '.join(sorted(BUILTINS))}) nor an "
            "existing file; give a built-in name or the path of a CSV with header "
            "'attribute,<class>,...' (per class) or 'path,<attribute>,...' (per image)"
        )
    first = _first_cell(path).casefold()
    if first == "attribute":
        return load_class_csv(path)
    if first == "path":
        return load_image_csv(path)
    raise DataError(
        f"{path}: header starts with {first!r}; expected 'attribute' (class-level CSV: "
        "attribute,<class>,...) or 'path' (per-image CSV: path,<attribute>,...)"
    )


__all__ = ["BUILTINS", "attribute_rules", "check_builtin", "fashion_mnist_attributes", "load_annotations"]

"""Human concept annotations (class or image level) and their plain CSV form.

Values are 1.0 (present), 0.0 (absent) or NaN (unknown): unknown is kept apart from absent so a
grounding measure can skip it instead of counting a guess as a "no".
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conceptlens._io import write_text
from conceptlens.errors import ConfigError, DataError

LEVELS = ("class", "image")
# the first header cell of each CSV form; it also tells a class file from a per-image one
_FIRST_CELL = {"class": "attribute", "image": "path"}
_CELL = {"1": 1.0, "0": 0.0, "": np.nan}


def line_error(path: str | os.PathLike, line: int, message: str) -> DataError:
    """A DataError that names the file and line, so a bad row can be found and fixed by hand."""
    return DataError(f"{path}, line {line}: {message}")


def _duplicates(names: Iterable[str], key=lambda s: s) -> list[str]:
    """Every name whose key occurs more than once, all spellings kept so the message shows each."""
    names = list(names)
    counts = Counter(key(n) for n in names)
    return list(dict.fromkeys(n for n in names if counts[key(n)] > 1))


def _concept_key(text: str) -> str:
    # "Red" and " red" would be the same concept to a text encoder, so they count as duplicates
    return text.strip().casefold()


@dataclass(frozen=True, eq=False)  # eq on an array field would raise, not compare
class ConceptAnnotations:
    """Which concepts hold for each class (level='class') or each image (level='image').

    `values` has one row per entry of `classes` (class level) or `items` (image level) and one
    column per concept. It is stored read-only, so a shared instance cannot be changed behind a
    caller's back.
    """

    level: str
    concepts: tuple[str, ...]
    values: np.ndarray
    classes: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    provenance: str = ""
    _rows: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ConfigError(f"annotation level must be one of {LEVELS}, got {self.level!r}")
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731 (frozen dataclass)
        set_("concepts", tuple(str(c) for c in self.concepts))
        set_("classes", tuple(str(c) for c in self.classes))
        set_("items", tuple(str(i) for i in self.items))
        rows, other = (self.classes, "items") if self.level == "class" else (self.items, "classes")
        row_kind = "classes" if self.level == "class" else "items"
        if getattr(self, other):
            raise DataError(f"{self.level}-level annotations take `{row_kind}`, not `{other}`")
        set_("_rows", rows)

        values = np.array(self.values, dtype=np.float32)  # a copy: the caller's array stays theirs
        if values.shape != (len(rows), len(self.concepts)):
            raise DataError(
                f"annotation values have shape {values.shape}, expected "
                f"({len(rows)} {row_kind}, {len(self.concepts)} concepts)"
            )
        known = values[~np.isnan(values)]
        bad = np.unique(known[(known != 0.0) & (known != 1.0)])
        if bad.size:
            raise DataError(f"annotation values must be 1, 0 or NaN (unknown); found {bad[:5].tolist()}")
        values.flags.writeable = False
        set_("values", values)

        dups = _duplicates(self.concepts, _concept_key)
        if dups:
            raise DataError(f"duplicate concept texts (ignoring case and spaces): {dups}")
        dups = _duplicates(rows)
        if dups:
            raise DataError(f"duplicate {row_kind}: {dups}")

    @property
    def rows(self) -> tuple[str, ...]:
        """The row names: `classes` or `items`, whichever the level uses."""
        return self._rows

    def for_classes(self, names: Sequence[str]) -> ConceptAnnotations:
        """The rows for `names`, in that order (e.g. a dataset's class order)."""
        if self.level != "class":
            raise DataError("for_classes needs class-level annotations; these are per image")
        names = [str(n) for n in names]
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DataError(
                f"classes with no annotations: {unknown}; annotated classes are {list(self.classes)}"
            )
        rows = [index[n] for n in names]
        return ConceptAnnotations(
            "class", self.concepts, self.values[rows], classes=tuple(names), provenance=self.provenance
        )

    def per_image(self, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n, k) annotations for n images, each taking its class's row: labels index `classes`."""
        if self.level != "class":
            raise DataError("per_image needs class-level annotations; these are already per image")
        labels = np.asarray(labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise DataError(f"labels must be a 1-D integer array, got shape {labels.shape} {labels.dtype}")
        out_of_range = labels[(labels < 0) | (labels >= len(self.classes))]
        if out_of_range.size:
            raise DataError(
                f"labels {np.unique(out_of_range)[:5].tolist()} are outside 0..{len(self.classes) - 1} "
                f"({len(self.classes)} annotated classes)"
            )
        return self.values[labels.astype(np.intp)].copy()

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the plain CSV form that `load_class_csv` / `load_image_csv` read back."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cell = lambda v: "" if np.isnan(v) else str(int(v))  # noqa: E731
        if self.level == "class":
            # one row per attribute: classes are few, attributes many, so this reads well
            writer.writerow(["attribute", *self.classes])
            for j, concept in enumerate(self.concepts):
                writer.writerow([concept, *(cell(v) for v in self.values[:, j])])
        else:
            writer.writerow(["path", *self.concepts])
            for i, item in enumerate(self.items):
                writer.writerow([item, *(cell(v) for v in self.values[i])])
        return write_text(path, buf.getvalue())


def class_level(annotations: ConceptAnnotations, classes: Sequence[str], ids: Sequence[str] | None = None,
                labels: Sequence[int] | None = None) -> ConceptAnnotations:
    """Class-level annotations with rows = `classes` in that order.

    Class-level input: `for_classes`. Image-level input: `ids`/`labels` (indices into `classes`)
    say each image's class; an attribute is 1 for a class when all its annotated images have it,
    0 when none has it, NaN when they disagree or none is annotated. Annotated items not among
    `ids` are ignored (a file may cover more images than a dataset); none at all is an error.
    """
    classes = tuple(str(c) for c in classes)
    if annotations.level == "class":
        return annotations.for_classes(classes)
    if ids is None or labels is None:
        raise DataError("per-image annotations need the images' ids and labels to say what is true of a "
                        "class.")
    labels = np.asarray(labels)
    label_of = dict(zip(map(str, ids), labels.tolist(), strict=True))
    rows = [(i, label_of[item]) for i, item in enumerate(annotations.items) if item in label_of]
    if not rows:
        raise DataError(f"none of the {len(annotations.items)} annotated images (e.g. "
                        f"{list(annotations.items[:3])}) is among the {len(label_of)} images given (e.g. "
                        f"{list(label_of)[:3]}); the annotation file's paths must be the dataset's ids.")
    idx = np.array([r for r, _ in rows])
    lab = np.array([c for _, c in rows])
    values = np.asarray(annotations.values, dtype=np.float64)[idx]
    out = np.full((len(classes), len(annotations.concepts)), np.nan)
    for c in range(len(classes)):
        v = values[lab == c]
        known = (~np.isnan(v)).sum(0)
        pos = np.nansum(v, axis=0)
        out[c] = np.where(known == 0, np.nan, np.where(pos == known, 1.0, np.where(pos == 0, 0.0, np.nan)))
    return ConceptAnnotations("class", annotations.concepts, out, classes=classes,
                              provenance=f"{annotations.provenance} (class level by unanimity)")


def _read_csv(path: Path, level: str) -> tuple[list[str], list[tuple[int, str, list[float]]]]:
    """Header names (after the first cell) and (line, name, values) rows, every fault with its line."""
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet programs put first
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[tuple[int, str, list[float]]] = []
    first_seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue  # blank lines carry nothing; skipping them keeps hand-edited files usable
        if header is None:
            header = cells
            want = _FIRST_CELL[level]
            if header[0].casefold() != want:
                raise line_error(path, line, f"header must start with {want!r}, found {header[0]!r}")
            names = header[1:]
            if not names or any(not n for n in names):
                raise line_error(path, line, f"header has an empty name: {header}")
            key = _concept_key if level == "image" else (lambda s: s)
            dups = _duplicates(names, key)
            if dups:
                raise line_error(path, line, f"duplicate header names: {dups}")
            continue
        if len(cells) != len(header):
            raise line_error(path, line, f"{len(cells)} cells, expected {len(header)} as in the header")
        name = cells[0]
        if not name:
            raise line_error(path, line, f"empty {_FIRST_CELL[level]} cell")
        key = _concept_key(name) if level == "class" else name
        if key in first_seen:
            raise line_error(path, line, f"duplicate row {name!r} (first on line {first_seen[key]})")
        first_seen[key] = line
        bad = [c for c in cells[1:] if c not in _CELL]
        if bad:
            raise line_error(path, line, f"cells must be 1, 0 or empty (unknown); found {bad[:5]}")
        rows.append((line, name, [_CELL[c] for c in cells[1:]]))
    if header is None:
        raise line_error(path, 1, "empty file: no header")
    if not rows:
        raise line_error(path, reader.line_num or 1, "no rows after the header")
    return header[1:], rows


def load_class_csv(path: str | os.PathLike) -> ConceptAnnotations:
    """Class-level CSV: header `attribute,<class>,...`, one row per attribute, cells 1 / 0 / empty."""
    path = Path(path)
    classes, rows = _read_csv(path, "class")
    values = np.array([r[2] for r in rows], dtype=np.float32).T  # rows are attributes; store classes
    return ConceptAnnotations(
        "class", tuple(r[1] for r in rows), values, classes=tuple(classes), provenance=f"csv:{path}"
    )


def load_image_csv(path: str | os.PathLike) -> ConceptAnnotations:
    """Per-image CSV: header `path,<attribute>,...`, one row per image, cells 1 / 0 / empty."""
    path = Path(path)
    concepts, rows = _read_csv(path, "image")
    values = np.array([r[2] for r in rows], dtype=np.float32)
    return ConceptAnnotations(
        "image", tuple(concepts), values, items=tuple(r[1] for r in rows), provenance=f"csv:{path}"
    )

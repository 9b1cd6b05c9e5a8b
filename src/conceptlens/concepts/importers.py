"""Read published concept files: LaBo, Label-free CBM, plain text, CSV, our JSON.

`import_concepts(path)` tells the format from the content, not the name: a conceptlens set by
its "format" key; a {class: [concepts]} map is Label-free CBM's (`gpt3_<dataset>_*.json`)
when every class's list is in sorted order, as in the files Label-free CBM ships
(`data/concept_sets/gpt3_init/*.json`), else LaBo's (`class2concepts.json`,
`selected_concepts/*.json`: generation order); `.csv` and `.txt` by
their suffix. A class listed with no concept is imported with a warning (logged, and named
by `empty_classes` for the CLI).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

from ..errors import DataError
from .conceptset import FORMAT, ConceptSet, parse_json, read_text
from .normalize import Rejected, collect

log = logging.getLogger("conceptlens")


def _json(path: Path):
    return parse_json(read_text(path), path)


def _class_map(path: Path, obj, source: str, prompt: str | None) -> tuple[ConceptSet, list[Rejected]]:
    if not isinstance(obj, dict) or not all(isinstance(v, list) for v in obj.values()):
        raise DataError(f"{path} must map each class name to a list of concept strings.")
    prov = {"source": source, "file": path.name, "model": "gpt-3"}
    if prompt:
        prov["prompt"] = prompt
    entries = ((text, [cls], prov | {"class": cls}) for cls, texts in obj.items() for text in texts)
    out = collect(entries, classes=list(obj))
    empty = empty_classes(out[0])
    if empty:
        log.warning("%s: %d class(es) have no concept: %s", path, len(empty), ", ".join(empty[:10]))
    return out


def empty_classes(concepts: ConceptSet) -> list[str]:
    """The classes of a concept set that no concept is tied to."""
    have = {cls for c in concepts for cls in c.classes}
    return [c for c in concepts.classes if c not in have]


def looks_like_label_free(obj: dict) -> bool:
    """Label-free CBM writes each class's concepts sorted; LaBo's lists are in generation order.
    Sorted lists count only when some list has 3 or more items (shorter ones are sorted by chance
    often); without one, short phrases (median under 5 words) decide."""
    lists = [[str(t) for t in v] for v in obj.values()]
    if any(len(v) >= 3 for v in lists):
        return all(v == sorted(v) for v in lists)
    words = sorted(len(str(t).split()) for v in lists for t in v)
    return bool(words) and words[len(words) // 2] < 5


def import_labo(path: str | Path) -> tuple[ConceptSet, list[Rejected]]:
    """LaBo's `<DATASET>.class2concepts.json` or `.selected.json`: {class: [sentences]}."""
    path = Path(path)
    return _class_map(path, _json(path), "labo", "labo")


def import_label_free(path: str | Path) -> tuple[ConceptSet, list[Rejected]]:
    """Label-free CBM's `gpt3_<dataset>_{important,around,superclass}.json`."""
    path = Path(path)
    m = re.search(r"_(important|around|superclass)\.json$", path.name)
    return _class_map(path, _json(path), "label_free", m.group(1) if m else None)


def import_lines(path: str | Path, classes: list[str] | None = None) -> tuple[ConceptSet, list[Rejected]]:
    """One concept per line (e.g. Label-free CBM's `<dataset>_filtered.txt`); global concepts."""
    path = Path(path)
    lines = read_text(path).splitlines()
    prov = {"source": "file", "file": path.name}
    return collect(((ln, [], prov) for ln in lines if ln.strip()), classes=classes or [])


def import_csv(path: str | Path) -> tuple[ConceptSet, list[Rejected]]:
    """CSV with columns `class,concept` (class may be empty for a global concept)."""
    path = Path(path)
    try:
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        if not {"class", "concept"} <= set(reader.fieldnames or []):
            raise DataError(f"{path} needs columns 'class' and 'concept'; it has {reader.fieldnames}.")
        rows = list(reader)
    except csv.Error as e:  # e.g. a field over csv's size limit
        raise DataError(f"{path} is not a readable CSV file: {e}.") from e
    prov = {"source": "file", "file": path.name}
    entries = ((r["concept"] or "", [r["class"].strip()] if (r["class"] or "").strip() else [], prov)
               for r in rows)
    return collect(entries, classes=[r["class"].strip() for r in rows if (r["class"] or "").strip()])


def import_concepts(path: str | Path, kind: str = "auto") -> tuple[ConceptSet, list[Rejected]]:
    """Import by kind: labo, label_free, lines, csv, conceptlens, or auto (by name/content)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Concept file {path} does not exist.")
    if kind == "auto":
        if path.suffix == ".csv":
            kind = "csv"
        elif path.suffix == ".txt":
            kind = "lines"
        elif path.suffix == ".json":
            obj = _json(path)
            if isinstance(obj, dict) and obj.get("format") == FORMAT:
                kind = "conceptlens"
            elif isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values()):
                kind = "label_free" if looks_like_label_free(obj) else "labo"
            else:
                raise DataError(f"{path} is JSON but neither a conceptlens concept set nor a {{class: "
                                "[concepts]}} map (LaBo, Label-free CBM); pass kind= one of "
                                f"{sorted(IMPORTERS)}.")
        else:
            raise DataError(f"Cannot tell the format of {path}; pass kind= one of {sorted(IMPORTERS)}.")
    if kind == "conceptlens":
        return ConceptSet.load(path), []
    if kind not in IMPORTERS:
        raise DataError(f"Unknown concept file kind {kind!r}; known: {sorted(IMPORTERS)} or 'auto'.")
    return IMPORTERS[kind](path)


IMPORTERS = {"labo": import_labo, "label_free": import_label_free, "lines": import_lines,
             "csv": import_csv}

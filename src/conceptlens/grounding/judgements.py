"""A person's judgement as a yardstick: is each class's top-k explanation true of that class?

Annotations cover only the concepts that match an annotated attribute (12 of the demo's 71
WordNet concepts), so a precision computed on them can say 1.00 for a model a person judges 0.56.
The anchors ran human studies ad hoc; here the study is two commands:

    conceptlens concepts judge runs/demo --out judge.csv      # the sheet: one row per (class, concept)
    # a person fills the `judgement` column: 1 (true of the class), 0 (false), blank (cannot say)
    conceptlens concepts evaluate runs/demo --judgements judge.csv

The sheet lists every (class, concept) pair that some model of a run (or one model) ranks among a
class's top-k positive-weight concepts, once, with the models and ranks that put it there, so a
judgement is made once per pair and scores every model. `judged_precision` is the share of a
model's top-k pairs judged 1 among those judged; its coverage is the share of its top-k pairs that
were judged at all, and below MIN_COVERAGE the precision is not a measure of the model ("not
measurable", with the coverage): a headline figure is never computed on a small subset silently.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import DataError
from .measures import MIN_COVERAGE

COLUMNS = ("class", "concept", "judgement", "ranked_by")
TRUE, FALSE = ("1", "yes", "true", "y"), ("0", "no", "false", "n")


def top_pairs(model, k: int = 5) -> list[tuple[str, int, str, float]]:
    """(class, rank, concept, weight) of each class's top-k positive-weight concepts (ties: lower
    concept index first, as explanation_precision ranks them), in the model's bottleneck only."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be a positive integer; got {k!r}.")
    W = np.asarray(model.class_weights_, dtype=np.float64)
    concepts = list(model.concepts_)
    from ..methods.protocols import HasBottleneck
    kept = model.bottleneck_ if isinstance(model, HasBottleneck) else None
    columns = np.arange(W.shape[1]) if kept is None else np.asarray(kept, dtype=np.int64)
    out = []
    for i, cls in enumerate(model.classes_):
        w = W[i, columns]
        order = np.argsort(-w, kind="stable")
        top = [j for j in order if w[j] > 0][:k]
        out += [(str(cls), r + 1, concepts[columns[j]], float(w[j])) for r, j in enumerate(top)]
    return out


def judgement_sheet(models: Mapping[str, object], k: int = 5, known: Mapping | None = None) -> str:
    """The CSV a person marks: one row per (class, concept) in any model's top-k, with the models
    and ranks that put it there (`known`: judgements to pre-fill, e.g. from an earlier sheet)."""
    rows: dict[tuple[str, str], list[str]] = {}
    for name, model in models.items():
        for cls, rank, concept, _ in top_pairs(model, k):
            rows.setdefault((cls, concept), []).append(f"{name}#{rank}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for (cls, concept), by in sorted(rows.items()):
        value = (known or {}).get((cls, concept))
        w.writerow([cls, concept, "" if value is None else str(int(value)), " ".join(by)])
    return buf.getvalue()


def read_judgements(path: str | Path) -> dict[tuple[str, str], int]:
    """{(class, concept): 1 or 0} from a marked sheet; blank judgements are left out. A value other
    than 1/0 (yes/no, true/false), a missing column or one pair judged both ways is a DataError
    naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such judgement file; write one with `conceptlens concepts judge`.") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 CSV file ({e.__class__.__name__}); give the sheet that "
                        "`conceptlens concepts judge` wrote, marked.") from e
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e.__class__.__name__}).") from e
    try:
        return _parse(path, text)
    except csv.Error as e:
        raise DataError(f"{path}: not a well-formed CSV file ({e}); give the sheet that `conceptlens "
                        "concepts judge` wrote, marked.") from e


def _parse(path: Path, text: str) -> dict[tuple[str, str], int]:
    if text.count('"') % 2:  # csv reads an unclosed quote to the end of the file without a word
        raise csv.Error("an unclosed quote")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("class", "concept", "judgement") if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}: the header lacks column(s) {missing}; it has {reader.fieldnames}. The "
                        f"sheet's columns are {list(COLUMNS)}.")
    out: dict[tuple[str, str], int] = {}
    for line, row in enumerate(reader, start=2):
        value = (row.get("judgement") or "").strip().casefold()
        if not value:
            continue
        if value in TRUE:
            v = 1
        elif value in FALSE:
            v = 0
        else:
            raise DataError(f"{path}, line {line}: judgement {row['judgement']!r} is not 1 (true of the "
                            "class), 0 (false) or blank (cannot say).")
        key = ((row.get("class") or "").strip(), (row.get("concept") or "").strip())
        if key in out and out[key] != v:
            raise DataError(f"{path}, line {line}: {key[1]!r} for class {key[0]!r} is judged both 1 and 0; "
                            "keep one row per pair.")
        out[key] = v
    return out


def judged_precision(model, judgements: Mapping[tuple[str, str], int], k: int = 5) -> dict:
    """A model's precision@k against a person's judgements, with its coverage: {"precision" (None
    when coverage < MIN_COVERAGE or nothing is judged), "precision_on_judged" (the share on the
    judged pairs whatever the coverage), "coverage", "n_pairs", "n_judged", "per_class"}."""
    pairs = top_pairs(model, k)
    per_class: dict[str, list] = {}
    judged = []
    for cls, rank, concept, weight in pairs:
        v = judgements.get((cls, concept))
        per_class.setdefault(cls, []).append({"rank": rank, "concept": concept, "weight": weight,
                                              "judgement": v})
        if v is not None:
            judged.append(v)
    coverage = len(judged) / len(pairs) if pairs else 0.0
    on_judged = float(np.mean(judged)) if judged else None
    return {"precision": on_judged if judged and coverage >= MIN_COVERAGE else None,
            "precision_on_judged": on_judged, "coverage": coverage, "n_pairs": len(pairs),
            "n_judged": len(judged), "k": int(k), "per_class": per_class}

"""The concept set: class -> concepts, many-to-many, with provenance per concept.

JSON format (`conceptlens.concepts`, version 1)::

    {"format": "conceptlens.concepts", "version": 1,
     "classes": ["cardinal", "blue jay"],
     "concepts": [
        {"text": "red crest", "classes": ["cardinal"],
         "provenance": [{"source": "llm", "prompt": "labo", "model": "gpt-4o-mini",
                         "class": "cardinal", "created": "2026-11-28T18:00:00Z"}]}]}

A concept generated for several classes belongs to all of them; concepts with no class
(e.g. Label-free CBM's filtered lists) are global. Texts are unique under `concept_key`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import write_json
from ..errors import DataError

FORMAT = "conceptlens.concepts"
VERSION = 1
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)


_QUOTES = "\"'`"


def _unwrap_quotes(text: str) -> str:
    """Quotes around the whole text go; quotes inside it stay ('"Police" or "Sheriff" markings'
    keeps both pairs, where stripping quote characters from the ends would break the first)."""
    while len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    for q in _QUOTES:  # an unpaired quote at one end is a stray
        if text.count(q) == 1 and (text.startswith(q) or text.endswith(q)):
            text = text.strip(q).strip()
    return text


def clean_text(text: str) -> str:
    """Collapse whitespace and strip surrounding space, quotes, bullets and final periods."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    text = re.sub(r"^([-*•]|\d+[.)])\s+", "", text)  # list markers an LLM adds
    return _unwrap_quotes(text.rstrip(".").strip()).rstrip(".").strip()


def concept_key(text: str) -> str:
    """What makes two concept texts the same: case, spacing, a leading article, punctuation."""
    key = _ARTICLE.sub("", clean_text(text).casefold())
    return re.sub(r"[^\w\s]", "", key).strip()


@dataclass
class Concept:
    text: str
    classes: list[str] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "classes": list(self.classes), "provenance": list(self.provenance)}


def read_text(path: Path) -> str:
    """A concept file's text; unreadable, binary or non-UTF-8 (e.g. UTF-16) content is a DataError."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): a "
                        "concept file is UTF-8 JSON, CSV or text. Save it as UTF-8.") from None


def parse_json(text: str, path: Path):
    """JSON, with a DataError for malformed or absurdly nested content (json recurses per level)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    except RecursionError:
        raise DataError(f"Cannot read {path}: its JSON is nested too deeply to be a concept file.") from None


class ConceptSet:
    def __init__(self, classes: Sequence[str] = (), concepts: Iterable[Concept] = ()):
        self.classes: list[str] = list(dict.fromkeys(classes))
        self.concepts: list[Concept] = []
        self._by_key: dict[str, int] = {}
        for c in concepts:
            self.add(c.text, c.classes, c.provenance)

    @classmethod
    def from_user(cls, concepts, classes: Sequence[str]) -> ConceptSet:
        """A user's concepts as a ConceptSet: a ConceptSet (returned as it is), a list of texts (tied
        to no class) or a dict class -> texts (or one text); provenance {"source": "user"}."""
        if isinstance(concepts, ConceptSet):
            return concepts
        out = cls(list(classes))
        items = concepts.items() if isinstance(concepts, dict) else ((None, [t]) for t in concepts)
        for name, texts in items:
            for t in ([texts] if isinstance(texts, str) else texts):
                out.add(t, [] if name is None else [name], [{"source": "user"}])
        return out

    # -- building ---------------------------------------------------------------------
    def add(self, text: str, classes: Iterable[str] = (), provenance: Iterable[dict] = ()) -> Concept:
        """Add a concept, merging with an existing one of the same key (classes united)."""
        text = clean_text(text)
        key = concept_key(text)
        if not key:
            raise DataError(f"Concept {text!r} is empty after normalisation.")
        for cls in classes:
            if cls not in self.classes:
                self.classes.append(cls)
        if key in self._by_key:
            concept = self.concepts[self._by_key[key]]
        else:
            concept = Concept(text)
            self._by_key[key] = len(self.concepts)
            self.concepts.append(concept)
        concept.classes += [c for c in classes if c not in concept.classes]
        concept.provenance += [dict(p) for p in provenance if dict(p) not in concept.provenance]
        return concept

    def merge(self, other: ConceptSet) -> ConceptSet:
        out = ConceptSet(self.classes + [c for c in other.classes if c not in self.classes])
        for c in [*self.concepts, *other.concepts]:
            out.add(c.text, c.classes, c.provenance)
        return out

    def subset(self, indices: Iterable[int]) -> ConceptSet:
        return ConceptSet(self.classes, [self.concepts[i] for i in indices])

    # -- reading ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self):
        return iter(self.concepts)

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.concepts]

    def index(self, text: str) -> int:
        try:
            return self._by_key[concept_key(text)]
        except KeyError:
            raise DataError(f"Concept {text!r} is not in this concept set.") from None

    def for_class(self, cls: str) -> list[int]:
        if cls not in self.classes:
            raise DataError(f"Class {cls!r} is not in this concept set; classes: {self.classes[:10]}")
        return [i for i, c in enumerate(self.concepts) if cls in c.classes]

    def class_matrix(self, classes: Sequence[str] | None = None) -> np.ndarray:
        """(m, k) 0/1 matrix: 1 where the concept was generated for the class (LaBo's prior)."""
        classes = list(classes or self.classes)
        pos = {c: i for i, c in enumerate(classes)}
        m = np.zeros((len(classes), len(self.concepts)), dtype=np.float32)
        for j, concept in enumerate(self.concepts):
            for cls in concept.classes:
                if cls in pos:
                    m[pos[cls], j] = 1.0
        return m

    def summary(self) -> str:
        per_class = [len(self.for_class(c)) for c in self.classes] or [0]
        shared = sum(len(c.classes) > 1 for c in self.concepts)
        return (f"{len(self)} concepts for {len(self.classes)} classes "
                f"({min(per_class)}-{max(per_class)} per class, {shared} shared by several classes, "
                f"{sum(not c.classes for c in self.concepts)} global)")

    # -- files ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "classes": list(self.classes),
                "concepts": [c.to_dict() for c in self.concepts]}

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict, where: str = "concept set") -> ConceptSet:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DataError(f"{where} is not a conceptlens concept set (format {FORMAT!r}).")
        if obj.get("version") != VERSION:
            raise DataError(f"{where} has version {obj.get('version')}; this conceptlens reads {VERSION}.")
        def strings(v) -> bool:
            return isinstance(v, list) and all(isinstance(x, str) for x in v)

        classes, concepts = obj.get("classes", []), obj.get("concepts", [])
        if not strings(classes) or not isinstance(concepts, list):
            raise DataError(f"{where}: 'classes' must be a list of strings and 'concepts' a list of "
                            "objects; the file is damaged or was not written by conceptlens.")
        out = cls(classes)
        for i, c in enumerate(concepts):
            if not isinstance(c, dict) or not isinstance(c.get("text"), str):
                raise DataError(f"{where}: concept #{i} has no 'text' string.")
            prov = c.get("provenance", [])
            if not strings(c.get("classes", [])) or not (
                    isinstance(prov, list) and all(isinstance(p, dict) for p in prov)):
                raise DataError(f"{where}: concept #{i} ({c['text'][:40]!r}) needs 'classes', a list of "
                                "strings, and 'provenance', a list of objects.")
            out.add(c["text"], c.get("classes", []), prov)
        return out

    @classmethod
    def load(cls, path: str | Path) -> ConceptSet:
        return cls.from_dict(parse_json(read_text(Path(path)), Path(path)), str(path))

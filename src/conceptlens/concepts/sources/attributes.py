"""`fashion-mnist-attributes`: the built-in Fashion-MNIST attribute annotations as concepts.

Each annotated attribute ("has laces", "covers the ankle") becomes one concept linked to every
class where the annotation says 1 (ConceptSet links are many-to-many, so "is worn on the feet"
belongs to Sandal, Sneaker and Ankle boot at once). Unknown (empty) and 0 cells give no link.
Because the concepts are the annotated ones, grounding scores on them need no text matching.

Classes are matched to the annotations ignoring case and outer spaces and linked under the
caller's spelling. Requested classes without an annotation row go to `unresolved`; attributes
that hold for none of the requested classes are returned in `rejected` (they would be global
concepts that no per-class selection can pick).

`annotations=` takes another class-level set (a built-in name or a class-level CSV path, as
`conceptlens.annotations.load_annotations` reads), e.g. for a dataset with its own attributes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from ...annotations import load_annotations
from ...annotations.fashion_mnist import BUILTINS, attribute_rules
from ...errors import ConfigError
from ...validation import InstanceOf
from ..normalize import Rejected, collect
from .base import SOURCES, ConceptSource, SourceResult


def _key(name: str) -> str:
    return str(name).strip().casefold()


@SOURCES.register("fashion-mnist-attributes")
class AttributeSource(ConceptSource):
    name = "fashion-mnist-attributes"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "annotations": [InstanceOf((str, os.PathLike), "the name of built-in class annotations "
                                   f"({', '.join(map(repr, BUILTINS))}) or the path of an annotation file")]}

    def __init__(self, annotations: str = "fashion-mnist"):
        self.check_options(locals())
        self.annotations = annotations

    def generate(self, classes: Sequence[str]) -> SourceResult:
        ann = load_annotations(self.annotations)
        if ann.level != "class":
            raise ConfigError(
                f"the {self.name} source needs class-level annotations (header 'attribute,<class>,...'); "
                f"{self.annotations!r} is per image"
            )
        builtin = isinstance(self.annotations, str) and self.annotations in BUILTINS
        rules = attribute_rules(self.annotations) if builtin else {}
        rows = {_key(c): i for i, c in enumerate(ann.classes)}
        found: list[tuple[str, int]] = []  # (caller's spelling, annotation row)
        unresolved: dict[str, str] = {}
        for cls in classes:
            if _key(cls) in rows:
                found.append((cls, rows[_key(cls)]))
            else:
                unresolved[cls] = (f"not among the annotated classes of {self.annotations!r}: "
                                   f"{list(ann.classes)}")
        entries, rejected = [], []
        for j, text in enumerate(ann.concepts):
            linked = [cls for cls, i in found if ann.values[i, j] == 1.0]  # NaN and 0 give no link
            if not linked:
                rejected.append(Rejected(text, (), "annotated 1 for none of the requested classes"))
                continue
            prov = {"source": self.name, "annotations": str(self.annotations)}
            if text in rules:
                prov["rule"] = rules[text]
            entries.append((text, linked, prov))
        concepts, dropped = collect(entries, classes=classes)
        return SourceResult(concepts, unresolved, rejected + dropped)

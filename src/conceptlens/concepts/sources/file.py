"""`file`: concepts from a file (any format `import_concepts` reads)."""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import ConfigError
from ..importers import import_concepts
from .base import SOURCES, ConceptSource, SourceResult


@SOURCES.register("file")
class FileSource(ConceptSource):
    name = "file"

    def __init__(self, path: str | None = None, kind: str = "auto"):
        if not path:
            raise ConfigError("The file concept source needs path=<concept file>.")
        self.path, self.kind = path, kind

    def generate(self, classes: Sequence[str]) -> SourceResult:
        concepts, rejected = import_concepts(self.path, self.kind)
        have = set(concepts.classes)
        attached = {cls for c in concepts for cls in c.classes}
        unresolved = {c: "no concepts for this class in the file" for c in classes
                      if c not in attached and have}
        return SourceResult(concepts, unresolved, rejected)

"""`file`: concepts from a file (any format `import_concepts` reads)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from ...errors import ConfigError
from ...validation import InstanceOf, Options
from ..importers import IMPORTERS, import_concepts
from .base import SOURCES, ConceptSource, SourceResult

KINDS = ("auto", *IMPORTERS, "conceptlens")


@SOURCES.register("file")
class FileSource(ConceptSource):
    name = "file"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "path": [InstanceOf((str, os.PathLike), "the path of a concept file"), None],
        "kind": [Options(KINDS)]}

    def __init__(self, path: str | None = None, kind: str = "auto"):
        self.check_options(locals())
        if not path:
            raise ConfigError(
                "the file concept source needs the path of a concept file (one concept a line, a "
                "class,concept CSV, LaBo or Label-free CBM JSON, or a conceptlens concept set). In a run "
                'config add a table:\n[concepts.sources.file]\npath = "my_concepts.txt"\n(or set '
                '[concepts] file = "my_concepts.txt"); on the command line, give --file PATH.')
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"path = {path!r}: no such file (relative paths are taken from the current "
                              f"folder, {Path.cwd()}).")
        self.path, self.kind = str(Path(path).expanduser()), kind

    def generate(self, classes: Sequence[str]) -> SourceResult:
        concepts, rejected = import_concepts(self.path, self.kind)
        attached = {cls.casefold() for c in concepts for cls in c.classes}
        # a file of global concepts (no class at all) leaves no class unresolved
        unresolved = {c: "no concepts for this class in the file" for c in classes
                      if attached and c.casefold() not in attached}
        return SourceResult(concepts, unresolved, rejected)

"""What a concept source returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ...registry import Registry
from ...validation import check_value
from ..conceptset import ConceptSet
from ..normalize import Rejected

SOURCES: Registry = Registry("concept source")


@dataclass
class SourceResult:
    concepts: ConceptSet
    unresolved: dict[str, str] = field(default_factory=dict)  # class -> why nothing came back
    rejected: list[Rejected] = field(default_factory=list)

    def report(self) -> str:
        lines = [self.concepts.summary()]
        if self.rejected:
            lines.append(f"{len(self.rejected)} entries rejected: "
                         + "; ".join(f"{r.text[:40]!r} ({r.reason})" for r in self.rejected[:5]))
        if self.unresolved:
            lines.append(f"{len(self.unresolved)} class(es) without concepts: "
                         + "; ".join(f"{c}: {why}" for c, why in list(self.unresolved.items())[:10]))
        return "\n".join(lines)


class ConceptSource(ABC):
    name: str
    # what each constructor option may be, as conceptlens.validation constraints (every option has
    # one; tests/concepts/test_sources.py checks it and that the invalid values they imply are refused)
    _parameter_constraints: ClassVar[dict[str, list]] = {}

    @classmethod
    def check_options(cls, options: dict, where: str = "") -> None:
        """Check the options a source is given (every constructor calls this first, with its
        `locals()`); ConfigError "<where> <option> must be ...; got ...". Checks that need more
        than one option or more than a constraint can say stay in the constructor."""
        for key, spec in cls._parameter_constraints.items():
            if key in options:
                check_value(options[key], spec, f"{where} {key}" if where else key)

    @abstractmethod
    def generate(self, classes: Sequence[str]) -> SourceResult: ...

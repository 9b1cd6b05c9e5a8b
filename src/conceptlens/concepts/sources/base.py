"""What a concept source returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...registry import Registry
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

    @abstractmethod
    def generate(self, classes: Sequence[str]) -> SourceResult: ...

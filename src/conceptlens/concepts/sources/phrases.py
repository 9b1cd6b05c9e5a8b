"""Class names and descriptions as text: hints, alternatives, short phrases."""

from __future__ import annotations

import re


def parse_class(name: str) -> tuple[list[str], str | None]:
    """'cardinal (bird)' -> (['cardinal'], 'bird'); 'T-shirt/top' -> (['T-shirt', 'top'], None)."""
    m = re.match(r"^(.*?)\s*\(([^)]*)\)\s*$", name)
    base, hint = (m.group(1), m.group(2).strip() or None) if m else (name, None)
    return [p.strip() for p in base.split("/") if p.strip()], hint


def split_phrases(text: str, max_words: int = 12) -> list[str]:
    """Split a description into short concept phrases at sentence and clause boundaries."""
    parts = re.split(r"[.;:]\s+|,\s+(?:and\s+|or\s+|with\s+|usually\s+)?|\s+and\s+(?=\w+ing\b)"
                     r"|\s+(?:having|with|that has|which has)\s+", text)
    out = []
    for p in parts:
        p = re.sub(r"^(it|they|this|the animal|the bird)\s+(has|have|is|are)\s+", "", p.strip(), flags=re.I)
        if 1 <= len(p.split()) <= max_words:
            out.append(p.rstrip("."))
    return out


# words that cannot end a whole phrase: a split that leaves one of them last left a fragment
_DANGLING = {"a", "an", "the", "of", "and", "or", "to", "that", "which", "with", "by", "for", "in", "on",
             "from", "as", "usually", "often", "typically", "sometimes", "especially", "mostly",
             "commonly", "generally", "mainly", "chiefly", "is", "are", "has", "have", "having"}
_ADVERB = r"(?:usually|often|typically|sometimes|especially|mostly|commonly|generally|mainly|chiefly)"


def gloss_phrases(text: str, max_words: int = 12) -> list[str]:
    """Whole, short phrases from a WordNet gloss: clauses (at ';' and ':'), each split once into
    its head and what it has ("with", "having", "that has", ...), the latter at "and" and
    commas; parentheticals and leading/trailing adverbs go. A piece that still ends in a
    function word, or is longer than `max_words`, is dropped rather than cut.

    'feline mammal usually having thick soft fur and no ability to roar: domestic cats; wildcats'
    -> ['feline mammal', 'thick soft fur', 'no ability to roar', 'domestic cats', 'wildcats']
    """
    text = re.sub(r"\s*\([^)]*\)", "", text)
    out: list[str] = []
    for clause in re.split(r"\s*[;:]\s*", text):
        clause = re.sub(r"^(it|they|this)\s+(has|have|is|are)\s+", "", clause.strip(), flags=re.I)
        has = re.match(r"^(?:has|have)\s+", clause)
        m = re.search(r"\s+(?:with|having|(?:that|which) ha(?:s|ve)(?!\s+been\b)|consisting of)\s+", clause)
        if has:
            head, rest = "", clause[has.end():]
        elif m:
            head, rest = clause[:m.start()], clause[m.end():]
        else:
            head, rest = clause, ""
        pieces = [head]
        if rest:
            pieces += re.split(r",\s*(?:and\s+|or\s+)?|\s+and\s+", rest)
        for piece in pieces:
            piece = (piece or "").strip(" ,.")
            # too long: its comma-separated parts, else its head before a relative clause
            parts = [piece] if len(piece.split()) <= max_words else re.split(r",\s*", piece)
            if len(parts) == 1 and len(piece.split()) > max_words:
                parts = [re.split(r"\s+(?:that|which|who)\s+", piece, maxsplit=1)[0]]
            for p in parts:
                p = re.sub(rf"^{_ADVERB}\s+|\s+{_ADVERB}$", "", p.strip(" ,.")).strip(" ,.")
                p = re.sub(r"^(?:any|one) of (?:several|various|numerous|many)\s+", "", p)
                words = p.split()
                if not words or len(words) > max_words or words[-1].casefold() in _DANGLING:
                    continue
                out.append(p)
    return list(dict.fromkeys(out))

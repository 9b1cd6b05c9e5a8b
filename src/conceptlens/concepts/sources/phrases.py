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

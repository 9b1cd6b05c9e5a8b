"""Binary questions from annotated attributes, offline: KnoBo's bottleneck without an LLM.

KnoBo (Yang et al., NeurIPS 2024) phrases every concept as a binary question ("Is there lung
opacity?") and reads a class x question prior of yes / no / unknown. When a dataset ships
attribute annotations, both come from them: `attribute_question` turns an attribute text into a
question by a few fixed rules (deterministic, no model), and `questions_from_annotations` returns
class-level ConceptAnnotations whose concepts are those questions (in the attributes' order) and
whose values are the prior (1 yes, 0 no, NaN unknown) — what fills `Context.class_truth` for the
`knobo` method. Per-image annotations become class-level by the unanimity rule the grounding
measures use (`annotations.class_level`).

Rules, first match wins (the text is cleaned and its first letter lowered):
| attribute | question |
|---|---|
| already ends in '?' | unchanged (capitalised) |
| `part: value` (CUB) | Is the {part} {value}? |
| `is ...` / `are ...` | Is it ...? |
| `has ...` / `have ...` | Does it have ...? |
| `can` / `does` / `do` / `will` ... | Can it ...? / Does it ...? |
| first word ends in -ing (wearing hat) | Is it wearing hat? |
| several words, first ends in -s (reaches below the knees) | Does it reach below the knees? |
| one word ending in -s (stripes) | Does it have stripes? |
| one word (furry) | Is it furry? |
| anything else (arched eyebrows) | Does it have arched eyebrows? |
Without a part-of-speech tagger some phrasings are awkward (a plural noun first, "bags under
eyes", is read as a verb); `overrides` maps an attribute to the question to use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..annotations import ConceptAnnotations, class_level
from ..errors import DataError
from .conceptset import clean_text

_BE = {"is", "are"}
_HAVE = {"has", "have"}
_MODAL = {"can": "Can", "could": "Could", "will": "Will", "would": "Would", "should": "Should",
          "does": "Does", "do": "Does"}


def _base_form(verb: str) -> str:
    """'reaches' -> 'reach', 'carries' -> 'carry', 'covers' -> 'cover' (third person -> base)."""
    if verb.endswith("ies") and len(verb) > 4:
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return verb[:-2]
    return verb[:-1]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def attribute_question(text: str) -> str:
    """A binary question for an attribute text (rules in the module docstring)."""
    t = clean_text(text)
    if not t:
        raise DataError(f"cannot make a question of an empty attribute text ({text!r}).")
    t = t[:1].lower() + t[1:]
    if t.endswith("?"):
        return _capital(t)
    if ":" in t:
        part, _, value = (s.strip() for s in t.partition(":"))
        if part and value:
            return f"Is the {part} {value}?"
    first, _, rest = t.partition(" ")
    if rest:
        if first in _BE:
            return f"Is it {rest}?"
        if first in _HAVE:
            return f"Does it have {rest}?"
        if first in _MODAL:
            return f"{_MODAL[first]} it {rest}?"
    if first.endswith("ing") and len(first) >= 5:
        return f"Is it {t}?"
    plural = re.fullmatch(r"[a-z]+s", first) is not None and not first.endswith(("ss", "us", "is"))
    if rest and plural:
        return f"Does it {_base_form(first)} {rest}?"
    if not rest:
        return f"Does it have {t}?" if plural else f"Is it {t}?"
    return f"Does it have {t}?"


def questions_from_annotations(annotations: ConceptAnnotations, classes: Sequence[str] | None = None,
                               ids: Sequence[str] | None = None, labels=None,
                               overrides: Mapping[str, str] | None = None) -> ConceptAnnotations:
    """Class-level annotations whose concepts are binary questions (one per attribute, same order)
    and whose values are KnoBo's prior: 1 yes, 0 no, NaN unknown.

    classes: the rows, in this order (default: the annotated classes; required for per-image
    annotations, with the images' `ids` and `labels` indexing `classes`). overrides: attribute
    text -> question, for phrasings the rules get wrong.
    """
    overrides = dict(overrides or {})
    unknown = [a for a in overrides if a not in annotations.concepts]
    if unknown:
        raise DataError(f"overrides name attributes that are not annotated: {unknown[:5]}; the "
                        f"annotated attributes are e.g. {list(annotations.concepts[:5])}.")
    if classes is None:
        if annotations.level != "class":
            raise DataError("per-image annotations need `classes` (with the images' `ids` and "
                            "`labels`) to say what is true of each class.")
        classes = annotations.classes
    rows = class_level(annotations, classes, ids, labels)
    questions = [overrides.get(a) or attribute_question(a) for a in annotations.concepts]
    seen: dict[str, str] = {}
    for attribute, q in zip(annotations.concepts, questions, strict=True):
        key = q.casefold()
        if key in seen:
            raise DataError(f"attributes {seen[key]!r} and {attribute!r} both become the question "
                            f"{q!r}; give one of them its own question with overrides={{...}}.")
        seen[key] = attribute
    return ConceptAnnotations("class", tuple(questions), np.asarray(rows.values), classes=rows.classes,
                              provenance=f"{annotations.provenance} (as binary questions)")

"""One base exception, so callers can catch everything conceptlens raises on bad input."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConceptLensError(Exception):
    """Base class: the message says what was wrong, what was expected and how to fix it."""


class ConfigError(ConceptLensError, ValueError):
    """A name, option or value that conceptlens does not accept."""


class UsageError(ConfigError):
    """A command-line flag given a value the command cannot use (the CLI exits 2, as for argparse's own)."""


class DataError(ConceptLensError):
    """An input dataset, file or image that cannot be used as it is."""


class ImageFormatError(DataError):
    """Image bytes that are not one of the formats conceptlens decodes (data/images.py)."""


class NotFittedError(ConceptLensError):
    """A model used before `fit`."""


def closest(name: str, known: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix for an unknown name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


class IntegrityError(DataError):
    """A stored file (cache shard, model weights) that is unreadable or fails its checksum."""


class MissingChecksumError(IntegrityError):
    """A stored file with no checksum at all: written by another tool or an older conceptlens."""

"""A concept source's options as a run config gives them ([concepts.sources.<name>] tables).

Every option is a keyword of the source's constructor, and the source declares what each may be
(`_parameter_constraints`, conceptlens.validation). Unknown keys, bad values and the
constructors' own checks (a missing file, an unknown prompt family or WordNet relation) fail here,
before any image is encoded, with the table named. A TOML list becomes a tuple.
"""

from __future__ import annotations

import inspect

from ...errors import ConceptLensError, ConfigError, closest
from .base import SOURCES, ConceptSource


def source_parameters(name: str) -> dict[str, inspect.Parameter]:
    cls = SOURCES.get(name)
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def make_source(name: str, options: dict | None = None, file: str | None = None) -> ConceptSource:
    """Build source `name` from its config table. `file` ([concepts] file) is the file source's
    path when its table gives none. Errors name [concepts.sources.<name>] and the key."""
    where = f"[concepts.sources.{name}]"
    params = source_parameters(name)
    options = dict(options or {})
    for key, value in options.items():
        if key not in params:
            known = ", ".join(params) or "none"
            raise ConfigError(f"Unknown option {key!r} in {where}.{closest(key, params)} Known: {known}.")
        if isinstance(value, list):
            options[key] = tuple(value)
    SOURCES.get(name).check_options(options, where)
    if name == "file" and not options.get("path") and file:
        options["path"] = file
    try:
        return SOURCES.get(name)(**options)
    except ConceptLensError as e:
        raise ConfigError(f"{where}: {e}") from None


def check_source_options(name: str, options: dict, file: str | None = None) -> None:
    """Config-time check of one source's table (see `make_source`); builds nothing lasting."""
    make_source(name, options, file)


def option_help(name: str) -> str:
    """'key = default, ...' for a source, for error messages and `conceptlens init`."""
    parts = []
    for key, p in source_parameters(name).items():
        d = p.default
        shown = "(required)" if d is inspect.Parameter.empty else repr(list(d) if isinstance(d, tuple) else d)
        parts.append(f"{key} = {shown}")
    return ", ".join(parts)

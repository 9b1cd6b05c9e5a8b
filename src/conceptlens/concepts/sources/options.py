"""A concept source's options as a run config gives them ([concepts.sources.<name>] tables).

Every option is a keyword of the source's constructor; its TOML type follows from the
constructor's default and annotation (a tuple default takes a list of strings). Unknown keys,
wrong types and the constructors' own checks (a missing file, an unknown prompt family or
WordNet relation) fail here, before any image is encoded, with the table named.
"""

from __future__ import annotations

import inspect

from ...errors import ConceptLensError, ConfigError, closest
from .base import SOURCES, ConceptSource

_KINDS = {bool: "a TOML boolean (true or false)", int: "an integer", float: "a number",
          str: "a string", list: "a list of strings"}


def _kind_of(param: inspect.Parameter) -> type | None:
    """The TOML type an option takes, from its default, else its (string) annotation."""
    d = param.default
    if isinstance(d, bool):
        return bool
    if isinstance(d, int):
        return int
    if isinstance(d, float):
        return float
    if isinstance(d, str):
        return str
    if isinstance(d, tuple | list):
        return list
    ann = str(param.annotation)
    for text, kind in (("Sequence", list), ("list", list), ("tuple", list), ("bool", bool), ("int", int),
                       ("float", float), ("str", str)):
        if text in ann:
            return kind
    return None


def _type_ok(value, kind: type | None) -> bool:
    if kind is None:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    if kind is float:
        return isinstance(value, int | float)
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind)


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
        kind = _kind_of(params[key])
        if value is not None and not _type_ok(value, kind):
            raise ConfigError(f"{where} {key} must be {_KINDS.get(kind, kind)}; got {value!r}. "
                              "Correct it in the config.")
        if kind is list:
            options[key] = tuple(value)
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

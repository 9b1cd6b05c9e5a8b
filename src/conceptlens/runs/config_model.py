"""The machinery behind the run config's typed tables (runs/config.py declares the tables).

A table is a pydantic model (`Table`) whose fields are the keys of one TOML table. Each field
is declared once, with everything about it in one place:

    seed: Annotated[int, Check(SEED, note="a random seed")] = Field(
        0, description="Draws the per-class subsets and the split.")

`Check` holds the key's constraints (validation.py: Interval, Options, Boolean, ...; the same
constraints the methods, concept sources and solvers declare), an optional `note` on special
values ("0 = every image"), and an optional `then` for what a constraint cannot say (a file
that must exist, a backbone that must be registered); `then` raises ConfigError with the whole
message. Unknown keys are refused (extra="forbid") with "Did you mean ...?".

A table built in Python takes its values as given, positionally or by name, like the
dataclasses it replaced: nothing is checked until `check()` (or the run's validate_config),
so a config can be built and then edited field by field. A table read from TOML
(`from_table`, load_config) is checked at once. Either way a bad value raises ConfigError,
never pydantic's ValidationError:

    [data] seed must be an integer in [0, 4294967295] (a random seed); got -1 (an integer).
    Correct it in the config.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator
from pydantic_core import core_schema

from .. import validation
from ..errors import ConfigError, closest

MAX_SEED = 2**32 - 1  # numpy's and torch's generators all take seeds in [0, 2**32)
NONE = "none"  # how a None that is not the default is written (TOML has no null)


class TomlBoolean(validation.Boolean):
    """A TOML boolean: "no", 0 and "true" are not."""

    def describe(self) -> str:
        return "a TOML boolean (true or false, without quotes)"


SEED = validation.Interval(int, 0, MAX_SEED)  # numpy refuses negative seeds mid-run
STRING = validation.InstanceOf(str, "a string")
BOOLEAN = TomlBoolean()


def kind_of(value) -> str:
    """"an integer": what a TOML value is, in words."""
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _non_finite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def field_error(table: str, key: str, value, expected: str, hint: str = "",
                choices: bool = False) -> ConfigError:
    """The config's wording of a bad value. `choices`: the key takes one of some strings, and a
    string that is none of them is told so, with `hint` (" Did you mean ...?")."""
    if not _non_finite(value):  # "finite" is said to a value that is not
        expected = expected.replace("a finite number", "a number")
    if choices and isinstance(value, str):
        return ConfigError(f"[{table}] {key} = {value!r} is not {expected}.{hint}")
    return ConfigError(f"[{table}] {key} must be {expected}; got {value!r} ({kind_of(value)}). "
                       "Correct it in the config.")


class _Problem(ConfigError):
    """A value that fails its Check, before the table and key are known (config_error words it)."""

    def __init__(self, value, expected: str, hint: str, choices: bool):
        super().__init__(f"must be {expected}; got {value!r}")
        self.value, self.expected, self.hint, self.choices = value, expected, hint, choices


class _UnknownKeys(ConfigError):
    """Reported before any bad value, as the config reader always did."""


class Check:
    """A field's constraints, as `Annotated` metadata (see the module docstring).

    constraints: validation.py constraints, any one of which the value must satisfy (None in
        them: the key may be left out, and a None whose default is not None is written "none").
    note: said after the constraint, in parentheses: "an integer >= 0 (0 = no cap)".
    expected: what a valid value is, where the constraints' own words are not the clearest.
    each: a Check for every item of a list.
    then: value -> value, for what no constraint says; raises ConfigError with the whole message.
    """

    def __init__(self, *constraints, note: str = "", expected: str | None = None, each: Check | None = None,
                 then=None):
        self.constraints = list(constraints)
        self.note, self.expected, self.each, self.then = note, expected, each, then

    @property
    def allows_none(self) -> bool:
        return None in self.constraints

    def describe(self) -> str:
        """What a valid value is, in words (errors and the config reference)."""
        text = self.expected or " or ".join(c.describe() for c in self.constraints if c is not None)
        return text + (f" ({self.note})" if self.note else "")

    def __call__(self, value):
        if value is None and self.allows_none:
            return None
        real = [c for c in self.constraints if c is not None]
        if real:
            try:
                validation.check_value(value, real, "value")
            except validation.InvalidValue as e:
                choices = all(isinstance(c, validation.Options) for c in real)
                raise _Problem(value, self.describe(), e.hint, choices) from None
            value = self._normalised(value, real)
        if self.each is not None:
            value = [self.each(v) for v in value]
        if self.then is not None:
            value = self.then(value)
        return value

    @staticmethod
    def _normalised(value, real: list):
        """An integer where a number goes is stored as a float (1 -> 1.0), as TOML would read 1.0."""
        if isinstance(value, int) and not isinstance(value, bool):
            met = [c for c in real if c.is_satisfied_by(value)]
            if met and all(isinstance(c, validation.Interval) and c.kind is float for c in met):
                return float(value)
        return value

    def check(self, value, table: str, key: str):
        """The checked value, or ConfigError naming [table] key (for checks across keys)."""
        try:
            return self(value)
        except _Problem as p:
            raise field_error(table, key, p.value, p.expected, p.hint, p.choices) from None

    def __get_pydantic_core_schema__(self, source, handler):
        # the check replaces pydantic's own (lax) conversion: "no" is not false here
        return core_schema.no_info_plain_validator_function(self)


def check_of(field) -> Check | None:
    """The Check in a pydantic FieldInfo's metadata, if any."""
    return next((m for m in field.metadata if isinstance(m, Check)), None)


def config_error(e: ValidationError, base: tuple[str, ...] = ()) -> ConfigError:
    """pydantic's ValidationError as the ConfigError the user reads: the first unknown key if
    any, else the first bad value, named by [table] and key. `base`: the table's place in the
    file ("discovery", "sae") where only that table was validated."""
    errors = e.errors()
    first = next((x for x in errors if isinstance(x.get("ctx", {}).get("error"), _UnknownKeys)), errors[0])
    exc = first.get("ctx", {}).get("error")
    path = base + tuple(p for p in first["loc"] if isinstance(p, str))
    table, key = ".".join(path[:-1]) or "top level", (path[-1] if path else "")
    if isinstance(exc, _Problem):
        return field_error(table, key, exc.value, exc.expected, exc.hint, exc.choices)
    if isinstance(exc, ConfigError):  # a check's own, whole message (a UsageError stays one)
        return exc.with_traceback(None)
    # nothing in conceptlens' tables leaves a check to pydantic; should one, say it in our words
    return ConfigError(f"[{table}] {key} = {first.get('input')!r} is not a value this key takes. "
                       "Correct it in the config.")


def refuse_non_finite(value, where: str = "") -> None:
    """TOML has inf and nan; no conceptlens setting means either, and a check that only compares
    (x >= 0) would let inf through, so every number of a file is checked, by its key (the
    methods' and sources' tables too)."""
    if _non_finite(value):
        section, _, key = where.rpartition(".")
        written = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        raise ConfigError(f"[{section or 'top level'}] {key} = {written} is not a finite number; "
                          "give a finite one.")
    if isinstance(value, dict):
        for k, v in value.items():
            refuse_non_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            refuse_non_finite(v, f"{where}[{i}]")


def plain(value):
    """Tables as dicts, containers copied: what dataclasses.asdict gave."""
    if isinstance(value, BaseModel):
        return {k: plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


class Model(BaseModel):
    """A pydantic model built like a dataclass: `Model(a, b, c=...)` keeps the values as given
    (defaults filled in, unknown names a TypeError) and checks nothing; `model_validate` and
    `from_table` check."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, *args, **kwargs):
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes at most {len(names)} positional arguments "
                            f"({len(args)} given)")
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            kwargs[name] = value
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}")
        built = type(self).model_construct(**kwargs)
        for slot in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
            object.__setattr__(self, slot, getattr(built, slot))

    # validation builds instances itself (pydantic calls a custom __init__ unless told not to)
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def values(self) -> dict:
        """{key: value} as held (not copied, not serialised)."""
        return {k: getattr(self, k) for k in type(self).model_fields}

    def to_dict(self) -> dict:
        return plain(self)


class Table(Model):
    """One TOML table of the run config (see the module docstring).

    table: its name in the file, "data" or "discovery.sae" ("" for the file itself).
    listed_unknowns: unknown keys are listed together, known keys in their order (the inline
        [discovery.sae] and [discovery.v2c] tables), rather than the first with the sorted keys.
    """

    table: ClassVar[str] = ""
    listed_unknowns: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _read_table(cls, data: Any, info: ValidationInfo):
        if isinstance(data, Model):
            data = data.values()
        if not isinstance(data, dict):
            raise ConfigError(f"[{cls.table}] must be a table (a [{cls.table}] header with key = value "
                              f"lines); got {data!r}.")
        known = list(cls.model_fields)
        unknown = [k for k in data if k not in known]
        if unknown:
            raise _UnknownKeys(cls.unknown_message(unknown, known))
        if not cls.table and (info.context or {}).get("toml"):
            refuse_non_finite(data)
        values = dict(data)
        for key, field in cls.model_fields.items():  # the written form of a None that is not the default
            check = check_of(field)
            if (values.get(key) == NONE and check is not None and check.allows_none
                    and field.default is not None):
                values[key] = None
        return values

    @classmethod
    def unknown_message(cls, unknown: list[str], known: list[str]) -> str:
        if not cls.table:
            return (f"Unknown section [{unknown[0]}].{closest(unknown[0], known)} "
                    f"Known: {', '.join(sorted(known))}.")
        if cls.listed_unknowns:
            return (f"Unknown key(s) {unknown} in [{cls.table}].{closest(unknown[0], known)} "
                    f"Known: {', '.join(known)}.")
        return (f"Unknown key {unknown[0]!r} in [{cls.table}].{closest(unknown[0], known)} "
                f"Known: {', '.join(sorted(known))}.")

    @classmethod
    def from_table(cls, raw, toml: bool = False):
        """A checked table from its TOML dict (ConfigError names the first bad key)."""
        try:
            return cls.model_validate(raw, context={"toml": toml})
        except ValidationError as e:
            raise config_error(e, tuple(cls.table.split(".")) if cls.table else ()) from None

    def check(self):
        """Check this table as the file would be, and keep the checked values (numbers
        normalised: 1 -> 1.0 where a number goes); returns self."""
        checked = type(self).from_table(self.values())
        for k in type(self).model_fields:
            setattr(self, k, getattr(checked, k))
        return self

    def toml_values(self) -> dict:
        """The table as written: a None is left out when it is the default, else written "none"."""
        out = {}
        for k, field in type(self).model_fields.items():
            v = getattr(self, k)
            if v is None:
                if field.default is None:
                    continue
                v = NONE
            out[k] = v
        return out

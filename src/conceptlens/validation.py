"""Parameter constraints as data: the one way conceptlens declares and checks parameters.

A port of scikit-learn's `_parameter_constraints` (sklearn/utils/_param_validation.py), kept
small: an owner (a method, a concept source, a solver, a config section) declares

    _parameter_constraints = {"lam": [Interval(float, 0, None, closed="left")],
                              "mode": [Options("joint", "sequential")],
                              "cavs": [None, InstanceOf(str, "a file path")]}

and `validate_params(owner, params, constraints)` raises ConfigError naming the owner, the
parameter, what it must be and what it got (with "Did you mean ...?" for near-miss options).
A value is valid when it satisfies any one constraint of its list; `None` in a list allows None.

`invalid_values(constraints)` returns values that satisfy none of them, so the tests of every
registered owner are generated from its declaration rather than written by hand.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, closest

__all__ = ["Boolean", "Constraint", "InstanceOf", "Interval", "InvalidValue", "ListOf", "Options", "Predicate",
           "StrList", "check_value", "describe", "invalid_values", "validate_params"]


class InvalidValue(ConfigError):
    """What check_value raises: the message, and its parts for callers that word it their own way
    (the run config names the [section] and the key): `name`, `value`, `constraints` (the list),
    `expected` (what `describe` says of them) and `hint` (" Did you mean ...?" or "")."""

    def __init__(self, message: str, name: str, value: Any, constraints: list, hint: str):
        super().__init__(message)
        self.name, self.value, self.constraints, self.hint = name, value, constraints, hint
        self.expected = describe(constraints)


class Constraint:
    """One condition a value may satisfy."""

    def is_satisfied_by(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """What a valid value is, as a phrase that follows "must be"."""
        raise NotImplementedError

    def invalid_examples(self) -> list:
        """Values that fail this constraint (candidates for the generated invalid-value tests)."""
        return []

    def hint(self, value: Any) -> str:
        """A suffix for the error message (e.g. " Did you mean 'joint'?")."""
        return ""


def _bound(x) -> str:
    """A bound as written: whole numbers in full (4294967295, not 4.29497e+09), others as :g."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class Interval(Constraint):
    """A finite int (`kind=int`; floats with no fractional part are not ints) or a finite real
    number (`kind=float`; ints included) in [low, high], each bound optional; `closed` is
    "both", "left", "right" or "neither". `description` replaces the generated phrase
    ("a positive finite number" for "a finite number > 0")."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    description: str | None = None

    def __post_init__(self):
        if self.kind not in (int, float):
            raise TypeError("Interval kind must be int or float")
        if self.closed not in ("both", "left", "right", "neither"):
            raise TypeError(f"Interval closed must be both/left/right/neither; got {self.closed!r}")

    def is_satisfied_by(self, v) -> bool:
        if self.kind is int:
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                return False
        elif not _is_number(v) or not math.isfinite(float(v)):
            return False
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return bool(lo_ok and hi_ok)

    def describe(self) -> str:
        if self.description:
            return self.description
        what = "an integer" if self.kind is int else "a finite number"
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return (f"{what} in {'[' if lo_in else '('}{_bound(self.low)}, {_bound(self.high)}"
                    f"{']' if hi_in else ')'}")
        if self.low is not None:
            return f"{what} {'>=' if lo_in else '>'} {_bound(self.low)}"
        if self.high is not None:
            return f"{what} {'<=' if hi_in else '<'} {_bound(self.high)}"
        return what

    def invalid_examples(self) -> list:
        out: list = ["1", True, float("nan")]
        if self.kind is int:
            out.append(1.5)
        else:
            out.append(float("inf"))
        if self.low is not None:
            out.append(self.low if self.closed in ("right", "neither") else self.low - 1)
        if self.high is not None:
            out.append(self.high if self.closed in ("left", "neither") else self.high + 1)
        return out


class Options(Constraint):
    """One of the given values (strings, usually; a str subclass such as numpy.str_ counts as a
    string); a near miss gets "Did you mean ...?". `description` replaces "one of 'a', 'b'"."""

    def __init__(self, *choices, description: str | None = None):
        if len(choices) == 1 and isinstance(choices[0], (tuple, list, set, frozenset)):
            choices = tuple(choices[0])
        self.choices = tuple(choices)
        self.description = description

    def is_satisfied_by(self, v) -> bool:
        try:
            return any(v == c and (type(v) is type(c) or (isinstance(c, str) and isinstance(v, str)))
                       for c in self.choices)
        except (TypeError, ValueError):
            return False

    def describe(self) -> str:
        if self.description:
            return self.description
        return f"one of {', '.join(map(repr, self.choices))}"

    def invalid_examples(self) -> list:
        strings = [c for c in self.choices if isinstance(c, str)]
        return ([strings[0] + "_typo", strings[0].upper() + "?"] if strings else []) + [object()]

    def hint(self, v) -> str:
        strings = [c for c in self.choices if isinstance(c, str)]
        return closest(v, strings) if isinstance(v, str) else ""

    def __repr__(self) -> str:
        return f"Options{self.choices!r}"


class Boolean(Constraint):
    """True or False (not 0/1, not "true"); `description` replaces "a boolean (true or false)"."""

    def __init__(self, description: str | None = None):
        self.description = description

    def is_satisfied_by(self, v) -> bool:
        return isinstance(v, bool)

    def describe(self) -> str:
        return self.description or "a boolean (true or false)"

    def invalid_examples(self) -> list:
        return ["true", 1, None]


class InstanceOf(Constraint):
    """An instance of `types` (bool is refused where int is asked for), described in words."""

    def __init__(self, types: type | tuple[type, ...], description: str):
        self.types = types if isinstance(types, tuple) else (types,)
        self.description = description

    def is_satisfied_by(self, v) -> bool:
        if isinstance(v, bool) and bool not in self.types:
            return False
        return isinstance(v, self.types)

    def describe(self) -> str:
        return self.description

    def invalid_examples(self) -> list:
        return [c for c in (object(), 1.5, ["x"]) if not self.is_satisfied_by(c)]


class StrList(Constraint):
    """A list or tuple of non-empty strings, at least `min_len` long."""

    def __init__(self, min_len: int = 0, description: str | None = None):
        self.min_len = min_len
        self.description = description

    def is_satisfied_by(self, v) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) >= self.min_len
                and all(isinstance(s, str) and s.strip() for s in v))

    def describe(self) -> str:
        if self.description:
            return self.description
        return "a list of non-empty strings" + (f" (at least {self.min_len})" if self.min_len else "")

    def invalid_examples(self) -> list:
        return ["a string", [1], [""]] + ([[]] if self.min_len else [])


class ListOf(Constraint):
    """A list or tuple (`types`; a string is never one) of min_len to max_len items, each
    satisfying the constraint `item`: ListOf(Interval(float, 0, None, closed="neither"), 1) is
    "a non-empty list of positive numbers"."""

    def __init__(self, item: Constraint, min_len: int = 0, max_len: int | None = None,
                 description: str | None = None, types: type | tuple[type, ...] = (list, tuple)):
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.description, self.types = description, types

    def is_satisfied_by(self, v) -> bool:
        if isinstance(v, (str, bytes)) or not isinstance(v, self.types):
            return False
        n = len(v)
        return (n >= self.min_len and (self.max_len is None or n <= self.max_len)
                and all(self.item.is_satisfied_by(x) for x in v))

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.max_len is not None and self.max_len == self.min_len:
            size = f"{self.min_len} "
        elif self.min_len:
            size = (f"at least {self.min_len} " if self.max_len is None
                    else f"{self.min_len} to {self.max_len} ")
        else:
            size = "" if self.max_len is None else f"at most {self.max_len} "
        return f"a list of {size}items, each {self.item.describe()}"

    def invalid_examples(self) -> list:
        good = next((x for x in ([0.5, 1, 1.0, "a", True]) if self.item.is_satisfied_by(x)), None)
        out: list = ["a string", object()]
        bad_items = [x for x in self.item.invalid_examples() if not self.item.is_satisfied_by(x)]
        if bad_items:
            out.append([bad_items[0]] * max(self.min_len, 1))
        if self.min_len:
            out.append([] if good is None else [good] * (self.min_len - 1))
        if self.max_len is not None and good is not None:
            out.append([good] * (self.max_len + 1))
        return out


class Predicate(Constraint):
    """Any other condition: a function, its description and values that fail it."""

    def __init__(self, test: Callable[[Any], bool], description: str, invalid: Sequence = ()):
        self.test, self.description, self.invalid = test, description, list(invalid)

    def is_satisfied_by(self, v) -> bool:
        try:
            return bool(self.test(v))
        except (TypeError, ValueError):
            return False

    def describe(self) -> str:
        return self.description

    def invalid_examples(self) -> list:
        return list(self.invalid)


def _constraints(spec) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def _satisfies(value, c) -> bool:
    return value is None if c is None else c.is_satisfied_by(value)


def describe(spec) -> str:
    """"an integer >= 1 or None": what a parameter's constraints allow."""
    parts = [("None" if c is None else c.describe()) for c in _constraints(spec)]
    return " or ".join(parts)


def check_value(value, spec, name: str, owner: str = "", example: str | None = None) -> None:
    """Raise ConfigError unless `value` satisfies one of the constraints in `spec`."""
    cs = _constraints(spec)
    if any(_satisfies(value, c) for c in cs):
        return
    hint = "".join(c.hint(value) for c in cs if c is not None)
    where = f"{owner}: " if owner else ""
    tip = f" Example: {example}." if example else ""
    raise InvalidValue(f"{where}{name} must be {describe(cs)}; got {value!r}.{hint}{tip}", name, value, cs,
                       hint)


def validate_params(owner: str, params: dict, constraints: dict[str, Any],
                    examples: dict[str, str] | None = None) -> None:
    """Check every parameter that has constraints (parameters without any are not checked)."""
    for name, spec in constraints.items():
        if name in params:
            check_value(params[name], spec, name, owner, (examples or {}).get(name))


def invalid_values(spec) -> list:
    """Values that satisfy none of the constraints in `spec` (for generated tests)."""
    cs = _constraints(spec)
    seen: list = []
    for c in cs:
        if c is None:
            continue
        for v in c.invalid_examples():
            if not any(_satisfies(v, other) for other in cs) and not any(_same(v, s) for s in seen):
                seen.append(v)
    return seen


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def iter_constraints(constraints: dict[str, Any]) -> Iterable[tuple[str, list]]:
    for name, spec in constraints.items():
        yield name, _constraints(spec)

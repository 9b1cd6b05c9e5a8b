"""Generated invalid-parameter checks: what a class's `_parameter_constraints` declare is what it
refuses.

    from conceptlens.testing.params import check_invalid_params
    check_invalid_params(MyMethod)  # or a concept source class

fails unless every constructor parameter has a constraint (and every constraint names one), every
default satisfies its constraints, and every value `validation.invalid_values` derives from them,
given alone, raises ConfigError saying "<parameter> must be ...": for a method through
`methods.base.check_params` (which validates as `fit` does), for any other class (a concept source)
through its constructor. A new method or source is tested by declaring its constraints; nothing
here lists them by hand.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError
from ..methods.base import Method, check_params
from ..validation import invalid_values, validate_params

__all__ = ["check_invalid_params", "constructor_params", "invalid_settings"]


def constructor_params(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments of `cls.__init__` (its parameters), by name."""
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def invalid_settings(cls: type) -> Iterator[tuple[str, Any]]:
    """(parameter, value) for every invalid value of every constrained parameter of `cls`."""
    for name, spec in cls._parameter_constraints.items():
        for value in invalid_values(spec):
            yield name, value


def _build(cls: type, params: dict):
    if issubclass(cls, Method):
        return check_params(cls, params)
    return cls(**params)


def check_invalid_params(cls: type) -> None:
    """Assert that `cls._parameter_constraints` cover its constructor and are enforced (see the
    module docstring); the AssertionError names the class, the parameter and the value."""
    owner = getattr(cls, "name", cls.__name__)
    constraints = getattr(cls, "_parameter_constraints", None)
    assert isinstance(constraints, dict), f"{cls.__name__} declares no _parameter_constraints"
    params = constructor_params(cls)
    missing = [k for k in params if k not in constraints]
    assert not missing, (f"{cls.__name__}: constructor parameter(s) {missing} have no entry in "
                         "_parameter_constraints; declare what each may be (conceptlens.validation).")
    unknown = [k for k in constraints if k not in params]
    assert not unknown, (f"{cls.__name__}: _parameter_constraints names {unknown}, which "
                         f"{cls.__name__}.__init__ does not take.")
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    try:
        validate_params(owner, defaults, constraints)
    except ConfigError as e:
        raise AssertionError(f"{cls.__name__}: a default value breaks its own constraints: {e}") from None
    for name, spec in constraints.items():
        values = invalid_values(spec)
        assert values, (f"{cls.__name__}: no invalid value can be derived for {name!r}; give its "
                        "Predicate constraint examples of values it refuses.")
        for value in values:
            try:
                _build(cls, {name: value})
            except ConfigError as e:
                assert f"{name} must be" in str(e), (
                    f"{cls.__name__}: {name}={value!r} raised a ConfigError that does not say "
                    f"'{name} must be ...': {e}")
            else:
                raise AssertionError(f"{cls.__name__}: {name}={value!r} violates its constraints "
                                     f"{spec!r} and was accepted.")

"""validation.py's ListOf and description=, and the generated invalid-parameter check
(conceptlens.testing.params) on small hand-made classes: it fails a class that forgets a
parameter or does not enforce a constraint."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from conceptlens.errors import ConfigError
from conceptlens.methods.base import Method
from conceptlens.testing.params import check_invalid_params
from conceptlens.validation import Boolean, Interval, ListOf, Options, check_value, invalid_values


def test_list_of_checks_length_and_items():
    three = ListOf(Interval(float, 0, None), 3, 3)
    assert three.is_satisfied_by((3.0, 1, np.float64(0.5))) and three.is_satisfied_by([0, 0, 0])
    assert not three.is_satisfied_by((1.0, 2.0)) and not three.is_satisfied_by([1.0, -1.0, 0.0])
    assert not three.is_satisfied_by("abc") and not three.is_satisfied_by(np.zeros(3))
    assert three.describe() == "a list of 3 items, each a finite number >= 0"
    bad = invalid_values([three])
    assert bad and not any(three.is_satisfied_by(v) for v in bad)
    assert any(isinstance(v, list) and len(v) == 4 for v in bad)  # one too many


def test_description_replaces_the_generated_phrase():
    with pytest.raises(ConfigError,
                       match=r"^m: lr must be a positive finite number; got 0\. Example: lr = 1e-3\.$"):
        check_value(0, [Interval(float, 0, None, closed="neither", description="a positive finite number")],
                    "lr", "m", "lr = 1e-3")
    with pytest.raises(ConfigError, match=r"flag must be true or false; got 1\."):
        check_value(1, [Boolean("true or false")], "flag")
    with pytest.raises(ConfigError, match=r"mode must be one of a, b; got 'c'\."):
        check_value("c", [Options("a", "b", description="one of a, b")], "mode")


def test_options_take_string_subclasses_but_not_other_types():
    opt = Options("auto", "dot")
    assert opt.is_satisfied_by(np.str_("dot")) and not opt.is_satisfied_by(b"dot")
    assert not Options(0, 1).is_satisfied_by(True)


class Good(Method):
    _parameter_constraints: ClassVar[dict[str, list]] = {"k": [Interval(int, 1)], "mode": [Options("a", "b")]}

    def __init__(self, k: int = 1, mode: str = "a"):
        self.k, self.mode = k, mode


def test_check_invalid_params_passes_a_declared_enforced_class():
    check_invalid_params(Good)


def test_check_invalid_params_fails_a_parameter_without_a_constraint():
    class Forgot(Good):
        def __init__(self, k: int = 1, mode: str = "a", extra: float = 0.0):
            super().__init__(k, mode)
            self.extra = extra

    with pytest.raises(AssertionError, match=r"\['extra'\] have no entry in _parameter_constraints"):
        check_invalid_params(Forgot)


def test_check_invalid_params_fails_a_constraint_that_is_not_enforced():
    class Lax(Good):
        def _validate(self) -> None:  # forgets super()._validate()
            pass

    with pytest.raises(AssertionError, match="was accepted"):
        check_invalid_params(Lax)


def test_check_invalid_params_fails_a_default_that_breaks_its_constraint():
    class BadDefault(Good):
        def __init__(self, k: int = 0, mode: str = "a"):
            super().__init__(k, mode)

    with pytest.raises(AssertionError, match="default value"):
        check_invalid_params(BadDefault)

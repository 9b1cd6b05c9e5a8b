"""The solvers' parameter constraints, as data (module conceptlens.validation).

`FIT_CONSTRAINTS` (fit_elastic_net), `PATH_CONSTRAINTS` (solve_path), `SHARD_CONSTRAINTS`
(write_feature_shards) and `STREAM_CONSTRAINTS` (StreamedFeatures) are checked by
`check(owner, **params)`; a bad value is a ConfigError naming the owner, the parameter, what
it must be and what it got. Data-dependent checks (shapes, finite values, labels, the support
mask) stay with the data (modules `in_memory`, `shards`, `kernels`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..validation import Constraint, InstanceOf, Interval, Options, validate_params

LOSSES = ("multinomial", "ovr")
SOLVERS = ("auto", "fista", "newton")
SHARD_DTYPES = ("bfloat16", "float16", "float32")


class Worded(Constraint):
    """A constraint described in other words (the wording the solvers' messages have always had)."""

    def __init__(self, inner: Constraint, description: str):
        self.inner, self.description = inner, description

    def is_satisfied_by(self, value: Any) -> bool:
        return self.inner.is_satisfied_by(value)

    def describe(self) -> str:
        return self.description

    def invalid_examples(self) -> list:
        return self.inner.invalid_examples()

    def hint(self, value: Any) -> str:
        return self.inner.hint(value)


def one_of(choices: tuple[str, ...] | list[str]) -> Worded:
    """One of `choices`, described as "one of ('a', 'b')" (the tuple or list as written)."""
    return Worded(Options(*choices), f"one of {choices!r}")


POSITIVE_INTEGER = Worded(Interval(int, 1, None), "a positive integer")

FIT_CONSTRAINTS: dict[str, list] = {
    "lam": [Interval(float, 0, None, closed="left")],
    "alpha": [Interval(float, 0, 1)],
    "loss": [one_of(LOSSES)],
    "positive": [InstanceOf((bool, np.bool_), "True or False")],
    "solver": [one_of(SOLVERS)],
}

# solve_path: lam may be None (then target_nec gives the stop); n_classes is checked here
PATH_CONSTRAINTS: dict[str, list] = {**FIT_CONSTRAINTS,
                                     "lam": [Interval(float, 0, None, closed="left"), None],
                                     "n_classes": [POSITIVE_INTEGER, None]}

SHARD_CONSTRAINTS: dict[str, list] = {
    "dtype": [one_of(list(SHARD_DTYPES))],
    "rows_per_shard": [Interval(int, 1, None)],
}

STREAM_CONSTRAINTS: dict[str, list] = {
    "max_memory_bytes": [POSITIVE_INTEGER],
    "chunk_rows": [POSITIVE_INTEGER, None],
}


def check(owner: str, constraints: dict[str, list], **params) -> None:
    """Raise ConfigError for the first parameter (in the order of `constraints`) that fails."""
    validate_params(owner, params, constraints)

"""Method aliases: a run config's `[methods.<name>]` table may say which registered method it
configures with `method = "<registered name>"` (default: the table name), so one run can hold a
method several times with different parameters:

    [methods.cbm_independent]
    method = "cbm"
    mode = "independent"
    [methods.cbm_joint]
    method = "cbm"
    mode = "joint"

The table name is the display name (results, tables, report, the saved model's folder); the
registered name builds the estimator, and a saved model's model.json records it, so loading and
refitting never see the display name. A table named after one registered method may not build
another (its row would be read as the wrong method)."""

from __future__ import annotations

from ..errors import ConfigError, closest
from .base import METHODS, Method, get_method

# the methods a run fits when its config has no [methods] table (the registry names them, so
# runs/ holds no method name)
DEFAULT_METHODS = {"zero_shot": {}, "linear_probe": {}, "labo": {}, "label_free": {}}
# no registered method has a parameter of this name (tests/methods/test_method_aliases.py)
METHOD_KEY = "method"


def registered_name(name: str, params: dict | None = None) -> str:
    """The registered method that the table `name` with `params` configures; ConfigError, listing
    the known methods, when there is none."""
    params = params or {}
    known = ", ".join(METHODS.names())
    if METHOD_KEY not in params:
        if name not in METHODS:
            raise ConfigError(
                f"[methods.{name}]: Unknown method {name!r}.{closest(name, METHODS.names())} "
                f"Known methods: {known}. To show a method under another name, keep this table name and "
                f'add method = "<registered name>", e.g. [methods.{name}] method = "cbm".')
        return name
    target = params[METHOD_KEY]
    if not isinstance(target, str) or target not in METHODS:
        hint = closest(target, METHODS.names()) if isinstance(target, str) else ""
        raise ConfigError(f"[methods.{name}] method = {target!r}: Unknown method {target!r}.{hint} "
                          f"Known methods: {known}.")
    if name != target and name in METHODS:
        raise ConfigError(f"[methods.{name}] method = {target!r}: {name!r} is itself a registered method, "
                          f"so its results would be read as {name}'s; name the table something else, "
                          f"e.g. [methods.{target}_{name}].")
    return target


def method_params(params: dict | None) -> dict:
    """The estimator's parameters: the table without its `method` key."""
    return {k: v for k, v in (params or {}).items() if k != METHOD_KEY}


def method_class(name: str, params: dict | None = None) -> type:
    """The registered class the table `name` configures (capability flags, signature)."""
    return METHODS.get(registered_name(name, params))


def make_method(name: str, params: dict | None = None) -> Method:
    """An unfitted estimator for the run-config table `name` with `params` (a `method` key names
    the registered method; without one, `name` is it). Unknown parameters raise ConfigError."""
    params = params or {}
    target = registered_name(name, params)
    try:
        return get_method(target, **method_params(params))
    except ConfigError as e:
        if target == name:
            raise
        raise ConfigError(f"[methods.{name}] (method = {target!r}): {e}") from None

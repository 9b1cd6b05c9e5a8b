"""Small name -> factory registries (backbones, concept sources, methods)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from .errors import ConfigError, closest

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ConfigError(f"{self.kind} {name!r} is registered twice.")
            self._factories[name] = factory
            if isinstance(factory, type):  # a registered class knows its own name
                factory.name = name
            return factory

        return decorate

    def unregister(self, name: str) -> Callable[..., T]:
        """Remove `name` (ConfigError when it is not registered); returns its factory."""
        self.get(name)  # the usual error, with the known names
        return self._factories.pop(name)

    @contextmanager
    def registered(self, name: str, factory: Callable[..., T]) -> Iterator[Callable[..., T]]:
        """`factory` registered as `name` for the block only (a throwaway entry in a test):

            with METHODS.registered("my_method", MyMethod):
                check_method("my_method")
        """
        self.register(name)(factory)
        try:
            yield factory
        finally:
            if self._factories.get(name) is factory:
                del self._factories[name]

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(
                f"Unknown {self.kind} {name!r}.{closest(name, self._factories)} "
                f"Known: {', '.join(self.names())}."
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._factories

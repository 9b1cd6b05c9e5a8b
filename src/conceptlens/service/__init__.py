"""`conceptlens serve`: a saved model over HTTP, and the explorer page (needs the `serve` extra:
pip install 'conceptlens[serve]')."""

from __future__ import annotations

from importlib import import_module

# the app (and through it every method) loads on first use: `conceptlens serve --help` needs
# only the limits
_FROM = {"DEFAULT_MAX_PIXELS": "limits", "DEFAULT_MAX_UPLOAD_BYTES": "limits", "TOKEN_ENV": "app",
         "ModelService": "app", "ServerThread": "app", "bind_socket": "app", "create_app": "app",
         "is_loopback": "app", "token_for_host": "app"}

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "TOKEN_ENV",
    "ModelService",
    "ServerThread",
    "bind_socket",
    "create_app",
    "is_loopback",
    "token_for_host",
]


def __getattr__(name: str):
    if name in _FROM:
        return getattr(import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""`conceptlens serve`: a saved model over HTTP, and the explorer page (needs the `serve` extra:
pip install 'conceptlens[serve]')."""

from .app import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    TOKEN_ENV,
    ModelService,
    ServerThread,
    bind_socket,
    create_app,
    is_loopback,
    token_for_host,
)

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

"""The service's request limits, apart from app.py so that `conceptlens serve --help` shows them
without importing the app (and through it every method)."""

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# below the library's 64 Mpx: a service decodes several uploads at once, each up to 3 bytes/pixel
DEFAULT_MAX_PIXELS = 16_000_000

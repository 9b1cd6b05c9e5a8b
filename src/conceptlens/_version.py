"""The package's version, in the bottom layer so that any module can record it (saved models, the
service) without importing the public API above it. pyproject.toml's `version` must match."""

__version__ = "0.1.0"

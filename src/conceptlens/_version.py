"""The package's version, in the bottom layer so that any module can record it (saved models, the
service) without importing the public API above it; the one version source: pyproject.toml reads it
(`dynamic = ["version"]`, [tool.setuptools.dynamic])."""

__version__ = "0.1.0"

"""The tiny deterministic backbone now ships as conceptlens.testing.TinyBackbone; this name stays
for code that imports it from the tests folder (subprocesses, ray workers)."""

from conceptlens.testing.backbones import TinyBackbone

__all__ = ["TinyBackbone"]

"""Classifiers on encoded features: baselines now, concept bottleneck methods beside them."""

from .linear_probe import LinearProbe
from .zero_shot import ZeroShot

__all__ = ["LinearProbe", "ZeroShot"]

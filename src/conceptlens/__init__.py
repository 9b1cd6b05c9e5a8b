"""conceptlens: interpretable image classifiers (concept bottleneck models) from a
vision-language model and a list of class names."""

from ._version import __version__
from .errors import ConceptLensError, ConfigError, DataError, NotFittedError

__all__ = ["ConceptLensError", "ConfigError", "DataError", "NotFittedError", "__version__"]

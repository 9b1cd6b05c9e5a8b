"""conceptlens: interpretable image classifiers (concept bottleneck models) from a
vision-language model and a list of class names."""

from .errors import ConceptLensError, ConfigError, DataError, NotFittedError

__version__ = "0.1.0"

__all__ = ["ConceptLensError", "ConfigError", "DataError", "NotFittedError", "__version__"]

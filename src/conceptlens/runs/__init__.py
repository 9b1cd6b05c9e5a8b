"""Reproducible runs: a TOML config in, a recorded output folder out."""

from .config import RunConfig, load_config
from .experiment import run_experiment

__all__ = ["RunConfig", "load_config", "run_experiment"]

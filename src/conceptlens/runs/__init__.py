"""Reproducible runs: a TOML config in, a recorded output folder out; read back with RunFolder."""

from .config import RunConfig, load_config
from .experiment import RunState, run_experiment
from .folder import RunFolder
from .results import MethodResult, RunResult

__all__ = ["MethodResult", "RunConfig", "RunFolder", "RunResult", "RunState", "load_config", "run_experiment"]

"""A recorded run folder read back: `RunFolder.load(path)`, the run-level `from_pretrained`.

    folder = RunFolder.load("runs/demo")
    folder.result.results["labo"].top1        # results.json, typed (runs/results.py)
    folder.config.methods                     # config.toml, checked by the config models
    model = folder.model("labo")              # models/labo (Method.load)
    folder.report_model()                     # the model the run's report.html shows

What `record_run` wrote is checked as it is read: config.toml through the config's pydantic
models (runs/config.py; its [data] table always, since that is where the run's images are; the
whole file where it still validates: a concept file or an annotation CSV the run read may since
have moved, which `config_problem` then says), results.json through RunResult.from_dict, and
splits.json (record.read_split_ids). A missing or damaged folder or file is a DataError naming it
and saying what to do; `conceptlens report RUN_DIR`, `serve RUN_DIR` and `explain RUN_DIR` read
run folders through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from ..errors import ConceptLensError, ConfigError, DataError
from .config import REPORT_AUTO, ConfigFile, DataConfig, RunConfig
from .record import RUN_MARKERS, read_split_ids
from .results import RunResult

__all__ = ["RunFolder"]

MODELS = "models"


@dataclass
class RunFolder:
    """A run folder as `record_run` wrote it (see the module docstring)."""

    path: Path
    raw_config: dict
    data_config: DataConfig
    result: RunResult
    config: RunConfig | None = None
    config_problem: str | None = None
    split_ids: dict[str, list[str]] | None = None
    _models: dict = field(default_factory=dict, repr=False)

    # -- reading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> RunFolder:
        """Read and check the run folder at `path`; DataError for a missing or damaged one."""
        folder = Path(path)
        if not folder.is_dir():
            raise DataError(f"{path} is not a run folder: {'no such folder' if not folder.exists() else 'a file'}. "
                            "Give the folder `conceptlens run` wrote (its --output-dir).")
        missing = [m for m in RUN_MARKERS if not (folder / m).is_file()]
        if missing:
            raise DataError(f"{path} is not a run folder: it has no {' or '.join(missing)} (a run folder holds "
                            f"{', '.join(RUN_MARKERS)}, as `conceptlens run` writes them).")
        raw = _read(folder / "config.toml", tomllib.loads, tomllib.TOMLDecodeError)
        record = _read(folder / "results.json", json.loads, json.JSONDecodeError)
        if not isinstance(record, dict):
            raise DataError(f"{folder / 'results.json'} holds no per-method results; is {folder} a run folder "
                            "written by `conceptlens run`?")
        result = RunResult.from_dict(record, where=str(folder / "results.json"))
        try:
            data_config = DataConfig.from_table(raw.get("data", {}), toml=True)
        except ConfigError as e:
            raise DataError(f"{folder / 'config.toml'}: its [data] table is not one this version reads ({e}).") from e
        config, problem = None, None
        try:
            config = RunConfig.from_file(ConfigFile.from_table(raw, toml=True))
        except ConceptLensError as e:
            problem = str(e)
        # results.json's keys are sorted: put the methods back in the config's order (ties and the
        # no-validation rule of choose_report_method go by it, as in the run)
        methods = raw.get("methods", {}) if isinstance(raw.get("methods"), dict) else {}
        order = [n for n in methods if n in result.results]
        result.results = {n: result.results[n] for n in [*order, *result.results]}
        return cls(folder, raw, data_config, result, config, problem, read_split_ids(folder))

    # -- what the run used -------------------------------------------------------------------
    @property
    def backbone_spec(self) -> str:
        """The run's [backbone] spec ("offline" where config.toml names none)."""
        if self.config is not None:
            return self.config.backbone
        return (self.raw_config.get("backbone") or {}).get("spec", "offline")

    @property
    def cache_dir(self) -> str | None:
        """The run's [output] cache_dir (its features), or None."""
        if self.config is not None:
            return self.config.cache_dir
        return (self.raw_config.get("output") or {}).get("cache_dir")

    @property
    def report_choice(self) -> str:
        """[report] method as the run was configured ("auto" where not given)."""
        if self.config is not None:
            return self.config.report.method
        return (self.raw_config.get("report") or {}).get("method", REPORT_AUTO)

    # -- the models ----------------------------------------------------------------------------
    def model_dir(self, name: str) -> Path:
        return self.path / MODELS / name

    def model_names(self) -> list[str]:
        """The methods with a saved model in models/, in the run's order (a failed fit has none)."""
        return [n for n in self.result.results if (self.model_dir(n) / "model.json").is_file()]

    def model(self, name: str):
        """The saved model of method `name` (loaded once); ConfigError naming the run's methods when
        it has none."""
        if name not in self._models:
            if name not in self.model_names():
                from ..errors import closest

                why = (self.result.results[name].failed if name in self.result.results else None) or (
                    "it is not one of the run's methods" if name not in self.result.results
                    else "its model is not in the run folder's models/")
                raise ConfigError(f"{self.path}: the run has no model of {name!r} ({why}); its models: "
                                  f"{', '.join(self.model_names()) or 'none'}.{closest(name, self.model_names())}")
            from ..methods import Method

            self._models[name] = Method.load(self.model_dir(name))
        return self._models[name]

    def models(self) -> dict:
        """{name: model} of every saved model, in the run's order."""
        return {name: self.model(name) for name in self.model_names()}

    def report_model_name(self) -> str:
        """The method the run's report.html shows (results.json report_method), else the run's rule
        (stages.choose_report_method) on its recorded numbers; ConfigError when the run fitted no
        concept bottleneck."""
        from .stages import choose_report_method

        recorded = self.result.report_method
        if recorded and recorded.get("method") in self.model_names():
            return recorded["method"]
        rows = {n: r.to_dict() for n, r in self.result.results.items()}
        chosen = choose_report_method("auto", rows, self.models())
        if chosen is None:
            raise ConfigError(f"{self.path}: the run fitted no concept bottleneck, so there is no model to "
                              "show; its results are in results.md.")
        return chosen["method"]

    def report_model(self):
        return self.model(self.report_model_name())


def _read(path: Path, parse, decode_error):
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, decode_error) as e:
        raise DataError(f"Cannot read the run folder {path.parent}: {path.name}: {e}. Rerun the run, or "
                        "restore the file.") from e

"""A run's results as typed objects: `MethodResult` (one method's row) and `RunResult` (the whole
run: what `run_experiment` returns and results.json holds).

`RunResult.to_dict()` is results.json's content (record.py writes it, keys sorted), and
`RunResult.from_dict(json.load(...))` reads it back: the round trip gives the same dict, so stored
runs stay readable. `RunResult` is also a read-only mapping over those keys plus "table",
"split_ids" and "output_dir" (the dict `run_experiment` returned before it was typed), so
`result["results"]["labo"]["top1"]` keeps working beside `result.results["labo"].top1`.

A `MethodResult`'s typed fields are the keys every fitted method's row has (`evaluate`'s metrics,
fit_seconds), the ones some rows have (val_top1 with a validation split, truth for a concept
bottleneck, failed for a method that could not be fitted: then it has no metrics), and `measures`:
every other number of the row as recorded (top-1 at NEC, grounding, evidence, concept labels,
deletion areas). None in a typed field means the row does not have that key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import DataError

__all__ = ["RESULT_KEYS", "MethodResult", "RunResult", "as_method_results"]


@dataclass
class MethodResult:
    """One method's results row (see the module docstring)."""

    top1: float | None = None
    top5: float | None = None
    mean_per_class: float | None = None
    ece: float | None = None
    nec: float | None = None
    n: int | None = None
    fit_seconds: float | None = None
    val_top1: float | None = None
    failed: str | None = None
    truth: dict | None = None
    measures: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def typed_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "measures")

    @classmethod
    def from_dict(cls, row: Mapping | MethodResult) -> MethodResult:
        """A row of results.json "results" (a MethodResult is returned as it is)."""
        if isinstance(row, MethodResult):
            return row
        if not isinstance(row, Mapping):
            raise DataError(f"A results row must be a JSON object of measures; got {type(row).__name__}.")
        typed = cls.typed_keys()
        return cls(**{k: row[k] for k in typed if k in row},
                   measures={k: v for k, v in row.items() if k not in typed})

    def to_dict(self) -> dict:
        """The row as results.json records it."""
        row = {k: getattr(self, k) for k in self.typed_keys() if getattr(self, k) is not None}
        return row | self.measures

    def update(self, values: Mapping) -> MethodResult:
        """Add measures (a typed key sets its field); returns self."""
        typed = self.typed_keys()
        for k, v in values.items():
            if k in typed:
                setattr(self, k, v)
            else:
                self.measures[k] = v
        return self

    # the row's other numbers, typed where the tables and the report read them
    def get(self, key: str, default=None):
        """The row's `key` (a typed field or a measure), `default` where the row has none."""
        if key in self.typed_keys():
            value = getattr(self, key)
            return default if value is None else value
        return self.measures.get(key, default)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None or key in self.measures

    @property
    def fitted(self) -> bool:
        return self.failed is None

    @property
    def top1_at_nec(self) -> float | None:
        return self.measures.get("top1_at_nec")

    @property
    def concept_auroc(self) -> float | None:
        return self.measures.get("concept_auroc")

    @property
    def grounded(self) -> bool:
        """Whether grounding was measured for this row (its value may be None: no concepts)."""
        return "concept_auroc" in self.measures

    @property
    def evidence_at_k(self) -> float | None:
        return self.measures.get("evidence_at_k")

    @property
    def passed_truth(self) -> bool | None:
        """The truth floor's verdict (None: not checked)."""
        return (self.truth or {}).get("passed")


def as_method_results(results: Mapping) -> dict[str, MethodResult]:
    """{name: MethodResult} from rows that are MethodResults or results.json dicts."""
    return {name: MethodResult.from_dict(row) for name, row in results.items()}


# results.json's keys, in the order a run assembles them ("stages" is new in #23/#24: older runs
# lack it, and from_dict gives None)
RESULT_KEYS = ("backbone_id", "preprocess", "backbone_spec", "sizes", "results", "nec", "nec_protocol", "fewshot",
               "fewshot_validation", "concept_report", "seconds", "stages", "grounding", "concept_matches",
               "fewshot_grounding", "confounded", "discovery", "concept_labels", "report_method",
               "fewshot_failures", "fewshot_table")
# what run_experiment's result holds beside results.json's keys (never written there)
IN_MEMORY_KEYS = ("table", "split_ids", "output_dir", "written")


@dataclass
class RunResult(Mapping):
    """What a run measured (results.json) and, in memory, its table, split ids and folder."""

    backbone_id: str
    preprocess: str | None
    sizes: dict[str, int]
    results: dict[str, MethodResult]
    backbone_spec: str = ""  # the spec that reopens the backbone (an hf: folder as an absolute path)
    nec: int = 0
    nec_protocol: str = "vlg"
    fewshot: dict | None = None
    fewshot_validation: bool | None = None
    concept_report: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict] | None = None
    grounding: dict | None = None
    concept_matches: list | None = None
    fewshot_grounding: dict | None = None
    confounded: dict | None = None
    discovery: dict | None = None
    concept_labels: dict | None = None
    report_method: dict | None = None
    fewshot_failures: dict | None = None
    fewshot_table: str | None = None
    # in memory only
    table: str = ""
    split_ids: dict[str, list] | None = None
    output_dir: str | None = None
    written: list[str] | None = None  # the run folder's top-level names (record_run)

    def __post_init__(self):
        self.results = as_method_results(self.results)

    # -- results.json ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """results.json's content (the same dict a run has always written; "stages" left out
        where the run recorded none, as older runs did not)."""
        out = {}
        for key in RESULT_KEYS:
            value = getattr(self, key)
            if key == "results":
                value = {name: row.to_dict() for name, row in value.items()}
            elif key == "stages" and value is None:
                continue
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, record: Mapping, where: str = "results.json") -> RunResult:
        """A RunResult from results.json's content; DataError (naming `where`) when it holds no
        per-method results. Keys it does not know are ignored; missing ones take their defaults."""
        if not isinstance(record, Mapping) or not isinstance(record.get("results"), Mapping):
            raise DataError(f"{where} holds no per-method results (a \"results\" object); is it a "
                            "results.json written by `conceptlens run`?")
        known = {k: record[k] for k in (*RESULT_KEYS, *IN_MEMORY_KEYS) if k in record}
        known.setdefault("backbone_id", None)
        known.setdefault("preprocess", None)
        known.setdefault("sizes", {})
        for key in ("concept_report", "seconds"):
            if known.get(key) is None:
                known[key] = {}
        try:
            return cls(**known)
        except (TypeError, DataError) as e:
            raise DataError(f"{where}: a results row is not one this version reads ({e}).") from e

    # -- the old dict's view ----------------------------------------------------------------
    def _view(self) -> dict:
        out = self.to_dict()
        out["table"] = self.table
        if self.split_ids is not None:
            out["split_ids"] = self.split_ids
        if self.output_dir is not None:
            out["output_dir"] = self.output_dir
        if self.written is not None:
            out["written"] = self.written
        return out

    def __getitem__(self, key: str):
        return self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    @property
    def warnings(self) -> list[str]:
        """The run's concept warnings (shared concepts, unlinked word associations)."""
        return list((self.concept_report or {}).get("warnings") or [])

    def method(self, name: str) -> MethodResult:
        return self.results[name]


"""report.html of a run: the run's chosen model with the run's record around it.

`run_report(state)` is what `run_experiment` calls as its `report` argument (the CLI and the demo
pass it; runs never import the report layer): the model [report] method chose, the run's results
as the summary, its deletion curves, grounding measures, discovered concepts, concept labels,
backbone (heat maps), the choice and the concept warnings.
"""

from __future__ import annotations

from ..methods.tags import get_tags
from ..runs.experiment import RunState
from ..runs.stages import report_title
from .html import RunContext, build_report

__all__ = ["run_report"]


def run_report(state: RunState) -> str:
    """report.html's HTML for a finished main run (RunState after its report stage chose the model)."""
    chosen = state.report_method
    main = chosen["method"]
    discovered = {n: m for n, m in state.models.items() if get_tags(m).discovers_concepts}
    run = RunContext(faithfulness=state.curves[main], grounding=state.details.get(main), discovered=discovered,
                     concept_labels=state.concept_labels, backbone=state.backbone, chosen=chosen,
                     warnings=state.warnings)
    return build_report(state.models[main], state.results, state.test, state.train, state.image,
                        title=report_title(main, state.data.name, chosen), run=run)

"""The main job on the built-in offline default: Fashion-MNIST end to end.

Fashion-MNIST -> offline backbone features -> WordNet concepts -> Label-free filters ->
LaBo's selection -> zero-shot, linear probe, LaBo and Label-free CBM -> a results table
and an output folder (config, versions, concepts, models).

Beside accuracy, the table and the report carry the concept-grounding measures against the
built-in Fashion-MNIST attribute matrix ([grounding] annotations = "auto"): concept AUROC on
the test images already encoded, explanation precision@5, and the concept-to-attribute matches
(concept_matches.csv). They add no image encoding: only the attribute texts go through the
text encoder (cached), and each concept model's test activations are scored.
"""

from __future__ import annotations

from .report import run_report
from .runs import RunConfig, run_experiment
from .runs.config import DEFAULT_NEC_CURVE, DataConfig
from .runs.results import RunResult

# Every concept head class-consistent (methods/class_consistent.py): a class weighs only concepts
# its source links to it, with weights >= 0, so the report's reasons are the source's, checked on
# validation images. KnoBo grounds each concept on the backbone's layer features, which is what
# makes it accurate where the offline backbone's text side cannot score concepts.
CONSISTENT = {"class_consistent": True}
DEMO_METHODS = {"zero_shot": {}, "linear_probe": {}, "labo": dict(CONSISTENT),
                "label_free": dict(CONSISTENT), "knobo": {**CONSISTENT, "on": "auto"}}


def demo_config(train_per_class: int = 300, val_per_class: int = 50, test_per_class: int = 200,
                seed: int = 0, backbone: str = "offline", cache_dir: str | None = None,
                data_dir: str | None = None, output_dir: str = "runs/demo",
                progress: bool = True, shots: list | None = None, batch_size: int = 64,
                workers: int = 2) -> RunConfig:
    cfg = RunConfig(data=DataConfig("fashion-mnist", train_per_class, val_per_class,
                                    test_per_class, seed, data_dir),
                    backbone=backbone, output_dir=output_dir, cache_dir=cache_dir,
                    progress=progress, batch_size=batch_size, workers=workers,
                    methods={k: dict(v) for k, v in DEMO_METHODS.items()},
                    nec_curve=list(DEFAULT_NEC_CURVE))  # accuracy against NEC (the docs' figure)
    if shots:
        cfg.fewshot.shots = shots
    return cfg


def run_demo(cfg: RunConfig | None = None, overwrite: bool = False) -> RunResult:
    """Run the demo (report.html included); an existing non-empty output folder is refused unless
    `overwrite`."""
    return run_experiment(cfg or demo_config(), overwrite=overwrite, report=run_report)

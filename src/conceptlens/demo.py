"""The main job on the built-in offline default: Fashion-MNIST end to end.

Fashion-MNIST -> offline backbone features -> WordNet concepts -> Label-free filters ->
LaBo's selection -> zero-shot, linear probe, LaBo and Label-free CBM -> a results table
and an output folder (config, versions, concepts, models).

Beside accuracy, the table and the report carry the concept-grounding measures against the
built-in Fashion-MNIST attribute matrix ([grounding] annotations = "auto"): concept AUROC on
the test images already encoded, explanation precision@5, and the concept-to-attribute matches
(concept_matches.csv). They add no image encoding: only the attribute texts go through the
text encoder (cached), and each concept model's test activations are scored.

The run folder also gets `images/`: EXAMPLES_PER_CLASS test images of each class as PNG, the
examples `conceptlens serve RUN_DIR/models/<method>` (or `serve RUN_DIR`) offers in its explorer.
"""

from __future__ import annotations

import io
import re

import numpy as np

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


EXAMPLES_PER_CLASS = 2
EXAMPLES = "images"  # the run folder's example images, where ModelService looks for them


def example_images(data, indices, per_class: int = EXAMPLES_PER_CLASS) -> dict[str, bytes]:
    """{"images/<class>/<i>.png": PNG bytes}: the first `per_class` images of each class among
    `indices` (the test split's) of the ImageDataset `data`, as the backbone sees them (decoded)."""
    from PIL import Image

    indices = np.asarray(indices, dtype=np.int64)
    out = {}
    for c, name in enumerate(data.classes):
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or f"class{c}"  # "T-shirt/top"
        for k, i in enumerate(indices[data.labels[indices] == c][:per_class]):
            pixels = data.images.decode(int(i), data.images.read(int(i)))
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, "PNG")
            out[f"{EXAMPLES}/{folder}/{k}.png"] = buffer.getvalue()
    return out


def run_examples(state) -> dict[str, bytes]:
    """A finished run's example images (run_experiment's `extra_files`): from its test split."""
    return example_images(state.data, state.parts["test"])


def run_demo(cfg: RunConfig | None = None, overwrite: bool = False) -> RunResult:
    """Run the demo (report.html and the explorer's example images included); an existing
    non-empty output folder is refused unless `overwrite`."""
    return run_experiment(cfg or demo_config(), overwrite=overwrite, report=run_report,
                          extra_files=run_examples)

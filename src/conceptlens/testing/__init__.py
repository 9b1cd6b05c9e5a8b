"""conceptlens.testing: the toy problems, tiny backbones and contract suites the project's own
tests are built on, shipped so that a new method, backbone or concept source is checked the same
way (docs/contributing.md).

    from conceptlens.testing import check_method, make_problem
    check_method(MyMethod)
"""

from __future__ import annotations

from .backbones import QUADRANT_SIZE, QuadrantBackbone, TinyBackbone, patch_image, save_tiny_hf
from .browser import CHROMIUM, CHROMIUM_FLAGS
from .checks import check_backbone, check_method, check_source
from .toy import (
    ATTRIBUTES,
    CLASSES,
    CONCEPT_LABELS,
    FAST_PARAMS,
    SERVICE_CLASSES,
    SERVICE_CONCEPTS,
    D,
    F,
    K,
    M,
    attribute_csv,
    decode_png,
    make_problem,
    service_model,
    spy_run,
    tiny_run_setup,
    toy_bundles,
    write_png,
)

__all__ = [
    "ATTRIBUTES",
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "CLASSES",
    "CONCEPT_LABELS",
    "FAST_PARAMS",
    "QUADRANT_SIZE",
    "SERVICE_CLASSES",
    "SERVICE_CONCEPTS",
    "D",
    "F",
    "K",
    "M",
    "QuadrantBackbone",
    "TinyBackbone",
    "attribute_csv",
    "check_backbone",
    "check_method",
    "check_source",
    "decode_png",
    "make_problem",
    "patch_image",
    "save_tiny_hf",
    "service_model",
    "spy_run",
    "tiny_run_setup",
    "toy_bundles",
    "write_png",
]

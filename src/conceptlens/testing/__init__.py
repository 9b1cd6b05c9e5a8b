"""conceptlens.testing: the toy problems, tiny backbones and contract suites the project's own
tests are built on, shipped so that a new method, backbone or concept source is checked the same
way (docs/contributing.md).

    from conceptlens.testing import check_method, make_problem
    check_method(MyMethod)
"""

from __future__ import annotations

from .backbones import QUADRANT_SIZE, QuadrantBackbone, TinyBackbone, patch_image
from .checks import check_backbone, check_method, check_source
from .toy import (
    ATTRIBUTES,
    CLASSES,
    FAST_PARAMS,
    D,
    F,
    K,
    M,
    attribute_csv,
    make_problem,
    spy_run,
    tiny_run_setup,
    toy_bundles,
    write_png,
)

__all__ = ["ATTRIBUTES", "CLASSES", "FAST_PARAMS", "QUADRANT_SIZE", "D", "F", "K", "M", "QuadrantBackbone",
           "TinyBackbone", "attribute_csv", "check_backbone", "check_method", "check_source", "make_problem",
           "patch_image", "spy_run", "tiny_run_setup", "toy_bundles", "write_png"]

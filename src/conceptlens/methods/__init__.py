"""Bottleneck methods and baselines behind one estimator contract (see base.py)."""

import importlib as _importlib
import pkgutil as _pkgutil

from .aliases import make_method
from .base import METHODS, Context, DiscoveryInputs, Method, get_method
from .cbm import CBM
from .ecbm import ECBM
from .knobo import KnoBo
from .label_free import LabelFree
from .labo import LaBo
from .linear_probe import LinearProbe
from .motif import Motif, explain_video, video_as_text
from .posthoc import CAVBank, PostHoc, PostHocHybrid, learn_cav_bank, learn_cavs
from .sparse_cbm import ConceptMatrixSearch, SparseCBM
from .zero_shot import ZeroShot

__all__ = ["CBM", "ECBM", "METHODS", "CAVBank", "ConceptMatrixSearch", "Context", "DiscoveryInputs", "KnoBo",
           "LaBo", "LabelFree", "LinearProbe", "Method", "Motif", "PostHoc", "PostHocHybrid", "SparseCBM",
           "ZeroShot", "explain_video", "get_method", "learn_cav_bank", "learn_cavs", "make_method",
           "video_as_text"]

# every module of the package is imported, so each registers its methods: adding a method is one
# new file here, no other edit
for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    _importlib.import_module(f"{__name__}.{_info.name}")
del _info

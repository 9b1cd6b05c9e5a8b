"""Bottleneck methods and baselines behind one estimator contract (see base.py)."""

# each module registers its methods on import
from . import (  # noqa: F401
           cbm,
           dn_cbm,
           ecbm,
           knobo,
           label_free,
           labo,
           linear_probe,
           motif,
           posthoc,
           sparse_cbm,
           v2c,
           zero_shot,
)
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

"""Bottleneck methods and baselines behind one estimator contract (see base.py)."""

from . import dn_cbm, knobo, label_free, labo, linear_probe, posthoc, sparse_cbm, v2c, zero_shot  # noqa: F401
from .base import METHODS, Context, DiscoveryInputs, Method, get_method
from .knobo import KnoBo
from .label_free import LabelFree
from .labo import LaBo
from .linear_probe import LinearProbe
from .posthoc import CAVBank, PostHoc, PostHocHybrid, learn_cav_bank, learn_cavs
from .sparse_cbm import ConceptMatrixSearch, SparseCBM
from .zero_shot import ZeroShot

__all__ = ["METHODS", "CAVBank", "ConceptMatrixSearch", "Context", "DiscoveryInputs", "KnoBo", "LaBo",
           "LabelFree", "LinearProbe", "Method", "PostHoc", "PostHocHybrid", "SparseCBM", "ZeroShot",
           "get_method", "learn_cav_bank", "learn_cavs"]

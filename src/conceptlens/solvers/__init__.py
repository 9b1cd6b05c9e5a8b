"""Numerical solvers shared by the bottleneck methods: the elastic-net GLM and its path
(module `glm` is the entry point and says where the rest lives)."""

from .glm import ElasticNetPath, SolveInfo, elastic_net_objective, fit_elastic_net, lambda_max, solve_path
from .shards import StreamedFeatures, write_feature_shards

__all__ = ["ElasticNetPath", "SolveInfo", "StreamedFeatures", "elastic_net_objective", "fit_elastic_net",
           "lambda_max", "solve_path", "write_feature_shards"]

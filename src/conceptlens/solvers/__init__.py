"""Numerical solvers shared by the bottleneck methods."""

from .glm import ElasticNetPath, elastic_net_objective, fit_elastic_net, lambda_max, solve_path
from .streaming import StreamedFeatures, write_feature_shards

__all__ = ["ElasticNetPath", "StreamedFeatures", "elastic_net_objective", "fit_elastic_net", "lambda_max",
           "solve_path", "write_feature_shards"]

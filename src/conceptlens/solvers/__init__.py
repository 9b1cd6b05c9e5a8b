"""Numerical solvers shared by the bottleneck methods."""

from .glm import ElasticNetPath, elastic_net_objective, fit_elastic_net, lambda_max, solve_path

__all__ = ["ElasticNetPath", "elastic_net_objective", "fit_elastic_net", "lambda_max", "solve_path"]

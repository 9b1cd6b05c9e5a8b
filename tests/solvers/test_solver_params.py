"""The solvers' parameter constraints (conceptlens.solvers.params): every value a declaration
calls invalid is a ConfigError naming the entry point and the parameter, generated from the
declarations; the values the solvers always took (numpy scalars, None where allowed) still pass."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.errors import ConfigError
from conceptlens.solvers import StreamedFeatures, fit_elastic_net, params, solve_path, write_feature_shards
from conceptlens.validation import invalid_values

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def data(n=40, p=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, p)), np.arange(n) % 2


def cases(constraints):
    return [pytest.param(name, v, id=f"{name}={v!r}"[:40]) for name, spec in constraints.items()
            for v in invalid_values(spec)]


@pytest.mark.parametrize("name, value", cases(params.FIT_CONSTRAINTS))
def test_fit_elastic_net_refuses_what_its_constraints_refuse(name, value):
    X, y = data()
    with pytest.raises(ConfigError, match=f"^fit_elastic_net: {name} must be "):
        fit_elastic_net(X, y, **{"lam": 0.1, name: value})


@pytest.mark.parametrize("name, value", cases(params.PATH_CONSTRAINTS))
def test_solve_path_refuses_what_its_constraints_refuse(name, value):
    X, y = data()
    with pytest.raises(ConfigError, match=f"^solve_path: {name} must be "):
        solve_path(X, y, **{"lam": 0.1, name: value})


@pytest.mark.parametrize("name, value", cases(params.SHARD_CONSTRAINTS))
def test_write_feature_shards_refuses_what_its_constraints_refuse(tmp_path, name, value):
    X, _ = data()
    with pytest.raises(ConfigError, match=f"^write_feature_shards: {name} must be "):
        write_feature_shards(tmp_path, X, **{name: value})
    assert not list(tmp_path.iterdir())  # checked before anything is written


@pytest.mark.parametrize("name, value", cases(params.STREAM_CONSTRAINTS))
def test_streamed_features_refuse_what_their_constraints_refuse(tmp_path, name, value):
    X, _ = data()
    paths = write_feature_shards(tmp_path, X, dtype="float32")
    with pytest.raises(ConfigError, match=f"^StreamedFeatures: {name} must be "):
        StreamedFeatures(paths, **{name: value})


def test_numpy_scalars_and_none_still_pass(tmp_path):
    X, y = data()
    W, _, _ = fit_elastic_net(X, y, np.float32(0.05), np.float64(0.5), positive=np.bool_(True), max_iter=50)
    assert (W >= 0).all()
    path = solve_path(X, y, lam=None, target_nec=1, n_classes=np.int64(2), n_lambdas=3, max_iter=50)
    assert len(path.lambdas) >= 1
    src = StreamedFeatures(write_feature_shards(tmp_path, X, rows_per_shard=np.int64(16), dtype="float32"),
                           max_memory_bytes=np.int64(1 << 20), chunk_rows=None)
    assert src.shape == (40, 3)

"""The streaming elastic-net solver (features in float16/bfloat16/float32 shards on disk, read
in chunks under a memory cap): the same answers as the in-memory solver and scikit-learn, with
and without working sets; memory bounded by the cap, not by n; bad input, in memory and streamed."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from conceptlens.errors import ConfigError, DataError
from conceptlens.solvers import elastic_net_objective, fit_elastic_net, lambda_max, solve_path
from conceptlens.solvers.streaming import StreamedFeatures, write_feature_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXACT = dict(dtype=torch.float64, tol=1e-10, max_iter=20000)


def problem(n=300, p=40, m=4, seed=0, density=0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32).astype(np.float64)  # float32 shards hold X exactly
    W = rng.normal(size=(m, p)) * (rng.random((m, p)) < density) * 2
    y = (X @ W.T + rng.gumbel(size=(n, m))).argmax(1)
    return X, y


def streamed(tmp_path, X, dtype="float16", rows_per_shard=70, chunk_rows=33, **kw):
    """X written as shards of 70 rows, read in chunks of 33 (so chunks never align with shards),
    and the matrix the solver sees (X rounded to the storage dtype) for the in-memory reference."""
    src = StreamedFeatures(write_feature_shards(tmp_path / dtype, X, rows_per_shard, dtype),
                           chunk_rows=chunk_rows, **kw)
    return src, src.read()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_shards_hold_x_rounded_to_their_dtype(tmp_path, dtype):
    X, _ = problem(n=150, p=7)
    src, Xq = streamed(tmp_path, X, dtype)
    assert src.shape == (150, 7) and len(src.shards) == 3
    expected = torch.as_tensor(X, dtype=torch.float32).to(getattr(torch, dtype)).double().numpy()
    np.testing.assert_array_equal(Xq, expected)
    np.testing.assert_array_equal(src.read(60, 145), expected[60:145])  # across shard boundaries
    assert np.abs(Xq - X).max() <= {"float32": 0, "float16": 2e-3, "bfloat16": 2e-2}[dtype]


@pytest.mark.parametrize("lam, alpha, dtype", [(0.01, 0.99, "float16"), (0.003, 0.5, "bfloat16")])
def test_one_lam_equals_in_memory_and_sklearn(tmp_path, lam, alpha, dtype):
    from sklearn.linear_model import LogisticRegression

    X, y = problem(n=200, p=12, m=3, density=0.3)
    src, Xq = streamed(tmp_path, X, dtype)
    W, b, info = fit_elastic_net(src, y, lam, alpha, tol=1e-12, max_iter=20000)
    assert info.converged
    Wm, bm, _ = fit_elastic_net(Xq, y, lam, alpha, tol=1e-12, max_iter=20000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(l1_ratio=alpha, C=1 / (lam * len(Xq)), solver="saga", tol=1e-12,
                                max_iter=200000).fit(Xq, y)
    ours = elastic_net_objective(W, b, Xq, y, lam, alpha)
    assert ours == pytest.approx(elastic_net_objective(Wm, bm, Xq, y, lam, alpha), rel=1e-6)
    assert ours == pytest.approx(elastic_net_objective(sk.coef_, sk.intercept_, Xq, y, lam, alpha), rel=1e-6)
    np.testing.assert_array_equal(W != 0, np.abs(sk.coef_) >= 1e-8)  # same support
    assert elastic_net_objective(W, b, src, y, lam, alpha) == pytest.approx(ours, rel=1e-12)  # streamed
    assert lambda_max(src, y, alpha) == pytest.approx(lambda_max(Xq, y, alpha), rel=1e-12)


@pytest.mark.parametrize("working_set", [False, True])
@pytest.mark.parametrize("loss, positive", [("multinomial", False), ("ovr", False), ("multinomial", True)])
def test_path_equals_the_in_memory_path(tmp_path, working_set, loss, positive):
    X, y = problem()
    src, Xq = streamed(tmp_path, X)
    kw = dict(alpha=0.99, target_nec=4, loss=loss, positive=positive, working_set=working_set, **EXACT)
    mem = solve_path(Xq, y, **kw)
    ours = solve_path(src, y, **kw)
    np.testing.assert_allclose(ours.lambdas, mem.lambdas, rtol=1e-12)  # same grid and bisection decisions
    assert ours.nec == mem.nec
    for W, b, Wm, bm, lam in zip(ours.weights, ours.biases, mem.weights, mem.biases, mem.lambdas,
                                 strict=True):
        assert elastic_net_objective(W, b, Xq, y, lam, 0.99, loss) == pytest.approx(
            elastic_net_objective(Wm, bm, Xq, y, lam, 0.99, loss), rel=1e-6)
        np.testing.assert_array_equal(W != 0, Wm != 0)
        assert not positive or (W >= 0).all()
    if working_set:  # most points are solved on a few of the 40 features
        assert min(ours.active_features) < 10 and max(ours.active_features) < 40


def test_standardised_on_the_fly_equals_standardising_in_memory(tmp_path):
    # raw similarities like CLIP's (mean 0.2, std 0.02) and a constant column: streamed as
    # (X - mean) / std, with std 1 for the constant column, as one would standardise in memory
    X, y = problem(n=240, p=10, m=3, density=0.3)
    X = 0.2 + 0.02 * X
    X[:, 4] = 0.25
    raw = StreamedFeatures(write_feature_shards(tmp_path, X, 70, "float32"), chunk_rows=33)
    src = raw.standardized()
    Xr = raw.read()
    std = Xr.std(0)
    Xs = (Xr - Xr.mean(0)) / np.where(std > 0, std, 1.0)
    np.testing.assert_allclose(src.read(), Xs, atol=1e-12)
    assert not Xs[:, 4].any()
    lam = 0.3 * lambda_max(Xs, y, 0.99)
    ours = solve_path(src, y, lam=lam, n_lambdas=6, working_set=True, **EXACT)
    mem = solve_path(Xs, y, lam=lam, n_lambdas=6, **EXACT)
    assert elastic_net_objective(ours.weights[-1], ours.biases[-1], Xs, y, lam, 0.99) == \
        pytest.approx(mem.objectives[-1], rel=1e-6)
    assert not ours.weights[-1][:, 4].any() and ours.weights[-1].any()


# --- memory and reads --------------------------------------------------------------------------------

def test_chunks_follow_the_memory_cap_not_n(tmp_path):
    cap = 1 << 20
    plans = []
    for n in (3000, 6000):
        X, y = problem(n=n, p=30, m=3, density=0.3)
        src = StreamedFeatures(write_feature_shards(tmp_path / str(n), X, 1000, "float16"),
                               max_memory_bytes=cap)
        solve_path(src, y, lam=0.05, n_lambdas=4, working_set=True)
        stats = src.stats
        assert 1 < stats.chunk_rows < 1000  # the cap, not a shard or n, sets the chunk
        assert stats.max_chunk_rows == stats.chunk_rows and max(stats.rows_per_pass) == stats.chunk_rows
        assert stats.planned_bytes <= cap
        # every disk pass reads each shard once: whole passes' worth of bytes, no more
        assert stats.bytes_read == stats.passes * n * 30 * 2
        plans.append(stats.chunk_rows)
    assert plans[0] == plans[1]
    with pytest.raises(ConfigError, match="max_memory_bytes=2000 is too small.*give at least"):
        solve_path(src.with_options(max_memory_bytes=2000), y, lam=0.05)


def test_working_set_columns_are_kept_when_they_fit(tmp_path):
    # the inner passes read the working set's columns from the cache, not the disk: a lam costs
    # one disk pass to fill the cache plus one per KKT check, whatever its number of iterations
    X, y = problem(n=600, p=40, m=3, density=0.1)
    src = StreamedFeatures(write_feature_shards(tmp_path, X, 200, "float16"), chunk_rows=100)
    lam = 0.3 * lambda_max(src, y, 0.99)
    cached = solve_path(src, y, lam=lam, n_lambdas=3, working_set=True, **EXACT)
    assert 0 < src.stats.cache_bytes <= 600 * 40 * 2
    # lambda_max's pass, the first pass, then per lam a fill and at least one check
    assert src.stats.passes <= 2 + 3 * 2 + 2 * sum(cached.kkt_added)
    # the same solve with no room for the cache reads the disk on every inner pass
    tight = src.with_options(max_memory_bytes=src.stats.planned_bytes - src.stats.cache_bytes)
    uncached = solve_path(tight, y, lam=lam, n_lambdas=3, working_set=True, **EXACT)
    assert tight.stats.cache_bytes == 0 and tight.stats.passes > 5 * src.stats.passes
    np.testing.assert_array_equal(uncached.weights[-1], cached.weights[-1])


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's /proc/self/clear_refs to reset the peak RSS")
def test_peak_resident_memory_stays_under_the_cap(tmp_path):
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    rng = np.random.default_rng(0)
    n, p, m, cap = 48000, 200, 4, 4 << 20
    paths = []
    for k in range(4):  # 18 MB of float16 on disk (37 MB as float32), written a quarter at a time
        block = rng.normal(size=(n // 4, p)).astype(np.float32)
        paths += write_feature_shards(tmp_path / str(k), block, n // 4)
    y = rng.integers(0, m, n)
    # warm up torch's kernels and the allocator on a quarter of the rows (same chunk size)
    quarter = StreamedFeatures(paths[0], max_memory_bytes=cap)
    solve_path(quarter, y[: n // 4], lam=0.7 * lambda_max(quarter, y[: n // 4], 0.99), n_lambdas=3,
               working_set=True)
    src = StreamedFeatures(paths, max_memory_bytes=cap)
    lam = 0.7 * lambda_max(src, y, 0.99)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
    before = status("VmRSS")
    path = solve_path(src, y, lam=lam, n_lambdas=3, working_set=True)
    assert path.nec[-1] > 0 and src.stats.chunk_rows == quarter.stats.chunk_rows
    assert status("VmHWM") - before <= cap


# --- bad input, in memory and streamed -------------------------------------------------------------

@pytest.fixture(params=["in_memory", "streamed"])
def as_input(request, tmp_path):
    """X as the solver gets it: the array itself, or float32 shards (exactly X) read in chunks."""
    def make(X):
        if request.param == "in_memory":
            return X
        return StreamedFeatures(write_feature_shards(tmp_path / "x", X, 70, "float32"), chunk_rows=33)
    return make


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("working_set", [False, True])
def test_non_finite_features_are_a_data_error(as_input, bad, working_set):
    X, y = problem(n=150, p=5)
    X[100, 2] = bad  # in the second shard
    with pytest.raises(DataError, match=r"non-finite.*columns \[2\]"):
        solve_path(as_input(X), y, target_nec=2, working_set=working_set)
    with pytest.raises(DataError, match=r"non-finite.*columns \[2\]"):
        fit_elastic_net(as_input(X), y, 0.01)


def test_float16_overflow_is_refused_when_writing(tmp_path):
    X = np.ones((4, 3))
    X[2, 1] = 1e6  # finite, but beyond float16's 65504
    with pytest.raises(DataError, match=r"beyond float16's range in columns \[1\].*bfloat16"):
        write_feature_shards(tmp_path, X, dtype="float16")
    assert StreamedFeatures(write_feature_shards(tmp_path, X, dtype="bfloat16")).read()[2, 1] == 999424.0


@pytest.mark.parametrize("working_set", [False, True])
def test_constant_column_gets_no_weight(as_input, working_set):
    X, y = problem(n=200, p=10, m=3)
    Xc = np.insert(X, 4, 5.0, axis=1)
    with_c = solve_path(as_input(Xc), y, lam=0.01, n_lambdas=8, working_set=working_set, **EXACT)
    without = solve_path(X, y, lam=0.01, n_lambdas=8, **EXACT)
    assert not with_c.weights[-1][:, 4].any()
    W = np.delete(with_c.weights[-1], 4, axis=1)
    assert elastic_net_objective(W, with_c.biases[-1], X, y, 0.01, 0.99) == \
        pytest.approx(without.objectives[-1], rel=1e-7)


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_class_with_no_samples_in_a_path_and_at_one_lam(as_input, loss):
    X, y = problem(n=200, p=10, m=3)
    y4 = np.where(y == 2, 3, y)  # classes 0, 1, 3 of 4: class 2 has no sample
    ref = solve_path(X, y, lam=0.01, n_lambdas=8, loss=loss, **EXACT)  # the same problem, 3 classes
    path = solve_path(as_input(X), y4, lam=0.01, n_lambdas=8, n_classes=4, loss=loss, working_set=True,
                      **EXACT)
    W1, b1, info = fit_elastic_net(as_input(X), y4, 0.01, n_classes=4, loss=loss, tol=1e-12)
    for W, b, objective in ((path.weights[-1], path.biases[-1], path.objectives[-1]),
                            (W1, b1, info.objective)):
        assert W.shape == (4, 10) and not W[2].any()
        Z = X @ W.T + b
        top = Z.max(1) if loss == "multinomial" else 0.0
        assert (Z[:, 2] <= top - 40 + 1e-9).all()  # class 2's probability is below e^-40
        # a flat optimum: weights agree loosely, objectives tightly
        np.testing.assert_allclose(W[[0, 1, 3]], ref.weights[-1], atol=1e-4)
        assert objective == pytest.approx(ref.objectives[-1], rel=1e-7)
        assert objective == pytest.approx(elastic_net_objective(W, b, X, y4, 0.01, 0.99, loss, 4), rel=1e-12)
    with pytest.raises(DataError, match="only 1 of 3 classes have samples"):
        fit_elastic_net(as_input(X), np.zeros(200, int), 0.01, n_classes=3)


def test_labels_outside_the_classes(as_input):
    X, y = problem(n=50, p=5)
    with pytest.raises(DataError, match="labels must lie in"):
        fit_elastic_net(as_input(X), y, 0.01, n_classes=2)
    with pytest.raises(DataError, match="labels must lie in"):
        solve_path(as_input(X), y, target_nec=2, n_classes=2)


@pytest.mark.parametrize("loss", ["multinomial", "ovr"])
def test_lambda_beyond_lambda_max_is_the_intercept_only_model(as_input, loss):
    X, y = problem()
    src = as_input(X)
    lmax = lambda_max(src, y, 0.99)
    path = solve_path(src, y, lam=3 * lmax, loss=loss, working_set=True, **EXACT)
    assert path.lambdas == [3 * lmax] and not path.weights[-1].any()
    assert path.active_features == [0] and path.kkt_added == [0]  # the empty working set, then checked
    pi = np.bincount(y) / len(y)
    b = path.biases[-1]
    fitted = 1 / (1 + np.exp(-b)) if loss == "ovr" else np.exp(b) / np.exp(b).sum()
    np.testing.assert_allclose(fitted, pi, atol=1e-5)
    if isinstance(src, StreamedFeatures):  # the intercept-only solve reads nothing from disk:
        assert src.stats.passes == 3  # lambda_max, the solver's first pass and the KKT check


def test_an_empty_screen_is_repaired_by_the_kkt_check(as_input):
    X, y = problem()
    full = solve_path(X, y, alpha=0.99, target_nec=3, **EXACT)

    def nothing(G, W, lam, lam_prev):
        return np.zeros(X.shape[1], dtype=bool)

    ws = solve_path(as_input(X), y, alpha=0.99, target_nec=3, working_set=True, _screen=nothing, **EXACT)
    assert sum(ws.kkt_added) >= 1 and ws.lambdas == pytest.approx(full.lambdas, rel=1e-12)
    np.testing.assert_array_equal(ws.weights[-1] != 0, full.weights[-1] != 0)
    assert ws.objectives[-1] == pytest.approx(full.objectives[-1], rel=1e-6)


def test_unusable_shards_are_clear_errors(tmp_path):
    X, y = problem(n=60, p=5)
    good = write_feature_shards(tmp_path / "a", X, 30)
    other = write_feature_shards(tmp_path / "b", X[:, :4], 30)
    with pytest.raises(DataError, match=r"disagree on the number of features: \[4, 5\]"):
        StreamedFeatures(good + other)
    with pytest.raises(DataError, match="mix storage dtypes"):
        StreamedFeatures(good + write_feature_shards(tmp_path / "c", X, 30, "bfloat16"))
    with pytest.raises(DataError, match="has no tensor 'embedding'.*'features'"):
        StreamedFeatures(good, name="embedding")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        StreamedFeatures([junk])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[0].read_bytes()[:-10])
    with pytest.raises(DataError, match="does not fit its data offsets"):
        StreamedFeatures([cut])
    with pytest.raises(ConfigError, match=r"y must be \(n,\) = \(60,\)"):
        solve_path(StreamedFeatures(good), y[:50], lam=0.01)
    with pytest.raises(ConfigError, match=r"scale must be > 0.*columns \[3\].*constant column"):
        StreamedFeatures(good, scale=[1, 1, 1, 0, 1])

"""The DN-CBM sparse autoencoder (conceptlens.discovery.sae) against hand computations, torch autograd
of the reference loss, a known sparse dictionary, and its file/caching contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlens.discovery import SparseAutoencoder, pool_fingerprint, sae_for, train_sae
from conceptlens.discovery import sae as sae_mod
from conceptlens.errors import ConfigError, DataError, IntegrityError


def random_sae(d=6, h=10, seed=0, **meta):
    rng = np.random.default_rng(seed)
    W_dec = rng.normal(size=(d, h))
    W_dec /= np.linalg.norm(W_dec, axis=0)
    return SparseAutoencoder(rng.normal(size=d), rng.normal(size=(h, d)), rng.normal(size=h), W_dec,
                             rng.integers(0, 5, size=h), {"backbone_id": "bb", "pool_id": "p", **meta})


def sparse_dictionary(n=4000, d=32, k=48, active=3, seed=0):
    """Data made of a known unit-norm dictionary D (k atoms), about `active` atoms per row."""
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = (rng.random((n, k)) < active / k) * rng.uniform(0.5, 1.5, size=(n, k))
    return (A @ D + 0.01 * rng.normal(size=(n, d))).astype(np.float32), D


# -- the maps -----------------------------------------------------------------------------------
def test_encode_decode_equal_numpy():
    sae = random_sae()
    X = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    F = np.maximum(0, (X - sae.b_pre) @ sae.W_enc.T + sae.b_enc)
    np.testing.assert_allclose(sae.encode(X), F, rtol=1e-5, atol=1e-5)
    assert sae.encode(X).dtype == np.float32 and sae.encode(X).shape == (7, 10)
    np.testing.assert_allclose(sae.encode(torch.from_numpy(X)), F, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae.decode(F), F @ sae.W_dec.T + sae.b_pre, rtol=1e-5, atol=1e-5)
    dirs = sae.decoder_directions()
    assert dirs.shape == (10, 6)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(dirs, sae.W_dec.T, atol=1e-6)


def test_encode_rejects_wrong_dims_and_nan():
    sae = random_sae()
    with pytest.raises(DataError, match=r"shape \(n, 6\)"):
        sae.encode(np.zeros((3, 5)))
    with pytest.raises(DataError, match="NaN or inf"):
        sae.encode(np.full((2, 6), np.nan))


# -- one step against autograd of the reference ---------------------------------------------------
def reference_grads(tr, x, l1):
    """The reference's loss through autograd, with its UnitNormDecoder backward hook."""
    b_pre, W_enc, b_enc, W_dec = (p.detach().clone().requires_grad_(True) for p in tr.params)

    def hook(grad):  # unit_norm_decoder._weight_backward_hook, component axis dropped
        wn = W_dec / torch.norm(W_dec, dim=-2, keepdim=True)
        return grad - (grad * wn).sum(-2, keepdim=True) * wn

    W_dec.register_hook(hook)
    f = torch.relu((x - b_pre) @ W_enc.T + b_enc)
    x_hat = f @ W_dec.T + b_pre
    loss = torch.nn.functional.mse_loss(x, x_hat, reduction="none").mean(-1).mean() \
        + (l1 * f.abs().sum(-1)).mean()
    loss.backward()
    return [b_pre.grad, W_enc.grad, b_enc.grad, W_dec.grad]


@pytest.mark.parametrize("precision, tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_step_gradients_equal_autograd(precision, tol):
    g = torch.Generator().manual_seed(0)
    d, h, l1 = 12, 40, 3e-3
    tr = sae_mod._Trainer(d, h, 1e-3, l1, getattr(torch, precision), g)
    with torch.no_grad():  # move away from the tiny init so every term matters
        tr.b_pre.copy_(torch.randn(d, generator=g) * 0.1)
        tr.W_enc.copy_(torch.randn(h, d, generator=g) * 0.3)
    x = torch.randn(64, d, generator=g) + 0.5
    _, _, counts, ours = tr.grads(x)
    ref = reference_grads(tr, x, l1)
    for name, a, b in zip(("b_pre", "W_enc", "b_enc", "W_dec"), ours, ref, strict=True):
        scale = float(b.abs().max())
        assert scale > 0
        assert float((a - b).abs().max()) <= tol * scale, name
    f = torch.relu((x - tr.b_pre) @ tr.W_enc.T + tr.b_enc)
    if precision == "float32":
        assert torch.equal(counts, (f > 0).sum(0))


def test_decoder_columns_stay_unit_norm_and_gradient_is_tangent():
    g = torch.Generator().manual_seed(1)
    tr = sae_mod._Trainer(8, 32, 1e-2, 1e-3, torch.float32, g)
    x = torch.randn(50, 8, generator=g)
    *_, grads = tr.grads(x)
    # the projected decoder gradient has no component along its column
    assert float((grads[3] * tr.W_dec).sum(0).abs().max()) < 1e-6
    W0 = tr.W_dec.detach().clone()
    for _ in range(5):
        tr.step(x)
    np.testing.assert_allclose(tr.W_dec.norm(dim=0).numpy(), 1.0, atol=1e-6)
    assert float((tr.W_dec - W0).abs().max()) > 1e-3  # the steps did move the dictionary


# -- training --------------------------------------------------------------------------------------
def test_training_recovers_a_known_sparse_dictionary():
    X, D = sparse_dictionary(n=3000)
    sae = train_sae(X, expansion=4, l1=1e-2, lr=1e-2, epochs=20, batch_size=200, resample_every=5,
                    backbone_id="synthetic", pool_id="dict")
    H = sae.meta["history"]
    assert len(H) == 20 and sae.meta["h"] == 128
    assert H[-1]["mse"] < H[0]["mse"] / 3
    assert H[-1]["L0"] < H[0]["L0"] / 2
    assert H[-1]["L0"] < 12  # about 3 atoms per row
    best = np.abs(D @ sae.decoder_directions().T).max(1)
    assert (best > 0.9).mean() >= 0.9, np.sort(best)[:10]
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec, axis=0), 1.0, atol=1e-5)
    # fired_ is the last epoch's count of inputs each latent fired on
    F = sae.encode(X)
    assert sae.fired_.sum() > 0 and sae.fired_.max() <= len(X)
    assert H[-1]["dead"] == int((sae.fired_ == 0).sum())
    assert abs(((F > 0).sum(1)).mean() - H[-1]["L0"]) < 0.25 * H[-1]["L0"] + 0.5


def test_training_is_seeded():
    X, _ = sparse_dictionary(n=600, d=8, k=12)
    a = train_sae(X, expansion=2, epochs=3, batch_size=64, precision="float32", seed=3)
    b = train_sae(X, expansion=2, epochs=3, batch_size=64, precision="float32", seed=3)
    c = train_sae(X, expansion=2, epochs=3, batch_size=64, precision="float32", seed=4)
    np.testing.assert_array_equal(a.W_enc, b.W_enc)
    assert not np.array_equal(a.W_enc, c.W_enc)


def test_resampling_schedule_follows_the_reference(monkeypatch):
    """The reference steps its resampler while epoch + rf < epochs - 1 and resamples on every rf-th
    call: with 200 epochs and rf 10 at epochs 9, 19, ..., 179 (18 times)."""
    seen = []

    def fake(self, X, fired_since, size, gen):
        seen.append(fired_since.clone())
        return 1  # marks the epoch in history["resampled"]

    monkeypatch.setattr(sae_mod._Trainer, "resample", fake)
    X = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    sae = train_sae(X, expansion=2, epochs=200, batch_size=16, resample_every=10, precision="float32")
    H = sae.meta["history"]
    assert [r["epoch"] for r in H if r["resampled"]] == list(range(9, 180, 10))
    # dead = fired on nothing *since the last resample*: counts gathered over those 10 epochs
    assert len(X) < int(seen[0].max()) <= 10 * len(X)


def test_resampling_revives_dead_latents_on_high_loss_inputs():
    g = torch.Generator().manual_seed(0)
    d, h = 6, 24
    tr = sae_mod._Trainer(d, h, 1e-3, 1e-3, torch.float32, g)
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(200, d)) * 0.01          # reconstructed almost exactly by b_pre = 0
    outliers = rng.normal(size=(4, d)) * 50.0           # huge loss: p ~ loss^2 picks these
    X = torch.from_numpy(np.vstack([normal, outliers]).astype(np.float32))
    tr.step(X[:100])  # give Adam some state to reset
    dead = torch.tensor([2, 5, 11])
    with torch.no_grad():
        tr.b_enc[dead] = -1e4                            # these latents never fire
    fired_since = torch.ones(h, dtype=torch.int64)
    fired_since[dead] = 0
    alive_norm = tr.W_enc[fired_since > 0].norm(dim=1).mean()
    n = tr.resample(X, fired_since, dataset_size=10_000, gen=g)
    assert n == 3
    out_n = torch.nn.functional.normalize(X[200:], dim=1)
    for j in dead.tolist():
        col = tr.W_dec[:, j]
        # the new decoder column is a normalised high-loss input
        assert float((out_n @ col).max()) > 1 - 1e-5
        np.testing.assert_allclose(float(tr.W_enc[j].norm()), float(0.2 * alive_norm), rtol=1e-5)
        assert float(tr.b_enc[j]) == 0.0
        for p, sl in ((tr.W_enc, (j,)), (tr.b_enc, (j,)), (tr.W_dec, (slice(None), j))):
            st = tr.opt.state[p]
            assert float(st["exp_avg"][sl].abs().sum()) == 0 and float(st["exp_avg_sq"][sl].abs().sum()) == 0
    # three distinct inputs (drawn without replacement), and the revived latents fire on them
    assert len({int((out_n @ tr.W_dec[:, j]).argmax()) for j in dead.tolist()}) == 3
    f = torch.relu((X[200:] - tr.b_pre) @ tr.W_enc.T + tr.b_enc)
    assert bool((f[:, dead] > 0).any(0).all())
    # alive latents were left alone
    assert float(tr.b_enc[0]) != 0.0


def test_training_resamples_latents_that_die():
    X, _ = sparse_dictionary(n=1000, d=8, k=6, active=1)
    sae = train_sae(X, expansion=8, l1=5e-2, lr=1e-2, epochs=14, batch_size=100, resample_every=3,
                    precision="float32")
    H = sae.meta["history"]
    assert sum(r["resampled"] for r in H) > 0
    # epochs + 3 < 14 - 1 -> the resampler is stepped on epochs 0..9 and resamples on 2, 5, 8
    assert {r["epoch"] for r in H if r["resampled"]} <= {2, 5, 8}


# -- files ---------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    X, _ = sparse_dictionary(n=400, d=8, k=10)
    sae = train_sae(X, expansion=2, epochs=2, batch_size=100, backbone_id="bb", pool_id="pool")
    path = sae.save(tmp_path / "s.safetensors")
    back = SparseAutoencoder.load(path, backbone_id="bb")
    np.testing.assert_array_equal(back.encode(X), sae.encode(X))
    np.testing.assert_array_equal(back.fired_, sae.fired_)
    assert back.meta == sae.meta
    assert back.meta["backbone_id"] == "bb" and back.meta["pool_id"] == "pool"
    assert back.meta["input"] == "raw" and len(back.meta["history"]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temp file left


def test_load_detects_corruption_and_wrong_backbone(tmp_path):
    path = random_sae().save(tmp_path / "s.safetensors")
    with pytest.raises(ConfigError, match="another backbone"):
        SparseAutoencoder.load(path, backbone_id="other")
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip a byte of tensor data
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256"):
        SparseAutoencoder.load(path)
    with pytest.raises(DataError, match="No SAE file"):
        SparseAutoencoder.load(tmp_path / "missing.safetensors")


def test_load_detects_edited_metadata(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = random_sae().save(tmp_path / "s.safetensors")
    with safe_open(str(path), framework="np") as f:
        header = dict(f.metadata())
    header[sae_mod._META_KEY] = header[sae_mod._META_KEY].replace('"bb"', '"other"')
    save_file(load_file(str(path)), str(path), metadata=header)
    with pytest.raises(IntegrityError, match="metadata"):
        SparseAutoencoder.load(path)


# -- cache -----------------------------------------------------------------------------------------
def test_sae_for_trains_once_then_loads(tmp_path, monkeypatch):
    X, _ = sparse_dictionary(n=300, d=6, k=8)
    calls = []
    real = sae_mod.train_sae

    def counting(*a, **k):
        calls.append(k.get("backbone_id"))
        return real(*a, **k)

    monkeypatch.setattr(sae_mod, "train_sae", counting)
    kw = {"expansion": 2, "epochs": 2, "batch_size": 100}
    a = sae_for(X, "bb", "pool", tmp_path, **kw)
    b = sae_for(X, "bb", "pool", tmp_path, **kw)
    assert calls == ["bb"]
    np.testing.assert_array_equal(a.W_enc, b.W_enc)
    files = list((tmp_path / "sae").glob("*.safetensors"))
    assert len(files) == 1 and files[0].stem == sae_mod.sae_key(X, "bb", **kw)
    # defaults spelled out give the same key; another backbone, pool or parameter another one
    assert sae_mod.sae_key(X, "bb", **kw) == sae_mod.sae_key(X, "bb", **kw, l1=3e-5, seed=0)
    sae_for(X, "bb2", "pool", tmp_path, **kw)
    sae_for(X[:-1], "bb", "pool", tmp_path, **kw)
    sae_for(X, "bb", "pool", tmp_path, **{**kw, "l1": 1e-3})
    assert calls == ["bb", "bb2", "bb", "bb"]
    # a damaged entry is trained again
    raw = bytearray(files[0].read_bytes())
    raw[-3] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    sae_for(X, "bb", "pool", tmp_path, **kw)
    assert len(calls) == 5
    SparseAutoencoder.load(files[0], backbone_id="bb")  # and rewritten intact


def test_sae_for_uses_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_CACHE", str(tmp_path / "cache"))
    X, _ = sparse_dictionary(n=100, d=4, k=5)
    sae_for(X, "bb", "pool", None, expansion=2, epochs=1, batch_size=50)
    assert len(list((tmp_path / "cache" / "sae").glob("*.safetensors"))) == 1
    with pytest.raises(ConfigError, match="unknown training parameter.*'epoch'"):
        sae_for(X, "bb", "pool", None, epoch=1)
    with pytest.raises(ConfigError, match="backbone"):
        sae_for(X, "", "pool", None)


def test_pool_fingerprint_depends_on_values_and_shape():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert pool_fingerprint(X) == pool_fingerprint(X.astype(np.float64))
    assert pool_fingerprint(X) == pool_fingerprint(torch.from_numpy(X))
    assert pool_fingerprint(X) != pool_fingerprint(X.reshape(3, 4))
    Y = X.copy()
    Y[0, 0] += 1
    assert pool_fingerprint(X) != pool_fingerprint(Y)


# -- bad input -------------------------------------------------------------------------------------
def test_too_few_images_for_the_width():
    X = np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32)
    with pytest.raises(ConfigError, match=r"100 images.*h = expansion x d = 8 x 16 = 128.*expansion to 6"):
        train_sae(X, expansion=8)
    train_sae(X, expansion=6, epochs=1)  # the remedy the message names works
    with pytest.raises(ConfigError, match=r"10 images.*smaller than d"):  # no width fits
        train_sae(X[:10])


def test_the_default_width_follows_a_small_pool(caplog, tmp_path):
    """Without an expansion, a pool of fewer than 8 x d images trains n // d x d latents (the
    10-class `init` config: 3,000 images, d = 384 -> 7 x 384), and a warning says so; a large pool
    keeps DN-CBM's 8 and the key it had with expansion=8 spelled out."""
    assert sae_mod.fitted_expansion(3000, 384) == (7, sae_mod.fitted_expansion(3000, 384)[1])
    assert "3000 images" in sae_mod.fitted_expansion(3000, 384)[1]
    assert sae_mod.fitted_expansion(3072, 384) == (8, None)
    assert sae_mod.fitted_expansion(3000, 384, 2) == (2, None)  # given: kept
    X = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    with caplog.at_level("WARNING"):
        sae = train_sae(X, epochs=1)
    assert sae.h == 3 * 16 and sae.meta["params"]["expansion"] == 3
    assert "fewer than the default SAE width of 8 x 16 = 128 latents: using expansion 3" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        sae_for(X, "bb", "pool", tmp_path, epochs=1)
    assert "using expansion 3" in caplog.text
    assert sae_mod.sae_key(X, "bb", epochs=1) == sae_mod.sae_key(X, "bb", epochs=1, expansion=3)
    big = np.random.default_rng(1).normal(size=(130, 16)).astype(np.float32)
    assert sae_mod.sae_key(big, "bb") == sae_mod.sae_key(big, "bb", expansion=8)


@pytest.mark.parametrize("X, match", [
    (np.zeros(10), "2-D"),
    (np.zeros((0, 4)), "2-D"),
    (np.array([["a", "b"]]), "numbers"),
])
def test_bad_pool_shapes(X, match):
    with pytest.raises(DataError, match=match):
        train_sae(X, expansion=1)


def test_non_finite_and_not_normalised_pools():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    Y = X.copy()
    Y[7, 1] = np.inf
    with pytest.raises(DataError, match="1 of 50 pool rows hold NaN or inf.*row 7"):
        train_sae(Y, expansion=1)
    with pytest.raises(DataError, match="L2-normalise"):
        train_sae(X, expansion=1, input="normalised")
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert train_sae(Z, expansion=1, epochs=1, input="normalised").meta["input"] == "normalised"


@pytest.mark.parametrize("kw, match", [
    ({"expansion": 0}, "expansion"), ({"l1": -1.0}, "l1"), ({"lr": 0.0}, "lr"),
    ({"epochs": 1.5}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"input": "rawx"}, "input"),
    ({"precision": "fp16"}, "precision"), ({"resample_every": -1}, "resample_every"),
    ({"l1": float("nan")}, "l1"),
])
def test_bad_parameters(kw, match):
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(ConfigError, match=match):
        train_sae(X, **{"expansion": 1, **kw})


@pytest.mark.parametrize("B", [1, 255, 256, 700, 4100])
def test_fired_counts_are_exact_in_bf16(B):
    """Counts are summed by bf16 matmuls in blocks of 256 rows (bf16 holds integers <= 256 exactly)."""
    f = torch.relu(torch.randn(B, 50, generator=torch.Generator().manual_seed(B)))
    f[:, 3], f[:, 4] = 1.0, 0.0  # a latent firing on every row (count B > 256) and a dead one
    for dtype in (torch.bfloat16, torch.float32):
        counts = sae_mod._column_counts(f.to(dtype))
        assert torch.equal(counts, (f > 0).sum(0))

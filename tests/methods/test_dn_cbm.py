"""Discover-then-Name: naming latents (discovery/naming.py) and the `dn_cbm` method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conceptlens.discovery.naming import name_latents, unique_names
from conceptlens.discovery.sae import SparseAutoencoder, train_sae
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, DiscoveryInputs, Method, get_method
from conceptlens.methods.base import check_params
from conceptlens.methods.dn_cbm import probe_loss, train_probe

M, K, D = 4, 12, 16  # classes, latents (one per toy concept), embedding dim


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


# -- naming ------------------------------------------------------------------------------
def test_naming_finds_the_word_each_direction_was_made_from():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    E = _unit(rng.normal(size=(40, D))).astype(np.float32)
    source = rng.permutation(40)[:10]
    directions = E[source] * 3.0 + 0.05 * rng.normal(size=(10, D))  # scale must not matter
    fired = np.full(10, 5)
    fired[7] = 0
    out = name_latents(directions, words, E, fired=fired)
    # brute force: cosine of every direction with every word
    cos = np.array([[d @ e / np.linalg.norm(d) / np.linalg.norm(e) for e in E] for d in directions])
    for i, entry in enumerate(out):
        order = np.argsort(-cos[i], kind="stable")
        assert entry["latent"] == i and entry["nearest"] == words[source[i]] == words[order[0]]
        assert entry["similarity"] == pytest.approx(cos[i, order[0]], abs=1e-5)
        assert entry["second"] == words[order[1]]
        assert entry["second_similarity"] == pytest.approx(cos[i, order[1]], abs=1e-5)
        assert entry["similarity"] > entry["second_similarity"]
    assert [e["dead"] for e in out] == [i == 7 for i in range(10)]
    assert out[7]["name"] is None and "dead" in out[7]["reason"]
    assert all(e["name"] == e["nearest"] and e["reason"] is None for e in out if not e["dead"])


def test_naming_min_similarity_and_one_word_vocabulary():
    E = np.eye(3, D, dtype=np.float32)
    directions = np.stack([np.eye(D)[0], _unit(np.ones(D))]).astype(np.float32)  # exact / vague
    out = name_latents(directions, ["a", "b", "c"], E, min_similarity=0.5)
    assert out[0]["name"] == "a" and out[0]["similarity"] == pytest.approx(1.0)
    assert out[1]["name"] is None and "below min_similarity 0.5" in out[1]["reason"]
    assert out[1]["nearest"] == "a"  # ties go to the first word, as argmax
    one = name_latents(directions, ["a"], E[:1])
    assert one[0]["second"] is None and one[0]["second_similarity"] is None


def test_naming_errors():
    E = np.eye(3, D, dtype=np.float32)
    with pytest.raises(DataError, match="dimension 8 but the word embeddings 16"):
        name_latents(np.ones((2, 8)), ["a", "b", "c"], E)
    with pytest.raises(DataError, match="2 words but 3 word embeddings"):
        name_latents(np.ones((2, D)), ["a", "b"], E)
    with pytest.raises(DataError, match=r"row\(s\) \[1\] are all zeros"):
        name_latents(np.stack([np.ones(D), np.zeros(D)]), ["a", "b", "c"], E)
    with pytest.raises(DataError, match="one count per latent"):
        name_latents(np.ones((2, D)), ["a", "b", "c"], E, fired=np.ones(3))


def test_unique_names_best_match_keeps_the_word():
    assert unique_names(["shoe", "shoe", "dog", "shoe"], [0.5, 0.9, 0.3, 0.7]) == [
        "shoe (3)", "shoe", "dog", "shoe (2)"]
    assert unique_names(["x", "x", "x (2)"], [0.2, 0.1, 0.5]) == ["x", "x (3)", "x (2)"]  # no collision


# -- the probe ---------------------------------------------------------------------------
def test_probe_loss_by_hand():
    rng = np.random.default_rng(1)
    logits, W = rng.normal(size=(6, 3)), rng.normal(size=(3, 5))
    y = np.array([0, 2, 1, 1, 0, 2])
    shifted = logits - logits.max(1, keepdims=True)
    ce = np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(6), y])
    expected = ce + 0.7 * np.abs(W).sum() / W.size  # mean |W| over all K*k weights
    got = probe_loss(torch.tensor(logits), torch.tensor(y), torch.tensor(W), 0.7)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_probe_training_matches_the_reference_loop():
    """scripts/train_linear_probe.py's loop (nn.Linear no bias, CrossEntropyLoss + lam * L1Loss,
    model.zero_grad, Adam, DataLoader batches), batches drawn in the same order."""
    rng = np.random.default_rng(2)
    A = np.maximum(rng.normal(size=(50, 7)), 0).astype(np.float32)
    y = rng.integers(0, 3, size=50)
    lam, lr, epochs, bs, seed = 0.3, 1e-2, 4, 16, 5
    got = train_probe(A, y, 3, lam, lr, epochs, bs, seed)

    class EpochPermutation(torch.utils.data.Sampler):
        def __init__(self, n, g):
            self.n, self.g = n, g

        def __iter__(self):
            return iter(torch.randperm(self.n, generator=self.g).tolist())

        def __len__(self):
            return self.n

    torch.manual_seed(seed)
    model = torch.nn.Linear(7, 3, bias=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.utils.data.TensorDataset(torch.from_numpy(A), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(
        data, batch_size=bs, sampler=EpochPermutation(50, torch.Generator().manual_seed(seed)))
    ce, l1 = torch.nn.CrossEntropyLoss(), torch.nn.L1Loss()
    for _ in range(epochs):
        for X, t in loader:
            model.zero_grad()
            out = model(X)
            w = model.weight.flatten()
            loss = ce(out, t.long()) + lam * l1(w, torch.zeros_like(w))
            loss.backward()
            optimizer.step()
    np.testing.assert_allclose(got, model.weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_probe_positive_projects_onto_nonnegative():
    rng = np.random.default_rng(3)
    A = np.maximum(rng.normal(size=(40, 6)), 0).astype(np.float32)
    W = train_probe(A, rng.integers(0, 3, size=40), 3, epochs=20, lr=1e-2, positive=True)
    assert (W >= 0).all() and (W > 0).any()


# -- the method --------------------------------------------------------------------------
def make_problem(n_per_class=30, seed=0, raw=False):
    """Concepts 3c..3c+2 belong to class c (as tests/methods/test_methods.py); a hand-built SAE whose
    latents are the concept directions (plus a dead one), and words whose embeddings are the
    concepts (plus distractors)."""
    fixed = np.random.default_rng(1234)
    rng = np.random.default_rng(seed)
    concepts = _unit(fixed.normal(size=(K, D)))
    prior = np.zeros((M, K))
    for c in range(M):
        prior[c, 3 * c: 3 * c + 3] = 1

    def bundle(n):
        labels = np.repeat(np.arange(M), n)
        emb = prior[labels] @ concepts + 0.6 * rng.normal(size=(len(labels), D))
        norm = np.linalg.norm(emb, axis=1)
        return FeatureBundle([str(i) for i in range(len(labels))], labels, tuple("abcd"),
                             (emb / norm[:, None]).astype(np.float32), None, "toy",
                             embedding_norm=(3.0 * norm).astype(np.float32) if raw else None)

    W_enc = np.vstack([concepts, -concepts[:1]]).astype(np.float32)  # latent K: dead
    sae = SparseAutoencoder(b_pre=np.zeros(D), W_enc=W_enc, b_enc=np.full(K + 1, -0.05),
                            W_dec=W_enc.T.copy(), fired=[10] * K + [0],
                            meta={"backbone_id": "toy", "input": "raw" if raw else "normalised"})
    words = (*(f"word{i}" for i in range(K)), "distractor a", "distractor b")
    word_emb = np.vstack([concepts, _unit(fixed.normal(size=(2, D)))]).astype(np.float32)
    ctx = Context(tuple("abcd"), backbone_id="toy",
                  discovery=DiscoveryInputs(words=words, word_embedding=word_emb, sae=sae))
    return bundle(n_per_class), bundle(10), bundle(25), ctx


FAST = {"epochs": 100, "lr": 1e-2, "lam": 0.1}


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module")
def fitted(problem):
    train, val, _, ctx = problem
    return get_method("dn_cbm", **FAST).fit(train, ctx, val)


def test_fit_names_alive_latents_and_predicts(fitted, problem):
    _, _, test, ctx = problem
    assert fitted.concepts_ == [f"word{i}" for i in range(K)]  # the dead latent K is left out
    np.testing.assert_array_equal(fitted.latent_index_, np.arange(K))
    assert fitted.n_dead_ == 1 and fitted.n_weak_ == 0 and fitted.solver_ == "adam"
    np.testing.assert_allclose(fitted.name_similarity_, 1.0, atol=1e-5)
    A = fitted.transform(test)
    sae = ctx.discovery.sae
    np.testing.assert_allclose(A, sae.encode(test.embedding)[:, :K], atol=1e-6)
    np.testing.assert_allclose(fitted.decision_function(test), A @ fitted.class_weights_.T, atol=1e-5)
    assert not fitted.intercept_.any()  # the reference's probe has no bias
    assert (fitted.predict(test) == test.labels).mean() > 0.8  # chance is 0.25


def test_fit_ignores_val(problem):
    train, val, test, ctx = problem
    a = get_method("dn_cbm", **FAST).fit(train, ctx, val).decision_function(test)
    b = get_method("dn_cbm", **FAST).fit(train, ctx, None).decision_function(test)
    np.testing.assert_array_equal(a, b)


def test_save_load_without_the_sae(fitted, problem, tmp_path):
    _, _, test, _ = problem
    folder = fitted.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.safetensors"]
    again = Method.load(folder)
    assert again.concepts_ == fitted.concepts_ and again.sae_input_ == "normalised"
    np.testing.assert_array_equal(again.decision_function(test), fitted.decision_function(test))
    np.testing.assert_array_equal(again.latent_index_, fitted.latent_index_)
    assert again.nec_ == fitted.nec_ and again.second_names_ == fitted.second_names_


def test_glm_solver_hits_target_nec_and_folds_standardisation(problem):
    train, val, test, ctx = problem
    model = get_method("dn_cbm", solver="glm", target_nec=2).fit(train, ctx, val)
    assert 0 < model.nec_ <= 2 and model.solver_ == "glm"
    A = model.transform(test)
    np.testing.assert_allclose(A, ctx.discovery.sae.encode(test.embedding)[:, :K], atol=1e-6)
    np.testing.assert_allclose(model.decision_function(test),
                               A @ model.class_weights_.T + model.intercept_, atol=1e-5)
    # target_nec with the default (Adam) solver also refits on the GLM path (the NEC protocols)
    refit = get_method("dn_cbm", **FAST, target_nec=2).fit(train, ctx, val)
    assert refit.solver_ == "glm" and 0 < refit.nec_ <= 2
    dense = get_method("dn_cbm", solver="glm", glm_lam=1e-2).fit(train, ctx, val)
    assert (dense.predict(test) == test.labels).mean() > 0.8


def test_glm_solver_equals_the_same_glm_on_standardised_strengths(problem):
    from conceptlens.methods.sparse_layer import fit_sparse_layer

    train, val, test, ctx = problem
    model = get_method("dn_cbm", solver="glm", glm_lam=1e-2).fit(train, ctx, val)
    A = ctx.discovery.sae.encode(train.embedding)[:, :K]
    mean, std = A.mean(0), A.std(0, ddof=1)
    W, b, _ = fit_sparse_layer((A - mean) / std, train.labels, M, 1e-2, None, 0.99)
    At = ctx.discovery.sae.encode(test.embedding)[:, :K]
    np.testing.assert_allclose(model.decision_function(test), ((At - mean) / std) @ W.T + b, atol=1e-4)


@pytest.mark.parametrize("solver", ["adam", "glm"])
def test_positive_weights(problem, solver):
    train, val, _, ctx = problem
    model = get_method("dn_cbm", **FAST, solver=solver, glm_lam=1e-2, positive=True).fit(train, ctx, val)
    assert (model.class_weights_ >= 0).all() and model.nec_ > 0


def test_raw_sae_reads_embedding_times_norm(tmp_path):
    train, val, test, ctx = make_problem(raw=True)
    model = get_method("dn_cbm", **FAST).fit(train, ctx, val)
    raw = test.embedding * test.embedding_norm[:, None]
    np.testing.assert_allclose(model.transform(test), ctx.discovery.sae.encode(raw)[:, :K], atol=1e-5)
    again = Method.load(model.save(tmp_path / "raw"))
    assert again.sae_input_ == "raw"
    np.testing.assert_array_equal(again.decision_function(test), model.decision_function(test))
    bare = FeatureBundle(test.ids, test.labels, test.classes, test.embedding, None, "toy")
    with pytest.raises(DataError, match="raw .*no embedding norms.*normalised"):
        model.transform(bare)
    bare_train = FeatureBundle(train.ids, train.labels, train.classes, train.embedding, None, "toy")
    with pytest.raises(DataError, match="trained on raw"):
        get_method("dn_cbm", **FAST).fit(bare_train, ctx, val)


def test_shared_names_get_numbered(problem):
    train, val, _, ctx = problem
    sae = ctx.discovery.sae
    W_dec = sae.W_dec.copy()
    W_dec[:, 1] = _unit(W_dec[:, 0] + 0.2 * W_dec[:, 1])  # latent 1 now points nearest to word0 too
    twin = SparseAutoencoder(sae.b_pre, sae.W_enc, sae.b_enc, W_dec, sae.fired_, sae.meta)
    E = ctx.discovery.word_embedding
    assert np.argmax(E @ W_dec[:, 1]) == 0  # (the set-up does what it says)
    ctx2 = Context(ctx.classes, backbone_id="toy", discovery=DiscoveryInputs(
        words=ctx.discovery.words, word_embedding=E, sae=twin))
    model = get_method("dn_cbm", **FAST).fit(train, ctx2, val)
    # latent 0 matches word0 exactly and keeps the word; latent 1 is numbered
    assert model.concepts_ == ["word0", "word0 (2)", *[f"word{i}" for i in range(2, K)]]
    assert model.name_similarity_[0] > model.name_similarity_[1]


def _ctx(ctx, sae, words=True):
    d = ctx.discovery
    extra = {"words": d.words, "word_embedding": d.word_embedding} if words else {}
    return Context(ctx.classes, backbone_id="toy", discovery=DiscoveryInputs(sae=sae, **extra))


def test_mismatches_are_refused(problem):
    train, val, _, ctx = problem
    sae = ctx.discovery.sae
    other = SparseAutoencoder(sae.b_pre, sae.W_enc, sae.b_enc, sae.W_dec, sae.fired_,
                              {"backbone_id": "other-backbone", "input": "normalised"})
    with pytest.raises(ConfigError, match="trained for backbone 'other-backbone'.*'toy'"):
        get_method("dn_cbm", **FAST).fit(train, _ctx(ctx, other), val)
    wide = SparseAutoencoder(np.zeros(8), np.eye(8, dtype=np.float32), np.zeros(8), np.eye(8), [1] * 8,
                             {"backbone_id": "toy", "input": "normalised"})
    with pytest.raises(DataError, match="reads 8-dimensional embeddings, these are 16"):
        get_method("dn_cbm", **FAST).fit(train, _ctx(ctx, wide), val)
    with pytest.raises(ConfigError, match="needs context.discovery"):
        get_method("dn_cbm").fit(train, Context(ctx.classes, backbone_id="toy"), val)
    with pytest.raises(ConfigError, match="sparse autoencoder"):
        get_method("dn_cbm").fit(train, _ctx(ctx, None), val)
    with pytest.raises(ConfigError, match="vocabulary"):
        get_method("dn_cbm").fit(train, _ctx(ctx, sae, words=False), val)
    all_dead = SparseAutoencoder(sae.b_pre, sae.W_enc, sae.b_enc, sae.W_dec, np.zeros(K + 1), sae.meta)
    with pytest.raises(DataError, match="none of the SAE's 13 latents could be named"):
        get_method("dn_cbm").fit(train, _ctx(ctx, all_dead), val)


def test_an_sae_whose_encode_differs_from_its_arrays_is_refused(problem):
    train, val, _, ctx = problem
    d = ctx.discovery

    class Odd(SparseAutoencoder):
        def encode(self, X):  # e.g. one that normalises inside: not what the saved arrays do
            return super().encode(2 * np.asarray(X))

    odd = Odd(d.sae.b_pre, d.sae.W_enc, d.sae.b_enc, d.sae.W_dec, d.sae.fired_, d.sae.meta)
    with pytest.raises(DataError, match="encode\\(\\) does not equal"):
        get_method("dn_cbm", **FAST).fit(train, _ctx(ctx, odd), val)


@pytest.mark.parametrize("bad, match", [
    ({"solver": "sgd"}, "solver must be 'adam'"), ({"lam": -1.0}, "lam must be"),
    ({"epochs": 0}, "epochs must be an integer >= 1"), ({"alpha": 2.0}, "alpha is the L1 share"),
    ({"positive": "yes"}, "positive must be true or false"), ({"min_similarity": 1.5}, "at most 1"),
    ({"target_nec": 0}, "target_nec must be"),
])
def test_bad_params_raise_at_fit(problem, bad, match):
    train, val, _, ctx = problem
    model = get_method("dn_cbm", **bad)  # constructing never validates
    with pytest.raises(ConfigError, match=match):
        model.fit(train, ctx, val)
    with pytest.raises(ConfigError, match="dn_cbm"):
        check_params("dn_cbm", bad)


def test_with_a_trained_sae(problem):
    """End to end with conceptlens.discovery.sae.train_sae on an unlabelled pool."""
    train, val, test, ctx = problem
    pool = make_problem(n_per_class=50, seed=9)[0].embedding
    sae = train_sae(pool, expansion=2, epochs=30, batch_size=64, lr=1e-2, backbone_id="toy",
                    input="normalised", resample_every=0, precision="float32")
    disc = DiscoveryInputs(words=ctx.discovery.words, word_embedding=ctx.discovery.word_embedding, sae=sae)
    model = get_method("dn_cbm", solver="glm").fit(train, Context(ctx.classes, backbone_id="toy",
                                                                  discovery=disc), val)
    alive = np.flatnonzero(sae.fired_ > 0)
    np.testing.assert_array_equal(model.latent_index_, alive)
    np.testing.assert_allclose(model.transform(test), sae.encode(test.embedding)[:, alive], atol=1e-5)
    assert (model.predict(test) == test.labels).mean() > 0.6


def test_probe_leaves_the_callers_torch_rng_alone_and_is_seeded_by_seed():
    rng = np.random.default_rng(4)
    A = np.maximum(rng.normal(size=(30, 5)), 0).astype(np.float32)
    y = rng.integers(0, 3, size=30)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    W = train_probe(A, y, 3, epochs=2, batch_size=8, seed=5)
    assert torch.equal(torch.rand(3), expected)  # the draw the caller would have had
    torch.manual_seed(7)
    np.testing.assert_array_equal(train_probe(A, y, 3, epochs=2, batch_size=8, seed=5), W)

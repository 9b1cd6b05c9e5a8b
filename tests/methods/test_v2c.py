"""V2C-CBM: the vocabulary, codebook and tokenizer against brute force and hand-built cases
(riverback/V2C-CBM @a078ff6 code_appendix/step0..3), and the `v2c` method."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.backbones import l2_normalize
from conceptlens.concepts.v2c import (
    V2C_TEMPLATES,
    codebook_embeddings,
    quantisation_sets,
    tokenize,
    v2c_concepts,
    v2c_vocabulary,
)
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, DiscoveryInputs, Method, get_method
from conceptlens.methods.base import softmax
from conceptlens.testing import TinyBackbone

FAST = {"optimizer": "lbfgs", "max_iter": 100, "n_images": 40, "top_k": 3, "per_class": 6}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- tokenizer and quantisation sets ------------------------------------------------------

def test_tokenize_matches_a_stable_sort_including_ties():
    rng = np.random.default_rng(0)
    X = rng.integers(-2, 3, size=(30, 5)).astype(np.float32)  # small integers: exact, tied products
    E = rng.integers(-2, 3, size=(40, 5)).astype(np.float32)
    E[7] = E[3]  # an exact duplicate: every image ties on rows 3 and 7
    sims = X @ E.T
    for k in (1, 5, 40):
        want = np.array([sorted(range(len(E)), key=lambda j, r=r: (-sims[r, j], j))[:k]
                         for r in range(len(X))])
        np.testing.assert_array_equal(tokenize(X, E, k), want)
    assert (sims == sims.max(1, keepdims=True)).sum(1).max() > 1  # the case does hold ties


def test_tokenize_random_floats_match_brute_force():
    rng = np.random.default_rng(1)
    X, E = l2_normalize(rng.normal(size=(50, 8))), rng.normal(size=(300, 8)).astype(np.float32)
    want = np.argsort(-(X @ E.T), axis=1)[:, :5]
    np.testing.assert_array_equal(tokenize(X, E, 5), want)


def test_quantisation_sets_are_the_top_images_by_mean_template_cosine():
    rng = np.random.default_rng(2)
    pool = l2_normalize(rng.normal(size=(60, 6)))
    templates = l2_normalize(rng.normal(size=(3, 4, 6)))  # 3 classes x 4 templates
    sets = quantisation_sets(templates, pool, n_images=10)
    for k in range(3):
        score = [np.mean([pool[i] @ templates[k, t] for t in range(4)]) for i in range(60)]
        ref = sorted(range(60), key=lambda i, s=score: s[i], reverse=True)[:10]  # the reference's sort
        np.testing.assert_array_equal(sets[k], ref)
    # (m, d) class queries: the mean template embedding gives the same sets
    for a, b in zip(sets, quantisation_sets(templates.mean(1), pool, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_quantisation_ties_keep_pool_order():
    pool = np.eye(3, dtype=np.float32)[[0, 1, 0, 2, 0]]  # images 0, 2, 4 tie for class 0
    np.testing.assert_array_equal(quantisation_sets(np.eye(3)[:1], pool, 3)[0], [0, 2, 4])


# --- concepts -------------------------------------------------------------------------------

def known_case(n_each=8, seed=0):
    """Codebook words w0..w5 along the axes. Images of 'A' are e0 + e1 + 0.5 e5, of 'B' e2 + e3
    + 0.5 e5, plus distractors along e4: each A image's top-3 tokens are w0, w1 (tied) then w5."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(6)]
    E = np.eye(6, dtype=np.float32)
    a = np.array([1, 1, 0, 0, 0, 0.5]) + 0.01 * rng.uniform(size=(n_each, 6)) * [0, 0, 0, 0, 1, 0]
    b = np.array([0, 0, 1, 1, 0, 0.5]) + 0.01 * rng.uniform(size=(n_each, 6)) * [0, 0, 0, 0, 1, 0]
    far = np.array([0, 0, 0, 0, 1, 0]) + np.zeros((n_each, 6))
    pool = l2_normalize(np.concatenate([far, a, b]))
    queries = l2_normalize(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]], dtype=np.float32))
    return words, E, pool, queries


def test_v2c_concepts_on_a_case_with_known_tokens():
    words, E, pool, queries = known_case()
    cs = v2c_concepts(["A", "B"], queries, pool, words, E, n_images=8, top_k=3, per_class=5)
    # equal frequencies (8 each): the reference's argsort(freq)[::-1] puts the higher index first
    assert [cs.concepts[i].text for i in cs.for_class("A")] == ["w5", "w1", "w0"]
    assert [cs.concepts[i].text for i in cs.for_class("B")] == ["w5", "w3", "w2"]
    assert cs.concepts[cs.index("w5")].classes == ["A", "B"]  # one concept, both classes
    np.testing.assert_array_equal(cs.class_matrix(["A", "B"]), [[1, 1, 1, 0, 0], [1, 0, 0, 1, 1]])
    prov = cs.concepts[cs.index("w5")].provenance
    assert [(p["source"], p["class"], p["token"], p["frequency"], p["rank"]) for p in prov] == \
        [("v2c", "A", 5, 8, 0), ("v2c", "B", 5, 8, 0)]


def test_unseen_tokens_are_dropped_unless_padding_as_the_reference():
    words, E, pool, queries = known_case()
    kept = v2c_concepts(["A", "B"], queries, pool, words, E, n_images=8, top_k=3, per_class=5)
    assert all(p["frequency"] > 0 for c in kept for p in c.provenance)
    padded = v2c_concepts(["A", "B"], queries, pool, words, E, n_images=8, top_k=3, per_class=5,
                          pad_unseen=True)
    # then 5 per class: the 3 seen, then zero-frequency words by descending index
    assert [padded.concepts[i].text for i in padded.for_class("A")] == ["w5", "w1", "w0", "w4", "w3"]


def test_v2c_concepts_errors():
    words, E, pool, queries = known_case()
    with pytest.raises(DataError, match="pool is empty"):
        v2c_concepts(["A", "B"], queries, pool[:0], words, E)
    with pytest.raises(DataError, match="5 codebook texts but 6 codebook embeddings"):
        v2c_concepts(["A", "B"], queries, pool, words[:5], E, n_images=8)
    with pytest.raises(DataError, match=r"n_images=24 but the pool has only 24 images.*n_images < 24"):
        v2c_concepts(["A", "B"], queries, pool, words, E, n_images=24)
    with pytest.raises(DataError, match="dimension 6 but pool images 5"):
        v2c_concepts(["A", "B"], queries, pool[:, :5], words, E, n_images=8)
    with pytest.raises(ConfigError, match="top_k=7 but the codebook has only 6 texts"):
        v2c_concepts(["A", "B"], queries, pool, words, E, n_images=8, top_k=7)
    with pytest.raises(ConfigError, match="per_class must be an integer >= 1"):
        v2c_concepts(["A", "B"], queries, pool, words, E, n_images=8, per_class=0)


# --- vocabulary ------------------------------------------------------------------------------

def test_vocabulary_order_dedup_and_cap():
    adj, nouns = ["red", "big"], ["shoe", "bag", "red"]
    full = ["shoe", "red", "bag", "big",  # atoms by relative rank; "red" once
            "red shoe", "red bag", "big shoe", "big bag", "big red"]  # rank products 1, 2, 2, 4, 6
    assert v2c_vocabulary(adj, nouns, max_texts=None) == full
    # independent check: atoms and every adjective-noun pair of two different words, each once
    want = set(adj) | set(nouns) | {f"{a} {n}" for a in adj for n in nouns if a != n}
    assert set(full) == want and len(full) == len(want)
    assert v2c_vocabulary(adj, nouns, max_texts=6) == full[:6]
    assert v2c_vocabulary(adj, nouns, max_texts=3) == full[:3]
    assert v2c_vocabulary(adj, nouns, max_texts=None, pairs=False) == full[:4]


def test_vocabulary_relation_phrases_follow_their_pair():
    out = v2c_vocabulary(["red"], ["shoe", "bag"], max_texts=None, relations=("has", "made of"),
                         relation_texts=True)
    assert out == ["shoe", "red", "bag", "red shoe", "has red shoe", "made of red shoe",
                   "red bag", "has red bag", "made of red bag"]
    assert len(v2c_vocabulary(["red"], ["shoe", "bag"], max_texts=None)) == 5  # relations off by default


def test_vocabulary_errors():
    with pytest.raises(DataError, match=r"nouns\[1\] is ' '"):
        v2c_vocabulary(["red"], ["shoe", " "])
    with pytest.raises(DataError, match="one string"):
        v2c_vocabulary("red", ["shoe"])
    with pytest.raises(ConfigError, match="max_texts must be an integer >= 1 or None"):
        v2c_vocabulary(["red"], ["shoe"], max_texts=0)


# --- codebook --------------------------------------------------------------------------------

def test_templates_are_the_references_86():
    assert len(V2C_TEMPLATES) == len(set(V2C_TEMPLATES)) == 86
    assert V2C_TEMPLATES[0] == "a bad photo of a {}." and V2C_TEMPLATES[79] == "a tattoo of the {}."
    assert V2C_TEMPLATES[80:] == ("has a {} on it.", "is made of {}.", "is a {}.", "has many {} on it.",
                                  "is a type of {}.", "part of a {}.")


class Counting(TinyBackbone):
    def __init__(self):
        super().__init__()
        self.prompts: list[str] = []

    def encode_texts(self, texts):
        self.prompts += list(texts)
        return super().encode_texts(texts)


def test_codebook_is_the_mean_of_unit_prompt_vectors_and_resumes(tmp_path):
    bb = Counting()
    templates = ("a photo of a {}.", "{} on it", "{}")
    texts = ["red shoe", "bag"]
    got = codebook_embeddings(bb, texts, tmp_path, templates=templates)
    raw = bb.raw_texts([t.format(w) for w in texts for t in templates]).reshape(2, 3, -1)
    want = (raw / np.linalg.norm(raw, axis=2, keepdims=True)).mean(1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(np.linalg.norm(got, axis=1) < 0.999)  # not re-normalised
    assert len(bb.prompts) == 6
    # cached per text: a second call encodes only the new text
    again = codebook_embeddings(bb, [*texts, "strap"], tmp_path, templates=templates)
    assert bb.prompts[6:] == [t.format("strap") for t in templates]
    np.testing.assert_allclose(again[:2], got, rtol=1e-6)
    # other templates are another cache namespace
    one = codebook_embeddings(bb, ["bag"], tmp_path, templates=("{}",))
    np.testing.assert_allclose(one[0], l2_normalize(bb.raw_texts(["bag"]))[0], rtol=1e-5)


def test_codebook_template_errors(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        codebook_embeddings(TinyBackbone(), ["bag"], tmp_path, templates=("a photo",))
    with pytest.raises(DataError, match="text #1"):
        codebook_embeddings(TinyBackbone(), ["bag", ""], tmp_path, templates=("{}",))


# --- the method --------------------------------------------------------------------------------

M, K, D = 4, 12, 64  # D large enough that random word vectors are nearly orthogonal


def make_problem(seed=0, noise=0.6, n_pool=200, pool_noise=0.3):
    """Concepts 3c..3c+2 belong to class c; images mix their class's concept vectors. The
    codebook holds the 12 concept words and 8 distractor words; the pool is unlabelled."""
    fixed = np.random.default_rng(1234)
    rng = np.random.default_rng(seed)
    concepts = fixed.normal(size=(K + 8, D))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    prior = np.zeros((M, K + 8), np.float32)
    for c in range(M):
        prior[c, 3 * c: 3 * c + 3] = 1

    def images(n, noise):
        labels = np.repeat(np.arange(M), n)
        emb = prior[labels] @ concepts + noise * rng.normal(size=(len(labels), D))
        return labels, l2_normalize(emb)

    def bundle(n):
        labels, emb = images(n, noise)
        return FeatureBundle([str(i) for i in range(len(labels))], labels, tuple("abcd"), emb, None, "toy")

    class_emb = l2_normalize(prior @ concepts)
    pool = images(n_pool // M, pool_noise)[1][rng.permutation(n_pool)]
    discovery = DiscoveryInputs(pool_embedding=pool, codebook_texts=tuple(f"word {i}" for i in range(K + 8)),
                                codebook_embedding=concepts.astype(np.float32))
    ctx = Context(tuple("abcd"), class_embedding=class_emb, backbone_id="toy", discovery=discovery)
    return bundle(30), bundle(10), bundle(25), ctx


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module")
def fitted(problem):
    train, val, _, ctx = problem
    return get_method("v2c", **FAST).fit(train, ctx, val)


def test_fits_finds_each_classes_words_and_beats_chance(fitted, problem):
    _, _, test, _ = problem
    assert (fitted.predict(test) == test.labels).mean() > 0.6  # chance 0.25
    cs = fitted.concept_set_
    for c, cls in enumerate("abcd"):  # the 3 most frequent tokens of each class are its own 3 words
        top = {con.text for con in cs for p in con.provenance if p["class"] == cls and p["rank"] < 3}
        assert top == {f"word {3 * c + j}" for j in range(3)}
    assert fitted.concepts_ == cs.texts


def test_is_labo_on_the_discovered_concepts_with_exact_explanations(fitted, problem):
    train, val, test, ctx = problem
    d = ctx.discovery
    rows = fitted.codebook_rows_
    emb = d.codebook_embedding[rows] / np.linalg.norm(d.codebook_embedding[rows], axis=1, keepdims=True)
    labo_ctx = Context(ctx.classes, fitted.concepts_, emb, fitted.concept_set_.class_matrix(ctx.classes),
                       ctx.class_embedding, "toy")
    labo = get_method("labo", optimizer="lbfgs", max_iter=100, similarity="cosine").fit(train, labo_ctx, val)
    np.testing.assert_allclose(fitted.class_weights_, labo.class_weights_, atol=1e-6)
    np.testing.assert_allclose(fitted.class_weights_, softmax(fitted.association_.astype(np.float64)),
                               atol=1e-6)
    logits = 100.0 * fitted.transform(test) @ fitted.class_weights_.T
    np.testing.assert_allclose(fitted.decision_function(test), logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fitted.transform(test), test.embedding @ emb.T, rtol=1e-5, atol=1e-6)


def test_discovery_never_reads_labels(problem):
    train, val, _, ctx = problem
    shuffled = FeatureBundle(train.ids, np.random.default_rng(0).permutation(train.labels), train.classes,
                             train.embedding, None, "toy")
    a = get_method("v2c", **FAST).fit(train, ctx, val)
    b = get_method("v2c", **FAST).fit(shuffled, ctx, val)
    assert a.concept_set_.to_dict() == b.concept_set_.to_dict()


def test_class_query_images_uses_the_class_means(problem):
    train, val, test, ctx = problem
    model = get_method("v2c", **FAST, class_query="images").fit(train, ctx, val)
    assert (model.predict(test) == test.labels).mean() > 0.6


def test_save_load_round_trip(fitted, problem, tmp_path):
    _, _, test, _ = problem
    loaded = Method.load(fitted.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict_proba(test), fitted.predict_proba(test))
    assert loaded.concept_set_.to_dict() == fitted.concept_set_.to_dict()
    np.testing.assert_array_equal(loaded.codebook_rows_, fitted.codebook_rows_)
    assert loaded.get_params() == fitted.get_params()


def test_method_errors(problem):
    train, val, _, ctx = problem
    with pytest.raises(ConfigError, match="v2c: n_images must be an integer >= 1"):
        get_method("v2c", n_images=0).fit(train, ctx, val)
    with pytest.raises(ConfigError, match="v2c: scale must be"):
        get_method("v2c", scale=-1.0).fit(train, ctx, val)
    with pytest.raises(ConfigError, match="needs context.discovery"):
        get_method("v2c", **FAST).fit(train, Context(ctx.classes, class_embedding=ctx.class_embedding), val)
    no_codebook = Context(ctx.classes, class_embedding=ctx.class_embedding,
                          discovery=DiscoveryInputs(pool_embedding=ctx.discovery.pool_embedding))
    with pytest.raises(ConfigError, match="lacks codebook_embedding"):
        get_method("v2c", **FAST).fit(train, no_codebook, val)
    with pytest.raises(DataError, match="pool has only 200 images"):
        get_method("v2c", **{**FAST, "n_images": 200}).fit(train, ctx, val)


def test_codebook_logs_an_estimate_and_an_interrupted_build_resumes(tmp_path, monkeypatch, caplog):
    import conceptlens.concepts.v2c as v2c_module

    templates = ("a photo of a {}.", "{}")
    texts = [f"word {i}" for i in range(10)]
    monkeypatch.setattr(v2c_module, "_PROMPTS_PER_SHARD", 4)  # 2 texts per shard: 5 shards
    whole = codebook_embeddings(Counting(), texts, tmp_path / "whole", templates=templates)

    class Interrupted(Exception):
        pass

    bb, calls = Counting(), []
    real = bb.encode_texts

    def fails_on_third(prompts):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return real(prompts)

    monkeypatch.setattr(bb, "encode_texts", fails_on_third)
    with caplog.at_level("INFO", logger="conceptlens"), pytest.raises(Interrupted):
        codebook_embeddings(bb, texts, tmp_path / "resumed", templates=templates)
    assert "encoding 10 of 10 texts x 2 templates = 20 prompts" in caplog.text
    assert len(bb.prompts) == 8  # two whole shards written before the interruption
    caplog.clear()
    bb2 = Counting()
    with caplog.at_level("INFO", logger="conceptlens"):
        again = codebook_embeddings(bb2, texts, tmp_path / "resumed", templates=templates)
    assert "encoding 6 of 10 texts" in caplog.text
    assert bb2.prompts == [t.format(w) for w in texts[4:] for t in templates]
    np.testing.assert_array_equal(again, whole)


def test_a_long_codebook_build_warns_with_its_estimate_and_a_short_one_only_informs(tmp_path, monkeypatch,
                                                                                     caplog):
    import conceptlens.concepts.v2c as v2c_module

    templates, texts = ("a photo of a {}.", "{}"), [f"word {i}" for i in range(10)]
    with caplog.at_level("INFO", logger="conceptlens"):
        codebook_embeddings(Counting(), texts, tmp_path / "short", templates=templates)
    (short,) = [r for r in caplog.records if "v2c codebook" in r.getMessage()]
    assert short.levelname == "INFO"  # 20 prompts x 8.5 ms: well under a minute
    caplog.clear()
    monkeypatch.setattr(v2c_module, "_MS_PER_PROMPT", (1_000.0, 6_000.0))  # 20 prompts: 0.3-2.0 min
    with caplog.at_level("INFO", logger="conceptlens"):
        codebook_embeddings(Counting(), texts, tmp_path / "long", templates=templates)
    (long,) = [r for r in caplog.records if "v2c codebook" in r.getMessage()]
    assert long.levelname == "WARNING"  # the CLI's default level shows it
    assert "20 prompts" in long.getMessage() and "0.3-2.0 min" in long.getMessage()
    assert 'templates = "plain"' in long.getMessage()

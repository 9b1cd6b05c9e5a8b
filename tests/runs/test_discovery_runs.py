"""The discovery step of a run ([discovery], runs/discovery.py): only what the configured methods
need is built, labels never reach it, the SAE is cached, and discovered concepts flow into
results.json, the tables, grounding and the report like any other; and `conceptlens discover`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import conceptlens.runs.discovery as discovery_run
from conceptlens.errors import ConfigError, DataError
from conceptlens.methods import METHODS, Method
from conceptlens.report import run_report
from conceptlens.runs.config import DiscoveryConfig
from conceptlens.testing import tiny_run_setup as tiny_setup

WORDS = ["shoe", "boot", "red", "blue", "striped", "soft", "leather", "sleeve", "collar", "heel",
         "strap", "wool", "dark", "bright", "round", "long"]


# -- stand-ins for dn_cbm and v2c (their modules are written alongside this one) ------------

class FakeDN(Method):
    """Discover-then-Name in miniature: the SAE's alive latents, named by name_latents, a
    least-squares head on their activations. Self-contained arrays, so it saves like any model."""

    discovers_concepts = True
    discovery_needs = ("sae", "words")
    _arrays = ("class_weights_", "intercept_", "W_enc_", "b_enc_", "b_pre_", "latents_")

    def __init__(self, top: int = 6):
        self.top = top

    def _raw(self, bundle):
        x = np.asarray(bundle.embedding, np.float32)
        return x * bundle.embedding_norm[:, None] if self.input_mode_ == "raw" else x

    def _fit(self, train, context, val):
        from conceptlens.discovery.naming import name_latents, unique_names

        d = context.discovery
        sae = d.sae
        self.input_mode_ = sae.meta.get("input", "raw")
        naming = name_latents(sae.decoder_directions(), d.words, d.word_embedding, fired=sae.fired_)
        alive = [r["latent"] for r in naming if not r["dead"]][: self.top]
        self.latents_ = np.asarray(alive, np.int64)
        self.naming_ = [naming[j] for j in alive]
        self.concepts_ = unique_names([r["name"] for r in self.naming_],
                                      [r["similarity"] for r in self.naming_])
        self.W_enc_, self.b_enc_, self.b_pre_ = sae.W_enc[alive], sae.b_enc[alive], sae.b_pre
        A = self.transform(train)
        Y = np.eye(len(self.classes_))[train.labels]
        Z = np.c_[A, np.ones(len(A))]
        coef = np.linalg.lstsq(Z, Y, rcond=None)[0]
        self.class_weights_, self.intercept_ = coef[:-1].T.astype(np.float32), coef[-1].astype(np.float32)

    def transform(self, bundle):
        return np.maximum((self._raw(bundle) - self.b_pre_) @ self.W_enc_.T + self.b_enc_, 0)

    def _extra_state(self):
        return {"naming": self.naming_, "input": self.input_mode_}


class FakeV2C(Method):
    """V2C in miniature: each class's two codebook texts nearest its class prompt."""

    discovers_concepts = True
    discovery_needs = ("pool", "codebook")
    _arrays = ("class_weights_", "concept_embedding_")

    def __init__(self, per_class: int = 2):
        self.per_class = per_class

    def _fit(self, train, context, val):
        d = context.discovery
        assert d.pool_embedding is not None and d.codebook_embedding is not None
        S = context.class_embedding @ d.codebook_embedding.T
        tokens = {c: [d.codebook_texts[j] for j in np.argsort(-S[i], kind="stable")[: self.per_class]]
                  for i, c in enumerate(self.classes_)}
        self.concepts_ = list(dict.fromkeys(t for ts in tokens.values() for t in ts))
        self.class_tokens_ = tokens
        rows = [d.codebook_texts.index(t) for t in self.concepts_]
        E = d.codebook_embedding[rows]
        self.concept_embedding_ = (E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32)
        self.class_weights_ = np.asarray(
            [[float(t in tokens[c]) for t in self.concepts_] for c in self.classes_], np.float32)

    def transform(self, bundle):
        return np.asarray(bundle.embedding, np.float32) @ self.concept_embedding_.T


class NeedsOnly(Method):
    """A discovering method that asks for exactly `needs` (set per subclass)."""

    discovers_concepts = True
    needs_concepts = False

    def __init__(self):
        pass


@pytest.fixture
def fakes(monkeypatch):
    """Register the stand-ins (and one per single need) in the method registry for one test."""
    made = {"fake_dn": FakeDN, "fake_v2c": FakeV2C}
    for need in discovery_run.NEEDS:
        made[f"needs_{need}"] = type(f"Needs_{need}", (NeedsOnly,), {"discovery_needs": (need,)})
    for name, cls in made.items():
        cls.name = name
        monkeypatch.setitem(METHODS._factories, name, cls)
    return made


@pytest.fixture
def words_file(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("\n".join(WORDS) + "\n")
    return f


def _bundle(n=40, d=6, seed=0, labels=None):
    from conceptlens.features import FeatureBundle

    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, d)).astype(np.float32) * 3
    norm = np.linalg.norm(raw, axis=1)
    labels = np.arange(n) % 3 if labels is None else labels
    return FeatureBundle([f"i{i}" for i in range(n)], np.asarray(labels), ("a", "b", "c"),
                         raw / norm[:, None], None, "tiny:seed0", embedding_norm=norm)


class Counting:
    """Stand-ins for the discovery modules that count their calls and keep their inputs."""

    def __init__(self):
        self.calls = {"sae_for": 0, "load_vocabulary": 0, "split_pos": 0, "v2c_vocabulary": 0,
                      "codebook_embeddings": 0}
        self.sae_inputs = []

    def apis(self, monkeypatch):
        def sae_for(X, backbone_id, pool_id, cache_root, **params):
            self.calls["sae_for"] += 1
            self.sae_inputs.append((np.array(X), params))
            return SimpleNamespace(meta={"input": params["input"]}, fired_=np.array([1, 0, 2]))

        def load_vocabulary(spec, size):
            self.calls["load_vocabulary"] += 1
            return WORDS[:size]

        def split_pos(words):
            self.calls["split_pos"] += 1
            return words[:4], words[4:]

        def v2c_vocabulary(adjectives, nouns, **options):
            self.calls["v2c_vocabulary"] += 1
            return [*adjectives, *nouns, *(f"{a} {n}" for a in adjectives for n in nouns)]

        def codebook_embeddings(backbone, texts, cache_root=None, templates=(), progress=False):
            self.calls["codebook_embeddings"] += 1
            return np.ones((len(texts), 6), np.float32)

        sae = SimpleNamespace(sae_for=sae_for, pool_fingerprint=lambda X: f"fp{len(X)}",
                              sae_key=lambda X, b, **p: "key")
        monkeypatch.setattr(discovery_run, "_sae_api", lambda: sae)
        monkeypatch.setattr(discovery_run, "_vocabulary_api",
                            lambda: SimpleNamespace(load_vocabulary=load_vocabulary, split_pos=split_pos))
        monkeypatch.setattr(discovery_run, "_v2c_api", lambda: SimpleNamespace(
            v2c_vocabulary=v2c_vocabulary, codebook_embeddings=codebook_embeddings,
            V2C_TEMPLATES=("a {}.", "{}!")))
        return self


def _cfg(**discovery):
    from conceptlens.runs.config import RunConfig

    return RunConfig(discovery=DiscoveryConfig(**discovery), progress=False)


def test_only_what_the_methods_need_is_built(fakes, monkeypatch, tmp_path):
    from conceptlens.testing import TinyBackbone

    c = Counting().apis(monkeypatch)
    backbone, train = TinyBackbone(), _bundle()
    build = discovery_run.build_discovery
    assert build(_cfg(), backbone, None, tmp_path, train, {"zero_shot": {}, "linear_probe": {}}) is None
    assert not any(c.calls.values())

    rec = {}
    out = build(_cfg(), backbone, None, tmp_path, train, {"needs_words": {}}, rec)
    assert out.words == tuple(WORDS[:16]) and out.word_embedding.shape == (16, 6)
    np.testing.assert_allclose(out.word_embedding, backbone.encode_texts(WORDS), atol=1e-6)  # plain words
    assert out.pool_embedding is None and out.sae is None and out.codebook_embedding is None
    assert c.calls == {"sae_for": 0, "load_vocabulary": 1, "split_pos": 0, "v2c_vocabulary": 0,
                       "codebook_embeddings": 0}
    assert rec["needs"] == ["words"] and rec["vocabulary"]["size"] == 16 and "sae" not in rec

    out = build(_cfg(), backbone, None, tmp_path, train, {"needs_pool": {}}, rec)
    assert out.pool_embedding.shape == (40, 6) and out.sae is None and not out.words
    np.testing.assert_array_equal(out.pool_norm, train.embedding_norm)
    assert c.calls["sae_for"] == 0 and c.calls["load_vocabulary"] == 1

    rec = {}
    out = build(_cfg(), backbone, None, tmp_path, train, {"needs_sae": {}}, rec)
    assert c.calls["sae_for"] == 1 and c.calls["load_vocabulary"] == 1 and not out.words
    X, params = c.sae_inputs[-1]
    # "auto" input = raw embeddings when the backbone reports norms (the reference's raw CLIP outputs)
    np.testing.assert_allclose(X, train.embedding * train.embedding_norm[:, None], rtol=1e-6)
    assert params["input"] == "raw"
    assert rec["sae"]["dead"] == 1 and rec["sae"]["alive"] == 2 and rec["pool"]["size"] == 40

    rec = {}
    out = build(_cfg(v2c={"templates": "plain", "max_texts": 0}), backbone, None, tmp_path, train,
                {"needs_codebook": {}}, rec)
    assert out.codebook_texts[:4] == tuple(WORDS[:4]) and len(out.codebook_texts) == 4 + 12 + 48
    assert out.sae is None and out.pool_embedding is None and not out.words
    assert rec["codebook"] == {"size": 64, "templates": 1, "template_set": "plain"}

    # normalised input on request; raw refused when the norms are unknown
    build(_cfg(input="normalised"), backbone, None, tmp_path, train, {"needs_sae": {}})
    np.testing.assert_allclose(c.sae_inputs[-1][0], train.embedding)
    train.embedding_norm = None
    with pytest.raises(ConfigError, match=r"input = 'raw' needs the raw embedding norms.*'normalised' or "
                                          r"'auto'"):
        build(_cfg(input="raw"), backbone, None, tmp_path, train, {"needs_sae": {}})


def test_pool_labels_are_never_used(fakes, monkeypatch, tmp_path):
    """The same images with other labels give the SAE exactly the same input, also when a cap
    draws part of the pool."""
    from conceptlens.testing import TinyBackbone

    c = Counting().apis(monkeypatch)
    labels = np.arange(40) % 3
    shuffled = np.random.default_rng(1).permutation(labels)
    for size in (0, 25):
        for lab in (labels, shuffled, np.zeros(40, np.int64)):
            discovery_run.build_discovery(_cfg(pool_size=size, seed=4), TinyBackbone(), None, tmp_path,
                                          _bundle(labels=lab), {"needs_sae": {}})
        first = c.sae_inputs[-3][0]
        assert len(first) == (size or 40)
        for X, _ in c.sae_inputs[-2:]:
            np.testing.assert_array_equal(X, first)


def test_pool_from_a_dataset_spec_is_encoded_and_capped(fakes, monkeypatch, tmp_path, image_folder):
    """A folder pool goes through the feature cache (a second build encodes nothing); ':train'
    takes that split; pool_size draws by seed."""
    from conceptlens.features.encode import image_cache
    from conceptlens.testing import TinyBackbone

    Counting().apis(monkeypatch)
    backbone = TinyBackbone()
    cache = image_cache(backbone, tmp_path / "features")
    cfg = _cfg(pool=str(image_folder))
    out = discovery_run.build_discovery(cfg, backbone, cache, tmp_path, None, {"needs_pool": {}})
    assert out.pool_embedding.shape == (12, 6) and backbone.encoded == 12
    again = discovery_run.build_discovery(cfg, backbone, cache, tmp_path, None, {"needs_pool": {}})
    assert backbone.encoded == 12 and again.pool_id == out.pool_id  # cached, and the same pool
    rec = {}
    capped = discovery_run.build_discovery(_cfg(pool=f"{image_folder}:train", pool_size=5), backbone, cache,
                                           tmp_path, None, {"needs_pool": {}}, rec)
    assert len(capped.pool_embedding) == 5 and rec["pool"]["available"] < 12  # the train split only
    with pytest.raises(ConfigError, match=r"pool = \"train\" is the run's own training images"):
        discovery_run.load_pool(DiscoveryConfig(), cfg.data, backbone, cache, None)


def test_sae_is_trained_once_then_loaded_from_the_cache(fakes, monkeypatch, tmp_path, words_file):
    import conceptlens.discovery.sae as sae_module
    from conceptlens.testing import TinyBackbone

    trained = []
    real = sae_module.train_sae

    def counting(*a, **k):
        trained.append(k)
        return real(*a, **k)

    monkeypatch.setattr(sae_module, "train_sae", counting)
    cfg = _cfg(vocabulary=str(words_file), sae={"expansion": 2, "epochs": 3, "batch_size": 16})
    cfg.cache_dir = str(tmp_path / "cache")
    rec1, rec2 = {}, {}
    a = discovery_run.build_discovery(cfg, TinyBackbone(), None, None, _bundle(), {"fake_dn": {}}, rec1)
    b = discovery_run.build_discovery(cfg, TinyBackbone(), None, None, _bundle(), {"fake_dn": {}}, rec2)
    assert len(trained) == 1 and trained[0]["input"] == "raw"
    np.testing.assert_array_equal(a.sae.W_dec, b.sae.W_dec)
    assert rec1["sae"]["id"] == rec2["sae"]["id"] and (tmp_path / "cache" / "sae").is_dir()
    assert rec1["sae"]["h"] == 12 and rec1["sae"]["params"]["expansion"] == 2
    assert rec1["sae"]["epochs_run"] == 3
    assert rec1["sae"]["final_mse"] >= 0 and rec1["sae"]["dead"] + rec1["sae"]["alive"] == 12
    # other parameters are another SAE
    cfg.discovery.sae = {"expansion": 2, "epochs": 4, "batch_size": 16}
    discovery_run.build_discovery(cfg, TinyBackbone(), None, None, _bundle(), {"fake_dn": {}})
    assert len(trained) == 2


def test_bad_discovery_inputs_are_clear_errors(fakes, tmp_path, words_file):
    from conceptlens.testing import TinyBackbone

    build = discovery_run.build_discovery
    # a pool with fewer images than latents
    cfg = _cfg(vocabulary=str(words_file), sae={"expansion": 8, "epochs": 1})
    cfg.cache_dir = str(tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"\[discovery\] the SAE on pool 'train' \(40 images\): The "
                                          r"unlabelled pool has 40 images, too few.*48.*expansion to 6 or "
                                          r"less"):
        build(cfg, TinyBackbone(), None, None, _bundle(), {"fake_dn": {}})
    # a saved SAE for another backbone
    from conceptlens.discovery.sae import train_sae

    path = tmp_path / "other.safetensors"
    train_sae(_bundle().embedding * 3, expansion=1, epochs=1, backbone_id="offline:xyz").save(path)
    cfg.discovery.sae = str(path)
    with pytest.raises(ConfigError, match=r"\[discovery\] sae = '.*other.safetensors'.*trained for another "
                                          r"backbone.*'offline:xyz'.*'tiny:seed0'"):
        build(cfg, TinyBackbone(), None, None, _bundle(), {"fake_dn": {}})
    # a vocabulary file with duplicates and a non-word
    bad = tmp_path / "bad.txt"
    bad.write_text("shoe\nShoe\n1234\n")
    cfg = _cfg(vocabulary=str(bad))
    with pytest.raises(DataError, match=r"\[discovery\] vocabulary = '.*bad.txt'.*line 2: duplicate of "
                                        r"line 1.*line 3"):
        build(cfg, TinyBackbone(), None, None, _bundle(), {"needs_words": {}})


def _annotations(tmp_path):
    """Class-level annotations whose attributes are vocabulary words, so latent names and V2C
    tokens match them by text."""
    f = tmp_path / "attributes.csv"
    rows = ["attribute,cat,dog,fox",
            *(f"{w},{i % 2},{(i + 1) % 2},{i % 3 == 0:d}" for i, w in enumerate(WORDS))]
    f.write_text("\n".join(rows) + "\n")
    return f


def test_a_run_with_discovering_methods(fakes, tmp_path, monkeypatch, words_file):
    """End to end on the TinyBackbone: the discovery record in results.json, the methods in every
    table, their own concepts grounded, the report's Discovered concepts, and few-shot runs that
    build the pool and the SAE once for every k."""
    import conceptlens.discovery.sae as sae_module
    from conceptlens.runs import run_experiment
    from conceptlens.runs.config import FewShotConfig, GroundingConfig

    trained = []
    real = sae_module.train_sae
    monkeypatch.setattr(sae_module, "train_sae", lambda *a, **k: trained.append(1) or real(*a, **k))
    # WordNet's part-of-speech index takes ~20 s to build: split the test's words by hand
    import conceptlens.discovery.vocabulary as vocabulary

    monkeypatch.setattr(vocabulary, "split_pos", lambda words: (words[2:6], [*words[:2], *words[6:]]))
    make = tiny_setup(tmp_path, monkeypatch)
    cfg = make(methods={"zero_shot": {}, "fake_dn": {}, "fake_v2c": {}}, nec_protocol="prune",
               discovery=DiscoveryConfig(vocabulary=str(words_file), sae={"expansion": 2, "epochs": 5,
                                                                          "batch_size": 8},
                                         v2c={"templates": "plain", "max_texts": 40}),
               grounding=GroundingConfig(annotations=str(_annotations(tmp_path)), k=2, embed="none"),
               fewshot=FewShotConfig(shots=[1, 2], seeds=[0, 1]))
    out = run_experiment(cfg, report=run_report)
    assert len(trained) == 1  # once, for the main fit and all four few-shot fits
    folder = tmp_path / "out"
    res = json.loads((folder / "results.json").read_text())
    disc = res["discovery"]
    assert disc["needs"] == ["codebook", "pool", "sae", "words"]
    assert disc["pool"]["size"] == 18 and disc["pool"]["spec"] == "train"
    assert disc["sae"]["h"] == 12 and disc["sae"]["backbone_id"] == "tiny:seed0"
    assert disc["vocabulary"]["size"] == len(WORDS) and disc["codebook"]["size"] == 40
    assert set(disc["seconds"]) >= {"pool", "sae", "vocabulary", "words", "codebook", "total"}
    assert "discovery" in res["seconds"]
    # the run built no concept list for them: only zero_shot and the two discovering methods
    assert res["concept_report"] == {}
    for name in ("fake_dn", "fake_v2c"):
        row = res["results"][name]
        assert "top1_at_nec" in row and row["deletion_area_top"] is not None
        assert row["concept_auroc_n"] > 0  # their own concepts matched the annotated words
        assert f"| {name} |" in (folder / "results.md").read_text()
        assert name in res["fewshot"] and len(res["fewshot"][name]["2"]) == 2
    dn = out["results"]["fake_dn"]
    assert dn["concept_auroc"] is not None
    # concept_matches lists the discovered concepts (latent names; "(2)" suffixes stay unmatched)
    matched = {m["text"] for m in res["concept_matches"]}
    from conceptlens.methods import Method as M

    saved = M.load(folder / "models" / "fake_dn")
    assert set(saved.concepts_) <= matched
    html = (folder / "report.html").read_text()
    assert "<section id='discovered'>" in html and "data-method='fake_v2c'" in html
    assert all(c in html for c in saved.concepts_)


def test_discover_command(tmp_path, monkeypatch, capsys, words_file):
    """`conceptlens discover` on a tiny folder pool: the table, the summary, the saved SAE (for
    this backbone) and the names CSV; a second call trains nothing; bad input is a message."""
    import conceptlens.backbones
    import conceptlens.discovery.sae as sae_module
    from conceptlens.cli import main
    from conceptlens.discovery.sae import SparseAutoencoder
    from conceptlens.testing import TinyBackbone, write_png

    monkeypatch.setattr(conceptlens.backbones, "get_backbone", lambda spec: TinyBackbone())
    pool = tmp_path / "pool"
    rng = np.random.default_rng(0)
    for i in range(30):
        write_png(pool / ("a" if i % 2 else "b") / f"{i}.png", tuple(int(v) for v in rng.integers(0, 255, 3)))
    trained = []
    real = sae_module.train_sae
    monkeypatch.setattr(sae_module, "train_sae", lambda *a, **k: trained.append(1) or real(*a, **k))
    args = ["discover", "--pool", str(pool), "--vocabulary", str(words_file), "--expansion", "2", "--epochs",
            "4", "--sae-batch-size", "8", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--out", str(tmp_path / "sae.safetensors"), "--names-csv", str(tmp_path / "names.csv"),
            "--sort", "index", "--show", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    sae = SparseAutoencoder.load(tmp_path / "sae.safetensors", "tiny:seed0")
    rows = (tmp_path / "names.csv").read_text().splitlines()
    assert rows[0].startswith("latent,name,nearest,similarity,second") and len(rows) == 1 + sae.h
    alive = int((sae.fired_ > 0).sum())
    table = [line for line in printed.splitlines() if line[:6].strip().isdigit()]
    assert len(table) == alive
    assert f"Alive {alive}, dead {sae.h - alive}" in printed and "SAE 6 -> 12 latents (raw input" in printed
    # the printed names are the nearest words by cosine to each decoder direction (brute force)
    W = TinyBackbone().encode_texts(WORDS)
    D = sae.decoder_directions()
    for line in table:
        latent, name = int(line.split()[0]), line.split()[1]
        assert name == WORDS[int(np.argmax(D[latent] @ W.T / np.linalg.norm(W, axis=1)))]
    assert main(args[:-8]) == 0 and len(trained) == 1  # from the cache
    capsys.readouterr()

    # bad input reaches the user as a message, not a traceback
    assert main([*args[:5], "--expansion", "9", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 3
    assert "too few for an SAE of width" in capsys.readouterr().err
    assert main(["discover", "--pool", str(pool), "--pool-size", "-1"]) == 2
    assert "--pool-size must be an integer >= 0" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    real(np.asarray(sae.W_dec.T[:8] * 2), expansion=1, epochs=1, backbone_id="offline:xyz").save(other)
    assert main(["discover", "--sae", str(other), "--vocabulary", str(words_file), "--no-progress"]) == 3
    assert "trained for another backbone" in capsys.readouterr().err
    assert main(["discover"]) == 2 and "needs --pool" in capsys.readouterr().err


def test_a_run_with_the_real_dn_cbm_and_v2c(tmp_path, monkeypatch, words_file):
    """The registered methods through a whole run: results rows with accuracy at NEC, grounding
    of their own concepts, the discovery record, and the report's Discovered concepts."""
    import conceptlens.discovery.vocabulary as vocabulary
    from conceptlens.methods import METHODS as REGISTERED
    from conceptlens.runs import run_experiment
    from conceptlens.runs.config import GroundingConfig

    monkeypatch.setattr(vocabulary, "split_pos", lambda words: (words[2:6], [*words[:2], *words[6:]]))
    assert REGISTERED.get("v2c").needs_concepts  # a concept layer: NEC and grounding measure it
    make = tiny_setup(tmp_path, monkeypatch)
    cfg = make(methods={"linear_probe": {}, "dn_cbm": {"epochs": 30}, "v2c": {"n_images": 4, "per_class": 3,
                                                                                "epochs": 30}},
               nec_protocol="prune",
               discovery=DiscoveryConfig(vocabulary=str(words_file), sae={"expansion": 2, "epochs": 5,
                                                                          "batch_size": 8},
                                         v2c={"templates": "plain", "max_texts": 40}),
               grounding=GroundingConfig(annotations=str(_annotations(tmp_path)), k=2, embed="none"))
    run_experiment(cfg, report=run_report)
    folder = tmp_path / "out"
    res = json.loads((folder / "results.json").read_text())
    assert res["discovery"]["sae"]["h"] == 12 and res["discovery"]["codebook"]["size"] == 40
    for name in ("dn_cbm", "v2c"):
        row = res["results"][name]
        assert "top1_at_nec" in row and "deletion_area_top" in row, name
        assert f"| {name} |" in (folder / "results.md").read_text()
    assert res["results"]["dn_cbm"]["concept_auroc_n"] > 0 and res["results"]["v2c"]["concept_auroc_n"] > 0
    html = (folder / "report.html").read_text()
    assert "data-method='dn_cbm'" in html and "data-method='v2c'" in html
    assert html.count("<tr class='latent") > 0 and "class='class-tokens'" in html
    from conceptlens.methods import Method

    dn = Method.load(folder / "models" / "dn_cbm")  # what a reloaded model's section shows
    from conceptlens.report.html import latent_naming

    naming = latent_naming(dn)
    assert [r["latent"] for r in naming] == dn.latent_index_.tolist() and naming[0]["second"] is not None


def test_confounded_runs_get_the_same_discovery_inputs(fakes, tmp_path, monkeypatch, words_file):
    """Every confounded pair reuses the run's discovery inputs (they see no label)."""
    import conceptlens.runs.confounded as confounded
    from conceptlens.methods import DiscoveryInputs
    from conceptlens.runs import run_experiment
    from conceptlens.runs.confounded import ConfoundedConfig

    got = []
    make = tiny_setup(tmp_path, monkeypatch)

    def new(cfg, run_cfg, data, backbone, cache, cache_root, grounding=None, discovery=None):
        got.append(discovery)
        return {"table": ""}

    monkeypatch.setattr(confounded, "run_confounded", new)
    cfg = make(methods={"fake_dn": {}}, confounded=ConfoundedConfig(pairs=[["cat", "dog"]]), nec=0,
               discovery=DiscoveryConfig(vocabulary=str(words_file), sae={"expansion": 2, "epochs": 2}))
    monkeypatch.setitem(METHODS._factories, "fake_dn", FakeDN)
    run_experiment(cfg, write=False)
    assert isinstance(got[0], DiscoveryInputs) and got[0].sae is not None and got[0].words


def test_a_pool_too_small_for_the_sae_is_refused_before_encoding(fakes, monkeypatch, tmp_path, image_folder):
    from conceptlens.features.encode import image_cache
    from conceptlens.testing import TinyBackbone

    backbone = TinyBackbone()  # d = 6: the 12-image folder fits expansion 2, not 3
    cache = image_cache(backbone, tmp_path / "features")
    cfg = _cfg(pool=str(image_folder), sae={"expansion": 3})
    with pytest.raises(ConfigError, match=r"12 images, too few for an SAE of width expansion x d = 3 x 6 = 18"
                                          r".*"
                                          r"expansion = 2 \} or less.*Nothing was encoded"):
        discovery_run.build_discovery(cfg, backbone, cache, tmp_path, None, {"fake_dn": {}})
    assert backbone.encoded == 0
    # a pool that only V2C reads (no SAE) is not held to the SAE's width
    out = discovery_run.build_discovery(cfg, backbone, cache, tmp_path, None, {"needs_pool": {}})
    assert out.pool_embedding.shape == (12, 6)


def test_the_sae_width_follows_a_small_pool_and_says_so(fakes, monkeypatch, tmp_path, image_folder, caplog):
    """No expansion given: a 12-image pool of d = 6 gets expansion 2 (not DN-CBM's 8, which would need
    48 images), a warning says so and the discovery record keeps the note; a pool smaller than d is
    still refused before encoding."""
    from conceptlens.features.encode import image_cache
    from conceptlens.testing import TinyBackbone

    backbone = TinyBackbone()
    cache = image_cache(backbone, tmp_path / "features")
    cfg = _cfg(pool=str(image_folder), sae={"epochs": 1, "batch_size": 8})
    record: dict = {}
    with caplog.at_level("WARNING"):
        out = discovery_run.build_discovery(cfg, backbone, cache, tmp_path, None, {"fake_dn": {}}, record)
    assert out.sae.h == 12 and record["sae"]["params"]["expansion"] == 2
    assert "using expansion 2" in caplog.text and "using expansion 2" in record["sae"]["note"]
    small = _cfg(pool=str(image_folder), pool_size=5, sae={"epochs": 1})
    with pytest.raises(ConfigError, match=r"5 images.*smaller than d = 6.*Nothing was encoded"):
        discovery_run.build_discovery(small, TinyBackbone(), cache, tmp_path, None, {"fake_dn": {}})


def test_a_discovery_only_run_lists_only_what_it_wrote(fakes, tmp_path, monkeypatch, words_file, capsys):
    """A run whose only concept method discovers its own concepts builds no concept list: no
    concepts.json, and the CLI's "wrote" line does not claim one."""
    from conceptlens.cli.data_commands import print_run
    from conceptlens.runs import run_experiment

    make = tiny_setup(tmp_path, monkeypatch)
    cfg = make(methods={"fake_dn": {}}, nec_protocol="prune",
               discovery=DiscoveryConfig(vocabulary=str(words_file), sae={"epochs": 2, "batch_size": 8}))
    out = run_experiment(cfg)
    folder = tmp_path / "out"
    assert not (folder / "concepts.json").exists()
    assert out["written"] == sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    assert "results.json" in out["written"] and "models/" in out["written"]
    print_run(out)
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote")][0]
    assert "concepts.json" not in wrote and "results.json" in wrote and "models/" in wrote

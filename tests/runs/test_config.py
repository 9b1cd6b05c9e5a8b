"""Run config validation: every field is checked in load_config, before any work, and a
recorded config reads back to the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from conceptlens.errors import ConfigError
from conceptlens.runs import load_config, run_experiment
from conceptlens.runs.config import (
    ConceptConfig,
    DataConfig,
    FewShotConfig,
    GroundingConfig,
    RunConfig,
    to_toml,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]


def _load(tmp_path, text):
    f = tmp_path / "run.toml"
    f.write_text(text)
    return load_config(f)


@pytest.mark.parametrize("text, message", [
    # unknown keys in every section, with the known ones listed
    ("[evaluation]\nnecc = 3\n", r"Unknown key 'necc' in \[evaluation\]\. Did you mean 'nec'\? "
                                 r"Known: nec, nec_curve, nec_protocol\."),
    ("[output]\ndirectory = 'x'\n", r"Unknown key 'directory' in \[output\]\..*Known: cache_dir, dir\."),
    ("[backbone]\nname = 'offline'\n", r"Unknown key 'name' in \[backbone\]\..*Known: spec\."),
    ("[fewshot]\nshot = [1]\n", r"Unknown key 'shot' in \[fewshot\]\. Did you mean 'shots'"),
    # booleans are TOML booleans: "no" is not false
    ('[concepts]\nfilter = "no"\n', r"\[concepts\] filter must be a TOML boolean .*got 'no' \(a string\)"),
    ("[data]\nallow_non_ascii = 1\n", r"\[data\] allow_non_ascii must be a TOML boolean.*got 1"),
    ("[fewshot]\nuse_val = 'yes'\n", r"\[fewshot\] use_val must be a TOML boolean"),
    # integers, and their ranges
    ("[evaluation]\nnec = -3\n", r"\[evaluation\] nec must be an integer >= 0 \(0 = skip the NEC "
                                 r"comparison\); got -3"),
    ("[evaluation]\nnec = 5.0\n", r"\[evaluation\] nec must be an integer >= 0.*got 5\.0 \(a number\)"),
    ("[data]\ntrain_per_class = -1\n", r"train_per_class must be an integer >= 0 \(0 = every image of "
                                       r"the split\); got -1"),
    ("[data]\ntest_per_class = '200'\n", r"test_per_class must be an integer >= 0.*got '200' \(a string\)"),
    ("[data]\nval_per_class = 2.5\n", r"val_per_class must be an integer >= 0.*got 2\.5"),
    ("[data]\nseed = 1.0\n", r"\[data\] seed must be an integer in \[0, 4294967295\] \(a random seed\); "
                             r"got 1\.0"),
    ("[data]\nseed = true\n", r"\[data\] seed must be an integer in .*; got True \(a boolean\)"),
    # negative seeds: numpy's ValueError mid-run before
    ("[data]\nseed = -1\n", r"\[data\] seed must be an integer in \[0, 4294967295\] \(a random seed\); "
                            r"got -1"),
    ("[data]\nseed = 4294967296\n", r"\[data\] seed must be an integer in \[0, 4294967295\]"),
    ("[fewshot]\nshots = [1]\nseeds = [-5]\n", r"\[fewshot\] seeds must be an integer in \[0, 4294967295\]"
                                               r" \(a random seed\); got -5"),
    ("[discovery]\nseed = -2\n", r"\[discovery\] seed must be an integer in \[0, 4294967295\]"),
    ("[discovery.sae]\nseed = -2\n", r"\[discovery\.sae\] seed must be an integer in"),
    # non-finite numbers: TOML has inf and nan, and lam = inf passed ">= 0"
    ("[concepts]\nlam = inf\n", r"\[concepts\] lam = inf is not a finite number"),
    ("[concepts]\nlam = nan\n", r"\[concepts\] lam = nan is not a finite number"),
    ("[data]\nray_cpus_per_worker = inf\n", r"\[data\] ray_cpus_per_worker = inf is not a finite number"),
    ("[methods.label_free]\nlam = -inf\n", r"\[methods\.label_free\] lam = -inf is not a finite number"),
    ("[fewshot]\nshots = [1]\nseeds = [nan]\n", r"\[fewshot\] seeds\[0\] = nan is not a finite number"),
    ("[concepts]\nper_class = 0\n", r"\[concepts\] per_class must be an integer >= 1; got 0"),
    # numbers and choices
    ("[concepts]\nactivation_quantile = 1.5\n",
     r"activation_quantile must be a number in \[0, 1\]; got 1\.5"),
    ("[concepts]\nlam = -0.1\n", r"\[concepts\] lam must be a number >= 0; got -0\.1"),
    ("[concepts]\nselection = 'submodulr'\n", r"selection = 'submodulr' is not one of .*Did you mean "
                                              r"'submodular'"),
    ("[evaluation]\nnec_protocol = 'vgl'\n", r"nec_protocol = 'vgl' is not one of 'vlg', 'refit', "
                                             r"'prune'\. Did you mean 'vlg'"),
    ("[data]\non_error = 'ignore'\n", r"on_error = 'ignore' is not one of 'fail', 'skip'"),
    # few-shot lists
    ("[fewshot]\nshots = [0, 1]\n", r"\[fewshot\] shots must be a list of positive integers or \"all\"; "
                                    r"got \[0, 1\]"),
    ("[fewshot]\nshots = [1, 'few']\n", r"shots must be a list of positive integers or \"all\""),
    ("[fewshot]\nshots = 4\n", r"shots must be a list of positive integers or \"all\"; got 4"),
    ("[fewshot]\nshots = [1, 1]\n", r"shots lists a value twice"),
    ("[fewshot]\nshots = [1]\nseeds = [0.5]\n", r"\[fewshot\] seeds must be an integer in"),
    ("[fewshot]\nshots = [1]\nseeds = []\n", r"seeds is empty but shots is not"),
    # names
    ("[backbone]\nspec = 'ofline'\n", r"Unknown backbone 'ofline'\. Did you mean 'offline'"),
    ("[concepts]\nsources = ['wordnett']\n", r"Unknown concept source 'wordnett'"),
    ("[concepts]\nsources = 'wordnet'\n", r"sources must be a list of strings"),
    ("[concepts]\nfile = 'no/such/concepts.json'\n",
     r"\[concepts\] file = 'no/such/concepts.json': no such file"),
    ("[methods]\n", r"\[methods\] names no method"),
    ("methods = 3\n", r"\[methods\] must hold one table per method"),
    ("data = 3\n", r"\[data\] must be a table"),
    # method parameters, checked by the method, before any encoding
    ("[methods.label_free]\nlamda = 0.1\n", r"Unknown parameter.*'lamda'.*label_free.*Did you mean 'lam'"),
    ("[methods.linear_probe]\nCs = []\n", r"linear_probe: Cs must be a non-empty list"),
    # [grounding]
    ("[grounding]\nthreshold = 0.5\n",
     r"Unknown key 'threshold' in \[grounding\]\. Did you mean 'match_threshold'\? "
     r"Known: annotations, embed, k, match_threshold\."),
    ("[grounding]\nk = 0\n", r"\[grounding\] k must be an integer >= 1 \(top concepts per class for "
                             r"precision@k\); got 0"),
    ("[grounding]\nk = 2.5\n", r"\[grounding\] k must be an integer >= 1.*got 2\.5 \(a number\)"),
    ("[grounding]\nmatch_threshold = 1.5\n", r"\[grounding\] match_threshold must be a number in \[-1, 1\]; "
                                             r"got 1\.5"),
    ("[grounding]\nmatch_threshold = 'high'\n", r"match_threshold must be a number in \[-1, 1\]; got 'high'"),
    ("[grounding]\nembed = 'clip'\n",
     r"\[grounding\] embed = 'clip' is not one of 'sentence', 'backbone', 'none'"),
    ("[grounding]\nannotations = 'fashion-mnst'\n",
     r"annotations = 'fashion-mnst' is neither one of 'auto', 'none', 'fashion-mnist' nor an existing file.*"
     r"Did you mean 'fashion-mnist'\?.*\"none\" to skip"),
    ("[grounding]\nannotations = 3\n", r"\[grounding\] annotations must be one of 'auto', 'none', "
                                       r"'fashion-mnist' or the path of a CSV file; got 3"),
    ("[grounding]\nannotations = ''\n", r"\[grounding\] annotations must be one of"),
])
def test_config_errors_name_the_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_non_finite_numbers_are_refused_in_python_configs_too():
    # the TOML reader refuses every inf/nan; a RunConfig built in Python goes through _number
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ConfigError, match=r"\[concepts\] lam must be a finite number >= 0; got (inf|nan)"):
            validate_config(RunConfig(concepts=ConceptConfig(lam=bad)))
    with pytest.raises(ConfigError, match=r"\[data\] seed must be an integer in \[0, 4294967295\]"):
        validate_config(RunConfig(data=DataConfig(seed=-1)))
    with pytest.raises(ConfigError, match=r"\[fewshot\] seeds must be an integer in"):
        validate_config(RunConfig(fewshot=FewShotConfig(shots=[1], seeds=[-5])))


def test_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.toml: \[evaluation\] nec must be"):
        _load(tmp_path, "[evaluation]\nnec = -1\n")


def test_zero_sizes_mean_all_and_quantile_none(tmp_path):
    cfg = _load(tmp_path, "[data]\ntrain_per_class = 0\n\n[concepts]\nactivation_quantile = \"none\"\n"
                          "lam = 1\n")
    assert cfg.data.train_per_class == 0
    assert cfg.concepts.activation_quantile is None  # the written form of None
    assert cfg.concepts.lam == 1.0 and isinstance(cfg.concepts.lam, float)
    assert (cfg.nec, cfg.nec_protocol) == (5, "vlg")


def test_shipped_configs_load(monkeypatch):
    """Every config in configs/ loads; the MNIST one reads a folder that
    scripts/export_mnist_digits.py writes (an empty stand-in is enough to load it)."""
    import shutil

    monkeypatch.chdir(REPO)  # configs name their files relative to the repository
    exported = REPO / "data" / "mnist-digits"
    made = not exported.exists()
    if made:
        exported.mkdir(parents=True)
    try:
        for path in sorted((REPO / "configs").glob("*.toml")):
            cfg = load_config(path)
            assert cfg.nec_protocol in ("vlg", "refit", "prune"), path
    finally:
        if made:
            shutil.rmtree(exported)
            if not any(exported.parent.iterdir()):
                exported.parent.rmdir()


def _round_trip(tmp_path, cfg: RunConfig) -> RunConfig:
    (tmp_path / "again.toml").write_text(to_toml(cfg))
    return load_config(tmp_path / "again.toml")


def test_round_trip_of_every_none_field(tmp_path):
    """A None whose default is not None (activation_quantile) used to vanish on write and
    reload as 0.1; every None field must read back as None."""
    cfg = RunConfig(data=DataConfig(data_dir=None),
                    concepts=ConceptConfig(file=None, activation_quantile=None),
                    methods={"label_free": {"target_nec": None, "lam": 0.002}, "zero_shot": {}},
                    cache_dir=None)
    text = to_toml(cfg)
    assert 'activation_quantile = "none"' in text
    again = _round_trip(tmp_path, cfg)
    assert again.concepts.activation_quantile is None
    assert again.data.data_dir is None and again.concepts.file is None and again.cache_dir is None
    assert again.methods == {"label_free": {"lam": 0.002}, "zero_shot": {}}  # target_nec's default is None
    expected = cfg.to_dict()
    expected["methods"]["label_free"].pop("target_nec")
    assert again.to_dict() == expected


def test_round_trip_of_non_default_values(tmp_path):
    concepts = tmp_path / 'my "concepts".json'
    concepts.write_text("{}")
    cfg = RunConfig(data=DataConfig("some/folder", 0, 3, 0, 7, None, True, "skip"),
                    backbone="offline:top_t=5",
                    concepts=ConceptConfig(["wordnet", "imagenet"], str(concepts), False, 0.25, 3,
                                           "top_k", 1e-7),
                    methods={"linear_probe": {"Cs": [0.5, 2.0], "on": "embedding"}, "posthoc": {"lam": 1e-3}},
                    fewshot=FewShotConfig([1, 4, "all"], [0, 1], False), nec=3, nec_protocol="prune",
                    output_dir="out\\dir", cache_dir="c")
    again = _round_trip(tmp_path, cfg)
    assert again.to_dict() == cfg.to_dict()


def test_grounding_section_defaults_and_round_trip(tmp_path):
    cfg = _load(tmp_path, "[methods.zero_shot]\n")
    assert cfg.grounding == GroundingConfig("auto", 5, 0.7, "sentence")
    csv = tmp_path / "attributes.csv"
    csv.write_text("attribute,cat,dog\nfur,1,1\n")
    cfg = _load(tmp_path, f'[grounding]\nannotations = "{csv}"\nk = 3\nmatch_threshold = 1\nembed = "none"\n')
    assert cfg.grounding == GroundingConfig(str(csv), 3, 1.0, "none")
    assert isinstance(cfg.grounding.match_threshold, float)
    assert "[grounding]\n" in to_toml(cfg)
    assert _round_trip(tmp_path, cfg).to_dict() == cfg.to_dict()


def test_a_None_that_toml_cannot_hold_is_refused_on_write():
    cfg = RunConfig(methods={"linear_probe": {"max_iter": None}})
    with pytest.raises(ConfigError, match=r"\[methods.linear_probe\] max_iter = None cannot be recorded"):
        to_toml(cfg)


def test_run_experiment_validates_before_any_work(monkeypatch, tmp_path):
    """A config built in Python is checked too, before a dataset is read."""
    import conceptlens.runs.experiment as experiment

    def no_work(*a, **k):
        raise AssertionError("work started before the config was checked")

    monkeypatch.setattr(experiment, "load_dataset", no_work)
    for bad in (RunConfig(nec=-3), RunConfig(methods={"labo": {"nope": 1}}),
                RunConfig(concepts=ConceptConfig(filter="no")), RunConfig(nec_protocol="all"),
                RunConfig(grounding=GroundingConfig(k=0))):
        bad.output_dir = str(tmp_path / "out")
        with pytest.raises(ConfigError):
            run_experiment(bad)
    validate_config(RunConfig())  # the defaults are valid


def test_posthoc_learned_cavs_parameter_is_accepted(tmp_path):
    cavs = tmp_path / "cavs.safetensors"
    with pytest.raises(ConfigError, match="cavs.safetensors does not exist"):
        _load(tmp_path, f'[methods.posthoc]\ncavs = "{cavs}"\n')
    cavs.write_bytes(b"")  # posthoc reads it at fit time; the config only needs it to exist
    cfg = _load(tmp_path, f'[methods.posthoc]\ncavs = "{cavs}"\n')
    assert cfg.methods == {"posthoc": {"cavs": str(cavs)}}
    assert f'cavs = "{cavs}"' in to_toml(cfg)


def test_max_pixels_is_validated_and_reaches_the_loader(tmp_path, monkeypatch):
    from conceptlens.errors import DataError
    from conceptlens.runs.experiment import dataset_options

    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nmax_pixels = -5\n")
    with pytest.raises(ConfigError, match=r"max_pixels.*>= 0"):
        load_config(bad)
    ok = tmp_path / "ok.toml"
    ok.write_text('[data]\ndataset = "x"\nmax_pixels = 100\n')
    cfg = load_config(ok)
    assert dataset_options(cfg.data)["max_pixels"] == 100
    # the loader applies it: a 20 x 20 image (400 pixels) is over a 100-pixel cap
    from PIL import Image

    from conceptlens.data import load_dataset

    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.new("L", (20, 20), 128).save(tmp_path / "imgs" / name / "0.png")
    data = load_dataset(str(tmp_path / "imgs"), max_pixels=100)
    with pytest.raises(DataError, match="max_pixels"):
        data.images.decode(0, data.images.read(0))


def test_confounded_table_is_parsed_checked_and_round_trips(tmp_path):
    cfg = _load(tmp_path, "[methods.zero_shot]\n")
    assert cfg.confounded is None and "[confounded]" not in to_toml(cfg)
    cfg = _load(tmp_path, '[confounded]\npairs = [["Pullover", "Coat"]]\ntrain_per_class = 20\n')
    assert cfg.confounded.pairs == [["Pullover", "Coat"]] and cfg.confounded.train_per_class == 20
    assert "[confounded]\n" in to_toml(cfg)
    assert _round_trip(tmp_path, cfg).to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match=r"run\.toml: Unknown key 'pair' in \[confounded\]\. Did you mean "
                                          r"'pairs'"):
        _load(tmp_path, '[confounded]\npair = [["a", "b"]]\n')
    with pytest.raises(ConfigError, match=r"\[confounded\] train_per_class must be an integer >= 1; got 0"):
        _load(tmp_path, "[confounded]\ntrain_per_class = 0\n")


# -- [discovery] ------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("[discovery]\npools = 'train'\n",
     r"Unknown key 'pools' in \[discovery\]\. Did you mean 'pool'\? Known: "
     r"input, pool, pool_size, sae, seed, v2c, vocabulary, vocabulary_size\."),
    ("[discovery]\npool = 'no/such/folder'\n",
     r"pool = 'no/such/folder': 'no/such/folder' is not 'train'.*\(no such file or folder\).*"
     r"\"fashion-mnist:train\""),
    ("[discovery]\npool = 'no/such/folder:train'\n", r"'no/such/folder' is not 'train'"),
    ("[discovery]\npool_size = -1\n", r"\[discovery\] pool_size must be an integer >= 0 \(0 = every image"),
    ("[discovery]\ninput = 'unit'\n",
     r"\[discovery\] input = 'unit' is not one of 'auto', 'raw', 'normalised'"),
    ("[discovery]\nvocabulary = 'wordfrq'\n",
     r"vocabulary = 'wordfrq' is neither 'wordfreq', 'wordnet' nor an existing word-list file.*"
     r"Did you mean 'wordfreq'"),
    ("[discovery]\nvocabulary_size = 0\n", r"\[discovery\] vocabulary_size must be an integer >= 1; got 0"),
    ("[discovery]\nsae = {expansoin = 4}\n",
     r"Unknown key\(s\) \['expansoin'\] in \[discovery.sae\]\. Did you mean 'expansion'\? Known: "
     r"expansion, l1, lr, epochs, batch_size, resample_every, seed, precision, resample_dataset_size\."),
    ("[discovery]\nsae = {expansion = 0}\n", r"\[discovery.sae\] expansion must be an integer >= 1; got 0"),
    ("[discovery]\nsae = {lr = 0}\n", r"\[discovery.sae\] lr must be a number > 0; got 0"),
    ("[discovery]\nsae = {l1 = -1e-5}\n", r"\[discovery.sae\] l1 must be a number >= 0"),
    ("[discovery]\nsae = {precision = 'fp16'}\n", r"precision = 'fp16' is not one of 'auto', 'float32'"),
    ("[discovery]\nsae = 'no/such/sae.safetensors'\n", r"sae = 'no/such/sae.safetensors': no such file.*"
                                                       r"conceptlens discover --out"),
    ("[discovery]\nsae = 3\n", r"\[discovery\] sae must be a table of SAE training parameters or the path"),
    ("[discovery]\nv2c = {templates = 'all'}\n", r"\[discovery.v2c\] templates = 'all' is not one of 'full', "
                                                 r"'plain'"),
    ("[discovery]\nv2c = {max_text = 5}\n", r"Unknown key\(s\) \['max_text'\] in \[discovery.v2c\]\. Did you "
                                            r"mean 'max_texts'"),
    ("[discovery]\nv2c = {relations = 'has'}\n", r"\[discovery.v2c\] relations must be a list of non-empty"),
])
def test_discovery_errors_name_the_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_discovery_section_defaults_parse_and_round_trip(tmp_path):
    from conceptlens.runs.config import DiscoveryConfig, split_pool

    cfg = _load(tmp_path, "[methods.zero_shot]\n")
    assert cfg.discovery == DiscoveryConfig("train", 0, 0, "auto", "wordfreq", 20000, {}, {})
    assert "[discovery]" not in to_toml(cfg)  # the defaults are not written
    words = tmp_path / "words.txt"
    words.write_text("shoe\nred\n")
    (tmp_path / "pool" / "x").mkdir(parents=True)
    cfg = _load(tmp_path, f'[discovery]\npool = "{tmp_path / "pool"}:test"\npool_size = 500\nseed = 3\n'
                          f'input = "raw"\nvocabulary = "{words}"\nvocabulary_size = 7\n'
                          'sae = {expansion = 4, l1 = 1, lr = 0.001, epochs = 3, precision = "float32"}\n'
                          'v2c = {max_texts = 100, templates = "plain", relations = ["has", "made of"]}\n')
    d = cfg.discovery
    assert (d.pool_size, d.seed, d.input, d.vocabulary, d.vocabulary_size) == (500, 3, "raw", str(words), 7)
    assert d.sae == {"expansion": 4, "l1": 1.0, "lr": 0.001, "epochs": 3, "precision": "float32"}
    assert isinstance(d.sae["l1"], float)  # an integer where a float goes is normalised
    assert d.v2c == {"max_texts": 100, "templates": "plain", "relations": ["has", "made of"]}
    assert "[discovery]\n" in to_toml(cfg)
    assert _round_trip(tmp_path, cfg).to_dict() == cfg.to_dict()
    # a saved SAE file instead of training parameters, and the built-in pools
    sae = tmp_path / "sae.safetensors"
    sae.write_bytes(b"x")  # read when the run starts; the config only needs it to exist
    for pool in ("fashion-mnist:train", "fashion-mnist", "fashion-mnist-composite:n=30:test"):
        cfg = _load(tmp_path, f'[discovery]\npool = "{pool}"\nsae = "{sae}"\n')
        assert cfg.discovery.sae == str(sae) and cfg.discovery.pool == pool
        assert _round_trip(tmp_path, cfg).to_dict() == cfg.to_dict()
    assert split_pool("fashion-mnist:train") == ("fashion-mnist", "train")
    assert split_pool("fashion-mnist-composite:n=30") == ("fashion-mnist-composite:n=30", None)
    assert split_pool("fashion-mnist-composite:n=30:val") == ("fashion-mnist-composite:n=30", "val")
    assert split_pool("C:/images") == ("C:/images", None)


def test_discovery_is_checked_before_any_work(monkeypatch, tmp_path):
    import conceptlens.runs.experiment as experiment
    from conceptlens.runs.config import DiscoveryConfig

    def no_work(*a, **k):
        raise AssertionError("work started before the config was checked")

    monkeypatch.setattr(experiment, "load_dataset", no_work)
    for bad in (DiscoveryConfig(pool_size=-2), DiscoveryConfig(sae={"epochs": 0}), DiscoveryConfig(v2c=[])):
        with pytest.raises(ConfigError, match=r"\[discovery"):
            run_experiment(RunConfig(discovery=bad, output_dir=str(tmp_path / "out")))


@pytest.mark.parametrize("text, message", [
    ("[data]\ntrain_fraction = 0.8\n", r"train_fraction \+ val_fraction \+ test_fraction must sum to 1; got "
                                       r"0\.8 \+ 0\.1 \+ 0\.2 = 1\.1"),
    ("[data]\ntest_fraction = -0.1\ntrain_fraction = 1.0\n", r"\[data\] test_fraction must be a number in "
                                                             r"\[0, 1\]; got -0\.1"),
    ("[data]\ntrain_fraction = 0\nval_fraction = 0.5\ntest_fraction = 0.5\n",
     r"\[data\] train_fraction must be a number in \(0, 1\): some images must train; got 0\.0"),
    ("[data]\nuse_given_split = 'no'\n", r"\[data\] use_given_split must be a TOML boolean"),
    ("[concepts]\nsources = ['file']\n",
     r"(?s)\[concepts.sources.file\]: the file concept source needs the path.*\[concepts.sources.file\]\n"
     r"path = \"my_concepts.txt\""),
    ("[concepts.sources.file]\npath = 'missing.txt'\n",
     r"\[concepts.sources.file\]: path = 'missing.txt': no such file"),
    ("[concepts.sources.wordnet]\nrelation = ['gloss']\n", r"Unknown option 'relation' in "
                                                           r"\[concepts.sources.wordnet\]\. Did you mean "
                                                           r"'relations'\?"),
    ("[concepts.sources.llm]\nprompts = 'labo'\n",
     r"\[concepts.sources.llm\] prompts must be a list of strings"),
    ("[concepts]\nsources = ['wordnet', 'wordnet']\n", r"sources lists a source twice"),
    ("[concepts]\nglobal_budget = -1\n", r"\[concepts\] global_budget must be an integer >= 0 or \"auto\""),
    ("[concepts]\nglobal_budget = 'all'\n", r"\[concepts\] global_budget must be an integer >= 0"),
])
def test_splits_and_source_options_are_checked(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_source_tables_load_round_trip_and_hide_credentials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("stripes\n")
    cfg = _load(tmp_path, '[data]\ntrain_fraction = 0.6\nval_fraction = 0.1\ntest_fraction = 0.3\n'
                          'use_given_split = false\n\n'
                          '[concepts]\nglobal_budget = 40\n\n[concepts.sources.file]\npath = "mine.txt"\n\n'
                          '[concepts.sources.llm]\nmodel = "llama3"\nbase_url = "http://localhost:8000/v1"\n'
                          'prompts = ["important", "around"]\n')
    assert (cfg.data.train_fraction, cfg.data.test_fraction, cfg.data.use_given_split) == (0.6, 0.3, False)
    assert cfg.concepts.source_options() == {
        "file": {"path": "mine.txt"},
        "llm": {"model": "llama3", "base_url": "http://localhost:8000/v1",
                "prompts": ["important", "around"]}}
    assert cfg.concepts.global_budget == 40
    assert _round_trip(tmp_path, cfg).to_dict() == cfg.to_dict()
    # a key in the base URL is never recorded
    cfg.concepts.sources["llm"]["base_url"] = "http://user:secret@host:8000/v1?key=abc"
    text = to_toml(cfg)
    assert "secret" not in text and "abc" not in text and "host:8000/v1" in text
    # a list of names and [concepts] file still work; the file source takes [concepts] file as its path
    cfg = _load(tmp_path, '[concepts]\nsources = ["file"]\nfile = "mine.txt"\n')
    assert cfg.concepts.source_options() == {"file": {}}
    assert RunConfig().data.train_fraction == 0.7 and RunConfig().concepts.global_budget == "auto"


@pytest.mark.parametrize(("line", "message"), [
    ("ray_workers = 0", r"\[data\] ray_workers must be an integer >= 1; got 0"),
    ("ray_cpus_per_worker = 0", r"\[data\] ray_cpus_per_worker must be a number > 0; got 0"),
    ("ray_gpus_per_worker = -1", r"\[data\] ray_gpus_per_worker must be a number >= 0; got -1"),
    ("ray = 1", r"\[data\] ray must be a string"),
])
def test_ray_keys_are_checked(tmp_path, line, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndataset = "fashion-mnist"\n{line}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_ray_keys_round_trip(tmp_path):
    from conceptlens.runs.config import to_toml

    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ndataset = "fashion-mnist"\nray = "auto"\nray_workers = 3\n'
                   'ray_gpus_per_worker = 0.5\n')
    again = tmp_path / "again.toml"
    again.write_text(to_toml(load_config(cfg)))
    d = load_config(again).data
    assert (d.ray, d.ray_workers, d.ray_gpus_per_worker, d.ray_cpus_per_worker) == ("auto", 3, 0.5, 1.0)

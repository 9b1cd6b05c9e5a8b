"""The run config's typed tables (runs/config.py): tests generated from their declarations, so a
new key is covered by adding it. Every shipped and every `conceptlens init` config round-trips;
every table refuses an unknown key with "Did you mean"; every constraint refuses what it should,
naming [table] key, from a file and from Python; the config reference page is up to date."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import tomllib

from conceptlens import validation
from conceptlens.errors import ConfigError
from conceptlens.runs import config
from conceptlens.runs.config import RunConfig, load_config, to_toml, validate_config
from conceptlens.runs.config_model import Table, check_of

REPO = Path(__file__).resolve().parents[2]
# every table and where it sits in a file (the nested ones are [discovery] sae and v2c)
TABLES = {cls.table: cls for cls in config.TABLES}


def _round_trip(tmp_path: Path, cfg: RunConfig) -> RunConfig:
    text = to_toml(cfg)
    tomllib.loads(text)  # plain TOML, whatever reads it
    path = tmp_path / "again.toml"
    path.write_text(text, encoding="utf-8")
    again = load_config(path)
    assert to_toml(again) == text  # writing is stable
    return again


@pytest.fixture
def in_repo(monkeypatch):
    """The shipped configs name their files relative to the repository; the MNIST one reads a
    folder scripts/export_mnist_digits.py writes (an empty stand-in is enough to load it)."""
    monkeypatch.chdir(REPO)
    exported = REPO / "data" / "mnist-digits"
    made = not exported.exists()
    if made:
        exported.mkdir(parents=True)
    yield
    if made:
        shutil.rmtree(exported)
        if not any(exported.parent.iterdir()):
            exported.parent.rmdir()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.toml")))
def test_every_shipped_config_round_trips(tmp_path, in_repo, name):
    cfg = load_config(REPO / "configs" / name)
    again = _round_trip(tmp_path, cfg)
    assert again == cfg and again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("sources", [["wordnet"], ["vocabulary"]])
@pytest.mark.parametrize("train", [300, 40])
def test_every_config_init_writes_round_trips(tmp_path, sources, train):
    from conceptlens.cli.init_commands import starter_config

    text = starter_config(str(tmp_path / "my images"), ["cat", "dog"], {"train": train, "val": 5, "test": 9},
                          sources, "because", str(tmp_path / 'out "x"'))
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.data.train_per_class == train and cfg.concepts.sources == sources
    again = _round_trip(tmp_path, cfg)
    assert again == cfg and again.to_dict() == cfg.to_dict()


def test_a_config_with_every_table_round_trips(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("shoe\n")
    concepts = config.ConceptConfig(sources={"wordnet": {}, "vocabulary": {}}, activation_quantile=None,
                                    block_words=["x"])
    cfg = RunConfig(concepts=concepts,
                    fewshot=config.FewShotConfig([1, "all"], [3]),
                    confounded=config.ConfoundedConfig(nuisance="invert", strength=0.5),
                    discovery=config.DiscoveryConfig(pool="fashion-mnist:train", vocabulary=str(words),
                                                     sae={"expansion": 2, "lr": 1},
                                                     v2c={"relations": ["has"]}),
                    report=config.ReportConfig("labo"), nec=0, nec_protocol="refit", cache_dir="c")
    validate_config(cfg)
    assert cfg.discovery.sae["lr"] == 1.0 and isinstance(cfg.discovery.sae["lr"], float)
    again = _round_trip(tmp_path, cfg)
    assert again == cfg and again.concepts.activation_quantile is None


# -- unknown keys -------------------------------------------------------------------------------

def _toml(table: str, values: dict) -> str:
    doc: dict = {}
    node = doc
    for part in table.split("."):
        node = node.setdefault(part, {})
    node.update(values)
    return tomli_w.dumps(doc)


def _load_text(tmp_path: Path, text: str) -> RunConfig:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_refuses_an_unknown_key_with_did_you_mean(tmp_path, table):
    cls = TABLES[table]
    key = next(iter(cls.model_fields))
    typo = key + "x"
    with pytest.raises(ConfigError) as e:
        _load_text(tmp_path, _toml(table, {typo: 1}))
    message = str(e.value)
    assert f"[{table}]" in message and repr(typo) in message and f"Did you mean {key!r}?" in message, message
    assert "Known: " in message and "pydantic" not in message.lower()
    with pytest.raises(ConfigError, match=f"Did you mean {key!r}"):  # from Python too
        cls.from_table({typo: 1})


def test_an_unknown_section_is_refused_with_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.toml: Unknown section \[grounds\]\. "
                                          r"Did you mean 'grounding'\?"):
        _load_text(tmp_path, "[grounds]\nk = 1\n")


def test_unknown_keys_come_before_bad_values(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown key 'nex' in \[evaluation\]"):
        _load_text(tmp_path, "[data]\nseed = -1\n\n[evaluation]\nnex = 1\n")


# -- every constraint, generated ------------------------------------------------------------------

def _writable(value) -> bool:
    try:
        tomli_w.dumps({"k": value})
    except (TypeError, ValueError):
        return False
    return True


def _cases():
    for table, cls in sorted(TABLES.items()):
        for key, field in cls.model_fields.items():
            check = check_of(field)
            if check is None:
                continue
            real = [c for c in check.constraints if c is not None]
            bad = validation.invalid_values(real) if real else []
            if check.each is not None:  # a list whose items are checked one by one
                bad += [[v] for v in validation.invalid_values(check.each.constraints)]
            for value in bad:
                if _writable(value):
                    yield pytest.param(table, key, value, id=f"{table}.{key}={value!r}")


CASES = list(_cases())


def test_every_key_is_declared_once_with_a_check_and_a_description():
    for cls in config.TABLES:
        for key, field in cls.model_fields.items():
            assert check_of(field) is not None, f"[{cls.table}] {key} has no Check"
            assert field.description, f"[{cls.table}] {key} has no description"
    assert len(CASES) > 100


@pytest.mark.parametrize(("table", "key", "value"), CASES)
def test_every_constraint_refuses_what_it_should_naming_the_key(tmp_path, table, key, value):
    with pytest.raises(ConfigError) as e:
        _load_text(tmp_path, _toml(table, {key: value}))
    message = str(e.value)
    assert f"[{table}] {key}" in message, message
    assert message.startswith(str(tmp_path / "run.toml")) and "pydantic" not in message.lower()
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        assert "is not a finite number; give a finite one." in message
    elif "Did you mean" not in message and " is not one of " not in message:
        assert "Correct it in the config." in message, message


@pytest.mark.parametrize(("table", "key", "value"), CASES)
def test_every_constraint_is_checked_in_python_too(table, key, value):
    """A table built or edited in Python takes the value, and check() (validate_config in a run)
    refuses it with the same words."""
    cls: type[Table] = TABLES[table]
    t = cls()
    setattr(t, key, value)  # an edit after construction: no check yet
    with pytest.raises(ConfigError, match=rf"\[{table}\] {key}") as e:
        t.check()
    assert "pydantic" not in str(e.value).lower()


def test_a_run_config_edited_after_loading_is_checked_by_validate_config(tmp_path):
    cfg = _load_text(tmp_path, "[methods.zero_shot]\n")
    cfg.data.seed = -1
    cfg.concepts.lam = 1
    with pytest.raises(ConfigError, match=r"^\[data\] seed must be an integer in \[0, 4294967295\]"):
        validate_config(cfg)
    cfg.data.seed = 3
    data = cfg.data
    assert validate_config(cfg) is cfg and cfg.data is data  # checked in place
    assert cfg.concepts.lam == 1.0 and isinstance(cfg.concepts.lam, float)


def test_integers_stay_integers_where_an_integer_is_allowed():
    c = config.ConfoundedConfig.from_table({"nuisance": "border", "strength": 2})
    assert c.strength == 2 and isinstance(c.strength, int)  # the border's width in pixels
    c = config.ConfoundedConfig.from_table({"nuisance": "brightness", "strength": 1})
    assert c.strength == 1.0 and isinstance(c.strength, float)
    c = config.ConceptConfig.from_table({"global_budget": 3, "lam": 2, "sources": []})
    assert isinstance(c.global_budget, int) and isinstance(c.lam, float)


def test_tables_are_built_like_the_dataclasses_they_replace():
    d = config.DataConfig("x", 1, 2, 3, 4)
    assert (d.dataset, d.train_per_class, d.seed, d.on_error) == ("x", 1, 4, "fail")
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        config.DataConfig(nope=1)
    assert config.ConceptConfig().sources is not config.ConceptConfig().sources  # no shared defaults
    assert RunConfig().methods == config.DEFAULT_METHODS


# -- the reference page ---------------------------------------------------------------------------

def test_the_config_reference_is_generated_from_the_tables():
    """docs/reference/config.md lists every key; rerun scripts/config_reference.py after editing
    a table."""
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + "\nrun: python scripts/config_reference.py"
    page = (REPO / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    for cls in config.TABLES:
        assert f"## [{cls.table}]" in page
        for key in cls.model_fields:
            assert f"| `{key}` |" in page, (cls.table, key)

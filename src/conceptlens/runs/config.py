"""The run config (TOML): one typed table per section, every key with a default, so a config
says only what differs. docs/reference/config.md lists every key (scripts/config_reference.py
writes it from the tables below).

    [data] [backbone] [concepts] [methods.<name>] [fewshot] [evaluation] [grounding]
    [confounded] (optional) [discovery] [report] [output]

Each table is a `Table` (runs/config_model.py): a pydantic model whose fields are its keys,
each declared once with its constraint (validation.py), its default and its description. A
method's table ([methods.<name>]) is checked by the method's own parameter constraints
(methods/base.py check_params), a concept source's ([concepts.sources.<name>]) by the source
(concepts/sources/options.py).

`load_config` checks the whole file (names, types, ranges and every method's parameters)
before any work starts, so a typo fails in a second, not after the images are encoded; a
RunConfig built or edited in Python is checked by `validate_config`, which run_experiment
calls first. `to_toml` writes a config that `load_config` reads back to the same RunConfig:
a key whose default is None is left out when None; `activation_quantile`, whose default is
not None, is written as "none".

To add a key: add a field to its table below (a Check, a Field with the default and the
description) and rerun scripts/config_reference.py; the tests generated from the tables
(tests/runs/test_config_models.py) cover its constraint and its round trip.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import tomli_w
import tomllib
from pydantic import Field, model_validator

from ..backbones import BACKBONES
from ..concepts.selection import METHODS as SELECTIONS
from ..concepts.sources.llm import redact_url
from ..concepts.sources.options import check_source_options
from ..concepts.v2c import DEFAULT_MAX_TEXTS as V2C_MAX_TEXTS
from ..concepts.v2c import V2C_RELATIONS
from ..data import BUILTIN, COMPOSITE, DIGITS
from ..data.catalog import check_spec, parse_spec
from ..data.confounded import DEFAULT_NUISANCE, DEFAULT_PAIRS, NUISANCES, check_nuisance, pair_name
from ..data.dataset import SPLITS as POOL_SPLITS
from ..discovery.sae import INPUTS as SAE_INPUTS
from ..discovery.sae import PRECISIONS as SAE_PRECISIONS
from ..errors import ConfigError, closest
from ..evaluation.nec import PROTOCOLS as NEC_PROTOCOLS
from ..features.encode import ON_ERROR
from ..grounding.evaluate import ANNOTATION_NAMES, EMBED_CHOICES
from ..methods.aliases import DEFAULT_METHODS, METHOD_KEY, method_class, method_params, registered_name
from ..methods.base import check_params
from ..validation import InstanceOf, Interval, Options, Predicate, StrList
from .config_model import BOOLEAN, MAX_SEED, NONE, SEED, STRING, Check, Model, Table, field_error

__all__ = ["DEFAULT_METHODS", "MAX_SEED", "NONE", "TABLES", "BackboneConfig", "ConceptConfig", "ConfigFile",
           "ConfoundedConfig", "DataConfig", "DiscoveryConfig", "EvaluationConfig", "FewShotConfig",
           "GroundingConfig", "OutputConfig", "ReportConfig", "RunConfig", "SaeConfig", "V2cConfig",
           "check_method_params", "check_sources", "load_config", "split_pool", "to_toml", "validate_config",
           "validate_discovery"]

DEFAULT_NEC_CURVE = (1, 2, 3, 5, 10, 20)
DISCOVERY_INPUTS = ("auto", *SAE_INPUTS)
V2C_TEMPLATE_SETS = ("full", "plain")
REPORT_AUTO = "auto"

NONNEG_INT = Interval(int, 0, None)
POS_INT = Interval(int, 1, None)
NONNEG = Interval(float, 0, None)
POSITIVE = Interval(float, 0, None, closed="neither")
FRACTION = Interval(float, 0, 1)


def _seed(note: str = "a random seed") -> Check:
    return Check(SEED, note=note)


# -- checks no constraint can say (each raises ConfigError with the whole message) ------------

def _existing_concepts_file(path):
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"[concepts] file = {path!r}: no such file (relative paths are taken "
                          f"from the current folder, {Path.cwd()}).")
    return path


def _registered_backbone(spec: str) -> str:
    BACKBONES.get(spec.partition(":")[0])  # an unknown backbone fails here, with the known ones listed
    return spec


def _copied_tables(value):
    """TOML tables arrive as dicts; copy them so the caller's stay untouched."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()} if isinstance(value, dict) \
        else value


def _is_sources(v) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and all(isinstance(s, str) for s in v))


def _is_shots(v) -> bool:
    return isinstance(v, list) and all(
        s == "all" or (isinstance(s, int) and not isinstance(s, bool) and s >= 1) for s in v)


def _shots_once(shots: list) -> list:
    if len(set(map(str, shots))) != len(shots):
        raise ConfigError(f"[fewshot] shots lists a value twice: {shots}.")
    return shots


def _is_necs(v) -> bool:
    return isinstance(v, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v)


def _necs_once(necs: list) -> list:
    if len(set(necs)) != len(necs):
        raise ConfigError(f"[evaluation] nec_curve lists a value twice: {necs}.")
    return sorted(necs)


def _annotations_exist(name: str) -> str:
    if name not in ANNOTATION_NAMES and not Path(name).is_file():
        names = ", ".join(map(repr, ANNOTATION_NAMES))
        raise ConfigError(f"[grounding] annotations = {name!r} is neither one of {names} nor an existing "
                          f"file (relative paths are taken from the current folder, {Path.cwd()})."
                          f"{closest(name, ANNOTATION_NAMES)} Give a class-level (attribute,<class>,...) or "
                          "per-image (path,<attribute>,...) CSV, or \"none\" to skip the grounding measures.")
    return name


def _is_pairs(p) -> bool:
    def is_pair(x) -> bool:
        return isinstance(x, list | tuple) and len(x) == 2 and all(isinstance(n, str) and n for n in x)

    return isinstance(p, list) and bool(p) and all(is_pair(x) for x in p)


def _distinct_pairs(p: list) -> list:
    pairs = [list(x) for x in p]
    for x in pairs:
        if x[0] == x[1]:
            raise ConfigError(f"[confounded] pairs: {x} pairs a class with itself; give two different "
                              "classes.")
    names = [pair_name(x) for x in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"[confounded] pairs lists a pair twice: {pairs}.")
    return pairs


def split_pool(spec: str) -> tuple[str, str | None]:
    """'fashion-mnist:train' -> ('fashion-mnist', 'train'); a spec without a split suffix
    (a folder, 'fashion-mnist-composite:n=3000') -> (spec, None)."""
    head, sep, tail = spec.rpartition(":")
    return (head, tail) if sep and head and tail in POOL_SPLITS else (spec, None)


def _named_spec(spec: str) -> str:
    check_spec(spec)  # a named dataset's kind and options (cifar10:DIR, ...), no file read
    return spec


def _usable_pool(spec: str) -> str:
    base, _ = split_pool(spec)
    if parse_spec(base) is not None:  # cifar10:DIR, cub:DIR, ... (data/catalog.py)
        return spec
    if spec == "train" or base in (*BUILTIN, *DIGITS, COMPOSITE) or base.startswith(COMPOSITE + ":"):
        return spec
    path = Path(base)
    if not (path.is_dir() or (path.is_file() and path.suffix.lower() in (".csv", ".jsonl"))):
        raise ConfigError(
            f"[discovery] pool = {spec!r}: {base!r} is not 'train' (the run's own training images), "
            "'fashion-mnist', 'digits', 'fashion-mnist-composite', a folder of images or a .csv/.jsonl "
            "manifest"
            f"{' (no such file or folder)' if not path.exists() else ''}; relative paths are taken from "
            f"the current folder, {Path.cwd()}. Add ':train', ':val' or ':test' to use one split of it, "
            "e.g. \"fashion-mnist:train\".")
    return spec


def _usable_vocabulary(v: str) -> str:
    if v not in ("wordfreq", "wordnet") and not Path(v).expanduser().is_file():
        raise ConfigError(f"[discovery] vocabulary = {v!r} is neither 'wordfreq', 'wordnet' nor an existing "
                          f"word-list file (one word a line; relative paths are taken from {Path.cwd()})."
                          f"{closest(v, ('wordfreq', 'wordnet'))}")
    return v


def _given(table: Table, raw: dict) -> dict:
    """The keys a nested table gave, checked (the defaults stay the trainer's)."""
    return {k: getattr(table, k) for k in raw}


def _sae(value):
    if isinstance(value, str):
        if not Path(value).expanduser().is_file():
            raise ConfigError(f"[discovery] sae = {value!r}: no such file. Give the path of an SAE saved by "
                              "`conceptlens discover --out`, or a table of training parameters, e.g. "
                              "sae = {expansion = 8, epochs = 200}.")
        return value
    return _given(SaeConfig.from_table(value), value)


def _v2c(value: dict) -> dict:
    return _given(V2cConfig.from_table(value), value)


SOURCES_EXPECTED = 'a list of strings (e.g. ["wordnet"]) or one [concepts.sources.<name>] table per source'


def check_sources(sources, file: str | None = None) -> None:
    """[concepts] sources: a list of names, or {name: options}; every source's options are
    checked now (concepts/sources/options.py), so a missing path fails before any work."""
    if isinstance(sources, dict):
        for name, options in sources.items():
            if not isinstance(options, dict):
                raise field_error(f"concepts.sources.{name}", "table", options,
                                  f"a table of the {name!r} source's options ([concepts.sources.{name}] with "
                                  "key = value lines)")
            check_source_options(name, options, file)
    elif isinstance(sources, list) and all(isinstance(s, str) for s in sources):
        if len(set(sources)) != len(sources):
            raise ConfigError(f"[concepts] sources lists a source twice: {sources}.")
        for name in sources:
            check_source_options(name, {}, file)
    else:
        raise field_error("concepts", "sources", sources, SOURCES_EXPECTED)


def check_method_params(name: str, params: dict) -> None:
    """Unknown or invalid parameters of the [methods.`name`] table raise ConfigError (no fitting); a
    `method` key names the registered method (methods/aliases.py), an unknown one is refused with
    the known methods listed."""
    target = registered_name(name, params)
    try:
        check_params(target, method_params(params))
    except ConfigError as e:
        if target == name:
            raise
        raise ConfigError(f"[methods.{name}] (method = {target!r}): {e}") from None


def _checked_methods(methods):
    if not isinstance(methods, dict):
        raise ConfigError(f"[methods] must hold one table per method, e.g. [methods.labo]; got {methods!r}.")
    if not methods:
        raise ConfigError("[methods] names no method; add at least one table, e.g. [methods.zero_shot].")
    for method, params in methods.items():
        if not isinstance(params, dict):
            raise field_error("methods", method, params, "a table of the method's parameters")
        check_method_params(method, params)
    return _copied_tables(methods)


# -- the tables ---------------------------------------------------------------------------------

class DataConfig(Table):
    """The images and how they are split."""

    table = "data"

    dataset: Annotated[str, Check(STRING, then=_named_spec)] = Field(
        "fashion-mnist", description='The images: "fashion-mnist", "digits", '
        '"fashion-mnist-composite[:options]", a folder with one subfolder of images per class, or a '
        ".csv/.jsonl manifest (path,label[,split]).")
    train_per_class: Annotated[int, Check(NONNEG_INT, note="0 = every image of the split")] = Field(
        300, description="Training images per class.")
    val_per_class: Annotated[int, Check(NONNEG_INT, note="0 = every image of the split")] = Field(
        50, description="Validation images per class (model selection; the truth check of concepts).")
    test_per_class: Annotated[int, Check(NONNEG_INT, note="0 = every image of the split")] = Field(
        200, description="Test images per class.")
    seed: Annotated[int, _seed()] = Field(
        0, description="Draws the per-class subsets and divides the images without a given split.")
    data_dir: Annotated[str | None, Check(None, STRING)] = Field(
        None, description="Fashion-MNIST's root folder (default: the user cache); refused for other "
        "datasets.")
    allow_non_ascii: Annotated[bool, Check(BOOLEAN)] = Field(
        False, description="Accept class names (folder names) that are not ASCII.")
    on_error: Annotated[str, Check(Options(ON_ERROR))] = Field(
        "fail", description='What to do with a corrupt image: "fail" the run, or "skip" it.')
    max_pixels: Annotated[int, Check(NONNEG_INT, note="0 = no cap")] = Field(
        64_000_000, description="Images with more pixels are refused as corrupt (decompression bombs).")
    train_fraction: Annotated[float, Check(FRACTION)] = Field(
        0.7, description="Of the images without a given split, the share (per class) that trains; "
        "it must be in (0, 1), and the three fractions must sum to 1.")
    val_fraction: Annotated[float, Check(FRACTION)] = Field(
        0.1, description="Of the images without a given split, the share that validates; below 1.")
    test_fraction: Annotated[float, Check(FRACTION)] = Field(
        0.2, description="Of the images without a given split, the share that tests; below 1.")
    use_given_split: Annotated[bool, Check(BOOLEAN)] = Field(
        True, description="Keep the split the data came with (Fashion-MNIST's official test set, a "
        "manifest's `split` column); false: divide every image by the fractions.")
    ray: Annotated[str, Check(STRING)] = Field(
        "", description='Encode on a Ray cluster, with the same cache: "auto", "local" or "HOST:PORT"; '
        "\"\" encodes here (pip install 'conceptlens[ray]'; features/ray_encode.py).")
    ray_workers: Annotated[int, Check(POS_INT)] = Field(2, description="Ray encoding workers.")
    ray_gpus_per_worker: Annotated[float, Check(NONNEG)] = Field(
        0.0, description="GPUs each Ray worker asks for.")
    ray_cpus_per_worker: Annotated[float, Check(POSITIVE)] = Field(
        1.0, description="CPUs each Ray worker asks for.")

    @model_validator(mode="after")
    def _fractions(self):
        if self.train_fraction <= 0 or self.train_fraction >= 1:
            raise field_error("data", "train_fraction", self.train_fraction,
                              "a number in (0, 1): some images must train")
        for key in ("val_fraction", "test_fraction"):
            if getattr(self, key) >= 1:
                raise field_error("data", key, getattr(self, key), "a number in [0, 1)")
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1) > 1e-6:
            raise ConfigError(f"[data] train_fraction + val_fraction + test_fraction must sum to 1; got "
                              f"{self.train_fraction:g} + {self.val_fraction:g} + {self.test_fraction:g} = "
                              f"{total:g}. Correct them in the config, e.g. 0.7, 0.1, 0.2.")
        return self


class BackboneConfig(Table):
    """The vision-language model."""

    table = "backbone"

    spec: Annotated[str, Check(STRING, then=_registered_backbone)] = Field(
        "offline", description='The backbone: "offline" (built in), "hf:<model id>", '
        '"open_clip:<arch>:<tag>" or "precomputed:<file>", options after a colon.')


class ConceptConfig(Table):
    """Where the candidate concepts come from and how they are filtered and selected."""

    table = "concepts"

    sources: Annotated[list[str] | dict[str, dict], Check(
        Predicate(_is_sources, "a list of strings", invalid=["wordnet", 3, [1]]),
        expected=SOURCES_EXPECTED,
        then=_copied_tables)] = Field(
        default_factory=lambda: ["wordnet"],
        description="The concept sources: a list of names, or one [concepts.sources.<name>] table per source "
        'holding its options, e.g. [concepts.sources.file] path = "c.txt" (concepts/sources/options.py).')
    file: Annotated[str | None, Check(None, STRING, then=_existing_concepts_file)] = Field(
        None, description="A concept file added to the sources' concepts (the file source's path when its "
        "table gives none).")
    filter: Annotated[bool, Check(BOOLEAN)] = Field(
        True, description="Apply Label-free CBM's concept filters.")
    activation_quantile: Annotated[float | None, Check(None, FRACTION)] = Field(
        0.1, description='The activation filter\'s quantile; "none" for Label-free\'s fixed 0.25 cutoff '
        "(CLIP's cutoff does not transfer across backbones).")
    per_class: Annotated[int, Check(POS_INT)] = Field(20, description="Concepts selected per class.")
    selection: Annotated[str, Check(Options(SELECTIONS))] = Field(
        "submodular", description="How concepts are selected (concepts/selection.py).")
    lam: Annotated[float, Check(NONNEG)] = Field(
        0.1, description="The submodular selection's weight of class coverage against the concepts' mutual "
        "information with the class (concepts/selection.py).")
    global_budget: Annotated[int | str, Check(
        NONNEG_INT, Options("auto"), expected='an integer >= 0 or "auto"',
        note="how many concepts tied to no class to keep; 0 = none")] = Field(
        "auto", description='Global candidates (concepts tied to no class) kept: "auto" = per_class x '
        "classes when there are any, or at most that many.")
    block_words: Annotated[list[str], Check(StrList(description="a list of words"))] = Field(
        default_factory=list, description="Words no concept may hold, beyond the default blocklist of slurs, "
        "obscenities and sensitive words (concepts/blocklist.py).")
    allow_words: Annotated[list[str], Check(StrList(description="a list of words"))] = Field(
        default_factory=list, description="Words of the default blocklist that concepts may hold.")

    @model_validator(mode="after")
    def _sources(self):
        check_sources(self.sources, self.file)
        return self

    def source_options(self) -> dict[str, dict]:
        """{source name: its options} in the config's order (a list gives no options)."""
        if isinstance(self.sources, dict):
            return {name: dict(opts) for name, opts in self.sources.items()}
        return {name: {} for name in self.sources}


class FewShotConfig(Table):
    """Accuracy with k labelled images per class."""

    table = "fewshot"

    shots: Annotated[list[int | str], Check(
        Predicate(_is_shots, 'a list of positive integers or "all"', invalid=[4, [0], ["few"]]),
        then=_shots_once)] = Field(default_factory=list, description='The k values, e.g. [1, 4, "all"]; '
                                   "empty: no few-shot evaluation.")
    seeds: Annotated[list[int], Check(InstanceOf(list, f"a list of integers in [0, {MAX_SEED}]"),
                                      each=_seed())] = Field(
        default_factory=lambda: [0], description="One draw of the k images per seed, at every k.")
    use_val: Annotated[bool, Check(BOOLEAN)] = Field(
        True, description="Every method gets the run's validation split at every k (false: none does).")

    @model_validator(mode="after")
    def _some_seed(self):
        if self.shots and not self.seeds:
            raise ConfigError("[fewshot] seeds is empty but shots is not; give at least one seed, e.g. [0].")
        return self


class EvaluationConfig(Table):
    """The sparse (NEC) comparison."""

    table = "evaluation"

    nec: Annotated[int, Check(NONNEG_INT, note="0 = skip the NEC comparison")] = Field(
        5, description="Accuracy at this number of effective concepts per class, for every concept method.")
    nec_protocol: Annotated[str, Check(Options(NEC_PROTOCOLS))] = Field(
        "vlg", description='"vlg": VLG-CBM\'s sparse evaluation | "refit": refit sparse final layers, '
        'prune the others | "prune" (evaluation/nec.py).')
    nec_curve: Annotated[list[int], Check(
        Predicate(_is_necs, "a list of whole numbers >= 1", invalid=[5, [0], [1.5], ["5"]]),
        then=_necs_once)] = Field(
        default_factory=list, description="Accuracy against NEC, e.g. [1, 2, 3, 5, 10, 20] (the demo's): "
        "top-1 at each of "
        "these NECs by nec_protocol (one elastic-net path per method for \"vlg\"; NECs above a model's "
        "concept count left out), then the model as fitted, for every concept method: results.json "
        "`nec_curve` per method, a plot in report.html; [] = no curve (it costs about one more NEC "
        "evaluation per method).")


class GroundingConfig(Table):
    """Whether the concepts are true of the images: the grounding measures."""

    table = "grounding"

    annotations: Annotated[str, Check(
        Predicate(lambda v: isinstance(v, str) and v != "", "a non-empty string", invalid=[3, ""]),
        expected=f"one of {', '.join(map(repr, ANNOTATION_NAMES))} or the path of a CSV file",
        then=_annotations_exist)] = Field(
        "auto", description='"auto": the built-in attributes for fashion-mnist, the composite\'s own '
        'per-image annotations for fashion-mnist-composite, none otherwise | "fashion-mnist" | a CSV path | '
        '"none".')
    k: Annotated[int, Check(POS_INT, note="top concepts per class for precision@k")] = Field(
        5, description="Top concepts per class scored by explanation precision@k.")
    match_threshold: Annotated[float, Check(Interval(float, -1, 1))] = Field(
        0.7, description="Cosine at which a free-text concept matches an annotated one by embedding.")
    embed: Annotated[str, Check(Options(EMBED_CHOICES))] = Field(
        "sentence", description='"sentence": the offline sentence encoder | "backbone": the backbone\'s '
        'text side, L2-normalised | "none": normalised text matches only (grounding.matching_embedder).')


class ConfoundedConfig(Table):
    """The confounded-shift evaluation (runs/confounded.py); absent from a config: not run."""

    table = "confounded"

    pairs: Annotated[list[list[str]], Check(
        Predicate(_is_pairs, 'a non-empty list of class-name pairs, e.g. [["Pullover", "Coat"]]',
                  invalid=[[], [["cat"]], "cat"]), then=_distinct_pairs)] = Field(
        default_factory=lambda: [list(p) for p in DEFAULT_PAIRS],
        description="The class pairs, each a binary task; the nuisance marks the first class in training.")
    nuisance: Annotated[str, Check(Options(tuple(NUISANCES)))] = Field(
        DEFAULT_NUISANCE, description="What is painted on the images (data/confounded.py).")
    strength: Annotated[float | int | None, Check(
        None, Predicate(lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number",
                        invalid=["1", True]))] = Field(
        None, description="The nuisance's strength: a number in [0, 1], for border its width in pixels "
        "(an integer >= 0); absent: the nuisance's default.")
    train_per_class: Annotated[int, Check(POS_INT)] = Field(200, description="Training images per class.")
    val_per_class: Annotated[int, Check(NONNEG_INT, note="0 = no validation split")] = Field(
        50, description="Validation images per class, confounded like train.")
    id_per_class: Annotated[int, Check(POS_INT)] = Field(
        100, description="In-distribution test images per class (confounded like train).")
    ood_per_class: Annotated[int, Check(POS_INT)] = Field(
        100, description="Out-of-distribution test images per class (the nuisance on the other class).")
    adapt_per_class: Annotated[int, Check(NONNEG_INT, note="0 = no test-time improvement rows")] = Field(
        10, description="Labelled OOD-domain images per class for the test-time improvement.")
    seed: Annotated[int, _seed()] = Field(0, description="Draws the images of every pair.")

    @model_validator(mode="after")
    def _strength(self):
        if self.strength is not None:
            if self.nuisance == "border":
                Check(NONNEG_INT, note="the border's width in pixels").check(self.strength, "confounded",
                                                                             "strength")
            else:
                self.strength = Check(FRACTION).check(self.strength, "confounded", "strength")
            try:
                check_nuisance(self.nuisance, self.strength)
            except ConfigError as e:
                raise ConfigError(f"[confounded] strength: {e}") from None
        return self


class SaeConfig(Table):
    """[discovery] sae as a table: train_sae's parameters (discovery/sae.py); absent keys take its
    defaults, DN-CBM's released configuration."""

    table = "discovery.sae"
    listed_unknowns = True

    expansion: Annotated[int | None, Check(None, POS_INT)] = Field(
        None, description="Latents per embedding dimension (absent: DN-CBM's 8, lowered to pool images // d "
        "when the pool holds fewer than 8 x d images, with a warning).")
    l1: Annotated[float | None, Check(None, NONNEG)] = Field(None, description="The L1 penalty (3e-5).")
    lr: Annotated[float | None, Check(None, POSITIVE)] = Field(None, description="The learning rate (5e-4).")
    epochs: Annotated[int | None, Check(None, POS_INT)] = Field(None, description="Training epochs (200).")
    batch_size: Annotated[int | None, Check(None, POS_INT)] = Field(
        None, description="The batch size (4096).")
    resample_every: Annotated[int | None, Check(None, NONNEG_INT, note="0 = never resample")] = Field(
        None, description="Dead latents are resampled every this many epochs (10).")
    seed: Annotated[int | None, Check(None, SEED, note="a random seed")] = Field(
        None, description="The training seed (0).")
    precision: Annotated[str | None, Check(None, Options(SAE_PRECISIONS))] = Field(
        None, description='Matmul precision ("auto": bf16 where the CPU has it natively).')
    resample_dataset_size: Annotated[int | None, Check(None, POS_INT)] = Field(
        None, description="Images scored when resampling (819200).")


class V2cConfig(Table):
    """[discovery] v2c: V2C-CBM's codebook (concepts/v2c.py); absent keys take its defaults."""

    table = "discovery.v2c"
    listed_unknowns = True

    max_texts: Annotated[int | None, Check(None, NONNEG_INT, note="0 = every text")] = Field(
        None, description=f"At most this many codebook texts, common words first ({V2C_MAX_TEXTS}).")
    templates: Annotated[str | None, Check(None, Options(V2C_TEMPLATE_SETS))] = Field(
        None, description='"full": the reference\'s 86 prompts | "plain": the text alone ("full").')
    pairs: Annotated[bool | None, Check(None, BOOLEAN)] = Field(
        None, description="Add adjective-noun pairs to the codebook (true).")
    relation_texts: Annotated[bool | None, Check(None, BOOLEAN)] = Field(
        None, description="Add relation phrases to the codebook (false).")
    relations: Annotated[list[str] | None, Check(
        None, StrList(description='a list of non-empty strings, e.g. ["has", "made of"]'))] = Field(
        None, description=f"The relation words of the relation phrases ({list(V2C_RELATIONS)}).")


SAE_PARAMS = tuple(SaeConfig.model_fields)
V2C_PARAMS = tuple(V2cConfig.model_fields)


class DiscoveryConfig(Table):
    """For methods that find their own concepts (dn_cbm, v2c; runs/discovery.py); written only when
    it differs from the defaults."""

    table = "discovery"

    pool: Annotated[str, Check(STRING, then=_usable_pool)] = Field(
        "train", description='The unlabelled images: "train" (the run\'s training images, labels unused) | '
        '"<dataset spec>[:split]", e.g. "fashion-mnist:train", a folder or a manifest.')
    pool_size: Annotated[int, Check(NONNEG_INT, note="0 = every image of the pool")] = Field(
        0, description="Images drawn from the pool (by seed).")
    seed: Annotated[int, _seed()] = Field(0, description="Draws the pool_size images.")
    input: Annotated[str, Check(Options(DISCOVERY_INPUTS))] = Field(
        "auto", description='"auto": raw embeddings when the backbone reports norms, else normalised | '
        '"raw" | "normalised".')
    vocabulary: Annotated[str, Check(STRING, then=_usable_vocabulary)] = Field(
        "wordfreq", description='The naming vocabulary: "wordfreq" | "wordnet" | a word-list file.')
    vocabulary_size: Annotated[int, Check(POS_INT)] = Field(
        20000, description="Words of the vocabulary used.")
    sae: Annotated[dict | str, Check(
        Predicate(lambda v: isinstance(v, dict | str), "a table or a string", invalid=[3, ["x"]]),
        expected="a table of SAE training parameters or the path of a saved SAE file", then=_sae)] = Field(
        default_factory=dict, description="A table of train_sae parameters ([discovery.sae]), or the path of "
        "a saved SAE file, checked against the backbone.")
    v2c: Annotated[dict, Check(InstanceOf(dict, f"a table with {', '.join(V2C_PARAMS)}"), then=_v2c)] = Field(
        default_factory=dict, description="V2C-CBM's codebook options ([discovery.v2c]).")


class ReportConfig(Table):
    """What report.html shows."""

    table = "report"

    method: Annotated[str, Check(STRING)] = Field(
        REPORT_AUTO, description='The model report.html shows: "auto" (the concept bottleneck with the best '
        "validation top-1, or the first in [methods] order without a validation split) or the name of a "
        "concept-bottleneck method in [methods].")


class OutputConfig(Table):
    """Where the run writes."""

    table = "output"

    dir: Annotated[str, Check(STRING)] = Field("runs/latest", description="The run folder.")
    cache_dir: Annotated[str | None, Check(None, STRING)] = Field(
        None, description="The feature cache (default: the user cache).")


class ConfigFile(Table):
    """A run config file: its sections, as written."""

    table = ""

    data: DataConfig = Field(default_factory=DataConfig, description="The images and how they are split.")
    backbone: BackboneConfig = Field(default_factory=BackboneConfig, description="The vision-language model.")
    concepts: ConceptConfig = Field(default_factory=ConceptConfig, description="The candidate concepts.")
    methods: Annotated[dict[str, dict], Check(then=_checked_methods)] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_METHODS.items()},
        description="One table per method with its parameters, e.g. [methods.label_free]; the table name is "
        'the display name (results, tables, report) and `method = "<registered name>"` says which method it '
        "is (default: the table name), so a run can hold a method twice, e.g. [methods.cbm_joint] "
        'method = "cbm", mode = "joint" (methods/aliases.py).')
    fewshot: FewShotConfig = Field(default_factory=FewShotConfig, description="The few-shot evaluation.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="The NEC comparison.")
    grounding: GroundingConfig = Field(default_factory=GroundingConfig, description="The grounding measures.")
    confounded: ConfoundedConfig | None = Field(
        None, description="The confounded-shift evaluation; absent: not run.")
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig,
                                       description="Concept discovery (dn_cbm, v2c).")
    report: ReportConfig = Field(default_factory=ReportConfig, description="What report.html shows.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where the run writes.")

    @model_validator(mode="after")
    def _report_method(self):
        """[report] method: "auto" or a name in [methods]. Whether that method is a concept bottleneck
        needs the method itself: runs/experiment.check_report_method, also before any image is read."""
        name, methods = self.report.method, self.methods
        if name != REPORT_AUTO and name not in methods:
            raise ConfigError(f"[report] method = {name!r} is not a method of this run; give one of "
                              f"{', '.join(map(repr, methods))} (a [methods.<name>] table), or \"auto\" for "
                              "the concept bottleneck with the best validation top-1."
                              f"{closest(name, list(methods))}")
        return self


TABLES = (DataConfig, BackboneConfig, ConceptConfig, FewShotConfig, EvaluationConfig, GroundingConfig,
          ConfoundedConfig, DiscoveryConfig, SaeConfig, V2cConfig, ReportConfig, OutputConfig)


def _like(table: type[Table], key: str, **kw):
    """A RunConfig field that is a key of a section: its default and description."""
    f = table.model_fields[key]
    if f.default_factory is not None:
        return Field(default_factory=f.default_factory, description=f.description, **kw)
    return Field(f.default, description=f.description, **kw)


def _section(name: str):
    return _like(ConfigFile, name)


class RunConfig(Model):
    """A run: the config file's sections, with [backbone] spec, [evaluation] and [output] as plain
    keys (cfg.backbone, cfg.nec, cfg.output_dir), and how to run (progress, batch_size, workers:
    never recorded). Built in Python it is checked by validate_config (run_experiment calls it)."""

    data: DataConfig = _section("data")
    backbone: str = _like(BackboneConfig, "spec")
    concepts: ConceptConfig = _section("concepts")
    methods: dict[str, dict] = _section("methods")
    fewshot: FewShotConfig = _section("fewshot")
    nec: int = _like(EvaluationConfig, "nec")
    nec_protocol: str = _like(EvaluationConfig, "nec_protocol")
    nec_curve: list[int] = _like(EvaluationConfig, "nec_curve")
    grounding: GroundingConfig = _section("grounding")
    confounded: ConfoundedConfig | None = _section("confounded")
    discovery: DiscoveryConfig = _section("discovery")
    report: ReportConfig = _section("report")
    output_dir: str = _like(OutputConfig, "dir")
    cache_dir: str | None = _like(OutputConfig, "cache_dir")
    # how to run, not what to compute: never recorded in config.toml
    progress: bool = Field(True, description="Show progress bars.")
    batch_size: int = Field(64, description="Images per encoding batch.")
    workers: int = Field(2, description="Image-decoding workers.")

    def file_tables(self) -> dict:
        """The config as the file's tables (dicts), for ConfigFile to check."""
        def raw(v):
            return v.values() if isinstance(v, Model) else v

        out = {"data": raw(self.data), "backbone": {"spec": self.backbone}, "concepts": raw(self.concepts),
               "methods": self.methods, "fewshot": raw(self.fewshot),
               "evaluation": {"nec": self.nec, "nec_protocol": self.nec_protocol, "nec_curve": self.nec_curve},
               "grounding": raw(self.grounding), "discovery": raw(self.discovery), "report": raw(self.report),
               "output": {"dir": self.output_dir, "cache_dir": self.cache_dir}}
        if self.confounded is not None:
            out["confounded"] = raw(self.confounded)
        return out

    @classmethod
    def from_file(cls, f: ConfigFile) -> RunConfig:
        return cls(data=f.data, backbone=f.backbone.spec, concepts=f.concepts, methods=f.methods,
                   fewshot=f.fewshot, nec=f.evaluation.nec, nec_protocol=f.evaluation.nec_protocol,
                   nec_curve=f.evaluation.nec_curve,
                   grounding=f.grounding, confounded=f.confounded, discovery=f.discovery, report=f.report,
                   output_dir=f.output.dir, cache_dir=f.output.cache_dir)


# -- checking, reading, writing ------------------------------------------------------------------

def validate_config(cfg: RunConfig) -> RunConfig:
    """Check every field of `cfg` (types, ranges, names, method parameters) as load_config checks a
    file; ConfigError names the first bad one. Returns `cfg`, its tables' numbers normalised in
    place (an integer where a float goes)."""
    checked = RunConfig.from_file(ConfigFile.from_table(cfg.file_tables()))
    for name in ("data", "concepts", "fewshot", "grounding", "confounded", "discovery", "report"):
        mine, new = getattr(cfg, name), getattr(checked, name)
        if isinstance(mine, Table) and type(mine) is type(new):
            for key in type(new).model_fields:
                setattr(mine, key, getattr(new, key))
        else:
            setattr(cfg, name, new)
    cfg.nec, cfg.nec_protocol, cfg.nec_curve = checked.nec, checked.nec_protocol, checked.nec_curve
    return cfg


def validate_discovery(d: DiscoveryConfig) -> DiscoveryConfig:
    """Check [discovery] alone (`conceptlens discover`); numbers are normalised in place."""
    return d.check()


def load_config(path: str | Path) -> RunConfig:
    """Read and check a run config; see the module docstring."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"Cannot read config {path}: {e}.") from e
    try:
        return RunConfig.from_file(ConfigFile.from_table(raw, toml=True))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _method_params(name: str, params: dict) -> dict:
    """A method's parameters without the Nones that TOML cannot hold; a None whose default
    is not None would reload differently, so it is refused. A `method` key (an alias's registered
    method, methods/aliases.py) is kept, first."""
    sig = inspect.signature(method_class(name, params).__init__).parameters
    out = {METHOD_KEY: params[METHOD_KEY]} if METHOD_KEY in params else {}
    for k, v in method_params(params).items():
        if v is None:
            if k in sig and sig[k].default is None:
                continue
            raise ConfigError(f"[methods.{name}] {k} = None cannot be recorded in TOML (its default is "
                              f"{sig[k].default if k in sig else 'unknown'}); leave it out or give a value.")
        out[k] = v
    return out


def _recorded_concepts(c: ConceptConfig) -> dict:
    """[concepts] as recorded: an llm base_url loses its credentials (user:password@, query
    values), as everything else the llm source writes does."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in c.toml_values().items()}
    sources = out["sources"]
    if isinstance(sources, dict) and isinstance(sources.get("llm"), dict) \
            and isinstance(sources["llm"].get("base_url"), str):
        llm = {**sources["llm"], "base_url": redact_url(sources["llm"]["base_url"])}
        out["sources"] = {**sources, "llm": llm}
    return out


def _writable(value, where: str) -> None:
    """ConfigError for what TOML cannot hold (None, other types), named by its key."""
    if isinstance(value, dict):
        for k, v in value.items():
            _writable(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            _writable(v, where)
    elif value is None or not isinstance(value, bool | int | float | str):
        raise ConfigError(f"Cannot write {value!r} ({type(value).__name__}) to TOML ({where}).")


def toml_text(tables: dict) -> str:
    """TOML text of {table name: {key: value}} (tomli_w)."""
    _writable(tables, "")
    return tomli_w.dumps(tables)


def to_toml(cfg: RunConfig) -> str:
    """Write a config back as TOML (what an output folder records); `load_config` reads it
    back to an equal RunConfig (except progress, batch_size and workers, how not what)."""
    doc: dict[str, Any] = {
        "data": cfg.data.toml_values(),
        "backbone": BackboneConfig(cfg.backbone).toml_values(),
        "concepts": _recorded_concepts(cfg.concepts),
        "methods": {m: _method_params(m, p) for m, p in cfg.methods.items()},
        "fewshot": cfg.fewshot.toml_values(),
        "evaluation": EvaluationConfig(cfg.nec, cfg.nec_protocol, cfg.nec_curve).toml_values(),
        "grounding": cfg.grounding.toml_values(),
    }
    if cfg.confounded is not None:
        doc["confounded"] = cfg.confounded.toml_values()
    if cfg.discovery != DiscoveryConfig():
        doc["discovery"] = cfg.discovery.toml_values()
    doc["report"] = cfg.report.toml_values()
    doc["output"] = OutputConfig(cfg.output_dir, cfg.cache_dir).toml_values()
    return toml_text(doc)

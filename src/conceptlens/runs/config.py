"""The run config (TOML). Every field has a default, so a config says only what differs.

    [data]       dataset, train_per_class, val_per_class, test_per_class (integers >= 0;
                 0 = every image of that split), seed, data_dir, allow_non_ascii (bool),
                 on_error ("fail" | "skip": what to do with a corrupt image),
                 max_pixels (images above it are refused as corrupt; 0 = no cap),
                 train_fraction, val_fraction, test_fraction (numbers in [0, 1) summing to 1;
                 0.7/0.1/0.2: how images without a given split are divided, per class),
                 use_given_split (bool, true: keep the split the data came with, Fashion-MNIST's
                 official test set or a manifest's `split` column; false: divide every image
                 by the fractions), ray ("" = encode here | "auto" | "local" | "HOST:PORT": encode
                 on a Ray cluster, the same cache; pip install 'conceptlens[ray]'), ray_workers,
                 ray_gpus_per_worker, ray_cpus_per_worker
    [backbone]   spec
    [concepts]   sources (a list of source names, or one [concepts.sources.<name>] table per
                 source holding its options, e.g. [concepts.sources.file] path = "c.txt";
                 concepts/sources/options.py checks them), file, filter (bool),
                 activation_quantile (0..1, or "none" for Label-free's fixed 0.25 cutoff),
                 per_class (>= 1), global_budget ("auto": per_class x classes when there are
                 global candidates, concepts tied to no class | an integer >= 0: at most that
                 many global concepts; 0 = none), selection, lam (>= 0), block_words and
                 allow_words (lists of words added to / exempted from the blocklist of slurs,
                 obscenities and sensitive words, concepts/blocklist.py)
    [methods]    one table per method with its parameters, e.g. [methods.label_free]; the table name
                 is the display name (results, tables, report) and `method = "<registered name>"`
                 says which method it is (default: the table name), so one run can hold a method
                 twice, e.g. [methods.cbm_joint] method = "cbm", mode = "joint" (methods/aliases.py)
    [fewshot]    shots (list of positive integers or "all"), seeds (list of integers),
                 use_val (bool: every method gets the run's validation split at every k,
                 or none does)
    [evaluation] nec (accuracy at this NEC for every concept method; 0 = skip),
                 nec_protocol ("vlg": VLG-CBM's sparse evaluation, the default | "refit":
                 refit sparse final layers, prune the others | "prune"; evaluation/nec.py)
    [grounding]  annotations ("auto": the built-in attributes for fashion-mnist, the composite's
                 own per-image annotations for fashion-mnist-composite, none otherwise |
                 "fashion-mnist" | a CSV path | "none"), k (>= 1: top concepts per class for
                 precision@k), match_threshold (cosine in [-1, 1] for matching a free-text concept
                 to an annotated one by embedding; 0.7), embed ("sentence": the offline sentence
                 encoder, the default | "backbone": the backbone's text side, L2-normalised |
                 "none": normalised text matches only; grounding.matching_embedder)
    [confounded] optional: the confounded-shift evaluation (runs/confounded.py: pairs, nuisance,
                 strength, train/val/id/ood/adapt_per_class, seed); absent = not run
    [discovery]  for methods that find their own concepts (dn_cbm, v2c; runs/discovery.py):
                 pool ("train": the run's training images, labels unused | "<dataset spec>[:split]",
                 e.g. "fashion-mnist:train", a folder or a manifest; split one of train, val,
                 test), pool_size (>= 0; 0 = every image, else that many drawn by `seed`), seed,
                 input ("auto": raw embeddings when the backbone reports norms, else normalised |
                 "raw" | "normalised"), vocabulary ("wordfreq" | "wordnet" | a word-list file),
                 vocabulary_size (>= 1), sae (a table of train_sae parameters: expansion, l1, lr,
                 epochs, batch_size, resample_every, seed, precision, resample_dataset_size; or
                 the path of a saved SAE file, checked against the backbone),
                 v2c (a table: max_texts (>= 0; 0 = no cap; absent = concepts/v2c.py's default),
                 templates ("full": the reference's 86 prompts | "plain": the text alone), pairs
                 and relation_texts (booleans), relations (a list of strings)); the section is
                 written only when it differs from the defaults
    [report]     method ("auto": the concept bottleneck with the best validation top-1, or the first
                 one in [methods] order when the run has no validation split | the name of a
                 concept-bottleneck method in [methods]): the model report.html shows
    [output]     dir, cache_dir

`load_config` checks the whole file (names, types, ranges and every method's parameters)
before any work starts, so a typo fails in a second, not after the images are encoded.
`to_toml` writes a config that `load_config` reads back to the same RunConfig: a field
whose default is None is omitted when None; `activation_quantile`, whose default is not
None, is written as "none".
"""

from __future__ import annotations

import inspect
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import tomllib

from ..errors import ConfigError, closest

if TYPE_CHECKING:
    from .confounded import ConfoundedConfig

DEFAULT_METHODS = {"zero_shot": {}, "linear_probe": {}, "labo": {}, "label_free": {}}
NEC_PROTOCOLS = ("vlg", "refit", "prune")
ON_ERROR = ("fail", "skip")
NONE = "none"  # how a None that is not the default is written (TOML has no null)


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    train_per_class: int = 300  # 0 = all
    val_per_class: int = 50  # 0 = all
    test_per_class: int = 200  # 0 = all
    seed: int = 0
    data_dir: str | None = None
    allow_non_ascii: bool = False
    on_error: str = "fail"
    max_pixels: int = 64_000_000  # larger images are refused as corrupt (decompression bombs); 0 = no cap
    train_fraction: float = 0.7  # of the images without a given split, per class
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    use_given_split: bool = True  # Fashion-MNIST's official test set, a manifest's split column
    # encode on a Ray cluster (features/ray_encode.py): "" = locally, "auto" | "local" | "HOST:PORT"
    ray: str = ""
    ray_workers: int = 2
    ray_gpus_per_worker: float = 0.0
    ray_cpus_per_worker: float = 1.0


@dataclass
class ConceptConfig:
    sources: list[str] | dict[str, dict] = field(default_factory=lambda: ["wordnet"])
    file: str | None = None
    filter: bool = True
    activation_quantile: float | None = 0.1  # CLIP's 0.25 cutoff does not transfer across backbones
    per_class: int = 20
    selection: str = "submodular"
    lam: float = 0.1
    global_budget: int | str = "auto"  # global candidates kept: "auto" = per_class x classes
    # words no concept may hold beyond the default blocklist, and words it must not block
    # (concepts/blocklist.py)
    block_words: list[str] = field(default_factory=list)
    allow_words: list[str] = field(default_factory=list)

    def source_options(self) -> dict[str, dict]:
        """{source name: its options} in the config's order (a list gives no options)."""
        if isinstance(self.sources, dict):
            return {name: dict(opts) for name, opts in self.sources.items()}
        return {name: {} for name in self.sources}


@dataclass
class FewShotConfig:
    shots: list = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    use_val: bool = True


@dataclass
class GroundingConfig:
    annotations: str = "auto"
    k: int = 5
    match_threshold: float = 0.7
    embed: str = "sentence"


SAE_PARAMS = ("expansion", "l1", "lr", "epochs", "batch_size", "resample_every", "seed", "precision",
              "resample_dataset_size")
SAE_PRECISIONS = ("auto", "float32", "bfloat16")
V2C_PARAMS = ("max_texts", "templates", "pairs", "relation_texts", "relations")
DISCOVERY_INPUTS = ("auto", "raw", "normalised")
V2C_TEMPLATE_SETS = ("full", "plain")
POOL_SPLITS = ("train", "val", "test")


@dataclass
class DiscoveryConfig:
    pool: str = "train"
    pool_size: int = 0  # 0 = every image of the pool
    seed: int = 0  # draws the pool_size images
    input: str = "auto"
    vocabulary: str = "wordfreq"
    vocabulary_size: int = 20000
    sae: dict | str = field(default_factory=dict)  # train_sae parameters, or a saved SAE file
    v2c: dict = field(default_factory=dict)


REPORT_AUTO = "auto"


@dataclass
class ReportConfig:
    method: str = REPORT_AUTO  # or a [methods] name; runs/experiment.choose_report_method


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: str = "offline"
    concepts: ConceptConfig = field(default_factory=ConceptConfig)
    methods: dict[str, dict] = field(default_factory=lambda: dict(DEFAULT_METHODS))
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    nec: int = 5
    nec_protocol: str = "vlg"
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    confounded: ConfoundedConfig | None = None  # runs/confounded.py; None = not run
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    output_dir: str = "runs/latest"
    cache_dir: str | None = None
    # how to run, not what to compute: never recorded in config.toml
    progress: bool = True
    batch_size: int = 64
    workers: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


# -- checking values ------------------------------------------------------------------

def _kind(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _fail(where: str, key: str, value, expected: str) -> ConfigError:
    return ConfigError(f"[{where}] {key} must be {expected}; got {value!r} ({_kind(value)}). "
                       "Correct it in the config.")


def _bool(where, key, v) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, key, v, "a TOML boolean (true or false, without quotes)")
    return v


def _int(where, key, v, minimum: int | None = None, note: str = "") -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, key, v, f"an integer{f' >= {minimum}' if minimum is not None else ''}{note}")
    if minimum is not None and v < minimum:
        raise _fail(where, key, v, f"an integer >= {minimum}{note}")
    return v


MAX_SEED = 2**32 - 1  # numpy's and torch's generators all take seeds in [0, 2**32)


def _seed(where, key, v) -> int:
    """A random seed: numpy refuses negative ones (a raw ValueError mid-run), so check it here."""
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
        raise _fail(where, key, v, f"an integer in [0, {MAX_SEED}] (a random seed)")
    return v


def _number(where, key, v, lo: float | None = None, hi: float | None = None) -> float:
    # inf as well as NaN: TOML writes both, and e.g. lam = inf made selection return the first k
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        finite = isinstance(v, int | float) and not isinstance(v, bool)
        raise _fail(where, key, v, ("a finite " if finite else "a ") + _range_text(lo, hi).removeprefix("a "))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _fail(where, key, v, _range_text(lo, hi))
    return float(v)


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"a number in [{lo:g}, {hi:g}]"
    return f"a number >= {lo:g}" if lo is not None else "a number"


def _str(where, key, v, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise _fail(where, key, v, f"one of {', '.join(map(repr, choices))}" if choices else "a string")
    if choices and v not in choices:
        raise ConfigError(f"[{where}] {key} = {v!r} is not one of {', '.join(map(repr, choices))}."
                          f"{closest(v, choices)}")
    return v


def _opt_str(where, key, v) -> str | None:
    return None if v is None else _str(where, key, v)


def validate_config(cfg: RunConfig) -> RunConfig:
    """Check every field of `cfg` (types, ranges, names, method parameters); ConfigError names
    the first bad one. Returns `cfg` with numbers normalised (an integer where a float goes)."""
    from ..backbones import BACKBONES
    from ..concepts.selection import METHODS as SELECTIONS

    d = cfg.data
    _str("data", "dataset", d.dataset)
    from ..data.catalog import check_spec  # a named dataset's kind and options, no file read (#25)

    check_spec(d.dataset)
    for key in ("train_per_class", "val_per_class", "test_per_class"):
        _int("data", key, getattr(d, key), 0, " (0 = every image of the split)")
    _seed("data", "seed", d.seed)
    _opt_str("data", "data_dir", d.data_dir)
    _bool("data", "allow_non_ascii", d.allow_non_ascii)
    _str("data", "on_error", d.on_error, ON_ERROR)
    _int("data", "max_pixels", d.max_pixels, 0, " (0 = no cap)")
    _check_fractions(d)
    _bool("data", "use_given_split", d.use_given_split)
    _str("data", "ray", d.ray)
    _int("data", "ray_workers", d.ray_workers, 1)
    d.ray_gpus_per_worker = _number("data", "ray_gpus_per_worker", d.ray_gpus_per_worker, 0)
    d.ray_cpus_per_worker = _number("data", "ray_cpus_per_worker", d.ray_cpus_per_worker, 0)
    if d.ray_cpus_per_worker <= 0:
        raise _fail("data", "ray_cpus_per_worker", d.ray_cpus_per_worker, "a number > 0")

    name = _str("backbone", "spec", cfg.backbone).partition(":")[0]
    BACKBONES.get(name)  # an unknown backbone fails here, with the known ones listed

    c = cfg.concepts
    if _opt_str("concepts", "file", c.file) is not None and not Path(c.file).is_file():
        raise ConfigError(f"[concepts] file = {c.file!r}: no such file (relative paths are taken "
                          f"from the current folder, {Path.cwd()}).")
    check_sources(c.sources, c.file)
    _bool("concepts", "filter", c.filter)
    if c.activation_quantile is not None:
        c.activation_quantile = _number("concepts", "activation_quantile", c.activation_quantile, 0, 1)
    _int("concepts", "per_class", c.per_class, 1)
    if c.global_budget != "auto":
        _int("concepts", "global_budget", c.global_budget, 0,
             ' or "auto" (how many concepts tied to no class to keep; 0 = none)')
    _str("concepts", "selection", c.selection, tuple(SELECTIONS))
    c.lam = _number("concepts", "lam", c.lam, 0)
    for key in ("block_words", "allow_words"):
        words = getattr(c, key)
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise _fail("concepts", key, words, "a list of words")

    if not isinstance(cfg.methods, dict) or not cfg.methods:
        raise ConfigError("[methods] names no method; add at least one table, e.g. [methods.zero_shot].")
    for method, params in cfg.methods.items():
        if not isinstance(params, dict):
            raise _fail("methods", method, params, "a table of the method's parameters")
        check_method_params(method, params)

    f = cfg.fewshot
    if not isinstance(f.shots, list):
        raise _fail("fewshot", "shots", f.shots, 'a list of positive integers or "all"')
    for s in f.shots:
        if s != "all" and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise _fail("fewshot", "shots", f.shots, 'a list of positive integers or "all"')
    if len(set(map(str, f.shots))) != len(f.shots):
        raise ConfigError(f"[fewshot] shots lists a value twice: {f.shots}.")
    if not isinstance(f.seeds, list):
        raise _fail("fewshot", "seeds", f.seeds, f"a list of integers in [0, {MAX_SEED}]")
    for s in f.seeds:
        _seed("fewshot", "seeds", s)
    if f.shots and not f.seeds:
        raise ConfigError("[fewshot] seeds is empty but shots is not; give at least one seed, e.g. [0].")
    _bool("fewshot", "use_val", f.use_val)

    _int("evaluation", "nec", cfg.nec, 0, " (0 = skip the NEC comparison)")
    _str("evaluation", "nec_protocol", cfg.nec_protocol, NEC_PROTOCOLS)

    _check_grounding(cfg.grounding)
    if cfg.confounded is not None:
        from .confounded import ConfoundedConfig, validate_confounded

        if not isinstance(cfg.confounded, ConfoundedConfig):
            raise _fail("confounded", "table", cfg.confounded, "a ConfoundedConfig (a [confounded] table)")
        validate_confounded(cfg.confounded)
    if not isinstance(cfg.discovery, DiscoveryConfig):
        raise _fail("discovery", "table", cfg.discovery, "a DiscoveryConfig (a [discovery] table)")
    validate_discovery(cfg.discovery)
    _check_report(cfg.report, cfg.methods)

    _str("output", "dir", cfg.output_dir)
    _opt_str("output", "cache_dir", cfg.cache_dir)
    return cfg


def _check_report(r: ReportConfig, methods: dict) -> None:
    """[report] method: "auto" or a name in [methods]. Whether that method is a concept bottleneck
    needs the method itself: runs/experiment.check_report_method, also before any image is read."""
    if not isinstance(r, ReportConfig):
        raise _fail("report", "table", r, "a ReportConfig (a [report] table)")
    name = _str("report", "method", r.method)
    if name != REPORT_AUTO and name not in methods:
        raise ConfigError(f"[report] method = {name!r} is not a method of this run; give one of "
                          f"{', '.join(map(repr, methods))} (a [methods.<name>] table), or \"auto\" for the "
                          f"concept bottleneck with the best validation top-1.{closest(name, list(methods))}")


def _check_fractions(d: DataConfig) -> None:
    keys = ("train_fraction", "val_fraction", "test_fraction")
    for key in keys:
        setattr(d, key, _number("data", key, getattr(d, key), 0, 1))
    if d.train_fraction <= 0 or d.train_fraction >= 1:
        raise _fail("data", "train_fraction", d.train_fraction, "a number in (0, 1): some images must train")
    if d.val_fraction >= 1 or d.test_fraction >= 1:
        key = "val_fraction" if d.val_fraction >= 1 else "test_fraction"
        raise _fail("data", key, getattr(d, key), "a number in [0, 1)")
    total = d.train_fraction + d.val_fraction + d.test_fraction
    if abs(total - 1) > 1e-6:
        raise ConfigError(f"[data] train_fraction + val_fraction + test_fraction must sum to 1; got "
                          f"{d.train_fraction:g} + {d.val_fraction:g} + {d.test_fraction:g} = {total:g}. "
                          "Correct them in the config, e.g. 0.7, 0.1, 0.2.")


def check_sources(sources, file: str | None = None) -> None:
    """[concepts] sources: a list of names, or {name: options}; every source's options are
    checked now (concepts/sources/options.py), so a missing path fails before any work."""
    from ..concepts.sources.options import check_source_options

    if isinstance(sources, dict):
        for name, options in sources.items():
            if not isinstance(options, dict):
                raise _fail(f"concepts.sources.{name}", "table", options,
                            f"a table of the {name!r} source's options ([concepts.sources.{name}] with "
                            "key = value lines)")
            check_source_options(name, options, file)
    elif isinstance(sources, list) and all(isinstance(s, str) for s in sources):
        if len(set(sources)) != len(sources):
            raise ConfigError(f"[concepts] sources lists a source twice: {sources}.")
        for name in sources:
            check_source_options(name, {}, file)
    else:
        raise _fail("concepts", "sources", sources,
                    'a list of strings (e.g. ["wordnet"]) or one [concepts.sources.<name>] table per source')


def _check_grounding(g: GroundingConfig) -> None:
    from ..grounding.evaluate import ANNOTATION_NAMES, EMBED_CHOICES

    if not isinstance(g.annotations, str) or not g.annotations:
        raise _fail("grounding", "annotations", g.annotations,
                    f"one of {', '.join(map(repr, ANNOTATION_NAMES))} or the path of a CSV file")
    if g.annotations not in ANNOTATION_NAMES and not Path(g.annotations).is_file():
        names = ", ".join(map(repr, ANNOTATION_NAMES))
        raise ConfigError(f"[grounding] annotations = {g.annotations!r} is neither one of {names} nor an "
                          f"existing file (relative paths are taken from the current folder, {Path.cwd()})."
                          f"{closest(g.annotations, ANNOTATION_NAMES)} Give a class-level "
                          "(attribute,<class>,...) or per-image (path,<attribute>,...) CSV, or \"none\" to "
                          "skip the grounding measures.")
    _int("grounding", "k", g.k, 1, " (top concepts per class for precision@k)")
    g.match_threshold = _number("grounding", "match_threshold", g.match_threshold, -1, 1)
    _str("grounding", "embed", g.embed, EMBED_CHOICES)


def split_pool(spec: str) -> tuple[str, str | None]:
    """'fashion-mnist:train' -> ('fashion-mnist', 'train'); a spec without a split suffix
    (a folder, 'fashion-mnist-composite:n=3000') -> (spec, None)."""
    head, sep, tail = spec.rpartition(":")
    return (head, tail) if sep and head and tail in POOL_SPLITS else (spec, None)


def _check_pool(spec: str) -> None:
    from ..data import BUILTIN, COMPOSITE, DIGITS

    base, _ = split_pool(spec)
    from ..data.catalog import parse_spec

    if spec == "train" or base in (*BUILTIN, *DIGITS, COMPOSITE) or base.startswith(COMPOSITE + ":"):
        return
    if parse_spec(base) is not None:  # cifar10:DIR, cub:DIR, ... (data/catalog.py, #25)
        return
    path = Path(base)
    if not (path.is_dir() or (path.is_file() and path.suffix.lower() in (".csv", ".jsonl"))):
        raise ConfigError(
            f"[discovery] pool = {spec!r}: {base!r} is not 'train' (the run's own training images), "
            "'fashion-mnist', 'digits', 'fashion-mnist-composite', a folder of images or a .csv/.jsonl "
            "manifest"
            f"{' (no such file or folder)' if not path.exists() else ''}; relative paths are taken from "
            f"the current folder, {Path.cwd()}. Add ':train', ':val' or ':test' to use one split of it, "
            "e.g. \"fashion-mnist:train\".")


def _check_table(where: str, table: dict, known: tuple[str, ...]) -> None:
    unknown = [k for k in table if k not in known]
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in [{where}].{closest(unknown[0], known)} "
                          f"Known: {', '.join(known)}.")


def validate_discovery(d: DiscoveryConfig) -> DiscoveryConfig:
    """Check [discovery] (see the module docstring); numbers are normalised in place."""
    w = "discovery"
    _check_pool(_str(w, "pool", d.pool))
    _int(w, "pool_size", d.pool_size, 0, " (0 = every image of the pool)")
    _seed(w, "seed", d.seed)
    _str(w, "input", d.input, DISCOVERY_INPUTS)
    v = _str(w, "vocabulary", d.vocabulary)
    if v not in ("wordfreq", "wordnet") and not Path(v).expanduser().is_file():
        raise ConfigError(f"[discovery] vocabulary = {v!r} is neither 'wordfreq', 'wordnet' nor an existing "
                          f"word-list file (one word a line; relative paths are taken from {Path.cwd()})."
                          f"{closest(v, ('wordfreq', 'wordnet'))}")
    _int(w, "vocabulary_size", d.vocabulary_size, 1)
    if isinstance(d.sae, str):
        if not Path(d.sae).expanduser().is_file():
            raise ConfigError(f"[discovery] sae = {d.sae!r}: no such file. Give the path of an SAE saved by "
                              "`conceptlens discover --out`, or a table of training parameters, e.g. "
                              "sae = {expansion = 8, epochs = 200}.")
    elif isinstance(d.sae, dict):
        _check_table("discovery.sae", d.sae, SAE_PARAMS)
        s, ws = d.sae, "discovery.sae"
        for key, minimum in (("expansion", 1), ("epochs", 1), ("batch_size", 1), ("resample_every", 0),
                             ("resample_dataset_size", 1)):
            if key in s:
                _int(ws, key, s[key], minimum, " (0 = never resample)" if key == "resample_every" else "")
        if "seed" in s:
            _seed(ws, "seed", s["seed"])
        if "precision" in s:
            _str(ws, "precision", s["precision"], SAE_PRECISIONS)
        if "l1" in s:
            s["l1"] = _number(ws, "l1", s["l1"], 0)
        if "lr" in s:
            s["lr"] = _number(ws, "lr", s["lr"], 0)
            if s["lr"] == 0:
                raise _fail(ws, "lr", 0, "a number > 0")
    else:
        raise _fail(w, "sae", d.sae, "a table of SAE training parameters or the path of a saved SAE file")
    if not isinstance(d.v2c, dict):
        raise _fail(w, "v2c", d.v2c, f"a table with {', '.join(V2C_PARAMS)}")
    _check_table("discovery.v2c", d.v2c, V2C_PARAMS)
    if "max_texts" in d.v2c:
        _int("discovery.v2c", "max_texts", d.v2c["max_texts"], 0, " (0 = every text)")
    if "templates" in d.v2c:
        _str("discovery.v2c", "templates", d.v2c["templates"], V2C_TEMPLATE_SETS)
    for key in ("pairs", "relation_texts"):
        if key in d.v2c:
            _bool("discovery.v2c", key, d.v2c[key])
    if "relations" in d.v2c:
        r = d.v2c["relations"]
        if not isinstance(r, list) or not all(isinstance(x, str) and x.strip() for x in r):
            raise _fail("discovery.v2c", "relations", r,
                        'a list of non-empty strings, e.g. ["has", "made of"]')
    return d


def check_method_params(name: str, params: dict) -> None:
    """Unknown or invalid parameters of the [methods.`name`] table raise ConfigError (no fitting); a
    `method` key names the registered method (methods/aliases.py), an unknown one is refused with
    the known methods listed."""
    from ..methods.aliases import method_params, registered_name
    from ..methods.base import check_params

    target = registered_name(name, params)
    try:
        check_params(target, method_params(params))
    except ConfigError as e:
        if target == name:
            raise
        raise ConfigError(f"[methods.{name}] (method = {target!r}): {e}") from None


# -- reading ---------------------------------------------------------------------------

def _section(cls, raw, where: str, nullable: tuple[str, ...] = ()):
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table (a [{where}] header with key = value lines); "
                          f"got {raw!r}.")
    known = [f.name for f in fields(cls)]
    for key in raw:
        if key not in known:
            raise ConfigError(f"Unknown key {key!r} in [{where}].{closest(key, known)} "
                              f"Known: {', '.join(sorted(known))}.")
    values = dict(raw)
    for key in nullable:  # the written form of None for a field whose default is not None
        if values.get(key) == NONE:
            values[key] = None
    return cls(**values)


@dataclass
class _Backbone:
    spec: str = "offline"


@dataclass
class _Evaluation:
    nec: int = 5
    nec_protocol: str = "vlg"


@dataclass
class _Output:
    dir: str = "runs/latest"
    cache_dir: str | None = None


def load_config(path: str | Path) -> RunConfig:
    """Read and check a run config; see the module docstring for the sections."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"Cannot read config {path}: {e}.") from e
    top = ("data", "backbone", "concepts", "methods", "fewshot", "evaluation", "grounding", "confounded",
           "discovery", "report", "output")
    for key in raw:
        if key not in top:
            raise ConfigError(f"Unknown section [{key}] in {path}.{closest(key, top)} "
                              f"Known: {', '.join(sorted(top))}.")
    try:
        _refuse_non_finite(raw, "")
        return validate_config(_from_raw(raw))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _refuse_non_finite(value, where: str) -> None:
    """TOML has inf and nan; no conceptlens setting means either, and a check that only compares
    (x >= 0) lets inf through, so every number in the file is checked here, by its key."""
    if isinstance(value, float) and not math.isfinite(value):
        section, _, key = where.rpartition(".")
        raise ConfigError(f"[{section or 'top level'}] {key} = {_value(value)} is not a finite number; "
                          "give a finite one.")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_non_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_non_finite(v, f"{where}[{i}]")


def _from_raw(raw: dict) -> RunConfig:
    methods = raw.get("methods", DEFAULT_METHODS)
    if not isinstance(methods, dict):
        raise ConfigError(f"[methods] must hold one table per method, e.g. [methods.labo]; got {methods!r}.")
    backbone = _section(_Backbone, raw.get("backbone", {}), "backbone")
    evaluation = _section(_Evaluation, raw.get("evaluation", {}), "evaluation")
    output = _section(_Output, raw.get("output", {}), "output")
    return RunConfig(
        data=_section(DataConfig, raw.get("data", {}), "data"),
        backbone=backbone.spec,
        concepts=_concepts(raw.get("concepts", {})),
        methods={k: dict(v) if isinstance(v, dict) else v for k, v in methods.items()},
        fewshot=_section(FewShotConfig, raw.get("fewshot", {}), "fewshot"),
        nec=evaluation.nec, nec_protocol=evaluation.nec_protocol,
        grounding=_section(GroundingConfig, raw.get("grounding", {}), "grounding"),
        confounded=_confounded(raw),
        discovery=_discovery(raw.get("discovery", {})),
        report=_section(ReportConfig, raw.get("report", {}), "report"),
        output_dir=output.dir, cache_dir=output.cache_dir,
    )


def _concepts(raw) -> ConceptConfig:
    c = _section(ConceptConfig, raw, "concepts", nullable=("activation_quantile",))
    if isinstance(c.sources, dict):  # copy the TOML tables so the caller's stay untouched
        c.sources = {k: dict(v) if isinstance(v, dict) else v for k, v in c.sources.items()}
    return c


def _discovery(raw) -> DiscoveryConfig:
    d = _section(DiscoveryConfig, raw, "discovery")
    for key in ("sae", "v2c"):  # TOML tables arrive as dicts; copy so the caller's stay untouched
        if isinstance(getattr(d, key), dict):
            setattr(d, key, dict(getattr(d, key)))
    return d


def _confounded(raw: dict):
    if "confounded" not in raw:
        return None
    from .confounded import parse_confounded

    return parse_confounded(raw["confounded"])


# -- writing ---------------------------------------------------------------------------

def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, int | float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    raise ConfigError(f"Cannot write {v!r} ({type(v).__name__}) to TOML.")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else _value(k)


def _defaults(cls) -> dict:
    out = {}
    for f in fields(cls):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def _method_params(name: str, params: dict) -> dict:
    """A method's parameters without the Nones that TOML cannot hold; a None whose default
    is not None would reload differently, so it is refused. A `method` key (an alias's registered
    method, methods/aliases.py) is kept, first."""
    from ..methods.aliases import METHOD_KEY, method_class, method_params

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


def _table(name: str, values: dict, defaults: dict | None = None) -> str:
    rows = []
    for k, v in values.items():
        if v is None:
            if defaults is not None and defaults.get(k) is not None:
                v = NONE  # the default is not None: say None explicitly
            else:
                continue  # omitted reads back as the default, None
        rows.append(f"{_key(k)} = {_value(v)}")
    return f"[{name}]\n" + "\n".join(rows) + ("\n" if rows else "")


def _recorded_concepts(c: ConceptConfig) -> dict:
    """[concepts] as recorded: an llm base_url loses its credentials (user:password@, query
    values), as everything else the llm source writes does."""
    out = asdict(c)
    if isinstance(out["sources"], dict) and isinstance(out["sources"].get("llm", {}).get("base_url"), str):
        from ..concepts.sources.llm import redact_url

        out["sources"]["llm"]["base_url"] = redact_url(out["sources"]["llm"]["base_url"])
    return out


def to_toml(cfg: RunConfig) -> str:
    """Write a config back as TOML (what an output folder records); `load_config` reads it
    back to an equal RunConfig (except progress, batch_size and workers, how not what)."""
    parts = [_table("data", asdict(cfg.data), _defaults(DataConfig)),
             _table("backbone", {"spec": cfg.backbone}),
             _table("concepts", _recorded_concepts(cfg.concepts), _defaults(ConceptConfig))]
    if not cfg.methods:
        parts.append("[methods]\n")
    parts += [_table(f"methods.{_key(m)}", _method_params(m, p)) for m, p in cfg.methods.items()]
    parts += [_table("fewshot", asdict(cfg.fewshot)),
              _table("evaluation", {"nec": cfg.nec, "nec_protocol": cfg.nec_protocol}),
              _table("grounding", asdict(cfg.grounding))]
    if cfg.confounded is not None:
        from .confounded import confounded_toml

        parts.append(confounded_toml(cfg.confounded))
    if cfg.discovery != DiscoveryConfig():
        parts.append(_table("discovery", asdict(cfg.discovery)))
    parts.append(_table("report", asdict(cfg.report)))
    parts.append(_table("output", {"dir": cfg.output_dir, "cache_dir": cfg.cache_dir}))
    return "\n".join(parts)

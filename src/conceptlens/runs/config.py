"""The run config (TOML). Every field has a default, so a config says only what differs.

    [data]      dataset, train_per_class, val_per_class, test_per_class, seed, data_dir
    [backbone]  spec
    [concepts]  sources (list), file, filter (bool), per_class, selection, lam
    [methods]   one table per method name with its parameters, e.g. [methods.label_free]
    [fewshot]   shots (list; "all" allowed), seeds (list)
    [evaluation] nec (accuracy at this NEC for every sparse method; 0 = skip)
    [output]    dir, cache_dir
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomllib

from ..errors import ConfigError, closest

DEFAULT_METHODS = {"zero_shot": {}, "linear_probe": {}, "labo": {}, "label_free": {}}


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    train_per_class: int = 300
    val_per_class: int = 50
    test_per_class: int = 200  # 0 = all
    seed: int = 0
    data_dir: str | None = None


@dataclass
class ConceptConfig:
    sources: list[str] = field(default_factory=lambda: ["wordnet"])
    file: str | None = None
    filter: bool = True
    activation_quantile: float | None = 0.1  # CLIP's 0.25 cutoff does not transfer across backbones
    per_class: int = 20
    selection: str = "submodular"
    lam: float = 0.1


@dataclass
class FewShotConfig:
    shots: list = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: str = "offline"
    concepts: ConceptConfig = field(default_factory=ConceptConfig)
    methods: dict[str, dict] = field(default_factory=lambda: dict(DEFAULT_METHODS))
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    nec: int = 5
    output_dir: str = "runs/latest"
    cache_dir: str | None = None
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def _section(cls, raw: dict, where: str):
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"Unknown key {key!r} in [{where}].{closest(key, known)} "
                              f"Known: {', '.join(sorted(known))}.")
    return cls(**raw)


def load_config(path: str | Path) -> RunConfig:
    from ..methods import METHODS

    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"Cannot read config {path}: {e}.") from e
    top = {"data", "backbone", "concepts", "methods", "fewshot", "evaluation", "output"}
    for key in raw:
        if key not in top:
            raise ConfigError(f"Unknown section [{key}] in {path}.{closest(key, top)} "
                              f"Known: {', '.join(sorted(top))}.")
    methods = raw.get("methods", DEFAULT_METHODS)
    for name in methods:
        METHODS.get(name)  # an unknown method fails here, with the known ones listed
    out = raw.get("output", {})
    return RunConfig(
        data=_section(DataConfig, raw.get("data", {}), "data"),
        backbone=raw.get("backbone", {}).get("spec", "offline"),
        concepts=_section(ConceptConfig, raw.get("concepts", {}), "concepts"),
        methods={k: dict(v) for k, v in methods.items()},
        fewshot=_section(FewShotConfig, raw.get("fewshot", {}), "fewshot"),
        nec=int(raw.get("evaluation", {}).get("nec", 5)),
        output_dir=out.get("dir", "runs/latest"),
        cache_dir=out.get("cache_dir"),
    )


def to_toml(cfg: RunConfig) -> str:
    """Write a config back as TOML (what an output folder records)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    def table(name, d):
        rows = [f"{k} = {value(v)}" for k, v in d.items() if v is not None]
        return f"[{name}]\n" + "\n".join(rows) + "\n"

    parts = [table("data", asdict(cfg.data)), table("backbone", {"spec": cfg.backbone}),
             table("concepts", asdict(cfg.concepts))]
    parts += [table(f"methods.{m}", p) for m, p in cfg.methods.items()]
    parts += [table("fewshot", asdict(cfg.fewshot)), table("evaluation", {"nec": cfg.nec}),
              table("output", {"dir": cfg.output_dir, "cache_dir": cfg.cache_dir})]
    return "\n".join(parts)

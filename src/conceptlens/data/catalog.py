"""Named datasets in their published on-disk formats: `<name>:<location>[,<key>=<value>...]`.

    cifar10:/data/cifar-10-batches-bin          CIFAR-10, binary version (data/cifar.py)
    cifar100:/data/cifar-100-binary[,labels=coarse]
    cub:/data/CUB_200_2011                      CUB-200-2011 images, classes, official split (data/cub.py)
    imagenet:/data/imagenet                     train/<wnid>/, val/ (data/imagenet.py)
    imagefolder:/data/pets                      torchvision's ImageFolder layout (data/folder.py)
    hf:/data/saved_dataset[,image=img,label=label]   a Hugging Face dataset (data/hf.py): a
                                                save_to_disk folder, an imagefolder, or a hub name

The location may be left out (`cifar10`) when the run's [data] data_dir gives it. Options are
checked against each loader's `_parameter_constraints` (conceptlens.validation) before any file
is read. `load_dataset` (data/__init__.py) looks every spec up here first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, closest
from ..validation import validate_params
from . import cifar, cub, hf, imagenet  # noqa: F401 - each registers its kinds in kinds.KINDS
from .kinds import KINDS, DatasetKind

_OPTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def names() -> list[str]:
    return sorted(KINDS)


def get(name: str) -> DatasetKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"Unknown dataset kind {name!r}.{closest(name, KINDS)} Known: "
                          f"{', '.join(sorted(KINDS))}.") from None


@dataclass(frozen=True)
class NamedSpec:
    kind: DatasetKind
    location: str  # "" when the spec gives none
    options: dict


def parse_spec(spec: str) -> NamedSpec | None:
    """The named dataset `spec` refers to, or None when its head is no registered name (a folder,
    a manifest, a built-in). Unknown or invalid options are a ConfigError."""
    if not isinstance(spec, str):
        return None
    head, sep, rest = spec.partition(":")
    if head not in KINDS or (sep and len(head) == 1):  # "C:\\data" is a Windows path, not a kind
        return None
    if not sep and Path(spec).exists():  # a folder or file named like a kind ("cub") is that folder
        return None
    kind = KINDS[head]
    parts = rest.split(",") if rest else []
    options: dict = {}
    while parts and _OPTION.match(parts[-1].strip()):
        key, _, value = parts.pop().strip().partition("=")
        options[key] = _typed(value.strip())
    location = ",".join(parts).strip()
    unknown = [k for k in options if k not in kind.constraints]
    if unknown:
        known = ", ".join(kind.constraints) or "none"
        raise ConfigError(f"dataset {spec!r}: unknown option {unknown[0]!r} for {head}."
                          f"{closest(unknown[0], kind.constraints)} Known: {known}. Example: {kind.example}")
    validate_params(f"dataset {spec!r}", options, kind.constraints, {k: kind.example for k in options})
    return NamedSpec(kind, location, dict(reversed(options.items())))


def _typed(value: str):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def check_spec(spec: str) -> None:
    """Check a named spec's syntax and options without reading any file (for config checks)."""
    parse_spec(spec)


def load_named(named: NamedSpec, *, root=None, split: str | None = None, allow_non_ascii: bool = False,
               max_pixels: int | None = None):
    """Load a parsed named spec; `root` ([data] data_dir) is the location when the spec has none."""
    kind = named.kind
    location = named.location
    if location and root:
        raise ConfigError(f"dataset {kind.name}:{location} names its folder and [data] data_dir = {root!r} "
                          f"names another; give it once (e.g. dataset = \"{kind.name}\" with data_dir, or "
                          "remove data_dir).")
    location = location or (str(root) if root else "")
    if not location:
        raise ConfigError(f"dataset {kind.name!r} needs its location: {kind.example} (or set [data] "
                          f"data_dir). Expected layout: {kind.layout}")
    if split not in (None, "train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val', 'test' or None; got {split!r}.")
    where = Path(location).expanduser() if kind.location_is_path else location
    data = kind.load(where, allow_non_ascii=allow_non_ascii, max_pixels=max_pixels, **named.options)
    if split is None:
        return data
    return data.subset([i for i, s in enumerate(data.split or ()) if s == split])

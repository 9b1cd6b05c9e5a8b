"""Hugging Face datasets: a Dataset built in memory, a save_to_disk folder, an imagefolder. No hub."""

import io

import numpy as np
import pytest
from PIL import Image

from conceptlens.data import load_dataset
from conceptlens.errors import DataError

datasets = pytest.importorskip("datasets")
from conceptlens.data.hf import from_hf  # noqa: E402


def _png(value, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _dataset(values, labels, names=("cat", "dog")):
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=list(names)),
                                  "note": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"img": [{"bytes": _png(v), "path": None} for v in values], "label": labels,
         "note": ["x"] * len(values)}, features=features)


@pytest.fixture
def dsdict():
    return datasets.DatasetDict({"train": _dataset([10, 20, 30], [0, 1, 1]),
                                 "validation": _dataset([40], [0]), "test": _dataset([50, 60], [1, 0])})


def test_from_in_memory_dataset_dict(dsdict):
    data = from_hf(dsdict, name="pets")
    assert data.classes == ("cat", "dog")
    assert data.labels.tolist() == [0, 1, 1, 0, 1, 0]
    assert data.split == ("train",) * 3 + ("val",) + ("test",) * 2
    assert data.ids[3] == "pets/validation/0"
    assert data.images.decode(4, data.images.read(4))[0, 0].tolist() == [50, 50, 50]
    sub = data.subset([5, 0])
    assert sub.images.decode(0, sub.images.read(0))[0, 0].tolist() == [60, 60, 60]
    single = from_hf(dsdict["train"])
    assert single.split is None and len(single) == 3


def test_save_to_disk_folder_by_spec(dsdict, tmp_path):
    dsdict.save_to_disk(str(tmp_path / "saved"))
    data = load_dataset(f"hf:{tmp_path / 'saved'}")
    assert data.name == "saved" and data.labels.tolist() == [0, 1, 1, 0, 1, 0]
    assert len(load_dataset(f"hf:{tmp_path / 'saved'},image=img,label=label", split="test")) == 2
    dsdict["train"].save_to_disk(str(tmp_path / "one"))
    assert len(load_dataset(f"hf:{tmp_path / 'one'}")) == 3


def test_imagefolder(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for c in ("cat", "dog"):
            for k in range(n):
                p = tmp_path / "folder" / split / c / f"{k}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(_png(k))
    data = load_dataset(f"hf:{tmp_path / 'folder'}")
    assert data.classes == ("cat", "dog")
    assert sorted(data.split) == ["test"] * 2 + ["train"] * 4
    assert np.bincount(data.labels).tolist() == [3, 3]


def test_columns_must_be_found(dsdict):
    plain = dsdict["train"].cast_column("label", datasets.Value("int64"))
    with pytest.raises(DataError, match="0 ClassLabel column.*ClassLabel\\(names="):
        from_hf(plain)
    with pytest.raises(DataError, match="has no column 'picture'"):
        from_hf(dsdict, image="picture")
    with pytest.raises(DataError, match="column 'note' is Value, not Image"):
        from_hf(dsdict, image="note")


def test_unknown_split_and_missing_label(dsdict):
    with pytest.raises(DataError, match=r"split\(s\) \['extra'\]"):
        from_hf(datasets.DatasetDict({"train": dsdict["train"], "extra": dsdict["test"]}))
    with pytest.raises(DataError, match=r"1 row\(s\) have no label \(-1\)"):
        from_hf(_dataset([1, 2], [0, -1]))


def test_only_documented_formats_are_decoded():
    features = datasets.Features({"img": datasets.Image(decode=False),
                                  "label": datasets.ClassLabel(names=["a", "b"])})
    eps = {"bytes": b"%!PS-Adobe-3.0 EPSF-3.0\n", "path": None}
    ds = datasets.Dataset.from_dict({"img": [eps] * 2, "label": [0, 1]}, features=features)
    data = from_hf(ds)
    with pytest.raises(DataError, match="row 0"):
        data.images.decode(0, data.images.read(0))

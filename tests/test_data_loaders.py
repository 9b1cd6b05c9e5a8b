"""Image folders, manifests and their bad inputs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import write_png

from conceptlens.data import load_dataset, load_image_folder, load_manifest, normalize_class_names
from conceptlens.errors import DataError


def test_folder_reads_classes_in_sorted_order(image_folder):
    data = load_image_folder(image_folder)
    assert data.classes == ("cat", "dog", "red fox")  # underscore normalised
    assert len(data) == 12
    assert data.class_counts() == {"cat": 4, "dog": 4, "red fox": 4}
    assert data.ids[0] == "cat/0.png"
    img = data.images.decode(0, data.images.read(0))
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (0, 0, 200)


def test_folder_empty_class_is_an_error(image_folder):
    (image_folder / "empty").mkdir()
    with pytest.raises(DataError, match="no images.*empty"):
        load_image_folder(image_folder)


def test_folder_duplicate_class_after_normalisation(image_folder):
    write_png(image_folder / "Red Fox" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="'Red Fox' and 'red_fox'|'red_fox' and 'Red Fox'"):
        load_image_folder(image_folder)


def test_folder_non_ascii_class_is_an_error_unless_allowed(image_folder):
    write_png(image_folder / "café" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="non-ASCII.*'é'"):
        load_image_folder(image_folder)
    assert "café" in load_image_folder(image_folder, allow_non_ascii=True).classes


def test_folder_reports_ignored_files(image_folder, caplog):
    (image_folder / "cat" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="conceptlens"):
        data = load_image_folder(image_folder)
    assert len(data) == 12
    assert "notes.txt" in caplog.text


def test_corrupt_image_error_names_the_path(image_folder):
    bad = image_folder / "dog" / "9.png"
    bad.write_bytes(b"\x89PNG not really")
    data = load_image_folder(image_folder)
    i = data.ids.index("dog/9.png")
    with pytest.raises(DataError, match=r"Corrupt or unreadable image .*9\.png"):
        data.images.decode(i, data.images.read(i))


def test_class_name_normalisation():
    assert normalize_class_names(["  ankle_boot ", "T-shirt/top"]) == ["ankle boot", "T-shirt/top"]
    with pytest.raises(DataError, match="empty"):
        normalize_class_names(["cat", " _ "])
    with pytest.raises(DataError, match="same class"):
        normalize_class_names(["Cat", "cat"])


def test_manifest_csv_and_jsonl_agree(image_folder, tmp_path):
    rows = [("cat/0.png", "cat", "train"), ("dog/1.png", "dog", "test"),
            ("red_fox/2.png", "red fox", "val")]
    csv_path = image_folder / "m.csv"
    csv_path.write_text("path,label,split\n" + "".join(f"{p},{l},{s}\n" for p, l, s in rows))
    jsonl = image_folder / "m.jsonl"
    jsonl.write_text("".join(json.dumps({"path": p, "label": l, "split": s}) + "\n"
                             for p, l, s in rows))
    a, b = load_manifest(csv_path), load_manifest(jsonl)
    assert a.classes == b.classes == ("cat", "dog", "red fox")
    assert a.labels.tolist() == b.labels.tolist() == [0, 1, 2]
    assert a.split == b.split == ("train", "test", "val")
    assert load_dataset(str(csv_path)).classes == a.classes


def test_manifest_missing_files_are_listed(image_folder):
    m = image_folder / "m.csv"
    m.write_text("path,label\ncat/0.png,cat\ncat/nope.png,cat\ndog/gone.png,dog\n")
    with pytest.raises(DataError, match=r"2 file\(s\) that do not exist.*line 3.*nope\.png.*line 4"):
        load_manifest(m)


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,label\ncat/0.png,cat\n", r"lacks column\(s\) \['path'\]"),
        ("path,label\ncat/0.png,\n", "line 2: 'path' and 'label' must be non-empty"),
        ("path,label,split\ncat/0.png,cat,holdout\n", "split 'holdout' is not one of"),
        ("path,label,split\ncat/0.png,cat,train\ncat/1.png,cat,\n", "every row or for none"),
        ("path,label\n", "has no rows"),
    ],
)
def test_manifest_bad_rows(image_folder, content, message):
    m = image_folder / "m.csv"
    m.write_text(content)
    with pytest.raises(DataError, match=message):
        load_manifest(m)


def test_manifest_bad_json_line(image_folder):
    m = image_folder / "m.jsonl"
    m.write_text('{"path": "cat/0.png", "label": "cat"}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_manifest(m)


def test_unknown_dataset_spec(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "missing"))

"""Image folders, manifests and their bad inputs."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from conceptlens.data import load_dataset, load_image_folder, load_manifest, normalize_class_names
from conceptlens.errors import ConfigError, DataError
from conceptlens.testing import write_png


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


def test_unicode_manifest_with_bom(image_folder):
    # Excel's "CSV UTF-8" starts the file with a byte-order mark; it must not hide the header
    m = image_folder / "m.csv"
    m.write_bytes("path,label\ncat/0.png,cat\ndog/0.png,dog\n".encode("utf-8-sig"))
    assert load_manifest(m).classes == ("cat", "dog")
    j = image_folder / "m.jsonl"
    j.write_bytes(('{"path": "cat/0.png", "label": "cat"}\n{"path": "dog/0.png", "label": "dog"}\n')
                  .encode("utf-8-sig"))
    assert load_manifest(j).classes == ("cat", "dog")


def test_manifest_that_is_not_utf8(image_folder):
    m = image_folder / "m.csv"
    m.write_bytes("path,label\ncat/0.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe9.*Save it as UTF-8"):
        load_manifest(m)


def test_jsonl_integer_labels_including_zero(image_folder):
    j = image_folder / "m.jsonl"
    j.write_text('{"path": "cat/0.png", "label": 0}\n{"path": "dog/0.png", "label": 1}\n'
                 '{"path": "cat/1.png", "label": "0"}\n')
    data = load_manifest(j)
    assert data.classes == ("0", "1") and data.labels.tolist() == [0, 1, 0]
    j.write_text('{"path": "cat/0.png", "label": 0.5}\n')
    with pytest.raises(DataError, match=r"line 1: 'label' must be a string or an integer; got 0\.5"):
        load_manifest(j)


@pytest.mark.parametrize(
    "rows, message",
    [
        # the same row twice
        ("cat/0.png,cat\ndog/0.png,dog\ncat/0.png,cat\n",
         r"1 image\(s\) more than once; .*cat/0\.png on lines 2, 4\. Keep one row per image"),
        # one file with two labels
        ("cat/0.png,cat\ndog/0.png,dog\ncat/0.png,dog\n",
         r"\(1 with different labels\).*cat/0\.png on lines 2, 4 with labels 'cat', 'dog'"),
        # the same file by another path
        ("cat/0.png,cat\ndog/0.png,dog\ndog/../cat/0.png,cat\n",
         r"on lines 2, 4 \(as .*cat/0\.png, .*dog/\.\./cat/0\.png\)"),
    ],
)
def test_manifest_repeated_image_is_an_error(image_folder, rows, message):
    m = image_folder / "m.csv"
    m.write_text("path,label\n" + rows)
    with pytest.raises(DataError, match=message):
        load_manifest(m)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_manifest_same_file_through_a_symlink(image_folder):
    os.symlink(image_folder / "cat" / "0.png", image_folder / "dog" / "alias.png")
    m = image_folder / "m.jsonl"
    m.write_text('{"path": "cat/0.png", "label": "cat"}\n{"path": "dog/1.png", "label": "dog"}\n'
                 '{"path": "dog/alias.png", "label": "dog"}\n')
    with pytest.raises(DataError, match=r"on lines 1, 3 with labels 'cat', 'dog'"):
        load_manifest(m)


def test_one_class_is_an_error_at_load_time(image_folder, tmp_path):
    m = image_folder / "m.csv"
    m.write_text("path,label\ncat/0.png,cat\ncat/1.png,cat\n")
    with pytest.raises(DataError, match=r"needs at least 2 classes; found 1: 'cat'"):
        load_manifest(m)
    only = tmp_path / "only"
    write_png(only / "x" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"'only' needs at least 2 classes; found 1: 'x'"):
        load_image_folder(only)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
@pytest.mark.parametrize("target", ["root", "ancestor"])
def test_folder_link_to_the_dataset_itself_is_an_error(image_folder, target):
    # a "class" that links back to the root would list every image again under a new class
    os.symlink(image_folder if target == "root" else image_folder.parent, image_folder / "loop")
    with pytest.raises(DataError, match=r"/loop resolves to .*contains the dataset folder itself"):
        load_image_folder(image_folder)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_folder_symlink_loop_inside_a_class_is_an_error(image_folder):
    os.symlink(image_folder / "cat", image_folder / "cat" / "again")
    with pytest.raises(DataError, match=r"cat/again resolves to .*symlink loop"):
        load_image_folder(image_folder)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_folder_same_file_by_two_paths_is_an_error(image_folder):
    os.symlink(image_folder / "cat" / "0.png", image_folder / "dog" / "alias.png")
    with pytest.raises(DataError, match=r"1 image file\(s\) .* two paths.*cat/0\.png = dog/alias\.png"):
        load_image_folder(image_folder)
    (image_folder / "dog" / "alias.png").unlink()
    os.symlink(image_folder / "cat", image_folder / "kitty")  # a class linked to a sibling class
    with pytest.raises(DataError, match=r"4 image file\(s\).*cat/0\.png = kitty/0\.png"):
        load_image_folder(image_folder)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_folder_links_to_folders_outside_are_followed(image_folder, tmp_path):
    for i in range(2):
        write_png(tmp_path / "elsewhere" / f"{i}.png", (5, 5, i))
    write_png(tmp_path / "more" / "9.png", (6, 6, 6))
    os.symlink(tmp_path / "elsewhere", image_folder / "bird")
    os.symlink(tmp_path / "more", image_folder / "cat" / "more")
    data = load_image_folder(image_folder)
    assert data.class_counts() == {"bird": 2, "cat": 5, "dog": 4, "red fox": 4}
    assert "cat/more/9.png" in data.ids and "bird/1.png" in data.ids


def test_load_dataset_options_for_the_wrong_kind_of_dataset(image_folder):
    with pytest.raises(ConfigError, match="root only applies to the built-in fashion-mnist"):
        load_dataset(str(image_folder), root="/somewhere")
    with pytest.raises(ConfigError, match="max_pixels must be a positive integer"):
        load_dataset(str(image_folder), max_pixels=1.5)
    assert "café" in load_dataset(str(_with_cafe(image_folder)), allow_non_ascii=True).classes


def _with_cafe(root):
    write_png(root / "café" / "0.png", (1, 2, 3))
    return root


def test_builtin_digits_are_scikit_learns_with_a_border():
    from sklearn.datasets import load_digits as sk_digits

    from conceptlens.data import load_dataset
    from conceptlens.errors import ConfigError

    data = load_dataset("digits")
    raw = sk_digits()
    assert len(data) == 1797 and data.classes[0] == "zero" and data.classes[9] == "nine"
    np.testing.assert_array_equal(data.labels, raw.target)
    img = data.images.decode(5, data.images.read(5))
    assert img.shape == (10, 10, 3) and img.dtype == np.uint8
    assert not img[0].any() and not img[:, 0].any()  # the one-pixel black border
    np.testing.assert_array_equal(img[1:9, 1:9, 0], np.rint(raw.images[5] * 255 / 16).astype(np.uint8))
    assert data.split is None  # no official split: runs divide it by [data] fractions
    with pytest.raises(ConfigError, match="no official split"):
        load_dataset("digits", split="train")


@pytest.mark.parametrize("content", ["path,label,label\ncat/0.png,cat,dog\n",
                                     "path,path,label\ncat/0.png,dog/0.png,cat\n",
                                     "path, label ,label\ncat/0.png,cat,dog\n"])
def test_manifest_with_a_repeated_column_is_an_error(image_folder, content):
    # csv.DictReader keeps the last of two equal columns: the labels silently came from one of them
    m = image_folder / "m.csv"
    m.write_text(content)
    with pytest.raises(DataError, match=r"has column\(s\) \['(label|path)'\] more than once in its header"):
        load_manifest(m)


def test_jsonl_row_with_a_repeated_key_is_an_error(image_folder):
    m = image_folder / "m.jsonl"
    m.write_text('{"path": "cat/0.png", "label": "cat"}\n{"path": "dog/0.png", "label": "dog", "label": "cat"}\n')
    with pytest.raises(DataError, match=r"line 2 gives key 'label' twice"):
        load_manifest(m)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_folder_dangling_class_link_is_an_error(image_folder, tmp_path):
    # a class folder whose link is broken vanished: the dataset reported 3 of 4 classes
    os.symlink(tmp_path / "gone", image_folder / "bird")
    with pytest.raises(DataError, match=r"/bird is a symbolic link to .*gone, which does not exist"):
        load_image_folder(image_folder)
    (image_folder / "bird").unlink()
    os.symlink(tmp_path / "gone.png", image_folder / "cat" / "9.png")  # and an image link
    with pytest.raises(DataError, match=r"cat/9\.png is a symbolic link to .*gone\.png, which does not exist"):
        load_image_folder(image_folder)


def test_folder_files_at_the_root_are_reported(image_folder, caplog):
    write_png(image_folder / "stray.png", (1, 2, 3))
    (image_folder / "README.txt").write_text("about")
    with caplog.at_level(logging.WARNING, logger="conceptlens"):
        data = load_image_folder(image_folder)
    assert len(data) == 12
    assert "Ignored 2 file(s) at the top of" in caplog.text and "README.txt, stray.png" in caplog.text

"""Concept annotations: the type, its CSV form and the CUB / AwA2 / CelebA readers."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.annotations import (
    ConceptAnnotations,
    load_awa2,
    load_celeba,
    load_class_csv,
    load_cub,
    load_image_csv,
)
from conceptlens.errors import ConfigError, DataError

NAN = np.nan


def class_ann() -> ConceptAnnotations:
    return ConceptAnnotations(
        "class",
        ("striped", "has wings", "furry"),
        np.array([[1, 0, 1], [0, 1, NAN], [0, 0, 0]]),
        classes=("tiger", "sparrow", "fish"),
        provenance="by hand",
    )


def assert_same(a: np.ndarray, b) -> None:
    np.testing.assert_array_equal(a, np.asarray(b, dtype=np.float32))  # NaN == NaN here


# --- the type ---


def test_values_are_float32_read_only_copies():
    raw = np.array([[1.0, 0.0]])
    ann = ConceptAnnotations("class", ("a", "b"), raw, classes=("x",))
    assert ann.values.dtype == np.float32 and ann.rows == ("x",)
    raw[0, 0] = 0.0
    assert ann.values[0, 0] == 1.0
    with pytest.raises(ValueError):
        ann.values[0, 0] = 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(values=np.zeros((2, 2))), "shape"),
        (dict(values=np.array([[2.0, 0.0]])), "1, 0 or NaN"),
        (dict(values=np.array([[0.5, 0.0]])), "1, 0 or NaN"),
        (dict(concepts=("Red", " red ")), "duplicate concept texts.*Red"),
        (dict(classes=("x", "x"), values=np.zeros((2, 2))), "duplicate classes.*'x'"),
        (dict(items=("img.png",)), "not `items`"),
    ],
)
def test_invalid_annotations(kwargs, match):
    args = dict(level="class", concepts=("a", "b"), values=np.zeros((1, 2)), classes=("x",))
    args.update(kwargs)
    with pytest.raises(DataError, match=match):
        ConceptAnnotations(**args)


def test_bad_level_and_duplicate_items():
    with pytest.raises(ConfigError, match="level"):
        ConceptAnnotations("dataset", ("a",), np.zeros((1, 1)), classes=("x",))
    with pytest.raises(DataError, match="duplicate items.*'a.png'"):
        ConceptAnnotations("image", ("c",), np.zeros((2, 1)), items=("a.png", "a.png"))


def test_for_classes_reorders_and_subsets():
    sub = class_ann().for_classes(["fish", "tiger"])
    assert sub.classes == ("fish", "tiger") and sub.concepts == ("striped", "has wings", "furry")
    assert_same(sub.values, [[0, 0, 0], [1, 0, 1]])
    assert sub.provenance == "by hand"


def test_for_classes_unknown_names_listed_with_known():
    with pytest.raises(DataError) as info:
        class_ann().for_classes(["tiger", "whale", "eagle"])
    msg = str(info.value)
    assert "'whale'" in msg and "'eagle'" in msg and "'sparrow'" in msg and "'fish'" in msg


def test_per_image_expands_class_rows():
    out = class_ann().per_image(np.array([2, 0, 0, 1]))
    assert out.shape == (4, 3) and out.dtype == np.float32
    assert_same(out, [[0, 0, 0], [1, 0, 1], [1, 0, 1], [0, 1, NAN]])
    out[0, 0] = 1.0  # a fresh array: writing to it must not touch the annotations
    assert class_ann().values[2, 0] == 0.0
    assert class_ann().per_image([]).shape == (0, 3)


def test_per_image_bad_labels():
    with pytest.raises(DataError, match=r"\[3\].*outside 0\.\.2"):
        class_ann().per_image([0, 3])
    with pytest.raises(DataError, match="1-D integer"):
        class_ann().per_image(np.array([0.0, 1.0]))
    image = ConceptAnnotations("image", ("a",), np.ones((1, 1)), items=("p.png",))
    with pytest.raises(DataError, match="class-level"):
        image.per_image([0])
    with pytest.raises(DataError, match="class-level"):
        image.for_classes(["x"])


# --- CSV ---


def test_class_csv_round_trip(tmp_path):
    ann = class_ann()
    path = ann.to_csv(tmp_path / "ann.csv")
    assert path.read_text().splitlines() == [
        "attribute,tiger,sparrow,fish",
        "striped,1,0,0",
        "has wings,0,1,0",
        "furry,1,,0",
    ]
    back = load_class_csv(path)
    assert back.level == "class" and back.classes == ann.classes and back.concepts == ann.concepts
    assert_same(back.values, ann.values)


def test_image_csv_round_trip(tmp_path):
    ann = ConceptAnnotations(
        "image", ("red", "round, shiny"), np.array([[1, NAN], [0, 1]]), items=("a/1.png", "b/2.png")
    )
    path = ann.to_csv(tmp_path / "img.csv")
    assert path.read_text().splitlines() == ['path,red,"round, shiny"', "a/1.png,1,", "b/2.png,0,1"]
    back = load_image_csv(path)
    assert back.items == ann.items and back.concepts == ann.concepts
    assert_same(back.values, ann.values)


def test_class_csv_by_hand_with_bom_spaces_and_blank_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffattribute, cat ,dog\n\nstriped, 1 ,\nfurry,1,1\n".encode())
    ann = load_class_csv(path)
    assert ann.classes == ("cat", "dog") and ann.concepts == ("striped", "furry")
    assert_same(ann.values, [[1, 1], [NAN, 1]])


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("attribute,cat,dog\nstriped,1,0\nfurry,2,0\n", 3, r"\['2'\]"),
        ("attribute,cat,dog\nstriped,yes,0\n", 2, "'yes'"),
        ("attribute,cat,dog\nstriped,1,0\nfurry,1\n", 3, "2 cells, expected 3"),
        ("attribute,cat,dog\nstriped,1,0,1\n", 2, "4 cells"),
        ("attribute,cat,dog\nstriped,1,0\nfurry,1,1\nStriped ,0,0\n", 4, "duplicate row.*line 2"),
        ("attribute\nstriped\n", 1, "empty name"),
        ("attribute,cat,,dog\nstriped,1,0,1\n", 1, "empty name"),
        ("attribute,cat,cat\nstriped,1,0\n", 1, "duplicate header"),
        ("path,cat,dog\nx,1,0\n", 1, "must start with 'attribute'"),
        ("", 1, "empty file"),
        ("\n\n", 1, "empty file"),
        ("attribute,cat,dog\n", 1, "no rows"),
        ("attribute,cat,dog\n,1,0\n", 2, "empty attribute"),
    ],
)
def test_bad_class_csv_names_file_and_line(tmp_path, text, line, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_class_csv(path)
    assert f"{path}, line {line}:" in str(info.value)


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("path,red,round\na.png,1,0\nb.png,0,x\n", 3, "'x'"),
        ("path,red,round\na.png,1,0\nb.png,0\n", 3, "2 cells"),
        ("path,red,Red \na.png,1,0\n", 1, "duplicate header"),
        ("path,red,round\na.png,1,0\na.png,1,1\n", 3, "duplicate row 'a.png'"),
        ("path,red,round\na.png,-1,0\n", 2, "'-1'"),
        ("attribute,red\na.png,1\n", 1, "must start with 'path'"),
    ],
)
def test_bad_image_csv_names_file_and_line(tmp_path, text, line, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_image_csv(path)
    assert f"{path}, line {line}:" in str(info.value)


def test_missing_csv_is_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_class_csv(tmp_path / "nope.csv")


# --- CUB-200-2011 ---


def write_cub(root, labels: str):
    (root / "attributes").mkdir(parents=True)
    (root / "attributes.txt").write_text(
        "1 has_bill_shape::curved_(up_or_down)\n2 has_wing_color::blue\n3 has_size::small_(5_-_9_in)\n"
    )
    (root / "images.txt").write_text(
        "1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg\n"
        "2 002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg\n"
    )
    (root / "attributes" / "image_attribute_labels.txt").write_text(labels)


CUB_LABELS = (
    "1 1 0 3 27.7080\n"  # probably absent -> 0
    "1 2 1 4 27.7080\n"  # definitely present -> 1
    "1 3 1 2 27.7080\n"  # guessing -> NaN at min_certainty 3
    "2 1 1 3 0 9.2510\n"  # the real file's 6-field form: still image 2, attr 1, present, probably
    "2 2 0 1 9.2510\n"  # not visible -> NaN always
    "2 3 0 4 9.2510\n"  # definitely absent -> 0
)


def test_load_cub(tmp_path):
    write_cub(tmp_path, CUB_LABELS)
    ann = load_cub(tmp_path)
    assert ann.level == "image"
    assert ann.concepts == ("bill shape: curved (up or down)", "wing color: blue", "size: small (5 - 9 in)")
    assert ann.items == (
        "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
    )
    assert_same(ann.values, [[0, 1, NAN], [1, NAN, 0]])
    # accept guesses: only 'not visible' stays unknown
    assert_same(load_cub(tmp_path, min_certainty=2).values, [[0, 1, 1], [1, NAN, 0]])
    assert_same(load_cub(tmp_path, min_certainty=1).values, [[0, 1, 1], [1, NAN, 0]])
    assert_same(load_cub(tmp_path, min_certainty=4).values, [[NAN, 1, NAN], [NAN, NAN, 0]])


def test_load_cub_attributes_txt_beside_the_folder(tmp_path):
    root = tmp_path / "CUB_200_2011"
    write_cub(root, CUB_LABELS)
    (root / "attributes.txt").rename(tmp_path / "attributes.txt")
    assert load_cub(root).concepts[1] == "wing color: blue"


@pytest.mark.parametrize(
    "bad, match",
    [
        ("1 1 0 3\n", "4 fields"),
        ("1 1 0 3 2.0 1 7\n", "7 fields"),
        ("3 1 0 3 2.0\n", "image id 3"),
        ("1 9 0 3 2.0\n", "attribute id 9"),
        ("1 1 0 5 2.0\n", "certainty 5"),
        ("1 1 x 3 2.0\n", "non-integer"),
    ],
)
def test_load_cub_bad_lines(tmp_path, bad, match):
    write_cub(tmp_path, CUB_LABELS + bad)
    with pytest.raises(DataError, match=match) as info:
        load_cub(tmp_path)
    assert "image_attribute_labels.txt, line 7:" in str(info.value)


def test_load_cub_missing_file_and_bad_certainty(tmp_path):
    with pytest.raises(DataError, match="attributes.txt not found"):
        load_cub(tmp_path)
    with pytest.raises(ConfigError, match="min_certainty"):
        load_cub(tmp_path, min_certainty=5)


# --- AwA2 ---


def write_awa2(root, matrix: str):
    root.mkdir(parents=True, exist_ok=True)
    (root / "predicates.txt").write_text("1\tblack\n2\twhite\n3\tflippers\n")
    (root / "classes.txt").write_text("1\tantelope\n2\tgrizzly+bear\n")
    (root / "predicate-matrix-binary.txt").write_text(matrix)


def test_load_awa2(tmp_path):
    write_awa2(tmp_path, "0 1 0\n1 0 0\n")
    ann = load_awa2(tmp_path)
    assert ann.level == "class"
    assert ann.concepts == ("black", "white", "flippers") and ann.classes == ("antelope", "grizzly+bear")
    assert_same(ann.values, [[0, 1, 0], [1, 0, 0]])
    assert_same(ann.for_classes(["grizzly+bear"]).per_image([0, 0]), [[1, 0, 0], [1, 0, 0]])


@pytest.mark.parametrize(
    "matrix, match",
    [
        ("0 1 0\n1 0\n", "line 2: 2 values, expected 3"),
        ("0 1 0\n1 -1 0\n", r"line 2: values must be 0 or 1; found \['-1'\]"),
        ("0 1 0\n", "1 rows, expected one per class"),
    ],
)
def test_load_awa2_bad_matrix(tmp_path, matrix, match):
    write_awa2(tmp_path, matrix)
    with pytest.raises(DataError, match=match) as info:
        load_awa2(tmp_path)
    assert "predicate-matrix-binary.txt" in str(info.value)


# --- CelebA ---

CELEBA = (
    "3\n"
    "5_o_Clock_Shadow Arched_Eyebrows Wearing_Hat \n"
    "000001.jpg -1  1 -1\n"
    "000002.jpg  1 -1 -1\n"
    "000003.jpg -1 -1  1\n"
)


def test_load_celeba(tmp_path):
    (tmp_path / "list_attr_celeba.txt").write_text(CELEBA)
    ann = load_celeba(tmp_path)  # the folder works as well as the file
    assert ann.level == "image" and ann.items == ("000001.jpg", "000002.jpg", "000003.jpg")
    assert ann.concepts == ("5 o clock shadow", "arched eyebrows", "wearing hat")
    assert_same(ann.values, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize(
    "text, match",
    [
        (CELEBA + "000004.jpg 1 1\n", "line 6: 3 fields"),
        (CELEBA.replace("000002.jpg  1", "000002.jpg  0"), r"line 4: values must be 1 or -1; found \['0'\]"),
        (CELEBA.replace("3\n", "4\n", 1), "says 4 images on line 1 but lists 3"),
        ("Arched_Eyebrows\n", "line 1: expected the image count"),
        ("3\n", "line 2: expected the attribute names"),
    ],
)
def test_load_celeba_bad_file(tmp_path, text, match):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_celeba(path)
    assert str(path) in str(info.value)

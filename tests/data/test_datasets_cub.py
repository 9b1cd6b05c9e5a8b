"""CUB-200-2011 on a tiny copy of its real layout; its attributes through annotations.load_cub."""

import numpy as np
import pytest
from PIL import Image

from conceptlens.annotations import load_cub as load_cub_attributes
from conceptlens.data import load_dataset
from conceptlens.data.cub import cub_root, load_cub
from conceptlens.errors import DataError
from conceptlens.grounding.evaluate import class_level

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# (image id, class id, is_training_image)
IMAGES = [(1, 1, 1), (2, 1, 0), (3, 2, 1), (4, 2, 0), (5, 3, 1), (6, 3, 0)]


def _path(image_id, class_id):
    name = CLASSES[class_id - 1]
    return f"{name}/{name.split('.', 1)[1]}_{image_id:04d}_{image_id}.jpg"


@pytest.fixture
def cub(tmp_path):
    root = tmp_path / "CUB_200_2011"
    (root / "attributes").mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    (root / "images.txt").write_text("".join(f"{i} {_path(i, c)}\n" for i, c, _ in IMAGES))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c, _ in IMAGES))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in IMAGES))
    for i, c, _ in IMAGES:
        p = root / "images" / _path(i, c)
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 5, 3), 40 * i, np.uint8)).save(p)
    # the archive puts attributes.txt beside CUB_200_2011/
    (tmp_path / "attributes.txt").write_text("1 has_bill_shape::hooked\n2 has_wing_color::white\n")
    (root / "attributes" / "image_attribute_labels.txt").write_text("".join(
        f"{i} {a} {int(c == 1 and a == 1)} 4 1.0\n" for i, c, _ in IMAGES for a in (1, 2)))
    return root


def test_images_labels_classes_split(cub):
    data = load_dataset(f"cub:{cub}")
    assert data.classes == ("Black footed Albatross", "Laysan Albatross", "Sooty Albatross")
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.split == ("train", "test") * 3
    assert data.ids[2] == "002.Laysan_Albatross/Laysan_Albatross_0003_3.jpg"
    assert data.images.decode(4, data.images.read(4))[0, 0].tolist() == [200, 200, 200]
    assert len(load_dataset(f"cub:{cub.parent}")) == 6  # the folder holding CUB_200_2011/
    assert len(load_dataset("cub", root=str(cub), split="train")) == 3


def test_attributes_match_the_images_by_id(cub):
    data = load_cub(cub)
    assert cub_root(data) == cub
    ann = load_cub_attributes(cub_root(data))
    assert set(ann.items) == set(data.ids)
    per_class = class_level(ann, data.classes, data.ids, data.labels)
    hooked = per_class.concepts.index("bill shape: hooked")
    assert per_class.values[:, hooked].tolist() == [1.0, 0.0, 0.0]


def test_missing_file(cub):
    (cub / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match=r"lacks train_test_split\.txt.*CUB_200_2011/ folder"):
        load_cub(cub)


def test_image_id_not_in_split_file(cub):
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in IMAGES[:-1]))
    with pytest.raises(DataError, match=r"train_test_split\.txt gives no entry for image id\(s\) \[6\]"):
        load_cub(cub)
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in IMAGES) + "7 1\n")
    with pytest.raises(DataError, match=r"names image id\(s\) \[7\] that images\.txt does not list"):
        load_cub(cub)


def test_bad_lines(cub):
    split = "".join(f"{i} {t}\n" for i, _, t in IMAGES)
    (cub / "train_test_split.txt").write_text(split.replace("6 0", "6 2"))
    with pytest.raises(DataError, match="image 6 has '2'; expected 1 \\(train\\) or 0 \\(test\\)"):
        load_cub(cub)
    (cub / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in IMAGES))
    labels = "".join(f"{i} {c}\n" for i, c, _ in IMAGES)
    (cub / "image_class_labels.txt").write_text(labels.replace("6 3", "6 4"))
    with pytest.raises(DataError, match="image 6 has class '4', not a class id"):
        load_cub(cub)
    (cub / "images.txt").write_text("1\n")
    with pytest.raises(DataError, match=r"images\.txt line 1: expected '<id> <value>'"):
        load_cub(cub)


def test_missing_image(cub):
    (cub / "images" / _path(3, 2)).unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) listed in .*images\.txt are missing: "
                                        r".*Laysan_Albatross_0003"):
        load_cub(cub)


def test_auto_annotations_for_a_cub_dataset(cub):
    from conceptlens.grounding.evaluate import resolve_annotations

    data = load_dataset(f"cub:{cub}")
    ann = resolve_annotations("auto", f"cub:{cub}", data)
    assert ann.level == "image" and set(ann.items) == set(data.ids)

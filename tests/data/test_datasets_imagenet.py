"""ImageNet-style folders with a synset map, and torchvision's ImageFolder, on tiny real layouts."""

import numpy as np
import pytest
from PIL import Image

from conceptlens.data import load_dataset
from conceptlens.data.imagenet import class_names, load_imagefolder, load_imagenet, read_synsets
from conceptlens.errors import DataError

MAP = ("n01440764 tench, Tinca tinca\n"
       "n02012849 crane\n"
       "n03126707 crane\n"
       "n09999999 goldfish, Carassius auratus\n")
WNIDS = ["n01440764", "n02012849", "n03126707"]


def _jpeg(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, format="JPEG")


@pytest.fixture
def imagenet(tmp_path):
    root = tmp_path / "imagenet"
    for c, w in enumerate(WNIDS):
        for k in range(2):
            _jpeg(root / "train" / w / f"{w}_{k}.JPEG", 10 * c + k)
        _jpeg(root / "val" / w / f"ILSVRC2012_val_0000000{c + 1}.JPEG", 100 + c)
    (root / "LOC_synset_mapping.txt").write_text(MAP)
    return root


def test_class_folders_val(imagenet):
    data = load_dataset(f"imagenet:{imagenet}")
    # the two cranes share a first name: their full names then their wnids tell them apart
    assert data.classes == ("tench", "crane (n02012849)", "crane (n03126707)")
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2, 0, 1, 2]
    assert data.split == ("train",) * 6 + ("test",) * 3
    assert data.ids[0] == "train/n01440764/n01440764_0.JPEG"
    assert data.ids[-1] == "val/n03126707/ILSVRC2012_val_00000003.JPEG"


def test_flat_val_with_kaggle_solution_and_words_file(tmp_path):
    top = tmp_path / "kaggle"
    root = top / "ILSVRC" / "Data" / "CLS-LOC"
    for c, w in enumerate(WNIDS[:2]):
        _jpeg(root / "train" / w / f"{w}_0.JPEG", c)
    _jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG", 1)
    _jpeg(root / "val" / "ILSVRC2012_val_00000002.JPEG", 2)
    (top / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000002,n01440764 10 20 30 40 n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000001,n02012849 5 6 7 8\n")
    (top / "LOC_synset_mapping.txt").write_text(MAP)
    data = load_imagenet(top)
    assert data.classes == ("tench", "crane")  # one crane here: no clash
    assert data.labels.tolist() == [0, 1, 1, 0]
    assert data.split == ("train", "train", "test", "test")
    assert data.name == "imagenet"


def test_words_txt_tab_separated(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("n01440764\ttench, Tinca tinca\nn02012849\tcrane\n")
    assert read_synsets(path) == {"n01440764": ["tench", "Tinca tinca"], "n02012849": ["crane"]}
    assert class_names(["n01440764"], read_synsets(path)) == ["tench"]


def test_unknown_wnid(imagenet):
    _jpeg(imagenet / "train" / "n07777777" / "x.JPEG", 5)
    with pytest.raises(DataError, match=r"wnid\(s\) \['n07777777'\] are not in .*LOC_synset_mapping\.txt"):
        load_imagenet(imagenet)


def test_val_class_without_training_images(imagenet):
    (imagenet / "LOC_synset_mapping.txt").write_text(MAP)
    _jpeg(imagenet / "val" / "n09999999" / "v.JPEG", 5)
    with pytest.raises(DataError, match=r"n09999999.*have validation images but no folder in"):
        load_imagenet(imagenet)


def test_flat_val_without_solution_or_row(tmp_path):
    root = tmp_path / "imagenet"
    for w in WNIDS[:2]:
        _jpeg(root / "train" / w / "a.JPEG", 1)
    _jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG", 1)
    (root / "LOC_synset_mapping.txt").write_text(MAP)
    with pytest.raises(DataError, match=r"without class folders, and neither LOC_val_solution\.csv nor"):
        load_imagenet(root)
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000009,n01440764 1\n")
    with pytest.raises(DataError, match=r"1 image\(s\) in .*val have no row in .*LOC_val_solution\.csv"):
        load_imagenet(root)
    (root / "LOC_val_solution.csv").write_text("id,label\n")
    with pytest.raises(DataError, match="expected the header ImageId,PredictionString"):
        load_imagenet(root)


def test_missing_map_and_train(imagenet):
    (imagenet / "LOC_synset_mapping.txt").unlink()
    with pytest.raises(DataError, match="No synset map"):
        load_imagenet(imagenet)
    (imagenet / "LOC_synset_mapping.txt").write_text("tench\n")
    with pytest.raises(DataError, match="line 1: expected '<wnid> <name>"):
        load_imagenet(imagenet)
    with pytest.raises(DataError, match="has no train/ folder"):
        load_imagenet(imagenet / "val")


def test_imagefolder_plain_and_with_split_folders(tmp_path):
    plain = tmp_path / "pets"
    for c in ("cat", "dog"):
        _jpeg(plain / c / "1.jpg", 1)
    data = load_dataset(f"imagefolder:{plain}")
    assert data.classes == ("cat", "dog") and data.split is None
    assert data.ids == load_dataset(str(plain)).ids  # the same as a plain folder spec

    split = tmp_path / "split"
    for s, n in (("train", 2), ("val", 1), ("test", 1)):
        for c in ("cat", "dog"):
            for k in range(n):
                _jpeg(split / s / c / f"{k}.jpg", k)
    data = load_imagefolder(split)
    assert data.classes == ("cat", "dog")
    assert data.split == ("train",) * 4 + ("val",) * 2 + ("test",) * 2
    assert data.labels.tolist() == [0, 0, 1, 1, 0, 1, 0, 1]
    assert data.ids[0] == "train/cat/0.jpg"
    _jpeg(split / "test" / "bird" / "0.jpg", 1)
    with pytest.raises(DataError, match=r"class folder\(s\) \['bird'\] that .*train lacks"):
        load_imagefolder(split)


def test_a_folder_named_like_a_kind_is_that_folder(tmp_path, monkeypatch):
    for c in ("a", "b"):
        _jpeg(tmp_path / "imagenet" / c / "1.jpg", 1)
    monkeypatch.chdir(tmp_path)
    assert load_dataset("imagenet").classes == ("a", "b")


def test_flat_val_with_the_official_devkit(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "imagenet"
    for w in WNIDS[:2]:
        _jpeg(root / "train" / w / "a.JPEG", 1)
    for k in (1, 2, 3):
        _jpeg(root / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", k)
    (root / "synset_words.txt").write_text(MAP)
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"  # beside the image folder
    devkit.mkdir(parents=True)
    # the devkit's ids are not sorted-wnid order: id 1 = n02012849, id 2 = n01440764
    synsets = np.array([(1, "n02012849"), (2, "n01440764")], dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    scipy_io.savemat(devkit / "meta.mat", {"synsets": synsets})
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n2\n")
    data = load_imagenet(root)
    assert data.classes == ("tench", "crane")
    assert data.labels.tolist() == [0, 1, 0, 1, 0]
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n7\n2\n")
    with pytest.raises(DataError, match="line 2: class id 7 is not in"):
        load_imagenet(root)
    (devkit / "meta.mat").unlink()
    with pytest.raises(DataError, match=r"meta\.mat.*is missing"):
        load_imagenet(root)

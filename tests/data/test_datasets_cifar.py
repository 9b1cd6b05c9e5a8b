"""CIFAR-10 / CIFAR-100 binary version, on tiny files written in exactly that format."""

import pickle

import numpy as np
import pytest

from conceptlens.data import load_dataset
from conceptlens.data.cifar import load_cifar10, load_cifar100
from conceptlens.errors import ConfigError, DataError

C10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _records(labels, images):
    # label byte(s), then the red, green and blue planes, each 32 x 32 row-major
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([np.asarray(labels, np.uint8).reshape(len(images), -1), planes], axis=1).tobytes()


@pytest.fixture
def cifar10(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    truth = {}
    for i in range(1, 6):
        x, y = _images(3, i), [(i + k) % 10 for k in range(3)]
        (root / f"data_batch_{i}.bin").write_bytes(_records(y, x))
        truth[f"train{i}"] = (x, y)
    x, y = _images(2, 9), [9, 0]
    (root / "test_batch.bin").write_bytes(_records(y, x))
    truth["test"] = (x, y)
    (root / "batches.meta.txt").write_text("\n".join(C10) + "\n\n")
    return root, truth


def test_cifar10_images_labels_split(cifar10):
    root, truth = cifar10
    data = load_cifar10(root)
    assert data.classes == tuple(C10)
    assert len(data) == 17 and data.split == ("train",) * 15 + ("test",) * 2
    x = np.concatenate([truth[f"train{i}"][0] for i in range(1, 6)] + [truth["test"][0]])
    y = [label for i in range(1, 6) for label in truth[f"train{i}"][1]] + truth["test"][1]
    assert np.array_equal(data.images.array, x)
    assert data.labels.tolist() == y
    assert data.ids[0] == "cifar10/train/0" and data.ids[-1] == "cifar10/test/1"
    # the decoded image is the (32, 32, 3) array, red first
    assert np.array_equal(data.images.decode(0, data.images.read(0)), x[0])


def test_cifar10_by_spec_parent_folder_and_data_dir(cifar10):
    root, _ = cifar10
    assert len(load_dataset(f"cifar10:{root.parent}")) == 17  # the folder holding cifar-10-batches-bin
    assert len(load_dataset("cifar10", root=str(root))) == 17  # [data] data_dir
    assert len(load_dataset(f"cifar10:{root}", split="test")) == 2
    with pytest.raises(ConfigError, match="give it once"):
        load_dataset(f"cifar10:{root}", root=str(root))
    with pytest.raises(ConfigError, match="needs its location"):
        load_dataset("cifar10")


def test_truncated_record_file(cifar10):
    root, _ = cifar10
    path = root / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3\.bin is 9119 bytes, not a whole number of 3073-byte"):
        load_cifar10(root)


def test_missing_batch_and_meta(cifar10):
    root, _ = cifar10
    (root / "batches.meta.txt").unlink()
    with pytest.raises(DataError, match=r"batches\.meta\.txt not found"):
        load_cifar10(root)
    (root / "batches.meta.txt").write_text("\n".join(C10[:9]))
    with pytest.raises(DataError, match="9 class names; expected 10"):
        load_cifar10(root)
    (root / "batches.meta.txt").write_text("\n".join(C10))
    (root / "data_batch_5.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_5\.bin not found"):
        load_cifar10(root)


def test_label_out_of_range(cifar10):
    root, _ = cifar10
    (root / "test_batch.bin").write_bytes(_records([3, 12], _images(2, 0)))
    with pytest.raises(DataError, match="record 1 has label 12, outside 0..9"):
        load_cifar10(root)


def test_pickled_version_is_refused_never_opened(tmp_path):
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("the pickle was opened",))

    (py / "data_batch_1").write_bytes(pickle.dumps(Boom()))
    for where in (tmp_path, py):
        with pytest.raises(DataError, match="pickled 'python version'.*binary version.*cifar-10-binary"):
            load_cifar10(where)
    # the pickled files alone, in a folder of any name
    other = tmp_path / "mine"
    other.mkdir()
    (other / "data_batch_1").write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match="pickled"):
        load_cifar10(other)
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    with pytest.raises(DataError, match="cifar-100-binary"):
        load_cifar100(tmp_path)


@pytest.fixture
def cifar100(tmp_path):
    root = tmp_path / "cifar-100-binary"
    root.mkdir()
    fine = [f"fine_{i}" for i in range(100)]
    coarse = [f"coarse_{i}" for i in range(20)]
    (root / "fine_label_names.txt").write_text("\n".join(fine) + "\n")
    (root / "coarse_label_names.txt").write_text("\n".join(coarse) + "\n")
    xtr, xte = _images(4, 1), _images(2, 2)
    ytr, yte = [[1, 5], [19, 99], [0, 0], [7, 42]], [[2, 10], [3, 11]]
    (root / "train.bin").write_bytes(_records(ytr, xtr))
    (root / "test.bin").write_bytes(_records(yte, xte))
    return root, xtr, xte


def test_cifar100_fine_and_coarse(cifar100):
    root, xtr, xte = cifar100
    data = load_dataset(f"cifar100:{root}")
    assert len(data.classes) == 100 and data.classes[5] == "fine 5"  # underscores become spaces
    assert data.labels.tolist() == [5, 99, 0, 42, 10, 11]
    assert data.split == ("train",) * 4 + ("test",) * 2
    assert np.array_equal(data.images.array, np.concatenate([xtr, xte]))
    coarse = load_dataset(f"cifar100:{root},labels=coarse")
    assert len(coarse.classes) == 20 and coarse.labels.tolist() == [1, 19, 0, 7, 2, 3]
    assert coarse.name == "cifar100-coarse"


def test_cifar100_bad_option_and_truncated(cifar100):
    root, *_ = cifar100
    with pytest.raises(ConfigError, match="labels must be one of 'fine', 'coarse'"):
        load_dataset(f"cifar100:{root},labels=middle")
    with pytest.raises(ConfigError, match="unknown option 'label'"):
        load_dataset(f"cifar100:{root},label=fine")
    (root / "test.bin").write_bytes((root / "test.bin").read_bytes()[:3073])  # a CIFAR-10 record
    with pytest.raises(DataError, match=r"test\.bin is 3073 bytes, not a whole number of 3074-byte"):
        load_cifar100(root)


def test_cifar100_truncated_exact(cifar100):
    root, *_ = cifar100
    (root / "train.bin").write_bytes((root / "train.bin").read_bytes()[:-1])
    with pytest.raises(DataError, match=r"train\.bin is 12295 bytes, not a whole number of 3074-byte "
                                        r"records"):
        load_cifar100(root)


def test_run_config_names_cifar(cifar10, tmp_path):
    from conceptlens.runs.config import load_config

    root, _ = cifar10
    good = tmp_path / "good.toml"
    good.write_text(f'[data]\ndataset = "cifar10:{root}"\n[discovery]\npool = "cifar10:{root}:train"\n')
    assert load_config(good).data.dataset == f"cifar10:{root}"
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[data]\ndataset = "cifar100:{root},labels=fne"\n')
    with pytest.raises(ConfigError, match="labels must be one of 'fine', 'coarse'.*Did you mean 'fine'"):
        load_config(bad)  # before any file is read


def test_init_writes_a_config_for_a_named_dataset(cifar10, tmp_path, capsys):
    from conceptlens.cli import main
    from conceptlens.runs.config import load_config

    root, _ = cifar10
    for i in range(1, 6):  # every class in every file, so each split has each class
        (root / f"data_batch_{i}.bin").write_bytes(_records(list(range(10)) * 2, _images(20, i)))
    (root / "test_batch.bin").write_bytes(_records(list(range(10)), _images(10, 0)))
    out = tmp_path / "c.toml"
    main(["init", f"cifar10:{root}", "--out", str(out)])
    assert load_config(out).data.dataset == f"cifar10:{root}"


def test_download_and_unknown_kind(cifar10):
    root, _ = cifar10
    with pytest.raises(ConfigError, match="download only applies to the built-in fashion-mnist"):
        load_dataset(f"cifar10:{root}", download=True)
    kinds = "kinds cifar10, cifar100, cub, hf, imagefolder, imagenet"
    with pytest.raises(DataError, match=f"named dataset .*{kinds}"):
        load_dataset("cifar11:/nowhere")

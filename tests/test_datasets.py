"""The CIFAR-10 image-folder loader: a tree of class folders, or the tree packed as
train.tar.gz and test.tar.gz (the layout of ../shared), decoded straight from the archives
once and cached."""

import io
import os
import tarfile
import time

import numpy as np
from PIL import Image

from conftest import run_cli
from harness import registry

CLASSES = ["cat", "airplane"]  # sorted: airplane=0, cat=1


def jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def pack(root, split, per_class):
    with tarfile.open(root / f"{split}.tar.gz", "w:gz") as tar:
        for c, cls in enumerate(CLASSES):
            for i in range(per_class):
                data = jpeg(40 + 100 * c + i)
                info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_packed_image_folders_are_decoded_once_without_unpacking(tmp_path):
    data_dir, cache = tmp_path / "packed", tmp_path / "cache"
    data_dir.mkdir()
    pack(data_dir, "train", 6)
    pack(data_dir, "test", 3)
    cifar = registry.get("dataset", "cifar10")
    data = cifar.load(str(data_dir), str(cache), 4)
    assert (len(data.train), len(data.calib), len(data.test)) == (8, 4, 6)
    assert data.label == "CIFAR-10 (JPEG)"
    # labels follow the sorted class names, and pixels survive the round trip (JPEG, about)
    assert data.test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(float(data.test.images[0].mean()) * 255 - 140) < 3  # airplane, packed second
    assert abs(float(data.test.images[3].mean()) * 255 - 40) < 3
    assert [p.name for p in (cache / "datasets").iterdir()] == [
        next((cache / "datasets").glob("cifar10-archives-*.pt")).name]  # the decoded images, no files unpacked
    import tarfile

    real_open = tarfile.open
    tarfile.open = None  # the second load of the same archives reads nothing of them
    try:
        again = cifar.load(str(data_dir), str(cache), 4)
    finally:
        tarfile.open = real_open
    assert again.train.images.equal(data.train.images) and again.label == data.label
    pack(data_dir, "test", 2)  # a changed archive is read again, never reused stale
    assert len(cifar.load(str(data_dir), str(cache), 4).test) == 4
    assert len(list((cache / "datasets").iterdir())) == 1


def test_archives_give_the_images_of_the_unpacked_tree_in_its_order(tmp_path):
    packed, tree = tmp_path / "packed", tmp_path / "tree"
    packed.mkdir()
    pack(packed, "train", 5)
    pack(packed, "test", 2)
    for split in ("train", "test"):
        with tarfile.open(packed / f"{split}.tar.gz") as tar:
            tar.extractall(tree, filter="data")
    cifar = registry.get("dataset", "cifar10")
    a, b = cifar.load(str(packed), str(tmp_path / "c1"), 3), cifar.load(str(tree), str(tmp_path / "c2"), 3)
    for split in ("train", "calib", "test"):
        assert getattr(a, split).images.equal(getattr(b, split).images)
        assert getattr(a, split).labels.equal(getattr(b, split).labels)
    assert a.label == b.label == "CIFAR-10 (JPEG)"


def test_a_corrupt_image_in_an_archive_is_named_in_one_line(tmp_path):
    data_dir = tmp_path / "packed"
    data_dir.mkdir()
    pack(data_dir, "train", 2)
    with tarfile.open(data_dir / "test.tar.gz", "w:gz") as tar:
        for cls in CLASSES:
            info = tarfile.TarInfo(f"test/{cls}/0000.jpg")
            data = b"not a jpeg" if cls == "cat" else jpeg(10)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = run_cli("bench", "--model", "resnet20", "--data-dir", str(data_dir), "--budget", "smoke",
                     "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "corrupt image test.tar.gz:test/cat/0000.jpg" in result.stderr
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_a_corrupt_archive_is_a_one_line_error(tmp_path):
    data_dir = tmp_path / "packed"
    data_dir.mkdir()
    (data_dir / "train.tar.gz").write_bytes(b"not a tarball")
    pack(data_dir, "test", 1)
    result = run_cli("bench", "--model", "resnet20", "--data-dir", str(data_dir), "--budget", "smoke",
                     "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot read" in result.stderr and "train.tar.gz" in result.stderr
    assert "Traceback" not in result.stderr



LOAD_WHEN_TOLD = """
import os, sys, time
from harness import registry
while not os.path.exists(sys.argv[3]):
    time.sleep(0.001)
print(len(registry.get("dataset", "cifar10").load(sys.argv[1], sys.argv[2], 4).test))
"""


def test_processes_replacing_the_same_stale_cache_at_once_all_succeed(tmp_path):
    """Sweep shards started together after the archives changed each find the earlier
    version's cache stale; removing it at the same time crashed all but one of them (found when
    a pretraining and a second load raced: FileNotFoundError inside shutil.rmtree). Here the
    stale entries are what earlier versions left: the archives unpacked, and that folder's
    decoded images."""
    import subprocess
    import sys

    from harness_plugins.datasets import _path_key

    data_dir, cache = tmp_path / "packed", tmp_path / "cache"
    data_dir.mkdir()
    pack(data_dir, "train", 6)
    pack(data_dir, "test", 3)
    cifar = registry.get("dataset", "cifar10")
    cifar.load(str(data_dir), str(cache), 4)
    (decoded,) = (cache / "datasets").glob("cifar10-archives-*.pt")
    stale = decoded.with_suffix("")  # an earlier version's unpacking of the same archives
    for d in range(20):  # enough files that the removals overlap
        (stale / "train" / f"extra{d}").mkdir(parents=True)
        for i in range(200):
            (stale / "train" / f"extra{d}" / f"{i}.jpg").write_bytes(b"x")
    stale_decoded = cache / "datasets" / f"cifar10-folder-{_path_key(stale)}-0123456789ab.pt"
    stale_decoded.write_bytes(b"x")
    pack(data_dir, "test", 2)  # the archives changed: everything above is stale for every loader
    go = tmp_path / "go"
    loaders = [subprocess.Popen([sys.executable, "-c", LOAD_WHEN_TOLD, str(data_dir), str(cache), str(go)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(3)]
    time.sleep(3)  # all three imported and waiting
    go.touch()
    results = [loader.communicate(timeout=120) for loader in loaders]
    assert [(loader.returncode, out.strip()) for loader, (out, _) in zip(loaders, results)] == [(0, "4")] * 3, \
        [err[-300:] for _, err in results]
    # nothing left in the cache but the new decoded images
    left = sorted(p.name for p in (cache / "datasets").iterdir())
    assert len(left) == 1 and left[0].startswith("cifar10-archives-") and left[0] != decoded.name, left


def test_archives_with_other_classes_in_train_and_test_are_named(tmp_path):
    import pytest

    from harness.errors import HarnessError

    data_dir = tmp_path / "packed"
    data_dir.mkdir()
    pack(data_dir, "train", 2)
    with tarfile.open(data_dir / "test.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("test/dog/0000.jpg")
        data = jpeg(10)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(HarnessError) as refused:
        registry.get("dataset", "cifar10").load(str(data_dir), str(tmp_path / "cache"), 2)
    assert str(refused.value) == (f"{data_dir / 'train.tar.gz'} and {data_dir / 'test.tar.gz'} have different class "
                                  "folders (airplane, cat vs dog)")
    assert not (tmp_path / "cache" / "datasets").exists() or not list((tmp_path / "cache" / "datasets").iterdir())

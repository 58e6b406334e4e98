"""The CIFAR-10 image-folder loader: a tree of class folders, or the tree packed as
train.tar.gz and test.tar.gz (the layout of ../shared), unpacked once into the cache."""

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


def test_packed_image_folders_are_unpacked_once(tmp_path):
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
    unpacked = list((cache / "datasets").glob("cifar10-archives-*/train/cat/*.jpg"))
    assert len(unpacked) == 6
    import tarfile

    real_open = tarfile.open
    tarfile.open = None  # the second load of the same archives unpacks nothing
    try:
        again = cifar.load(str(data_dir), str(cache), 4)
    finally:
        tarfile.open = real_open
    assert again.train.images.equal(data.train.images)
    pack(data_dir, "test", 2)  # a changed archive is unpacked again, never reused stale
    assert len(cifar.load(str(data_dir), str(cache), 4).test) == 4
    assert len(list((cache / "datasets").glob("cifar10-archives-*"))) == 1


def test_a_corrupt_archive_is_a_one_line_error(tmp_path):
    data_dir = tmp_path / "packed"
    data_dir.mkdir()
    (data_dir / "train.tar.gz").write_bytes(b"not a tarball")
    pack(data_dir, "test", 1)
    result = run_cli("bench", "--model", "resnet20", "--data-dir", str(data_dir), "--budget", "smoke",
                     "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot unpack" in result.stderr and "train.tar.gz" in result.stderr
    assert "Traceback" not in result.stderr



LOAD_WHEN_TOLD = """
import os, sys, time
from harness import registry
while not os.path.exists(sys.argv[3]):
    time.sleep(0.001)
print(len(registry.get("dataset", "cifar10").load(sys.argv[1], sys.argv[2], 4).test))
"""


def test_processes_replacing_the_same_stale_unpacking_at_once_all_succeed(tmp_path):
    """Sweep shards started together after the archives changed each find the old unpacked
    folder stale; removing it at the same time crashed all but one of them (found when a
    pretraining and a second load raced: FileNotFoundError inside shutil.rmtree)."""
    import subprocess
    import sys

    data_dir, cache = tmp_path / "packed", tmp_path / "cache"
    data_dir.mkdir()
    pack(data_dir, "train", 6)
    pack(data_dir, "test", 3)
    cifar = registry.get("dataset", "cifar10")
    cifar.load(str(data_dir), str(cache), 4)
    (stale,) = (cache / "datasets").glob("cifar10-archives-*")
    for d in range(20):  # enough files that the removals overlap
        (stale / "train" / f"extra{d}").mkdir()
        for i in range(200):
            (stale / "train" / f"extra{d}" / f"{i}.jpg").write_bytes(b"x")
    pack(data_dir, "test", 2)  # the archives changed: the folder above is stale for every loader
    go = tmp_path / "go"
    loaders = [subprocess.Popen([sys.executable, "-c", LOAD_WHEN_TOLD, str(data_dir), str(cache), str(go)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(3)]
    time.sleep(3)  # all three imported and waiting
    go.touch()
    results = [loader.communicate(timeout=120) for loader in loaders]
    assert [(loader.returncode, out.strip()) for loader, (out, _) in zip(loaders, results)] == [(0, "4")] * 3, \
        [err[-300:] for _, err in results]
    assert not stale.exists()
    # nothing left in the cache but the new unpacking and the decoded data
    left = sorted(p.name for p in (cache / "datasets").iterdir())
    assert len(left) == 2 and left[0].startswith("cifar10-archives-") and left[1].startswith("cifar10-folder-"), left

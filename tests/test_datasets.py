"""The CIFAR-10 image-folder loader: a tree of class folders, or the tree packed as
train.tar.gz and test.tar.gz (the layout of ../shared), unpacked once into the cache."""

import io
import tarfile

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

"""Data sets, held in memory as tensors. A fixed-seed calibration split is held out of
the training data (for the criteria and the similarity metric); the test split is for
reporting only."""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from harness import hookimpl
from harness.api import DataSplits, Dataset, TensorSplit
from harness.errors import HarnessError, first_line

CALIB_SEED = 20250630  # fixed so every run of a data set sees the same calibration split

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def hold_out(images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[TensorSplit, TensorSplit]:
    """(train without the held-out samples, held-out calibration split)."""
    if not 0 < n < len(labels):
        raise HarnessError(f"calibration size {n} must be between 1 and {len(labels) - 1}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(CALIB_SEED))
    calib, train = perm[:n].sort().values, perm[n:].sort().values
    return TensorSplit(images[train], labels[train]), TensorSplit(images[calib], labels[calib])


def _decode(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_image_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``root/<class>/*.jpg|png`` -> uint8 (N, 3, H, W), labels by sorted class name."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise HarnessError(f"{root} has no class folders")
    files, labels = [], []
    for label, cls in enumerate(classes):
        names = sorted(f for f in os.listdir(root / cls) if f.lower().endswith((".jpg", ".jpeg", ".png")))
        files += [str(root / cls / f) for f in names]
        labels += [label] * len(names)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(_decode, files, chunksize=256))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64)


def _path_key(root: Path) -> str:
    """A short cache key for a data folder, so that two folders never share a cache entry."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def _has_jpeg(root: Path) -> bool:
    for class_dir in root.iterdir():
        if class_dir.is_dir():
            return any(f.lower().endswith((".jpg", ".jpeg")) for f in os.listdir(class_dir))
    return False


class Cifar10(Dataset):
    name = "cifar10"
    description = "CIFAR-10: torchvision's files (downloaded if needed) or an image-folder tree with train/ and test/"
    mean = (0.485, 0.456, 0.406)  # what the published CIFAR ResNet weights were trained with
    std = (0.229, 0.224, 0.225)

    def _image_folder(self, root: Path, cache_dir: str):
        key = _path_key(root)
        cache = Path(cache_dir) / "datasets" / f"cifar10-folder-{key}.pt"
        if cache.exists():
            try:
                return torch.load(cache, weights_only=True)
            except Exception:
                pass  # a broken cache is rebuilt below
        from harness.records import atomic_write_bytes
        import io

        data = {}
        for split in ("train", "test"):
            images, labels = read_image_folder(root / split)
            data[split] = (images, labels)
        buf = io.BytesIO()
        torch.save(data, buf)
        atomic_write_bytes(cache, buf.getvalue())
        return data

    def _torchvision(self, root: Path):
        import torchvision

        data = {}
        for split in ("train", "test"):
            try:
                ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
            except Exception as exc:
                raise HarnessError(
                    f"cannot load or download CIFAR-10 into {root} ({str(exc).splitlines()[0][:120]}); "
                    "give --data-dir with torchvision's cifar-10-batches-py or an image-folder tree with train/ and test/"
                ) from None
            data[split] = (torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                           torch.tensor(ds.targets, dtype=torch.int64))
        return data

    def _unpack(self, root: Path, cache_dir: str) -> Path:
        """``train.tar.gz`` and ``test.tar.gz`` (each holding ``train/`` or ``test/``) are
        unpacked once into the cache; returns the folder holding ``train/`` and ``test/``."""
        import tarfile

        key = _path_key(root)
        out = Path(cache_dir) / "datasets" / f"cifar10-archives-{key}"
        for split in ("train", "test"):
            if not (out / split / ".complete").exists():
                tmp = out / f".{split}-{os.getpid()}"
                try:
                    with tarfile.open(root / f"{split}.tar.gz") as tar:
                        tar.extractall(tmp, filter="data")
                except (OSError, tarfile.TarError) as exc:
                    raise HarnessError(f"cannot unpack {root / f'{split}.tar.gz'}: {first_line(exc)}") from None
                if not (tmp / split).is_dir():
                    raise HarnessError(f"{root / f'{split}.tar.gz'} holds no {split}/ folder")
                (tmp / split / ".complete").touch()
                if not (out / split / ".complete").exists():  # another process may have won the race
                    shutil.rmtree(out / split, ignore_errors=True)
                    os.replace(tmp / split, out / split)
                shutil.rmtree(tmp, ignore_errors=True)
        return out

    def load(self, data_dir, cache_dir, calib_size):
        root = Path(data_dir) if data_dir else Path(cache_dir) / "data"
        if data_dir and not root.is_dir():
            raise HarnessError(f"data directory {root} does not exist")
        if not (root / "train").is_dir() and (root / "train.tar.gz").is_file() and (root / "test.tar.gz").is_file():
            root = self._unpack(root, cache_dir)
        if (root / "train").is_dir() and (root / "test").is_dir():
            data = self._image_folder(root, cache_dir)
            # JPEG-recompressed CIFAR-10 is a different test set: never mix its figures with the originals
            label = "CIFAR-10 (JPEG)" if _has_jpeg(root / "test") else "CIFAR-10 (image folder)"
        else:
            data = self._torchvision(root)
            label = "CIFAR-10"
        to_float = lambda t: t.float().div_(255)  # noqa: E731
        train, calib = hold_out(to_float(data["train"][0]), data["train"][1], calib_size)
        test = TensorSplit(to_float(data["test"][0]), data["test"][1])
        return DataSplits(train, calib, test, self.mean, self.std, num_classes=10, augment="cifar", label=label,
                          class_names=tuple(CIFAR10_CLASSES))


class Digits(Dataset):
    name = "digits"
    description = "scikit-learn's bundled 8x8 handwritten digits (1,797 images; works offline)"

    def load(self, data_dir, cache_dir, calib_size):
        from sklearn.datasets import load_digits

        d = load_digits()
        images = torch.tensor(d.images, dtype=torch.float32).div_(16).unsqueeze(1)
        labels = torch.tensor(d.target, dtype=torch.int64)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        test_idx, rest = perm[:360].sort().values, perm[360:].sort().values
        train, calib = hold_out(images[rest], labels[rest], min(calib_size, 256))
        test = TensorSplit(images[test_idx], labels[test_idx])
        mean, std = train.images.mean().item(), train.images.std().item()
        return DataSplits(train, calib, test, (mean,), (std,), num_classes=10, augment=None,
                          label="digits (scikit-learn)", class_names=tuple(str(i) for i in range(10)))


def tabular_splits(features: np.ndarray, labels: np.ndarray, test_size: int, calib_size: int, label: str,
                   class_names: tuple[str, ...]) -> DataSplits:
    """Rows as float32 (N, F) with a fixed seeded test split and the calibration split held
    out of the rest; features are standardised with the training split's mean and std."""
    x = torch.tensor(np.asarray(features, dtype=np.float32))
    y = torch.tensor(np.asarray(labels), dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test_idx, rest = perm[:test_size].sort().values, perm[test_size:].sort().values
    train, calib = hold_out(x[rest], y[rest], calib_size)
    mean = train.images.mean(0)
    std = train.images.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature is left as it is
    return DataSplits(train, calib, TensorSplit(x[test_idx], y[test_idx]), tuple(mean.tolist()), tuple(std.tolist()),
                      num_classes=len(class_names), augment=None, label=label, class_names=class_names)


class Shuttle(Dataset):
    name = "shuttle"
    description = ("Statlog Shuttle as bundled with the river package (49,097 rows of 9 NASA space shuttle "
                   "sensor readings; normal vs. anomaly, 7% anomalies); real sensor data that works offline")

    def load(self, data_dir, cache_dir, calib_size):
        import pandas as pd

        try:
            from river.datasets import Shuttle as RiverShuttle
        except ImportError:
            raise HarnessError("data set shuttle needs the river package, which bundles it (pip install river); "
                               "valid choices without it: breast-cancer, digits, cifar10") from None
        frame = pd.read_csv(RiverShuttle().path)
        features = frame[[f"f{i}" for i in range(1, 10)]].to_numpy()
        return tabular_splits(features, frame["anomaly"].to_numpy(), test_size=9819, calib_size=calib_size,
                              label="Statlog Shuttle anomalies (river)", class_names=("normal", "anomaly"))


class BreastCancer(Dataset):
    name = "breast-cancer"
    description = "scikit-learn's bundled Wisconsin breast cancer rows (569 x 30 features, 2 classes; works offline)"

    def load(self, data_dir, cache_dir, calib_size):
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        return tabular_splits(d.data, d.target, test_size=114, calib_size=min(calib_size, 128),
                              label="breast cancer (scikit-learn)", class_names=tuple(str(n) for n in d.target_names))


@hookimpl
def register_datasets():
    return [Cifar10(), Digits(), Shuttle(), BreastCancer()]

"""Data sets, held in memory as tensors. A fixed-seed calibration split is held out of
the training data (for the criteria and the similarity metric); the test split is for
reporting only."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from harness import hookimpl
from harness.api import DataSplits, Dataset, TensorSplit
from harness.errors import HarnessError, first_line, warn

CALIB_SEED = 20250630  # fixed so every run of a data set sees the same calibration split

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def hold_out(images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[TensorSplit, TensorSplit]:
    """(train without the held-out samples, held-out calibration split)."""
    if not 0 < n < len(labels):
        raise HarnessError(f"calibration size {n} must be between 1 and {len(labels) - 1}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(CALIB_SEED))
    calib, train = perm[:n].sort().values, perm[n:].sort().values
    return TensorSplit(images[train], labels[train]), TensorSplit(images[calib], labels[calib])


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _decode(source: Path | bytes, shown: str) -> np.ndarray:
    """An image file, or an archive member's bytes, as uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise HarnessError(f"corrupt image {shown} ({first_line(exc, 120)}); remove or replace it") from None


def image_files(root: Path) -> dict[str, list[str]]:
    """``{class: sorted image file names}`` of an image folder; one line when it has no class
    folders or a class folder has no images."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise HarnessError(f"{root} has no class folders (it needs {root}/<class>/*.jpg)")
    files = {cls: sorted(f for f in os.listdir(root / cls) if f.lower().endswith(IMAGE_SUFFIXES)) for cls in classes}
    empty = [cls for cls, names in files.items() if not names]
    if empty:
        raise HarnessError(f"{root} has no images (.jpg, .jpeg, .png) in class folder{'s' * (len(empty) > 1)} "
                           f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}")
    return files


def read_image_folder(root: Path, shown_from: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``root/<class>/*.jpg|png`` -> uint8 (N, 3, H, W), labels by sorted class name. A file
    that does not decode, or whose size differs from the others, is named relative to
    ``shown_from`` (the data folder) in a one-line error."""
    base = shown_from or root.parent
    files, labels = [], []
    for label, (cls, names) in enumerate(image_files(root).items()):
        files += [root / cls / f for f in names]
        labels += [label] * len(names)
    return decode_images(files, labels, [os.path.relpath(f, base) for f in files])


def read_image_archive(archive: Path, split: str) -> dict[str, dict[str, bytes]]:
    """``{class: {file name: bytes}}`` of the ``split/<class>/*.jpg|png`` members of a tar
    archive, read without unpacking it (writing CIFAR-10's 60,000 files cost more than
    decoding them); the same images, in the same order, as the unpacked tree's image_files."""
    import tarfile
    import zlib

    classes: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = [part for part in member.name.split("/") if part not in ("", ".")]
                if len(parts) < 2 or parts[0] != split or parts[1].startswith("."):
                    continue
                if member.isdir() and len(parts) == 2:
                    classes.setdefault(parts[1], {})
                elif member.isfile() and len(parts) == 3 and parts[2].lower().endswith(IMAGE_SUFFIXES):
                    classes.setdefault(parts[1], {})[parts[2]] = tar.extractfile(member).read()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise HarnessError(f"cannot read {archive}: {first_line(exc)}") from None
    if not classes:
        raise HarnessError(f"{archive} holds no class folders (it needs {split}/<class>/*.jpg)")
    empty = sorted(cls for cls, images in classes.items() if not images)
    if empty:
        raise HarnessError(f"{archive} has no images (.jpg, .jpeg, .png) in class folder{'s' * (len(empty) > 1)} "
                           f"{', '.join(f'{split}/{cls}' for cls in empty[:5])}{' ...' if len(empty) > 5 else ''}")
    return {cls: dict(sorted(classes[cls].items())) for cls in sorted(classes)}


def decode_images(sources: list, labels: list[int], shown: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image files or bytes -> uint8 (N, 3, H, W) and their labels; an image that does not
    decode, or whose size differs from the others, is named (``shown``) in a one-line error."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(_decode, sources, shown, chunksize=256))
    sizes = {}
    for a in arrays:
        sizes[a.shape] = sizes.get(a.shape, 0) + 1
    usual = max(sizes, key=sizes.get)
    for name, a in zip(shown, arrays):
        if a.shape != usual:
            raise HarnessError(f"image {name} is {a.shape[1]}x{a.shape[0]} pixels; the others are "
                               f"{usual[1]}x{usual[0]}: every image of a data set must have one size")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64)


def _path_key(root: Path) -> str:
    """A short cache key for a data folder, so that two folders never share a cache entry."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def _content_key(paths) -> str:
    """A fingerprint of files' names, sizes and modification times: a changed source (an image
    added, removed, replaced or edited) gives another key, so a cache is never reused stale."""
    digest = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def _folder_files(root: Path):
    for split in ("train", "test"):
        for class_dir in sorted((root / split).iterdir()):
            if class_dir.is_dir():
                yield from sorted(class_dir.iterdir())


def _remove_stale(folder: Path, pattern: str, keep: Path | None = None) -> list[Path]:
    """Removes the entries in ``folder`` matching ``pattern`` but ``keep``: those of an earlier
    version of the same source (another content key); returns them.
    Processes started together (a sweep's shards) all find the same stale folder: each first
    claims it by a rename, which only one wins, so no two remove the same files."""
    stale = [old for old in folder.glob(pattern) if old != keep]
    for old in stale:
        if not old.is_dir():
            old.unlink(missing_ok=True)
            continue
        claimed = old.with_name(f".{old.name}-{os.getpid()}")
        try:
            os.rename(old, claimed)
        except FileNotFoundError:
            continue  # another process claimed it
        shutil.rmtree(claimed, ignore_errors=True)
    _remove_dead_temporaries(folder)  # the claims of processes killed while removing
    return stale


def _remove_dead_temporaries(folder: Path) -> None:
    """``.<name>-<pid>`` folders of processes that died removing a stale entry (or, in earlier
    versions, unpacking archives)."""
    for tmp in folder.glob(".*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if tmp.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _has_jpeg(root: Path) -> bool:
    for class_dir in root.iterdir():
        if class_dir.is_dir():
            return any(f.lower().endswith((".jpg", ".jpeg")) for f in os.listdir(class_dir))
    return False


TORCHVISION_CIFAR10 = "cifar-10-batches-py"
TORCHVISION_CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                             "test_batch", "batches.meta")


def _partial_layout(root: Path) -> str | None:
    """What a data folder holds of one of CIFAR-10's layouts when the rest is missing (one of
    ``train.tar.gz`` and ``test.tar.gz``; torchvision's batches without some of their files),
    as the end of a one-line error; None when it holds a whole layout or none."""
    archives = [split for split in ("train", "test") if (root / f"{split}.tar.gz").is_file()]
    if len(archives) == 1:
        missing = "test" if archives == ["train"] else "train"
        return (f"has {archives[0]}.tar.gz but no {missing}.tar.gz; CIFAR-10 as archives needs both "
                f"train.tar.gz and test.tar.gz (holding train/ and test/)")
    batches = root / TORCHVISION_CIFAR10
    if batches.is_dir() and not (root / "cifar-10-python.tar.gz").is_file():
        missing = [name for name in TORCHVISION_CIFAR10_FILES if not (batches / name).is_file()]
        if missing:
            return (f"has {TORCHVISION_CIFAR10}/ without {', '.join(missing)}; torchvision's CIFAR-10 needs "
                    f"{', '.join(TORCHVISION_CIFAR10_FILES)} there")
    return None


SPLITS = ("train", "test")


def _same_classes(where: tuple[Path, Path], classes: dict[str, list[str]]) -> None:
    if classes["train"] != classes["test"]:
        raise HarnessError(f"{where[0]} and {where[1]} have different class folders "
                           f"({', '.join(classes['train'])} vs {', '.join(classes['test'])})")


def _cached(cache: Path, read) -> dict:
    """What ``read()`` gives, kept in ``cache`` (a torch file) for the next load."""
    if cache.exists():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:
            pass  # a broken cache is rebuilt below
    from harness.api import write_file_atomically

    data = read()
    buf = io.BytesIO()
    torch.save(data, buf)
    write_file_atomically(cache, buf.getvalue())
    return data


class Cifar10(Dataset):
    name = "cifar10"
    description = "CIFAR-10: torchvision's files (downloaded if needed) or an image-folder tree with train/ and test/"
    mean = (0.485, 0.456, 0.406)  # what the published CIFAR ResNet weights were trained with
    std = (0.229, 0.224, 0.225)

    def _image_folder(self, root: Path, cache_dir: str):
        key = _path_key(root)
        cache = Path(cache_dir) / "datasets" / f"cifar10-folder-{key}-{_content_key(_folder_files(root))}.pt"

        def read():
            classes = {split: list(image_files(root / split)) for split in SPLITS}
            _same_classes((root / "train", root / "test"), classes)
            return {split: read_image_folder(root / split, shown_from=root) for split in SPLITS}

        data = _cached(cache, read)
        _remove_stale(cache.parent, f"cifar10-folder-{key}-*.pt", keep=cache)
        return data

    def _archives(self, root: Path, cache_dir: str):
        """``train.tar.gz`` and ``test.tar.gz`` (holding ``train/`` and ``test/``), decoded
        straight from the archives once; the decoded images are cached."""
        key = _path_key(root)
        archives = [root / f"{split}.tar.gz" for split in SPLITS]
        cache = Path(cache_dir) / "datasets" / f"cifar10-archives-{key}-{_content_key(archives)}.pt"

        def read():
            members = {split: read_image_archive(archive, split) for split, archive in zip(SPLITS, archives)}
            _same_classes(tuple(archives), {split: list(classes) for split, classes in members.items()})
            data = {}
            for split, classes in members.items():
                sources, labels, shown = [], [], []
                for label, (cls, images) in enumerate(classes.items()):
                    sources += images.values()
                    labels += [label] * len(images)
                    shown += [f"{split}.tar.gz:{split}/{cls}/{name}" for name in images]
                data[split] = decode_images(sources, labels, shown)
            jpeg = any(name.lower().endswith((".jpg", ".jpeg")) for images in members["test"].values() for name in images)
            data["label"] = "CIFAR-10 (JPEG)" if jpeg else "CIFAR-10 (image folder)"
            return data

        data = _cached(cache, read)
        # and what earlier versions left: the archives unpacked (cifar10-archives-<key>-<content>/)
        # and those folders' decoded images
        for old in _remove_stale(cache.parent, f"cifar10-archives-{key}-*", keep=cache):
            if old.suffix != ".pt":
                _remove_stale(cache.parent, f"cifar10-folder-{_path_key(old)}-*.pt")
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

    def load(self, data_dir, cache_dir, calib_size):
        root = Path(data_dir) if data_dir else Path(cache_dir) / "data"
        if data_dir and root.exists() and not root.is_dir():
            raise HarnessError(f"data directory {root} is a file; give the folder that holds train/ and test/ (or "
                               "train.tar.gz and test.tar.gz)")
        if data_dir and not root.is_dir():
            raise HarnessError(f"data directory {root} does not exist")
        halves = [split for split in ("train", "test") if (root / split).is_dir()]
        if len(halves) == 1:  # an image-folder tree with one split only: say so, never blame the network
            missing = "test" if halves == ["train"] else "train"
            raise HarnessError(f"data directory {root} has {halves[0]}/ but no {missing}/ folder; an image-folder "
                               f"tree needs both train/<class>/*.jpg and test/<class>/*.jpg")
        partial = _partial_layout(root) if data_dir and not halves else None
        if partial:  # half of a data set is no reason to try the network: say what is there
            raise HarnessError(f"data directory {root} {partial}")
        if not (root / "train").is_dir() and (root / "train.tar.gz").is_file() and (root / "test.tar.gz").is_file():
            data = self._archives(root, cache_dir)
            label = data["label"]
        elif (root / "train").is_dir() and (root / "test").is_dir():
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

        bundled(self.name, data_dir)
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


def bundled(name: str, data_dir: str | None) -> None:
    """A bundled data set reads no files: a --data-dir given is said to be ignored."""
    if data_dir:
        warn(f"--data-dir {data_dir} is ignored: data set {name} is bundled with its package and reads no files")


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

        bundled(self.name, data_dir)
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

        bundled(self.name, data_dir)
        d = load_breast_cancer()
        return tabular_splits(d.data, d.target, test_size=114, calib_size=min(calib_size, 128),
                              label="breast cancer (scikit-learn)", class_names=tuple(str(n) for n in d.target_names))


@hookimpl
def register_datasets():
    return [Cifar10, Digits, Shuttle, BreastCancer]

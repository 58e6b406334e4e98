"""CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019): accuracy under common corruptions at five
severities, on the same fixed, seeded subset of test images for every corruption, severity and
iteration of a run.

With ``--cifar10c-dir`` the official release is read (``<corruption>.npy``, uint8
(5 x 10,000, 32, 32, 3), severities 1..5 one block after the other, and ``labels.npy``).
Otherwise the corruptions are generated from the run's own test split
(:mod:`harness_plugins.evaluators.corruptions`) and cached, so later iterations and runs with
the same seed evaluate the very same images. Generated figures come from the run's test images
(JPEG-recompressed ones for ``CIFAR-10 (JPEG)``) and lack three corruptions: they are not the
published CIFAR-10-C figures.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.api import Evaluator, Option, TensorSplit
from harness.api import derive_seed
from harness.errors import HarnessError
from harness.api import write_file_atomically
from harness.api import accuracy
from harness_plugins.datasets import CIFAR10_CLASSES
from harness_plugins.evaluators import corruptions

IMAGE_SHAPE = (corruptions.SIZE, corruptions.SIZE, 3)
# part of the cache key of generated images: bump it when a corruption's implementation changes
GENERATOR_VERSION = 1


def uint8_split(images: np.ndarray, labels: np.ndarray) -> TensorSplit:
    """uint8 (N, H, W, 3) images and their labels as a TensorSplit in [0, 1]."""
    # copies: the arrays may be read-only (memory-mapped or broadcast)
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div_(255)
    return TensorSplit(x, torch.from_numpy(np.array(labels, dtype=np.int64)))


def require_cifar10_labels(evaluator: str, ctx) -> None:
    """Release files carry CIFAR-10's labels: the run's classes must be CIFAR-10's, in order."""
    names = tuple(ctx.data.class_names)
    if ctx.data.num_classes != len(CIFAR10_CLASSES) or (names and names != tuple(CIFAR10_CLASSES)):
        raise HarnessError(f"{evaluator}: needs a model of CIFAR-10's 10 classes; this run's data is "
                           f"{ctx.data.label or 'another data set'} with {ctx.data.num_classes} classes")


def subset_indices(total: int, n: int, seed: int) -> np.ndarray:
    """A fixed, sorted choice of ``min(n, total)`` of ``range(total)``."""
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def parse_corruptions(value) -> list[str] | None:
    """A comma-separated string (or a list, from a config file) of names; None for ``all``."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    names = [v for v in names if v]
    return None if names == ["all"] else names


def _check_corruptions(value) -> str | None:
    names = parse_corruptions(value)
    if names == []:
        return "no corruption given; give all or a comma-separated list"
    unknown = [n for n in names or () if n not in corruptions.OFFICIAL_CORRUPTIONS]
    if unknown:
        return (f"unknown corruption {', '.join(unknown)}; valid choices: all, "
                f"{', '.join(corruptions.OFFICIAL_CORRUPTIONS)}")
    return None


def _select(wanted: list[str] | None, available: list[str], where: str) -> list[str]:
    if wanted is None:
        return available
    missing = [n for n in wanted if n not in available]
    if missing:
        raise HarnessError(f"cifar10c: {', '.join(missing)} not available {where}; available: {', '.join(available)}")
    return wanted


class OfficialRelease:
    """The official CIFAR-10-C files: the same ``n`` image indices taken from every severity
    block of every corruption (memory-mapped, so only those are read)."""

    def __init__(self, root: Path, n: int, seed: int):
        if not root.is_dir():
            raise HarnessError(f"cifar10c: --cifar10c-dir {root} is not a directory; give the folder of the "
                               "official CIFAR-10-C release (<corruption>.npy and labels.npy), or leave it out to "
                               "generate the corruptions")
        self.root = root
        self.labels = self._load(root / "labels.npy")
        if self.labels.ndim != 1 or len(self.labels) == 0 or len(self.labels) % len(corruptions.SEVERITY_LEVELS):
            raise HarnessError(f"cifar10c: {root / 'labels.npy'} has shape {self.labels.shape}; expected one label "
                               "per image of the 5 severity blocks, e.g. (50000,)")
        self.block = len(self.labels) // len(corruptions.SEVERITY_LEVELS)
        self.indices = subset_indices(self.block, n, seed)
        self.corruptions = [name for name in corruptions.OFFICIAL_CORRUPTIONS if (root / f"{name}.npy").is_file()]

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        if not path.is_file():
            raise HarnessError(f"cifar10c: {path} does not exist; --cifar10c-dir must hold the official release")
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise HarnessError(f"cifar10c: {path} is not a readable .npy file ({exc})") from None

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images (5, n, 32, 32, 3) uint8, labels (5, n)) of one corruption."""
        path = self.root / f"{name}.npy"
        images = self._load(path)
        if images.dtype != np.uint8 or images.shape != (len(self.labels),) + IMAGE_SHAPE:
            raise HarnessError(f"cifar10c: {path} is {images.dtype} {images.shape}; expected uint8 "
                               f"{(len(self.labels),) + IMAGE_SHAPE} to match labels.npy")
        rows = [s * self.block + self.indices for s in range(len(corruptions.SEVERITY_LEVELS))]
        return np.stack([images[r] for r in rows]), np.stack([self.labels[r] for r in rows])


class GeneratedCorruptions:
    """Corruptions generated from ``n`` seeded test images, cached per corruption under
    ``cache_dir/cifar10c`` by a hash of the clean images, the parameters and the seeds."""

    def __init__(self, test: TensorSplit, n: int, seed: int, cache_dir: str):
        if tuple(test.images.shape[1:]) != (3, corruptions.SIZE, corruptions.SIZE):
            raise HarnessError(f"cifar10c: generating corruptions needs 32x32 RGB test images, not "
                               f"{tuple(test.images.shape[1:])}; give --cifar10c-dir for the official release")
        idx = torch.from_numpy(subset_indices(len(test), n, seed))
        # the test images were decoded from uint8, so this is exact
        self.clean = test.images[idx].mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = test.labels[idx].numpy()
        self.seed = seed
        self.cache = Path(cache_dir) / "cifar10c"
        self.corruptions = list(corruptions.CORRUPTIONS)

    def _seed(self, name: str, severity: int) -> int:
        return derive_seed(self.seed, "cifar10c", name, severity)

    def cache_path(self, name: str) -> Path:
        key = hashlib.sha256(self.clean.tobytes())
        params = [(corruptions.parameters(name, s), self._seed(name, s)) for s in corruptions.SEVERITY_LEVELS]
        key.update(repr((name, params, GENERATOR_VERSION)).encode())
        return self.cache / f"{name}-{key.hexdigest()[:16]}.npz"

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images (5, n, 32, 32, 3) uint8, labels (5, n)) of one corruption."""
        path = self.cache_path(name)
        expected = (len(corruptions.SEVERITY_LEVELS),) + self.clean.shape
        images = None
        if path.exists():
            try:
                with np.load(path) as stored:
                    images = stored["images"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                images = None  # a broken cache entry is made again
        if images is None or images.shape != expected or images.dtype != np.uint8:
            images = np.stack([corruptions.corrupt(self.clean, name, s, self._seed(name, s))
                               for s in corruptions.SEVERITY_LEVELS])
            buffer = io.BytesIO()
            np.savez(buffer, images=images)  # compressing saves ~10% of the space at 50x the time
            write_file_atomically(path, buffer.getvalue())
        return images, np.broadcast_to(self.labels, expected[:2])


class Cifar10C(Evaluator):
    name = "cifar10c"
    description = ("accuracy under CIFAR-10-C corruptions, 5 severities (Hendrycks & Dietterich, ICLR 2019): the "
                   "official release with --cifar10c-dir, else 16 of its 19 corruptions generated from the test split "
                   "(motion_blur and snow need ImageMagick, frost its photographs: release only)")
    options = (
        Option("cifar10c_dir", None, "folder of the official CIFAR-10-C release (<corruption>.npy, labels.npy); "
               "without it the corruptions are generated from the test split",
               check=lambda v: None if v is None or os.path.isdir(v) else "no such directory"),
        Option("cifar10c_subset", 1000, "test images per corruption and severity (a fixed seeded subset)",
               parse=int, check=lambda v: None if isinstance(v, int) and v > 0 else "must be a positive integer"),
        Option("cifar10c_corruptions", "all", "comma-separated CIFAR-10-C corruptions, or all (those available)",
               check=_check_corruptions),
    )

    def evaluate(self, model, ctx):
        opts = ctx.options
        problem = _check_corruptions(opts.get("cifar10c_corruptions", "all"))
        if problem:
            raise HarnessError(f"cifar10c: {problem}")
        wanted = parse_corruptions(opts.get("cifar10c_corruptions", "all"))
        n = opts.get("cifar10c_subset", 1000)
        subset_seed = derive_seed(ctx.seed, "cifar10c", "subset")
        if opts.get("cifar10c_dir"):
            require_cifar10_labels(self.name, ctx)
            source = OfficialRelease(Path(opts["cifar10c_dir"]), n, subset_seed)
            names = _select(wanted, source.corruptions, f"in {source.root}")
            kind = "official"
        else:
            source = GeneratedCorruptions(ctx.data.test, n, subset_seed, ctx.cache_dir)
            names = _select(wanted, source.corruptions, "to generate (motion_blur, snow and frost need the "
                            "official release: give --cifar10c-dir)")
            kind = "generated"

        per_corruption, subset = {}, 0
        for name in tqdm(names, desc=f"cifar10c ({kind})", leave=False, disable=not ctx.progress):
            images, labels = source.load(name)
            subset = images.shape[1]
            per_corruption[name] = {
                str(s): round(accuracy(model, uint8_split(images[i], labels[i]), ctx.data, ctx.device), 4)
                for i, s in enumerate(corruptions.SEVERITY_LEVELS)
            }
        per_corruption_mean = {name: round(float(np.mean(list(accs.values()))), 4)
                               for name, accs in per_corruption.items()}
        mean = round(float(np.mean([a for accs in per_corruption.values() for a in accs.values()])), 4)
        result = {"mean_accuracy": mean}
        if ctx.baseline and "mean_accuracy" in ctx.baseline:
            result["mean_accuracy_delta"] = round(mean - ctx.baseline["mean_accuracy"], 4)
        result |= {"source": kind, "subset": subset, "corruptions": names,
                   "per_corruption_mean": per_corruption_mean, "per_corruption": per_corruption}
        if kind == "generated":
            result["clean_data"] = ctx.data.label
        return result

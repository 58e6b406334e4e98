"""CIFAR-10.2 (Lu et al., "Harder or Different? A Closer Look at Distribution Shift in
Dataset Reproduction", ICML 2020 workshop on uncertainty and robustness): a test set collected
anew the way CIFAR-10's was, read from the release's ``.npz`` (``images`` uint8 (N, 32, 32, 3),
``labels`` in CIFAR-10's order; its other arrays are not read)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from harness.api import Evaluator, Option, TensorSplit
from harness.errors import HarnessError
from harness.api import accuracy
from harness_plugins.evaluators.cifar10c import IMAGE_SHAPE, require_cifar10_labels, uint8_split

GIVE_PATH = "give --cifar102-path with the release's cifar102_test.npz (arrays images and labels)"


def load_cifar102(path: Path) -> TensorSplit:
    if not path.is_file():
        raise HarnessError(f"cifar102: {path} does not exist; {GIVE_PATH}")
    try:
        with np.load(path) as release:
            found = sorted(release.files)
            if "images" not in found or "labels" not in found:
                raise HarnessError(f"cifar102: {path} holds {', '.join(found) or 'no arrays'}, not images and "
                                   f"labels; {GIVE_PATH}")
            images, labels = release["images"], release["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"cifar102: {path} is not a readable .npz file ({exc}); {GIVE_PATH}") from None
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or labels.shape != (len(images),):
        raise HarnessError(f"cifar102: {path} has images {images.dtype} {images.shape} and labels {labels.shape}; "
                           f"expected uint8 (N, 32, 32, 3) and (N,)")
    return uint8_split(images, labels)


class Cifar102(Evaluator):
    name = "cifar102"
    description = "accuracy on CIFAR-10.2 (Lu et al., 2020), a CIFAR-10 test set collected anew; needs --cifar102-path"
    options = (Option("cifar102_path", None, "the CIFAR-10.2 release's test .npz (images, labels)"),)

    def evaluate(self, model, ctx):
        path = ctx.options.get("cifar102_path")
        if not path:
            raise HarnessError(f"cifar102: no data set given; {GIVE_PATH}")
        require_cifar10_labels(self.name, ctx)
        split = load_cifar102(Path(path))
        acc = round(accuracy(model, split, ctx.data, ctx.device), 4)
        result = {"accuracy": acc}
        if ctx.baseline and "accuracy" in ctx.baseline:
            result["accuracy_delta"] = round(acc - ctx.baseline["accuracy"], 4)
        return result | {"n": len(split)}

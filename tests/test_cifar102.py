import numpy as np
import pytest
import torch
from torch import nn

from harness.api import DataSplits, EvalContext
from harness.errors import HarnessError
from harness.training import accuracy
from harness_plugins.datasets import CIFAR10_CLASSES
from harness_plugins.evaluators.cifar10c import uint8_split
from harness_plugins.evaluators.cifar102 import Cifar102


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()


def cifar10_like(n_classes=10) -> DataSplits:
    split = uint8_split(np.zeros((2, 32, 32, 3), dtype=np.uint8), np.arange(2))
    names = tuple(CIFAR10_CLASSES) if n_classes == 10 else tuple(str(i) for i in range(n_classes))
    return DataSplits(split, split, split, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), num_classes=n_classes,
                      label="synthetic", class_names=names)


def context(path, baseline=None, data=None) -> EvalContext:
    return EvalContext(data or cifar10_like(), torch.device("cpu"), {"cifar102_path": path}, 0, "unused",
                       1 if baseline else 0, baseline)


@pytest.fixture
def release(tmp_path):
    """A small file in the layout of the release's cifar102_test.npz, with its extra arrays."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=40).astype(np.int64)
    path = tmp_path / "cifar102_test.npz"
    np.savez(path, images=images, labels=labels, label_names=np.array(CIFAR10_CLASSES),
             keywords=np.array([f"word{i}" for i in range(40)], dtype=object))
    return path, images, labels


def test_accuracy_equals_the_harness_accuracy_on_the_same_images(release):
    path, images, labels = release
    model, ctx = tiny_model(), context(str(path))
    result = Cifar102().evaluate(model, ctx)
    expected = accuracy(model, uint8_split(images, labels), ctx.data, ctx.device)
    assert result["accuracy"] == pytest.approx(expected, abs=1e-4)
    assert result["n"] == 40 and "accuracy_delta" not in result
    later = Cifar102().evaluate(model, context(str(path), baseline={"accuracy": 30.0}))
    assert later["accuracy_delta"] == pytest.approx(expected - 30.0, abs=1e-4)


def test_missing_path_or_file_raises(tmp_path):
    with pytest.raises(HarnessError, match="cifar102: no data set given; give --cifar102-path"):
        Cifar102().evaluate(tiny_model(), context(None))
    with pytest.raises(HarnessError, match="absent.npz does not exist; give --cifar102-path"):
        Cifar102().evaluate(tiny_model(), context(str(tmp_path / "absent.npz")))


def test_malformed_files_raise(tmp_path):
    no_labels = tmp_path / "no_labels.npz"
    np.savez(no_labels, images=np.zeros((3, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(HarnessError, match="holds images, not images and labels"):
        Cifar102().evaluate(tiny_model(), context(str(no_labels)))
    channels_first = tmp_path / "channels_first.npz"
    np.savez(channels_first, images=np.zeros((3, 3, 32, 32), dtype=np.uint8), labels=np.zeros(3))
    with pytest.raises(HarnessError, match=r"expected uint8 \(N, 32, 32, 3\)"):
        Cifar102().evaluate(tiny_model(), context(str(channels_first)))
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("not an archive")
    with pytest.raises(HarnessError, match="not a readable .npz"):
        Cifar102().evaluate(tiny_model(), context(str(not_npz)))


def test_a_model_of_other_classes_is_refused(release):
    path, _, _ = release
    with pytest.raises(HarnessError, match="needs a model of CIFAR-10's 10 classes"):
        Cifar102().evaluate(tiny_model(), context(str(path), data=cifar10_like(n_classes=100)))

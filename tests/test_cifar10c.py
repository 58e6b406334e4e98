import re

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from harness.api import DataSplits, EvalContext, TensorSplit
from harness.resolve import resolve
from harness.config import BenchConfig
from harness.errors import HarnessError
from harness.training import accuracy
from harness_plugins.datasets import CIFAR10_CLASSES
from harness_plugins.evaluators import corruptions
from harness_plugins.evaluators.cifar10c import Cifar10C, OfficialRelease, uint8_split

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "fog", "spatter",
          "elastic_transform")
FAST = "gaussian_noise,fog,jpeg_compression"


def natural_like_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields with a sharp-edged square: blur, noise and warps all show on them."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.15, 0.85, size=(n, 4, 4, 3))
    images = ndimage.zoom(coarse, (1, 8, 8, 1), order=1)
    for i, (top, left) in enumerate(rng.integers(4, 20, size=(n, 2))):
        images[i, top:top + 9, left:left + 9] = rng.uniform(0, 1, size=3)
    return (images * 255).astype(np.uint8)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()


def splits(n: int = 12) -> DataSplits:
    images = natural_like_images(n, seed=1)
    test = uint8_split(images, np.arange(n) % 10)
    return DataSplits(test, test, test, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=10,
                      label="synthetic", class_names=tuple(CIFAR10_CLASSES))


def context(tmp_path, iteration=0, baseline=None, seed=0, data=None, **options) -> EvalContext:
    opts = {"cifar10c_dir": None, "cifar10c_subset": 1000, "cifar10c_corruptions": "all"} | options
    return EvalContext(data or splits(), torch.device("cpu"), opts, seed, str(tmp_path / "cache"), iteration, baseline)


@pytest.fixture
def fake_release(tmp_path):
    """2 corruptions x 5 severities x 20 images in the official layout; pixel (0, 0) of each
    image holds its severity block and its index."""
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    rng = np.random.default_rng(5)
    arrays = {}
    for name in ("gaussian_noise", "motion_blur"):
        images = rng.integers(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.repeat(np.arange(5), 20)
        images[:, 0, 0, 1] = np.tile(np.arange(20), 5)
        np.save(root / f"{name}.npy", images)
        arrays[name] = images
    labels = np.tile(np.arange(20) % 10, 5).astype(np.uint8)
    np.save(root / "labels.npy", labels)
    return root, arrays, labels


# ---------------------------------------------------------------- corruptions
@pytest.mark.parametrize("name", list(corruptions.CORRUPTIONS))
def test_corruption_keeps_shape_and_dtype_and_changes_the_image(name):
    images = natural_like_images(6)
    before = images.copy()
    for severity in corruptions.SEVERITY_LEVELS:
        out = corruptions.corrupt(images, name, severity, seed=severity)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert np.any(out != images), f"{name} at severity {severity} left the images as they were"
    np.testing.assert_array_equal(images, before)  # the input is not modified


@pytest.mark.parametrize("name", list(corruptions.CORRUPTIONS))
def test_corruption_clips_instead_of_wrapping_around(name):
    # uint8 wrap-around would turn overflowing white pixels black and underflowing black ones white
    white = np.full((4, 32, 32, 3), 255, dtype=np.uint8)
    black = np.zeros_like(white)
    assert corruptions.corrupt(white, name, 5, seed=0).mean() > 150
    assert corruptions.corrupt(black, name, 5, seed=0).mean() < 100


def test_severity_5_changes_images_more_than_severity_1():
    images = natural_like_images(16)

    def change(name, severity):
        return np.abs(corruptions.corrupt(images, name, severity, seed=0).astype(float) - images).mean()

    weaker = [name for name in corruptions.CORRUPTIONS if change(name, 5) <= change(name, 1)]
    # make_cifar_c.py's elastic_transform shrinks its affine jitter from 2.6 to 1.0 pixels as
    # severity grows (the elastic field grows instead), so its severity 1 moves pixels most
    assert weaker == ["elastic_transform"]


@pytest.mark.parametrize("name", list(corruptions.CORRUPTIONS))
def test_generation_is_deterministic_for_a_seed(name):
    images = natural_like_images(4)
    first = corruptions.corrupt(images, name, 3, seed=7)
    np.testing.assert_array_equal(first, corruptions.corrupt(images, name, 3, seed=7))
    if name in RANDOM:
        assert np.any(first != corruptions.corrupt(images, name, 3, seed=8))


def test_batched_zoom_equals_scipy_zoom():
    x = natural_like_images(3).astype(np.float32) / 255
    for factor in np.arange(1, 1.26, 0.01):
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        zoomed = ndimage.zoom(x[:, top:top + crop, top:top + crop], (1, factor, factor, 1), order=1)
        trim = (zoomed.shape[1] - 32) // 2
        np.testing.assert_allclose(corruptions._clipped_zoom(x, factor), zoomed[:, trim:trim + 32, trim:trim + 32],
                                   atol=1e-5)


def test_hsv_conversion_round_trips_and_matches_known_colours():
    x = natural_like_images(2) / 255.0
    np.testing.assert_allclose(corruptions._hsv_to_rgb(corruptions._rgb_to_hsv(x)), x, atol=1e-12)
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0.5], [0.4, 0.4, 0.4]], dtype=float)
    expected = np.array([[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 0.5], [0, 0, 0.4]])
    np.testing.assert_allclose(corruptions._rgb_to_hsv(colours), expected, atol=1e-12)


def test_canny_keeps_strong_edges_and_drops_weak_ones():
    step = np.zeros((2, 32, 32), dtype=np.uint8)
    step[0, :, 16:] = 200  # Sobel response 800: above the high threshold
    step[1, :, 16:] = 20  # response 80: between the thresholds and connected to no strong edge
    edges = corruptions._canny(step, 50, 150)
    assert set(np.flatnonzero(edges[0].any(axis=0))) <= {15, 16} and edges[0].any(axis=1).all()
    assert not edges[1].any()


def test_histogram_equalisation_spreads_levels_like_opencv():
    image = np.repeat(np.array([10, 20, 30], dtype=np.uint8), 12).reshape(6, 6)
    assert sorted(set(corruptions._equalize_hist(image).ravel())) == [0, 128, 255]
    np.testing.assert_array_equal(corruptions._equalize_hist(np.full((4, 4), 7, np.uint8)), 7)


def test_unknown_or_release_only_corruption_is_refused():
    with pytest.raises(HarnessError, match="valid choices: .*gaussian_noise"):
        corruptions.corrupt(natural_like_images(1), "motion_blur", 1, seed=0)
    with pytest.raises(ValueError, match="severity 6"):
        corruptions.corrupt(natural_like_images(1), "fog", 6, seed=0)


# ---------------------------------------------------------------- official release
def test_official_release_takes_the_same_images_from_every_severity_block(fake_release):
    root, arrays, labels = fake_release
    release = OfficialRelease(root, n=8, seed=3)
    assert release.corruptions == ["gaussian_noise", "motion_blur"]
    images, got_labels = release.load("motion_blur")
    assert images.shape == (5, 8, 32, 32, 3) and images.dtype == np.uint8 and got_labels.shape == (5, 8)
    idx = images[0, :, 0, 0, 1].astype(int)
    assert len(set(idx)) == 8 and list(idx) == sorted(idx)
    for s in range(5):
        assert np.all(images[s, :, 0, 0, 0] == s)
        np.testing.assert_array_equal(images[s], arrays["motion_blur"][s * 20 + idx])
        np.testing.assert_array_equal(got_labels[s], idx % 10)


def test_evaluator_on_official_release_matches_direct_accuracy(fake_release, tmp_path):
    root, arrays, labels = fake_release
    model = tiny_model()
    # a subset larger than the release takes all of it, so the images are known here
    ctx = context(tmp_path, cifar10c_dir=str(root), cifar10c_subset=50)
    result = Cifar10C().evaluate(model, ctx)
    assert result["source"] == "official" and result["subset"] == 20
    assert set(result["per_corruption"]) == {"gaussian_noise", "motion_blur"}
    every = []
    for name, by_severity in result["per_corruption"].items():
        assert list(by_severity) == ["1", "2", "3", "4", "5"]
        for s in range(5):
            block = slice(s * 20, s * 20 + 20)
            expected = accuracy(model, uint8_split(arrays[name][block], labels[block]), ctx.data, ctx.device)
            assert by_severity[str(s + 1)] == pytest.approx(expected, abs=1e-4)
            every.append(expected)
        assert result["per_corruption_mean"][name] == pytest.approx(np.mean(list(by_severity.values())), abs=1e-4)
    assert result["mean_accuracy"] == pytest.approx(np.mean(every), abs=1e-4)
    assert "mean_accuracy_delta" not in result

    later = Cifar10C().evaluate(model, context(tmp_path, 1, {"mean_accuracy": 40.0}, cifar10c_dir=str(root),
                                               cifar10c_subset=8, cifar10c_corruptions="motion_blur"))
    assert list(later["per_corruption"]) == ["motion_blur"] and later["subset"] == 8
    assert later["mean_accuracy_delta"] == pytest.approx(later["mean_accuracy"] - 40.0, abs=1e-4)


def test_missing_or_malformed_release_raises(fake_release, tmp_path):
    root, _, _ = fake_release
    model = tiny_model()
    with pytest.raises(HarnessError, match="cifar10c: .*is not a directory"):
        Cifar10C().evaluate(model, context(tmp_path, cifar10c_dir=str(tmp_path / "absent")))
    with pytest.raises(HarnessError, match="fog not available in"):
        Cifar10C().evaluate(model, context(tmp_path, cifar10c_dir=str(root), cifar10c_corruptions="fog"))
    np.save(root / "motion_blur.npy", np.zeros((100, 28, 28, 3), dtype=np.uint8))
    with pytest.raises(HarnessError, match="motion_blur.npy is uint8 \\(100, 28, 28, 3\\)"):
        Cifar10C().evaluate(model, context(tmp_path, cifar10c_dir=str(root)))
    (root / "labels.npy").unlink()
    with pytest.raises(HarnessError, match="labels.npy does not exist"):
        Cifar10C().evaluate(model, context(tmp_path, cifar10c_dir=str(root)))


# ---------------------------------------------------------------- generated
def test_generated_evaluation_reports_the_documented_keys(tmp_path):
    result = Cifar10C().evaluate(tiny_model(), context(tmp_path, cifar10c_subset=6, cifar10c_corruptions=FAST))
    assert result["source"] == "generated" and result["subset"] == 6 and result["clean_data"] == "synthetic"
    assert result["corruptions"] == FAST.split(",")
    accs = [a for by_severity in result["per_corruption"].values() for a in by_severity.values()]
    assert len(accs) == 15 and all(0 <= a <= 100 for a in accs)
    assert result["mean_accuracy"] == pytest.approx(np.mean(accs), abs=1e-4)
    assert set(result["per_corruption_mean"]) == set(FAST.split(","))
    assert "mean_accuracy_delta" not in result

    later = Cifar10C().evaluate(tiny_model(1), context(tmp_path, 2, result, cifar10c_subset=6,
                                                       cifar10c_corruptions=FAST))
    assert later["mean_accuracy_delta"] == pytest.approx(later["mean_accuracy"] - result["mean_accuracy"], abs=1e-4)


def test_cache_hit_gives_identical_results_without_regenerating(tmp_path, monkeypatch):
    model = tiny_model()
    first = Cifar10C().evaluate(model, context(tmp_path, cifar10c_subset=6, cifar10c_corruptions=FAST))
    assert len(list((tmp_path / "cache" / "cifar10c").glob("*.npz"))) == 3

    def regenerate(*args, **kwargs):
        raise AssertionError("regenerated although the cache holds these images")

    monkeypatch.setattr(corruptions, "corrupt", regenerate)
    assert Cifar10C().evaluate(model, context(tmp_path, cifar10c_subset=6, cifar10c_corruptions=FAST)) == first
    # another seed means other images and other noise: not a cache hit
    with pytest.raises(AssertionError, match="regenerated"):
        Cifar10C().evaluate(model, context(tmp_path, seed=1, cifar10c_subset=6, cifar10c_corruptions=FAST))


def test_generation_needs_32x32_rgb_and_refuses_release_only_corruptions(tmp_path):
    with pytest.raises(HarnessError, match="motion_blur not available to generate.*--cifar10c-dir"):
        Cifar10C().evaluate(tiny_model(), context(tmp_path, cifar10c_corruptions="fog,motion_blur"))
    with pytest.raises(HarnessError, match="unknown corruption rain; valid choices: all, gaussian_noise"):
        Cifar10C().evaluate(tiny_model(), context(tmp_path, cifar10c_corruptions="rain"))
    grey = splits()
    grey.test = TensorSplit(grey.test.images[:, :1], grey.test.labels)
    with pytest.raises(HarnessError, match="32x32 RGB"):
        Cifar10C().evaluate(tiny_model(), context(tmp_path, data=grey))


@pytest.mark.parametrize("option, value, message", [
    ("cifar10c_subset", "0", "--cifar10c-subset 0: must be a positive integer"),
    ("cifar10c_corruptions", "fog,rain", "--cifar10c-corruptions 'fog,rain': unknown corruption rain"),
    ("cifar10c_dir", "/nonexistent/CIFAR-10-C", "--cifar10c-dir '/nonexistent/CIFAR-10-C': no such directory"),
])
def test_bad_options_are_refused_before_the_run(option, value, message):
    cfg = BenchConfig(evaluators=["cifar10c"], options={option: value})
    with pytest.raises(HarnessError, match=re.escape(message)):
        resolve(cfg)


def test_options_from_the_command_line_are_parsed():
    options = resolve(BenchConfig(evaluators=["cifar10c"], options={"cifar10c_subset": "25"})).config.options
    assert options["cifar10c_subset"] == 25
    assert options["cifar10c_dir"] is None and options["cifar10c_corruptions"] == "all"

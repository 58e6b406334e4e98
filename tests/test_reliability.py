"""Issue 16: every bad input of the review is one line on stderr, exit status 2, and nothing
written; each test starts from the input that failed there. Error paths run in process
through click's CliRunner (no subprocess per case)."""

import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from harness.cli import main

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def harness(*args, env=None):
    """The `harness` command in this process; stderr apart from stdout."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_line(result, *needles):
    """Exit 2, one line on stderr naming every needle, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def image_tree(tmp_path):
    """A CIFAR-10-shaped image-folder tree of random 32x32 JPEGs: 3 train and 2 test per class."""
    root = tmp_path / "cifar"
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{i:04d}.jpg")
    return root


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def bench_on(root, *extra):
    return harness("bench", "--model", "resnet20", "--data-dir", root, "--budget", "smoke", "--calib-size", "4",
                   "--val-size", "4", *extra)


# ---------------------------------------------------------------- the data set is checked, its bad file named
@pytest.mark.parametrize("spoil, needles", [
    ("empty", ["cifar/train has no images", "in class folders airplane, automobile"]),
    ("corrupt", ["corrupt image train/cat/0001.jpg"]),
    ("text", ["corrupt image test/ship/notes.jpg", "cannot identify image file"]),
    ("size", ["image train/dog/big.jpg is 40x40 pixels; the others are 32x32"]),
    ("train-only", ["data directory cifar has train/ but no test/ folder"]),
])
def test_a_bad_image_folder_is_one_line_naming_the_file(in_tmp, image_tree, spoil, needles):
    if spoil == "empty":
        for f in image_tree.glob("train/*/*.jpg"):
            f.unlink()
    elif spoil == "corrupt":
        victim = image_tree / "train" / "cat" / "0001.jpg"
        victim.write_bytes(victim.read_bytes()[:100])
    elif spoil == "text":
        (image_tree / "test" / "ship" / "notes.jpg").write_text("not an image\n")
    elif spoil == "size":
        Image.new("RGB", (40, 40)).save(image_tree / "train" / "dog" / "big.jpg")
    else:
        for f in sorted(image_tree.glob("test/**/*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        (image_tree / "test").rmdir()
    one_line(bench_on("cifar"), *needles)
    assert files_under(in_tmp / "runs") == [] and files_under(in_tmp / "cache") == []


def test_a_model_that_cannot_take_the_data_is_named_before_anything_is_trained(in_tmp):
    result = harness("bench", "--dataset", "breast-cancer", "--budget", "smoke")
    one_line(result, "model tiny-resnet cannot take data set breast-cancer (inputs of shape (30,))")
    assert files_under(in_tmp / "runs") == [] and files_under(in_tmp / "cache") == []


# ---------------------------------------------------------------- folders and checkpoints, before any data loads
@pytest.mark.parametrize("args, env, needles", [
    (["--runs-dir", "afile"], None, ["--runs-dir afile is not a folder"]),
    (["--runs-dir", "afile/runs"], None, ["--runs-dir afile/runs is not a folder (afile is a file)"]),
    (["--cache-dir", "afile"], None, ["--cache-dir afile is not a folder"]),
    ([], {"HARNESS_CACHE": "afile"}, ["$HARNESS_CACHE afile is not a folder"]),
])
def test_runs_and_cache_folders_must_be_folders(in_tmp, args, env, needles):
    (in_tmp / "afile").write_text("mine\n")
    one_line(harness("bench", "--budget", "smoke", *args, env=env), *needles)
    assert (in_tmp / "afile").read_text() == "mine\n"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["afile"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_runs_folder_is_refused_before_the_baseline(in_tmp):
    (in_tmp / "ro").mkdir(mode=0o555)
    one_line(harness("bench", "--budget", "smoke", "--runs-dir", "ro/runs"), "cannot be written")
    assert files_under(in_tmp / "cache") == []


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize("make, needles", [
    (lambda p: p.mkdir(), ["checkpoint ck is a directory"]),
    (lambda p: torch.save({"state_dict": _Evil()}, p),
     ["the weights-only unpickler refused it: Trying to load unsupported GLOBAL posix.system"]),
    (lambda p: p.write_bytes(pickle.dumps(_Evil(), protocol=4)), ["the weights-only unpickler refused it"]),
    (lambda p: (torch.save({"w": torch.zeros(1000)}, p), p.write_bytes(p.read_bytes()[:3000])), ["is corrupt"]),
])
def test_a_bad_checkpoint_is_named_before_the_data_loads(in_tmp, image_tree, make, needles):
    make(in_tmp / "ck")
    line = one_line(bench_on("cifar", "--checkpoint", "ck"), *needles)
    assert "weights_only=False" not in line and "retry" not in line.lower()  # never torch's advice to unpickle
    assert not (in_tmp / "pwned.txt").exists()
    assert files_under(in_tmp / "cache") == [], "the data set was loaded before the checkpoint was checked"


@pytest.mark.parametrize("model, needles", [
    ("timm:nosuch_vit", ["unknown timm model 'nosuch_vit'", "valid choices"]),
    ("timm:resnet18", ["is a ResNet, not a VisionTransformer"]),
    ("torchvision:nosuch", ["unknown torchvision model 'torchvision:nosuch'", "torchvision:resnet18"]),
])
def test_an_unknown_model_is_named_not_the_network(in_tmp, model, needles):
    line = one_line(harness("bench", "--model", model), *needles)
    assert "download" not in line
    assert files_under(in_tmp / "cache") == [] and files_under(in_tmp / "runs") == []


# ---------------------------------------------------------------- outputs and plugin options
@pytest.mark.parametrize("command", ["leaderboard", "decisions"])
def test_out_naming_a_file_is_refused(in_tmp, command):
    (in_tmp / "board").write_text("mine\n")
    args = ["--runs", "runs", "--out", "board"] if command == "leaderboard" else ["runs", "--out", "board"]
    (in_tmp / "runs").mkdir()
    one_line(harness(command, *args), "--out board is not a folder")
    assert (in_tmp / "board").read_text() == "mine\n"


def test_an_unknown_country_is_refused_with_valid_codes(in_tmp):
    one_line(harness("bench", "--evaluators", "co2", "--country", "ZZZ"), "--country 'ZZZ'", "USA")
    assert files_under(in_tmp / "runs") == [] and files_under(in_tmp / "cache") == []


# ---------------------------------------------------------------- click's own usage errors
@pytest.mark.parametrize("args, needle", [
    (["bench", "--iterations", "x"], "Invalid value for '--iterations': 'x' is not a valid integer"),
    (["bench", "--nosuch"], "No such option '--nosuch'"),
    (["bench", "--budget", "huge"], "'huge' is not one of 'smoke', 'quick', 'paper'"),
    (["sweep"], "Missing argument 'CONFIG_FILE'"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_usage_errors_are_one_line_with_where_to_look(in_tmp, args, needle):
    line = one_line(harness(*args), needle)
    assert line.endswith("--help)")

"""Issue 16: every bad input of the review is one line on stderr, exit status 2, and nothing
written; each test starts from the input that failed there. Error paths run in process
through click's CliRunner (no subprocess per case)."""

import os
import pickle
import shutil

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


def test_an_unwritable_runs_folder_is_refused_before_the_baseline(in_tmp):
    """It was reported only after the baseline step had trained. /proc takes no file, even
    from root (a folder with mode 0555 would, so it cannot stand in for one here)."""
    one_line(harness("bench", "--budget", "smoke", "--runs-dir", "/proc/prunebench-runs"),
             "--runs-dir /proc/prunebench-runs cannot be written (/proc: ")
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
    ("timm:convnext_atoo", ["unknown timm model 'convnext_atoo'", "timm:convnext_atto"]),
    ("torchvision:nosuch", ["unknown torchvision model 'nosuch'", "list_models()"]),
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


# ---------------------------------------------------------------- caches keyed by content
def test_other_weights_at_the_same_path_train_their_own_baseline(in_tmp):
    """The baseline cache was keyed by the checkpoint's path and size: other weights of the same
    size at the same path reused the old baseline (accuracy 8.61 before the baseline step and
    96.67 after it, with 0 baseline epochs)."""
    import json

    from harness.models import create_model

    def iteration_0(name):
        row = json.loads((in_tmp / "runs" / name / "iterations.jsonl").read_text().splitlines()[0])
        return row["accuracy_before_baseline"], row["accuracy"]

    trained = harness("bench", "--budget", "smoke", "--iterations", "0", "--name", "trained")
    assert trained.exit_code == 0, trained.output
    torch.manual_seed(0)
    weights = {"a": create_model("tiny-resnet", 10, (1, 8, 8), "digits").state_dict(),
               "b": torch.load(in_tmp / "runs" / "trained" / "models" / "iter_000.pt")["state_dict"]}
    for name in ("a", "b"):
        torch.save(weights[name], in_tmp / "ck.pt")  # the same path, the same size, other weights
        result = harness("bench", "--checkpoint", "ck.pt", "--budget", "smoke", "--iterations", "0",
                         "--baseline-epochs", "0", "--name", name)
        assert result.exit_code == 0, result.output
        assert "baseline: reusing" not in result.output
        before, after = iteration_0(name)
        assert before == after  # 0 baseline epochs: the weights given are the weights measured
    assert iteration_0("a") != iteration_0("b")
    again = harness("bench", "--checkpoint", "ck.pt", "--budget", "smoke", "--iterations", "0",
                    "--baseline-epochs", "0", "--name", "c")
    assert "baseline: reusing" in again.output  # the same content is still reused


def test_a_changed_image_folder_is_read_again(in_tmp, image_tree):
    """The data cache was keyed by the folder's path: after 36 of 40 test images were deleted,
    the run still used 40."""
    import json

    def test_size(name):
        result = bench_on("cifar", "--iterations", "0", "--name", name, "--scratch-epochs", "0")
        assert result.exit_code == 0, result.output
        return json.loads((in_tmp / "runs" / name / "config.json").read_text())["data"]["test"]

    assert test_size("a") == 20
    for f in sorted(image_tree.glob("test/*/0001.jpg")):
        f.unlink()
    assert test_size("b") == 10
    assert len(list((in_tmp / "cache" / "datasets").glob("cifar10-folder-*.pt"))) == 1  # the stale entry is gone


# ---------------------------------------------------------------- records: strict JSON, the umask, no leftovers
def test_records_are_strict_json_and_say_which_numbers_were_not_finite(tmp_path):
    import json

    from harness import records

    records.append_iteration(tmp_path, {"iteration": 1, "similarities": {"cka": float("nan")}, "loss": float("inf")})
    text = (tmp_path / "iterations.jsonl").read_text()

    def refuse(constant):
        raise ValueError(constant)

    row = json.loads(text, parse_constant=refuse)  # a strict reader
    assert row["similarities"]["cka"] is None and row["loss"] is None
    assert row["non_finite"] == {"similarities.cka": "nan", "loss": "inf"}
    assert records.read_iterations(tmp_path) == [row]


def test_record_files_follow_the_umask(tmp_path):
    from harness import records

    old = os.umask(0o027)
    try:
        records.atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.slow
def test_a_killed_writers_temporary_files_are_removed_on_the_next_start(in_tmp):
    made = harness("bench", "--budget", "smoke", "--iterations", "1", "--name", "r")
    assert made.exit_code == 0, made.output
    run = in_tmp / "runs" / "r"
    (run / "result.json").unlink()
    leftovers = [run / ".iterations.jsonl.x1y2.tmp", run / "models" / ".iter_002.pt.a7b8.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    assert harness("bench", "--resume", run).exit_code == 0
    assert not any(p.exists() for p in leftovers)
    assert not list(run.rglob("*.tmp"))


def test_a_removal_claimed_by_a_dead_process_is_finished(in_tmp, image_tree):
    """A process killed while removing a stale cache entry leaves its claim (the entry renamed
    ``.<name>-<pid>``); the next load that writes the cache removes it."""
    import subprocess
    import tarfile

    for split in ("train", "test"):
        with tarfile.open(in_tmp / f"{split}.tar.gz", "w:gz") as tar:
            tar.add(image_tree / split, arcname=split)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    result = harness("bench", "--model", "resnet20", "--data-dir", ".", "--budget", "smoke", "--calib-size", "4",
                     "--val-size", "4", "--iterations", "0", "--scratch-epochs", "0", "--name", "a")
    assert result.exit_code == 0, result.output
    datasets = in_tmp / "cache" / "datasets"
    (decoded,) = datasets.glob("cifar10-archives-*.pt")
    (datasets / f".cifar10-archives-old-{dead.pid}" / "train").mkdir(parents=True)  # as a killed remover leaves it
    decoded.unlink()  # so that the next run decodes and writes the cache again
    result = harness("bench", "--model", "resnet20", "--data-dir", ".", "--budget", "smoke", "--calib-size", "4",
                     "--val-size", "4", "--iterations", "0", "--scratch-epochs", "0", "--name", "b")
    assert result.exit_code == 0, result.output
    assert [p.name for p in datasets.iterdir()] == [decoded.name]


# ---------------------------------------------------------------- one writer per run and per sweep
@pytest.mark.slow
def test_two_resumes_started_together_one_refused_records_as_uninterrupted(tmp_path):
    """Two --resume of one run at once wrote iterations 0,1,2,2,3,3,4,4,5,5 and a decision path
    FFFFFFFFF. Now both start together: one writes, the other is refused in one line naming
    the writer's pid, and the records equal those of an uninterrupted run."""
    import json
    import subprocess
    import sys

    from conftest import run_cli, without_wall_times
    from harness import records

    args = ["--budget", "smoke", "--iterations", "3", "--candidate-epochs", "0.2", "--runs-dir", str(tmp_path)]
    assert run_cli("bench", *args, "--name", "straight").returncode == 0
    straight, partial = tmp_path / "straight", tmp_path / "partial"
    shutil.copytree(straight, partial)
    (partial / "result.json").unlink()
    lines = (partial / "iterations.jsonl").read_text().splitlines(keepends=True)
    (partial / "iterations.jsonl").write_text("".join(lines[:2]))  # as if killed after iteration 1
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "bench", "--resume", str(partial)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=600), p.stderr.read(), p.pid) for p in procs)
    (ok, _, winner), (refused, message, _) = outcomes
    assert (ok, refused) == (0, 2), outcomes
    assert message.count("\n") == 1
    assert f"run {partial} is being written by another process (pid {winner})" in message
    assert [r["iteration"] for r in records.read_iterations(partial)] == [0, 1, 2, 3]
    assert without_wall_times(records.read_iterations(partial)) == \
        without_wall_times(records.read_iterations(straight))
    assert records.read_result(partial) == records.read_result(straight)
    assert json.loads((partial / "config.json").read_text()) == json.loads((straight / "config.json").read_text())


SWEEP = """
method = ["layer-only"]
budget = "smoke"
iterations = 1
runs_dir = "runs"
"""


@pytest.mark.slow
def test_one_process_per_shard_of_a_sweep(in_tmp):
    from harness import sweep

    (in_tmp / "s.toml").write_text(SWEEP)
    configs = [sweep.config_from_options(r) for r in sweep.expand("s.toml")]
    with sweep.sweep_lock("s.toml", configs, (1, 1)):
        line = one_line(harness("sweep", "s.toml"), f"sweep s.toml (shard 1/1) is being written by another process "
                                                    f"(pid {os.getpid()})")
        assert not (in_tmp / "runs" / "layer-only-s0").exists()
        other = harness("sweep", "s.toml", "--dry-run")  # looking is not writing
        assert other.exit_code == 0, line
    assert harness("sweep", "s.toml").exit_code == 0  # the lock went with its holder


@pytest.mark.slow
def test_a_sweep_builds_the_board_of_its_own_runs_only(in_tmp):
    """A sweep rebuilt every board from everything under its runs folder, so one corrupt record
    anywhere failed every sweep afterwards; now it reads its own runs only."""
    (in_tmp / "s.toml").write_text(SWEEP)
    other = harness("bench", "--budget", "smoke", "--iterations", "1", "--method", "filter-only", "--name", "other")
    assert other.exit_code == 0, other.output
    (in_tmp / "runs" / "broken").mkdir()
    (in_tmp / "runs" / "broken" / "config.json").write_text("{cut short")
    result = harness("sweep", "s.toml")
    assert result.exit_code == 0, result.output
    assert "broken" not in result.stderr
    board = (in_tmp / "runs" / "s-leaderboard" / "tables" / "digits-scikit-learn_tiny-resnet.csv").read_text()
    assert "layer-only" in board and "filter-only" not in board


def test_a_data_dir_the_data_set_ignores_does_not_change_the_baseline(in_tmp):
    """digits ignores --data-dir, which still changed the baseline cache key: the key is now
    the content of the training split itself."""
    (in_tmp / "somewhere").mkdir()
    first = harness("bench", "--budget", "smoke", "--iterations", "0", "--name", "a")
    second = harness("bench", "--budget", "smoke", "--iterations", "0", "--name", "b", "--data-dir", "somewhere")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert "baseline: reusing" not in first.output and "baseline: reusing" in second.output


def test_a_refused_archive_leaves_nothing_in_the_cache(in_tmp):
    import io
    import tarfile

    (in_tmp / "arch").mkdir()
    for split in ("train", "test"):
        with tarfile.open(in_tmp / "arch" / f"{split}.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo("../escape.txt")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    one_line(bench_on("arch"), "arch/train.tar.gz holds no class folders (it needs train/<class>/*.jpg)")
    assert not (in_tmp / "escape.txt").exists()
    assert files_under(in_tmp / "cache") in ([], ["datasets"]) and files_under(in_tmp / "runs") == []


def test_plugin_options_are_finite_too(in_tmp):
    one_line(harness("bench", "--similarity", "rbf-cka", "--rbf-cka-sigma", "nan"), "--rbf-cka-sigma nan must be a finite number")
    assert files_under(in_tmp / "runs") == []

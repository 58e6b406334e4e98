"""`harness pretrain`: clean weights, trained on no image that a run's decisions read, with a
card that says how they were made; they load as --checkpoint."""

import hashlib
import json
from pathlib import Path

import pytest

from conftest import needs_shared, run_cli
from harness.models import create_model
from harness.pretrain import _row_digests, decision_free_splits
from harness.settings import BUDGETS


@needs_shared
def test_clean_training_images_exclude_every_budgets_decision_splits(cifar_subset, tmp_path):
    from harness import registry
    from harness.session import load_data
    from harness.config import BenchConfig

    data, vals = decision_free_splits("cifar10", str(cifar_subset), str(tmp_path / "cache"))
    clean = set(_row_digests(data.train))
    for budget, preset in BUDGETS.items():
        cfg = BenchConfig(dataset="cifar10", data_dir=str(cifar_subset), cache_dir=str(tmp_path / "cache"),
                          budget=budget, calib_size=preset["calib_size"])
        split = load_data(cfg, registry.get("dataset", "cifar10"))
        assert _row_digests(split.val) == _row_digests(vals[budget])
        for held in (split.val, split.calib):
            digests = set(_row_digests(held))
            assert not clean & digests
    # 2,000 training images: the held-out splits overlap but are not nested, so more goes than the largest
    assert len(data.train) < 2000 - max(preset["calib_size"] + 400 for preset in BUDGETS.values())
    assert data.val is None and len(data.test) == 500


@pytest.mark.slow
@needs_shared
def test_pretrain_writes_weights_that_load_and_a_card_that_describes_them(cifar_subset, tmp_path):
    out = tmp_path / "weights"
    result = run_cli("pretrain", "--model", "resnet20", "--data-dir", cifar_subset, "--epochs", "0.2",
                     "--batch-size", "64", "--out", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "resnet20-cifar10-clean.json").read_text())
    weights = out / card["file"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["sha256"] and card["file"] == "resnet20-cifar10-clean.pt"
    assert set(card["accuracy"]) == {"val_smoke", "val_quick", "val_paper", "test"}
    assert card["recipe"]["label_smoothing"] == 0.1 and card["recipe"]["epochs"] == 0.2
    assert card["data"] == "CIFAR-10 (JPEG)" and card["trained_on"]["images"] < 2000
    model = create_model("resnet20", 10, (3, 32, 32), "cifar10", checkpoint=str(weights))  # as --checkpoint loads it
    assert model.arch["model"] == "resnet20"
    bad = run_cli("pretrain", "--model", "resnet20", "--device", "cpu", "--cuda-graphs", "on", "--out", out)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "valid choices here: auto, off" in bad.stderr


@pytest.mark.slow
@needs_shared
def test_pretraining_paused_by_its_time_limit_or_killed_continues_to_the_uninterrupted_weights(cifar_subset, tmp_path,
                                                                                              monkeypatch):
    """`--time-limit` pauses at an epoch boundary (exit 5, one line with the command that
    continues), keeps its progress in one file beside the weights, and the same command, run
    again until it ends, writes the weights an uninterrupted training writes, bit for bit. A
    training killed after a checkpoint continues from it to the same weights."""
    from harness.pretrain import pretrain

    cache = tmp_path / "cache"
    whole = pretrain("resnet20", None, str(cifar_subset), str(cache), tmp_path / "whole", epochs=2.5, batch_size=64)
    out = tmp_path / "parts"
    command = ["pretrain", "--model", "resnet20", "--data-dir", cifar_subset, "--epochs", "2.5", "--batch-size", "64",
               "--out", out, "--cache-dir", cache, "--time-limit", "0.0001"]
    paused = run_cli(*command)
    assert paused.returncode == 5, paused.stderr
    assert paused.stderr.count("\n") == 1 and "paused after" in paused.stderr
    assert "continue with harness pretrain --model resnet20" in paused.stderr
    assert [p.name for p in out.iterdir()] == ["resnet20-cifar10-clean.partial.pt"]
    from harness import pretrain as module

    with monkeypatch.context() as patched:  # refused before minutes of loading data
        patched.setattr(module, "decision_free_splits", lambda *a: pytest.fail("loaded the data, then refused"))
        other = run_cli(*command[:-2], "--lr", "0.05")  # a different recipe must not continue it
    assert other.returncode == 2 and other.stderr.count("\n") == 1, other.stderr
    assert "holds a paused training with other settings: lr 0.1 (now 0.05)" in other.stderr
    for calls in range(2, 6):  # each call trains at least one epoch, however late it is
        result = run_cli(*command)
        if result.returncode == 0:
            break
        assert result.returncode == 5, result.stderr
    card = json.loads((out / "resnet20-cifar10-clean.json").read_text())
    assert calls >= 3 and card["parts"] == calls and card["sha256"] == whole["sha256"]
    # each part's commit (this checkout's, or None for an installed copy), the last one's versions
    assert card["parts_git_sha"] == [card["versions"]["git_sha"]] * calls
    assert card["accuracy"] == whole["accuracy"]
    (out / "resnet20-cifar10-clean.partial.pt").write_bytes(b"cut short by a full disk")
    broken = run_cli(*command)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1, broken.stderr
    assert "cannot read" in broken.stderr and "delete it to start again" in broken.stderr
    (out / "resnet20-cifar10-clean.partial.pt").unlink()
    assert sorted(p.name for p in out.iterdir()) == ["resnet20-cifar10-clean.json", "resnet20-cifar10-clean.pt"]
    # killed right after its first checkpoint (the system's kill, as the write returns)
    write, killed = module.records.atomic_write_bytes, tmp_path / "killed"

    def write_then_die(path, data):
        write(path, data)
        if path.name.endswith(".partial.pt"):
            raise KeyboardInterrupt

    monkeypatch.setattr(module.records, "atomic_write_bytes", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain("resnet20", None, str(cifar_subset), str(cache), killed, epochs=2.5, batch_size=64,
                 checkpoint_every_s=0.0)
    monkeypatch.setattr(module.records, "atomic_write_bytes", write)
    assert [p.name for p in killed.iterdir()] == ["resnet20-cifar10-clean.partial.pt"]
    revived = pretrain("resnet20", None, str(cifar_subset), str(cache), killed, epochs=2.5, batch_size=64)
    assert revived["sha256"] == whole["sha256"] and revived["parts"] == 2


def test_the_committed_clean_weights_are_what_their_cards_and_the_readme_say():
    """Every committed clean network: its card's SHA-256 is the file's, and weights/README.md's
    row gives the card's accuracies (a figure a reader can check against the file)."""
    weights = Path(__file__).resolve().parents[1] / "weights"
    readme = (weights / "README.md").read_text()
    files = sorted(p for p in weights.rglob("*.pt") if not p.name.endswith(".partial.pt"))
    assert files, "no committed weights"
    for path in files:
        card = json.loads(path.with_suffix(".json").read_text())
        assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), path
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{path.relative_to(weights)}` |"))
        acc = card["accuracy"]
        assert f"| {acc['val_smoke']:.2f} / {acc['val_quick']:.2f} / {acc['val_paper']:.2f} | {acc['test']:.2f} |" \
            in row, (path, row)


def test_a_second_pretraining_of_the_same_weights_is_refused_while_the_first_runs(tmp_path):
    """Two `harness pretrain` of one network into one folder would both continue the same
    partial file: the second is refused in one line naming the first's pid, before loading
    data, and leaves no folder behind; another network in the same folder is not blocked."""
    import os

    from harness import records

    out = tmp_path / "new" / "weights"
    out.mkdir(parents=True)
    with records.exclusive_lock(out / ".resnet20-cifar10-clean.lock", "held by this test"):
        second = run_cli("pretrain", "--model", "resnet20", "--data-dir", tmp_path / "no-data", "--epochs", "1",
                         "--out", out)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"{out / 'resnet20-cifar10-clean'}.pt is being written by another process (pid {os.getpid()})" \
            in second.stderr
        other = run_cli("pretrain", "--model", "resnet32", "--data-dir", tmp_path / "no-data", "--epochs", "1",
                        "--out", out)
        assert other.returncode == 2 and "no-data does not exist" in other.stderr  # got as far as the data
    assert sorted(p.name for p in out.iterdir()) == []  # the other's lock went with it
    refused = run_cli("pretrain", "--model", "resnet20", "--data-dir", tmp_path / "no-data", "--epochs", "1",
                      "--out", tmp_path / "made" / "weights")
    assert refused.returncode == 2 and not (tmp_path / "made").exists()  # no folder left that it made

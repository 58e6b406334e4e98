"""Clean weights (`harness pretrain`): a network trained from random weights on the training
images that no run's decisions read, so that a pruning run started from them decides on
validation images its baseline never saw. The published CIFAR weights trained on all 50,000
training images: on them the validation split scores like the training split (93.3% against
87.7% test after the quick baseline step), and every in-run decision reads memorised data.

Held out: the validation and the calibration split of every budget (``harness.settings.BUDGETS``:
they are drawn per budget, so they are not nested), found by content. The weights file is a
plain state dict (``--checkpoint FILE``); beside it a JSON card says how it was made: its
SHA-256, the recipe, the command, the accuracy on each budget's validation split and on the
test split, the hardware and the wall time.

Training longer than one job (``--time-limit``): it pauses at an epoch boundary and saves its
progress beside the weights (``<stem>.partial.pt``: weights, optimizer state, the data order's
generator, the steps done); the same command continues it to exactly the weights an
uninterrupted training writes, and deletes the file. The file is also written once a minute (at
an epoch boundary), so a killed training continues from its last one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import sys
import time
from pathlib import Path

import torch

from harness import records, registry
from harness.checks import resolve_device
from harness.config import BenchConfig
from harness.data import DataSplits, TensorSplit
from harness.errors import HarnessError, TimeLimitReached, first_line
from harness.models import create_model
from harness.provenance import hardware, versions
from harness.seeds import derive_seed
from harness.session import load_data
from harness.settings import BUDGETS
from harness.training import (Recipe, TrainingPaused, TrainProgress, default_batch_size, evaluate, resolve_precision,
                              scaled_lr, train)

#: the recipe's defaults: SGD with Nesterov momentum at lr 0.1 for a batch of 128 (scaled with
#: the batch), weight decay 5e-4, label smoothing 0.1, a linear warm-up over the first 10% of
#: the steps then a cosine (He et al. 2016's ResNet recipe with a cosine and label smoothing)
LR, WEIGHT_DECAY, LABEL_SMOOTHING, WARMUP = 0.1, 5e-4, 0.1, 0.1


def _row_digests(split: TensorSplit) -> list[bytes]:
    """One digest per sample, of its 8-bit pixels (or its raw row): equal inputs, equal digests."""
    x = split.images
    rows = (x * 255).round().to(torch.uint8) if x.dtype.is_floating_point and x.dim() == 4 else x
    return [hashlib.blake2b(r.numpy().tobytes(), digest_size=16).digest() for r in rows.contiguous()]


def decision_free_splits(dataset: str, data_dir: str | None, cache_dir: str) -> tuple[DataSplits, dict[str, TensorSplit]]:
    """The data set's splits with ``train`` reduced to the images that no budget's validation
    or calibration split holds, and each budget's validation split (to report on)."""
    family = registry.get("dataset", dataset)
    held, vals, data = set(), {}, None
    for budget, preset in BUDGETS.items():
        cfg = BenchConfig(dataset=dataset, data_dir=data_dir, cache_dir=cache_dir, budget=budget,
                          calib_size=preset["calib_size"], test_subset=None)
        data = load_data(cfg, family)
        vals[budget] = data.val
        held.update(_row_digests(data.calib))
        if data.val is not None:
            held.update(_row_digests(data.val))
    everything = TensorSplit(torch.cat([data.train.images, data.calib.images, data.val.images]),
                             torch.cat([data.train.labels, data.calib.labels, data.val.labels]))
    keep = torch.tensor([d not in held for d in _row_digests(everything)])
    clean = TensorSplit(everything.images[keep], everything.labels[keep])
    return dataclasses.replace(data, train=clean, val=None), vals


def _host_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _saved(obj) -> bytes:
    """``obj`` as torch.save writes it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


PROGRESS_KEYS = {"settings", "model", "progress", "parts", "wall_time_s"}  # what save_progress writes


def _check_settings(partial: Path, saved: dict | None, settings: dict) -> None:
    """Refuses to continue a paused training (``saved``) under other ``settings``."""
    differ = ", ".join(f"{k} {saved['settings'].get(k)!r} (now {v!r})" for k, v in settings.items()
                       if saved and saved["settings"].get(k) != v)
    if differ:
        raise HarnessError(f"{partial} holds a paused training with other settings: {differ}; give the same "
                           "settings to continue it, or delete the file to start again")


def pretrain(model_name: str, dataset: str | None, data_dir: str | None, cache_dir: str, out: Path, *,
             epochs: float, batch_size: int | None = None, lr: float = LR, label_smoothing: float = LABEL_SMOOTHING,
             seed: int = 0, device: str = "auto", cuda_graphs: str = "auto", progress: bool = False,
             deadline: float | None = None, again: str = "the same call", checkpoint_every_s: float = 60.0) -> dict:
    """Trains ``model_name`` from random weights on the decision-free training images and
    writes ``out/<model>-<data set>-clean.pt`` and its card (``.json``, with the file's
    SHA-256); returns the card. With a ``deadline`` (``time.monotonic()``), it may pause
    instead: its progress is saved in ``out/<stem>.partial.pt`` and TimeLimitReached says to
    run ``again``, which continues from there. The same file is written every
    ``checkpoint_every_s`` seconds (at an epoch boundary), so a killed training continues too."""
    t0 = time.perf_counter()
    code = versions()  # this part's: the code loaded now is what trains, whatever is committed meanwhile
    family = registry.get("model", model_name)
    dataset = dataset or family.default_dataset
    dev = resolve_device(device)
    bs = batch_size or default_batch_size(dev)
    recipe = Recipe(lr=scaled_lr(lr, bs, "sgd"), batch_size=bs, weight_decay=WEIGHT_DECAY,
                    precision=resolve_precision("auto", dev), label_smoothing=label_smoothing, warmup=WARMUP,
                    cuda_graphs=(cuda_graphs == "on" or (cuda_graphs == "auto" and dev.type == "cuda")))
    stem = f"{model_name.replace(':', '_')}-{dataset}-clean"
    partial = Path(out) / f"{stem}.partial.pt"
    # one training per weights file: a second one would continue the same partial file
    with records.folder_for_writing(Path(out)), \
            records.exclusive_lock(Path(out) / f".{stem}.lock", f"{Path(out) / stem}.pt"):
        # what must not change between the parts of one training (the device and the card's command may)
        settings = {"model": model_name, "dataset": dataset, "epochs": epochs, "batch_size": bs, "lr": lr,
                    "label_smoothing": label_smoothing, "seed": seed, "precision": recipe.precision}
        try:
            saved = torch.load(partial, map_location="cpu", weights_only=True) if partial.exists() else None
            if saved is not None and not (isinstance(saved, dict) and PROGRESS_KEYS <= saved.keys()):
                raise RuntimeError("not a progress file")
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            why = first_line(exc) if isinstance(exc, OSError) else "not a whole progress file of harness pretrain"
            raise HarnessError(f"cannot read {partial} ({why}); delete it to start again") from None
        _check_settings(partial, saved, settings)  # before minutes of loading data
        data, vals = decision_free_splits(dataset, data_dir, cache_dir)
        settings["train_images"] = len(data.train)
        _check_settings(partial, saved, settings)
        torch.manual_seed(derive_seed(seed, "init"))
        model = create_model(model_name, data.num_classes, data.input_shape, dataset, family=family).to(dev)
        resume, earlier_s, parts, revisions = None, 0.0, 1, [code.get("git_sha")]
        if saved:
            model.load_state_dict(saved["model"])
            resume = TrainProgress(**saved["progress"])
            earlier_s, parts = saved["wall_time_s"], saved["parts"] + 1
            revisions = saved.get("git_sha", [None] * saved["parts"]) + revisions  # none before 2026-12-05

        def save_progress(progress: TrainProgress) -> None:
            records.atomic_write_bytes(partial, _saved({
                "settings": settings, "model": _host_state(model), "progress": progress.to_dict(), "parts": parts,
                "git_sha": revisions, "wall_time_s": earlier_s + time.perf_counter() - t0}))

        try:  # a checkpoint a minute, so that a killed training loses at most that, and its epoch
            train(model, data, epochs, recipe=recipe, seed=derive_seed(seed, "pretrain"), device=dev, desc="pretrain",
                  progress=progress, resume=resume, deadline=deadline, checkpoint=save_progress,
                  checkpoint_every_s=checkpoint_every_s)
        except TrainingPaused as paused:
            save_progress(paused.progress)
            raise TimeLimitReached(f"time limit: pretraining of {model_name} paused after {paused.progress.step} of "
                                   f"{paused.steps} steps, saved in {partial}", again) from None
        weights = _saved(_host_state(model))
        digest = hashlib.sha256(weights).hexdigest()
        path = Path(out) / f"{stem}.pt"
        records.atomic_write_bytes(path, weights)
        card = {
            "file": path.name, "sha256": digest, "model": model_name, "dataset": dataset, "data": data.label or dataset,
            "trained_on": {"images": len(data.train), "held_out": "every budget's validation and calibration split"},
            "accuracy": {**{f"val_{budget}": round(evaluate(model, split, data, dev)["accuracy"], 2)
                            for budget, split in vals.items() if split is not None},
                         "test": round(evaluate(model, data.test, data, dev)["accuracy"], 2)},
            "recipe": {"epochs": epochs, **dataclasses.asdict(recipe), "lr_at_128": lr, "seed": seed},
            "command": sys.argv, "hardware": hardware(dev), "versions": code,
            "wall_time_s": round(earlier_s + time.perf_counter() - t0, 1),
        }
        if parts > 1:  # the hardware and the versions are the last part's; each part's commit:
            card["parts"], card["parts_git_sha"] = parts, revisions
        records.atomic_write_json(Path(out) / f"{stem}.json", card)
        partial.unlink(missing_ok=True)
        return card

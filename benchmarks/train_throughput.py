"""Training throughput of the engine (harness/training.py) against the plain loop it
replaced (benchmarks/legacy_training.py), same model, same data, same run.

    python benchmarks/train_throughput.py --model resnet20 --device cpu

Synthetic CIFAR-shaped images (the data path is part of what is measured: both loops
augment and normalise every batch). Each loop first runs a few untimed steps (allocator,
cudnn autotuning), then trains on ``--images`` images; the line ``speedup: X.XX`` is the
engine's images/s over the old loop's. ``--precision`` and ``--batch-size`` pick the
engine's settings (default: what a run on that device uses).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from harness.api import DataSplits, TensorSplit
from harness.models import create_model
from harness.training import (PRECISION_CHOICES, REFERENCE_BATCH, Recipe, default_batch_size, resolve_precision,
                              scaled_lr, train)

try:
    from legacy_training import legacy_train
except ImportError:  # run as a module from the repository root
    from benchmarks.legacy_training import legacy_train


def synthetic_cifar(n: int, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).float().div_(255)
    labels = torch.randint(0, 10, (n,), generator=g)
    split = TensorSplit(images, labels)
    return DataSplits(split, split, split, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 10, augment="cifar")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=None,
                    help="images each loop trains on (default: 3,840 on a CPU, 50,000 on a GPU)")
    ap.add_argument("--precision", choices=PRECISION_CHOICES, default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="the engine's (default: the device's)")
    ap.add_argument("--warmup-steps", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    images = args.images or (50_000 if device.type == "cuda" else 3_840)
    data = synthetic_cifar(max(images, 10_000) if device.type == "cuda" else images)
    torch.manual_seed(0)
    model = create_model(args.model, 10, (3, 32, 32), "cifar10").to(device)
    precision = resolve_precision(args.precision, device)
    bs = args.batch_size or default_batch_size(device)
    recipe = Recipe(lr=scaled_lr(0.01, bs, "sgd"), batch_size=bs, weight_decay=5e-4, precision=precision)
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads"
          f"{', ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}); {images} images per loop")

    def old(m, n):
        legacy_train(m, data, n / len(data.train), lr=0.01, batch_size=REFERENCE_BATCH, weight_decay=5e-4,
                     seed=1, device=device)

    def new(m, n, r=recipe):
        train(m, data, n / len(data.train), recipe=r, seed=1, device=device, quiet=True)

    results = {}
    variants = [("old loop (fp32, batch 128)", old), (f"engine ({precision}, batch {bs})", new)]
    if precision != "fp32":
        fp32 = Recipe(lr=recipe.lr, batch_size=bs, weight_decay=5e-4, precision="fp32")
        variants.append((f"engine (fp32, batch {bs})", lambda m, n: new(m, n, fp32)))
    for name, fn in variants:
        m = copy.deepcopy(model)
        warm = args.warmup_steps * max(bs, REFERENCE_BATCH)
        fn(m, warm)
        seconds = timed(lambda: fn(m, images), device)
        results[name] = images / seconds
        print(f"{name:32s} {images / seconds:10.1f} images/s   {50_000 * seconds / images:8.2f} s per 50,000-image epoch")
    base, engine = list(results.values())[:2]
    print(f"speedup: {engine / base:.2f}")


if __name__ == "__main__":
    main()

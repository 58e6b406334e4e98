"""Training throughput of the engine (harness/training.py) against the plain loop it
replaced (benchmarks/legacy_training.py), same model, same data, same run.

    python benchmarks/train_throughput.py --model resnet20 --device cpu

Synthetic CIFAR-shaped images (the data path is part of what is measured: both loops
augment and normalise every batch). Each loop first runs a few untimed steps (allocator,
cudnn autotuning), then trains on ``--images`` images; the line ``speedup: X.XX`` is the
engine's images/s over the old loop's, the engine as a run on that device trains
(captured as a CUDA graph on CUDA, eager on a CPU). ``--precision`` and ``--batch-size`` pick
its settings (default: what a run on that device uses). On CUDA the table also has the
engine eager, in fp32, captured at twice the batch, and with ``--compile`` a model compiled by
torch.compile (mode reduce-overhead; its first step, the compilation, is printed apart), each
with the CUDA graph replays its timed training made (0: it ran eagerly), and each loop
trains on at least MIN_CAPTURED_STEPS steps at twice the batch (fewer are not captured).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch

from harness.api import DataSplits, TensorSplit
from harness.models import create_model
from harness.training import (MIN_CAPTURED_STEPS, PRECISION_CHOICES, REFERENCE_BATCH, Recipe, default_batch_size,
                              resolve_precision, scaled_lr, train)

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


def replays_during(fn) -> tuple[object, int]:
    """What ``fn`` returns, and how many CUDA graph replays it made (a captured training of S
    steps makes S - WARMUP_STEPS; 0: it ran eagerly)."""
    replays = []
    original = torch.cuda.CUDAGraph.replay
    torch.cuda.CUDAGraph.replay = lambda graph: (replays.append(1), original(graph))[1]
    try:
        return fn(), len(replays)
    finally:
        torch.cuda.CUDAGraph.replay = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=None,
                    help="images each loop trains on (default: 3,840 on a CPU, 50,000 on a GPU)")
    ap.add_argument("--precision", choices=PRECISION_CHOICES, default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="the engine's (default: the device's)")
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time a torch.compile'd model (CUDA; slow to start)")
    args = ap.parse_args()
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    bs = args.batch_size or default_batch_size(device)
    images = args.images or (50_000 if device.type == "cuda" else 3_840)
    if device.type == "cuda":  # fewer steps than MIN_CAPTURED_STEPS, even at twice the batch, are not captured
        images = max(images, MIN_CAPTURED_STEPS * 2 * bs)
    data = synthetic_cifar(max(images, 10_000) if device.type == "cuda" else images)
    torch.manual_seed(0)
    model = create_model(args.model, 10, (3, 32, 32), "cifar10").to(device)
    recipe = Recipe(lr=scaled_lr(0.01, bs, "sgd"), batch_size=bs, weight_decay=5e-4, precision=precision)
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads"
          f"{', ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}); {images} images per loop")

    def old(m, n):
        legacy_train(m, data, n / len(data.train), lr=0.01, batch_size=REFERENCE_BATCH, weight_decay=5e-4,
                     seed=1, device=device)

    def new(m, n, r=recipe):
        train(m, data, n / len(data.train), recipe=r, seed=1, device=device, quiet=True)

    cuda = device.type == "cuda"
    run_default = dataclasses.replace(recipe, cuda_graphs=cuda)
    variants = [("old loop (fp32, batch 128)", old),
                (f"engine ({precision}, batch {bs}{', captured' if cuda else ''})", lambda m, n: new(m, n, run_default))]
    if cuda:
        variants.append((f"engine ({precision}, batch {bs}, eager)", new))
        double = dataclasses.replace(run_default, batch_size=2 * bs, lr=scaled_lr(0.01, 2 * bs, "sgd"))
        variants.append((f"engine ({precision}, batch {2 * bs}, captured)", lambda m, n: new(m, n, double)))
    if precision != "fp32":
        fp32 = dataclasses.replace(run_default, precision="fp32")
        variants.append((f"engine (fp32, batch {bs}{', captured' if cuda else ''})", lambda m, n: new(m, n, fp32)))
    if args.compile:
        variants.append((f"torch.compile reduce-overhead ({precision}, batch {bs})", "compile"))
    results = {}
    for name, fn in variants:
        m = copy.deepcopy(model)
        if fn == "compile":
            m = torch.compile(m, mode="reduce-overhead")
            first = timed(lambda: new(m, bs), device)
            print(f"{'  (compilation: first step)':32s} {first:10.1f} s")
            fn = new
        warm = args.warmup_steps * max(bs, REFERENCE_BATCH)
        # a captured fine-tune needs MIN_CAPTURED_STEPS steps: warm up with as many
        fn(m, max(warm, MIN_CAPTURED_STEPS * 2 * bs) if cuda else warm)
        seconds, replays = replays_during(lambda: timed(lambda: fn(m, images), device))
        results[name] = images / seconds
        print(f"{name:32s} {images / seconds:10.1f} images/s   {50_000 * seconds / images:8.2f} s per 50,000-image epoch"
              + (f"   {replays} graph replays" if cuda else ""), flush=True)
    base, engine = list(results.values())[:2]
    print(f"speedup: {engine / base:.2f}")


if __name__ == "__main__":
    main()

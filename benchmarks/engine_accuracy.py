"""Accuracy at equal epochs: the engine (harness/training.py, at the precision a run picks
here) against the plain fp32 loop it replaced (benchmarks/legacy_training.py), fine-tuning
the pretrained CIFAR ResNet-20 on CIFAR-10 (JPEG) with the same learning rate, batch 128
and seeds. Prints test accuracy per seed, the means and the difference, and each loop's
wall time; on CUDA also the engine with its step captured as a CUDA graph, against the eager
engine and the seed-to-seed spread.

    python benchmarks/engine_accuracy.py --epochs 2 --seeds 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch

from harness.training import PRECISION_CHOICES, Recipe, accuracy, resolve_precision, train

try:
    import cifar_setup
    from legacy_training import legacy_train
except ImportError:  # run as a module from the repository root
    from benchmarks import cifar_setup
    from benchmarks.legacy_training import legacy_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cifar_setup.add_arguments(ap)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--precision", choices=PRECISION_CHOICES, default="auto")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    data, model = cifar_setup.load(args)
    model = model.to(device)
    precision = resolve_precision(args.precision, device)
    print(f"{args.model}, {len(data.train)} training images, {args.epochs:g} epochs, lr {args.lr}, batch 128; "
          f"engine precision {precision}; before fine-tuning: {accuracy(model, data.test, data, device):.2f}")
    recipe = Recipe(lr=args.lr, batch_size=128, weight_decay=5e-4, precision=precision)
    # on CUDA also the step captured as a graph (--cuda-graphs, a run's default there)
    engines = {"engine": recipe} | ({"captured": dataclasses.replace(recipe, cuda_graphs=True)}
                                    if device.type == "cuda" else {})
    acc = {name: [] for name in ("old loop", *engines)}
    secs = dict.fromkeys(acc, 0.0)
    for seed in range(args.seeds):
        for name in acc:
            m = copy.deepcopy(model)
            t0 = time.perf_counter()
            if name == "old loop":
                legacy_train(m, data, args.epochs, lr=args.lr, batch_size=128, weight_decay=5e-4, seed=seed,
                             device=device)
            else:
                train(m, data, args.epochs, recipe=engines[name], seed=seed, device=device, quiet=True)
            secs[name] += time.perf_counter() - t0
            acc[name].append(accuracy(m, data.test, data, device))
            print(f"seed {seed} {name:9s} test accuracy {acc[name][-1]:.2f}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    mean = {k: statistics.mean(v) for k, v in acc.items()}
    print(f"mean: old loop {mean['old loop']:.2f}, engine {mean['engine']:.2f}; "
          f"difference (engine - old): {mean['engine'] - mean['old loop']:+.2f} points; "
          f"wall time ratio old/engine: {secs['old loop'] / secs['engine']:.2f}")
    if "captured" in acc:
        spread = statistics.stdev(acc["engine"]) if len(acc["engine"]) > 1 else float("nan")
        print(f"captured {mean['captured']:.2f}: difference (captured - engine) "
              f"{mean['captured'] - mean['engine']:+.2f} points against a seed-to-seed spread (sd) of "
              f"{spread:.2f}; wall time ratio engine/captured: {secs['engine'] / secs['captured']:.2f}")

if __name__ == "__main__":
    main()

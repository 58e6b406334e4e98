"""Images per second of evaluation (``harness.training.predict``: eval mode, fp32, no
gradients) by batch size, on this machine's CPU, against batch 500 (the size every device used
before) in the same run, and whether the logits are identical to batch 500's. What
``harness.training.eval_batch_size`` picks for a CPU comes from here.

    OMP_NUM_THREADS=1 python benchmarks/eval_batch.py [--models resnet20 resnet56] [--images 3000]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from harness.models import create_model
from harness.training import predict

try:
    from train_throughput import synthetic_cifar
except ImportError:  # run as a module from the repository root
    from benchmarks.train_throughput import synthetic_cifar

SIZES = (32, 64, 128, 256, 500)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = synthetic_cifar(args.images)
    split = data.test
    print(f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}, {args.images} images")
    for name in args.models:
        model = create_model(name, 10, (3, 32, 32), "cifar10").eval()
        reference = predict(model, split, data, "cpu", batch_size=500)
        best = {}
        for _ in range(args.repeats):  # the best of the repeats: other processes only slow a pass down
            for size in SIZES:
                t0 = time.perf_counter()
                logits = predict(model, split, data, "cpu", batch_size=size)
                rate = args.images / (time.perf_counter() - t0)
                best[size] = max(best.get(size, 0.0), rate)
                if not torch.equal(logits, reference):
                    print(f"{name} batch {size}: logits differ from batch 500's")
        for size in SIZES:
            print(f"{name} batch {size:4d}: {best[size]:6.0f} images/s, {best[size] / best[500]:.2f}x batch 500")


if __name__ == "__main__":
    main()

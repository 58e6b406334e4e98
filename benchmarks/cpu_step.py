"""Where a CPU training step's time goes and what would make it faster, in one run: the bare
eager step (forward, backward, SGD; no data path) of a CIFAR ResNet in each variant, against
channels_last at batch 128 (what the engine runs on a CPU), interleaved so that every variant
sees the same machine. Answers why the engine's speedup over the old loop is small on a CPU
without native bf16: the convolutions, which both loops run alike, take most of the step.

    python benchmarks/cpu_step.py [--model resnet20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from harness.models import create_model

warnings.filterwarnings("ignore", message="TF32 acceleration")  # oneDNN's flags note Intel GPUs each time

# name -> (memory format, batch, oneDNN on)
VARIANTS = {
    "channels_last, batch 128 (the engine)": (torch.channels_last, 128, True),
    "NCHW, batch 128 (the old loop)": (torch.contiguous_format, 128, True),
    "channels_last, batch 256": (torch.channels_last, 256, True),
    "channels_last, batch 128, oneDNN off": (torch.channels_last, 128, False),
}


def images_per_s(model_name: str, memory_format, batch: int, mkldnn: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, 10, (3, 32, 32), "cifar10").to(memory_format=memory_format).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    with torch.backends.mkldnn.flags(enabled=mkldnn):
        for _ in range(3):  # allocator, oneDNN primitives
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--rounds", type=int, default=3, help="each variant is timed once per round; the best round counts")
    ap.add_argument("--images", type=int, default=2560, help="images per timing")
    args = ap.parse_args()
    print(f"{args.model} on cpu ({torch.get_num_threads()} threads), {args.images} images per timing, "
          f"best of {args.rounds} rounds")
    best = dict.fromkeys(VARIANTS, 0.0)
    for _ in range(args.rounds):
        for name, (fmt, batch, mkldnn) in VARIANTS.items():
            best[name] = max(best[name], images_per_s(args.model, fmt, batch, mkldnn, max(2, args.images // batch)))
    base = best[next(iter(VARIANTS))]
    for name, value in best.items():
        print(f"{name:40s} {value:8.1f} images/s  {value / base:5.2f}x")
    # the share of the convolutions in the engine's step
    fmt, batch, _ = next(iter(VARIANTS.values()))
    torch.manual_seed(0)
    model = create_model(args.model, 10, (3, 32, 32), "cifar10").to(memory_format=fmt).train()
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            F.cross_entropy(model(x), y).backward()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    print(f"convolutions: {100 * conv / total:.0f}% of the forward and backward (torch.profiler, 5 steps)")


if __name__ == "__main__":
    main()

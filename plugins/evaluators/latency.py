"""Measured inference latency and throughput, so that FLOPs reductions can be read
against what they buy in time on the run's device."""

from __future__ import annotations

import statistics
import time

import torch

from harness.api import Evaluator, Option
from harness.api import normalize


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def median_seconds(model, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median wall time of one forward pass, after warm-up passes."""
    for _ in range(warmup):
        model(x)
    _sync(x.device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        _sync(x.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Latency(Evaluator):
    """Latency at batch 1 and throughput at a larger batch, on the run's device (warm-up,
    then the median of repeats). Speed-ups are against the unpruned model of the same run,
    measured in the same process on the same machine."""

    name = "latency"
    description = "median latency at batch 1 (ms) and throughput at --latency-batch (images/s)"
    options = (
        Option("latency_repeats", 30, "Timed forward passes per measurement (the median is reported).",
               parse=int, check=lambda n: None if n >= 1 else "must be at least 1"),
        Option("latency_batch", 256, "Batch size of the throughput measurement.", parse=int,
               check=lambda n: None if n >= 1 else "must be at least 1"),
    )

    def evaluate(self, model, ctx):
        model.eval()
        repeats, batch = ctx.options["latency_repeats"], ctx.options["latency_batch"]
        x = ctx.data.test.images[:batch]
        if len(x) < batch:  # a small test split: repeat it to fill the batch
            x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:batch]
        x = normalize(x.to(ctx.device), ctx.data.mean, ctx.data.std)
        one = median_seconds(model, x[:1], repeats, warmup=5)
        many = median_seconds(model, x, max(3, repeats // 10), warmup=2)
        out = {"latency_ms": round(1000 * one, 4), "throughput_per_s": round(batch / many, 2),
               "batch": batch, "device": str(ctx.device), "threads": torch.get_num_threads()}
        if ctx.baseline:
            out["latency_speedup"] = round(ctx.baseline["latency_ms"] / out["latency_ms"], 4)
            out["throughput_speedup"] = round(out["throughput_per_s"] / ctx.baseline["throughput_per_s"], 4)
        return out

"""Measured inference latency and throughput, so that FLOPs reductions can be read
against what they buy in time on the run's device."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness.api import Evaluator, Option
from harness.api import normalize


def at_least_one(n: int) -> str | None:
    return None if n >= 1 else "must be at least 1"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_wall_time(step, repeats: int, warmup: int) -> float:
    """Median wall time of ``step()`` (one forward pass, finished when it returns), after
    warm-up calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def figures(run, inputs, repeats: int, many_repeats: int | None = None, warmup: tuple[int, int] = (5, 2)) -> dict:
    """Latency at batch 1 (``run(inputs[:1])``) and throughput at the whole batch (``run(inputs)``),
    each the median of repeats after warm-up; ``run`` returns when the pass has finished."""
    many_repeats = many_repeats or max(3, repeats // 10)
    one = median_wall_time(lambda: run(inputs[:1]), repeats, warmup=warmup[0])
    many = median_wall_time(lambda: run(inputs), many_repeats, warmup=warmup[1])
    return {"latency_ms": round(1000 * one, 4), "throughput_per_s": round(len(inputs) / many, 2),
            "batch": len(inputs), "threads": torch.get_num_threads()}


def torch_runner(model):
    """One forward pass of a PyTorch model, finished (synchronised) when it returns."""
    @torch.inference_mode()
    def run(x):
        model(x)
        _sync(x.device)

    return run


def ort_session(module, example: torch.Tensor):
    """An onnxruntime CPU session of ``module`` exported to ONNX as ``harness export`` writes it,
    with this process's threads."""
    import onnxruntime as ort

    from harness.export import write

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write(module, example, "onnx", path)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_runner(session):
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def test_batch(ctx, batch: int) -> torch.Tensor:
    """The first ``batch`` test inputs (a small test split is repeated to fill the batch)."""
    x = ctx.data.test.images[:batch]
    if len(x) < batch:
        x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:batch]
    return x


#: rounds of the side-by-side measurement: unpruned, pruned, unpruned, pruned (the best of each)
SIDE_BY_SIDE_ROUNDS = 2


def timed(measure, model, ctx) -> dict:
    """``measure(model)`` -> ``{"latency_ms", "throughput_per_s", ...}``, with speed-ups. When the
    run's unpruned model is at hand (every iteration but 0), both are timed alternately in this
    call and each keeps its best round: on a shared or throttling machine, figures taken hours
    apart differ by more than pruning changes them. Else against the unpruned model's recorded
    figures (``ctx.baseline``)."""
    if ctx.unpruned is None:
        return with_speedups(measure(model), ctx.baseline)
    reference = ctx.unpruned()
    rounds = [(measure(reference), measure(model)) for _ in range(SIDE_BY_SIDE_ROUNDS)]
    best_reference = best([r for r, _ in rounds])
    out = with_speedups(best([m for _, m in rounds]), best_reference)
    out["unpruned_latency_ms"], out["unpruned_throughput_per_s"] = (best_reference["latency_ms"],
                                                                    best_reference["throughput_per_s"])
    return out


def best(figures: list[dict]) -> dict:
    """The lowest latency and the highest throughput of several measurements of one model."""
    out = dict(figures[0])
    out["latency_ms"] = min(f["latency_ms"] for f in figures)
    out["throughput_per_s"] = max(f["throughput_per_s"] for f in figures)
    return out


def with_speedups(out: dict, baseline: dict | None) -> dict:
    """``out`` with its speed-ups against the unpruned model's figures, when there are."""
    if baseline:
        out["latency_speedup"] = round(baseline["latency_ms"] / out["latency_ms"], 4)
        out["throughput_speedup"] = round(out["throughput_per_s"] / baseline["throughput_per_s"], 4)
    return out


class Latency(Evaluator):
    """Latency at batch 1 and throughput at a larger batch, on the run's device (warm-up,
    then the median of repeats). Speed-ups are against the unpruned model of the same run,
    timed alternately with it in the same call (:func:`timed`)."""

    name = "latency"
    description = "median latency at batch 1 (ms) and throughput at --latency-batch (images/s)"
    options = (
        Option("latency_repeats", 30, "Timed forward passes per measurement (the median is reported).",
               parse=int, check=at_least_one),
        Option("latency_batch", 256, "Batch size of the throughput measurement.", parse=int,
               check=at_least_one),
    )

    def evaluate(self, model, ctx):
        repeats, batch = ctx.options["latency_repeats"], ctx.options["latency_batch"]
        x = normalize(test_batch(ctx, batch).to(ctx.device), ctx.data.mean, ctx.data.std)

        def measure(m):
            return figures(torch_runner(m.eval()), x, repeats) | {"device": str(ctx.device)}

        return timed(measure, model, ctx)


class LatencyORT(Evaluator):
    """The model exported to ONNX (normalisation inside, as ``harness export`` writes it) and
    timed in onnxruntime on the CPU, with as many threads as the run: latency at batch 1 and
    throughput at a larger batch; speed-ups against the unpruned model of the same run, timed
    alternately with it in the same call."""

    name = "latency-ort"
    description = "ONNX export timed in onnxruntime on the CPU: latency at batch 1 (ms), throughput at --ort-batch"
    options = (
        Option("ort_repeats", 30, "Timed onnxruntime runs per measurement of latency-ort (the median is reported).",
               parse=int, check=at_least_one),
        Option("ort_batch", 256, "Batch size of latency-ort's throughput measurement.", parse=int,
               check=at_least_one),
    )

    def evaluate(self, model, ctx):
        import onnxruntime as ort

        from harness.export import Deployable

        repeats, batch = ctx.options["ort_repeats"], ctx.options["ort_batch"]
        x = test_batch(ctx, batch).float()
        inputs = x.numpy()
        runners = {}

        def measure(m):  # each model exported once, its session reused by every round
            if id(m) not in runners:
                module = Deployable(copy.deepcopy(m).cpu().eval(), ctx.data.mean, ctx.data.std).eval()
                runners[id(m)] = ort_runner(ort_session(module, x[:2]))
            return figures(runners[id(m)], inputs, repeats) | {"onnxruntime": ort.__version__}

        return timed(measure, model, ctx)

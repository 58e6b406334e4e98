"""How far FLOPs reductions translate into time: for each run, the unpruned model
(iteration 0) and the kept model, reloaded from the record, timed in this one process on
an otherwise idle device with the latency evaluator's measurement (warm-up, then the
median of repeats). Prints one JSON line per run with the speed-ups beside the FLOPs
reduction.

    python benchmarks/latency_vs_flops.py --device cuda runs/table3/*
    python benchmarks/latency_vs_flops.py --runtime onnxruntime runs/traced/*   # the exported file, on the CPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from harness import records
from harness.models import load_model
from harness_plugins.evaluators.latency import median_seconds


def timings(model, shape, device, batch: int, repeats: int) -> tuple[float, float]:
    x = torch.randn(batch, *shape, device=device)
    one = median_seconds(model, x[:1], repeats, warmup=10)
    many = median_seconds(model, x, max(5, repeats // 5), warmup=3)
    return 1000 * one, batch / many


def ort_timings(model, shape, batch: int, repeats: int) -> tuple[float, float]:
    """The same measurement of the model exported to ONNX (as ``harness export`` writes it,
    normalisation aside) and run in onnxruntime on the CPU with this process's threads."""
    import tempfile

    import onnxruntime as ort

    from harness.export import write
    from harness_plugins.evaluators.latency import median_wall_time

    x = torch.randn(batch, *shape)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        write(model.cpu().eval(), x[:2], "onnx", path)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x, name = x.numpy(), session.get_inputs()[0].name
    one = median_wall_time(lambda: session.run(None, {name: x[:1]}), repeats, warmup=10)
    many = median_wall_time(lambda: session.run(None, {name: x}), max(5, repeats // 5), warmup=3)
    return 1000 * one, batch / many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch")
    args = parser.parse_args()
    device = torch.device("cpu" if args.runtime == "onnxruntime" else args.device)
    for run in args.runs:
        result = records.read_result(run)
        if result is None:
            continue
        rows = records.read_iterations(run)
        final = result["final_iteration"]
        shape = records.read_config(run)["data"]["input_shape"]
        out = {"run": run.name, "runtime": args.runtime,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": torch.get_num_threads(), "final_iteration": final,
               "flops_reduction_pct": rows[final].get("flops_reduction_pct", 0.0)}
        measured = {}
        for it in (0, final):
            model = load_model(records.model_path(run, it), device).eval()
            measured[it] = (ort_timings(model, shape, args.batch, args.repeats) if args.runtime == "onnxruntime"
                            else timings(model, shape, device, args.batch, args.repeats))
        (lat0, thr0), (lat1, thr1) = measured[0], measured[final]
        out |= {"latency_ms": [round(lat0, 4), round(lat1, 4)], "throughput_per_s": [round(thr0, 1), round(thr1, 1)],
                "latency_speedup": round(lat0 / lat1, 3), "throughput_speedup": round(thr1 / thr0, 3)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

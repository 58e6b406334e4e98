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
from harness_plugins.evaluators.latency import figures, ort_runner, ort_session, torch_runner


def timings(model, shape, device, batch: int, repeats: int, runtime: str) -> tuple[float, float]:
    """(latency at batch 1 in ms, images/s at ``batch``) of the model in PyTorch on ``device``, or
    exported to ONNX (normalisation aside) in onnxruntime on the CPU: the evaluators' measurement,
    with more warm-up and repeats."""
    x = torch.randn(batch, *shape, device=device)
    if runtime == "onnxruntime":
        run, x = ort_runner(ort_session(model.cpu().eval(), x[:2].cpu())), x.cpu().numpy()
    else:
        run = torch_runner(model)
    out = figures(run, x, repeats, max(5, repeats // 5), warmup=(10, 3))
    return out["latency_ms"], out["throughput_per_s"]


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
        record = records.RunRecord.read(run)
        if record is None or not record.complete:
            continue
        rows, final = record.iterations, record.final_iteration
        shape = records.read_config(run)["data"]["input_shape"]
        out = {"run": run.name, "runtime": args.runtime,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "threads": torch.get_num_threads(), "final_iteration": final,
               "flops_reduction_pct": rows[final].get("flops_reduction_pct", 0.0)}
        measured = {}
        for it in (0, final):
            model = load_model(records.model_path(run, it), device).eval()
            measured[it] = timings(model, shape, device, args.batch, args.repeats, args.runtime)
        (lat0, thr0), (lat1, thr1) = measured[0], measured[final]
        out |= {"latency_ms": [lat0, lat1], "throughput_per_s": [round(thr0, 1), round(thr1, 1)],
                "latency_speedup": round(lat0 / lat1, 3), "throughput_speedup": round(thr1 / thr0, 3)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

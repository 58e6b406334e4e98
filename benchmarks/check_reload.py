"""Reload each run's kept model from its record (architecture spec + weights-only state
dict, no pickled code) and check that it gives the recorded parameters, FLOPs and test
accuracy, and the same outputs on every call.

    python benchmarks/check_reload.py runs/vit/* runs/torchvision/*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from harness import records
from harness.checks import resolve_device
from harness.session import load_data
from harness.config import BenchConfig
from harness.measure import count_flops, count_parameters
from harness.models import load_model
from harness.training import accuracy, predict


def check(run_dir: Path) -> bool:
    run = records.RunRecord.read(run_dir)
    if run is None or not run.complete:
        print(f"{run_dir.name}: not complete, skipped")
        return True
    cfg = BenchConfig.from_dict(records.read_config(run_dir)["config"])
    data = load_data(cfg)
    device = resolve_device(cfg.device)
    final = run.final_iteration
    row = records.read_iterations(run_dir)[final]
    model = load_model(records.model_path(run_dir, final), device)
    got = {"params": count_parameters(model), "flops": count_flops(model, data.input_shape),
           "accuracy": accuracy(model, data.test, data, device)}
    same_outputs = torch.equal(predict(model, data.calib, data, device), predict(model, data.calib, data, device))
    ok = (got["params"] == row["params"] and got["flops"] == row["flops"]
          and abs(got["accuracy"] - row["accuracy"]) < 0.05 and same_outputs)
    print(json.dumps({"run": run_dir.name, "iteration": final, "recorded": {k: row[k] for k in got},
                      "reloaded": got, "same_outputs": same_outputs, "ok": ok}))
    return ok


if __name__ == "__main__":
    results = [check(Path(p)) for p in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)

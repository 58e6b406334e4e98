"""The pruning loop (the paper's Algorithm 1, with the decision delegated to a method
plugin), the baseline step and resumable run records."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import harness
from harness import plugins, records
from harness.api import Candidate, CriterionContext, DataSplits, Step, Unit
from harness.config import SCRATCH_LR, BenchConfig
from harness.errors import HarnessError
from harness.models import count_flops, count_parameters, create_model, load_model, save_model
from harness.training import accuracy, normalize, predict, train


def default_cache_dir() -> str:
    return os.environ.get("HARNESS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "prunebench"))


def derive_seed(*parts) -> int:
    """A seed from the run seed and the place it is used, so a resumed run draws the same."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def count_filters(model: nn.Module) -> int:
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


@dataclass
class Session:
    """Everything one run needs, resolved once."""

    cfg: BenchConfig
    data: DataSplits
    device: torch.device
    run_dir: Path
    progress: bool

    @property
    def input_shape(self):
        return tuple(self.data.train.images.shape[1:])

    def measure(self, model: nn.Module, what: str) -> float:
        if what == "flops":
            return count_flops(model, self.input_shape)
        if what == "params":
            return count_parameters(model)
        return count_filters(model)

    def finetune(self, model, epochs, tag):
        c = self.cfg
        return train(model, self.data, epochs, lr=c.lr, batch_size=c.batch_size, weight_decay=c.weight_decay,
                     seed=derive_seed(c.seed, tag), device=self.device, train_subset=c.train_subset,
                     desc=f"fine-tune {tag}", progress=self.progress)

    def features(self, model):
        return predict(model, self.data.calib, self.data, self.device, features=True)

    def test_accuracy(self, model) -> float:
        return accuracy(model, self.data.test, self.data, self.device)


# ---------------------------------------------------------------- candidates
def build_candidates(s: Session, model: nn.Module, iteration: int, wanted: tuple[str, ...]) -> list[Candidate]:
    """A layer candidate (the ``p_layer`` lowest-scoring blocks) and a filter candidate (the
    lowest-scoring filters until its reduction matches the layer candidate's)."""
    cfg = s.cfg
    criterion = plugins.get("criterion", cfg.criterion)
    cctx = CriterionContext(normalize(s.data.calib.images.to(s.device), s.data.mean, s.data.std),
                            s.data.calib.labels.to(s.device), derive_seed(cfg.seed, iteration, "criterion"),
                            progress=s.progress)
    layer, filt = plugins.get("structure", "layer"), plugins.get("structure", "filter")
    parent_size = s.measure(model, cfg.match)
    candidates, target = [], None

    units = layer.units(model)
    if units:
        scores = criterion.scores(model, layer, units, cctx)
        chosen = [u for _, u in sorted(zip(scores, units), key=lambda p: p[0])[: cfg.p_layer]]
        child = layer.remove(model, chosen)
        target = parent_size - s.measure(child, cfg.match)
        if "layer" in wanted:
            candidates.append(Candidate("layer", chosen, child))
    if target is None:  # no block left: filters only, a fixed share per iteration
        target = cfg.filter_step * parent_size

    units = filt.units(model)
    if units and "filter" in wanted:
        scores = criterion.scores(model, filt, units, cctx)
        # each filter of a block costs the same, so measure one removal per block
        cost, width = {}, {}
        for site, block in model.blocks():
            width[site] = block.conv1.out_channels
            if width[site] > 1:
                cost[site] = parent_size - s.measure(filt.remove(model, [Unit(filt.name, site, 0)]), cfg.match)
        chosen, removed = [], 0.0
        for _, unit in sorted(zip(scores, units), key=lambda p: p[0]):
            if removed >= target:
                break
            if width[unit.site] > 1:
                chosen.append(unit)
                width[unit.site] -= 1
                removed += cost[unit.site]
        if chosen:
            candidates.append(Candidate("filter", chosen, filt.remove(model, chosen)))
    order = {name: i for i, name in enumerate(wanted)}
    return sorted(candidates, key=lambda c: order[c.structure])


# ---------------------------------------------------------------- the loop
def prune(s: Session, model: nn.Module, baseline: dict, start: int) -> str:
    """Iterate from ``start`` until a stopping rule fires; returns the stop reason."""
    cfg = s.cfg
    method = plugins.get("method", cfg.method)
    similarity = plugins.get("similarity", cfg.similarity)
    for it in range(start, cfg.iterations + 1):
        reduction = 100.0 * (1 - s.measure(model, "flops") / baseline["flops"])
        if cfg.target_flops is not None and reduction >= cfg.target_flops:
            return f"reached target FLOPs reduction {cfg.target_flops}%"
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(cfg.seed, it))
        candidates = build_candidates(s, model, it, method.candidate_structures)
        if not candidates:
            return "nothing left to remove"
        tags = itertools.count()
        step = Step(
            iteration=it, parent=model, config=cfg, rng=random.Random(derive_seed(cfg.seed, it, "method")),
            finetune=lambda m, epochs: s.finetune(m, epochs, (it, "candidate", next(tags))),
            similarity=lambda parent, child: similarity(s.features(parent), s.features(child)),
        )
        winner = method.select(step, candidates)
        model = s.finetune(winner.model, cfg.finetune_epochs, (it, "winner"))
        record = metrics(s, model, baseline) | {
            "iteration": it,
            "decision": winner.structure[0].upper(),
            "removed": [u.key for u in winner.units],
            "candidates": [{"structure": c.structure, "similarity": c.similarity, "units": len(c.units),
                            "flops": s.measure(c.model, "flops")} for c in candidates],
            "wall_time_s": round(time.perf_counter() - t0, 2),
        }
        save_model(model, records.model_path(s.run_dir, it))
        records.append_iteration(s.run_dir, record)
        report_iteration(record)
    return f"finished {cfg.iterations} iterations"


def metrics(s: Session, model: nn.Module, baseline: dict | None) -> dict:
    flops, params = s.measure(model, "flops"), s.measure(model, "params")
    acc = s.test_accuracy(model)
    out = {"flops": flops, "params": params, "accuracy": round(acc, 4)}
    if baseline:
        out["flops_reduction_pct"] = round(100 * (1 - flops / baseline["flops"]), 4)
        out["params_reduction_pct"] = round(100 * (1 - params / baseline["params"]), 4)
        out["accuracy_delta"] = round(acc - baseline["accuracy"], 4)
    return out


def report_iteration(r: dict) -> None:
    sims = " ".join(f"{c['structure'][0].upper()}={c['similarity']:.4f}" for c in r["candidates"]
                    if c["similarity"] is not None)
    print(f"iteration {r['iteration']}: {r['decision']} {sims} removed {len(r['removed'])} unit(s); "
          f"FLOPs -{r['flops_reduction_pct']:.2f}% params -{r['params_reduction_pct']:.2f}% "
          f"accuracy {r['accuracy']:.2f} ({r['accuracy_delta']:+.2f}) [{r['wall_time_s']:.0f}s]", flush=True)


# ---------------------------------------------------------------- set-up, baseline, resume
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError("--device cuda was asked for but no CUDA device is available; valid choices here: auto, cpu")
    return torch.device(name)


def check_names(cfg: BenchConfig) -> None:
    """Fail on unknown plugin names before anything is loaded or written."""
    plugins.get("model", cfg.model)
    for kind in ("dataset", "method", "criterion", "similarity"):
        plugins.get(kind, getattr(cfg, kind))


def versions() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(harness.__file__).parent,
                             capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:
        sha = None
    return {"harness": harness.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "git_sha": sha, "schema_version": records.SCHEMA_VERSION}


def baseline_model(cfg: BenchConfig, data: DataSplits, device, progress: bool) -> tuple[nn.Module, float | None]:
    """The unpruned model after the baseline step (fine-tuning given weights, or training from
    scratch), cached so that later runs with the same settings reuse it. Also returns the
    test accuracy of the weights before that step (None when trained from scratch)."""
    model = create_model(cfg.model, data.num_classes, data.train.images.shape[1], cfg.dataset,
                         checkpoint=cfg.checkpoint, pretrained=cfg.pretrained).to(device)
    has_weights = bool(cfg.checkpoint or cfg.pretrained)
    epochs = cfg.baseline_epochs if has_weights else cfg.scratch_epochs
    source = cfg.checkpoint and (os.path.abspath(cfg.checkpoint), os.path.getsize(cfg.checkpoint))
    key = derive_seed(cfg.model, cfg.dataset, cfg.data_dir and os.path.abspath(cfg.data_dir), source,
                      cfg.pretrained, epochs, cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.train_subset,
                      cfg.calib_size, cfg.seed)
    cache = Path(cfg.cache_dir) / "baselines" / f"{cfg.model}-{cfg.dataset}-{key:08x}.pt"
    before = accuracy(model, data.test, data, device) if has_weights else None
    if cache.exists():
        try:
            print(f"baseline: reusing {cache}")
            return load_model(cache, device), before
        except HarnessError:
            pass  # a broken cache entry is rebuilt
    lr = cfg.lr if has_weights else SCRATCH_LR
    train(model, data, epochs, lr=lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
          seed=derive_seed(cfg.seed, "baseline"), device=device, train_subset=cfg.train_subset,
          desc="baseline", progress=progress)
    save_model(model, cache)
    return model, before


def load_data(cfg: BenchConfig) -> DataSplits:
    data = plugins.get("dataset", cfg.dataset).load(cfg.data_dir, cfg.cache_dir, cfg.calib_size)
    data.test = data.test.subset(cfg.test_subset, seed=0)
    return data


def run_bench(cfg: BenchConfig, progress: bool = False) -> Path:
    cfg = cfg.resolved()
    if cfg.dataset is None:
        cfg.dataset = plugins.get("model", cfg.model).default_dataset
    check_names(cfg)
    cfg.cache_dir = cfg.cache_dir or default_cache_dir()
    device = resolve_device(cfg.device)
    name = cfg.name or f"{cfg.model}-{cfg.dataset}-{cfg.method}-{cfg.criterion}-{cfg.similarity}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.runs_dir) / name
    if (run_dir / records.CONFIG_FILE).exists():
        raise HarnessError(f"run {run_dir} already exists; continue it with --resume {run_dir} or pick another --name")
    data = load_data(cfg)
    for structure in plugins.get("method", cfg.method).candidate_structures:
        plugins.get("structure", structure)
    model, before = baseline_model(cfg, data, device, progress)
    session = Session(cfg, data, device, run_dir, progress)
    records.atomic_write_json(run_dir / records.CONFIG_FILE,
                              {"config": cfg.to_dict(), "versions": versions(), "command": sys.argv})
    base = metrics(session, model, None) | {"iteration": 0, "decision": None, "accuracy_before_baseline": before}
    save_model(model, records.model_path(run_dir, 0))
    records.append_iteration(run_dir, base)
    print(f"run {run_dir}: {cfg.model} on {cfg.dataset}, method {cfg.method}, criterion {cfg.criterion}, "
          f"similarity {cfg.similarity}; unpruned: {base['flops'] / 1e6:.2f} MFLOPs, {base['params']} params, "
          f"accuracy {base['accuracy']:.2f}", flush=True)
    return finish(session, model, base, start=1)


def resume_bench(run_dir: Path, progress: bool = False) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / records.CONFIG_FILE).exists():
        raise HarnessError(f"{run_dir} is not a run directory (no {records.CONFIG_FILE})")
    cfg = BenchConfig.from_dict(records.read_config(run_dir)["config"])
    rows = records.read_iterations(run_dir)
    if not rows:
        raise HarnessError(f"run {run_dir} has no finished iteration to resume from; start it again")
    if (run_dir / "result.json").exists():
        print(f"run {run_dir} is already complete")
        return run_dir
    data = load_data(cfg)
    session = Session(cfg, data, resolve_device(cfg.device), run_dir, progress)
    last = rows[-1]["iteration"]
    model = load_model(records.model_path(run_dir, last), session.device)
    print(f"resuming {run_dir} after iteration {last}", flush=True)
    return finish(session, model, rows[0], start=last + 1)


def finish(s: Session, model: nn.Module, baseline: dict, start: int) -> Path:
    reason = prune(s, model, baseline, start)
    rows = records.read_iterations(s.run_dir)
    path = "".join(r["decision"] for r in rows[1:])
    records.atomic_write_json(s.run_dir / "result.json", {"stop_reason": reason, "decision_path": path,
                                                         "iterations": len(rows) - 1})
    print(f"stopped: {reason}; decision path: {path or '(none)'}", flush=True)
    return s.run_dir

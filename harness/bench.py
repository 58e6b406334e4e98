"""The pruning loop (the paper's Algorithm 1, with the decision delegated to a method
plugin), the baseline step, evaluators and resumable run records."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import os
import platform
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import harness
from harness import plugins, records, schema
from harness.api import Candidate, CriterionContext, DataSplits, EvalContext, Step, Structure, Unit
from harness.config import BUDGETS, BenchConfig
from harness.errors import HarnessError, RunStopped, TimeLimitReached, first_line
from harness.baseline import baseline_model
from harness.checks import CORE_EVALUATORS, decision_letter, resolve, resolve_device
from harness.models import count_flops, count_parameters, load_model, save_model
from harness.decisions import oracle_verdict
from harness.training import Recipe, accuracy, evaluate, normalize, predict, scaled_lr, train


# share of the steps that warm the learning rate up when SGD trains from random weights: deep
# ResNets at lr 0.1 need it (He et al. 2016). Not for AdamW: a 48-step tabular transformer run
# stayed at the majority class with it (Shuttle test accuracy 92.50% against 97.80% without).
SCRATCH_WARMUP = 0.1


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
    # this run's own configured plugin objects (session_for sets them): the loop reads no others
    plugins: plugins.RunPlugins | None = None
    evaluators: list = field(default_factory=list)  # the extra evaluators asked for
    # where candidates fine-tune side by side: every GPU when the run uses CUDA and has several
    devices: list = field(default_factory=list)
    pool: object = None  # the Ray tasks of --parallel-candidates, started on first use
    unpruned_model: nn.Module | None = None  # iteration 0's model, read once when an evaluator asks
    deadline: float | None = None  # time.monotonic() by which the command must have stopped (--time-limit)

    def unpruned(self) -> nn.Module:
        """The run's unpruned model (its record's iteration 0), loaded on first use."""
        if self.unpruned_model is None:
            self.unpruned_model = load_model(records.model_path(self.run_dir, 0), self.device)
        return self.unpruned_model

    def measure(self, model: nn.Module, what: str) -> float:
        """The model's size in one of MATCH_CHOICES: FLOPs, parameters or filters."""
        if what == "flops":
            return count_flops(model, self.data.input_shape)
        if what == "params":
            return count_parameters(model)
        if what == "filters":
            return count_filters(model)
        raise ValueError(f"unknown measure {what!r}; valid choices: flops, params, filters")

    def recipe(self, scratch: bool = False) -> Recipe:
        """How this run trains: fine-tuning, or (``scratch``) training from random weights,
        which gets its own learning rate, a warm-up (SGD) and no distillation."""
        c = self.cfg
        return Recipe(lr=scaled_lr(c.scratch_lr if scratch else c.lr, c.batch_size, c.optimizer),
                      batch_size=c.batch_size, weight_decay=c.weight_decay, optimizer=c.optimizer,
                      precision=c.precision, train_subset=c.train_subset, label_smoothing=c.label_smoothing,
                      distill=0.0 if scratch else c.distill, distill_temperature=c.distill_temperature,
                      warmup=SCRATCH_WARMUP if scratch and c.optimizer == "sgd" else 0.0,
                      cuda_graphs=c.cuda_graphs == "on")

    def finetune(self, model, epochs, tag, teacher=None, device=None):
        """Fine-tunes in place (on ``device``, default the run's), distilling from ``teacher``
        when ``--distill`` is on. Its own seeded random state (dropout included), so the result
        does not depend on what ran before it, or where."""
        seed = derive_seed(self.cfg.seed, tag)
        device = device or self.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return train(model, self.data, epochs, recipe=self.recipe(), seed=seed, device=device, teacher=teacher,
                         desc=f"fine-tune {tag}", progress=self.progress)

    def validation(self, model) -> dict[str, float]:
        """Accuracy and loss on the validation split: what decisions inside the run read."""
        return evaluate(model, self.data.val, self.data, self.device)

    def finetune_all(self, models, epochs, tags, teacher=None):
        """Fine-tunes independent models, side by side on several GPUs when there are, else one
        after another; each keeps its own seed, so the result does not depend on which."""
        if self.cfg.parallel_candidates and len(models) >= 2:  # Ray tasks, one CPU slot or GPU each
            if self.pool is None:
                from harness.distributed import CandidatePool

                self.pool = CandidatePool(self.data, gpu=self.device.type == "cuda")
            trained = self.pool.finetune_all(models, epochs, self.recipe(), [derive_seed(self.cfg.seed, t) for t in tags],
                                             teacher)
            return [m.to(self.device) for m in trained]
        if len(self.devices) < 2 or len(models) < 2:
            return [self.finetune(m, epochs, tag, teacher) for m, tag in zip(models, tags)]

        def one(i):
            device = self.devices[i % len(self.devices)]
            own_teacher = copy.deepcopy(teacher).to(device) if teacher is not None else None
            trained = self.finetune(models[i].to(device), epochs, tags[i], own_teacher, device)
            return trained.to(self.device)

        with ThreadPoolExecutor(max_workers=len(self.devices)) as pool:
            return list(pool.map(one, range(len(models))))

    def features(self, model):
        return predict(model, self.data.calib, self.data, self.device, features=True)

    def structures(self, model) -> dict[str, Structure]:
        """The structure plugin of each asked-for type that supports this model."""
        return choose_structures(self.plugins.structures, self.cfg.structures, model,
                                 getattr(self.plugins.model, "structure_names", None) or {})

    @contextlib.contextmanager
    def phase(self, name: str):
        """Lets evaluators that measure the work itself (energy) track this phase."""
        with contextlib.ExitStack() as stack:
            for ev in self.evaluators:
                if hasattr(ev, "track"):
                    stack.enter_context(ev.track(name))
            yield

    def eval_context(self, iteration: int, baseline: dict | None, unpruned=None) -> EvalContext:
        return EvalContext(self.data, self.device, self.cfg.options, self.cfg.seed, self.cfg.cache_dir,
                           iteration, baseline, self.progress, unpruned)


_WARNED: set = set()


def choose_structures(structures, types, model, named: dict[str, str]) -> dict[str, Structure]:
    """For each type, the structure that prunes it on this model, whatever order the plugins
    were discovered in: the one the model family names, else the highest ``priority`` among
    those that support the model; equal priorities are a warning naming both, and the first
    by name wins."""
    found = {}
    for t in types:
        offered = [st for st in structures if getattr(st, "type", st.name) == t]
        if t in named:
            chosen = [st for st in offered if st.name == named[t] and st.supports(model)]
        else:
            chosen = sorted((st for st in offered if st.supports(model)),
                            key=lambda st: (-getattr(st, "priority", 0), st.name))
            tied = [st.name for st in chosen if getattr(st, "priority", 0) == getattr(chosen[0], "priority", 0)]
            if len(tied) > 1 and (t, *tied) not in _WARNED:
                _WARNED.add((t, *tied))
                print(f"harness: warning: structures {', '.join(tied)} all claim type {t!r} on this model with the "
                      f"same priority; using {tied[0]} (a model family can name its own in structure_names, "
                      "a structure can declare a priority)", file=sys.stderr, flush=True)
        if chosen:
            found[t] = chosen[0]
    return found


# ---------------------------------------------------------------- candidates
def build_candidates(s: Session, model: nn.Module, iteration: int, method) -> list[Candidate]:
    """A layer candidate (the ``p_layer`` lowest-scoring blocks) and, for each other
    structure type, a candidate of the lowest-scoring units until its reduction matches
    the layer candidate's (``--match``). Returned in tie-break order."""
    cfg = s.cfg
    criterion = s.plugins.criterion
    cctx = CriterionContext(normalize(s.data.calib.images.to(s.device), s.data.mean, s.data.std),
                            s.data.calib.labels.to(s.device), derive_seed(cfg.seed, iteration, "criterion"),
                            progress=s.progress)
    structures = s.structures(model)
    units = {t: st.units(model) for t, st in structures.items()}
    offered = [t for t in structures if units[t]]
    wanted = method.structures(offered)
    if wanted and cfg.record_decisions:  # the records describe every candidate, not only the method's
        wanted = offered
    parent_size = s.measure(model, cfg.match)
    candidates, target = [], None

    if "layer" in offered:
        layer = structures["layer"]
        scores = criterion.scores(model, layer, units["layer"], cctx)
        chosen = [u for _, u in sorted(zip(scores, units["layer"]), key=lambda p: p[0])[: cfg.p_layer]]
        child = layer.remove(model, chosen)
        target = parent_size - s.measure(child, cfg.match)
        if "layer" in wanted:
            candidates.append(Candidate("layer", chosen, child))
    if target is None:  # no block left: width only, a fixed share per iteration
        target = cfg.filter_step * parent_size

    for t in wanted:
        if t == "layer":
            continue
        structure = structures[t]
        scores = criterion.scores(model, structure, units[t], cctx)
        chosen = fill_to_target(s, model, structure, units[t], scores, target)
        if chosen:
            candidates.append(Candidate(t, chosen, structure.remove(model, chosen)))
    order = {t: i for i, t in enumerate(offered)}
    return sorted(candidates, key=lambda c: order[c.type])


def fill_to_target(s: Session, model, structure: Structure, units: list[Unit], scores: list[float],
                   target: float) -> list[Unit]:
    """The lowest-scoring units until their removal saves ``target`` (in ``--match`` terms),
    always leaving one unit per site. Every unit of a site costs the same (a filter of a
    convolution, a head of an attention), so one trial removal per site prices them all.
    Under ``--round-to N`` the units come in aligned steps (:func:`aligned_steps`), so the
    candidate reaches its target with every layer it touches keeping a multiple of N."""
    per_site: dict[str, list[Unit]] = {}
    for u in units:
        per_site.setdefault(u.site, []).append(u)
    parent_size = s.measure(model, s.cfg.match)
    cost = {site: parent_size - s.measure(structure.remove(model, [us[0]]), s.cfg.match)
            for site, us in per_site.items() if len(us) > 1}
    chosen, removed = [], 0.0
    if s.cfg.round_to > 1:
        for step in aligned_steps(units, scores, s.cfg.round_to):
            if removed >= target:
                break
            chosen += step
            removed += cost[step[0].site] * len(step)
        return chosen
    left = {site: len(us) - 1 for site, us in per_site.items()}
    ranked = [u for _, u in sorted(zip(scores, units), key=lambda p: p[0])]
    for unit in ranked:
        if removed >= target:
            break
        if left[unit.site] > 0:
            chosen.append(unit)
            left[unit.site] -= 1
            removed += cost[unit.site]
    return chosen


def aligned_steps(units: list[Unit], scores: list[float], multiple: int) -> list[list[Unit]]:
    """Removal steps under ``--round-to``, in the order a width candidate takes them: each
    step takes the next lowest-scoring units of one layer, as many as bring its kept count
    down to the next multiple of ``multiple`` (rounded down, as Torch-Pruning's ``round_to``;
    never below ``multiple``); steps are ordered by their mean score. A layer narrower than
    ``multiple`` goes one unit at a time, down to one. Filling step by step keeps the
    candidate near its target: rounding a finished selection down overshoots it (a 16-channel
    layer that keeps 15 would keep 8)."""
    per_site: dict[str, list[tuple[float, Unit]]] = {}
    for score, u in sorted(zip(scores, units), key=lambda p: p[0]):
        per_site.setdefault(u.site, []).append((score, u))
    steps = []
    for site, mine in per_site.items():
        size = len(mine)
        if size >= multiple:
            levels = range((size - 1) // multiple * multiple, multiple - 1, -multiple)
        else:
            levels = range(size - 1, 0, -1)
        start = 0
        for order, kept in enumerate(levels):
            step = mine[start:size - kept]
            steps.append((sum(sc for sc, _ in step) / len(step), site, order, [u for _, u in step]))
            start = size - kept
    return [step for *_, step in sorted(steps, key=lambda t: t[:3])]


# ---------------------------------------------------------------- the loop
def selection_key(rows: list[dict]) -> str:
    """The accuracy that decisions read: validation accuracy; test accuracy only in records
    from before the validation split existed (they are resumed as they were started)."""
    return "val_accuracy" if "val_accuracy" in rows[0] else "accuracy"


def stop_reason(cfg: BenchConfig, rows: list[dict]) -> str | None:
    """Why the run stops after these iterations, or None to go on. Read from the records
    alone, so that a resumed run stops where an uninterrupted one would."""
    last, base = rows[-1], rows[0]
    key = selection_key(rows)
    if cfg.stop_on_drop is not None and last[key] < base[key] - cfg.stop_on_drop:
        split = "validation" if key == "val_accuracy" else "test"
        return f"{split} accuracy fell more than {cfg.stop_on_drop:g} points below the unpruned model"
    if cfg.target_flops is not None and last.get("flops_reduction_pct", 0.0) >= cfg.target_flops:
        return f"reached target FLOPs reduction {cfg.target_flops:g}%"
    if last["iteration"] >= cfg.iterations:
        return f"finished {cfg.iterations} iterations"
    return None


def final_iteration(cfg: BenchConfig, rows: list[dict]) -> int:
    """The iteration whose model the run keeps: the last one within the validation-accuracy
    tolerance under ``--stop-on-drop`` (the paper's Table III protocol, decided on held-out
    training data rather than the test split), else the last one."""
    if cfg.stop_on_drop is None:
        return rows[-1]["iteration"]
    key = selection_key(rows)
    floor = rows[0][key] - cfg.stop_on_drop
    return max(r["iteration"] for r in rows if r[key] >= floor)


def prune(s: Session, model: nn.Module, rows: list[dict]) -> str:
    """Iterate until a stopping rule fires; returns the stop reason."""
    cfg = s.cfg
    method = s.plugins.method
    for it in itertools.count(rows[-1]["iteration"] + 1):
        reason = stop_reason(cfg, rows)
        if reason:
            return reason
        check_time_left(s, rows)
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(cfg.seed, it))
        with s.phase("criterion"):
            candidates = build_candidates(s, model, it, method)
        mine = [c for c in candidates if c.type in method.structures([c.type for c in candidates])]
        if not mine:
            return "nothing left to remove"
        step = make_step(s, model, it)
        with s.phase("candidates"):
            if cfg.record_decisions:
                describe_candidates(s, step, candidates)
            winner = method.select(step, mine)
        oracle = None
        if cfg.oracle_epochs > 0:
            with s.phase("oracle"):
                oracle = check_decision(s, step, candidates)
        with s.phase("finetune"):
            model = s.finetune(winner.model, cfg.finetune_epochs, (it, "winner"), teacher_for(s, step.parent))
        record = schema.pruned_iteration(
            measure_core(s, model, rows[0]), iteration=it, decision=decision_letter(winner.type),
            removed=[u.key for u in winner.units],
            candidates=[candidate_record(s, c, any(c is m for m in mine)) for c in candidates],
            wall_time_s=round(time.perf_counter() - t0, 2), oracle=oracle)
        save_model(model, records.model_path(s.run_dir, it))
        records.append_iteration(s.run_dir, record)
        rows.append(record)
        report_iteration(record)
        if cfg.evaluate == "every":
            run_evaluators(s, model, it)
    raise AssertionError("unreachable")


def check_time_left(s: Session, rows: list[dict]) -> None:
    """Stops the run (TimeLimitReached) when its next iteration, taking as long as its last
    one did (the record's wall time, so a resumed run judges the same way), would end after
    the deadline. Records are written per iteration, so nothing is lost."""
    if s.deadline is None:
        return
    last = rows[-1].get("wall_time_s", 0.0) if len(rows) > 1 else 0.0
    left = s.deadline - time.monotonic()
    if last > left:
        why = (f"the next would take about {last:.0f} s, {left:.0f} s are left" if left > 0 else "no time left")
        raise TimeLimitReached(f"time limit: stopped after iteration {rows[-1]['iteration']} of {s.run_dir} ({why})",
                               f"harness bench --resume {s.run_dir}")


def teacher_for(s: Session, parent: nn.Module):
    """What fine-tuning distils from: the parent, when the run has --distill."""
    return parent if s.cfg.distill > 0 else None


def make_step(s: Session, parent: nn.Module, it: int) -> Step:
    """The services a method gets in iteration ``it``. Representations are computed once
    per model and forgotten when the model trains again."""
    cfg = s.cfg
    similarity = s.plugins.similarity
    features: dict[int, torch.Tensor] = {}
    counter = itertools.count()
    teacher = teacher_for(s, parent)

    def feats(m):
        if id(m) not in features:
            features[id(m)] = s.features(m)
        return features[id(m)]

    def finetune(m, epochs):
        features.pop(id(m), None)
        return s.finetune(m, epochs, (it, "candidate", next(counter)), teacher)

    def finetune_all(ms, epochs, tags=None):
        for m in ms:
            features.pop(id(m), None)
        tags = [(it, *t) for t in tags] if tags else [(it, "candidate", next(counter)) for _ in ms]
        return s.finetune_all(ms, epochs, tags, teacher)

    step = Step(iteration=it, parent=parent, config=cfg, rng=random.Random(derive_seed(cfg.seed, it, "method")),
                finetune=finetune, similarity=lambda p, c: similarity(feats(p), feats(c)),
                finetune_all=finetune_all, validation=s.validation if s.data.val is not None else None,
                data=s.data, features=feats, device=s.device)
    return step


def describe_candidates(s: Session, step: Step, candidates: list[Candidate]) -> None:
    """The decision record of every candidate: all of them get the method's brief fine-tune
    (one fine-tune serves every metric), then every registered similarity metric, the
    validation accuracy and loss."""
    step.finetune_candidates(candidates, s.cfg.candidate_epochs)
    parent = step.features(step.parent)
    for cand in candidates:
        child = step.features(cand.model)
        sims = {}
        for name, metric in s.plugins.similarities.items():
            try:
                sims[name] = round(float(metric(parent, child)), 6)
            except Exception as exc:  # one broken metric must not take the run down
                print(f"harness: similarity {name} failed: {type(exc).__name__}: {first_line(exc)}",
                      file=sys.stderr, flush=True)
                sims[name] = None
        cand.info["similarities"] = sims
        if step.validation is not None:
            step.validate(cand)


def check_decision(s: Session, step: Step, candidates: list[Candidate]) -> dict:
    """The oracle: every candidate, as briefly fine-tuned, trains ``--oracle-epochs`` more
    with two seeds; each copy's validation (and, for reporting, test) accuracy is recorded.
    Copies only, under a forked random state: the run goes on exactly as without it."""
    cfg = s.cfg
    copies = [copy.deepcopy(c.model) for c in candidates for _ in range(2)]
    tags = [(step.iteration, "oracle", c.type, k) for c in candidates for k in range(2)]
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if s.device.type == "cuda" else []):
        trained = s.finetune_all(copies, cfg.oracle_epochs, tags, teacher_for(s, step.parent))
    for i, cand in enumerate(candidates):
        pair = trained[2 * i: 2 * i + 2]
        cand.info["oracle"] = {
            "val_accuracy": [round(s.validation(m)["accuracy"], 4) for m in pair],
            "test_accuracy": [round(accuracy(m, s.data.test, s.data, s.device), 4) for m in pair],
        }
    verdict = oracle_verdict([c.info["oracle"]["val_accuracy"] for c in candidates])
    answer = None if verdict["best"] is None else candidates[verdict["best"]].type
    return {"epochs": cfg.oracle_epochs, "seeds": 2, "split": "val", "answer": answer,
            "gap": verdict["gap"], "disagreement": verdict["disagreement"]}


def candidate_record(s: Session, c: Candidate, method_saw: bool) -> schema.Candidate:
    return schema.candidate(structure=c.type, similarity=c.similarity, units=len(c.units),
                            flops=s.measure(c.model, "flops"), params=s.measure(c.model, "params"),
                            finetuned=c.finetuned_epochs is not None, method_saw=method_saw, info=c.info)


def measure_core(s: Session, model: nn.Module, baseline: dict | None) -> schema.Measurements:
    """The measurements every iteration records, from the accuracy and flops evaluators."""
    ctx = s.eval_context(-1, None)
    out = s.plugins.evaluators["flops"].evaluate(model, ctx)
    out |= {"accuracy": round(s.plugins.evaluators["accuracy"].evaluate(model, ctx)["accuracy"], 4)}
    if s.data.val is not None:
        val = s.validation(model)
        out |= {"val_accuracy": round(val["accuracy"], 4), "val_loss": round(val["loss"], 6)}
    if baseline:
        out["flops_reduction_pct"] = round(100 * (1 - out["flops"] / baseline["flops"]), 4)
        out["params_reduction_pct"] = round(100 * (1 - out["params"] / baseline["params"]), 4)
        out["accuracy_delta"] = round(out["accuracy"] - baseline["accuracy"], 4)
    return out


def run_evaluators(s: Session, model: nn.Module, iteration: int) -> dict:
    """Runs the extra evaluators on one model. A failing evaluator is recorded and
    reported; the run goes on."""
    if not s.evaluators:
        return {}
    baseline = records.read_evaluations(s.run_dir).get(0, {}).get("results", {})
    results, errors = {}, {}
    for ev in s.evaluators:
        ctx = s.eval_context(iteration, baseline.get(ev.name) if iteration else None,
                             s.unpruned if iteration else None)
        try:
            results[ev.name] = ev.evaluate(model, ctx)
        except HarnessError as exc:
            errors[ev.name] = str(exc)
        except Exception as exc:  # a broken evaluator must not take the run down
            errors[ev.name] = f"{type(exc).__name__}: {first_line(exc)}"
        if ev.name in errors:
            print(f"harness: evaluator {ev.name} failed at iteration {iteration}: {errors[ev.name]}",
                  file=sys.stderr, flush=True)
    row = schema.evaluation(iteration, results, errors)
    records.append_evaluation(s.run_dir, row)
    return row


def report_iteration(r: dict) -> None:
    sims = " ".join(f"{decision_letter(c['structure'])}={c['similarity']:.4f}" for c in r["candidates"]
                    if c["similarity"] is not None)
    print(f"iteration {r['iteration']}: {r['decision']} {sims} removed {len(r['removed'])} unit(s); "
          f"FLOPs -{r['flops_reduction_pct']:.2f}% params -{r['params_reduction_pct']:.2f}% "
          f"accuracy {r['accuracy']:.2f} ({r['accuracy_delta']:+.2f}) [{r['wall_time_s']:.0f}s]", flush=True)


# ---------------------------------------------------------------- set-up, baseline, resume


def git_revision() -> str | None:
    """The commit of the harness checkout that runs, ``-dirty`` when it has uncommitted
    changes; None for an installed copy outside its repository (a directory above it may be
    some other repository, whose commit would be a lie)."""
    package = Path(harness.__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or package.parent != Path(top).resolve():
            return None
        sha = git("rev-parse", "HEAD")
        return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "") if sha else None
    except Exception:
        return None


def versions() -> dict:
    return {"harness": harness.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "git_sha": git_revision(), "schema_version": records.SCHEMA_VERSION}


def hardware(device: torch.device) -> dict:
    """Where the run's wall times were measured."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
        except OSError:
            pass
    out = {"device": device.type, "name": name, "threads": torch.get_num_threads()}
    if os.environ.get(records.NODE_ENV):  # a Ray task: the node that started the run
        out["node"] = os.environ[records.NODE_ENV]
    return out


VAL_SEED = 20261127  # fixed: every run of a data set holds out the same validation samples


def load_data(cfg: BenchConfig, dataset=None) -> DataSplits:
    """The data set's splits, with the validation split held out of its training split
    (after the calibration split, so the two are disjoint). Sets ``cfg.val_size`` to the
    number held out: the budget's by default, at most a fifth of the training split."""
    dataset = dataset or plugins.get("dataset", cfg.dataset)
    data = dataset.load(cfg.data_dir, cfg.cache_dir, cfg.calib_size)
    data.test = data.test.subset(cfg.test_subset, seed=0)
    if data.val is not None:  # the data set brings its own (harness.prune's val_loader)
        cfg.val_size = len(data.val)
        return data
    if cfg.val_size is None:
        cfg.val_size = min(BUDGETS[cfg.budget]["val_size"], len(data.train) // 5)
    if cfg.val_size:
        if cfg.val_size > len(data.train) // 2:
            raise HarnessError(f"--val-size {cfg.val_size} would leave too little to train on: the training split "
                               f"of {cfg.dataset} has {len(data.train)} samples; give at most {len(data.train) // 2}")
        data.train, data.val = data.train.hold_out(cfg.val_size, VAL_SEED)
    return data


def session_for(cfg: BenchConfig, run_dir: Path, progress: bool, deadline: float | None = None) -> Session:
    """The run's session: its own configured plugins (from its own resolved options, for a new
    run and a resumed one alike), its data and its devices."""
    own = plugins.for_run(cfg, [*CORE_EVALUATORS, *cfg.evaluators])
    data = load_data(cfg, own.dataset)
    evaluators = [own.evaluators[name] for name in cfg.evaluators]
    device = resolve_device(cfg.device)
    devices = ([torch.device("cuda", i) for i in range(torch.cuda.device_count())]
               if cfg.device in ("auto", "cuda") and device.type == "cuda" else [])
    return Session(cfg, data, device, run_dir, progress, own, evaluators, devices, deadline=deadline)


def run_name(cfg: BenchConfig) -> str:
    return cfg.name or (f"{cfg.model.replace(':', '_')}-{cfg.dataset}-{cfg.method}-{cfg.criterion}-{cfg.similarity}"
                        f"-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def run_bench(cfg: BenchConfig, progress: bool = False, deadline: float | None = None) -> tuple[Path, bool]:
    """Runs a new benchmark; returns its directory and whether every evaluator succeeded.
    ``deadline`` (a ``time.monotonic()`` value): --time-limit's."""
    cfg = resolve(cfg)
    run_dir = Path(cfg.runs_dir) / run_name(cfg)
    with records.run_lock(run_dir):
        return start_run(cfg, run_dir, progress, deadline)


def start_run(cfg: BenchConfig, run_dir: Path, progress: bool, deadline: float | None = None) -> tuple[Path, bool]:
    if records.read_iterations(run_dir):  # a run killed before its first record is simply started again
        raise HarnessError(f"run {run_dir} already exists; continue it with --resume {run_dir} or pick another --name")
    s = session_for(cfg, run_dir, progress, deadline)
    model, before = baseline_model(s)
    data = s.data
    records.atomic_write_json(run_dir / records.CONFIG_FILE, schema.run_config(
        config=cfg.to_dict(), versions=versions(), hardware=hardware(s.device), command=sys.argv,
        # the defaults of the run's plugin options: tables show the options a run changed
        option_defaults={k: o.default for k, o in sorted(plugins.options_of(s.plugins.all()).items())
                         if k in cfg.options},
        data={"label": data.label or cfg.dataset, "input_shape": list(data.input_shape),
                 "num_classes": data.num_classes, "train": len(data.train), "calib": len(data.calib),
                 "val": len(data.val) if data.val is not None else 0, "test": len(data.test),
                 # which split each recorded number comes from
                 "splits": {"accuracy": "test", "val_accuracy": "val", "val_loss": "val",
                            "similarities": "calib", "oracle": "val (and test, for reporting)"}},
    ))
    base = schema.baseline_iteration(measure_core(s, model, None), accuracy_before_baseline=before)
    save_model(model, records.model_path(run_dir, 0))
    records.append_iteration(run_dir, base)
    print(f"run {run_dir}: {cfg.model} on {data.label or cfg.dataset}, method {cfg.method}, criterion "
          f"{cfg.criterion}, similarity {cfg.similarity}, structures {','.join(cfg.structures)}; unpruned: "
          f"{base['flops'] / 1e6:.2f} MFLOPs, {base['params']} params, accuracy {base['accuracy']:.2f}", flush=True)
    return run_rest_or_keep(s, model)


def resume_bench(run_dir: Path, progress: bool = False, deadline: float | None = None) -> tuple[Path, bool]:
    run_dir = Path(run_dir)
    if not (run_dir / records.CONFIG_FILE).exists():
        raise HarnessError(f"{run_dir} is not a run directory (no {records.CONFIG_FILE})")
    with records.run_lock(run_dir):
        return continue_run(run_dir, progress, deadline)


def continue_run(run_dir: Path, progress: bool, deadline: float | None = None) -> tuple[Path, bool]:
    rows = records.read_iterations(run_dir)
    if not rows:
        raise HarnessError(f"run {run_dir} has no finished iteration to resume from; start it again")
    if records.read_result(run_dir) is not None:
        print(f"run {run_dir} is already complete")
        return run_dir, not any_failures(run_dir)
    cfg = BenchConfig.from_dict(records.read_config(run_dir)["config"])
    s = session_for(cfg, run_dir, progress, deadline)  # its plugins configured from its own record
    last = rows[-1]["iteration"]
    model = load_model(records.model_path(run_dir, last), s.device)
    print(f"resuming {run_dir} after iteration {last}", flush=True)
    return run_rest_or_keep(s, model)


def run_rest_or_keep(s: Session, model: nn.Module) -> tuple[Path, bool]:
    """The rest of the run; an error partway keeps every record written so far and says how to
    continue (a plugin's failure names the plugin)."""
    try:
        return run_rest(s, model)
    except (RunStopped, TimeLimitReached):
        raise
    except HarnessError as exc:
        raise RunStopped(str(exc), s.run_dir) from exc


def evaluation_due(cfg: BenchConfig, iteration: int, final: int | None) -> bool:
    return iteration == 0 or cfg.evaluate == "every" or iteration == final


def run_rest(s: Session, model: nn.Module) -> tuple[Path, bool]:
    """Everything after the unpruned model's record: the evaluations a kill interrupted, the
    pruning loop until a stopping rule fires, the kept model's evaluation, and result.json."""
    cfg, run_dir = s.cfg, s.run_dir
    rows = records.read_iterations(run_dir)
    # evaluations a kill interrupted are done again before going on
    done = records.read_evaluations(run_dir)
    for row in rows:
        if s.evaluators and row["iteration"] not in done and evaluation_due(cfg, row["iteration"], None):
            run_evaluators(s, load_model(records.model_path(run_dir, row["iteration"]), s.device), row["iteration"])
    reason = prune(s, model, rows)
    final = final_iteration(cfg, rows)
    if s.evaluators and final not in records.read_evaluations(run_dir):
        run_evaluators(s, load_model(records.model_path(run_dir, final), s.device), final)
    path = "".join(r["decision"] for r in rows[1:final + 1])
    records.atomic_write_json(run_dir / records.RESULT_FILE, schema.result(
        stop_reason=reason, decision_path=path, final_iteration=final,
        iterations=len(rows) - 1, decision_path_all="".join(r["decision"] for r in rows[1:]),
        chosen_on="val" if selection_key(rows) == "val_accuracy" else "test",  # the split that chose the kept model
        node=os.environ.get(records.NODE_ENV)))
    kept = "" if final == rows[-1]["iteration"] else f"; kept iteration {final}, the last within tolerance"
    print(f"stopped: {reason}; decision path: {path or '(none)'}{kept}", flush=True)
    failed = any_failures(run_dir)
    if failed:
        print(f"harness: some evaluators failed; see {run_dir / records.EVALUATIONS_FILE}", file=sys.stderr)
    return run_dir, not failed


def any_failures(run_dir: Path) -> bool:
    return any(row.get("errors") for row in records.read_evaluations(run_dir).values())

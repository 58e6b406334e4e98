"""The pruning loop: the paper's Algorithm 1, with the decision delegated to a method plugin.
Each iteration builds the candidates, lets the method choose, fine-tunes the kept one and
appends its record; the stopping rules read the records alone, so a resumed run stops where
an uninterrupted one would."""

from __future__ import annotations

import copy
import itertools
import math
import random
import time

import torch
from torch import nn

from harness import records, schema
from harness.api import Candidate, Similarity, Step
from harness.candidates import build_candidates
from harness.config import BenchConfig
from harness.errors import HarnessError, PluginError, TimeLimitReached, described, print_traceback, warn
from harness.runplugins import label_of
from harness.measure import count_flops, count_parameters
from harness.models import save_model
from harness.oracle import ORACLE_SPLIT, TIE_RULE, judged_outcomes
from harness.seeds import derive_seed
from harness.session import Session, measure_core
from harness.structure_types import decision_letter
from harness.training import predict


def selection_key(rows: list[schema.Iteration]) -> str:
    """The accuracy that decisions read: validation accuracy; test accuracy only in records
    from before the validation split existed (they are resumed as they were started)."""
    return "val_accuracy" if "val_accuracy" in rows[0] else "accuracy"


def stop_reason(cfg: BenchConfig, rows: list[schema.Iteration]) -> str | None:
    """Why the run stops after these iterations, or None to go on."""
    last, unpruned = rows[-1], rows[0]
    key = selection_key(rows)
    if cfg.stop_on_drop is not None and last[key] < unpruned[key] - cfg.stop_on_drop:
        split = "validation" if key == "val_accuracy" else "test"
        return f"{split} accuracy fell more than {cfg.stop_on_drop:g} points below the unpruned model"
    if cfg.target_flops is not None and last.get("flops_reduction_pct", 0.0) >= cfg.target_flops:
        return f"reached target FLOPs reduction {cfg.target_flops:g}%"
    if last["iteration"] >= cfg.iterations:
        return f"finished {cfg.iterations} iterations"
    return None


def final_iteration(cfg: BenchConfig, rows: list[schema.Iteration]) -> int:
    """The iteration whose model the run keeps (result.json's ``final_iteration``): the last
    one within the validation-accuracy tolerance under ``--stop-on-drop`` (the paper's Table
    III protocol, decided on held-out training data rather than the test split), else the
    last one."""
    if cfg.stop_on_drop is None:
        return rows[-1]["iteration"]
    key = selection_key(rows)
    floor = rows[0][key] - cfg.stop_on_drop
    return max(r["iteration"] for r in rows if r[key] >= floor)


def check_time_left(deadline: float | None, run_dir, rows: list[schema.Iteration]) -> None:
    """Stops the run (TimeLimitReached) when its next iteration, taking as long as its last
    one did (the record's wall time, so a resumed run judges the same way), would end after
    ``deadline`` (--time-limit's). Records are written per iteration, so nothing is lost."""
    if deadline is None:
        return
    last = rows[-1].get("wall_time_s", 0.0) if len(rows) > 1 else 0.0
    left = deadline - time.monotonic()
    if last > left:
        why = f"the next would take about {last:.0f} s, {left:.0f} s are left" if left > 0 else "no time left"
        raise TimeLimitReached(f"time limit: stopped after iteration {rows[-1]['iteration']} of {run_dir} ({why})",
                               f"harness bench --resume {run_dir}")


def iterate(s: Session, model: nn.Module, rows: list[schema.Iteration]) -> tuple[str, list[schema.Iteration]]:
    """Prunes ``model`` one iteration after another, after the recorded ``rows``, until a
    stopping rule fires; returns the stop reason and every row, the new ones included."""
    cfg = s.cfg
    method = s.plugins.method
    rows = list(rows)
    for it in itertools.count(rows[-1]["iteration"] + 1):
        reason = stop_reason(cfg, rows)
        if reason:
            return reason, rows
        check_time_left(s.deadline, s.run_dir, rows)
        t0 = time.perf_counter()
        s.phase_seconds = {}
        torch.manual_seed(derive_seed(cfg.seed, it))
        with s.phase("criterion"):
            candidates = build_candidates(s, model, it, method)
        mine = [c for c in candidates if c.type in method.structures([c.type for c in candidates])]
        if not mine:
            return "nothing left to remove", rows
        step = make_step(s, model, it, candidates)
        with s.phase("candidates"):
            if cfg.record_decisions:
                describe_candidates(step, candidates, s.plugins.similarities, cfg.candidate_epochs, cfg.similarity)
            winner = method.select(step, mine)
        oracle = None
        if cfg.oracle_epochs > 0:
            with s.phase("oracle"):
                oracle = run_oracle(s, step, candidates)
        with s.phase("finetune"):
            model = s.finetune(winner.model, cfg.finetune_epochs, (it, "winner"), teacher_for(cfg, step.parent))
        record = schema.pruned_iteration(
            measure_core(model, s.data, s.device, rows[0]), iteration=it, decision=decision_letter(winner.type, s.plugins.structures.values()),
            removed=[u.key for u in winner.units],
            candidates=[candidate_record(c, s.data.input_shape, any(c is m for m in mine)) for c in candidates],
            wall_time_s=round(time.perf_counter() - t0, 2), oracle=oracle,
            phase_s={name: round(seconds, 2) for name, seconds in s.phase_seconds.items()})
        save_model(model, records.model_path(s.run_dir, it))
        records.append_iteration(s.run_dir, record)
        rows.append(record)
        report_iteration(record, s.plugins.structures.values())
        if cfg.evaluate == "every":
            run_evaluators(s, model, it)
    raise AssertionError("unreachable")


def teacher_for(cfg: BenchConfig, parent: nn.Module) -> nn.Module | None:
    """What fine-tuning distils from: the parent, when the run has --distill."""
    return parent if cfg.distill > 0 else None


def make_step(s: Session, parent: nn.Module, it: int, candidates: list[Candidate] = ()) -> Step:
    """The services a method gets in iteration ``it``. Representations are computed once
    per model and forgotten when the model trains again. The loop owns fine-tuning: a
    candidate's model fine-tuned once is not trained again, whoever asks (a method written
    when methods fine-tuned candidates themselves gets the model as it is; asking for other
    epochs is a one-line error), so the record describes the model the method judged."""
    cfg = s.cfg
    similarity = s.plugins.similarity
    features: dict[int, torch.Tensor] = {}
    counter = itertools.count()
    teacher = teacher_for(cfg, parent)

    def feats(m):
        if id(m) not in features:
            features[id(m)] = s.features(m)
            if not bool(torch.isfinite(features[id(m)]).all()):  # what every similarity reads: not NaN
                what = "the parent" if m is parent else f"the {getattr(candidate_of(m), 'type', 'candidate')} candidate"
                raise HarnessError(f"iteration {it}: {what}'s features on the calibration split hold NaN or infinite "
                                   "values (its training diverged); nothing is decided on NaN: give a lower "
                                   "learning rate (--lr) or --batch-size")
        return features[id(m)]

    def candidate_of(m) -> Candidate | None:
        return next((c for c in candidates if c.model is m), None)

    def tuned_already(m, epochs) -> bool:
        cand = candidate_of(m)
        if cand is None or cand.finetuned_epochs is None:
            return False
        if cand.finetuned_epochs != epochs:
            raise HarnessError(f"method {cfg.method} fine-tunes the {cand.type} candidate for {epochs:g} epochs after "
                               f"it was fine-tuned for {cand.finetuned_epochs:g}: the loop fine-tunes candidates "
                               "(--candidate-epochs); to train one longer, fine-tune a copy (copy.deepcopy)")
        return True

    def mark(m, epochs):
        cand = candidate_of(m)
        if cand is not None:
            cand.finetuned_epochs = epochs

    def finetune(m, epochs):
        if tuned_already(m, epochs):
            return m
        features.pop(id(m), None)
        trained = s.finetune(m, epochs, (it, "candidate", next(counter)), teacher)
        mark(trained, epochs)
        return trained

    def finetune_all(ms, epochs, tags=None):
        tags = [(it, *t) for t in tags] if tags else [(it, "candidate", next(counter)) for _ in ms]
        todo = [i for i, m in enumerate(ms) if not tuned_already(m, epochs)]
        for i in todo:
            features.pop(id(ms[i]), None)
        trained = s.finetune_all([ms[i] for i in todo], epochs, [tags[i] for i in todo], teacher) if todo else []
        out = list(ms)
        for i, m in zip(todo, trained):
            out[i] = m
            mark(m, epochs)
        return out

    return Step(iteration=it, parent=parent, config=cfg, rng=random.Random(derive_seed(cfg.seed, it, "method")),
                finetune=finetune, similarity=lambda p, c: in_range(similarity, similarity(feats(p), feats(c))),
                finetune_all=finetune_all, validation=s.validation if s.data.val is not None else None,
                data=s.data, features=feats, device=s.device)


def in_range(metric: Similarity, value) -> float:
    """A similarity as its metric declares it: a finite number no higher than its ``maximum``
    (what identical inputs give); else one line naming the metric (a decision taken on a value
    out of range, or on NaN, would be silently wrong)."""
    maximum = float(getattr(metric, "maximum", 1.0))
    number = float(value)
    if not math.isfinite(number) or number > maximum + 1e-6 * max(1.0, abs(maximum)):
        raise HarnessError(f"{label_of(metric, 'similarity')} gave {number:.6g}, outside its declared range "
                           f"(a finite number, at most its maximum {maximum:g}); check it with harness check-plugin "
                           f"similarity {metric.name}")
    return number


def describe_candidates(step: Step, candidates: list[Candidate], similarities: dict[str, Similarity],
                        epochs: float, decisive: str | None = None) -> None:
    """The decision record of every candidate: all of them get the method's brief fine-tune
    (``epochs``; one fine-tune serves every metric), then every similarity metric, the
    validation accuracy and loss. A metric that fails or gives a value out of its range is
    recorded as None with a warning, except ``decisive`` (the run's own), which stops the run."""
    step.finetune_candidates(candidates, epochs)
    parent = step.features(step.parent)
    for cand in candidates:
        child = step.features(cand.model)
        sims = {}
        for name, metric in similarities.items():
            try:
                sims[name] = round(in_range(metric, metric(parent, child)), 6)
            except HarnessError as exc:
                if name == decisive:
                    raise
                warn_failed(name, exc)
                sims[name] = None
            except Exception as exc:  # one broken metric must not take the run down
                warn_failed(name, exc)
                sims[name] = None
        cand.info["similarities"] = sims
        if step.validation is not None:
            step.validate(cand)


def warn_failed(name: str, exc: BaseException) -> None:
    print_traceback(exc)
    warn(str(exc) if isinstance(exc, HarnessError) else f"similarity {name} failed: {described(exc)}")


def run_oracle(s: Session, step: Step, candidates: list[Candidate]) -> schema.DecisionCheck:
    """The oracle: every candidate, as briefly fine-tuned, trains ``--oracle-epochs`` more (at
    least the kept model's horizon) with ``--oracle-seeds`` seeds; each copy is scored image by
    image on the validation and the test split, and the verdict reads the test split, which no
    decision inside the run reads (:mod:`harness.oracle`). Copies only, under a forked random
    state: the run goes on exactly as without it."""
    cfg, seeds = s.cfg, s.cfg.oracle_seeds
    copies = [copy.deepcopy(c.model) for c in candidates for _ in range(seeds)]
    tags = [(step.iteration, "oracle", c.type, k) for c in candidates for k in range(seeds)]
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if s.device.type == "cuda" else []):
        trained = s.finetune_all(copies, cfg.oracle_epochs, tags, teacher_for(cfg, step.parent))
    splits = {"val": s.data.val, "test": s.data.test}
    judged = {}
    for name, split in splits.items():
        correct = [torch.stack([predict(m, split, s.data, s.device).argmax(1) == split.labels
                                for m in trained[i * seeds:(i + 1) * seeds]]) for i in range(len(candidates))]
        judged[name] = judged_outcomes(correct)
    for i, cand in enumerate(candidates):
        cand.info["oracle"] = {f"{name}_accuracy": judged[name][0][i] for name in splits}
    accuracies, paired_se = judged[ORACLE_SPLIT]
    verdict = TIE_RULE.verdict(accuracies, len(splits[ORACLE_SPLIT]), paired_se)
    answer = None if verdict["best"] is None else candidates[verdict["best"]].type
    return schema.DecisionCheck(epochs=cfg.oracle_epochs, seeds=seeds, split=ORACLE_SPLIT, answer=answer,
                                gap=round(verdict["gap"], 4), se=round(verdict["se"], 4),
                                se_seeds=round(verdict["se_seeds"], 4), se_images=round(verdict["se_images"], 4),
                                paired_se={name: judged[name][1] for name in splits})


def candidate_record(c: Candidate, input_shape: tuple[int, ...], method_saw: bool) -> schema.Candidate:
    return schema.candidate(type=c.type, similarity=c.similarity, units=len(c.units),
                            flops=count_flops(c.model, input_shape), params=count_parameters(c.model),
                            finetuned=c.finetuned_epochs is not None, method_saw=method_saw, info=c.info)


def run_evaluators(s: Session, model: nn.Module, iteration: int) -> schema.Evaluation | None:
    """Runs the extra evaluators on one model and records their results. A failing evaluator
    is recorded and reported; the run goes on."""
    if not s.evaluators:
        return None
    unpruned_results = records.read_evaluations(s.run_dir).get(0, {}).get("results", {})
    results, errors = {}, {}
    for ev in s.evaluators:
        ctx = s.eval_context(iteration, unpruned_results.get(ev.name) if iteration else None,
                             s.unpruned if iteration else None)
        try:
            results[ev.name] = ev.evaluate(model, ctx)
        except Exception as exc:  # a broken evaluator must not take the run down
            print_traceback(exc)
            errors[ev.name] = described(exc)
            # a plugin's failure names the evaluator already
            warn(f"{errors[ev.name]} at iteration {iteration}" if isinstance(exc, PluginError)
                 else f"evaluator {ev.name} failed at iteration {iteration}: {errors[ev.name]}")
    row = schema.evaluation(iteration, results, errors)
    records.append_evaluation(s.run_dir, row)
    return row


def report_iteration(r: schema.Iteration, structures) -> None:
    sims = " ".join(f"{decision_letter(c['type'], structures)}={c['similarity']:.4f}" for c in r["candidates"]
                    if c["similarity"] is not None)
    print(f"iteration {r['iteration']}: {r['decision']} {sims} removed {len(r['removed'])} unit(s); "
          f"FLOPs -{r['flops_reduction_pct']:.2f}% params -{r['params_reduction_pct']:.2f}% "
          f"accuracy {r['accuracy']:.2f} ({r['accuracy_delta']:+.2f}) [{r['wall_time_s']:.0f}s]", flush=True)

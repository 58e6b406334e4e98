"""The run-record format, as typed definitions: one place that says what each file of a run
directory holds (the model is lm-evaluation-harness's ``result_schema.py``).

A run directory (``harness.records`` writes and reads it; ``records.RunRecord`` is one read
back whole) holds

* ``config.json``: one :class:`RunConfig`;
* ``iterations.jsonl``: one :class:`Iteration` per line; iteration 0 is the unpruned model;
* ``evaluations.jsonl``: one :class:`Evaluation` per line, for the iterations the extra
  evaluators measured (schema 2 on);
* ``result.json``: one :class:`Result`, written when the run is complete.

Plain JSON stays the format on disk: these are ``TypedDict`` s, so a record read back is an
ordinary dict, and the constructors below return exactly the keys ``harness bench`` has always
written (an optional key is left out, never written as null). ``total=False`` marks the keys
that older records (schema 1, or runs without a validation split, decision records or
evaluators) lack; readers must not assume them. Any record may also carry ``non_finite``
(see ``harness.records.strict_json``): the numbers written as null because they were NaN or
infinite.
"""

from __future__ import annotations

from typing import Any, TypedDict

from harness.deprecation import moved_names

# the schema versions (config.json's versions.schema_version), see harness.records.SCHEMA_VERSION:
# 1: config, iterations, models, result. 2: adds evaluations.jsonl, the data set's label and
# shape in config.json, and final_iteration (the model kept) in result.json.


# ---------------------------------------------------------------- iterations.jsonl
class Oracle(TypedDict):
    """A candidate's oracle check (``--oracle-epochs``): two seeded copies trained further."""

    val_accuracy: list[float]  # one per copy: what the verdict reads
    test_accuracy: list[float]  # one per copy: for reporting only


class Candidate(TypedDict, total=False):
    """One candidate of an iteration: a child model that removes units of one structure.
    Records written before issue 26 name ``type`` ``structure``; :func:`read_iteration` reads
    them as the new ones."""

    type: str  # the type of structure it removes: "layer", "filter", "head", "neuron"
    similarity: float | None  # the run's similarity between parent and candidate (the method's score)
    units: int  # how many units it removes
    flops: int
    params: int
    finetuned: bool  # whether it got the method's brief fine-tune before being compared
    method_saw: bool  # offered to the method (False: described only, for the decision records)
    # decision records (--record-decisions): every registered metric, the validation split's view
    similarities: dict[str, float | None]
    val_accuracy: float
    val_loss: float
    oracle: Oracle


class DecisionCheck(TypedDict, total=False):
    """An iteration's oracle verdict over its candidates (each candidate's accuracies are in
    its own record, ``candidates[i].oracle``)."""

    epochs: float
    seeds: int
    split: str  # the split the verdict reads: "test" ("val" in records before it moved)
    answer: str | None  # the structure the oracle prefers; None when it cannot tell
    gap: float | None  # points between the two best candidates' mean accuracies
    # the verdict's standard error of the gap (points) and its two sources, seeds and evaluation
    # images (TieRule); not in records before the oracle read the test split
    se: float
    se_seeds: float
    se_images: float
    paired_se: dict[str, float | None]  # split -> images' standard error of the gap, from per-image outcomes
    disagreement: float | None  # older records: the largest spread between one candidate's seeds


class Measurements(TypedDict, total=False):
    """What the accuracy and flops evaluators measure on every iteration's model."""

    accuracy: float  # test accuracy, %
    flops: int
    params: int
    val_accuracy: float  # only with a validation split
    val_loss: float
    # against iteration 0; absent from iteration 0 itself
    flops_reduction_pct: float
    params_reduction_pct: float
    accuracy_delta: float  # points


class Iteration(Measurements, total=False):
    """One line of iterations.jsonl: the model after ``iteration`` pruning steps."""

    iteration: int  # 0 is the unpruned model
    decision: str | None  # "L", "F", "H" or "N": the structure removed; None in iteration 0
    accuracy_before_baseline: float | None  # iteration 0: test accuracy before the baseline step
    removed: list[str]  # the unit keys removed
    candidates: list[Candidate]
    wall_time_s: float  # the iteration's time, criterion to fine-tune
    # seconds per phase (criterion, candidates, oracle, finetune): what the method costs apart
    # from the oracle; not in records before it
    phase_s: dict[str, float]
    oracle: DecisionCheck  # with --oracle-epochs
    non_finite: dict[str, str]


#: the keys of an iteration record that measure the machine, not the run (two runs of one
#: configuration differ only in these): a new measurement of time or memory is listed here
MACHINE_KEYS = ("wall_time_s", "phase_s")


def reproducible(row: Iteration) -> Iteration:
    """An iteration record less :data:`MACHINE_KEYS`: what every run of its configuration
    records, on any machine (resumed runs, reruns and sweeps are compared on it)."""
    return {k: v for k, v in row.items() if k not in MACHINE_KEYS}


def candidate(*, type: str, similarity: float | None, units: int, flops: int, params: int, finetuned: bool,
              method_saw: bool, info: dict | None = None) -> Candidate:
    """A candidate record; ``info`` holds the decision-record keys (similarities, val_accuracy,
    val_loss, oracle) that a candidate collected."""
    return Candidate(type=type, similarity=similarity, units=units, flops=flops, params=params,
                     finetuned=finetuned) | (info or {}) | Candidate(method_saw=method_saw)


# keys of older records and their names now, per candidate
OLD_CANDIDATE_KEYS = {"structure": "type"}


def read_iteration(row: dict) -> Iteration:
    """An iterations.jsonl line as the current schema has it, whatever version wrote it (a
    candidate's ``structure`` is its ``type``): every reader of records reads through here."""
    candidates = row.get("candidates")
    if not isinstance(candidates, list) or not any(isinstance(c, dict) and OLD_CANDIDATE_KEYS.keys() & c.keys()
                                                  for c in candidates):
        return row
    renamed = [{OLD_CANDIDATE_KEYS.get(k, k): v for k, v in c.items()} if isinstance(c, dict) else c
               for c in candidates]
    return row | {"candidates": renamed}


def unpruned_iteration(measurements: Measurements, accuracy_before_baseline: float | None) -> Iteration:
    """Iteration 0: the unpruned model (after the baseline step)."""
    return measurements | Iteration(iteration=0, decision=None, accuracy_before_baseline=accuracy_before_baseline)


def pruned_iteration(measurements: Measurements, *, iteration: int, decision: str, removed: list[str],
                     candidates: list[Candidate], wall_time_s: float, oracle: DecisionCheck | None = None,
                     phase_s: dict[str, float] | None = None) -> Iteration:
    """Iteration 1 on: the model after removing ``removed`` (``oracle`` only when checked)."""
    record = measurements | Iteration(iteration=iteration, decision=decision, removed=removed,
                                      candidates=candidates, wall_time_s=wall_time_s)
    if phase_s is not None:
        record["phase_s"] = phase_s
    if oracle is not None:
        record["oracle"] = oracle
    return record


# ---------------------------------------------------------------- evaluations.jsonl
class Evaluation(TypedDict):
    """One line of evaluations.jsonl: the extra evaluators on one iteration's model."""

    iteration: int
    # evaluator name -> its numbers (a "delta" dict against iteration 0 where it reports one)
    results: dict[str, dict[str, Any]]
    errors: dict[str, str]  # evaluator name -> the one-line failure; the run went on


def evaluation(iteration: int, results: dict[str, dict[str, Any]], errors: dict[str, str]) -> Evaluation:
    """An evaluations.jsonl row."""
    return Evaluation(iteration=iteration, results=results, errors=errors)


# ---------------------------------------------------------------- result.json
class Result(TypedDict, total=False):
    """result.json: written once, when the run is complete."""

    stop_reason: str
    decision_path: str  # the decisions up to the kept model
    final_iteration: int  # the kept model (schema 2 on; read_result fills it in for schema 1)
    iterations: int  # iterations run (schema 1: the kept one)
    decision_path_all: str  # every decision, past the kept model included
    chosen_on: str  # "val" or "test": the split that chose the kept model
    node: str  # the Ray node that finished the run


def result(*, stop_reason: str, decision_path: str, final_iteration: int, iterations: int, decision_path_all: str,
           chosen_on: str, node: str | None = None) -> Result:
    """result.json (``node`` only when the run ran on a Ray node)."""
    record = Result(stop_reason=stop_reason, decision_path=decision_path, final_iteration=final_iteration,
                    iterations=iterations, decision_path_all=decision_path_all, chosen_on=chosen_on)
    if node:
        record["node"] = node
    return record


# ---------------------------------------------------------------- config.json
class Versions(TypedDict, total=False):
    harness: str
    torch: str
    python: str
    git_sha: str | None
    schema_version: int


class Hardware(TypedDict, total=False):
    """Where the wall times were measured."""

    device: str  # "cpu" or "cuda"
    name: str  # the GPU's or CPU's model name
    threads: int
    isa: str  # a CPU's widest instruction set the run computed with (harness.training.CPU_ISAS)
    node: str  # a Ray task's node


class DataInfo(TypedDict, total=False):
    """The data set as the run saw it (schema 2 on)."""

    label: str  # tells data sets apart on the leaderboard: "CIFAR-10 (JPEG)"
    input_shape: list[int]
    num_classes: int
    train: int  # split sizes
    calib: int
    val: int
    test: int
    splits: dict[str, str]  # which split each recorded number comes from


class RunConfig(TypedDict, total=False):
    """config.json's top level."""

    config: dict[str, Any]  # the resolved BenchConfig (harness.config), every field
    versions: Versions
    hardware: Hardware  # absent from older records
    command: list[str]
    option_defaults: dict[str, Any]  # the run's plugin options' defaults; absent from older records
    data: DataInfo  # schema 2 on


def run_config(*, config: dict[str, Any], versions: Versions, hardware: Hardware, command: list[str],
               option_defaults: dict[str, Any], data: DataInfo) -> RunConfig:
    """config.json, as a new run writes it."""
    return RunConfig(config=config, versions=versions, hardware=hardware, command=command,
                     option_defaults=option_defaults, data=data)


__getattr__ = moved_names(__name__, {
    "baseline_iteration": (unpruned_iteration, "harness.schema.unpruned_iteration"),
})

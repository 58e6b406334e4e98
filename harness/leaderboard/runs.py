"""Run records as leaderboard rows: one row per run, the model it keeps against its unpruned model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness import records, schema
from harness.errors import HarnessError, first_line, warn
from harness.settings import NOT_RECORDED, RUN_SETTINGS

# config fields that do not make a configuration different: runs differing only in these merge
# (the oracle and the decision records add measurements without changing what the run keeps)
NOT_CONFIGURATION = {"seed", "name", "runs_dir", "cache_dir", "device", "data_dir", "oracle_epochs",
                     "record_decisions", "parallel_candidates"}
TEXT_COLUMNS = ["model", "data", "method", "criterion", "similarity", "options", "structures", "budget", "stop",
                "hardware"]
METRICS = ["iterations", "flops_reduction_pct", "params_reduction_pct", "baseline_accuracy", "accuracy",
           "accuracy_delta", "wall_time_s"]


@dataclass
class Run:
    """One run record: its row, the key of its configuration and its trajectory."""

    row: dict
    configuration: str  # every config field but NOT_CONFIGURATION, as sorted JSON
    trajectory: list[tuple[float, float]]  # (FLOPs reduction %, accuracy delta), iterations 0..final
    complete: bool
    oracle_share: float | None = None  # of its training epochs, the share the oracle's fine-tunes took


def method_seconds(row: schema.Iteration) -> float:
    """An iteration's wall time less its oracle's (records with per-phase times: the method's
    own cost); older records time the iteration whole."""
    return (row.get("wall_time_s") or 0.0) - (row.get("phase_s") or {}).get("oracle", 0.0)


def oracle_share(cfg: dict, rows: list[schema.Iteration]) -> float | None:
    """By training epochs, the share of a run's iterations that went to the oracle's fine-tunes
    (``--oracle-epochs``) in iterations timed whole (records without per-phase times; the
    others' wall time leaves the oracle out); None without such an oracle. An estimate:
    evaluation passes are left out."""
    oracle = method = 0.0
    for r in rows[1:]:
        if "phase_s" in r:
            continue
        candidates = r.get("candidates") or []
        check = r.get("oracle") or {}
        oracle += len(candidates) * check.get("seeds", 0) * (check.get("epochs") or 0.0)
        method += (sum(1 for c in candidates if c.get("finetuned")) * (cfg.get("candidate_epochs") or 0.0)
                   + (cfg.get("finetune_epochs") or 0.0))
    return oracle / (oracle + method) if oracle else None


def find_runs(roots: list[Path]) -> list[Path]:
    """Run directories given directly or anywhere below a folder (records grouped by
    benchmark: ``records/table3/<run>``), each once."""
    found: dict[Path, Path] = {}
    for root in roots:
        root = Path(root)
        candidates = [root] if (root / records.CONFIG_FILE).exists() else (
            sorted(p.parent for p in root.rglob(records.CONFIG_FILE)) if root.is_dir() else [])
        for run_dir in candidates:
            found.setdefault(run_dir.resolve(), run_dir)
    return list(found.values())


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def evaluator_columns(evaluation: schema.Evaluation | None) -> dict[str, float]:
    """``<evaluator>.<key>`` for each number at the top level of an evaluator's result, and
    ``<evaluator>.<key>_delta`` for each number in its ``delta`` dict, when it reports one."""
    columns = {}
    for name, result in sorted(((evaluation or {}).get("results") or {}).items()):
        for key, value in result.items():
            if is_number(value):
                columns[f"{name}.{key}"] = float(value)
        deltas = result.get("delta")
        if isinstance(deltas, dict):
            for key, value in deltas.items():
                if is_number(value):
                    columns[f"{name}.{key}_delta"] = float(value)
    return columns


# the kinds of plugin whose options make a configuration, by the setting that names the run's
# own (the similarity metrics that only describe candidates do not change what a run keeps)
OWN_PLUGINS = {"model": "model", "dataset": "dataset", "method": "method", "criterion": "criterion",
               "similarity": "similarity", "evaluator": "evaluators"}


def own_options(cfg: dict) -> dict:
    """The plugin options of a run's own plugins (its model, data set, method, criterion,
    similarity metric and evaluators): what makes its configuration. Records hold more (older
    ones every installed plugin's, newer ones every metric that described candidates), which
    must neither split identical runs nor show in their rows. An option whose plugin is not
    installed here counts when one of the run's plugins is not installed either."""
    options = cfg.get("options") or {}
    if not options:
        return {}
    from harness import registry  # only boards of runs with options load the plugins (and torch)

    current = registry.current()
    try:
        owners = current.option_owners()
    except HarnessError:
        owners = {}
    mine, missing = [], False
    for kind, setting in OWN_PLUGINS.items():
        value = cfg.get(setting)
        for name in [value] if isinstance(value, str) else (value or []):
            try:
                mine.append(current.entry(kind, name))
            except HarnessError:
                missing = True
    return {k: v for k, v in options.items() if any(owners.get(k) is info for info in mine)
            or (k not in owners and missing)}


def options_text(record: schema.RunConfig) -> str:
    """The options of a run's own plugins (:func:`own_options`) that it changed from their
    defaults, as ``name=value`` (the defaults come from the record, or for older records from
    the installed plugins), and ``--round-to`` when it aligned the widths."""
    options = own_options(record["config"])
    defaults = record.get("option_defaults")
    if defaults is None:
        # only records from before option_defaults load the plugins (and torch) for a board
        from harness import registry

        try:
            defaults = {k: o.default for k, o in registry.all_options().items()}
        except HarnessError:
            defaults = {}
    changed = {k: v for k, v in options.items() if k in defaults and v != defaults[k]}
    if (record["config"].get("round_to") or 1) > 1:  # a setting, but rows must tell aligned runs apart
        changed["round_to"] = record["config"]["round_to"]
    return " ".join(f"{k}={json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v}"
                    for k, v in sorted(changed.items()))


def stop_text(cfg: dict) -> str:
    """The run's stopping rules, briefly: at most K iterations, a FLOPs target, an accuracy tolerance."""
    rules = [f"K={cfg['iterations']}"] if cfg.get("iterations") is not None else []
    if cfg.get("target_flops") is not None:
        rules.append(f"FLOPs -{cfg['target_flops']:g}%")
    if cfg.get("stop_on_drop") is not None:
        # on the validation split, or on the test split in records from before it existed
        rules.append(f"{'val ' if cfg.get('val_size') else ''}drop > {cfg['stop_on_drop']:g}")
    return ", ".join(rules)


def hardware_text(hardware: schema.Hardware | None) -> str:
    """Where the wall times were measured: the GPU's name, or the CPU's thread count."""
    if not hardware:
        return ""
    if hardware.get("device") == "cuda":
        return hardware.get("name") or "GPU"
    return f"CPU, {hardware.get('threads')} threads"


def read_run(run_dir: Path) -> Run | None:
    """The model a run keeps (its final iteration) against its unpruned model; None before
    iteration 0 is recorded. Schema-1 records (no data label, no final_iteration) load too."""
    run_dir = Path(run_dir)
    run = records.RunRecord.read(run_dir)
    if run is None:
        return None
    record, cfg, rows, final, kept = run.config, run.config["config"], run.iterations, run.final_iteration, run.through_final
    base, last = rows[0], kept[-1]
    row = {
        "model": cfg["model"], "data": run.data_label,
        "method": cfg["method"], "criterion": cfg["criterion"], "similarity": cfg["similarity"],
        "options": options_text(record), "structures": ",".join(cfg.get("structures") or []), "budget": cfg.get("budget") or "",
        "stop": stop_text(cfg), "hardware": hardware_text(record.get("hardware")),
        "seed": cfg["seed"], "iterations": final,
        "decision_path": "".join(r["decision"] or "" for r in kept[1:]),
        "flops_reduction_pct": last.get("flops_reduction_pct", 0.0),
        "params_reduction_pct": last.get("params_reduction_pct", 0.0),
        "baseline_accuracy": base["accuracy"], "accuracy": last["accuracy"],
        "accuracy_delta": last.get("accuracy_delta", 0.0),
        # every iteration's time, the ones past the kept model included: the run spent it
        "wall_time_s": round(sum(method_seconds(r) for r in rows[1:]), 2),
    }
    row |= evaluator_columns(run.evaluations.get(final))
    row |= {"complete": run.complete, "run": run_dir.name}
    configuration = json.dumps({k: v for k, v in cfg.items() if k not in NOT_CONFIGURATION}
                               | {"data": row["data"], "options": own_options(cfg)}, sort_keys=True)
    trajectory = [(r.get("flops_reduction_pct", 0.0), r.get("accuracy_delta", 0.0)) for r in kept]
    return Run(row, configuration, trajectory, run.complete, oracle_share(cfg, rows))


def same_configuration(configuration: str) -> str:
    """A run's configuration (:attr:`Run.configuration`) with each setting its record lacks (the
    run is older than the setting) at the value runs had before the setting existed
    (``Setting.old_records``, else its default): a new setting never splits the seeds of one
    configuration between the runs recorded before it and those recorded after."""
    cfg = json.loads(configuration)
    cfg |= {s.name: s.default if s.old_records is NOT_RECORDED else s.old_records for s in RUN_SETTINGS
            if s.name not in cfg and s.name not in NOT_CONFIGURATION}
    return json.dumps(cfg, sort_keys=True)


def read_runs(roots: list[Path]) -> list[Run]:
    """Every readable run under ``roots``; a corrupt record is skipped with a one-line warning
    naming it, so that one broken run never takes a whole board (or a sweep's rebuild) down."""
    runs = []
    for path in find_runs(roots):
        try:
            run = read_run(path)
        except (HarnessError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
            warn(f"skipping the corrupt run record {path} ({type(exc).__name__}: {first_line(exc, 120)})")
            continue
        if run:
            runs.append(run)
    return runs


def load_table(roots: list[Path]) -> pd.DataFrame:
    """One row per run (complete or not), for ``harness bench`` to print."""
    rows = [run.row for run in read_runs(roots)]
    # the first eight columns keep the order of earlier versions, which scripts may index into
    fixed = ["data", "model", "method", "criterion", "similarity", "seed", "iterations", "decision_path",
             *METRICS[1:], "structures", "budget", "stop", "hardware", "options"]
    evaluators = sorted({k for r in rows for k in r} - set(fixed) - {"complete", "run"})
    df = pd.DataFrame(rows, columns=fixed + evaluators + ["complete", "run"])
    return df.sort_values(["data", "model", "flops_reduction_pct", "run"], ascending=[True, True, False, True],
                          ignore_index=True)

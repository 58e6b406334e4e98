"""One run from start to end: a new run (the baseline step, the unpruned model's record, the
loop), a resumed one (from its last record), and a sweep's run brought to its end whatever
state it is in. Whatever stops a run partway keeps its records and says how to continue."""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

from torch import nn

from harness import records, schema
from harness.baseline import baseline_model
from harness.config import BenchConfig
from harness.errors import HarnessError, RunStopped, SystemTrouble, TimeLimitReached, os_problem, warn
from harness.loop import final_iteration, iterate, run_evaluators, selection_key
from harness.models import load_model, save_model
from harness.provenance import hardware, versions
from harness.resolve import ResolvedRun, resolve
from harness.session import Session, measure_core, open_session


def run_name(cfg: BenchConfig) -> str:
    # a qualified plugin name (PACKAGE:NAME) or a prefix model (timm:...) makes no colon in a folder name
    return cfg.name or (f"{cfg.model}-{cfg.dataset}-{cfg.method}-{cfg.criterion}-{cfg.similarity}"
                        f"-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}").replace(":", "_")


def run_bench(cfg: BenchConfig | ResolvedRun, progress: bool = False,
              deadline: float | None = None) -> tuple[Path, bool]:
    """Runs a new benchmark (a configuration, resolved here, or a run a sweep resolved before
    its first run started); returns its directory and whether every evaluator succeeded.
    ``deadline`` (a ``time.monotonic()`` value): --time-limit's."""
    run = cfg if isinstance(cfg, ResolvedRun) else resolve(cfg)
    run_dir = Path(run.config.runs_dir) / run_name(run.config)
    check_inside(run_dir)
    try:
        with records.run_lock(run_dir):
            return start_run(run, run_dir, progress, deadline)
    except OSError as exc:
        raise stopped_by(exc, run_dir) from exc


def check_inside(run_dir: Path) -> None:
    """A run is written in its runs folder: a link standing at its name (``runs/NAME ->
    /elsewhere``) would write it anywhere, so it is refused."""
    if run_dir.is_symlink():
        raise HarnessError(f"{run_dir} is a link to {os.path.realpath(run_dir)}, outside --runs-dir "
                           f"{run_dir.parent}: runs are written inside it; remove the link or pick another --name")


def stopped_by(exc: OSError, run_dir: Path) -> HarnessError:
    """A write the system refused partway (a full disk, a read-only file system): one line, the
    records kept (exit 4), and how to go on once the cause is fixed."""
    try:
        recorded = bool(records.read_iterations(run_dir))
    except (OSError, HarnessError):
        recorded = False
    # a write refused for want of memory (ENOMEM) is the memory's fault, not the folder's
    what = "out of memory" if exc.errno == errno.ENOMEM else "cannot write"
    if recorded:
        return RunStopped(f"{what}: {os_problem(exc)}", run_dir)
    return SystemTrouble(f"{what}: {os_problem(exc)}; nothing of run {run_dir} was recorded: "
                         "start it again once the cause is fixed")


def start_run(run: ResolvedRun, run_dir: Path, progress: bool, deadline: float | None = None) -> tuple[Path, bool]:
    if records.read_iterations(run_dir):  # a run killed before its first record is simply started again
        raise HarnessError(f"run {run_dir} already exists; continue it with --resume {run_dir} or pick another --name")
    s = open_session(run, run_dir, progress, deadline)
    model, before = baseline_model(s)
    cfg, data = s.cfg, s.data
    records.atomic_write_json(run_dir / records.CONFIG_FILE, schema.run_config(
        config=cfg.to_dict(), versions=versions(), hardware=hardware(s.device), command=sys.argv,
        # the defaults of the run's plugin options: tables show the options a run changed
        option_defaults={k: o.default for k, o in sorted(s.plugins.options().items())
                         if k in cfg.options},
        data=schema.DataInfo(label=data.label or cfg.dataset, input_shape=list(data.input_shape),
                             num_classes=data.num_classes, train=len(data.train), calib=len(data.calib),
                             val=len(data.val) if data.val is not None else 0, test=len(data.test),
                             # which split each recorded number comes from
                             splits={"accuracy": "test", "val_accuracy": "val", "val_loss": "val",
                                     "similarities": "calib", "oracle": "val (and test, for reporting)"}),
    ))
    unpruned = schema.unpruned_iteration(measure_core(model, data, s.device, None), accuracy_before_baseline=before)
    save_model(model, records.model_path(run_dir, 0))
    records.append_iteration(run_dir, unpruned)
    print(f"run {run_dir}: {cfg.model} on {data.label or cfg.dataset}, method {cfg.method}, criterion "
          f"{cfg.criterion}, similarity {cfg.similarity}, structures {','.join(cfg.structures)}; unpruned: "
          f"{unpruned['flops'] / 1e6:.2f} MFLOPs, {unpruned['params']} params, accuracy {unpruned['accuracy']:.2f}",
          flush=True)
    return run_rest_or_keep(s, model)


def resume_bench(run_dir: Path, progress: bool = False, deadline: float | None = None) -> tuple[Path, bool]:
    run_dir = Path(run_dir)
    if not (run_dir / records.CONFIG_FILE).exists():
        raise HarnessError(f"{run_dir} is not a run directory (no {records.CONFIG_FILE})")
    records.check_folder("--resume", run_dir)  # a read-only run is refused before anything loads
    try:
        with records.run_lock(run_dir):
            return continue_run(run_dir, progress, deadline)
    except OSError as exc:
        raise stopped_by(exc, run_dir) from exc


def continue_run(run_dir: Path, progress: bool, deadline: float | None = None) -> tuple[Path, bool]:
    rows = records.read_iterations(run_dir)
    if not rows:
        raise HarnessError(f"run {run_dir} has no finished iteration to resume from; start it again")
    if records.read_result(run_dir) is not None:
        print(f"run {run_dir} is already complete")
        return run_dir, not any_failures(run_dir)
    recorded = BenchConfig.from_dict(records.read_config(run_dir)["config"])
    s = open_session(ResolvedRun.from_record(recorded), run_dir, progress, deadline)
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
    reason, rows = iterate(s, model, rows)
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
        warn(f"some evaluators failed; see {run_dir / records.EVALUATIONS_FILE}")
    return run_dir, not failed


def any_failures(run_dir: Path) -> bool:
    return any(row.get("errors") for row in records.read_evaluations(run_dir).values())


# ---------------------------------------------------------------- a sweep's run, whatever its state
def run_state(cfg: BenchConfig) -> str:
    """``complete``, ``interrupted`` (its config.json is written) or ``new``."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    return ("complete" if records.read_result(run_dir) is not None else
            "interrupted" if (run_dir / records.CONFIG_FILE).exists() else "new")


def run_one(run: BenchConfig | ResolvedRun, progress: bool, state: str | None = None,
            deadline: float | None = None) -> bool:
    """Brings one run of a sweep to its end: skipped when complete, resumed when interrupted,
    started when new (``state``: its :func:`run_state`, when the caller has read it), unless
    ``deadline`` (--time-limit's) has passed. Returns whether every evaluator succeeded."""
    cfg = run.config if isinstance(run, ResolvedRun) else run
    run_dir = Path(cfg.runs_dir) / cfg.name
    check_inside(run_dir)
    state = state or run_state(cfg)
    if state == "complete":
        return not any_failures(run_dir)
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeLimitReached(f"time limit: stopped before {run_dir}", f"harness bench --resume {run_dir}")
    if state == "interrupted" and records.read_iterations(run_dir):
        return resume_bench(run_dir, progress, deadline)[1]
    return run_bench(run, progress, deadline)[1]

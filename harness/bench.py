"""Deprecated: the pruning loop's old module. Its contents moved along their seams to
:mod:`harness.session` (a run's data, devices and services), :mod:`harness.candidates`,
:mod:`harness.loop`, :mod:`harness.run` (starting, resuming and finishing a run) and
:mod:`harness.provenance`; each old name still works here with a DeprecationWarning naming
its new place (CHANGELOG.md says how to migrate)."""

from __future__ import annotations

from harness import (candidates, checks, essentials, loop, measure, provenance, resolve as resolution, run, schema, seeds,
                     session, structure_types)
from harness.config import BenchConfig
from harness.deprecation import moved_names, warn_deprecated


def prune(s: session.Session, model, rows: list[schema.Iteration]) -> str:
    """The loop under its old name and calling convention: appends the new records to
    ``rows`` and returns the stop reason."""
    warn_deprecated("harness.bench.prune", "harness.loop.iterate, which returns the stop reason and every row")
    reason, every_row = loop.iterate(s, model, rows)
    rows[len(rows):] = every_row[len(rows):]
    return reason


def resolve(cfg: BenchConfig) -> BenchConfig:
    """The old resolution step, which gave the configuration alone."""
    warn_deprecated("harness.bench.resolve", "harness.resolve.resolve(cfg), which gives the configuration and the "
                                             "run's plugins")
    return resolution.resolve(cfg).config


def session_for(cfg: BenchConfig, run_dir, progress: bool) -> session.Session:
    """The old way to a session, from a resolved configuration."""
    warn_deprecated("harness.bench.session_for", "harness.session.open_session(resolved_run, run_dir, progress)")
    return session.open_session(resolution.ResolvedRun.from_record(cfg), run_dir, progress)


_MOVED = {name: (getattr(module, name), f"{module.__name__}.{name}") for module, names in (
    (session, ["Session", "SCRATCH_WARMUP", "VAL_SEED", "load_data", "measure_core"]),
    (candidates, ["build_candidates", "fill_to_target", "aligned_steps"]),
    (loop, ["selection_key", "stop_reason", "final_iteration", "teacher_for", "make_step", "describe_candidates",
            "candidate_record", "run_evaluators", "report_iteration"]),
    (run, ["run_name", "run_bench", "start_run", "resume_bench", "continue_run", "run_rest_or_keep",
           "evaluation_due", "run_rest", "any_failures"]),
    (provenance, ["git_revision", "versions", "hardware"]),
    (seeds, ["derive_seed"]),
    (measure, ["count_filters"]),
    (structure_types, ["choose_structures"]),
    (checks, ["resolve_device"]),
    (essentials, ["CORE_EVALUATORS"]),
) for name in names}
_MOVED["check_decision"] = (loop.run_oracle, "harness.loop.run_oracle")

__getattr__ = moved_names(__name__, _MOVED)

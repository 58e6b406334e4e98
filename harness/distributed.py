"""A sweep's runs as Ray tasks (an optional extra: ``pip install 'prunebench[ray]'``) on a
local instance or a cluster.

Every task is idempotent in the way ``harness sweep`` already is: a complete run is skipped,
an interrupted one resumes from its last record, so Ray may retry a task whose worker or
node died, or that failed, without repeating finished work. Records go to the sweep's
``runs_dir``, which must be one path every node reads and writes (a shared file system).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path

import torch

from harness.cluster import RETRIES, connect, node_name
from harness.errors import HarnessError, RunsFailed, RunStopped, first_line
from harness.records import NODE_ENV
from harness.run import run_one, run_state


# ---------------------------------------------------------------- a sweep's runs as tasks
def _sweep_task(cfg, log_dir: str, events, threads: int) -> dict:
    """One run of a sweep, inside a Ray worker: resumed or started with as many threads as
    the CPUs it asked for, its output in a log file; its start goes to the driver through
    ``events`` (an :class:`Events` actor)."""
    torch.set_num_threads(threads)

    os.environ[NODE_ENV] = node = node_name()
    state = run_state(cfg)
    # fire and forget: a task that waits (ray.get) lends its CPU out, and a second run would start beside it
    events.post.remote(f"start {cfg.name} on {node} ({state})")
    t0 = time.perf_counter()
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(log_dir) / f"{cfg.name}.log", "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            ok = run_one(cfg, progress=False, state=state)
        except RunStopped:
            raise  # retried by Ray: the run resumes from its last record
        except HarnessError as exc:  # bad input: the same again would fail the same way
            return {"name": cfg.name, "node": node, "status": "failed", "error": str(exc),
                    "seconds": round(time.perf_counter() - t0, 1)}
    status = "skipped" if state == "complete" else "done" if ok else "evaluator failed"
    return {"name": cfg.name, "node": node, "status": status, "seconds": round(time.perf_counter() - t0, 1)}


class Events:
    """The runs' start lines, posted by the tasks and printed by the driver (a Ray actor)."""

    def __init__(self):
        self.lines: list[str] = []

    def post(self, line: str) -> None:
        self.lines.append(line)

    def drain(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def run_sweep_on_ray(configs: list, resources: dict, address: str | None) -> tuple[list[dict], bool]:
    """Every run as a Ray task with the sweep's resources; one line per finished run, then a
    summary table. Returns the summaries and whether every run ended well."""
    ray = connect(address)
    # every node writes the same folder: give it as one absolute path
    configs = [dataclasses.replace(cfg, runs_dir=os.path.abspath(cfg.runs_dir),
                                   cache_dir=cfg.cache_dir and os.path.abspath(cfg.cache_dir)) for cfg in configs]
    env = {}
    if os.environ.get("HARNESS_CACHE"):
        env["HARNESS_CACHE"] = os.path.abspath(os.environ["HARNESS_CACHE"])
    log_dir = str(Path(configs[0].runs_dir) / ".logs")
    task = ray.remote(_sweep_task).options(
        num_cpus=resources.get("num_cpus", 1), num_gpus=resources.get("num_gpus", 0), max_retries=RETRIES,
        retry_exceptions=True, runtime_env={"env_vars": env} if env else None)
    results, todo = [], []
    for cfg in configs:  # complete runs need no task
        if run_state(cfg) == "complete":
            results.append({"name": cfg.name, "node": "-", "status": "skipped", "seconds": None})
            print(f"skipped {cfg.name} (complete)", flush=True)
        else:
            todo.append(cfg)
    events = ray.remote(num_cpus=0)(Events).remote()
    threads = max(1, int(resources.get("num_cpus", 1)))
    pending = {task.remote(cfg, log_dir, events, threads): cfg for cfg in todo}
    print(f"ray: {len(pending)} runs on {len(ray.nodes())} node(s), {resources.get('num_cpus', 1)} CPU and "
          f"{resources.get('num_gpus', 0)} GPU each; logs in {log_dir}", flush=True)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for event in ray.get(events.drain.remote()):
            print(event, flush=True)
        if not done:
            continue
        cfg = pending.pop(done[0])
        try:
            summary = ray.get(done[0])
        except Exception as exc:  # retries spent
            summary = {"name": cfg.name, "node": "?", "status": "failed", "error": first_line(exc), "seconds": None}
        results.append(summary)
        extra = f": {summary['error']}" if summary.get("error") else ""
        took = "" if summary["seconds"] is None else f" in {summary['seconds']} s"
        print(f"{summary['status']} {summary['name']} on {summary['node']}{took}{extra}", flush=True)
    order = {cfg.name: i for i, cfg in enumerate(configs)}
    results.sort(key=lambda r: order[r["name"]])
    print(summary_table(results), flush=True)
    failed = [r["name"] for r in results if r["status"] == "failed"]
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(results)} runs failed after {RETRIES} retries ({', '.join(failed)}; "
                         "their errors are in the table above and their logs); the records so far are kept: start "
                         "the sweep again to resume them")
    return results, all(r["status"] in ("done", "skipped") for r in results)


def summary_table(results: list[dict]) -> str:
    lines = ["| run | status | node | seconds |", "|---|---|---|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['status']} | {r['node']} | {'' if r['seconds'] is None else r['seconds']} |")
    return "\n".join(lines)

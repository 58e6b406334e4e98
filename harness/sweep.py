"""Sweeps: the product of lists in a TOML config (models x methods x criteria x
similarity metrics x seeds), run one after another. Run names are derived from the axes,
so a sweep started again skips complete runs and resumes an interrupted one."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from harness import records
from harness.cluster import check_reachable, check_resources, connect, require_ray
from harness.configfile import config_from_options, read_toml
from harness.distributed import run_sweep_on_ray
from harness.errors import HarnessError, TimeLimitReached
from harness.resolve import ResolvedRun, resolve
from harness.run import run_one, run_state

AXES = ("model", "dataset", "method", "criterion", "similarity", "seed")
RESOURCE_KEYS = ("num_cpus", "num_gpus")  # what each run asks of Ray (harness sweep --ray); not run options


def expand(path: str | Path) -> list[dict]:
    """One option dict per run: every list under an axis key is expanded, the other keys
    are shared by all runs. ``[[grid]]`` tables, if any, are separate grids that each
    start from the top-level keys (three seeds for one method, one for the others)."""
    options = {k: v for k, v in read_toml(path).items() if k not in RESOURCE_KEYS}
    grids = options.pop("grid", [{}])
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise HarnessError(f"'grid' in {path} must be a list of tables ([[grid]])")
    runs = [run for grid in grids for run in _expand_one(path, options | {k.replace("-", "_"): v for k, v in grid.items()})]
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise HarnessError(f"sweep {path} lists the same run twice")
    return runs


def _expand_one(path, options: dict) -> list[dict]:
    options = dict(options)
    if "name" in options:
        raise HarnessError("a sweep names its runs from its axes; use 'prefix' instead of 'name'")
    prefix = options.pop("prefix", "")
    lists = {k: (v if isinstance(v, list) else [v]) for k, v in options.items() if k in AXES}
    for key, values in lists.items():
        if not values:
            raise HarnessError(f"sweep axis {key!r} in {path} is an empty list")
    shared = {k: v for k, v in options.items() if k not in AXES}
    runs = []
    for combo in itertools.product(*lists.values()):
        run = dict(zip(lists, combo)) | shared
        parts = [str(run.get(k)) for k in AXES[:-1] if run.get(k) is not None]
        run["name"] = prefix + "-".join(parts).replace(":", "_") + f"-s{run.get('seed', 0)}"
        runs.append(run)
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise HarnessError(f"--shard {text!r} must be K/N with 1 <= K <= N, e.g. 1/4")
    return k, n


def run_sweep(path: str | Path, progress: bool = False, dry_run: bool = False,
              shard: tuple[int, int] = (1, 1), ray: str | None = None,
              deadline: float | None = None) -> tuple[list[Path], bool]:
    """Runs every run of the sweep that is not complete; returns the run directories and
    whether every evaluator succeeded. With ``shard=(K, N)`` only runs K, K+N, K+2N, ...
    (counting from 1): N processes with shards 1/N ... N/N run a sweep in parallel. With
    ``ray`` (an address, or "local"), every run of the shard is a Ray task. ``deadline`` (a
    ``time.monotonic()`` value, --time-limit's) stops the sweep cleanly (TimeLimitReached)
    between iterations; starting it again continues."""
    configs = [config_from_options(run) for run in expand(path)]
    runs = [resolve(cfg) for cfg in configs]  # every name and number is checked before the first run starts
    if ray is not None:
        asks = resources(path)
        require_ray()
        check_reachable(None if ray == "local" else ray)
    if dry_run:
        return _run_shard(runs, progress, True, shard)
    if ray is not None:  # before anything is written: a task no node can take would wait forever
        check_resources(connect(None if ray == "local" else ray), asks, str(path))
    with sweep_lock(path, configs, shard):
        if ray is None:
            again = f"harness sweep {path}" + (f" --shard {shard[0]}/{shard[1]}" if shard != (1, 1) else "")
            try:
                return _run_shard(runs, progress, False, shard, deadline)
            except TimeLimitReached as exc:
                raise TimeLimitReached(str(exc).rsplit("; continue with", 1)[0], again) from None
        mine = [cfg for i, cfg in enumerate(configs, start=1) if not (i - shard[0]) % shard[1]]
        _, ok = run_sweep_on_ray(mine, asks, None if ray == "local" else ray)
        return [Path(cfg.runs_dir) / cfg.name for cfg in mine], ok


def resources(path: str | Path) -> dict:
    """What each run of a sweep asks of Ray: ``num_cpus`` (default 1) and ``num_gpus``
    (default 0; a fraction shares a GPU), top-level keys of the sweep file."""
    options = read_toml(path)
    out = {key: options[key] for key in RESOURCE_KEYS if key in options}
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise HarnessError(f"{key} = {value!r} in {path} must be a number, 0 or more")
    return out


def run_dirs(path: str | Path) -> list[Path]:
    """Every run directory of the sweep (all shards)."""
    return [Path(cfg.runs_dir) / cfg.name for cfg in (config_from_options(run) for run in expand(path))]


def default_board(path: str | Path) -> Path:
    """Where a sweep's leaderboard goes by default: beside its runs, named after the file."""
    first = config_from_options(expand(path)[0])
    return Path(first.runs_dir) / f"{Path(path).stem}-leaderboard"


def sweep_lock(path, configs, shard: tuple[int, int]):
    """One process per shard of a sweep file: a second gets one line naming the first's pid
    (its runs would otherwise be written twice; each run's own lock also holds)."""
    k, n = shard
    where = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    runs = Path(configs[0].runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    return records.exclusive_lock(runs / f".sweep-{Path(path).stem}-{where}-{k}of{n}.lock",
                                  f"sweep {path} (shard {k}/{n})")


def _run_shard(runs: list[ResolvedRun], progress: bool, dry_run: bool, shard: tuple[int, int],
               deadline: float | None = None) -> tuple[list[Path], bool]:
    k, n = shard
    dirs, ok = [], True
    for i, run in enumerate(runs, start=1):
        if (i - k) % n:
            continue
        cfg = run.config
        dirs.append(Path(cfg.runs_dir) / cfg.name)
        state = run_state(cfg)
        print(f"sweep {i}/{len(runs)}: {cfg.name} ({state})", flush=True)
        if not dry_run:
            ok = run_one(run, progress, state, deadline) and ok
    return dirs, ok

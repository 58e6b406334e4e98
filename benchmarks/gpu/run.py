"""One GPU job, within the minutes it is given: first a check that every kind of training step
is captured as a CUDA graph and replays what it computes eagerly (benchmarks/gpu/
capture_check.py; when it fails, the job trains nothing), (a) the engine's throughput table
and the phases of --budget quick iterations, (b) the clean weights (`harness pretrain`) that are still
missing, in the order the queue needs them, a training cut by the job's end continued by the
next (`--time-limit`), (c) the paper-budget runs of benchmarks/gpu/queue.toml, each resumed
from its records in leaderboards/records/gpu/, and (d) everything it produced packed for the
trip back. After the first job, `--skip throughput` leaves the time to (b) and (c).

    python benchmarks/gpu/run.py --minutes 9 --out "$OUT"

It runs from the repository root of a working-tree copy, as the device tool gives it: the
CIFAR-10 (JPEG) archives in .gl/cifar10-jpeg/ (`bash benchmarks/gpu/prepare.sh` puts them and
the wheels the device lacks there), the package importable (the wheels installed with
--target, PYTHONPATH set). What it writes back is `gpu-results-K.tar.gz` in --out (at most 8
files of 15 MiB): unpack them at the repository root (`tar xzf`) and commit; the logs are
under benchmarks/results/gpu/.

A run folder travels light: resuming needs config.json, iterations.jsonl, evaluations.jsonl,
result.json (once complete) and the last iteration's model; with extra evaluators also the
unpruned model (iteration 0) and the last one within --stop-on-drop's tolerance. The other
model files are deleted before packing; a complete run keeps the model it kept.

`--tiny` tries the whole script on a CPU in a few minutes: tiny budgets, ResNet-20 only,
records in a temporary folder (nothing under leaderboards/ is touched).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUEUE = ROOT / "benchmarks" / "gpu" / "queue.toml"
R20_PUBLISHED = "resnet20-12fca82f.th"  # for engine_accuracy.py; prepare.sh copies it into .gl/
DEPTHS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
# epochs of clean weights (harness pretrain); a training longer than a job pauses and continues
PRETRAIN_EPOCHS = 200
STEPS = ("capture", "throughput", "pretrain", "queue")
PART_BYTES = 15 * 2**20
MAX_PARTS = 8


class Job:
    def __init__(self, minutes: float, out: Path, tiny: bool, device: str):
        self.deadline = time.monotonic() + 60 * minutes
        self.out, self.tiny, self.device = out, tiny, device
        self.logs = Path(tempfile.mkdtemp(prefix="gpu-logs-")) if tiny else ROOT / "benchmarks" / "results" / "gpu"
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.produced: list[Path] = []
        self.weights = Path(tempfile.mkdtemp(prefix="gpu-weights-")) if tiny else ROOT / "weights"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list[str], budget_s: float, env: dict | None = None) -> int | None:
        """Runs ``cmd`` with its output in the log ``name``; None when there was no time for it."""
        budget_s = min(budget_s, self.left() - 20)  # 20 s for packing
        if budget_s < 10:
            print(f"skipped {name}: {self.left():.0f} s left", flush=True)
            return None
        log = self.logs / f"{self.stamp}-{name}.txt"
        t0 = time.monotonic()
        with open(log, "w") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            try:
                rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=budget_s,
                                    env=dict(os.environ, **(env or {}))).returncode
            except subprocess.TimeoutExpired:
                rc = 124
            f.write(f"\n[exit {rc} after {time.monotonic() - t0:.0f} s]\n")
        self.produced.append(log)
        print(f"{name}: exit {rc} after {time.monotonic() - t0:.0f} s ({self.left():.0f} s left)", flush=True)
        return rc


def environment(job: Job) -> None:
    import torch

    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__}, device {job.device}"]
    if torch.cuda.is_available():
        lines.append(f"GPU {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    for module in ("torch_pruning", "timm", "harness", "harness_plugins.evaluators", "foolbox", "codecarbon"):
        try:
            __import__(module)
            lines.append(f"import {module}: ok")
        except Exception as exc:  # what is missing is worth knowing, not fatal
            lines.append(f"import {module}: {type(exc).__name__}: {exc}")
    log = job.logs / f"{job.stamp}-environment.txt"
    log.write_text("\n".join(lines) + "\n")
    job.produced.append(log)
    print("\n".join(lines), flush=True)


def capture_check(job: Job) -> bool:
    """Whether each kind of training step is captured and its replays compute what its eager
    steps do (benchmarks/gpu/capture_check.py). Without that, every training of the job would
    be eager, or worse: PyTorch cannot recover a failed capture."""
    return job.run("capture-check", [sys.executable, "benchmarks/gpu/capture_check.py", "--device", job.device,
                                     "--break-even", "", *(["--batch-size", "4"] if job.tiny else [])],
                   budget_s=120) in (0, 3, None)  # 3: only AdamW's step failed, which no ResNet uses


def throughput(job: Job) -> None:
    """(a) Where capturing pays, the engine against the old loop (speed, then accuracy at
    equal epochs), where a quick iteration's time goes, and several copies trained as one
    step; in that order, as the job's minutes may end first."""
    images = ["--images", "1024"] if job.tiny else []
    # where capturing starts to pay (what MIN_CAPTURED_STEPS should be), ResNet-20 and -56
    job.run("capture-break-even", [sys.executable, "benchmarks/gpu/capture_check.py", "--device", job.device,
                                   "--no-check", *(["--break-even", "resnet20", "--break-even-batch", "2"]
                                                   if job.tiny else [])], budget_s=120)
    for model in ("resnet20", "resnet56"):
        job.run(f"throughput-{model}", [sys.executable, "benchmarks/train_throughput.py", "--model", model,
                                        "--device", job.device, *images, *([] if job.tiny else ["--compile"])],
                budget_s=240)
    # the captured engine's accuracy against the eager one's and the seed-to-seed spread
    job.run("engine-accuracy", [sys.executable, "benchmarks/engine_accuracy.py", "--device", job.device,
                                "--data-dir", ".gl/cifar10-jpeg", "--checkpoint", str(ROOT / ".gl" / R20_PUBLISHED),
                                *(["--epochs", "0.01", "--seeds", "1"] if job.tiny else ["--epochs", "2", "--seeds", "3"])],
            budget_s=180)
    quick_phases(job)
    for model in ("resnet20", "resnet56"):  # several copies as one step (the oracle's seeds)
        job.run(f"stacked-{model}", [sys.executable, "benchmarks/stacked_training.py", "--model", model,
                                     "--device", job.device,
                                     *(["--copies", "2", "--steps", "4", "--batch-size", "32"] if job.tiny else [])],
                budget_s=90)


def quick_phases(job: Job) -> None:
    """Three --budget quick iterations of ResNet-56 (ResNet-20 smoke with --tiny) and the
    seconds of each phase, from the run's records."""
    weights = job.weights / "resnet56-cifar10-clean.pt"
    published = ROOT / ".gl" / "resnet56-4bfd9763.th"
    start = ["--checkpoint", str(weights if weights.exists() else published)] \
        if (weights.exists() or published.exists()) and not job.tiny else []
    quick = ["--budget", "smoke", "--iterations", "1"] if job.tiny else ["--budget", "quick", "--iterations", "3"]
    runs = Path(tempfile.mkdtemp(prefix="quick-"))
    rc = job.run("quick-resnet56", [sys.executable, "-m", "harness.cli", "bench", "--model",
                                    "resnet20" if job.tiny else "resnet56", *start, "--data-dir", ".gl/cifar10-jpeg",
                                    *quick, "--device", job.device, "--runs-dir", str(runs), "--name", "quick"],
                 budget_s=240)
    if rc is not None:  # the per-phase seconds of each iteration, from its records
        rows = [json.loads(line) for line in open(runs / "quick" / "iterations.jsonl")] \
            if (runs / "quick" / "iterations.jsonl").exists() else []
        table = [eager_note(job), "iteration | wall s | " + " | ".join(sorted({k for r in rows
                                                                             for k in r.get("phase_s", {})}))]
        for r in rows[1:]:
            phases = r.get("phase_s", {})
            table.append(f"{r['iteration']} | {r['wall_time_s']} | " + " | ".join(str(phases[k]) for k in sorted(phases)))
        log = job.logs / f"{job.stamp}-quick-resnet56-phases.txt"
        log.write_text("\n".join(table) + "\n")
        job.produced.append(log)


def eager_note(job: Job) -> str:
    """Which of the quick budget's fine-tunes are captured: those shorter than MIN_CAPTURED_STEPS
    steps run eagerly, so the phase table may time no captured step at all."""
    import math

    import torch

    from harness.settings import BUDGETS
    from harness.train_step import MIN_CAPTURED_STEPS
    from harness.training import default_batch_size

    quick, bs = BUDGETS["quick"], default_batch_size(torch.device(job.device))
    steps = {k: math.ceil(quick[f"{k}_epochs"] * quick["train_subset"] / bs) for k in ("candidate", "finetune", "baseline")}
    eager = [f"{k} {n}" for k, n in steps.items() if n < MIN_CAPTURED_STEPS]
    return (f"# batch {bs}: steps per fine-tune {', '.join(f'{k} {n}' for k, n in steps.items())}; eager (under "
            f"MIN_CAPTURED_STEPS = {MIN_CAPTURED_STEPS}): {', '.join(eager) or 'none'}")


def pretrain_order(queue: Path) -> list[str]:
    """The depths to train, in the order the queue first needs them (its headline first), then
    the rest of DEPTHS."""
    needed = [grid.get("model") for grid in read_queue(queue)[1]]
    return list(dict.fromkeys([m for m in needed if m in DEPTHS] + list(DEPTHS)))


def pretrain(job: Job, queue: Path) -> None:
    """(b) Clean weights for each depth that has none, in the queue's order, each under a time
    limit: a training cut by the job's end pauses (its progress in <stem>.partial.pt, packed
    with the rest) and the next job continues it."""
    for model in ("resnet20",) if job.tiny else pretrain_order(queue):
        card = job.weights / f"{model}-cifar10-clean.json"
        if card.exists():
            continue
        # about two minutes to decode the data and find the decision splits, then at least an epoch
        if job.left() < 240:
            print(f"pretrain {model}: {job.left():.0f} s left; next job", flush=True)
            return
        minutes = (job.left() - 60) / 60  # a minute for the evaluation and the packing
        rc = job.run(f"pretrain-{model}", [sys.executable, "-m", "harness.cli", "pretrain", "--model", model,
                                           "--data-dir", ".gl/cifar10-jpeg", "--epochs",
                                           str(0.05 if job.tiny else PRETRAIN_EPOCHS), "--device", job.device,
                                           "--out", str(job.weights), "--time-limit", f"{minutes:.2f}"],
                     budget_s=job.left())
        if rc != 0:  # paused (exit 5) or failed: nothing else fits
            partial = card.with_name(f"{model}-cifar10-clean.partial.pt")
            job.produced += [partial] if partial.exists() else []
            return
        job.produced += [card, card.with_suffix(".pt")]


def read_queue(queue: Path) -> tuple[dict, list[dict]]:
    """A queue file's shared options and its grids."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    options = tomllib.loads(queue.read_text())
    return options, options.pop("grid", [{}])


def plan(job: Job, queue: Path, records_dir: Path) -> None:
    """What the next jobs have left to do, from what is committed: no device, no data."""
    sys.path.insert(0, str(ROOT))
    import torch

    from harness import records
    from harness.configfile import config_from_options
    from harness.sweep import expand

    print("clean weights, in the order the queue needs them:")
    for model in pretrain_order(queue):
        card = job.weights / f"{model}-cifar10-clean.json"
        partial = card.with_name(f"{model}-cifar10-clean.partial.pt")
        if card.exists():
            state = f"trained ({json.loads(card.read_text())['recipe']['epochs']:g} epochs)"
        elif partial.exists():
            saved = torch.load(partial, map_location="cpu", weights_only=True)
            state = f"paused after {saved['progress']['step']} steps of {saved['settings']['epochs']:g} epochs"
        else:
            state = f"missing ({PRETRAIN_EPOCHS} epochs to train)"
        print(f"  {model}: {state}")
    print(f"queue {queue.relative_to(ROOT) if queue.is_relative_to(ROOT) else queue}:")
    for options in expand(queue):
        cfg = config_from_options(dict(options, runs_dir=str(records_dir)))
        run_dir, weights = records_dir / cfg.name, job.weights / Path(cfg.checkpoint or "").name
        rows = records.read_iterations(run_dir) if (run_dir / records.CONFIG_FILE).exists() else []
        if records.read_result(run_dir) is not None:
            last = rows[-1]
            state = (f"complete: {last['iteration']} iterations, FLOPs -{last.get('flops_reduction_pct', 0):.2f}%, "
                     f"{sum(r.get('wall_time_s', 0) for r in rows) / 60:.1f} min")
        elif rows:
            state = f"{rows[-1]['iteration']} iterations recorded, resumes"
        elif cfg.checkpoint and not weights.is_file():
            state = f"waits for {weights.name}"
        else:
            state = "new"
        print(f"  {cfg.name}: {state}")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings and numbers are written alike in both


def advance_queue(job: Job, queue: Path, records_dir: Path) -> None:
    """(c) The queue's runs in order, each resumed from its records, until the time is up.
    Grids whose clean weights are not trained yet wait for a later job."""
    if job.left() < 90:
        print(f"queue: {job.left():.0f} s left; next job", flush=True)
        return
    options, grids = read_queue(queue)
    options["runs_dir"] = str(records_dir)
    if job.tiny:  # a CPU try-out: the first grid on ResNet-20, one seed, one smoke iteration
        options |= {"budget": "smoke", "iterations": 1, "candidate_epochs": 0.05, "finetune_epochs": 0.05}
        options.pop("stop_on_drop", None)
        grids = [dict(grids[0], model="resnet20", seed=[0], checkpoint="weights/resnet20-cifar10-clean.pt")]
    ready = []
    for grid in grids:
        weights = job.weights / Path(grid.get("checkpoint", options.get("checkpoint", ""))).name
        if not weights.is_file():
            print(f"queue: {grid.get('model')} waits for {weights.name}", flush=True)
            continue
        ready.append(dict(grid, checkpoint=str(weights)))
    if not ready:
        return
    lines = [f"{k} = {toml_value(v)}" for k, v in options.items()]
    for grid in ready:
        lines += ["", "[[grid]]", *(f"{k} = {toml_value(v)}" for k, v in grid.items())]
    resolved = Path(tempfile.mkdtemp(prefix="queue-")) / "queue.toml"
    resolved.write_text("\n".join(lines) + "\n")
    minutes = (job.left() - 45) / 60
    job.run("queue", [sys.executable, "-m", "harness.cli", "sweep", str(resolved), "--time-limit", f"{minutes:.2f}",
                      "--out", str(Path(tempfile.mkdtemp(prefix="board-")))], budget_s=job.left())
    for run_dir in sorted(records_dir.glob("*/config.json")):
        job.produced.append(travel_light(run_dir.parent))


def travel_light(run_dir: Path) -> Path:
    """Deletes the model files that neither a resume nor a reload of the kept model needs."""
    sys.path.insert(0, str(ROOT))
    from harness import records
    from harness.loop import final_iteration
    from harness.config import BenchConfig

    rows = records.read_iterations(run_dir)
    cfg = BenchConfig.from_dict(records.read_config(run_dir)["config"])
    if not rows:
        return run_dir
    kept = {final_iteration(cfg, rows)}
    if records.read_result(run_dir) is None:
        kept.add(rows[-1]["iteration"])
        if cfg.evaluators:
            kept.add(0)
    for path in (run_dir / records.MODELS_DIR).glob("iter_*.pt"):
        if int(path.stem.split("_")[1]) not in kept:
            path.unlink()
    return run_dir


def pack(job: Job) -> list[Path]:
    """(d) What the job produced, as tar.gz parts of at most 15 MiB, paths from the repository root."""
    files = []  # (path, its name in the archive: from the repository root, else from beside the item)
    for item in job.produced:
        base = ROOT if item.resolve().is_relative_to(ROOT) else item.resolve().parent
        found = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item] if item.exists() else []
        files += [(f, str(f.resolve().relative_to(base))) for f in found]
    parts, current, size = [], [], 0
    for f, name in files:
        if current and size + f.stat().st_size > PART_BYTES:
            parts.append(current)
            current, size = [], 0
        current.append((f, name))
        size += f.stat().st_size
    if current:
        parts.append(current)
    written = []
    for k, part in enumerate(parts[:MAX_PARTS], start=1):
        path = job.out / f"gpu-results-{k}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for f, name in part:
                tar.add(f, arcname=name)
        written.append(path)
    if len(parts) > MAX_PARTS:
        print(f"warning: {len(parts) - MAX_PARTS} part(s) did not fit in {MAX_PARTS} files", flush=True)
    return written


def differing_files(pairs) -> list[str]:
    """The .py files of each (installed, tree) pair of folders that differ, named from the
    tree; a pair that is one folder (an editable install) has none."""
    differ = []
    for installed, tree in pairs:
        if Path(installed).resolve() == Path(tree).resolve():
            continue
        for f in sorted(Path(tree).rglob("*.py")):
            other = Path(installed) / f.relative_to(tree)
            if not other.is_file() or other.read_bytes() != f.read_bytes():
                differ.append(str(f.relative_to(Path(tree).parent)))
    return differ


def check_wheel() -> None:
    """The benchmarks import the installed wheel, `python -m harness.cli` from the repository
    root the tree's harness/: a wheel built before the tree's last edit would time old code
    next to new. Refused, before any GPU time is spent."""
    import harness
    import harness_plugins

    differ = differing_files([(Path(harness.__file__).parent, ROOT / "harness"),
                              (Path(harness_plugins.__file__).parent, ROOT / "plugins")])
    if differ:
        fail(f"the installed package differs from this tree in {', '.join(differ[:5])}"
             f"{f' and {len(differ) - 5} more' if len(differ) > 5 else ''}; rebuild the wheels with "
             "bash benchmarks/gpu/prepare.sh")


def fail(message: str) -> None:
    """Bad input: one line, exit 2, before anything is written."""
    print(f"run.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=9, help="wall time the job may take, packing included")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--queue", type=Path, default=QUEUE)
    ap.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {', '.join(STEPS)}")
    ap.add_argument("--tiny", action="store_true", help="try everything on a CPU with tiny budgets")
    ap.add_argument("--plan", action="store_true",
                    help="only print what is left to do (clean weights, queue runs) from the committed files")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(STEPS):
        fail(f"--skip {args.skip}: valid steps are {', '.join(STEPS)}")
    if not args.queue.is_file():
        fail(f"--queue {args.queue}: no such file; the queues are benchmarks/gpu/queue.toml and "
             "benchmarks/decisions-gpu.toml")
    device = args.device or ("cpu" if args.tiny else "cuda")
    job = Job(args.minutes, args.out, args.tiny, device)
    if args.plan:
        return plan(job, args.queue, ROOT / "leaderboards" / "records" / "gpu")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: this machine has no CUDA device; --tiny tries the script on a CPU")
    check_wheel()
    args.out.mkdir(parents=True, exist_ok=True)
    job.logs.mkdir(parents=True, exist_ok=True)
    records_dir = Path(tempfile.mkdtemp(prefix="gpu-records-")) if args.tiny else ROOT / "leaderboards" / "records" / "gpu"
    environment(job)
    if "capture" not in skip and not capture_check(job):
        print("capture check failed (see its log): no training this job; the packed logs say which step "
              "was not captured", flush=True)
        skip |= {"pretrain", "queue"}
    if "throughput" not in skip:
        throughput(job)
    if "pretrain" not in skip:
        pretrain(job, args.queue)
    if "queue" not in skip:
        advance_queue(job, args.queue, records_dir)
    for path in pack(job):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)
    print(f"done with {job.left():.0f} s left", flush=True)


if __name__ == "__main__":
    main()

"""benchmarks/gpu/run.py, the script of a GPU job, in what a CPU can check: its plan and its
refusals (the whole script is tried on a CPU with `--tiny`, minutes, by hand)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from harness.training import resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def gpu_script(*args):
    return subprocess.run([sys.executable, "benchmarks/gpu/run.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_plan_lists_the_weights_in_the_order_the_queue_needs_them_and_what_each_run_waits_for(tmp_path):
    queue = tmp_path / "queue.toml"
    queue.write_text('dataset = "cifar10"\nbudget = "paper"\nprefix = "plan-"\n\n'
                     '[[grid]]\nmodel = "resnet44"\ncheckpoint = "weights/nothing-here.pt"\nseed = [0, 1]\n\n'
                     '[[grid]]\nmodel = "resnet20"\nmethod = "random-walk"\n')
    result = gpu_script("--plan", "--queue", queue)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    weights = [line.split(":")[0].strip() for line in lines[1:6]]
    assert weights == ["resnet44", "resnet20", "resnet32", "resnet56", "resnet110"]
    assert "  resnet20: trained (30 epochs)" in lines  # the committed clean ResNet-20
    assert lines[6].startswith("queue ") and lines[7:] == [
        "  plan-resnet44-cifar10-s0: waits for nothing-here.pt",
        "  plan-resnet44-cifar10-s1: waits for nothing-here.pt",
        "  plan-resnet20-cifar10-random-walk-s0: new"]


def test_an_unknown_step_to_skip_or_a_missing_queue_is_one_line_with_the_valid_ones(tmp_path):
    result = gpu_script("--skip", "throughput,warmup", "--out", tmp_path / "out")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr == ("run.py: error: --skip throughput,warmup: valid steps are capture, throughput, "
                             "pretrain, queue\n")
    result = gpu_script("--plan", "--queue", tmp_path / "nothing.toml")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--queue" in result.stderr and "no such file; the queues are benchmarks/gpu/queue.toml" in result.stderr
    if not torch.cuda.is_available():  # a job meant for a GPU, started without one: every step would fail
        result = gpu_script("--out", tmp_path / "out")
        assert result.returncode == 2 and not (tmp_path / "out").exists()
        assert result.stderr == ("run.py: error: --device cuda: this machine has no CUDA device; --tiny tries the "
                                 "script on a CPU\n")


def test_the_capture_check_runs_every_kind_of_step_and_on_a_cpu_finds_the_same_training_three_ways():
    """The GPU job's first step (benchmarks/gpu/capture_check.py) on a CPU: nothing is captured,
    so the graph-ready step run as is and with its capture left out is the same computation
    (distance 0), and the plain eager step differs by rounding only (a wrong batch, rate or
    optimizer would be as far as another seed, share 1)."""
    result = subprocess.run([sys.executable, "benchmarks/gpu/capture_check.py", "--device", "cpu", "--batch-size", "4",
                             "--break-even", "resnet20", "--break-even-batch", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    *table, break_even = result.stdout.splitlines()[2:]
    rows = [line.split(" | ") for line in table]
    auto = resolve_precision("auto", torch.device("cpu"))  # fp32 but on a CPU with native bf16
    assert [row[0] for row in rows] == ["sgd fp32", f"sgd {auto} distill", f"adamw {auto}"]
    for case, replays, apart, from_eager, *_ in rows:  # 0.23, 0 and 0.03 from the plain step here
        assert replays == "0" and float(apart) == 0.0 and float(from_eager) < 0.75, case
    # where capturing pays: measured on a GPU; here only its line (nothing captured, nothing gained)
    assert break_even.startswith(f"resnet20 {auto} batch 2: eager ") and "nothing was captured" in break_even


def test_a_wheel_older_than_the_tree_is_named_file_by_file(tmp_path):
    """On the device the benchmarks import the wheel and `python -m harness.cli` the tree: the
    job refuses to start when they differ (a wheel built before the last edit)."""
    import shutil

    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    try:
        from run import differing_files
    finally:
        sys.path.pop(0)
    installed = tmp_path / "site" / "harness"
    shutil.copytree(ROOT / "harness", installed)
    pairs = [(installed, ROOT / "harness"), (ROOT / "plugins", ROOT / "plugins")]  # the second: editable
    assert differing_files(pairs) == []
    (installed / "loop.py").write_text("# older\n")
    (installed / "leaderboard" / "pages.py").unlink()
    assert differing_files(pairs) == ["harness/leaderboard/pages.py", "harness/loop.py"]

"""benchmarks/gpu/run.py, the script of a GPU job, in what a CPU can check: its plan and its
refusals (the whole script is tried on a CPU with `--tiny`, minutes, by hand)."""

import subprocess
import sys
from pathlib import Path

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
    assert result.stderr == ("run.py: error: --skip throughput,warmup: valid steps are throughput, pretrain, "
                             "queue\n")
    result = gpu_script("--plan", "--queue", tmp_path / "nothing.toml")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--queue" in result.stderr and "no such file; the queues are benchmarks/gpu/queue.toml" in result.stderr

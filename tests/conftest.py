import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HARNESS_SHARED", ROOT.parent / "shared"))
CIFAR_JPEG = SHARED / "data" / "cifar10-jpeg"
RESNET_CKPT = SHARED / "models" / "cifar-resnet"

needs_shared = pytest.mark.skipif(not (CIFAR_JPEG / "test.tar.gz").exists(),
                                  reason="../shared (CIFAR-10 JPEG and pretrained weights) is not beside the project")


def pytest_configure(config):
    """Under pytest-xdist each worker takes its share of the cores, it and the commands it
    starts (OMP_NUM_THREADS): two workers of two threads on two cores oversubscribe OpenMP."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own data/baseline cache, never the user's."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "harness-cache"))


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory) -> Path:
    """A small image-folder tree taken from ../shared's CIFAR-10 (JPEG): 200 train and 50 test
    images per class, so tests decode seconds, not minutes, of JPEG."""
    out = tmp_path_factory.mktemp("cifar10-jpeg-subset")
    for split, per_class in (("train", 200), ("test", 50)):
        with tarfile.open(CIFAR_JPEG / f"{split}.tar.gz") as tar:
            counts = {}
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 3:
                    continue
                cls = parts[-2]
                if counts.get(cls, 0) >= per_class:
                    continue
                counts[cls] = counts.get(cls, 0) + 1
                target = out / split / cls / parts[-1]
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return out


# which packages are installed is per process (sys.path); which of them load is per command
# (each `harness` invocation has its own plugin registry), so only the path needs a process
PLUGIN_LOADING = ("PYTHONPATH",)


def run_cli(*args, env=None, cwd=None, timeout=600, isolated=False):
    """Run the `harness` command; returns a CompletedProcess. In this process through click's
    CliRunner (a subprocess costs seconds of imports), except with ``isolated`` or when the
    run installs packages (PYTHONPATH): then `python -m harness.cli`."""
    args = [str(a) for a in args]
    if isolated or any(k in (env or {}) for k in PLUGIN_LOADING):
        full_env = dict(os.environ, **(env or {}))
        return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                              env=full_env, cwd=cwd, timeout=timeout)
    return run_in_process(args, env, cwd)


def run_in_process(args, env=None, cwd=None) -> subprocess.CompletedProcess:
    import traceback

    from click.testing import CliRunner

    from harness.cli import main

    before = os.getcwd()
    argv = sys.argv
    try:
        if cwd:
            os.chdir(cwd)
        sys.argv = ["harness", *args]  # what a run records as its command
        result = CliRunner().invoke(main, args, env=env, catch_exceptions=True)
    finally:
        os.chdir(before)
        sys.argv = argv
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # as the interpreter would show it: the tests look for tracebacks
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
        code = 1
    return subprocess.CompletedProcess(["harness", *args], code, result.stdout, stderr)


def without_wall_times(rows: list[dict]) -> list[dict]:
    """Iteration records less their wall times: what two runs of one configuration share."""
    from harness.schema import reproducible

    return [reproducible(r) for r in rows]


def seeded_resnet(name="resnet20", num_classes=10, in_channels=3, seed=0):
    """A model with random weights and random batch-norm statistics (so no unit is trivially dead)."""
    from harness.models import create_model

    torch.manual_seed(seed)
    model = create_model(name, num_classes, (in_channels, 32, 32), "cifar10")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()

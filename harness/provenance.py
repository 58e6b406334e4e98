"""Where a run's numbers come from, as config.json records it beside the schema: the versions
of the harness, torch and Python, the harness checkout's commit, and the hardware the wall
times were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from harness import records, schema
from harness.training import cpu_isa
from harness.version import __version__

PACKAGE = Path(__file__).resolve().parent  # the harness package that runs


def git_revision(package: Path = PACKAGE) -> str | None:
    """The commit of the checkout that holds ``package``, ``-dirty`` when it has uncommitted
    changes; None for an installed copy outside its repository (a directory above it may be
    some other repository, whose commit would be a lie)."""
    package = Path(package).resolve()

    def git(*args):
        return subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or package.parent != Path(top).resolve():
            return None
        sha = git("rev-parse", "HEAD")
        return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "") if sha else None
    except Exception:
        return None


def versions() -> schema.Versions:
    return schema.Versions(harness=__version__, torch=torch.__version__, python=platform.python_version(),
                           git_sha=git_revision(), schema_version=records.SCHEMA_VERSION)


def hardware(device: torch.device) -> schema.Hardware:
    """Where the run's wall times were measured."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
        except OSError:
            pass
    out = schema.Hardware(device=device.type, name=name, threads=torch.get_num_threads())
    if device.type == "cpu":  # the same fp32 run computes other bits under another instruction set
        out["isa"] = cpu_isa()
    if os.environ.get(records.NODE_ENV):  # a Ray task: the node that started the run
        out["node"] = os.environ[records.NODE_ENV]
    return out

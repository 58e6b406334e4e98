"""Run records: a directory per run with the resolved config, one JSON line per
iteration and every iteration's model. Everything is written atomically (temp file +
rename), so a killed run never leaves a half-written record behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
ITERATIONS_FILE = "iterations.jsonl"
MODELS_DIR = "models"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_iterations(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / ITERATIONS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_iteration(run_dir: Path, record: dict) -> None:
    """Rewrites the whole file atomically: records are small and this never tears a line."""
    rows = read_iterations(run_dir) + [record]
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_bytes(Path(run_dir) / ITERATIONS_FILE, data.encode())


def read_config(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text())


def model_path(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / MODELS_DIR / f"iter_{iteration:03d}.pt"

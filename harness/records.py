"""Run records: a directory per run with the resolved config, one JSON line per
iteration and every iteration's model. Everything is written atomically (temp file +
rename), so a killed run never leaves a half-written record behind."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import schema
from harness.deprecation import warn_deprecated
from harness.errors import HarnessError, warn

# 1: config, iterations, models, result. 2: adds evaluations.jsonl, the data set's label and
# shape in config.json, and final_iteration (the model kept) in result.json.
SCHEMA_VERSION = 2
CONFIG_FILE = "config.json"
ITERATIONS_FILE = "iterations.jsonl"
EVALUATIONS_FILE = "evaluations.jsonl"
RESULT_FILE = "result.json"
MODELS_DIR = "models"
NODE_ENV = "HARNESS_NODE"  # set inside a Ray task: config.json and result.json name the node that wrote them


TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    try:  # Linux says it without changing it (os.umask can only set it, for every thread)
        with open("/proc/self/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def remove_temporaries(folder: Path, name: str = "*") -> list[Path]:
    """The temporary files (``.<name>.*.tmp``) a killed writer left in ``folder`` and its
    subfolders. The caller holds the lock of what it removes, so no live writer owns one."""
    leftovers = [p for p in Path(folder).rglob(f".{name}.*{TMP_SUFFIX}") if p.is_file()]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a record is a file like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes, held while the block runs (POSIX ``flock``;
    where that does not exist, no lock). The kernel drops it when a holder dies, so a killed
    process never leaves it held."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_folder(flag: str, folder) -> None:
    """One line when ``folder`` cannot hold files: a file stands where it or a folder above it
    would be, or the nearest existing folder cannot be written."""
    path = Path(folder)
    existing = next(p for p in (path, *path.parents) if os.path.exists(p) or p == p.parent)
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise HarnessError(f"{flag} {folder} is not a folder{where}; give a folder")
    try:  # a real file, removed at once: permissions, a read-only or special file system all show
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".harness-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise HarnessError(f"{flag} {folder} cannot be written ({existing}: {exc.strerror or exc})") from None


LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str):
    """An exclusive, non-blocking lock on the file ``path`` holding the holder's pid, for the
    life of the block; a second process gets one line naming ``what`` and the holder. The
    kernel drops it when the holder dies, so a killed process's lock is simply taken over."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise HarnessError(f"{what} is being written by another process{f' (pid {holder})' if holder else ''}; "
                           "one process at a time may write it") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
        yield
    finally:
        Path(path).unlink(missing_ok=True)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


@contextlib.contextmanager
def folder_for_writing(folder: Path):
    """``folder`` made (with the folders above it that are missing) for the block; those it
    made are removed again when nothing was written into them (a refused call leaves no trace)."""
    folder = Path(folder)
    created = []  # innermost first
    for above in (folder, *folder.parents):
        if above.exists():
            break
        created.append(above)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        for made in created:  # a folder something was written into stays, and those above it
            if not made.is_dir() or any(made.iterdir()):
                break
            made.rmdir()


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """One writer per run: ``run_dir/.lock`` while the run is written (two ``--resume`` of one
    run would interleave their iterations). A run folder this call created is removed again
    when nothing but the lock was written into it."""
    with folder_for_writing(run_dir), exclusive_lock(Path(run_dir) / LOCK_FILE, f"run {run_dir}"):
        remove_temporaries(run_dir)  # what a killed writer of this run left half-written
        yield


NON_FINITE = "non_finite"  # the key that says which numbers were NaN or infinite (written as null)


def strict_json(obj, indent=None) -> str:
    """JSON that strict readers accept: a NaN or infinite number is written as null, and a
    record (a dict) says which under ``non_finite`` (``{"similarities.cka": "nan"}``)."""
    found = {}

    def clean(value, where):
        if isinstance(value, float) and not math.isfinite(value):
            found[where] = str(value)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(obj, "")
    if found and isinstance(cleaned, dict):
        cleaned[NON_FINITE] = {**(cleaned.get(NON_FINITE) or {}), **found}
    return json.dumps(cleaned, indent=indent, sort_keys=True, allow_nan=False)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (strict_json(obj, indent=2) + "\n").encode())


def _read_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file. A last line cut short (a copy interrupted, a disk
    full) is left out with a warning, and the next append rewrites the file without it; any
    other line that is not a record makes the file untrustworthy: a one-line error."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and line.lstrip().startswith("{"):  # a record's start, its end missing
                warn(f"the last line of {path} is cut short; it is left out")
                break
            raise HarnessError(f"{path} line {number} is not valid JSON: the record cannot be trusted") from None
        if not isinstance(row, dict) or "iteration" not in row:
            raise HarnessError(f"{path} line {number} is not a record (a JSON object with an iteration): "
                               "the record cannot be trusted")
        rows.append(row)
    return rows


def _append_line(path: Path, record: dict) -> None:
    """Rewrites the whole file atomically: records are small and this never tears a line."""
    rows = _read_lines(path) + [record]
    atomic_write_bytes(path, "".join(strict_json(r) + "\n" for r in rows).encode())


def read_iterations(run_dir: Path) -> list[schema.Iteration]:
    """One dict per finished iteration; iteration 0 is the unpruned model. Older records are
    read as the current schema has them (:func:`harness.schema.read_iteration`)."""
    return [schema.read_iteration(row) for row in _read_lines(Path(run_dir) / ITERATIONS_FILE)]


def append_iteration(run_dir: Path, record: schema.Iteration) -> None:
    _append_line(Path(run_dir) / ITERATIONS_FILE, record)


def read_evaluations(run_dir: Path) -> dict[int, schema.Evaluation]:
    """Evaluator results by iteration: ``{"results": {evaluator: {...}}, "errors": {evaluator: message}}``."""
    return {row["iteration"]: row for row in _read_lines(Path(run_dir) / EVALUATIONS_FILE)}


def append_evaluation(run_dir: Path, record: schema.Evaluation) -> None:
    _append_line(Path(run_dir) / EVALUATIONS_FILE, record)


def read_config(run_dir: Path) -> schema.RunConfig:
    """A run's config.json; one line naming the file when it is not a run's configuration."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is not valid JSON ({exc}): the run cannot be read or resumed") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise HarnessError(f"{path} holds no run configuration (a JSON object with a \"config\" object)")
    return record


def read_result(run_dir: Path) -> schema.Result | None:
    """The result of a complete run (None while it is not), with the defaults of older schemas."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    result.setdefault("final_iteration", result.get("iterations"))
    return result


def model_path(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / MODELS_DIR / f"iter_{iteration:03d}.pt"


# ---------------------------------------------------------------- a whole run, read back
@dataclass
class RunRecord:
    """A run directory read back: what every reader of records needs, schema 1 included."""

    config: schema.RunConfig
    iterations: list[schema.Iteration]  # at least iteration 0
    evaluations: dict[int, schema.Evaluation]  # by iteration
    result: schema.Result | None  # None while the run is not complete

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord | None:
        """The records of ``run_dir``; None before iteration 0 is recorded."""
        iterations = read_iterations(run_dir)
        if not iterations:
            return None
        return cls(read_config(run_dir), iterations, read_evaluations(run_dir), read_result(run_dir))

    @property
    def complete(self) -> bool:
        return self.result is not None

    @property
    def final_iteration(self) -> int:
        """The iteration whose model the run keeps: result.json's, or the last one recorded
        while the run goes on. Every reader of records asks here."""
        return self.result["final_iteration"] if self.result else self.iterations[-1]["iteration"]

    @property
    def through_final(self) -> list[schema.Iteration]:
        """Iterations 0 to the final one."""
        return [r for r in self.iterations if r["iteration"] <= self.final_iteration]

    @property
    def kept(self) -> list[schema.Iteration]:
        warn_deprecated("RunRecord.kept", "RunRecord.through_final")
        return self.through_final

    @property
    def data_label(self) -> str:
        """The data set's label, or for schema 1 (no label) its name."""
        return (self.config.get("data") or {}).get("label") or self.config["config"]["dataset"]

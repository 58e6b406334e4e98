"""The errors the CLI turns into one line on stderr, without a traceback unless asked
(``harness --traceback`` or ``HARNESS_TRACEBACK=1``), and the one channel for warnings."""

import contextlib
import os
import sys
import traceback


class HarnessError(Exception):
    """Bad input or an unusable resource: the message is shown to the user as is (exit 2)."""


class PluginError(HarnessError):
    """A plugin raised: the message names its kind, its name and the package it came from."""


class RunStopped(HarnessError):
    """A run stopped partway by an error after it had written records (exit 4): the records
    are kept, and ``--resume`` continues the run once the cause is fixed."""

    def __init__(self, message: str, run_dir):
        super().__init__(f"{message}; the run so far is kept: fix the cause and continue it with "
                         f"harness bench --resume {run_dir}")
        self.run_dir = run_dir


class TimeLimitReached(HarnessError):
    """The command's ``--time-limit`` came before the run's next iteration (exit 5): every
    record is kept and ``--resume`` continues exactly where it stopped."""

    def __init__(self, message: str, resume: str):
        super().__init__(f"{message}; continue with {resume}")
        self.resume = resume


class SystemTrouble(HarnessError):
    """The operating system refused partway through a command (a full disk, a read-only file
    system, no permission): exit 4, every record written before is kept."""


def os_problem(exc: OSError) -> str:
    """An OSError as one line: what the system said and the file it said it of."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or first_line(exc)}{where}"


class RunsFailed(HarnessError):
    """Some runs of a sweep failed after their retries (exit 4); the others' records are kept,
    and starting the sweep again resumes the failed ones."""


def unknown_name(kind: str, name: str, valid) -> HarnessError:
    choices = ", ".join(sorted(valid)) or "(none registered)"
    return HarnessError(f"unknown {kind} {name!r}; valid choices: {choices}")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for one-line errors; one cut at ``limit``
    characters ends at a word, with an ellipsis."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def described(exc: BaseException) -> str:
    """An exception as one line: a HarnessError's message as it is (a plugin's failure names
    the plugin already), anything else with its type."""
    return str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {first_line(exc)}"


_TRACEBACKS: list[bool] = []  # set by `harness --traceback` for the length of one command


@contextlib.contextmanager
def tracebacks_shown(on: bool):
    _TRACEBACKS.append(on)
    try:
        yield
    finally:
        _TRACEBACKS.pop()


def tracebacks_wanted() -> bool:
    """``harness --traceback`` or ``HARNESS_TRACEBACK=1`` (the variable reaches sweep shards and Ray tasks)."""
    if _TRACEBACKS and _TRACEBACKS[-1]:
        return True
    return os.environ.get("HARNESS_TRACEBACK", "").lower() not in ("", "0", "false", "no")


def print_traceback(exc: BaseException) -> None:
    """The full stack of ``exc`` and of what caused it (a plugin's own frames) on stderr, when asked."""
    if tracebacks_wanted():
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()


def warn(message: str) -> None:
    """The one channel for warnings to the user: ``harness: warning: <message>`` on stderr,
    flushed at once (a run's own progress lines go to stdout and must not overtake it)."""
    print(f"harness: warning: {message}", file=sys.stderr, flush=True)

"""Progress of long phases: a tqdm bar on a terminal, and otherwise (a piped run, a log
file, CI) a line once a phase has run for a few seconds and at least one a minute after
that, so that nobody stares at 15 silent minutes. Phases shorter than that stay silent:
a demo iteration has five of them a second."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

#: seconds between two lines of a phase when no progress bar shows it
HEARTBEAT_S = 60.0
#: a phase that is still running after this many seconds is long: it gets its first line
GRACE_S = 5.0


class progress(Iterator[T]):  # noqa: N801 - used like tqdm, as a function
    """Iterates ``items`` and reports on them. ``bar=True`` (a terminal): a tqdm bar that
    disappears when done. ``bar=False``: on stderr, ``desc: running, k/n after 5 s, about
    10 s left`` (the time left at the pace so far, when ``n`` is known) once the phase has run
    ``grace`` seconds, then such a line every ``heartbeat`` seconds, and
    ``desc: done`` at the end of a phase that printed. ``quiet=True``: nothing at all."""

    def __init__(self, items: Iterable[T], desc: str, *, bar: bool, total: int | None = None,
                 quiet: bool = False, heartbeat: float = HEARTBEAT_S, grace: float = GRACE_S, stream=None):
        self.desc, self.heartbeat, self.quiet = desc, heartbeat, quiet
        self.stream = stream or sys.stderr
        self.total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        self.done, self.start = 0, time.monotonic()
        self.next_line, self.printed = self.start + grace, False
        self.bar = tqdm(items, desc=desc, total=self.total, leave=False) if bar and not quiet else None
        self.it = iter(self.bar if self.bar is not None else items)

    def _line(self, what: str) -> None:
        print(f"{self.desc}: {what}", file=self.stream, flush=True)

    def set_postfix(self, **kwargs) -> None:
        if self.bar is not None:
            self.bar.set_postfix(refresh=False, **kwargs)

    def __iter__(self):
        return self

    def __next__(self) -> T:
        try:
            item = next(self.it)
        except StopIteration:
            if self.printed:
                self._line(f"done in {time.monotonic() - self.start:.0f} s")
            raise
        if self.bar is None and not self.quiet:
            now = time.monotonic()
            if now >= self.next_line:
                self.next_line, self.printed = now + self.heartbeat, True
                of = f"/{self.total}" if self.total else ""
                elapsed = now - self.start
                # at the pace so far: long phases (a pretraining, a paper-budget fine-tune) run for hours
                left = f", about {elapsed / self.done * (self.total - self.done):.0f} s left" \
                    if self.total and self.done else ""
                self._line(f"running, {self.done}{of} after {elapsed:.0f} s{left}")
        self.done += 1
        return item

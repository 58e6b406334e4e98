"""Long phases report when no terminal shows a progress bar; short ones stay silent."""

import io

from harness.progress import progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_long_phase_prints_after_the_grace_and_then_every_heartbeat(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("harness.progress.time.monotonic", clock)
    out = io.StringIO()
    seen = []
    for i in progress(range(10), "baseline", bar=False, grace=5, heartbeat=60, stream=out):
        seen.append(i)
        clock.now += 20  # each step takes 20 s
    assert seen == list(range(10))
    lines = out.getvalue().splitlines()
    # at 20 s (after the grace), then at 80 s and 140 s, each with the time left at the pace so far; and the end
    assert lines == ["baseline: running, 1/10 after 20 s, about 180 s left",
                     "baseline: running, 4/10 after 80 s, about 120 s left",
                     "baseline: running, 7/10 after 140 s, about 60 s left", "baseline: done in 200 s"]


def test_a_short_phase_and_a_quiet_one_print_nothing(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("harness.progress.time.monotonic", clock)
    out = io.StringIO()
    for _ in progress(range(3), "fine-tune", bar=False, stream=out):
        clock.now += 1
    for _ in progress(range(3), "fine-tune", bar=False, quiet=True, stream=out):
        clock.now += 100
    assert out.getvalue() == ""

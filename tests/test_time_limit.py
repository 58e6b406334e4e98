"""--time-limit: a run stops cleanly between iterations (exit 5, every record kept) before one
that would end after the limit, and --resume continues it to the records an uninterrupted
run writes."""

import time
import pytest

from conftest import run_cli, without_wall_times
from harness import records
from harness.loop import check_time_left
from harness.errors import TimeLimitReached

SMOKE = ["--budget", "smoke", "--scratch-epochs", "15", "--finetune-epochs", "1", "--candidate-epochs", "0.5"]


def rows_with(*wall_times):
    return [{"iteration": 0}] + [{"iteration": i + 1, "wall_time_s": w} for i, w in enumerate(wall_times)]


def test_the_next_iteration_is_judged_by_the_last_one():
    now = time.monotonic()
    check_time_left(now + 100, "runs/r", rows_with(5.0, 30.0))  # 30 s fit in the 100 left
    check_time_left(now + 100, "runs/r", rows_with(500.0, 30.0))  # the last iteration counts, not the longest
    with pytest.raises(TimeLimitReached, match=r"after iteration 2 of runs/r \(the next would take about 300 s"):
        check_time_left(now + 100, "runs/r", rows_with(5.0, 300.0))
    check_time_left(now + 100, "runs/r", rows_with())  # nothing to judge by before the first iteration
    with pytest.raises(TimeLimitReached, match=r"\(no time left\); continue with harness bench --resume runs/r"):
        check_time_left(now - 1, "runs/r", rows_with())
    check_time_left(None, "runs/r", rows_with(1e9))  # no limit


@pytest.mark.slow
def test_a_run_stopped_at_its_time_limit_resumes_to_the_uninterrupted_records(tmp_path):
    args = [*SMOKE, "--iterations", "3", "--runs-dir", str(tmp_path)]
    assert run_cli("bench", *args, "--name", "straight").returncode == 0
    stopped = run_cli("bench", *args, "--name", "limited", "--time-limit", "0.0001")
    limited = tmp_path / "limited"
    assert stopped.returncode == 5, stopped.stderr
    assert stopped.stderr.strip() == (f"harness: time limit: stopped after iteration 0 of {limited} (no time left); "
                                      f"continue with harness bench --resume {limited}")
    assert len(records.read_iterations(limited)) == 1 and records.read_result(limited) is None
    again = run_cli("bench", "--resume", str(limited), "--time-limit", "0.0001")  # still no time: nothing changes
    assert again.returncode == 5 and len(records.read_iterations(limited)) == 1
    done = run_cli("bench", "--resume", str(limited), "--time-limit", "60")
    assert done.returncode == 0, done.stderr
    assert without_wall_times(records.read_iterations(limited)) == \
        without_wall_times(records.read_iterations(tmp_path / "straight"))
    assert (limited / "result.json").read_text() == (tmp_path / "straight" / "result.json").read_text()


@pytest.mark.slow
def test_a_sweep_stopped_at_its_time_limit_continues_when_started_again(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'model = "tiny-resnet"\nbudget = "smoke"\nscratch_epochs = 15\niterations = 1\nseed = [0, 1]\n'
                     f'runs_dir = "{tmp_path / "runs"}"\n')
    stopped = run_cli("sweep", str(sweep), "--time-limit", "0.0001")
    assert stopped.returncode == 5, stopped.stderr
    assert stopped.stderr.strip().endswith(f"; continue with harness sweep {sweep}")
    assert run_cli("sweep", str(sweep), "--time-limit", "-1").returncode == 2
    done = run_cli("sweep", str(sweep))
    assert done.returncode == 0, done.stderr
    assert all(records.read_result(tmp_path / "runs" / f"tiny-resnet-s{k}") for k in (0, 1))

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli, without_wall_times
from harness import records
from harness.models import load_model

SMOKE = ["--budget", "smoke", "--scratch-epochs", "15", "--finetune-epochs", "1", "--candidate-epochs", "0.5"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli("bench", *SMOKE, "--iterations", "4", "--runs-dir", str(runs), "--name", "demo")
    assert result.returncode == 0, result.stderr
    return runs / "demo", result


@pytest.mark.slow
def test_demo_run_writes_a_complete_record(demo_run):
    run_dir, result = demo_run
    cfg = records.read_config(run_dir)
    assert cfg["config"]["model"] == "tiny-resnet" and cfg["config"]["dataset"] == "digits"
    assert {"torch", "harness", "git_sha", "python"} <= set(cfg["versions"])
    rows = records.read_iterations(run_dir)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3, 4]
    path = json.loads((run_dir / "result.json").read_text())["decision_path"]
    assert path == "".join(r["decision"] for r in rows[1:]) and set(path) <= {"L", "F"}
    assert f"decision path: {path}" in result.stdout
    flops = [r["flops"] for r in rows]
    assert all(a > b for a, b in zip(flops, flops[1:])), "every iteration removes something"
    assert rows[0]["accuracy"] > 80, "the baseline classifies digits"
    for r in rows[1:]:
        assert len(r["candidates"]) >= 1 and all(c["similarity"] is not None for c in r["candidates"])
        assert r["flops_reduction_pct"] == pytest.approx(100 * (1 - r["flops"] / rows[0]["flops"]), abs=1e-3)


def test_recorded_models_reload_smaller_and_reproduce_the_recorded_accuracy(demo_run):
    from harness.session import load_data
    from harness.config import BenchConfig
    from harness.measure import count_flops, count_parameters
    from harness.training import accuracy

    run_dir, _ = demo_run
    cfg = BenchConfig.from_dict(records.read_config(run_dir)["config"])
    data = load_data(cfg)
    for row in records.read_iterations(run_dir):
        model = load_model(records.model_path(run_dir, row["iteration"]))
        assert count_parameters(model) == row["params"]
        assert count_flops(model, (1, 8, 8)) == row["flops"]
        assert accuracy(model, data.test, data, "cpu") == pytest.approx(row["accuracy"], abs=1e-3)


def test_leaderboard_has_one_row_per_run(demo_run, tmp_path):
    run_dir, _ = demo_run
    result = run_cli("leaderboard", "--runs", str(run_dir.parent), "--out", str(tmp_path / "lb"))
    assert result.returncode == 0, result.stderr
    tables = tmp_path / "lb" / "tables"
    csv = (tables / "digits-scikit-learn_tiny-resnet.csv").read_text().splitlines()
    assert len(csv) == 2 and csv[1].startswith("tiny-resnet,digits (scikit-learn),cka,kl,cka,")
    md = (tables / "digits-scikit-learn_tiny-resnet.md").read_text()
    assert md.startswith("# Leaderboard: tiny-resnet on digits (scikit-learn)")  # model and data: the page's
    assert "| cka | kl | cka |" in md


def test_existing_run_is_not_overwritten(demo_run):
    run_dir, _ = demo_run
    before = (run_dir / records.ITERATIONS_FILE).read_bytes()
    result = run_cli("bench", *SMOKE, "--runs-dir", str(run_dir.parent), "--name", "demo")
    assert result.returncode == 2 and "--resume" in result.stderr
    assert (run_dir / records.ITERATIONS_FILE).read_bytes() == before


@pytest.mark.slow
def test_target_flops_stops_the_run(tmp_path):
    result = run_cli("bench", *SMOKE, "--iterations", "20", "--target-flops", "15",
                     "--runs-dir", str(tmp_path), "--name", "t")
    assert result.returncode == 0, result.stderr
    rows = records.read_iterations(tmp_path / "t")
    assert rows[-1]["flops_reduction_pct"] >= 15 and rows[-2]["flops_reduction_pct"] < 15
    assert "reached target FLOPs reduction" in result.stdout


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = [*SMOKE, "--iterations", "5", "--runs-dir", str(tmp_path)]
    assert run_cli("bench", *args, "--name", "straight").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "bench", *args, "--name", "killed"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    killed_dir = tmp_path / "killed"
    deadline = time.time() + 300
    while len(records.read_iterations(killed_dir)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(records.read_iterations(killed_dir))
    assert 3 <= done < 6 and not (killed_dir / "result.json").exists(), "the run must be killed mid-way"
    result = run_cli("bench", "--resume", str(killed_dir))
    assert result.returncode == 0, result.stderr
    assert f"resuming {killed_dir} after iteration {done - 1}" in result.stdout
    assert without_wall_times(records.read_iterations(killed_dir)) == \
        without_wall_times(records.read_iterations(tmp_path / "straight"))
    assert (killed_dir / "result.json").read_text() == (tmp_path / "straight" / "result.json").read_text()


def test_git_revision_of_the_checkout_and_not_of_an_unrelated_repository(tmp_path):
    import subprocess

    from harness.provenance import git_revision

    sha = git_revision()  # the tests run from a checkout of the project
    assert sha is None or len(sha.removesuffix("-dirty")) == 40
    outer = tmp_path / "outer"
    (outer / "site" / "harness").mkdir(parents=True)
    (outer / "site" / "harness" / "__init__.py").write_text("")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=outer, check=True, capture_output=True)
    # an installed copy (site/harness) inside some other repository: its commit says nothing
    assert git_revision(outer / "site" / "harness") is None
    (outer / "harness").mkdir()
    (outer / "harness" / "__init__.py").write_text("")
    subprocess.run(["git", "add", "."], cwd=outer, check=True)
    sha = git_revision(outer / "harness")
    assert sha is not None and sha.endswith("-dirty") and len(sha) == 40 + len("-dirty")


@pytest.mark.slow
def test_runs_started_side_by_side_share_one_baseline(tmp_path):
    """Two runs of the same configuration at once: one trains the baseline, the other waits
    for it and reuses it (on a GPU, two trainings would give two different baselines)."""
    import subprocess
    import sys

    cache = tmp_path / "cache"
    args = ["--budget", "smoke", "--iterations", "0", "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(cache)]
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "bench", *args, "--name", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert sum("baseline: reusing" in out for out, _ in outs) == 1
    assert len(list((cache / "baselines").glob("*.pt"))) == 1
    first = [records.read_iterations(tmp_path / "runs" / name)[0] for name in ("a", "b")]
    assert first[0] == first[1]


@pytest.mark.slow
def test_resumed_run_keeps_its_plugin_options(tmp_path):
    """A run resumed in a fresh process configures its plugins from its own record: with
    --rbf-cka-sigma 0.25 the resumed iterations measure the same similarities as an
    uninterrupted run (they fell back to the default 0.5 before)."""
    args = [*SMOKE, "--similarity", "rbf-cka", "--rbf-cka-sigma", "0.25", "--iterations", "3", "--seed", "1",
            "--runs-dir", str(tmp_path)]
    assert run_cli("bench", *args, "--name", "straight").returncode == 0
    straight, partial = tmp_path / "straight", tmp_path / "partial"
    shutil.copytree(straight, partial)
    (partial / "result.json").unlink()
    lines = (partial / "iterations.jsonl").read_text().splitlines(keepends=True)
    (partial / "iterations.jsonl").write_text("".join(lines[:2]))  # as if killed after iteration 1
    result = run_cli("bench", "--resume", str(partial))
    assert result.returncode == 0, result.stderr
    assert without_wall_times(records.read_iterations(partial)) == \
        without_wall_times(records.read_iterations(straight))


def test_one_process_at_a_time_writes_a_run(tmp_path):
    """Two --resume of one run at once interleaved their iterations; the second now stops at
    once, in one line, and the records are untouched."""
    from harness import records as rec

    first = run_cli("bench", "--budget", "smoke", "--iterations", "1", "--runs-dir", str(tmp_path), "--name", "r")
    assert first.returncode == 0, first.stderr
    (tmp_path / "r" / "result.json").unlink()  # as if killed after iteration 1
    before = (tmp_path / "r" / "iterations.jsonl").read_text()
    with rec.run_lock(tmp_path / "r"):  # another process is writing it
        second = run_cli("bench", "--resume", str(tmp_path / "r"))
        fresh = run_cli("bench", "--budget", "smoke", "--runs-dir", str(tmp_path), "--name", "r")
    for result in (second, fresh):
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert f"run {tmp_path / 'r'} is being written by another process (pid " in result.stderr
    assert (tmp_path / "r" / "iterations.jsonl").read_text() == before
    assert not (tmp_path / "r" / ".lock").exists()
    again = run_cli("bench", "--resume", str(tmp_path / "r"))  # the lock is gone with its holder
    assert again.returncode == 0, again.stderr


def test_resume_drops_a_last_line_cut_short_and_refuses_what_it_cannot_trust(tmp_path):
    made = run_cli("bench", "--budget", "smoke", "--iterations", "2", "--runs-dir", str(tmp_path), "--name", "r")
    assert made.returncode == 0, made.stderr
    run = tmp_path / "r"
    (run / "result.json").unlink()
    lines = (run / "iterations.jsonl").read_text().splitlines()
    # iteration 2's line cut short, as a copy interrupted midway would leave it
    (run / "iterations.jsonl").write_text("\n".join(lines[:2] + [lines[2][:40]]) + "\n")
    resumed = run_cli("bench", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert f"harness: warning: the last line of {run / 'iterations.jsonl'} is cut short; it is left out" in resumed.stderr
    rows = [json.loads(line) for line in (run / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # iteration 2 done again

    config = (run / "config.json").read_text()
    for broken, message in (('{"config": {"model"', "is not valid JSON"), ("[1, 2]", "holds no run configuration")):
        (run / "result.json").unlink(missing_ok=True)
        (run / "config.json").write_text(broken)
        result = run_cli("bench", "--resume", str(run))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    (run / "config.json").write_text(config)
    good = (run / "iterations.jsonl").read_text().splitlines()
    (run / "iterations.jsonl").write_text("\n".join([good[0], "{}", *good[1:]]) + "\n")
    result = run_cli("bench", "--resume", str(run))
    assert result.returncode == 2 and "line 2 is not a record" in result.stderr and result.stderr.count("\n") == 1

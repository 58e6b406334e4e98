"""Issue 13: sweeps and candidates on Ray (the optional extra; CI installs it). Each Ray test
starts its own local instance in a subprocess, so no Ray state outlives it."""

import json
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import run_cli, without_wall_times
from harness import records

SWEEP = """
method = ["layer-only", "filter-only"]
seed = [0, 1]
budget = "smoke"
iterations = 2
scratch_epochs = 10
candidate_epochs = 0.3
finetune_epochs = 0.5
runs_dir = "{runs}"
num_cpus = 1
"""



def same_records(a, b):
    """Two runs wrote the same records, wall times and the node that wrote them aside."""
    assert without_wall_times(records.read_iterations(a)) == without_wall_times(records.read_iterations(b)), a.name
    result = lambda d: {k: v for k, v in records.read_result(d).items() if k != "node"}  # noqa: E731
    assert result(a) == result(b), a.name

    def config(d):
        c = records.read_config(d)
        c["hardware"].pop("node", None)
        for key in ("runs_dir", "name", "parallel_candidates"):  # where it went, not what it did
            c["config"].pop(key)
        c.pop("command")
        return c

    assert config(a) == config(b), a.name
    for it in range(len(records.read_iterations(a))):
        x = torch.load(records.model_path(a, it))["state_dict"]
        y = torch.load(records.model_path(b, it))["state_dict"]
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), (a.name, it)


@pytest.mark.slow
def test_a_sweep_on_ray_writes_the_records_of_the_sequential_sweep(tmp_path):
    pytest.importorskip("ray")
    for name in ("sequential", "ray"):
        (tmp_path / f"{name}.toml").write_text(SWEEP.format(runs=tmp_path / name))
    # one thread per run, as each Ray task has (num_cpus = 1): the arithmetic depends on it
    sequential = run_cli("sweep", str(tmp_path / "sequential.toml"), env={"OMP_NUM_THREADS": "1"}, isolated=True)
    assert sequential.returncode == 0, sequential.stderr
    on_ray = run_cli("sweep", str(tmp_path / "ray.toml"), "--ray", env={"RAY_ADDRESS": ""}, isolated=True)
    assert on_ray.returncode == 0, on_ray.stderr
    names = sorted(d.name for d in (tmp_path / "sequential").iterdir() if not d.name.endswith("leaderboard"))
    assert len(names) == 4
    for name in names:
        assert f"start {name} on " in on_ray.stdout and f"done {name} on " in on_ray.stdout
        same_records(tmp_path / "sequential" / name, tmp_path / "ray" / name)
        # the records say which node wrote the run
        assert records.read_result(tmp_path / "ray" / name)["node"].count("/") == 1
        assert "node" not in records.read_result(tmp_path / "sequential" / name)
    assert "| run | status | node | seconds |" in on_ray.stdout
    again = run_cli("sweep", str(tmp_path / "ray.toml"), "--ray", env={"RAY_ADDRESS": ""}, isolated=True)
    assert again.returncode == 0 and again.stdout.count("(complete)") == 4, again.stdout


@pytest.mark.slow
def test_parallel_candidates_give_the_sequential_result(tmp_path):
    pytest.importorskip("ray")
    args = ["--budget", "smoke", "--iterations", "2", "--candidate-epochs", "0.3", "--runs-dir", str(tmp_path)]
    assert run_cli("bench", *args, "--name", "sequential").returncode == 0
    parallel = run_cli("bench", *args, "--name", "parallel", "--parallel-candidates", env={"RAY_ADDRESS": ""},
                       isolated=True)  # Ray stays started in the process that starts it
    sequential = records.read_config(tmp_path / "sequential")["hardware"]["threads"]
    assert records.read_config(tmp_path / "parallel")["hardware"]["threads"] == sequential
    assert parallel.returncode == 0, parallel.stderr
    same_records(tmp_path / "sequential", tmp_path / "parallel")
    assert records.read_config(tmp_path / "parallel")["config"]["parallel_candidates"] is True


def test_without_ray_the_flags_are_one_line(tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SWEEP.format(runs=tmp_path / "runs"))
    for args in (["sweep", "s.toml", "--ray"], ["bench", "--parallel-candidates"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == "harness: error: --ray needs Ray: pip install 'prunebench[ray]' (or pip install ray)"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("line", ["num_cpus = -1", "num_gpus = 'one'", "num_cpus = inf"])
def test_sweep_resources_are_checked(tmp_path, monkeypatch, line):
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SWEEP.format(runs=tmp_path / "runs").replace("num_cpus = 1", line))
    result = CliRunner().invoke(main, ["sweep", "s.toml", "--ray"])
    assert result.exit_code == 2 and "must be a number, 0 or more" in result.stderr, result.output
    assert json.dumps(result.stderr.strip().splitlines()).count("harness: error") == 1


def test_an_unreachable_cluster_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    """Ray retried an address that takes no connection for minutes, printing its own logs."""
    pytest.importorskip("ray")
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SWEEP.format(runs=tmp_path / "runs"))
    result = CliRunner().invoke(main, ["sweep", "s.toml", "--ray", "127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("harness: error: cannot reach the Ray cluster at 127.0.0.1:1 (")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "runs").exists()

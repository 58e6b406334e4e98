import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli, without_wall_times
from harness import records

# single-structure methods keep the sweep cheap: resuming cka mid-iteration is test_bench's
SWEEP = """
method = ["layer-only", "layers-then-filters"]
seed = [0, 1]
budget = "smoke"
iterations = 2
scratch_epochs = 10
candidate_epochs = 0.3
finetune_epochs = 0.5
runs_dir = "{runs}"
prefix = "sw-"
"""


def write_sweep(tmp_path, name):
    path = tmp_path / f"{name}.toml"
    path.write_text(SWEEP.format(runs=tmp_path / name))
    return path



def test_dry_run_lists_the_product_of_the_lists(tmp_path):
    result = run_cli("sweep", str(write_sweep(tmp_path, "dry")), "--dry-run")
    assert result.returncode == 0, result.stderr
    names = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("sweep ")]
    assert names == ["sw-layer-only-s0", "sw-layer-only-s1", "sw-layers-then-filters-s0", "sw-layers-then-filters-s1"]
    assert not (tmp_path / "dry").exists()


def test_shards_split_the_runs_between_processes(tmp_path):
    from harness.errors import HarnessError
    from harness.sweep import parse_shard, run_sweep

    path = write_sweep(tmp_path, "dry")
    shards = [[d.name for d in run_sweep(path, dry_run=True, shard=(k, 3))[0]] for k in (1, 2, 3)]
    assert shards == [["sw-layer-only-s0", "sw-layers-then-filters-s1"], ["sw-layer-only-s1"],
                      ["sw-layers-then-filters-s0"]]
    for bad in ("0/2", "3/2", "two", "1/0"):
        with pytest.raises(HarnessError, match="--shard"):
            parse_shard(bad)
    result = run_cli("sweep", str(path), "--dry-run", "--shard", "3/2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--shard '3/2'" in result.stderr


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_records_of_an_uninterrupted_one(tmp_path):
    straight = run_cli("sweep", str(write_sweep(tmp_path, "straight")), "--out", str(tmp_path / "lb1"))
    assert straight.returncode == 0, straight.stderr
    cfg = write_sweep(tmp_path, "killed")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(cfg), "--out", str(tmp_path / "lb2")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    runs = tmp_path / "killed"
    deadline = time.time() + 300

    def progress():
        done = [d for d in runs.glob("*") if records.read_result(d) is not None] if runs.exists() else []
        partial = [d for d in runs.glob("*") if records.read_result(d) is None and records.read_iterations(d)] \
            if runs.exists() else []
        return len(done), len(partial)

    while progress()[0] < 2 or progress()[1] < 1:
        assert proc.poll() is None and time.time() < deadline, "the sweep must be killed half-way"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress()[0] < 4
    resumed = run_cli("sweep", str(cfg), "--out", str(tmp_path / "lb2"))
    assert resumed.returncode == 0, resumed.stderr
    assert "(complete)" in resumed.stdout and "(interrupted)" in resumed.stdout
    names = sorted(d.name for d in (tmp_path / "straight").iterdir())
    assert names == sorted(d.name for d in runs.iterdir()) and len(names) == 4
    for name in names:
        a, b = tmp_path / "straight" / name, runs / name
        assert without_wall_times(records.read_iterations(a)) == without_wall_times(records.read_iterations(b)), name
        assert records.read_result(a) == records.read_result(b), name
    assert (tmp_path / "lb2").is_dir() and any((tmp_path / "lb2").iterdir())


def test_a_sweep_with_an_unknown_name_fails_before_running_anything(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(f'method = ["cka", "magic"]\nruns_dir = "{tmp_path / "runs"}"\n')
    result = run_cli("sweep", str(path))
    assert result.returncode == 2 and "unknown method 'magic'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_grids_share_the_top_level_keys(tmp_path):
    path = tmp_path / "grids.toml"
    path.write_text(f'budget = "smoke"\nruns_dir = "{tmp_path / "runs"}"\n'
                    '[[grid]]\nmethod = ["cka", "layer-only"]\n'
                    '[[grid]]\nmethod = "random-walk"\nseed = [0, 1, 2]\n')
    from harness.sweep import expand

    runs = expand(path)
    assert [r["name"] for r in runs] == ["cka-s0", "layer-only-s0", "random-walk-s0", "random-walk-s1",
                                         "random-walk-s2"]
    assert all(r["budget"] == "smoke" for r in runs)


@pytest.mark.slow
def test_shards_on_one_machine_split_its_cores(tmp_path):
    """Two torch processes with a thread per core each oversubscribe the cores: a shard of N
    takes 1/N of the cores it may use, unless OMP_NUM_THREADS says otherwise."""
    path = write_sweep(tmp_path, "cores")
    cores = len(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    shard = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(path), "--shard", "3/4"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert shard.returncode == 0, shard.stderr
    assert f"{max(1, cores // 4)} torch thread(s): {cores} core(s) shared by 4 shards" in shard.stderr
    recorded = records.read_config(tmp_path / "cores" / "sw-layers-then-filters-s0")["hardware"]["threads"]
    assert recorded == max(1, cores // 4)
    told = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(path), "--shard", "2/4", "--dry-run"],
                          capture_output=True, text=True, env=dict(env, OMP_NUM_THREADS="2"), timeout=600)
    assert told.returncode == 0 and "torch thread" not in told.stderr

import pytest
import subprocess
import sys
from pathlib import Path

from conftest import run_cli
from harness import records

FIXTURE = Path(__file__).parent / "fixtures" / "harness-extra-criterion"


@pytest.mark.slow
def test_outside_package_adds_a_criterion_without_touching_the_core(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(FIXTURE)], check=True)
    env = {"PYTHONPATH": str(target)}
    listing = run_cli("plugins", env=env).stdout
    assert any(line.split() == ["criterion", "l2", "harness-extra-criterion", "0.3.0"] for line in listing.splitlines())
    assert "l2" not in run_cli("plugins").stdout.split(), "not installed outside this test"

    result = run_cli("bench", "--budget", "smoke", "--criterion", "l2", "--iterations", "2",
                     "--runs-dir", str(tmp_path / "runs"), "--name", "ext", env=env)
    assert result.returncode == 0, result.stderr
    rows = records.read_iterations(tmp_path / "runs" / "ext")
    assert records.read_config(tmp_path / "runs" / "ext")["config"]["criterion"] == "l2"
    assert len(rows) == 3 and rows[-1]["flops"] < rows[0]["flops"]

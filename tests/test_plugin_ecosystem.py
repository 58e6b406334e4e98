"""Outside packages: the example package, name clashes and broken plugins."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from harness import records

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = ROOT / "examples" / "harness-example-plugins"


def install(package: Path, target: Path) -> dict:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(package)], check=True)
    return {"PYTHONPATH": str(target)}


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    return install(EXAMPLE, tmp_path_factory.mktemp("example-site"))


def test_example_package_plugins_are_listed_with_their_package(example_env):
    listing = run_cli("plugins", env=example_env).stdout.splitlines()
    for kind, name in (("criterion", "l2-norm"), ("similarity", "rsa"), ("evaluator", "ece")):
        assert any(line.split()[:4] == [kind, name, "harness-example-plugins", "0.1.0"] for line in listing), name


def test_bench_with_the_example_criterion_similarity_and_evaluator(example_env, tmp_path):
    result = run_cli("bench", "--budget", "smoke", "--iterations", "2", "--criterion", "l2-norm", "--similarity",
                     "rsa", "--evaluators", "ece", "--ece-bins", "10", "--runs-dir", str(tmp_path), "--name", "ex",
                     env=example_env)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "ex"
    config = records.read_config(run)["config"]
    assert (config["criterion"], config["similarity"], config["options"]["ece_bins"]) == ("l2-norm", "rsa", 10)
    rows = records.read_iterations(run)
    assert all(-1 <= c["similarity"] <= 1 for r in rows[1:] for c in r["candidates"])
    evaluations = records.read_evaluations(run)
    assert sorted(evaluations) == [0, 1, 2]
    assert all(0 <= e["results"]["ece"]["ece"] <= 100 and e["results"]["ece"]["bins"] == 10
               for e in evaluations.values())
    assert "ece_delta" in evaluations[2]["results"]["ece"]


def test_two_plugins_with_one_name_are_an_error_naming_both_packages(tmp_path):
    env = install(FIXTURES / "harness-duplicate-kl", tmp_path / "site")
    result = run_cli("plugins", env=env)
    assert result.returncode == 2
    assert "criterion 'kl' is registered twice" in result.stderr
    assert "prunebench" in result.stderr and "harness-duplicate-kl" in result.stderr


def test_a_plugin_that_raises_at_import_is_named_and_the_others_load(tmp_path):
    env = install(FIXTURES / "harness-broken", tmp_path / "site")
    result = run_cli("plugins", env=env)
    assert result.returncode == 0
    assert "plugin 'broken' failed to load" in result.stderr and "not installed" in result.stderr
    assert any(line.split()[:2] == ["criterion", "kl"] for line in result.stdout.splitlines())

"""Outside packages: the example package, name clashes and broken plugins."""

import os
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
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    return install(EXAMPLE, tmp_path_factory.mktemp("example-site"))


@pytest.mark.slow
def test_example_package_plugins_are_listed_with_their_package(example_env):
    listing = run_cli("plugins", env=example_env).stdout.splitlines()
    for kind, name in (("criterion", "l2-norm"), ("similarity", "rsa"), ("evaluator", "ece")):
        assert any(line.split()[:4] == [kind, name, "harness-example-plugins", "0.1.0"] for line in listing), name


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_plugin_with_a_builtin_name_is_a_warning_naming_both_and_the_name_stays_the_builtins(tmp_path):
    """Issue 26: it used to stop every command (exit 2, `harness bench --help` included)."""
    env = install(FIXTURES / "harness-duplicate-kl", tmp_path / "site")
    result = run_cli("plugins", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        "harness: warning: criterion 'kl' of harness-duplicate-kl 1.0.0 has the name of prunebench's own criterion; "
        "'kl' stays prunebench's: choose harness-duplicate-kl's as harness-duplicate-kl:kl (or give it the name "
        "with --block prunebench:kl)")
    rows = [line.split()[:3] for line in result.stdout.splitlines()]
    assert ["criterion", "kl", "prunebench"] in rows and ["criterion", "harness-duplicate-kl:kl",
                                                          "harness-duplicate-kl"] in rows
    assert run_cli("bench", "--help", env=env).returncode == 0


@pytest.mark.slow
def test_a_plugin_that_raises_at_import_is_named_and_the_others_load(tmp_path):
    env = install(FIXTURES / "harness-broken", tmp_path / "site")
    result = run_cli("plugins", env=env)
    assert result.returncode == 0
    assert "plugin 'broken' failed to load" in result.stderr and "not installed" in result.stderr
    assert any(line.split()[:2] == ["criterion", "kl"] for line in result.stdout.splitlines())


@pytest.fixture(scope="module")
def faulty_env(tmp_path_factory):
    return install(FIXTURES / "harness-faulty", tmp_path_factory.mktemp("faulty-site"))


@pytest.mark.slow
def test_a_register_hook_that_raises_leaves_out_that_kind_of_its_entry_point_with_a_warning(faulty_env):
    """The package's other entry point still registers its evaluators, and the warning says so
    (issue 26: it said the package's evaluators were disabled)."""
    result = run_cli("plugins", env=faulty_env)
    assert result.returncode == 0, result.stderr
    assert ("harness: warning: register_evaluators() of harness-faulty 0.2.0 (entry point 'faulty') failed "
            "(RuntimeError: evaluator table missing); the evaluator plugins of that entry point are left out") \
        in result.stderr.splitlines()
    listing = [line.split()[:3] for line in result.stdout.splitlines()]
    assert ["criterion", "boom", "harness-faulty"] in listing and ["evaluator", "accuracy", "prunebench"] in listing
    assert ["evaluator", "sturdy", "harness-faulty"] in listing


@pytest.mark.slow
def test_a_plugin_failing_mid_run_is_one_line_naming_it_and_the_run_is_kept(faulty_env, tmp_path):
    result = run_cli("bench", "--budget", "smoke", "--criterion", "boom", "--iterations", "2",
                     "--runs-dir", str(tmp_path), "--name", "b", env=faulty_env)
    assert result.returncode == 4, result.stderr
    *warnings, error = result.stderr.splitlines()  # the warning: this package's broken hook
    assert all(w.startswith("harness: warning:") for w in warnings) and "Traceback" not in result.stderr
    assert "criterion 'boom' (from harness-faulty 0.2.0) failed: IndexError: list index out of range " \
           "(at harness_faulty.py:13)" in error
    assert error.endswith(f"harness bench --resume {tmp_path / 'b'}")
    assert [r["iteration"] for r in records.read_iterations(tmp_path / "b")] == [0]  # what was written is kept


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--block", "env", "--builtin-only"])
def test_an_installed_plugin_can_be_blocked(faulty_env, how):
    if how == "--block":
        result = run_cli("--block", "harness-faulty", "plugins", env=faulty_env)
    elif how == "env":
        result = run_cli("plugins", env=faulty_env | {"HARNESS_BLOCK_PLUGINS": "faulty,faulty-evaluators"})
    else:
        result = run_cli("--builtin-only", "plugins", env=faulty_env)
    assert result.returncode == 0 and "harness-faulty" not in result.stdout + result.stderr
    assert any(line.split()[:2] == ["criterion", "kl"] for line in result.stdout.splitlines())


@pytest.mark.slow
def test_installing_a_plugin_with_options_keeps_cached_baselines(example_env, tmp_path):
    """The example package declares an evaluator option (--ece-bins): it is not this run's, so
    it neither enters the record nor the baseline's cache key."""
    cache = {"HARNESS_CACHE": str(tmp_path / "cache")}
    args = ["bench", "--budget", "smoke", "--iterations", "0", "--runs-dir", str(tmp_path)]
    first = run_cli(*args, "--name", "without", env=cache | {"HARNESS_BLOCK_PLUGINS": "example"})
    assert first.returncode == 0, first.stderr
    assert "baseline: reusing" not in first.stdout
    second = run_cli(*args, "--name", "with", env=cache | example_env)
    assert second.returncode == 0, second.stderr
    assert "baseline: reusing" in second.stdout
    assert "ece_bins" not in records.read_config(tmp_path / "with")["config"]["options"]
    third = run_cli(*args, "--name", "evaluated", "--evaluators", "ece", "--ece-bins", "5", env=cache | example_env)
    assert third.returncode == 0 and "baseline: reusing" in third.stdout, third.stderr
    assert records.read_config(tmp_path / "evaluated")["config"]["options"]["ece_bins"] == 5


@pytest.mark.slow
def test_the_conformance_kit_passes_the_example_package_in_its_own_tests(example_env):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(EXAMPLE / "tests")], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([example_env["PYTHONPATH"], str(ROOT)])),
                            cwd=EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "15 passed" in result.stdout
    checked = run_cli("check-plugin", "similarity", "rsa", env=example_env)
    assert checked.returncode == 0 and checked.stdout.strip() == \
        "ok similarity rsa (harness-example-plugins 0.1.0): conforms"


@pytest.mark.slow
def test_the_conformance_kit_fails_a_broken_metric_naming_each_problem(faulty_env):
    result = run_cli("check-plugin", "similarity", "sum", env=faulty_env)
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL similarity sum (harness-faulty")]
    assert any("maximum: identical inputs give" in f for f in failures)
    assert any("orthogonal invariance" in f for f in failures)
    assert any("different inputs: accepts representations with different numbers of rows" in f for f in failures)


@pytest.mark.slow
def test_the_example_method_decides_on_validation_data_and_records_its_numbers(example_env, tmp_path):
    result = run_cli("bench", "--budget", "smoke", "--method", "val-agreement", "--iterations", "2",
                     "--runs-dir", str(tmp_path), "--name", "va", env=example_env)
    assert result.returncode == 0, result.stderr
    for row in records.read_iterations(tmp_path / "va")[1:]:
        scores = [c["val_agreement"] for c in row["candidates"]]
        assert all(0 <= s <= 100 for s in scores)
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        assert row["decision"] == row["candidates"][best]["type"][0].upper()


@pytest.mark.slow
def test_a_structure_that_claims_every_model_never_displaces_a_familys_own(faulty_env, tmp_path):
    result = run_cli("bench", "--budget", "smoke", "--method", "layer-only", "--iterations", "2",
                     "--runs-dir", str(tmp_path), "--name", "l", env=faulty_env)
    assert result.returncode == 0, result.stderr
    assert records.read_result(tmp_path / "l")["decision_path"] == "LL"
    assert "claim type" not in result.stderr


@pytest.mark.slow
def test_a_criterion_that_cannot_score_a_structure_is_refused_before_training(faulty_env, tmp_path):
    cache = tmp_path / "cache"
    result = run_cli("bench", "--budget", "smoke", "--criterion", "picky", "--runs-dir", str(tmp_path / "runs"),
                     env=faulty_env | {"HARNESS_CACHE": str(cache)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "harness: error: criterion picky cannot score the layer units (resnet-block) of tiny-resnet; valid choices: ")
    assert not (tmp_path / "runs").exists() and not (cache / "baselines").exists()
    result = run_cli("bench", "--budget", "smoke", "--criterion", "picky", "--structures", "filter", "--iterations", "1",
                     "--runs-dir", str(tmp_path / "runs"), env=faulty_env | {"HARNESS_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_example_vgg_is_pruned_by_its_own_layer_structure_whatever_the_discovery_order(
        example_env, faulty_env, tmp_path):
    """harness-faulty's greedy-block claims every model as a layer structure; example-vgg names
    vgg-layer. Both orders of the two packages on the path give the same run."""
    paths = {"example first": [example_env, faulty_env], "faulty first": [faulty_env, example_env]}
    found = {}
    for label, envs in paths.items():
        env = {"PYTHONPATH": os.pathsep.join(e["PYTHONPATH"] for e in envs)}
        name = label.replace(" ", "-")
        result = run_cli("bench", "--model", "example-vgg", "--dataset", "digits", "--budget", "smoke",
                         "--scratch-epochs", "5", "--method", "layer-only", "--iterations", "2",
                         "--runs-dir", str(tmp_path), "--name", name, env=env)
        assert result.returncode == 0, result.stderr
        rows = records.read_iterations(tmp_path / name)
        found[label] = [r["removed"] for r in rows[1:]]
        assert records.read_result(tmp_path / name)["decision_path"] == "LL"
    assert found["example first"] == found["faulty first"]
    assert all(site.startswith("s") and "_" in site for removed in found["example first"] for site in removed)


@pytest.mark.slow
def test_a_structure_is_checked_on_a_model_it_prunes(example_env):
    """Issue 26: check-plugin checked structures on ResNet-20 only, so vgg-layer failed there
    while check_structure(VGGLayers(), vgg) passed from Python."""
    for args in (("structure", "vgg-layer"), ("structure", "vgg-layer", "--model", "example-vgg"),
                 ("structure", "resnet-filter", "--model", "example-vgg"), ("model", "example-vgg"),
                 ("dataset", "example-shapes"), ("method", "val-agreement")):
        result = run_cli("check-plugin", *args, env=example_env)
        assert result.returncode == 0 and result.stdout.startswith(f"ok {args[0]} {args[1]} ("), (args, result.stdout)
    refused = run_cli("check-plugin", "structure", "resnet-block", "--model", "example-vgg", env=example_env)
    assert refused.returncode == 1 and "does not support the model it is checked on (example-vgg)" in refused.stdout

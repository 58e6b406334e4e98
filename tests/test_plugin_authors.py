"""Issue 26: a package written against the plugin API of commit 7fb77f4
(tests/fixtures/harness-lab-plugins), installed beside today's prunebench: every command
works, and each of its four old habits behaves (a method named like a built-in one, a model
family option without ``affects_training``, a method that fine-tunes its candidates itself,
stub block methods on a width-only network)."""

import json

import pytest

from conftest import run_cli
from harness import records
from test_plugin_ecosystem import FIXTURES, install

SHADOW_WARNING = ("harness: warning: method 'accuracy-greedy' of harness-lab-plugins 0.1.0 has the name of "
                  "prunebench's own method; 'accuracy-greedy' stays prunebench's: choose harness-lab-plugins's as "
                  "harness-lab-plugins:accuracy-greedy (or give it the name with --block prunebench:accuracy-greedy)")
LAB_RUN = ("bench", "--model", "lab-wide", "--budget", "smoke", "--iterations", "2")


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory):
    return install(FIXTURES / "harness-lab-plugins", tmp_path_factory.mktemp("lab-site"))


def lab(*args, env, **kwargs):
    return run_cli(*args, env=env, **kwargs)


@pytest.mark.slow
def test_a_method_named_like_a_builtin_one_is_a_warning_and_every_command_works(lab_env, tmp_path):
    env = lab_env | {"HARNESS_CACHE": str(tmp_path / "cache")}
    listing = lab("plugins", env=env)
    assert listing.returncode == 0 and listing.stderr.strip() == SHADOW_WARNING
    rows = [line.split()[:3] for line in listing.stdout.splitlines()]
    assert ["method", "accuracy-greedy", "prunebench"] in rows
    assert ["method", "harness-lab-plugins:accuracy-greedy", "harness-lab-plugins"] in rows
    assert lab("bench", "--help", env=env).returncode == 0
    run = lab(*LAB_RUN, "--runs-dir", tmp_path / "runs", "--name", "r", env=env)
    assert run.returncode == 0, run.stderr
    assert records.read_config(tmp_path / "runs" / "r")["config"]["method"] == "cka"  # the default is untouched
    for args in (("leaderboard", "--runs", tmp_path / "runs", "--out", tmp_path / "board"),
                 ("export", tmp_path / "runs" / "r", "--format", "torchscript", "--check-samples", "8"),
                 ("check-plugin", "model", "lab-wide", "--input-shape", "1,8,8"),
                 ("check-plugin", "structure", "wide-layer"),
                 ("pretrain", "--model", "lab-wide", "--epochs", "0.2", "--out", tmp_path / "clean"),
                 *((command, "--help") for command in ("sweep", "decisions", "pretrain"))):
        result = lab(*args, env=env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert all(line == SHADOW_WARNING for line in result.stderr.splitlines()), result.stderr
    kit = lab("check-plugin", "method", "harness-lab-plugins:accuracy-greedy", env=env)
    assert kit.returncode == 1 and "Traceback" not in kit.stderr
    assert kit.stdout.startswith("FAIL method harness-lab-plugins:accuracy-greedy (harness-lab-plugins 0.1.0): with "
                                 "the candidates fine-tuned: asks to fine-tune the layer candidate again")


@pytest.mark.slow
def test_the_package_s_method_is_chosen_by_its_qualified_name_or_by_blocking_the_builtin_one(lab_env, tmp_path):
    """prunebench's accuracy-greedy records no similarity on its candidates; the lab's does."""
    env = lab_env | {"HARNESS_CACHE": str(tmp_path / "cache")}
    runs = tmp_path / "runs"
    chosen = lab(*LAB_RUN, "--method", "harness-lab-plugins:accuracy-greedy", "--runs-dir", runs, env=env)
    assert chosen.returncode == 0, chosen.stderr
    (run_dir,) = runs.iterdir()
    assert ":" not in run_dir.name  # a folder name
    assert records.read_config(run_dir)["config"]["method"] == "harness-lab-plugins:accuracy-greedy"
    assert all(c["similarity"] is not None for r in records.read_iterations(run_dir)[1:] for c in r["candidates"])

    builtin_blocked = lab("--block", "prunebench:accuracy-greedy", *LAB_RUN, "--method", "accuracy-greedy",
                          "--runs-dir", runs, "--name", "b", env=env)
    assert builtin_blocked.returncode == 0 and "warning" not in builtin_blocked.stderr, builtin_blocked.stderr
    assert all(c["similarity"] is not None for r in records.read_iterations(runs / "b")[1:] for c in r["candidates"])

    listing = lab("--block", "harness-lab-plugins:accuracy-greedy", "plugins", env=env)
    assert listing.returncode == 0 and listing.stderr == ""
    names = [line.split()[1] for line in listing.stdout.splitlines()[1:]]
    assert "lab-wide" in names and "wide-layer" in names and "harness-lab-plugins:accuracy-greedy" not in names


@pytest.mark.slow
def test_a_model_family_option_without_affects_training_keys_the_cached_baseline(lab_env, tmp_path):
    env = lab_env | {"HARNESS_CACHE": str(tmp_path / "cache")}
    args = ("bench", "--model", "lab-wide", "--budget", "smoke", "--iterations", "0", "--runs-dir", tmp_path)
    narrow = lab(*args, "--name", "narrow", env=env)
    wide = lab(*args, "--name", "wide", "--lab-width", "0.25", env=env)
    assert narrow.returncode == 0 and wide.returncode == 0, narrow.stderr + wide.stderr
    assert "baseline: reusing" not in wide.stdout
    params = {name: records.read_iterations(tmp_path / name)[0]["params"] for name in ("narrow", "wide")}
    fresh = lab(*args, "--name", "fresh", "--lab-width", "0.25", env=lab_env | {"HARNESS_CACHE": str(tmp_path / "c2")})
    assert fresh.returncode == 0, fresh.stderr
    assert params["wide"] == records.read_iterations(tmp_path / "fresh")[0]["params"] > params["narrow"]


@pytest.mark.slow
def test_a_method_that_fine_tunes_its_candidates_itself_judges_the_models_the_record_describes(lab_env, tmp_path):
    result = lab(*LAB_RUN, "--method", "harness-lab-plugins:accuracy-greedy", "--runs-dir", tmp_path, "--name", "m",
                 env=lab_env | {"HARNESS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    for row in records.read_iterations(tmp_path / "m")[1:]:
        for cand in row["candidates"]:  # the method's own similarity is the recorded one: trained once
            assert round(cand["similarity"], 6) == cand["similarities"]["cka"]


@pytest.mark.slow
def test_stub_block_methods_do_not_give_the_layer_candidates_to_the_builtin_block_structure(lab_env, tmp_path):
    result = lab(*LAB_RUN, "--runs-dir", tmp_path, "--name", "s", env=lab_env | {"HARNESS_CACHE": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr
    assert "claim type" not in result.stderr
    rows = records.read_iterations(tmp_path / "s")[1:]
    assert all([c["type"] for c in r["candidates"]] == ["layer", "filter"] for r in rows)
    layer_units = [json.dumps(r["removed"]) for r in rows if r["decision"] == "L"]
    assert all(site.startswith("l") for units in layer_units for site in json.loads(units))

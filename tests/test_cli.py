import pytest

from conftest import RESNET_CKPT, needs_shared, run_cli


@pytest.mark.parametrize("args, valid", [
    (["--model", "resnet21"], ["resnet110", "resnet20", "tiny-resnet"]),
    (["--dataset", "imagenet"], ["cifar10", "digits"]),
    (["--criterion", "gradnorm"], ["kl", "l1", "random", "taylor"]),
    (["--method", "magic"], ["cka", "random-walk", "layer-only", "filter-only", "layers-then-filters"]),
    (["--similarity", "cosine"], ["cka"]),
    (["--structures", "layer,channel"], ["layer", "filter"]),
])
def test_unknown_names_give_one_line_with_the_valid_choices(tmp_path, args, valid):
    result = run_cli("bench", *args, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: unknown ")
    choices = lines[0].split("valid choices: ")[1].split(", ")
    assert set(valid) <= set(choices)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written for bad input"


@pytest.mark.parametrize("args, message", [
    (["--iterations", "-1"], "--iterations -1 must be 0 or more"),
    (["--target-flops", "150"], "--target-flops 150.0 must be a percentage"),
    (["--calib-size", "1"], "--calib-size 1 must be at least 2"),
    (["--data-dir", "/nonexistent/cifar", "--dataset", "cifar10"], "data directory /nonexistent/cifar does not exist"),
    (["--checkpoint", "/nonexistent.th"], "checkpoint /nonexistent.th does not exist"),
    (["--resume", "/nonexistent-run"], "is not a run directory"),
])
def test_impossible_values_give_one_line(tmp_path, args, message):
    result = run_cli("bench", *args, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_corrupt_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"\x80\x02garbage")
    result = run_cli("bench", "--checkpoint", str(bad), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is corrupt" in result.stderr
    assert not (tmp_path / "runs").exists()


@needs_shared
def test_mismatched_checkpoint_exits_2(tmp_path):
    result = run_cli("bench", "--checkpoint", str(RESNET_CKPT / "resnet20-12fca82f.th"),
                     "--runs-dir", str(tmp_path / "runs"))  # default model: tiny-resnet on digits
    assert result.returncode == 2
    assert "does not match model tiny-resnet" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", [[], ["bench"], ["plugins"], ["leaderboard"], ["export"], ["sweep"], ["decisions"]])
def test_every_command_has_help(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_block_help_says_one_plugin_is_blocked_as_package_name():
    help_text = " ".join(run_cli("--help").stdout.split())
    assert "--block NAME Do not load this plugin entry point or package, or this one plugin as PACKAGE:NAME" in help_text


def test_plugins_lists_every_kind_with_its_package():
    out = run_cli("plugins").stdout
    for kind, name in [("model", "resnet56"), ("dataset", "digits"), ("structure", "resnet-filter"), ("evaluator", "accuracy"),
                       ("criterion", "kl"), ("similarity", "cka"), ("method", "cka")]:
        assert any(line.split()[:3] == [kind, name, "prunebench"] for line in out.splitlines()), (kind, name)


def test_leaderboard_without_records_is_an_error(tmp_path):
    result = run_cli("leaderboard", "--runs", str(tmp_path), "--out", str(tmp_path / "lb"))
    assert result.returncode == 2 and "no run records" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "--lr inf must be a finite number"),
    (["--epsilon", "nan"], "--epsilon nan must be a finite number"),
    (["--scratch-epochs", "inf"], "--scratch-epochs inf must be a finite number"),
    (["--name", "../x"], "--name '../x' must be a plain folder name"),
    (["--name", "/tmp/elsewhere"], "--name '/tmp/elsewhere' must be a plain folder name"),
])
def test_numbers_are_finite_and_names_stay_in_the_runs_folder(tmp_path, args, message):
    result = run_cli("bench", "--budget", "smoke", *args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("line, message", [
    ("iterations = 2.5", "--iterations 2.5 in"), ("iterations = true", "--iterations True in"),
    ("lr = inf", "--lr inf must be a finite number"), ("name = '../x'", "must be a plain folder name"),
])
def test_config_file_numbers_mean_what_they_say(tmp_path, line, message):
    config = tmp_path / "c.toml"
    config.write_text(line + "\n")
    result = run_cli("bench", "--config", str(config), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "runs").exists()

"""Issue 15: each core setting is declared once, in harness.settings; the options of
`harness bench`, BenchConfig's fields and the config-file checks all come from it."""

import dataclasses

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.config import BenchConfig
from harness.errors import HarnessError
from harness.settings import BENCH_SETTINGS, BUDGETS, NOT_RECORDED, RUN_SETTINGS, SEEDS


def test_benchconfig_fields_are_the_settings_with_their_defaults():
    fields = dataclasses.fields(BenchConfig)
    assert [f.name for f in fields] == [s.name for s in RUN_SETTINGS] + ["options"]
    cfg = BenchConfig()
    for s in RUN_SETTINGS:
        assert getattr(cfg, s.name) == (list(s.default) if s.type is list and s.default is not None else s.default)
    assert cfg.evaluators is not BenchConfig().evaluators, "every config has its own list"


def test_every_setting_is_an_option_of_bench_with_its_default():
    params = {p.name: p for p in main.commands["bench"].params}
    for s in (*RUN_SETTINGS, SEEDS):
        assert s.flag in params[s.name].opts
        assert params[s.name].default == (None if s.type is list else s.default), s.name


def test_the_budget_decides_what_its_presets_fill_and_the_help_says_so():
    for s in RUN_SETTINGS:
        if s.name in BUDGETS["quick"]:
            assert s.default is None and "[default: the budget's, " in s.help_text(), s.name


@pytest.mark.parametrize("line, message", [
    ("record_decisions = 1", "--record-decisions 1 in c.toml: must be true or false"),
    ("data_dir = ['a']", "--data-dir ['a'] in c.toml: must be a path"),
    ("seeds = 0", "--seeds 0 must be at least 1"),
    ("optimizer = 'x'", "--optimizer 'x' in c.toml: 'x' is not one of 'sgd', 'adamw'."),
])
def test_config_file_values_are_checked_by_their_setting(tmp_path, monkeypatch, line, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(line + "\n")
    result = CliRunner().invoke(main, ["bench", "--config", "c.toml"])
    assert result.exit_code == 2 and result.stderr == f"harness: error: {message}\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("values, message", [
    (dict(budget="nope"), "unknown --budget 'nope'; valid choices: smoke, quick, paper"),
    (dict(budget=5), "--budget 5 must be of type str"),
    (dict(evaluators=("fgsm", 1)), "--evaluators ('fgsm', 1) must be of type list[str]"),
    (dict(distill_temperature=0), "--distill-temperature 0 must be positive"),
    (dict(device="tpu"), "unknown --device 'tpu'; valid choices: auto, cpu, cuda or cuda:N"),
    (dict(precision="fp16"), "unknown --precision 'fp16'; valid choices: auto, fp32, bf16"),
])
def test_checked_checks_every_setting(values, message):
    with pytest.raises(HarnessError) as exc:
        BenchConfig(**values).checked()
    assert str(exc.value) == message


def test_a_whole_number_from_a_file_and_the_same_number_typed_are_one_run():
    from harness.baseline import content_key

    from_file = BenchConfig(scratch_epochs=15, lr=1, budget="smoke").checked()
    typed = BenchConfig(scratch_epochs=15.0, lr=1.0, budget="smoke").checked()
    assert isinstance(from_file.scratch_epochs, float) and from_file.to_dict() == typed.to_dict()
    # the cached baseline's key is a repr: 15 and 15.0 used to train the same baseline twice
    assert content_key(from_file.scratch_epochs, from_file.lr) == content_key(typed.scratch_epochs, typed.lr)


def test_a_resolved_configuration_is_frozen():
    from harness.resolve import resolve

    run = resolve(BenchConfig(budget="smoke"))
    assert run.config.iterations == 2 and run.config.val_size is None  # the data's size decides it when it loads
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.config.iterations = 3


def test_a_config_files_values_are_read_by_their_own_setting():
    assert BENCH_SETTINGS["structures"].from_file(["layer", "filter"], "c.toml") == "layer,filter"
    assert BENCH_SETTINGS["lr"].from_file(1, "c.toml") == 1.0
    with pytest.raises(HarnessError, match=r"^--iterations 2\.5 in c\.toml: must be a whole number$"):
        BENCH_SETTINGS["iterations"].from_file(2.5, "c.toml")


def test_a_setting_an_old_record_lacks_has_the_value_runs_had_before_it():
    old = BenchConfig.from_dict({"model": "tiny-resnet"})
    declared = {s.name: s.old_records for s in RUN_SETTINGS if s.old_records is not NOT_RECORDED}
    assert {name: getattr(old, name) for name in declared} == declared == {
        "round_to": 1, "val_size": 0, "record_decisions": False, "batch_size": 128, "precision": "fp32", "distill": 0.0,
        "cuda_graphs": "off"}


def test_the_old_name_of_checked_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"BenchConfig\.resolved\(\) is deprecated"):
        cfg = BenchConfig(budget="smoke").resolved()
    assert cfg == BenchConfig(budget="smoke").checked()

"""Issue 25's renames and later moves: each old public name still works and says, with a DeprecationWarning,
what replaces it."""

import importlib

import pytest

from harness import loop, measure, records, registry, schema, train_step


@pytest.mark.parametrize("module, old, new", [
    ("harness.bench", "check_decision", loop.run_oracle),
    ("harness.bench", "stop_reason", loop.stop_reason),
    ("harness.bench", "final_iteration", loop.final_iteration),
    ("harness.plugins", "get", registry.get),
    ("harness.plugins", "all_options", registry.all_options),
    ("harness.models", "count_flops", measure.count_flops),
    ("harness.schema", "baseline_iteration", schema.unpruned_iteration),
    ("harness.training", "crop_flip", train_step.crop_flip),
    ("harness.training", "distillation_loss", train_step.distillation_loss),
])
def test_an_old_name_gives_its_replacement_with_a_warning(module, old, new):
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated; use "):
        assert getattr(importlib.import_module(module), old) is new


def test_the_loops_old_name_keeps_its_calling_convention(monkeypatch):
    """prune(s, model, rows) appended to the caller's rows and returned the stop reason."""
    from harness import bench

    monkeypatch.setattr(loop, "iterate", lambda s, model, rows: ("done", [*rows, {"iteration": 1}]))
    rows = [{"iteration": 0}]
    with pytest.warns(DeprecationWarning, match="harness.bench.prune is deprecated"):
        assert bench.prune(None, None, rows) == "done"
    assert rows == [{"iteration": 0}, {"iteration": 1}]


def test_the_old_resolution_step_gives_the_configuration():
    from harness import bench
    from harness.config import BenchConfig

    with pytest.warns(DeprecationWarning, match="harness.bench.resolve is deprecated"):
        cfg = bench.resolve(BenchConfig(budget="smoke"))
    assert isinstance(cfg, BenchConfig) and cfg.iterations == 2


def test_run_record_kept_is_through_final(tmp_path):
    records.append_iteration(tmp_path, {"iteration": 0})
    records.atomic_write_json(tmp_path / records.CONFIG_FILE, {"config": {"dataset": "digits"}})
    run = records.RunRecord.read(tmp_path)
    with pytest.warns(DeprecationWarning, match="RunRecord.kept is deprecated"):
        assert run.kept == run.through_final == [{"iteration": 0}]

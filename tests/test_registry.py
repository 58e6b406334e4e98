"""Issue 25: plugins registered as classes or factories and built for each run, a registry per
invocation, and a core that stands without its built-in plugins."""

import warnings

import pytest

from conftest import run_cli
from harness import hookimpl, records, registry
from harness.api import Criterion
from harness.errors import HarnessError

ESSENTIAL = ["models", "datasets", "structures", "criteria", "similarity", "methods"]


@pytest.mark.parametrize("blocked", [*ESSENTIAL, "prunebench"])
def test_an_entry_point_the_harness_cannot_run_without_is_refused_in_one_line(blocked, tmp_path):
    result = run_cli("--block", blocked, "bench", "--budget", "smoke", "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"harness: error: cannot block {blocked}: the harness cannot run without")
    assert not (tmp_path / "runs").exists()


def test_with_the_evaluators_blocked_a_run_has_the_cores_measurements(tmp_path):
    listing = run_cli("--block", "evaluators", "plugins").stdout
    evaluators = [line.split()[1] for line in listing.splitlines() if line.split()[::2][:2] == ["evaluator", "prunebench"]]
    assert evaluators == ["accuracy", "flops"], "the core's own evaluators, which no --block removes"
    result = run_cli("--block", "evaluators", "bench", "--budget", "smoke", "--iterations", "1",
                     "--runs-dir", tmp_path, "--name", "b")
    assert result.returncode == 0, result.stderr
    rows = records.read_iterations(tmp_path / "b")
    assert len(rows) == 2 and all({"accuracy", "flops", "params", "val_accuracy"} <= set(r) for r in rows)


def test_each_invocation_has_its_own_registry():
    blocked = run_cli("--block", "evaluators", "plugins").stdout
    again = run_cli("plugins").stdout  # the same process: nothing of the blocking stays behind
    assert "fgsm" not in blocked and "fgsm" in again
    with registry.activated(registry.Registry(blocked=["evaluators"], builtin_only=True)):
        assert sorted(registry.registry("evaluator")) == ["accuracy", "flops"]
    assert "fgsm" in registry.registry("evaluator")


def test_a_run_builds_fresh_objects_from_the_registered_classes():
    registered = registry.get("criterion", "kl")
    first, second = registry.build("criterion", "kl"), registry.build("criterion", "kl")
    assert type(first) is type(registered) and len({id(registered), id(first), id(second)}) == 3


class Stateful(Criterion):
    name = "stateful"

    def __init__(self):
        self.seen = []

    def scores(self, model, structure, units, ctx):
        return [0.0] * len(units)


def test_a_registered_object_still_works_copied_for_each_run_with_a_deprecation_warning():
    class OldPackage:  # a plugin as packages wrote them before factories
        @staticmethod
        @hookimpl
        def register_criteria():
            return [Stateful()]

    reg = registry.Registry(extra={"an-old-package": OldPackage})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entry = reg.entry("criterion", "stateful")
    assert any(issubclass(w.category, DeprecationWarning) and "return its class or a factory" in str(w.message)
               for w in caught)
    assert entry.package == "an-old-package"
    copy = entry.build()
    assert type(copy) is Stateful and copy is not entry.obj and copy.seen is not entry.obj.seen


def test_what_a_hook_returns_must_be_a_class_a_factory_or_a_plugin_object():
    with pytest.raises(HarnessError, match="return plugin classes or factories"):
        registry.factory_of(42, "criterion", "some-package")
    build, is_object = registry.factory_of(Stateful, "criterion", "some-package")
    assert build is Stateful and not is_object

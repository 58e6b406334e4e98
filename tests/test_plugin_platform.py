"""The plugin platform as an author meets it: per-run plugin state, guarded calls, blocking."""

import pytest

from harness import plugins
from harness.bench import CORE_EVALUATORS, resolve
from harness.config import BenchConfig
from harness.errors import HarnessError, PluginError


def rbf_run(sigma: str):
    return resolve(BenchConfig(budget="smoke", similarity="rbf-cka", options={"rbf_cka_sigma": sigma}))


def test_each_run_configures_its_own_copies_of_its_plugins():
    registered = plugins.get("similarity", "rbf-cka")
    default = registered.sigma_fraction
    a, b = rbf_run("0.25"), rbf_run("2.0")  # a sweep resolves every run before the first starts
    assert registered.sigma_fraction == default, "resolving a run must not configure the shared plugin"
    run_a, run_b = plugins.for_run(a, list(CORE_EVALUATORS)), plugins.for_run(b, list(CORE_EVALUATORS))
    assert plugins.unwrap(run_a.similarity).sigma_fraction == 0.25
    assert plugins.unwrap(run_b.similarity).sigma_fraction == 2.0
    assert run_a.similarities["rbf-cka"] is run_a.similarity  # configured once, used by the method and the records
    assert plugins.unwrap(run_a.similarity) is not registered and registered.sigma_fraction == default


class Flaky:
    name = "flaky"
    label = "kept"

    def scores(self, *args):
        raise ZeroDivisionError("division by zero")

    def refuse(self):
        raise HarnessError("bad input stays as it is")


def test_a_guarded_plugin_names_itself_when_it_fails_and_passes_harness_errors_through():
    guarded = plugins.Guarded(Flaky(), "criterion")
    assert guarded.name == "flaky" and guarded.label == "kept"
    with pytest.raises(PluginError, match=r"^criterion 'flaky' \(from an unregistered plugin\) failed: "
                                          r"ZeroDivisionError: division by zero$"):
        guarded.scores(None)
    with pytest.raises(HarnessError, match="^bad input stays as it is$"):
        guarded.refuse()
    kl = plugins.Guarded(plugins.get("criterion", "kl"), "criterion")
    assert "(from prunebench" in kl._label

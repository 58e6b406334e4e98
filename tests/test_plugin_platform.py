"""The plugin platform as an author meets it: per-run plugin state, guarded calls, blocking."""

import pytest

from harness import registry, runplugins
from harness.resolve import ResolvedRun, resolve
from harness.config import BenchConfig
from harness.errors import HarnessError, PluginError


def rbf_run(sigma: str):
    return resolve(BenchConfig(budget="smoke", similarity="rbf-cka", options={"rbf_cka_sigma": sigma}))


def test_each_run_configures_its_own_copies_of_its_plugins():
    registered = registry.get("similarity", "rbf-cka")
    default = registered.sigma_fraction
    a, b = rbf_run("0.25"), rbf_run("2.0")  # a sweep resolves every run before the first starts
    assert registered.sigma_fraction == default, "resolving a run must not configure the shared plugin"
    run_a, run_b = a.plugins, b.plugins
    assert runplugins.unwrap(run_a.similarity).sigma_fraction == 0.25
    assert runplugins.unwrap(run_b.similarity).sigma_fraction == 2.0
    assert run_a.similarities["rbf-cka"] is run_a.similarity  # configured once, used by the method and the records
    assert runplugins.unwrap(run_a.similarity) is not registered and registered.sigma_fraction == default


class Flaky:
    name = "flaky"
    label = "kept"

    def scores(self, *args):
        raise ZeroDivisionError("division by zero")

    def refuse(self):
        raise HarnessError("bad input stays as it is")


def test_a_guarded_plugin_names_itself_when_it_fails_and_passes_harness_errors_through():
    guarded = runplugins.Guarded(Flaky(), "criterion")
    assert guarded.name == "flaky" and guarded.label == "kept"
    with pytest.raises(PluginError, match=r"^criterion 'flaky' \(from an unregistered plugin\) failed: "
                                          r"ZeroDivisionError: division by zero \(at test_plugin_platform.py:\d+\)$"):
        guarded.scores(None)
    with pytest.raises(HarnessError, match="^bad input stays as it is$"):
        guarded.refuse()
    kl = runplugins.Guarded(registry.get("criterion", "kl"), "criterion")
    assert "(from prunebench" in kl._label


class Claims:
    """A structure that claims every model, as a careless plugin's would."""

    def __init__(self, name, priority=0, type="layer"):
        self.name, self.priority, self.type = name, priority, type

    def supports(self, model):
        return True


def test_the_structure_of_a_type_does_not_depend_on_discovery_order(capsys):
    from harness.structure_types import choose_structures

    a, b, high = Claims("a-block"), Claims("b-block"), Claims("z-block", priority=5)
    for order in ([a, b], [b, a]):
        assert choose_structures(order, ["layer"], None, {})["layer"] is a
    assert "structures a-block, b-block all claim type 'layer' on this model with the same priority; " \
           "using a-block" in capsys.readouterr().err
    for order in ([a, b, high], [high, b, a]):
        assert choose_structures(order, ["layer"], None, {})["layer"] is high
        assert choose_structures(order, ["layer"], None, {"layer": "b-block"})["layer"] is b  # the family's own
    assert capsys.readouterr().err == ""


def test_builtin_families_name_their_structures():
    for name in ("resnet20", "tiny-resnet", "tabular-transformer", "timm:", "torchvision:"):
        family = registry.get("model", name)
        assert set(family.default_structures) <= set(family.structure_names), name
        assert all(registry.get("structure", s).type == t for t, s in family.structure_names.items())


def test_a_resumed_co2_run_keeps_its_country(tmp_path):
    """The case that lost --country: a sweep resolves its runs first (the last one with the
    default), then resumes an interrupted one, which must measure under its own country."""
    from harness import records
    from harness.session import open_session

    fra = resolve(BenchConfig(budget="smoke", evaluators=["co2"], options={"country": "FRA"},
                              runs_dir=str(tmp_path)))
    resolve(BenchConfig(budget="smoke", evaluators=["co2"]))  # another run of the sweep, default country
    stored = BenchConfig.from_dict(fra.config.to_dict())  # what --resume reads back from config.json
    session = open_session(ResolvedRun.from_record(stored), tmp_path / "run", progress=False)
    assert runplugins.unwrap(session.plugins.evaluators["co2"])._country == "FRA"
    assert runplugins.unwrap(session.evaluators[0])._country == "FRA"
    assert not records.read_iterations(tmp_path / "run")

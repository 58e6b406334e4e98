"""Every registered plugin, outside ones included, passes the conformance kit (harness.testing)
that plugin authors run on theirs; the kit itself catches broken plugins."""

import pytest
import torch

from harness import registry
from harness.api import Similarity
from harness.testing import check_criterion, check_evaluator, check_similarity, check_structure, _default_model


@pytest.mark.parametrize("name", sorted(registry.registry("criterion")))
def test_every_criterion_conforms(name):
    assert check_criterion(registry.get("criterion", name)) == []


@pytest.mark.parametrize("name", sorted(n for n, s in registry.registry("structure").items()
                                        if s.supports(_default_model())))
def test_every_structure_of_a_resnet_conforms(name):
    assert check_structure(registry.get("structure", name)) == []


@pytest.mark.parametrize("name", ["accuracy", "flops"])
def test_the_core_evaluators_conform(name):
    assert check_evaluator(registry.get("evaluator", name)) == []


class Unbounded(Similarity):
    name = "unbounded"

    def __call__(self, x, y):
        x, y = self.matrices(x, y)
        return float((x[:, :1] * y[:, :1]).sum())  # neither bounded nor invariant


class NoisyScores:
    name = "noisy"

    def scores(self, model, structure, units, ctx):
        return [float(torch.rand(1)) for _ in units]  # ignores the seed


class Leaky:
    """A structure whose ablation forgets to restore what it changed."""

    name, type = "leaky", "filter"

    def supports(self, model):
        return True

    def units(self, model):
        return registry.get("structure", "resnet-filter").units(model)

    def ablate(self, model, units):
        import contextlib

        model.conv1.weight.data.zero_()
        return contextlib.nullcontext()

    def remove(self, model, units):
        return model

    def weights(self, model, unit):
        return []


def test_the_kit_names_what_a_broken_plugin_gets_wrong():
    problems = check_similarity(Unbounded())
    assert any(p.startswith("maximum:") for p in problems) and any(p.startswith("orthogonal") for p in problems)
    assert check_criterion(NoisyScores()) == ["scores on resnet-block: the same seed gave different scores",
                                             "scores on resnet-filter: the same seed gave different scores"]
    problems = check_structure(Leaky())
    assert "ablate: ablation did not restore the parameters exactly" in problems
    assert "remove: remove() must return a new network" in problems
    assert any(p.startswith("weights: no weight tensors") for p in problems)

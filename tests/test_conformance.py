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


# ---------------------------------------------------------------- issue 26: the kit for every kind
from harness.api import DataSplits, Method, ModelFamily, TensorSplit  # noqa: E402
from harness.testing import check_dataset, check_method, check_model_family  # noqa: E402


@pytest.mark.parametrize("name", ["cka", "random-walk", "layer-only", "filter-only", "layers-then-filters",
                                  "accuracy-greedy", "loss-greedy"])
def test_every_builtin_method_conforms(name):
    assert check_method(registry.get("method", name)) == []


@pytest.mark.parametrize("name, shape", [("resnet20", (3, 32, 32)), ("tiny-resnet", (1, 8, 8)),
                                         ("tabular-transformer", (16,)), ("torchvision:resnet18", (3, 32, 32))])
def test_builtin_model_families_conform(name, shape):
    assert check_model_family(registry.get("model", name), name, input_shape=shape) == []


@pytest.mark.parametrize("name", ["digits", "breast-cancer"])
def test_builtin_offline_data_sets_conform(name, tmp_path):
    assert check_dataset(registry.get("dataset", name), cache_dir=str(tmp_path)) == []


class PeeksAtTest(Method):
    """Decides on test accuracy, trains a candidate the loop trained already, returns a copy."""

    name = "peeks"

    def select(self, step, candidates):
        import copy

        for cand in candidates:
            step.finetune(cand.model, step.config.candidate_epochs)
        best = max(candidates, key=lambda c: float(step.predict(c.model, step.data.test).argmax(1).float().mean()))
        return copy.copy(best)


def test_the_kit_names_what_a_broken_method_gets_wrong():
    problems = check_method(PeeksAtTest())
    fine_tuned, not_yet = problems[0], problems[1]
    assert fine_tuned.startswith("with the candidates fine-tuned: asks to fine-tune the layer candidate again")
    assert "select() returned Candidate, not one of the candidates it was given" in fine_tuned
    assert "read the test split (step.data.test): decisions read step.data.val" in fine_tuned
    assert not_yet.startswith("with the candidates not yet fine-tuned:") and "asks to fine-tune" not in not_yet


class Forgetful(ModelFamily):
    """A spec that does not name its model, and one that forgets the widths pruning changed."""

    name = "forgetful"

    def __init__(self, names_model=True):
        self.names_model = names_model

    def default_arch(self, name, num_classes, input_shape):
        return registry.get("model", "resnet20").default_arch("resnet20", num_classes, input_shape) | (
            {"model": name} if self.names_model else {"model": "resnet20", "depth": 20})

    def build(self, arch):
        fresh = registry.get("model", "resnet20").default_arch("resnet20", arch["num_classes"], (3, 32, 32))
        model = registry.get("model", "resnet20").build(fresh | {"model": arch["model"]})  # widths ignored
        return model


def test_the_kit_names_what_a_broken_model_family_gets_wrong():
    assert check_model_family(Forgetful(names_model=False)) == [
        "spec: the spec must be a dict holding \"model\": 'forgetful' (surgery and reloading build by it)"]
    problems = check_model_family(Forgetful())
    assert len(problems) == 1 and problems[0].startswith(
        "replay: pruned by resnet-filter, the smaller spec builds no smaller network (RuntimeError: surgery bug:")


class Leaking:
    """Calibration samples taken from the training split, labels as int32."""

    name = "leaking"

    def load(self, data_dir, cache_dir, calib_size):
        g = torch.Generator().manual_seed(0)
        train = TensorSplit(torch.rand(200, 3, 8, 8, generator=g), torch.randint(0, 4, (200,), generator=g))
        calib = TensorSplit(train.images[:calib_size], train.labels[:calib_size])
        test = TensorSplit(torch.rand(50, 3, 8, 8, generator=g), torch.randint(0, 4, (50,), generator=g).int())
        return DataSplits(train, calib, test, (0.5,) * 3, (0.25,) * 3, 4)


def test_the_kit_names_what_a_broken_data_set_gets_wrong(tmp_path):
    assert check_dataset(Leaking(), cache_dir=str(tmp_path)) == [
        "shapes: the test split holds torch.float32 inputs and torch.int32 labels, not float inputs and int64 labels"]

    class LeakingWithGoodLabels(Leaking):
        def load(self, data_dir, cache_dir, calib_size):
            data = super().load(data_dir, cache_dir, calib_size)
            data.test.labels = data.test.labels.long()
            return data

    assert check_dataset(LeakingWithGoodLabels(), cache_dir=str(tmp_path)) == [
        "disjoint: 64 of the 64 calib samples are in the training split too"]


def test_a_kind_without_a_check_of_its_own_is_checked_against_its_interface(monkeypatch):
    """A new kind (a row of harness.kinds without ``conformance``) has `harness check-plugin`:
    a name, the members its interface leaves to plugins, distinct options, configure."""
    import dataclasses

    from conftest import run_cli
    from harness import kinds
    from harness.api import Method, Option
    from harness.testing import check_for, check_interface

    assert check_interface(registry.build("method", "cka"), "method") == []

    class Unfinished(Method):  # select is left to plugins
        options = (Option("depth", 1, "d"), Option("depth", 2, "d"))

        def configure(self, options):
            raise ValueError("no configuration")

    assert check_interface(Unfinished(), "method") == [
        "name: a plugin needs a name (non-empty text)",
        "interface: does not implement select (harness.api.Method)",
        "options: declares an option twice: ['depth']",
        "configure: raised ValueError: no configuration"]
    assert check_interface(NoisyScores(), "criterion") == [], "a plugin need not subclass its interface"
    monkeypatch.setitem(kinds.BY_NAME, "method", dataclasses.replace(kinds.BY_NAME["method"], conformance=None))
    assert check_for("method").func is check_interface
    result = run_cli("check-plugin", "method", "cka")
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stdout + result.stderr

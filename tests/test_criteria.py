import pytest
import torch

from conftest import seeded_resnet
from harness import registry
from harness.api import CriterionContext

LAYER = registry.get("structure", "resnet-block")
FILTER = registry.get("structure", "resnet-filter")
KL = registry.get("criterion", "kl")


def ctx(seed=0):
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return CriterionContext(x, torch.zeros(64, dtype=torch.long), seed)


class Opaque(torch.nn.Module):
    """The same network without forward_to/forward_from: forces whole-network forwards."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.arch = inner, inner.arch

    def forward(self, x):
        return self.inner(x)

    def blocks(self):
        return self.inner.blocks()

    def removable_blocks(self):
        return self.inner.removable_blocks()

    def residual_bn(self, site):
        return self.inner.residual_bn(site)

    def width_sites(self):
        return self.inner.width_sites()


def test_kl_is_zero_for_a_dead_filter_and_positive_otherwise():
    model = seeded_resnet()
    bn = dict(model.blocks())["layer2.1"].bn1
    bn.weight.data[3] = 0
    bn.bias.data[3] = 0
    units = [u for u in FILTER.units(model) if u.site == "layer2.1.conv1"]
    scores = KL.scores(model, FILTER, units, ctx())
    assert scores[3] == pytest.approx(0.0, abs=1e-12)
    assert min(s for i, s in enumerate(scores) if i != 3) > 0


def test_kl_prefix_shortcut_gives_the_same_scores_as_full_forwards():
    model = seeded_resnet()
    units = FILTER.units(model)[::23] + []
    fast = KL.scores(model, FILTER, units, ctx())
    slow = KL.scores(Opaque(model), FILTER, units, ctx())
    assert fast == pytest.approx(slow, rel=1e-6, abs=1e-12)
    layer_units = LAYER.units(model)
    assert KL.scores(model, LAYER, layer_units, ctx()) == pytest.approx(
        KL.scores(Opaque(model), LAYER, layer_units, ctx()), rel=1e-6)


def test_kl_ranks_blocks_by_how_much_they_change_the_output():
    model = seeded_resnet()
    blocks = dict(model.blocks())
    blocks["layer1.1"].bn2.weight.data *= 1e-3  # nearly silent residual branch
    blocks["layer1.1"].bn2.bias.data *= 1e-3
    scores = dict(zip([u.site for u in LAYER.units(model)], KL.scores(model, LAYER, LAYER.units(model), ctx())))
    assert min(scores, key=scores.get) == "layer1.1"


def test_l1_prefers_small_weights_and_is_size_normalised():
    model = seeded_resnet()
    block = dict(model.blocks())["layer3.1"]
    block.conv1.weight.data[5] *= 0.01
    units = FILTER.units(model)
    scores = dict(zip([u.key for u in units], registry.get("criterion", "l1").scores(model, FILTER, units, ctx())))
    assert min(scores, key=scores.get) == "layer3.1.conv1:5"
    expected = float(block.conv1.weight[7].detach().abs().mean())
    assert scores["layer3.1.conv1:7"] == pytest.approx(expected, rel=1e-6)


def test_random_is_seeded():
    model = seeded_resnet()
    units = FILTER.units(model)
    rnd = registry.get("criterion", "random")
    assert rnd.scores(model, FILTER, units, ctx(1)) == rnd.scores(model, FILTER, units, ctx(1))
    assert rnd.scores(model, FILTER, units, ctx(1)) != rnd.scores(model, FILTER, units, ctx(2))


TAYLOR = registry.get("criterion", "taylor")


def labelled_ctx():
    g = torch.Generator().manual_seed(3)
    return CriterionContext(torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g), 0)


def test_taylor_equals_gradient_times_the_ablated_parameters():
    model = seeded_resnet()
    c = labelled_ctx()
    units = [u for u in FILTER.units(model) if u.site == "layer3.0.conv1"][:6]
    scores = TAYLOR.scores(model, FILTER, units, c)
    bn = dict(model.blocks())["layer3.0"].bn1
    loss = torch.nn.functional.cross_entropy(model(c.calib_inputs), c.calib_labels)
    g_w, g_b = torch.autograd.grad(loss, [bn.weight, bn.bias])
    for unit, score in zip(units, scores):
        i = unit.index
        expected = abs(float(g_w[i] * bn.weight[i] + g_b[i] * bn.bias[i]))  # delta = -theta
        assert score == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_taylor_is_zero_for_a_dead_filter_and_leaves_the_model_unchanged():
    model = seeded_resnet()
    bn = dict(model.blocks())["layer2.1"].bn1
    bn.weight.data[3] = 0
    bn.bias.data[3] = 0
    state = {k: v.clone() for k, v in model.state_dict().items()}
    units = [u for u in FILTER.units(model) if u.site == "layer2.1.conv1"]
    scores = TAYLOR.scores(model, FILTER, units, labelled_ctx())
    assert scores[3] == 0.0 and min(s for i, s in enumerate(scores) if i != 3) > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    layer_scores = TAYLOR.scores(model, LAYER, LAYER.units(model), labelled_ctx())
    assert len(layer_scores) == 7 and all(s >= 0 for s in layer_scores)


# ---------------------------------------------------------------- KL, many ablations per forward
import warnings  # noqa: E402

from harness_plugins.criteria import kl_batched_by_default, kl_scores_batched, kl_scores_loop  # noqa: E402


def assert_same_scores(batched, loop):
    """Within 1e-6: absolute for small scores, relative for large ones."""
    assert len(batched) == len(loop)
    worst = max(abs(b - a) / max(1.0, abs(a)) for a, b in zip(loop, batched))
    assert worst <= 1e-6, worst


def batched_without_fallback(*args, **kwargs):
    """kl_scores_batched, failing the test if any group fell back to the loop (the
    comparison would then check nothing)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = kl_scores_batched(*args, **kwargs)
    fallbacks = [str(w.message) for w in caught if str(w.message).startswith("kl: cannot batch")]
    assert not fallbacks, fallbacks
    return scores


def unsaturated_resnet():
    """seeded_resnet with its classifier scaled so that the logits have a standard
    deviation of about 2: a saturated softmax (one-hot outputs) makes every KL tiny."""
    model = seeded_resnet()
    with torch.no_grad():
        scale = 2.0 / float(model(ctx().calib_inputs[:32]).std())
        model.linear.weight.mul_(scale)
        model.linear.bias.mul_(scale)
    return model


def resnet_filter_units(model):
    by_site = {}
    for u in FILTER.units(model):
        by_site.setdefault(u.site, []).append(u)
    # one whole site, parts of others, from the first, a middle and the last block
    return by_site["layer1.0.conv1"] + by_site["layer2.1.conv1"][:11] + by_site["layer3.2.conv1"][-7:]


def test_kl_batched_equals_the_loop_on_resnet_filters_and_layers():
    model = unsaturated_resnet()
    bn = dict(model.blocks())["layer1.0"].bn1
    bn.weight.data[5] = 0  # a dead filter: its ablation changes nothing, inside a batched chunk
    bn.bias.data[5] = 0
    x = ctx().calib_inputs[:32]
    units = resnet_filter_units(model)
    loop = kl_scores_loop(model, FILTER, units, x)
    # 6 ablations per forward: sites split into several chunks, some of them short
    batched = batched_without_fallback(model, FILTER, units, x, images=6 * len(x))
    assert_same_scores(batched, loop)
    assert batched[5] == pytest.approx(0.0, abs=1e-12) and min(batched[:5]) > 1e-6
    layers = LAYER.units(model)
    loop = kl_scores_loop(model, LAYER, layers, x)
    assert_same_scores(batched_without_fallback(model, LAYER, layers, x, min_batch=1), loop)  # vmap of one
    assert_same_scores(kl_scores_batched(model, LAYER, layers, x), loop)  # single units: the loop itself
    assert max(loop) > 0.1  # not degenerate


def test_kl_batched_equals_the_loop_without_forward_from():
    model = unsaturated_resnet()
    x = ctx().calib_inputs[:16]
    units = FILTER.units(model)[::37]
    opaque = Opaque(model)
    assert not hasattr(opaque, "forward_from")
    assert_same_scores(batched_without_fallback(opaque, FILTER, units, x, min_batch=1),
                       kl_scores_loop(model, FILTER, units, x))


@pytest.mark.parametrize("kind", ["vit", "tabular"])
def test_kl_batched_equals_the_loop_on_transformer_structures(kind):
    from test_transformers import BLOCK, HEAD, MODELS, NEURON, inputs

    model, shape = MODELS[kind]()
    x = inputs(shape, n=16)
    for structure in (BLOCK, HEAD, NEURON):
        units = structure.units(model)
        if structure is NEURON:
            units = units[:20] + units[-9:]
        loop = kl_scores_loop(model, structure, units, x)
        assert_same_scores(batched_without_fallback(model, structure, units, x, images=8 * len(x), min_batch=1), loop)
        assert len(set(loop)) > 1 and max(loop) > 1e-4


def test_kl_batched_leaves_parameters_and_modes_exactly_as_they_were():
    model = unsaturated_resnet().train()
    model.layer2.eval()  # a submodule's own mode survives too
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = ctx().calib_inputs[:16]
    units = FILTER.units(model)[::29]
    batched = kl_scores_batched(model, FILTER, units, x, images=4 * len(x))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.training and model.layer1.training and not model.layer2.training
    model.eval()  # scores are those of the model in eval mode, whatever its mode before
    assert_same_scores(batched, kl_scores_loop(model, FILTER, units, x))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


class Unbatchable(Opaque):
    """A forward that reads its parameters' values in Python: vmap cannot run it."""

    def forward(self, x):
        scale = 1.0 + 0.0 * sum(p.sum().item() for p in self.parameters())
        return self.inner(x) * scale


def test_kl_batched_falls_back_to_the_loop_when_vmap_fails():
    model = unsaturated_resnet()
    x = ctx().calib_inputs[:16]
    units = FILTER.units(model)[::41]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="kl: cannot batch"):
        scores = kl_scores_batched(Unbatchable(model), FILTER, units, x, min_batch=1)
    assert scores == kl_scores_loop(Unbatchable(model), FILTER, units, x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_kl_criterion_batches_on_cuda_only():
    assert kl_batched_by_default("cuda") and kl_batched_by_default(torch.device("cuda", 0))
    assert not kl_batched_by_default("cpu")


class OutOfMemoryWhenBatched(Opaque):
    """Runs out of memory when more than two ablations run at once."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sizes = []

    def forward(self, x):
        from torch._C._functorch import get_unwrapped, is_batchedtensor

        for p in self.parameters():
            if is_batchedtensor(p):
                size = get_unwrapped(p).shape[0]
                self.sizes.append(size)
                if size > 2:
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
                break
        return self.inner(x)


def test_kl_batched_halves_a_chunk_that_runs_out_of_memory():
    model = unsaturated_resnet()
    x = ctx().calib_inputs[:8]
    units = [u for u in FILTER.units(model) if u.site == "layer3.1.conv1"][:7]
    opaque = OutOfMemoryWhenBatched(model)
    scores = batched_without_fallback(opaque, FILTER, units, x, images=8 * len(x))
    assert opaque.sizes == [7, 3, 2, 4, 2, 2]  # 7 -> 3 + 4 -> (1 by the loop + 2) + (2 + 2)
    assert_same_scores(scores, kl_scores_loop(model, FILTER, units, x))

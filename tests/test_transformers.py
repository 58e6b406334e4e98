"""Transformer structures (encoder blocks, attention heads, MLP neurons) on timm ViTs and the
tabular transformer: surgery equals ablation, sizes and FLOPs from shapes, one unit per site,
weights-only reloads, criteria, and the timm family's names, options and pretrained weights."""

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import needs_shared, run_cli
from harness import records, registry
from harness.api import CriterionContext, Unit
from harness.errors import HarnessError
from harness.measure import count_flops, count_parameters
from harness.models import create_model, load_model, save_model

BLOCK = registry.get("structure", "transformer-block")
HEAD = registry.get("structure", "attention-head")
NEURON = registry.get("structure", "mlp-neuron")
VIT = "timm:vit_tiny_patch16_224"
TINY_VIT = {"patch_size": 8, "embed_dim": 32, "num_heads": 4, "depth": 3}
TINY_TABULAR = {"tt_depth": 3, "tt_heads": 4, "tt_head_dim": 8, "tt_mlp_ratio": 2.0}


@contextlib.contextmanager
def configured(name: str, options: dict):
    """The model family of ``name`` configured with plugin options, back to its defaults after."""
    family = registry.get("model", name)
    family.configure(options)
    try:
        yield family
    finally:
        family.configure({})


def randomise(model, seed: int):
    """Random weights everywhere (timm initialises biases to zero and the class token to
    almost zero, which would make ablations trivially exact)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm_scale = p.dim() == 1 and "norm" in name and name.endswith("weight")
            p.copy_((1.0 if is_norm_scale else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_vit(seed=0, **kwargs):
    with configured(VIT, {"timm_kwargs": {**TINY_VIT, **kwargs}}):
        model = create_model(VIT, 10, (3, 32, 32), "cifar10")
    return randomise(model, seed), (3, 32, 32)


def tiny_tabular(seed=0):
    with configured("tabular-transformer", TINY_TABULAR):
        model = create_model("tabular-transformer", 3, (9,), "shuttle")
    return randomise(model, seed), (9,)


MODELS = {"vit": tiny_vit, "tabular": tiny_tabular}


def inputs(shape, n=6, seed=1):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def analytic_flops(model, input_shape) -> int:
    """2 x the multiply-adds of every matmul, from the modules' shapes alone."""
    if len(input_shape) == 3:  # ViT: patch embedding convolution, class token + patches
        conv = model.net.patch_embed.proj
        patches = (input_shape[1] // conv.kernel_size[0]) * (input_shape[2] // conv.kernel_size[1])
        total, tokens = 2 * conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * patches, patches + 1
    else:  # tabular: the per-feature embedding is elementwise, not a matmul
        total, tokens = 0, input_shape[0] + 1
    for _, block in model.blocks():
        dim, width, hidden = block.attn.qkv.in_features, block.attn.num_heads * block.attn.head_dim, block.mlp.fc1.out_features
        total += 2 * tokens * dim * 3 * width  # qkv
        total += 2 * 2 * tokens * tokens * width  # q @ k^T and attn @ v
        total += 2 * tokens * width * dim  # output projection
        total += 2 * 2 * tokens * dim * hidden  # fc1, fc2
    head = model.net.head if hasattr(model, "net") else model.head
    return total + 2 * head.in_features * head.out_features


def state_copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


# ---------------------------------------------------------------- the models themselves
def test_vit_wrapper_computes_what_timm_computes():
    model, shape = tiny_vit()
    x = inputs(shape)
    assert torch.allclose(model(x), model.net(x), atol=1e-6)
    pre_logits = model.net.forward_head(model.net.forward_features(x), pre_logits=True)
    assert torch.allclose(model.forward_features(x), pre_logits, atol=1e-6)
    assert model.forward_features(x).shape == (6, 32)
    assert [site for site, _ in model.blocks()] == ["net.blocks.0", "net.blocks.1", "net.blocks.2"]


@pytest.mark.parametrize("kind", MODELS)
def test_flops_count_fused_attention_and_match_shapes(kind):
    model, shape = MODELS[kind]()
    assert model.blocks()[0][1].attn.fused_attn, "timm's default, fused attention, is what gets counted"
    flops = count_flops(model, shape)
    assert flops == analytic_flops(model, shape)
    for _, block in model.blocks():
        block.attn.fused_attn = False  # the explicit matmuls count the same
    assert count_flops(model, shape) == flops


def test_flops_of_the_tiny_vit_by_hand():
    model, shape = tiny_vit()
    # 16 patches of 8x8x3 + class token = 17 tokens of 32; 3 blocks of 4 heads x 8, MLP 128; 10 classes
    embed = 2 * 3 * 64 * 32 * 16
    block = 2 * 17 * 32 * 96 + 2 * 2 * 17 * 17 * 32 + 2 * 17 * 32 * 32 + 2 * 2 * 17 * 32 * 128
    assert count_flops(model, shape) == embed + 3 * block + 2 * 32 * 10 == 1_561_600


# ---------------------------------------------------------------- surgery equals ablation
@pytest.mark.parametrize("kind", MODELS)
def test_removing_heads_equals_ablating_them(kind):
    model, shape = MODELS[kind]()
    x, before = inputs(shape), state_copy(model)
    units = [u for u in HEAD.units(model) if (u.site.split(".")[-2], u.index) in {("0", 1), ("0", 3), ("2", 0)}]
    assert len(units) == 3
    out = model(x)
    with HEAD.ablate(model, units):
        ablated = model(x)
    assert torch.equal(model(x), out), "ablation must be undone"
    pruned = HEAD.remove(model, units).eval()
    assert torch.allclose(pruned(x), ablated, atol=1e-5)
    assert not torch.allclose(pruned(x), out, atol=1e-3)
    assert_untouched(model, before)
    blocks = [b for _, b in pruned.blocks()]
    assert [b.attn.num_heads for b in blocks] == [2, 4, 3]
    assert blocks[0].attn.qkv.weight.shape == (3 * 2 * 8, 32) and blocks[0].attn.proj.weight.shape == (32, 16)
    per_head = 3 * 8 * 32 + 3 * 8 + 32 * 8  # qkv rows (weight, bias) and output-projection columns
    assert count_parameters(pruned) == count_parameters(model) - 3 * per_head
    assert count_flops(pruned, shape) == analytic_flops(pruned, shape) < count_flops(model, shape)
    assert pruned.arch["blocks"][0]["heads"] == 2 and model.arch["blocks"][0]["heads"] == 4


@pytest.mark.parametrize("kind", MODELS)
def test_removing_blocks_equals_ablating_them(kind):
    model, shape = MODELS[kind]()
    x, before = inputs(shape), state_copy(model)
    sites = [site for site, _ in model.blocks()]
    units = [Unit("transformer-block", sites[0]), Unit("transformer-block", sites[2])]
    with BLOCK.ablate(model, units):
        ablated = model(x)
    pruned = BLOCK.remove(model, units).eval()
    assert torch.allclose(pruned(x), ablated, atol=1e-5)
    assert not torch.allclose(pruned(x), model(x), atol=1e-3)
    assert_untouched(model, before)
    assert len(pruned.blocks()) == 1
    kept = dict(model.blocks())[sites[1]]
    assert torch.equal(pruned.blocks()[0][1].attn.qkv.weight, kept.attn.qkv.weight), "the middle block moved up"
    per_block = sum(p.numel() for p in model.blocks()[0][1].parameters())
    assert count_parameters(pruned) == count_parameters(model) - 2 * per_block
    assert count_flops(pruned, shape) == analytic_flops(pruned, shape) < count_flops(model, shape)


@pytest.mark.parametrize("kind", MODELS)
def test_removing_mlp_neurons_equals_ablating_them(kind):
    model, shape = MODELS[kind]()
    x, before = inputs(shape), state_copy(model)
    units = NEURON.units(model)[5:70:3]  # hidden units of the first two blocks
    with NEURON.ablate(model, units):
        ablated = model(x)
    pruned = NEURON.remove(model, units).eval()
    assert torch.allclose(pruned(x), ablated, atol=1e-5)
    assert not torch.allclose(pruned(x), model(x), atol=1e-3)
    assert_untouched(model, before)
    hidden = model.blocks()[0][1].mlp.fc1.out_features
    removed = [sum(u.site == site + ".mlp" for u in units) for site, _ in model.blocks()]
    assert [b.mlp.fc1.out_features for _, b in pruned.blocks()] == [hidden - r for r in removed]
    assert count_parameters(pruned) == count_parameters(model) - len(units) * (32 + 1 + 32)
    assert count_flops(pruned, shape) == analytic_flops(pruned, shape) < count_flops(model, shape)


@pytest.mark.parametrize("kind", MODELS)
def test_units_leave_one_per_site(kind):
    model, _ = MODELS[kind]()
    sites = [site for site, _ in model.blocks()]
    assert [u.site for u in BLOCK.units(model)] == sites
    heads = HEAD.units(model)
    assert len(heads) == 3 * 4 and {u.site for u in heads} == {s + ".attn" for s in sites}
    assert len(NEURON.units(model)) == 3 * model.blocks()[0][1].mlp.fc1.out_features
    first = [u for u in heads if u.site == sites[0] + ".attn"]
    with pytest.raises(ValueError):
        HEAD.remove(model, first)
    narrowed = HEAD.remove(model, first[:-1])
    assert all(u.site != sites[0] + ".attn" for u in HEAD.units(narrowed)), "a site's last head is no unit"
    assert len(HEAD.units(narrowed)) == 2 * 4
    with pytest.raises(ValueError):
        BLOCK.remove(model, BLOCK.units(model))
    single = BLOCK.remove(model, BLOCK.units(model)[1:])
    assert BLOCK.units(single) == [], "the last block is no unit"


@pytest.mark.parametrize("kind", MODELS)
def test_pruned_model_reloads_from_weights_only_file(kind, tmp_path):
    model, shape = MODELS[kind]()
    pruned = BLOCK.remove(model, BLOCK.units(model)[:1])
    pruned = HEAD.remove(pruned, HEAD.units(pruned)[::3])
    pruned = NEURON.remove(pruned, NEURON.units(pruned)[::4]).eval()
    path = tmp_path / "m.pt"
    save_model(pruned, path)
    assert set(torch.load(path, weights_only=True)) == {"arch", "state_dict"}
    reloaded = load_model(path)
    assert reloaded.arch == pruned.arch
    x = inputs(shape)
    assert torch.equal(reloaded(x), pruned(x))


# ---------------------------------------------------------------- criteria
def full_forward_kl(model, structure, units, x):
    """KL(parent || ablated) with whole forward passes, as the criterion defines it."""
    with torch.no_grad():
        parent = F.log_softmax(model(x).double(), dim=1)
        out = []
        for unit in units:
            with structure.ablate(model, [unit]):
                ablated = F.log_softmax(model(x).double(), dim=1)
            out.append(float(F.kl_div(ablated, parent, log_target=True, reduction="batchmean")))
    return out


@pytest.mark.parametrize("kind", MODELS)
def test_kl_scores_equal_full_forwards_and_find_a_dead_head(kind):
    model, shape = MODELS[kind]()
    site, block = model.blocks()[1]
    with torch.no_grad():
        block.attn.proj.weight[:, 2 * 8:3 * 8] = 0  # head 2 of block 1 contributes nothing
    x = inputs(shape, n=32)
    ctx = CriterionContext(x, torch.zeros(32, dtype=torch.long), seed=0)
    kl = registry.get("criterion", "kl")
    assert hasattr(model, "forward_from"), "the prefix shortcut is what is checked here"
    for structure in (BLOCK, HEAD, NEURON):
        units = structure.units(model)[:40]
        scores = kl.scores(model, structure, units, ctx)
        assert scores == pytest.approx(full_forward_kl(model, structure, units, x), rel=1e-6, abs=1e-12)
        assert len(set(scores)) > 1
    heads = HEAD.units(model)
    scores = kl.scores(model, HEAD, heads, ctx)
    assert heads[scores.index(min(scores))] == Unit("attention-head", site + ".attn", 2)
    assert min(scores) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("kind", MODELS)
def test_l1_scores_are_the_mean_weight_of_each_unit(kind):
    model, _ = MODELS[kind]()
    l1 = registry.get("criterion", "l1")
    ctx = CriterionContext(torch.zeros(1), torch.zeros(1, dtype=torch.long), seed=0)
    site, block = model.blocks()[2]
    head = Unit("attention-head", site + ".attn", 1)
    qkv, proj = block.attn.qkv.weight.detach(), block.attn.proj.weight.detach()
    rows = torch.cat([qkv[8:16], qkv[32 + 8:32 + 16], qkv[64 + 8:64 + 16]])
    expected = (rows.abs().sum() + proj[:, 8:16].abs().sum()) / (rows.numel() + proj[:, 8:16].numel())
    assert l1.scores(model, HEAD, [head], ctx)[0] == pytest.approx(float(expected), rel=1e-6)
    neuron = Unit("mlp-neuron", site + ".mlp", 7)
    fc1, fc2 = block.mlp.fc1.weight.detach(), block.mlp.fc2.weight.detach()
    expected = (fc1[7].abs().sum() + fc2[:, 7].abs().sum()) / (32 + 32)
    assert l1.scores(model, NEURON, [neuron], ctx)[0] == pytest.approx(float(expected), rel=1e-6)
    scores = l1.scores(model, BLOCK, BLOCK.units(model), ctx)
    assert len(scores) == 3 and all(s > 0 for s in scores)


# ---------------------------------------------------------------- what the structures refuse
def test_attention_variants_and_other_networks_are_refused():
    with configured(VIT, {"timm_kwargs": {**TINY_VIT, "qk_norm": True}}):
        with pytest.raises(HarnessError, match="qk_norm"):
            create_model(VIT, 10, (3, 32, 32), "cifar10")
    model, _ = tiny_vit()
    import timm

    plain = timm.create_model("vit_tiny_patch16_224", img_size=32, **{**TINY_VIT, "qk_norm": True})
    model.net.blocks[1].attn = plain.blocks[1].attn
    assert not any(s.supports(model) for s in (BLOCK, HEAD, NEURON))
    resnet = create_model("resnet20", 10, (3, 32, 32), "cifar10")
    assert not any(s.supports(resnet) for s in (BLOCK, HEAD, NEURON))
    assert not registry.get("structure", "resnet-block").supports(model)


def test_timm_names_options_and_input_shapes():
    with pytest.raises(HarnessError, match="unknown timm model 'not_a_model'; valid choices: .*timm:vit_tiny"):
        create_model("timm:not_a_model", 10, (3, 32, 32), "cifar10")
    # timm's other networks are not refused: the traced family prunes them
    assert registry.get("model", "timm:resnet18").name == "traced:"
    with pytest.raises(HarnessError, match="takes images"):
        create_model(VIT, 2, (9,), "shuttle")
    with pytest.raises(HarnessError, match="takes rows of features"):
        create_model("tabular-transformer", 10, (3, 32, 32), "cifar10")
    with configured(VIT, {"timm_kwargs": {"not_an_argument": 1}}):
        with pytest.raises(HarnessError, match="not_an_argument"):
            create_model(VIT, 10, (3, 32, 32), "cifar10")
    option = registry.all_options()["timm_kwargs"]
    assert option.parse("patch_size=4, depth=6,global_pool=avg,qkv_bias=False,drop_rate=0.1") == {
        "patch_size": 4, "depth": 6, "global_pool": "avg", "qkv_bias": False, "drop_rate": 0.1}
    assert option.parse({"depth": 2}) == {"depth": 2}
    with pytest.raises(ValueError):
        option.parse("patch_size")


def test_unknown_timm_model_is_a_one_line_cli_error(tmp_path):
    result = run_cli("bench", "--model", "timm:not_a_model", "--dataset", "digits", "--budget", "smoke",
                     "--runs-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown timm model 'not_a_model'" in result.stderr


# ---------------------------------------------------------------- pretrained weights, offline
HUB_ID = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"

LOAD_PRETRAINED = """
import sys, torch, safetensors.torch
from harness.models import create_model
model = create_model("timm:vit_tiny_patch16_224", 10, (3, 32, 32), "cifar10", pretrained=True)
published = safetensors.torch.load_file(sys.argv[1])
same = [k for k in published if k.startswith("blocks.") and torch.equal(model.state_dict()["net." + k], published[k])]
print(len(same), sum(k.startswith("blocks.") for k in published), tuple(model.net.pos_embed.shape))
"""


def fake_hub_cache(root):
    """A Hugging Face hub cache holding random weights for timm's vit_tiny_patch16_224, laid
    out as the hub client leaves it (refs/main naming a snapshot)."""
    import safetensors.torch
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    weights = repo / "snapshots" / commit / "model.safetensors"
    weights.parent.mkdir(parents=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    return weights


@pytest.mark.slow
def test_pretrained_weights_come_from_the_hub_cache_offline(tmp_path):
    weights = fake_hub_cache(tmp_path / "hf")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", LOAD_PRETRAINED, str(weights)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    same, blocks, pos_embed = result.stdout.split(maxsplit=2)
    assert int(same) == int(blocks) == 12 * 12, "every tensor of the 12 blocks is the published one"
    assert pos_embed.strip() == "(1, 5, 192)", "timm resampled the position embedding to 32x32 inputs"


@pytest.mark.slow
def test_missing_pretrained_weights_say_how_to_provide_them(tmp_path):
    result = run_cli("bench", "--model", VIT, "--timm-kwargs", "patch_size=4", "--pretrained", "--dataset", "digits",
                     "--budget", "smoke", "--runs-dir", str(tmp_path / "runs"),
                     env={"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"},
                     isolated=True)  # huggingface_hub reads HF_HUB_OFFLINE when it is imported
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message and "cannot get pretrained weights of timm model vit_tiny_patch16_224" in message
    assert HUB_ID in message and "HF_HUB_OFFLINE=1" in message and "--checkpoint" in message


@pytest.mark.slow
@pytest.mark.parametrize("model", [f"{VIT} --timm-kwargs patch_size=4", "timm:convnext_atto"])
def test_pretrained_weights_without_network_and_without_offline_mode_are_one_line_without_retries(
        tmp_path, monkeypatch, model):
    """No HF_HUB_OFFLINE: huggingface_hub retried each file for about a minute, 22 warning lines,
    then the reason cut short; the hub here is an address that takes no connection."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    result = run_cli("bench", "--model", *model.split(), "--pretrained", "--dataset", "digits", "--budget", "smoke",
                     "--iterations", "1", "--runs-dir", str(tmp_path / "runs"),
                     env={"HF_HOME": str(tmp_path / "empty"), "HF_ENDPOINT": "http://127.0.0.1:1"},
                     isolated=True, timeout=300)  # huggingface_hub reads HF_ENDPOINT when it is imported
    assert result.returncode == 2, result.stderr
    (message,) = result.stderr.strip().splitlines()
    name = model.split()[0].removeprefix("timm:")
    assert message.startswith(f"harness: error: cannot get pretrained weights of timm model {name} (the Hugging "
                              "Face hub at 127.0.0.1:1 cannot be reached: Connection refused, and they are not in "
                              "the local cache); ")
    assert "HF_HUB_OFFLINE=1" in message and message.endswith("or give --checkpoint FILE")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_pretrained_weights_come_from_the_hub_cache_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    """The hub found unreachable, the cache is read as HF_HUB_OFFLINE=1 would, without a word."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    weights = fake_hub_cache(tmp_path / "hf")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:1")
    result = subprocess.run([sys.executable, "-c", LOAD_PRETRAINED, str(weights)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    same, blocks, _ = result.stdout.split(maxsplit=2)
    assert int(same) == int(blocks) == 12 * 12


def test_plain_timm_checkpoints_are_accepted(tmp_path):
    model, shape = tiny_vit()
    path = tmp_path / "timm.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.net.state_dict().items()}}, path)
    with configured(VIT, {"timm_kwargs": TINY_VIT}):
        loaded = create_model(VIT, 10, shape, "cifar10", checkpoint=str(path)).eval()
    x = inputs(shape)
    assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------- a whole run
@needs_shared
def test_bench_prunes_a_tiny_vit_on_cifar(cifar_subset, tmp_path):
    from harness.session import load_data
    from harness.config import BenchConfig
    from harness.training import accuracy

    result = run_cli("bench", "--model", VIT, "--timm-kwargs", "patch_size=8,embed_dim=32,num_heads=4,depth=3",
                     "--data-dir", str(cifar_subset), "--structures", "layer,head", "--budget", "smoke",
                     "--iterations", "2", "--scratch-epochs", "1", "--runs-dir", str(tmp_path), "--name", "vit")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "vit"
    rows = records.read_iterations(run)
    flops = [r["flops"] for r in rows]
    assert len(rows) == 3 and all(a > b for a, b in zip(flops, flops[1:]))
    path = json.loads((run / "result.json").read_text())["decision_path"]
    assert len(path) == 2 and set(path) <= {"L", "H"}
    cfg = BenchConfig.from_dict(records.read_config(run)["config"])
    assert cfg.optimizer == "adamw" and cfg.options["timm_kwargs"]["patch_size"] == 8
    model = load_model(records.model_path(run, 2))
    assert count_flops(model, (3, 32, 32)) == rows[2]["flops"] and count_parameters(model) == rows[2]["params"]
    data = load_data(cfg)
    assert accuracy(model, data.test, data, "cpu") == pytest.approx(rows[2]["accuracy"], abs=1e-3)

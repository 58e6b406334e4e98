"""harness.prune: a model the harness has never seen, pruned from Python with its own loaders,
and harness.load_pruned rebuilding it from the records on a fresh instance of its class."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import harness
from harness import records, registry
from harness.errors import HarnessError
from harness.measure import count_flops, count_parameters


class TinyResidualNet(nn.Module):
    """Written here, registered nowhere: three residual blocks and a linear classifier."""

    def __init__(self, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(*[Residual(16) for _ in range(3)])
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def loaders(n_train=400, n_val=100):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, 3, 12, 12, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=50)
    val = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=50)
    return train, val, x


def test_an_unseen_module_is_pruned_from_python_and_reloads_from_the_records(tmp_path):
    torch.manual_seed(0)
    net = TinyResidualNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train, val, x = loaders()
    result = harness.prune(net, train, val, iterations=3, calib_size=64, runs_dir=tmp_path, candidate_epochs=0.2,
                           finetune_epochs=0.2, precision="fp32")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the given model is left alone"
    assert type(result.model) is TinyResidualNet and len(result.decision_path) == 3
    assert set(result.decision_path) <= {"L", "F"} and result.flops_reduction_pct > 0
    rows = records.read_iterations(result.run_dir)
    assert all(sorted(c["type"] for c in r["candidates"]) == ["filter", "layer"] for r in rows[1:])
    assert count_parameters(result.model) == rows[-1]["params"] < rows[0]["params"]
    assert count_flops(result.model, (3, 12, 12)) == rows[-1]["flops"]
    again = harness.load_pruned(result.run_dir, TinyResidualNet())
    with torch.no_grad():
        assert torch.equal(again(x[:8]), result.model.eval()(x[:8]))
    # the decisions read the validation loader, which the records name as such
    config = records.read_config(result.run_dir)
    assert config["data"]["val"] == 100 and "validation loader" in config["data"]["label"]
    assert not any(name.startswith("own:") for name in registry.registry("model")), "registered only during the run"


def test_calling_it_again_continues_the_same_run(tmp_path):
    torch.manual_seed(0)
    train, val, _ = loaders()
    kwargs = dict(calib_size=64, runs_dir=tmp_path, name="again", candidate_epochs=0.1, finetune_epochs=0.1)
    first = harness.prune(TinyResidualNet(), train, val, iterations=1, **kwargs)
    torch.manual_seed(0)
    second = harness.prune(TinyResidualNet(), train, val, iterations=1, **kwargs)
    assert first.run_dir == second.run_dir and first.decision_path == second.decision_path
    assert len(records.read_iterations(first.run_dir)) == 2


def test_bad_loaders_are_one_line_errors(tmp_path):
    train, val, _ = loaders()
    with pytest.raises(HarnessError, match="val_loader gave no batches"):
        harness.prune(TinyResidualNet(), train, [], runs_dir=tmp_path)
    with pytest.raises(HarnessError, match="unknown setting candidate_epoch of harness.prune; valid choices: .*candidate_epochs"):
        harness.prune(TinyResidualNet(), train, val, runs_dir=tmp_path, candidate_epoch=1)
    with pytest.raises(HarnessError, match="calib_size 300 would leave too little"):
        harness.prune(TinyResidualNet(), train, val, calib_size=300, runs_dir=tmp_path)


def test_harness_export_takes_a_run_of_harness_prune_with_the_factory_of_its_network(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from conftest import run_cli

    torch.manual_seed(0)
    train, val, x = loaders()
    result = harness.prune(TinyResidualNet(), train, val, iterations=1, calib_size=64, runs_dir=tmp_path,
                           candidate_epochs=0.1, finetune_epochs=0.1)
    refused = run_cli("export", result.run_dir, "--format", "onnx")
    assert refused.returncode == 2 and "written by harness.prune" in refused.stderr and "--factory" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    done = run_cli("export", result.run_dir, "--format", "onnx", "--factory", "test_python_api:TinyResidualNet(classes=4)")
    assert done.returncode == 0, done.stderr
    assert "random inputs" in done.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.run_dir / "exported" / "iter_001.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x[:5].numpy()})[0]
    with torch.no_grad():
        assert np.allclose(got, result.model.eval()(x[:5]).numpy(), atol=1e-4)
    # and from Python, with a fresh instance
    report = harness.export_pruned(result.run_dir, TinyResidualNet(), "pt2", out=tmp_path / "m.pt2")
    assert report["max_abs_difference"] <= 1e-4


def test_a_timm_vision_transformer_goes_to_the_vit_family_and_reloads_on_its_factory(tmp_path, capsys):
    timm = pytest.importorskip("timm")

    def make():
        return timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=12, patch_size=4, depth=3)

    torch.manual_seed(0)
    train, val, x = loaders()
    result = harness.prune(make(), train, val, iterations=1, calib_size=64, runs_dir=tmp_path, candidate_epochs=0.1,
                           finetune_epochs=0.1)
    assert "pruned as a timm Vision Transformer" in capsys.readouterr().out
    assert result.family == "timm" and result.decision_path in ("L", "H")
    again = harness.load_pruned(result.run_dir, make)
    with torch.no_grad():
        assert torch.equal(again(x[:4]), result.model.eval()(x[:4]))
    with pytest.raises(HarnessError, match="pruned by the timm family"):
        harness.load_pruned(result.run_dir, TinyResidualNet())


class WindowedBiasNet(TinyResidualNet):
    """Holds what Swin's attention holds (a relative-position index its bias is gathered by),
    which Torch-Pruning cannot follow: no width candidate, depth still."""

    def __init__(self):
        super().__init__()
        self.body[0].register_buffer("relative_position_index", torch.zeros(4, dtype=torch.long))


def test_a_network_whose_channels_cannot_be_traced_is_one_line_and_prunes_its_blocks_alone(tmp_path):
    train, val, _ = loaders()
    kwargs = dict(calib_size=64, runs_dir=tmp_path, candidate_epochs=0.1, finetune_epochs=0.1, iterations=1)
    with pytest.raises(HarnessError, match=r"cannot trace the channels of WindowedBiasNet: .*relative_position_index"
                                           r".*--structures layer prunes residual blocks alone"):
        harness.prune(WindowedBiasNet(), train, val, name="both", **kwargs)
    result = harness.prune(WindowedBiasNet(), train, val, name="layer", structures=["layer"], **kwargs)
    assert result.decision_path == "L"

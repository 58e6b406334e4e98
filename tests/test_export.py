"""Issue 12, item 5: `harness export` writes files that run without this project, checked
against the PyTorch model; `latency-ort` times the ONNX file in onnxruntime."""

import numpy as np
import pytest
import torch

from conftest import run_cli, seeded_resnet
from harness import records
from harness.errors import HarnessError
from harness.export import FORMATS, export_checked
from harness.models import load_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli("bench", "--budget", "smoke", "--iterations", "2", "--runs-dir", runs, "--name", "r",
                     "--evaluators", "latency-ort", "--ort-repeats", "3", "--ort-batch", "16")
    assert result.returncode == 0, result.stderr
    return runs / "r"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_writes_a_file_its_own_runtime_runs_like_the_model(pruned_run, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    result = run_cli("export", pruned_run, "--format", fmt)
    assert result.returncode == 0, result.stderr
    path = pruned_run / "exported" / f"iter_002{FORMATS[fmt]}"
    assert f"wrote {path}: {fmt}" in result.stdout and "iteration 2" in result.stdout
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers
    # raw inputs of any batch size in, the kept model's logits out (normalisation inside)
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images[:7], dtype=torch.float32).div(16).unsqueeze(1)
    model = load_model(records.model_path(pruned_run, 2))
    from harness.session import load_data
    from harness.config import BenchConfig

    data = load_data(BenchConfig.from_dict(records.read_config(pruned_run)["config"]))
    with torch.no_grad():
        expected = model((raw - data.mean[0]) / data.std[0])
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: raw.numpy()})[0])
    elif fmt == "pt2":
        got = torch.export.load(str(path)).module()(raw)
    else:
        got = torch.jit.load(str(path))(raw)
    assert got.shape == (7, 10)
    assert (got - expected).abs().max() <= 1e-4


def test_a_pruned_resnet20_exports_to_onnx_within_tolerance(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from harness import registry

    model = seeded_resnet("resnet20")
    structure = registry.get("structure", "resnet-filter")
    units = structure.units(model)
    pruned = structure.remove(model, units[::3])  # a third of the filters: odd channel counts
    inputs = torch.rand(32, 3, 32, 32)
    report = export_checked(pruned, MEAN, STD, inputs, "onnx", tmp_path / "r20.onnx")
    assert report["max_abs_difference"] <= 1e-4 and report["same_prediction"] == 1.0
    assert (tmp_path / "r20.onnx").stat().st_size == report["bytes"]


def test_an_export_that_differs_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    import harness.export as export

    monkeypatch.setattr(export, "run_file", lambda path, fmt, x: export.Deployable(
        torch.nn.Linear(64, 10), (0.0,), (1.0,))(x.flatten(1)))  # a file that computes something else
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(HarnessError, match="outputs differ from the PyTorch model's by up to .* not written"):
        export_checked(model, (0.0,), (1.0,), torch.rand(8, 1, 8, 8), "torchscript", tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_tolerance_follows_the_size_of_the_outputs(tmp_path, monkeypatch):
    import harness.export as export

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(1e9)  # logits of ~1e9, as random weights through a deep network give
    inputs = torch.rand(8, 1, 8, 8)
    exact = export.Deployable(model, (0.0,), (1.0,))(inputs)
    monkeypatch.setattr(export, "run_file", lambda path, fmt, x: exact * (1 + 1e-6))  # float32's last digits
    assert export_checked(model, (0.0,), (1.0,), inputs, "torchscript", tmp_path / "m.pt")["max_abs_difference"] > 1e-4
    monkeypatch.setattr(export, "run_file", lambda path, fmt, x: exact * 1.001)  # really another model
    with pytest.raises(HarnessError, match="outputs differ"):
        export_checked(model, (0.0,), (1.0,), inputs, "torchscript", tmp_path / "n.pt")


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "unknown --format 'tflite'; valid choices: onnx, pt2, torchscript"),
    (["--iteration", "9"], "--iteration 9: run "),
])
def test_bad_export_input_is_one_line(pruned_run, args, message):
    result = run_cli("export", pruned_run, *args)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_latency_ort_times_the_onnx_file(pruned_run):
    pytest.importorskip("onnxruntime")
    evaluations = records.read_evaluations(pruned_run)
    assert sorted(evaluations) == [0, 1, 2]
    for iteration, row in evaluations.items():
        assert not row["errors"], row["errors"]
        numbers = row["results"]["latency-ort"]
        assert numbers["latency_ms"] > 0 and numbers["throughput_per_s"] > 0 and numbers["batch"] == 16
        assert ("throughput_speedup" in numbers) == (iteration > 0)
    assert np.isfinite(evaluations[2]["results"]["latency-ort"]["latency_speedup"])

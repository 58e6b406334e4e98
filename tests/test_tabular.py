"""Tabular data sets (Statlog Shuttle from river, breast cancer from scikit-learn) and an
end-to-end pruning run of the tabular transformer on Shuttle."""

import json

import pytest
import torch

from conftest import run_cli
from harness import records, registry
from harness.training import normalize


def test_shuttle_rows_are_standardised_with_training_statistics(tmp_path):
    shuttle = registry.get("dataset", "shuttle")
    data = shuttle.load(None, str(tmp_path), 256)
    assert data.input_shape == (9,) and data.num_classes == 2 and data.augment is None
    assert len(data.train) + len(data.calib) + len(data.test) == 49_097
    assert len(data.calib) == 256 and len(data.test) == 9_819
    train = normalize(data.train.images, data.mean, data.std)
    assert train.mean(0).abs().max() < 1e-4 and (train.std(0) - 1).abs().max() < 1e-4
    assert not torch.allclose(normalize(data.test.images, data.mean, data.std).mean(0), torch.zeros(9), atol=1e-4), \
        "the statistics are the training split's, not the test split's"
    for split in (data.train, data.test):
        assert 0.06 < split.labels.float().mean() < 0.08, "about 7% anomalies in every split"
    again = shuttle.load(None, str(tmp_path), 256)
    assert torch.equal(again.test.images, data.test.images) and torch.equal(again.calib.labels, data.calib.labels)
    assert "Shuttle" in data.label and data.class_names == ("normal", "anomaly")


def test_breast_cancer_rows(tmp_path):
    data = registry.get("dataset", "breast-cancer").load(None, str(tmp_path), 64)
    assert data.input_shape == (30,) and data.num_classes == 2
    assert (len(data.train), len(data.calib), len(data.test)) == (569 - 114 - 64, 64, 114)
    train = normalize(data.train.images, data.mean, data.std)
    assert train.mean(0).abs().max() < 1e-4 and (train.std(0) - 1).abs().max() < 1e-4
    assert data.label == "breast cancer (scikit-learn)" and data.class_names == ("malignant", "benign")


TINY = ["--tt-depth", "3", "--tt-heads", "4", "--tt-head-dim", "8"]


@pytest.fixture(scope="module")
def shuttle_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli("bench", "--model", "tabular-transformer", *TINY, "--budget", "smoke", "--iterations", "2",
                     "--scratch-epochs", "3", "--runs-dir", str(runs), "--name", "tt")
    assert result.returncode == 0, result.stderr
    return runs / "tt"


def test_bench_prunes_the_tabular_transformer(shuttle_run):
    cfg = records.read_config(shuttle_run)["config"]
    assert cfg["dataset"] == "shuttle" and cfg["structures"] == ["layer", "head", "neuron"]
    assert cfg["optimizer"] == "adamw" and cfg["options"]["tt_depth"] == 3
    rows = records.read_iterations(shuttle_run)
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert rows[0]["accuracy"] > 94, "the baseline beats always answering 'normal' (92.8%)"
    flops = [r["flops"] for r in rows]
    assert all(a > b for a, b in zip(flops, flops[1:]))
    path = json.loads((shuttle_run / "result.json").read_text())["decision_path"]
    assert len(path) == 2 and set(path) <= {"L", "H", "N"}
    for row in rows[1:]:
        assert {c["type"] for c in row["candidates"]} <= {"layer", "head", "neuron"}
        assert all(c["similarity"] is not None for c in row["candidates"])


def test_final_tabular_model_reloads_and_reproduces_its_accuracy(shuttle_run):
    from harness.session import load_data
    from harness.config import BenchConfig
    from harness.measure import count_flops, count_parameters
    from harness.models import load_model
    from harness.training import accuracy

    cfg = BenchConfig.from_dict(records.read_config(shuttle_run)["config"])
    data = load_data(cfg)
    final = json.loads((shuttle_run / "result.json").read_text())["final_iteration"]
    row = records.read_iterations(shuttle_run)[final]
    model = load_model(records.model_path(shuttle_run, final))
    assert count_parameters(model) == row["params"] and count_flops(model, (9,)) == row["flops"]
    assert accuracy(model, data.test, data, "cpu") == pytest.approx(row["accuracy"], abs=1e-3)

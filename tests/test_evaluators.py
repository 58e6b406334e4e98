import json

import pytest
import torch

from conftest import run_cli
from harness import records, registry
from harness.api import DataSplits, EvalContext, TensorSplit
from harness.training import accuracy


def tiny_data(n=120):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 16, 16, generator=g)
    labels = (images[:, 0].mean((1, 2)) > 0.5).long() + 2 * (images[:, 1].mean((1, 2)) > 0.5).long()
    split = TensorSplit(images, labels)
    return DataSplits(split, split.subset(16), split, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), num_classes=4)


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def context(data, options, baseline=None):
    return EvalContext(data, torch.device("cpu"), options, seed=0, cache_dir="/nonexistent", iteration=1,
                       baseline=baseline)


def test_fgsm_at_epsilon_zero_is_the_clean_accuracy_of_its_subset():
    data, model = tiny_data(), tiny_model()
    fgsm = registry.get("evaluator", "fgsm")
    out = fgsm.evaluate(model, context(data, {"fgsm_eps": [0.0, 8 / 255], "fgsm_subset": 50}))
    clean = accuracy(model, data.test.subset(50, seed=1), data, "cpu")
    assert out["n"] == 50 and out["eps_0_255"] == pytest.approx(clean, abs=1e-3)
    assert out["eps_8_255"] <= out["eps_0_255"]
    again = fgsm.evaluate(model, context(data, {"fgsm_eps": [0.0, 8 / 255], "fgsm_subset": 50}, baseline=out))
    assert again["eps_8_255_delta"] == pytest.approx(0.0, abs=1e-6), "same model, same subset: no change"


def test_fgsm_epsilons_parse_fractions_and_reject_impossible_values():
    from harness_plugins.evaluators.fgsm import check_epsilons, parse_epsilons

    assert parse_epsilons("1/255, 8/255,0.5") == pytest.approx([1 / 255, 8 / 255, 0.5])
    assert check_epsilons([2.0]) and check_epsilons([]) and check_epsilons([1 / 255]) is None


def test_latency_reports_a_speedup_against_its_baseline():
    data, model = tiny_data(), tiny_model()
    latency = registry.get("evaluator", "latency")
    options = {"latency_repeats": 5, "latency_batch": 200}  # more than the split holds: it is repeated
    base = latency.evaluate(model, context(data, options))
    assert base["latency_ms"] > 0 and base["throughput_per_s"] > 0 and base["batch"] == 200
    out = latency.evaluate(model, context(data, options, baseline=base))
    assert out["latency_speedup"] == pytest.approx(base["latency_ms"] / out["latency_ms"], rel=1e-3)


@pytest.mark.parametrize("name", ["latency", "latency-ort"])
def test_speedups_are_timed_side_by_side_with_the_unpruned_model(name):
    data, model = tiny_data(), tiny_model()
    wide = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 8, 3, padding=1),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    prefix = "latency" if name == "latency" else "ort"
    options = {f"{prefix}_repeats": 5, f"{prefix}_batch": 64}
    recorded = {"latency_ms": 1e6, "throughput_per_s": 1e-6}  # what iteration 0 recorded: not read
    calls = []

    def unpruned():
        calls.append(1)
        return wide

    ctx = EvalContext(data, torch.device("cpu"), options, seed=0, cache_dir="/nonexistent", iteration=2,
                      baseline=recorded, unpruned=unpruned)
    out = registry.get("evaluator", name).evaluate(model, ctx)
    assert out["latency_speedup"] == pytest.approx(out["unpruned_latency_ms"] / out["latency_ms"], rel=1e-3)
    assert out["throughput_speedup"] == pytest.approx(out["throughput_per_s"] / out["unpruned_throughput_per_s"],
                                                      rel=1e-3)
    assert out["throughput_speedup"] > 1, "the small model is faster than the wide one it is timed beside"
    assert calls == [1]


def test_co2_measures_tracked_phases_and_the_inference_workload():
    data, model = tiny_data(), tiny_model()
    co2 = registry.get("evaluator", "co2")
    co2.configure({"country": "FRA"})
    with co2.track("finetune"):
        torch.randn(400, 400) @ torch.randn(400, 400)
    options = {"country": "FRA", "co2_inference_images": 300}
    base = co2.evaluate(model, context(data, options))
    assert base["country"] == "FRA" and base["inference_images"] == 300
    assert base["inference_energy_kwh"] > 0 and base["inference_emissions_kg"] > 0
    assert set(base["phases"]) == {"finetune"} and base["phase_energy_kwh"] > 0
    out = co2.evaluate(model, context(data, options, baseline=base))
    assert out["phases"] == {}, "phases are counted since the previous evaluation"
    assert "inference_energy_reduction_pct" in out


def test_bench_with_extra_evaluators_on_the_final_model_only(tmp_path):
    result = run_cli("bench", "--budget", "smoke", "--iterations", "2", "--evaluators", "fgsm,latency,co2",
                     "--evaluate", "final", "--fgsm-eps", "0,2/255", "--fgsm-subset", "100", "--latency-repeats",
                     "3", "--co2-inference-images", "500", "--runs-dir", str(tmp_path), "--name", "ev")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "ev"
    evaluations = records.read_evaluations(run)
    assert sorted(evaluations) == [0, 2]
    assert set(evaluations[2]["results"]) == {"fgsm", "latency", "co2"} and not evaluations[2]["errors"]
    from harness.session import load_data
    from harness.config import BenchConfig
    from harness.models import load_model

    data = load_data(BenchConfig.from_dict(records.read_config(run)["config"]))
    final = load_model(records.model_path(run, 2))
    clean = accuracy(final, data.test.subset(100, seed=1), data, "cpu")
    assert evaluations[2]["results"]["fgsm"]["eps_0_255"] == pytest.approx(clean, abs=1e-3)
    phases = evaluations[2]["results"]["co2"]["phases"]
    assert {"criterion", "candidates", "finetune"} <= set(phases), "both iterations' work is counted at the end"
    config = json.loads((run / records.CONFIG_FILE).read_text())["config"]
    assert config["options"]["fgsm_eps"] == pytest.approx([0.0, 2 / 255])


@pytest.mark.parametrize("args, message", [
    (["--evaluators", "fgsm,nope"], "unknown evaluator 'nope'; valid choices: accuracy, "),
    (["--fgsm-eps", "3"], "--fgsm-eps [3.0]: every epsilon must be between 0 and 1"),
    (["--fgsm-eps", "a/b"], "--fgsm-eps 'a/b' is not valid"),
    (["--country", "France"], "--country 'France': codecarbon has no grid data for it; valid choices: "),
])
def test_bad_evaluator_input_is_one_line(tmp_path, args, message):
    result = run_cli("bench", *args, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "runs").exists()

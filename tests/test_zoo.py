"""benchmarks/zoo.py (issue 24) on a few representative networks: each is pruned by
harness.prune, reloads with identical outputs, exports to ONNX that onnxruntime runs, and gets a
depth candidate exactly where it has identity residual blocks."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_zoo():
    spec = importlib.util.spec_from_file_location("zoo", ROOT / "benchmarks" / "zoo.py")
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    return zoo


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchvision:regnet_x_400mf",  # grouped convolutions
                                  "torchvision:mnasnet0_5",  # a state dict's metadata
                                  "torchvision:googlenet",  # training-only branches
                                  "torchvision:squeezenet1_0",  # a convolution classifier
                                  "timm:ghostnet_100"])  # blocks ending in two parallel paths
def test_a_representative_network_is_pruned_reloaded_and_exported(name, tmp_path):
    pytest.importorskip("onnxruntime")
    zoo = load_zoo()
    out = zoo.run_harness(name, 32, tmp_path)
    assert out["reload_identical"] and out["onnx_max_diff"] <= 1e-4 * 10
    assert out["depth_offered"] == zoo.has_identity_residuals(name) == (out["blocks"] > 0)


def test_where_torch_pruning_fails_the_harness_says_so_in_one_line(tmp_path):
    zoo = load_zoo()
    result = tmp_path / "r.json"
    zoo.one("torchvision:shufflenet_v2_x0_5", "harness", 32, result)
    why = json.loads(result.read_text())["why"]
    assert why.startswith("HarnessError: Torch-Pruning") and "cannot trace the channels of ShuffleNetV2" in why


@pytest.mark.slow
def test_the_driver_writes_a_table_saying_why_each_failure_fails(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "zoo.py"), "--models",
                           "torchvision:mobilenet_v3_small,torchvision:shufflenet_v2_x0_5", "--size", "32",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "zoo.md").read_text()
    assert "the harness **1 of 2**" in table
    assert "| torchvision:shufflenet_v2_x0_5 | no | no |" in table and "update_reshape_index_mapping" in table
    rows = (tmp_path / "zoo.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("model,size,")


def test_the_committed_table_is_what_its_csv_makes():
    """zoo.md is rebuilt from zoo.csv when --merge replaces some rows: the round trip through
    the CSV loses nothing (the committed pair holds each other)."""
    import argparse

    zoo = load_zoo()
    results = ROOT / "benchmarks" / "results"
    table = (results / "zoo.md").read_text()
    opening = next(line for line in table.splitlines() if line.startswith("`python"))
    assert zoo.markdown(zoo.read_rows(results / "zoo.csv"), argparse.Namespace(size=64), opening) == table

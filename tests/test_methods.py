"""The decision rules and stopping rules, end to end on the offline demo (digits)."""

import json
import re

import pytest

from conftest import run_cli
from harness import records

FAST = ["--budget", "smoke", "--scratch-epochs", "10", "--candidate-epochs", "0.3", "--finetune-epochs", "0.5"]


def bench(tmp_path, name, *args):
    result = run_cli("bench", *FAST, *args, "--runs-dir", str(tmp_path), "--name", name)
    assert result.returncode == 0, result.stderr
    return records.read_iterations(tmp_path / name), records.read_result(tmp_path / name), result


@pytest.mark.slow
def test_layers_then_filters_removes_every_block_first(tmp_path):
    rows, result, _ = bench(tmp_path, "ltf", "--method", "layers-then-filters", "--iterations", "9")
    # tiny-resnet has 7 blocks with identity shortcuts
    assert result["decision_path"] == "LLLLLLLFF"
    # the method saw one candidate; the decision records describe the other too
    assert all(sum(c["method_saw"] for c in r["candidates"]) == 1 for r in rows[1:])
    assert all(len(r["candidates"]) == 2 for r in rows[1:8])


@pytest.mark.parametrize("method, letter", [("layer-only", "L"), ("filter-only", "F")])
def test_single_structure_methods(tmp_path, method, letter):
    rows, result, _ = bench(tmp_path, method, "--method", method, "--iterations", "3")
    assert result["decision_path"] == letter * 3
    assert all([c["type"][0].upper() for c in r["candidates"] if c["method_saw"]] == [letter] for r in rows[1:])
    assert all(len(r["candidates"]) == 2 for r in rows[1:])  # the decision records describe both


def test_filter_only_matches_the_layer_candidates_reduction(tmp_path):
    cka_rows, _, _ = bench(tmp_path, "cka", "--iterations", "1")
    filt_rows, _, _ = bench(tmp_path, "filt", "--method", "filter-only", "--iterations", "1")
    layer_flops = next(c["flops"] for c in cka_rows[1]["candidates"] if c["type"] == "layer")
    filter_flops = next(c["flops"] for c in filt_rows[1]["candidates"] if c["method_saw"])
    base = cka_rows[0]["flops"]
    # the filter candidate removes filters until it has saved at least what the block saved
    assert base - filter_flops >= base - layer_flops
    assert filter_flops == next(c["flops"] for c in cka_rows[1]["candidates"] if c["type"] == "filter")


@pytest.mark.slow
def test_random_walk_is_seeded(tmp_path):
    paths = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1), ("d", 2)):
        rows, result, _ = bench(tmp_path, name, "--method", "random-walk", "--iterations", "4", "--seed", str(seed))
        paths[name] = result["decision_path"]
        assert all(c["similarity"] is None for r in rows[1:] for c in r["candidates"]), "no similarity is needed"
    assert paths["a"] == paths["b"]
    assert len({paths["a"], paths["c"], paths["d"]}) > 1


def test_stop_on_drop_keeps_the_last_model_within_tolerance(tmp_path):
    rows, result, out = bench(tmp_path, "drop", "--stop-on-drop", "0.5", "--iterations", "12",
                              "--p-layer", "2", "--filter-step", "0.3")
    floor = rows[0]["val_accuracy"] - 0.5  # decided on the validation split, never the test split
    assert result["stop_reason"].startswith("validation accuracy fell more than 0.5 points")
    assert rows[-1]["val_accuracy"] < floor and all(r["val_accuracy"] >= floor for r in rows[:-1])
    assert result["chosen_on"] == "val"
    assert result["final_iteration"] == len(rows) - 2
    assert result["decision_path"] == result["decision_path_all"][:-1]
    table_row = out.stdout.strip().splitlines()[-1].split(" | ")
    assert table_row[7] == result["decision_path"] or result["decision_path"] == ""


def test_config_file_options_and_the_command_line_wins(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text('method = "layer-only"\ncriterion = "l1"\niterations = 3\nstop-on-drop = 50.0\n')
    rows, result, _ = bench(tmp_path, "cfg", "--config", str(config), "--iterations", "1")
    stored = records.read_config(tmp_path / "cfg")["config"]
    assert (stored["method"], stored["criterion"], stored["iterations"], stored["stop_on_drop"]) == \
        ("layer-only", "l1", 1, 50.0)
    assert result["decision_path"] == "L"


@pytest.mark.parametrize("content, message", [
    ("iterations = 'many'\n", "--iterations"),
    ("colour = 'blue'\n", "unknown option 'colour'"),
    ("method = [\n", "is not valid TOML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = run_cli("bench", "--config", str(config), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "runs").exists()


def test_seeds_run_one_record_each(tmp_path):
    _, _, out = bench(tmp_path, "multi", "--seeds", "2", "--iterations", "1")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["multi-s0", "multi-s1"]
    assert [records.read_config(tmp_path / n)["config"]["seed"] for n in names] == [0, 1]
    assert len([line for line in out.stdout.splitlines() if re.match(r"\| digits", line)]) == 2
    assert json.loads((tmp_path / "multi-s1" / "result.json").read_text())["iterations"] == 1

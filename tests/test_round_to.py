"""Issue 12, item 4: --round-to keeps a multiple of N channels in every layer a width
candidate touches (the kept count rounded down, as Torch-Pruning's round_to does)."""

import torch

from conftest import run_cli
from harness import records
from harness.api import Unit
from harness.candidates import aligned_steps
from harness.models import load_model


def units(site, n):
    return [Unit("s", site, i) for i in range(n)]


def test_steps_bring_each_layer_down_to_the_next_multiple_lowest_scores_first():
    a, b, c = units("a", 20), units("b", 16), units("c", 4)
    scores = {**{u: 0.1 * i for i, u in enumerate(a)}, **{u: 0.05 + 0.2 * i for i, u in enumerate(b)},
              **{u: 10.0 + i for i, u in enumerate(c)}}
    steps = aligned_steps(list(scores), list(scores.values()), 8)
    # a: 20 -> 16 -> 8; b: 16 -> 8; c (narrower than 8): one unit at a time, down to one
    assert sorted(len(s) for s in steps if s[0].site == "a") == [4, 8]
    assert [len(s) for s in steps if s[0].site == "b"] == [8]
    assert [len(s) for s in steps if s[0].site == "c"] == [1, 1, 1]
    assert steps[0] == a[:4]  # the lowest mean score first, each layer's lowest units first
    assert all(len(s) == 1 for s in steps[-3:]) and steps[-1] == [c[2]]
    taken = [u for s in steps for u in s]
    assert len(set(taken)) == len(taken) and {u.index for u in taken if u.site == "c"} == {0, 1, 2}


def test_a_candidate_stops_within_one_step_of_its_target():
    from harness.candidates import fill_to_target

    def size(model):  # every unit of layer a costs 1, of b 2; the model is its own size here
        return model

    class Structure:
        def remove(self, model, us):
            return model - (1 if us[0].site == "a" else 2)

    a, b = units("a", 16), units("b", 16)
    chosen = fill_to_target(size, 100, Structure(), a + b, [0.1 * i for i in range(16)] + [0.15 * i for i in range(16)], 10,
                            round_to=8)
    removed = sum(1 if u.site == "a" else 2 for u in chosen)
    assert 10 <= removed < 10 + 16 and len([u for u in chosen if u.site == "a"]) in (0, 8)
    assert len([u for u in chosen if u.site == "b"]) in (0, 8)


def test_round_to_in_a_run_leaves_every_width_a_multiple(tmp_path):
    result = run_cli("bench", "--budget", "smoke", "--iterations", "2", "--method", "filter-only", "--round-to", "4",
                     "--runs-dir", tmp_path, "--name", "r")
    assert result.returncode == 0, result.stderr
    assert records.read_config(tmp_path / "r")["config"]["round_to"] == 4
    model = load_model(records.model_path(tmp_path / "r", 2))
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 4 == 0 for w in widths), widths
    assert records.read_iterations(tmp_path / "r")[2]["flops_reduction_pct"] > 0


def test_leaderboard_rows_say_when_widths_were_aligned():
    from harness.leaderboard.runs import options_text

    record = {"config": {"options": {}, "round_to": 8}, "option_defaults": {}}
    assert options_text(record) == "round_to=8"
    assert options_text({"config": {"options": {}, "round_to": 1}, "option_defaults": {}}) == ""
    assert options_text({"config": {"options": {}}, "option_defaults": {}}) == ""  # records from before it

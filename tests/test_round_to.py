"""Issue 12, item 4: --round-to keeps a multiple of N channels in every layer a width
candidate touches (the kept count rounded down, as Torch-Pruning's round_to does)."""

import torch

from conftest import run_cli
from harness import records
from harness.api import Unit
from harness.bench import round_kept
from harness.models import load_model


def units(site, n):
    return [Unit("s", site, i) for i in range(n)]


def test_the_kept_count_is_rounded_down_to_the_multiple():
    a, b, c = units("a", 16), units("b", 32), units("c", 4)
    per_site = {"a": a, "b": b, "c": c}
    ranked = [a[5], b[0], a[2], c[1], a[9], b[7], b[3]] + [u for u in a + b + c if u not in
                                                             (a[5], b[0], a[2], c[1], a[9], b[7], b[3])]
    chosen = [a[5], b[0], c[1]]  # a keeps 15, b keeps 31, c (narrower than 8) keeps 3
    out = round_kept(chosen, ranked, per_site, 8)
    kept = {site: len(us) - sum(u.site == site for u in out) for site, us in per_site.items()}
    assert kept == {"a": 8, "b": 24, "c": 3}
    assert a[2] in out and a[9] in out and b[7] in out and b[3] in out  # the next lowest-ranked of each layer
    assert round_kept(chosen, ranked, per_site, 1) == chosen


def test_a_layer_rounded_below_the_multiple_gets_units_back():
    a = units("a", 16)
    out = round_kept(a[:10], a, {"a": a}, 8)  # keeps 6 < 8: two of the chosen come back
    assert len(a) - len(out) == 8 and out == a[:8]


def test_round_to_in_a_run_leaves_every_width_a_multiple(tmp_path):
    result = run_cli("bench", "--budget", "smoke", "--iterations", "2", "--method", "filter-only", "--round-to", "4",
                     "--runs-dir", tmp_path, "--name", "r")
    assert result.returncode == 0, result.stderr
    assert records.read_config(tmp_path / "r")["config"]["round_to"] == 4
    model = load_model(records.model_path(tmp_path / "r", 2))
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 4 == 0 for w in widths), widths
    assert records.read_iterations(tmp_path / "r")[2]["flops_reduction_pct"] > 0

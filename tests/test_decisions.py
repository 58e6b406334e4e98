"""Decision quality: the validation split, decision records, the oracle, the validation-greedy
methods and `harness decisions`."""

import dataclasses
import json
import math

import pytest
import torch

from conftest import run_cli
from harness import records, registry
from harness.run import run_bench
from harness.config import BenchConfig
from harness.decisions import read_decisions, score, wilson, write_decisions
from harness.oracle import oracle_verdict

FAST = ["--budget", "smoke", "--scratch-epochs", "10", "--candidate-epochs", "0.3", "--finetune-epochs", "0.5"]


def bench(tmp_path, name, *args):
    result = run_cli("bench", *FAST, *args, "--runs-dir", str(tmp_path), "--name", name)
    assert result.returncode == 0, result.stderr
    return records.read_iterations(tmp_path / name), records.read_result(tmp_path / name)


# ---------------------------------------------------------------- the oracle's verdict and the statistics
def test_oracle_verdict_calls_a_gap_within_the_seeds_disagreement_a_tie():
    clear = oracle_verdict([[90.0, 90.4], [91.5, 91.3]])
    assert clear["best"] == 1 and clear["gap"] == pytest.approx(1.2) and clear["disagreement"] == pytest.approx(0.4)
    # means 90.2 and 90.5: a 0.3 gap, but one candidate's seeds differ by 0.6
    assert oracle_verdict([[89.9, 90.5], [90.4, 90.6]])["best"] is None
    assert oracle_verdict([[90.0, 90.0], [90.0, 90.0]])["best"] is None  # no gap at all
    assert oracle_verdict([[91.0, 91.0], [90.0, 90.0]])["best"] == 0


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert all(math.isnan(v) for v in wilson(0, 0))  # no decisions, no interval


def write_run(root, name, decisions, model="resnet20"):
    """A minimal run record with decisions: each is (layer, filter) candidate dicts."""
    run = root / name
    records.atomic_write_json(run / records.CONFIG_FILE, {
        "config": {"model": model, "dataset": "cifar10", "method": "cka", "criterion": "l1", "similarity": "cka",
                   "seed": 0, "iterations": len(decisions)},
        "data": {"label": "CIFAR-10 (JPEG)"}})
    rows = [{"iteration": 0, "accuracy": 90.0, "decision": None}]
    for i, (layer, filt) in enumerate(decisions, start=1):
        cands = [dict(structure="layer", **layer), dict(structure="filter", **filt)]
        for c in cands:
            val = c.pop("oracle")
            c["oracle"] = {"val_accuracy": val, "test_accuracy": c.pop("test", val)}
        rows.append({"iteration": i, "accuracy": 90.0, "decision": "L", "candidates": cands,
                     "oracle": {"epochs": 1.0}})
    for row in rows:
        records.append_iteration(run, row)
    return run


def cand(cka, acc, loss, oracle, **extra):
    return {"similarities": {"cka": cka, "rbf-cka": 1 - cka}, "val_accuracy": acc, "val_loss": loss,
            "oracle": oracle, **extra}


def test_every_selector_is_scored_on_the_same_decisions(tmp_path):
    write_run(tmp_path, "a", [
        # 1: the oracle prefers filter by 2 points; CKA and accuracy pick filter, loss picks layer
        (cand(0.90, 80.0, 0.50, [88.0, 88.2]), cand(0.95, 81.0, 0.60, [90.0, 90.2])),
        # 2: the oracle prefers layer; CKA picks filter (wrong), accuracy layer, loss layer
        (cand(0.90, 82.0, 0.40, [91.0, 91.0]), cand(0.95, 81.0, 0.60, [89.0, 89.0])),
        # 3: a tie (gap 0.1 against a 0.4 disagreement): left out of agreement, not of regret
        (cand(0.97, 80.0, 0.50, [90.0, 90.4]), cand(0.95, 81.0, 0.60, [90.3, 90.3])),
    ])
    decisions = read_decisions([tmp_path])
    assert [d.best["val"] for d in decisions] == [1, 0, None]
    rows = {r["selector"]: r for r in score(decisions, "val")}
    assert list(rows)[:2] == ["most similar: cka", "most similar: rbf-cka"]
    cka = rows["most similar: cka"]
    assert (cka["decisions"], cka["ties"], cka["agreement_pct"]) == (3, 1, 50.0)
    # regrets 0, 2 and 0 (the tie: CKA picked the layer, whose mean 90.2 is below 90.3)
    assert cka["regret"] == pytest.approx((0 + 2 + 0.1) / 3)
    assert rows["accuracy-greedy"]["agreement_pct"] == 100.0
    assert rows["loss-greedy"]["agreement_pct"] == 50.0
    assert rows["most similar: rbf-cka"]["agreement_pct"] == 50.0  # 1 - cka: the opposite choice
    assert rows["random"]["agreement_pct"] == 50.0 and math.isnan(rows["random"]["agreement_low"])
    assert rows["random"]["regret"] == pytest.approx((1.0 + 1.0 + 0.05) / 3)
    assert rows["always layer"]["agreement_pct"] == 50.0 and rows["always filter"]["agreement_pct"] == 50.0
    # paired: CKA minus accuracy-greedy agrees 50 points less on the two decisions that are not ties
    assert rows["accuracy-greedy"]["cka_minus_agreement"] == pytest.approx(-50.0)
    assert "cka_minus_agreement" not in cka


def test_the_oracle_on_the_test_split_is_scored_apart(tmp_path):
    write_run(tmp_path, "a", [
        (cand(0.90, 80.0, 0.5, [88.0, 88.0], test=[80.0, 80.0]), cand(0.95, 81.0, 0.6, [90.0, 90.0], test=[70.0, 70.0])),
    ])
    (decision,) = read_decisions([tmp_path])
    assert decision.best == {"val": 1, "test": 0}


def test_decision_pages_are_rebuilt_byte_for_byte(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a", [(cand(0.9, 80.0, 0.5, [88.0, 88.2]), cand(0.95, 81.0, 0.6, [90.0, 90.2]))] * 3)
    write_run(runs, "b", [(cand(0.9, 82.0, 0.4, [91.0, 91.0]), cand(0.95, 81.0, 0.6, [89.0, 89.0]))] * 2,
              model="resnet32")
    first = {p.name: p.read_bytes() for p in write_decisions([runs], tmp_path / "one")}
    second = {p.name: p.read_bytes() for p in write_decisions([runs], tmp_path / "two")}
    assert sorted(first) == ["decisions.csv", "decisions.html", "decisions.md", "decisions.png"]
    assert first == second
    md = first["decisions.md"].decode()
    assert "## all: oracle on the validation split" in md and "## resnet32 on CIFAR-10 (JPEG)" in md
    assert "5 decisions with an oracle from 2 runs" in md


def test_decisions_without_any_oracle_is_a_one_line_error(tmp_path):
    write_run(tmp_path, "a", [])
    result = run_cli("decisions", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no decision with an oracle" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()
    result = run_cli("decisions", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "no such run folder" in result.stderr


# ---------------------------------------------------------------- end to end on the offline demo
@pytest.mark.slow
def test_decision_records_describe_every_candidate_and_the_oracle_changes_nothing(tmp_path):
    plain, plain_result = bench(tmp_path, "plain", "--iterations", "2")
    checked, checked_result = bench(tmp_path, "checked", "--iterations", "2", "--oracle-epochs", "0.2")
    metrics = sorted(registry.registry("similarity"))
    config = records.read_config(tmp_path / "checked")
    assert config["data"]["val"] == 256 and config["data"]["splits"]["val_accuracy"] == "val"
    for row in checked[1:]:
        assert row["oracle"]["seeds"] == 2 and row["oracle"]["split"] == "val"
        for c in row["candidates"]:
            assert sorted(c["similarities"]) == metrics
            assert 0 <= c["val_accuracy"] <= 100 and c["val_loss"] > 0 and c["params"] > 0
            assert len(c["oracle"]["val_accuracy"]) == 2 and len(c["oracle"]["test_accuracy"]) == 2
        verdict = oracle_verdict([c["oracle"]["val_accuracy"] for c in row["candidates"]])
        answer = None if verdict["best"] is None else row["candidates"][verdict["best"]]["type"]
        assert row["oracle"]["answer"] == answer
    # the oracle trains copies under a forked random state: the run itself is the same
    assert plain_result["decision_path"] == checked_result["decision_path"]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("oracle", "wall_time_s", "candidates")}  # noqa: E731
    assert [strip(r) for r in plain] == [strip(r) for r in checked]
    a = torch.load(records.model_path(tmp_path / "plain", 2), weights_only=True)
    b = torch.load(records.model_path(tmp_path / "checked", 2), weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("method, key, sign", [("accuracy-greedy", "val_accuracy", 1), ("loss-greedy", "val_loss", -1)])
def test_validation_greedy_methods_keep_the_best_candidate_on_validation(tmp_path, method, key, sign):
    rows, result = bench(tmp_path, method, "--method", method, "--iterations", "3")
    for row in rows[1:]:
        cands = row["candidates"]
        best = max(range(len(cands)), key=lambda i: (sign * cands[i][key], -i))  # a tie goes to the layer
        assert row["decision"] == cands[best]["type"][0].upper()
    assert len(result["decision_path"]) == 3


def test_stop_on_drop_never_reads_the_test_split(tmp_path, monkeypatch):
    """The same run with every test label replaced by one no model predicts (test accuracy
    0% throughout, so a rule that read it would never stop on a drop): every decision, the
    stopping point and the model kept are the same; only the reported test accuracy changes."""
    settings = dict(budget="smoke", scratch_epochs=10, candidate_epochs=0.3, finetune_epochs=0.5, iterations=8,
                    stop_on_drop=0.5, p_layer=2, filter_step=0.3, runs_dir=str(tmp_path))
    run_bench(BenchConfig(name="clean", **settings))
    digits = type(registry.get("dataset", "digits"))  # each run builds its own object of the class
    load = digits.load

    def corrupted(self, *args, **kwargs):
        data = load(self, *args, **kwargs)
        data.test.labels = torch.full_like(data.test.labels, data.num_classes)
        return data

    monkeypatch.setattr(digits, "load", corrupted)
    run_bench(BenchConfig(name="corrupt", **settings))
    clean, corrupt = (records.read_iterations(tmp_path / n) for n in ("clean", "corrupt"))
    decided = lambda rows: [(r["decision"], r.get("removed"), r["val_accuracy"]) for r in rows]  # noqa: E731
    assert decided(clean) == decided(corrupt)
    assert records.read_result(tmp_path / "clean") == records.read_result(tmp_path / "corrupt")
    assert len(clean) < 9, "the clean run must stop on the drop for this test to mean anything"
    assert records.read_result(tmp_path / "clean")["stop_reason"].startswith("validation accuracy fell")
    assert all(r["accuracy"] == 0 for r in corrupt) and all(r["accuracy"] > 50 for r in clean)


def test_validation_split_is_disjoint_from_calibration_and_sized_by_the_budget(tmp_path):
    from harness.resolve import resolve
    from harness.session import open_session

    s = open_session(resolve(BenchConfig(budget="smoke")), tmp_path / "digits", progress=False)
    assert len(s.data.val) == s.cfg.val_size == 256  # the budget's
    s = open_session(resolve(BenchConfig(budget="smoke", dataset="breast-cancer")), tmp_path / "bc", progress=False)
    cfg, data = s.cfg, s.data
    assert cfg.val_size == len(data.val) == 65  # at most a fifth of the 327 training rows left
    rows = lambda split: {tuple(x.tolist()) for x in split.images}  # noqa: E731
    assert len(rows(data.val)) == 65
    assert not rows(data.val) & rows(data.calib) and not rows(data.val) & rows(data.train)


def test_impossible_validation_and_oracle_settings_are_one_line_errors(tmp_path):
    for args, message in ((["--val-size", "5000"], "--val-size 5000 would leave too little"),
                          (["--val-size", "0"], "--val-size 0 must be at least 1"),
                          (["--oracle-epochs", "-1"], "--oracle-epochs -1.0 must be 0 or more"),
                          (["--oracle-epochs", "1", "--no-record-decisions"], "needs the decision records")):
        result = run_cli("bench", "--budget", "smoke", *args, "--runs-dir", str(tmp_path / "runs"))
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1
        assert not records.read_iterations(tmp_path / "runs")


def test_records_from_before_the_validation_split_still_read():
    cfg = BenchConfig.from_dict({"model": "tiny-resnet", "stop_on_drop": 1.0})
    assert cfg.val_size == 0 and cfg.record_decisions is False
    from harness.loop import final_iteration, stop_reason

    rows = [{"iteration": 0, "accuracy": 90.0}, {"iteration": 1, "accuracy": 89.5}, {"iteration": 2, "accuracy": 88.0}]
    cfg = dataclasses.replace(cfg, iterations=5)
    assert stop_reason(cfg, rows).startswith("test accuracy fell")  # as it was started
    assert final_iteration(cfg, rows) == 1
    assert json.dumps(cfg.to_dict())  # still a record

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
from harness.decision_pages import write_decisions
from harness.decisions import CONTESTED_BELOW, read_decisions, score, tables
from harness.oracle import TIE_RULE, judged_outcomes, oracle_verdict
from harness.schema import reproducible

FAST = ["--budget", "smoke", "--scratch-epochs", "10", "--candidate-epochs", "0.3", "--finetune-epochs", "0.5"]


def bench(tmp_path, name, *args):
    result = run_cli("bench", *FAST, *args, "--runs-dir", str(tmp_path), "--name", name)
    assert result.returncode == 0, result.stderr
    return records.read_iterations(tmp_path / name), records.read_result(tmp_path / name)


# ---------------------------------------------------------------- the oracle's verdict and the statistics
def test_oracle_verdict_as_a_run_records_it_calls_a_gap_within_the_seeds_disagreement_a_tie():
    clear = oracle_verdict([[90.0, 90.4], [91.5, 91.3]])
    assert clear["best"] == 1 and clear["gap"] == pytest.approx(1.2) and clear["disagreement"] == pytest.approx(0.4)
    # means 90.2 and 90.5: a 0.3 gap, but one candidate's seeds differ by 0.6
    assert oracle_verdict([[89.9, 90.5], [90.4, 90.6]])["best"] is None
    assert oracle_verdict([[90.0, 90.0], [90.0, 90.0]])["best"] is None  # no gap at all
    assert oracle_verdict([[91.0, 91.0], [90.0, 90.0]])["best"] == 0


def write_run(root, name, decisions, model="resnet20", images=None):
    """A minimal run record with decisions: each is (layer, filter) candidate dicts; ``images``:
    the validation and test split sizes (None: not recorded)."""
    run = root / name
    sizes = {"val": images, "test": images} if images else {}
    records.atomic_write_json(run / records.CONFIG_FILE, {
        "config": {"model": model, "dataset": "cifar10", "method": "cka", "criterion": "l1", "similarity": "cka",
                   "seed": 0, "iterations": len(decisions)},
        "data": {"label": "CIFAR-10 (JPEG)", **sizes}})
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


def test_cka_is_compared_by_exact_mcnemar_with_the_discordant_decisions_and_detectable_differences(tmp_path):
    write_run(tmp_path, "a", [
        (cand(0.90, 80.0, 0.50, [88.0, 88.2]), cand(0.95, 81.0, 0.60, [90.0, 90.2])),
        (cand(0.90, 82.0, 0.40, [91.0, 91.0]), cand(0.95, 81.0, 0.60, [89.0, 89.0])),
    ])
    rows = {r["selector"]: r for r in score(read_decisions([tmp_path]), "val")}
    greedy = rows["accuracy-greedy"]
    # decision 2: accuracy-greedy right, CKA wrong; decision 1: both right
    assert (greedy["pairs"], greedy["cka_only"], greedy["other_only"], greedy["test_p"]) == (2, 0, 1, 1.0)
    assert greedy["detectable_agreement"] is None  # two decisions can never reject at 5%
    assert greedy["needed_decisions"] > 200 and greedy["needed_with_oracle"] == greedy["needed_decisions"]
    layer = rows["always layer"]  # right on decision 2 only: the mirror image
    assert (layer["cka_only"], layer["other_only"]) == (1, 1) and layer["cka_minus_agreement"] == 0
    assert -100 < layer["cka_minus_agreement_low"] < 0 < layer["cka_minus_agreement_high"] < 100
    assert rows["random"]["cka_only"] is None and rows["random"]["test_p"] == 1.0  # 1 of 2 against 50%


def test_the_report_judges_every_decision_again_with_the_evaluation_images_error(tmp_path):
    """Seeds that agree exactly and a 1-point gap: the recorded rule saw no doubt; on 2,000
    images the binomial error of each accuracy (0.93 points for the gap) makes it a tie."""
    decision = (cand(0.90, 80.0, 0.5, [90.0, 90.0]), cand(0.95, 81.0, 0.6, [91.0, 91.0]))
    write_run(tmp_path / "small", "a", [decision], images=2000)
    write_run(tmp_path / "large", "a", [decision], images=100_000)
    assert oracle_verdict([[90.0, 90.0], [91.0, 91.0]])["best"] == 1
    (small,) = read_decisions([tmp_path / "small"])
    (large,) = read_decisions([tmp_path / "large"])
    assert small.best == {"val": None, "test": None} and large.best == {"val": 1, "test": 1}
    assert small.verdict["val"]["se_images"] == pytest.approx(0.927, abs=1e-3) and small.images["val"] == 2000


def test_contested_decisions_are_scored_apart(tmp_path):
    collapse = (cand(0.90, 60.0, 0.9, [70.0, 70.2]), cand(0.95, 81.0, 0.6, [89.0, 89.2]))
    close = (cand(0.96, 82.0, 0.4, [90.0, 90.0]), cand(0.95, 81.0, 0.6, [89.2, 89.2]))
    write_run(tmp_path, "a", [collapse, close, close])
    scored = tables(read_decisions([tmp_path]))
    group = "resnet20 on CIFAR-10 (JPEG)"
    assert sorted(scored) == sorted((group, split, subset) for split in ("val", "test")
                                    for subset in ("all", "contested"))
    every = {r["selector"]: r for r in scored[(group, "val", "all")]}
    close_only = {r["selector"]: r for r in scored[(group, "val", "contested")]}
    assert CONTESTED_BELOW == 5.0 and every["always filter"]["resolved"] == 3
    assert close_only["always filter"]["resolved"] == 2 and close_only["always filter"]["agreement_pct"] == 0
    assert close_only["most similar: cka"]["agreement_pct"] == 100


def test_intervals_widen_when_the_runs_disagree(tmp_path):
    """12 decisions from 2 runs, CKA right on every decision of one and wrong on every one of
    the other: 50% either way, but the runs, not the decisions, are the independent units."""
    right = (cand(0.90, 80.0, 0.5, [88.0, 88.0]), cand(0.95, 81.0, 0.6, [90.0, 90.0]))
    wrong = (cand(0.90, 80.0, 0.5, [90.0, 90.0]), cand(0.95, 81.0, 0.6, [88.0, 88.0]))
    write_run(tmp_path, "a", [right] * 6)
    write_run(tmp_path, "b", [wrong] * 6)
    cka = {r["selector"]: r for r in score(read_decisions([tmp_path]), "val")}["most similar: cka"]
    assert cka["runs"] == 2 and cka["agreement_pct"] == 50
    assert cka["agreement_low"] < 10 and cka["agreement_high"] > 90  # independent decisions: 25.4-74.6


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
    assert "### Contested decisions (oracle gap below 5 points)" in md and "exact McNemar" in md
    header = first["decisions.csv"].decode().splitlines()[0].split(",")
    assert header[:4] == ["group", "oracle_split", "subset", "selector"]
    assert {"test_p", "cka_only", "other_only", "detectable_agreement", "needed_decisions"} <= set(header)


def test_decisions_prints_the_answer_and_the_detectable_differences(tmp_path):
    write_run(tmp_path, "a", [(cand(0.9, 80.0, 0.5, [88.0, 88.2]), cand(0.95, 81.0, 0.6, [90.0, 90.2]))] * 8)
    result = run_cli("decisions", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "oracle on the validation split, every decision: 8 decisions from 1 runs, 8 resolved" in out
    assert "Linear CKA picks the oracle's answer on 8 of the 8 decisions it resolves" in out
    assert "CKA vs accuracy-greedy: 8 paired resolved decisions, 0 discordant: detectable at 80% power: " in out
    assert "CKA vs random: 8 resolved decisions: detectable at 80% power: agreement differences of " in out
    assert (tmp_path / "out" / "decisions.md").exists()


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
    checked, checked_result = bench(tmp_path, "checked", "--iterations", "2", "--oracle-epochs", "0.5",
                                    "--oracle-seeds", "3")
    metrics = sorted(registry.registry("similarity"))
    config = records.read_config(tmp_path / "checked")
    assert config["data"]["val"] == 256 and config["data"]["splits"]["val_accuracy"] == "val"
    test_images = config["data"]["test"]
    for row in checked[1:]:
        check = row["oracle"]
        assert check["seeds"] == 3 and check["split"] == "test" and check["epochs"] == 0.5
        for c in row["candidates"]:
            assert sorted(c["similarities"]) == metrics
            assert 0 <= c["val_accuracy"] <= 100 and c["val_loss"] > 0 and c["params"] > 0
            assert len(c["oracle"]["val_accuracy"]) == 3 and len(c["oracle"]["test_accuracy"]) == 3
            # accuracies of whole images: a multiple of 100/n
            assert all(abs(a * test_images / 100 - round(a * test_images / 100)) < 1e-3
                       for a in c["oracle"]["test_accuracy"])
        # the verdict is the tie rule's on the test split with the paired error of the images
        verdict = TIE_RULE.verdict([c["oracle"]["test_accuracy"] for c in row["candidates"]], test_images,
                                   check["paired_se"]["test"])
        answer = None if verdict["best"] is None else row["candidates"][verdict["best"]]["type"]
        assert check["answer"] == answer and check["se"] == pytest.approx(verdict["se"], abs=1e-4)
        # both candidates are scored on the same images: the paired error is below the unpaired bound
        unpaired = TIE_RULE.verdict([c["oracle"]["test_accuracy"] for c in row["candidates"]], test_images)
        assert 0 <= check["paired_se"]["test"] < unpaired["se_images"]
        assert set(row["phase_s"]) == {"criterion", "candidates", "oracle", "finetune"}
        assert sum(row["phase_s"].values()) <= row["wall_time_s"] + 0.05
    assert "oracle" not in plain[1]["phase_s"]
    # the oracle trains copies under a forked random state: the run itself is the same
    assert plain_result["decision_path"] == checked_result["decision_path"]
    strip = lambda r: {k: v for k, v in reproducible(r).items() if k not in ("oracle", "candidates")}  # noqa: E731
    assert [strip(r) for r in plain] == [strip(r) for r in checked]
    a = torch.load(records.model_path(tmp_path / "plain", 2), weights_only=True)
    b = torch.load(records.model_path(tmp_path / "checked", 2), weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # the board's wall time is the method's: the checked run's oracle seconds are left out
    from harness.leaderboard.runs import method_seconds
    assert all(method_seconds(r) == pytest.approx(r["wall_time_s"] - r["phase_s"]["oracle"]) for r in checked[1:])


def test_oracle_paired_error_from_per_image_outcomes():
    # two candidates, two seeds, 4 images: the better one is right on image 0 where the other is wrong
    better = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 1]], dtype=torch.bool)
    worse = torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]], dtype=torch.bool)
    accuracies, se = judged_outcomes([worse, better])
    assert accuracies == [[50.0, 50.0], [75.0, 75.0]]
    # per-image differences (better - worse): 1, 0, 0, 0 -> sd 0.5, se 0.25 -> 25 points
    assert se == pytest.approx(25.0)
    same = torch.ones(2, 4, dtype=torch.bool)
    assert judged_outcomes([same, same])[1] == 0.0


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
                          (["--oracle-epochs", "1", "--no-record-decisions"], "needs the decision records"),
                          (["--oracle-epochs", "0.05"], "--oracle-epochs 0.05 must be 0 (off) or at least "
                                                        "--finetune-epochs 0.1"),
                          (["--oracle-epochs", "1", "--oracle-seeds", "1"], "--oracle-seeds 1 must be at least 2")):
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

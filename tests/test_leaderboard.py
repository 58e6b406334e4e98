"""Leaderboards from fake run records (schemas 1 and 2) and a fake reported.csv: no benchmark runs."""

import csv
import math
import re
import statistics
from pathlib import Path

import pytest

from harness import records, schema
from harness.errors import HarnessError
from harness.leaderboard import build_board, load_table, read_reported, read_runs, to_markdown, write_leaderboards

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, *, model="resnet20", dataset="cifar10", label="CIFAR-10 (JPEG)", method="cka",
             criterion="kl", seed=0, accuracies=(91.0, 90.5, 90.0), flops=(100.0, 80.0, 60.0), params=None,
             decisions=None, final=None, stop_on_drop=None, version=2, evaluations=None, complete=True,
             wall=10.0, hardware=None, options=None, similarity="cka", option_defaults=None) -> Path:
    """A run directory as harness/run.py writes it, built through harness.schema: config.json,
    iterations.jsonl (0 is the unpruned model), evaluations.jsonl when given, and result.json
    when complete. ``version=1`` leaves out what schema 1 lacked (data label, final_iteration,
    and the keys added since: hardware, option defaults, val_accuracy, chosen_on)."""
    run_dir = root / name
    cfg = {"model": model, "dataset": dataset, "method": method, "criterion": criterion, "similarity": similarity,
           "seed": seed, "budget": "quick", "structures": ["layer", "filter"], "stop_on_drop": stop_on_drop,
           "iterations": len(accuracies) - 1, "name": name, "runs_dir": str(root), "cache_dir": "/tmp/cache",
           "device": "cpu", "options": options or {}}
    config = schema.run_config(config=cfg, versions={"schema_version": version}, hardware=hardware or {},
                               command=["harness", "bench"], option_defaults=option_defaults or {},
                               data={"label": label})
    if not hardware:  # records from before the hardware field
        del config["hardware"]
    if version < 2:
        del config["data"], config["option_defaults"]
    records.atomic_write_json(run_dir / records.CONFIG_FILE, config)
    params = params or [f * 10 for f in flops]
    decisions = decisions or "LF" * len(accuracies)
    for i, (acc, fl, pa) in enumerate(zip(accuracies, flops, params)):
        measured = schema.Measurements(accuracy=acc, flops=fl, params=pa)
        if version >= 2:
            measured["val_accuracy"] = acc
        if i == 0:
            records.append_iteration(run_dir, schema.unpruned_iteration(measured, accuracy_before_baseline=None))
            continue
        measured |= {"flops_reduction_pct": 100 * (1 - fl / flops[0]),
                     "params_reduction_pct": 100 * (1 - pa / params[0]), "accuracy_delta": acc - accuracies[0]}
        records.append_iteration(run_dir, schema.pruned_iteration(
            measured, iteration=i, decision=decisions[i - 1], removed=[], candidates=[], wall_time_s=wall))
    for iteration, results in (evaluations or {}).items():
        records.append_evaluation(run_dir, schema.evaluation(iteration, results, {}))
    if complete:
        last = len(accuracies) - 1
        kept = last if final is None else final
        result = schema.result(stop_reason="done", decision_path=decisions[:kept], final_iteration=kept,
                               iterations=last, decision_path_all=decisions[:last], chosen_on="val")
        if version < 2:  # schema 1: iterations is the kept one, nothing else
            result = {k: result[k] for k in ("stop_reason", "decision_path")} | {"iterations": kept}
        records.atomic_write_json(run_dir / records.RESULT_FILE, result)
    return run_dir


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_reported(path: Path, rows: list[dict]) -> Path:
    fields = ["data", "model", "method", "flops_reduction_pct", "params_reduction_pct", "baseline_accuracy",
              "accuracy", "accuracy_delta", "citation", "note"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" for k in fields} | row)
    return path


def test_a_run_row_shows_the_kept_iteration_not_the_last(tmp_path):
    # under --stop-on-drop iteration 3 fell too far: the run keeps iteration 2
    make_run(tmp_path, "drop", accuracies=(91.0, 90.8, 90.6, 80.0), flops=(100.0, 80.0, 50.0, 30.0),
             decisions="LFL", final=2, stop_on_drop=1.0)
    df = load_table([tmp_path])
    assert len(df) == 1
    row = df.iloc[0]
    assert row["iterations"] == 2 and row["decision_path"] == "LF"
    assert row["flops_reduction_pct"] == pytest.approx(50.0)
    assert row["accuracy"] == pytest.approx(90.6) and row["accuracy_delta"] == pytest.approx(-0.4)
    assert row["baseline_accuracy"] == pytest.approx(91.0)
    assert row["wall_time_s"] == pytest.approx(30.0), "the time of every iteration the run spent"
    text = to_markdown(df.drop(columns=["run"]))
    assert "| CIFAR-10 (JPEG) | resnet20 | cka | kl | cka | 0 | 2 | LF | 50.00 |" in text


def test_load_table_has_one_row_per_run_and_flags_incomplete_runs(tmp_path):
    make_run(tmp_path, "a", seed=0)
    make_run(tmp_path, "b", seed=1, complete=False)
    df = load_table([tmp_path, tmp_path / "a"])  # a run named twice counts once
    assert sorted(df["run"]) == ["a", "b"]
    assert dict(zip(df["run"], df["complete"])) == {"a": True, "b": False}


def test_seed_runs_merge_into_one_row_with_mean_and_sample_std(tmp_path):
    finals = {0: 89.0, 1: 88.0, 2: 86.0}
    for seed, acc in finals.items():
        make_run(tmp_path / "runs", f"s{seed}", seed=seed, accuracies=(91.0, 90.0, acc),
                 decisions=["LF", "FL", "LL"][seed])
    make_run(tmp_path / "runs", "l1", criterion="l1", accuracies=(91.0, 90.0, 85.0))  # another configuration
    make_run(tmp_path / "runs", "unfinished", seed=5, complete=False)  # not counted
    write_leaderboards([tmp_path / "runs"], tmp_path / "lb")
    rows = read_csv(tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.csv")
    assert len(rows) == 2
    merged = next(r for r in rows if r["criterion"] == "kl")
    deltas = [acc - 91.0 for acc in finals.values()]
    assert int(merged["seeds"]) == 3
    assert float(merged["accuracy_delta_mean"]) == pytest.approx(statistics.mean(deltas))
    assert float(merged["accuracy_delta_std"]) == pytest.approx(statistics.stdev(deltas))  # sample std
    assert float(merged["flops_reduction_pct_mean"]) == pytest.approx(40.0)
    assert float(merged["flops_reduction_pct_std"]) == pytest.approx(0.0)
    assert merged["decision_path"] == "LF / FL / LL" and merged["source"] == "measured"
    single = next(r for r in rows if r["criterion"] == "l1")
    assert single["seeds"] == "1" and single["accuracy_delta_std"] == ""
    md = (tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.md").read_text()
    mean, std = statistics.mean(deltas), statistics.stdev(deltas)
    assert f"| {mean:+.2f} ± {std:.2f} |" in md and "| LF / FL / LL |" in md


def test_evaluator_columns_come_from_the_kept_iteration(tmp_path):
    evaluations = {
        0: {"robustness": {"accuracy": 50.0}},
        2: {"robustness": {"accuracy": 41.5, "delta": {"accuracy": -8.5}, "per_class": [1, 2], "attack": "fgsm"},
            "energy": {"kwh": 0.002}},
        3: {"robustness": {"accuracy": 10.0}},  # past the kept model
    }
    make_run(tmp_path / "runs", "ev", accuracies=(91.0, 90.8, 90.6, 80.0), flops=(100.0, 80.0, 50.0, 30.0),
             final=2, stop_on_drop=1.0, evaluations=evaluations)
    make_run(tmp_path / "runs", "plain", seed=0, criterion="l1")
    row = load_table([tmp_path / "runs"]).set_index("run").loc["ev"]
    assert row["robustness.accuracy"] == 41.5 and row["robustness.accuracy_delta"] == -8.5
    assert row["energy.kwh"] == 0.002
    write_leaderboards([tmp_path / "runs"], tmp_path / "lb")
    rows = read_csv(tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.csv")
    header = list(rows[0])
    assert {"robustness.accuracy_mean", "robustness.accuracy_delta_mean", "energy.kwh_mean"} <= set(header)
    assert not any(h.startswith("robustness.per_class") or h.startswith("robustness.attack") for h in header)
    by_criterion = {r["criterion"]: r for r in rows}
    assert float(by_criterion["kl"]["robustness.accuracy_mean"]) == 41.5
    assert by_criterion["l1"]["robustness.accuracy_mean"] == ""
    assert "\n## Evaluator: robustness\n" in (tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.md").read_text()


def test_schema_1_records_load(tmp_path):
    make_run(tmp_path, "old", version=1, accuracies=(91.0, 90.0, 89.0, 88.0), flops=(100.0, 90.0, 80.0, 70.0))
    row = load_table([tmp_path]).iloc[0]
    assert row["data"] == "cifar10", "no data label: the data set's name"
    assert row["iterations"] == 3 and row["flops_reduction_pct"] == pytest.approx(30.0) and row["complete"]
    assert write_leaderboards([tmp_path], tmp_path / "lb")
    assert (tmp_path / "lb" / "tables" / "cifar10_resnet20.csv").exists()


def test_jpeg_and_original_data_never_share_a_table(tmp_path):
    make_run(tmp_path / "runs", "jpeg", label="CIFAR-10 (JPEG)")
    make_run(tmp_path / "runs", "orig", label="CIFAR-10")
    written = write_leaderboards([tmp_path / "runs"], tmp_path / "lb")
    tables = tmp_path / "lb" / "tables"
    assert {p.name for p in written if p.suffix == ".csv"} == {"cifar10-jpeg_resnet20.csv", "cifar10_resnet20.csv"}
    assert [r["data"] for r in read_csv(tables / "cifar10-jpeg_resnet20.csv")] == ["CIFAR-10 (JPEG)"]
    assert [r["data"] for r in read_csv(tables / "cifar10_resnet20.csv")] == ["CIFAR-10"]


def test_reported_rows_appear_only_in_their_group_and_are_marked(tmp_path):
    make_run(tmp_path / "runs", "jpeg", label="CIFAR-10 (JPEG)")
    make_run(tmp_path / "runs", "orig", label="CIFAR-10")
    reported = write_reported(tmp_path / "reported.csv", [
        {"data": "CIFAR-10", "model": "resnet20", "method": "cka", "flops_reduction_pct": "50.5",
         "accuracy_delta": "+0.19", "citation": "Paper A, Table 1", "note": "not verified"},
        {"data": "CIFAR-10", "model": "resnet56", "method": "HRank", "flops_reduction_pct": "50.0",
         "accuracy": "93.17", "citation": "Paper B"},
    ])
    write_leaderboards([tmp_path / "runs"], tmp_path / "lb", reported=reported)
    tables = tmp_path / "lb" / "tables"
    original = read_csv(tables / "cifar10_resnet20.csv")
    assert [(r["source"], r["citation"]) for r in original] == [("reported", "Paper A, Table 1"), ("measured", "")]
    assert original[0]["accuracy_delta_mean"] == "0.19" and original[0]["params_reduction_pct_mean"] == ""
    assert original[0]["note"] == "not verified" and original[0]["seeds"] == ""
    assert "| reported (Paper A, Table 1) |" in (tables / "cifar10_resnet20.md").read_text()
    page = (tables / "cifar10_resnet20.html").read_text()
    assert page.count('<tr class="reported">') == 1 and page.count('<tr class="measured">') == 1
    for name in ("cifar10-jpeg_resnet20.csv", "cifar10-jpeg_resnet20.md", "cifar10-jpeg_resnet20.html"):
        text = (tables / name).read_text()
        assert "Paper A" not in text and "reported (" not in text and 'class="reported"' not in text
    # a group with reported rows only still gets its table and plot
    only = read_csv(tables / "cifar10_resnet56.csv")
    assert [(r["method"], r["source"], r["accuracy_mean"]) for r in only] == [("HRank", "reported", "93.17")]
    assert (tables / "cifar10_resnet56.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "cifar10_resnet56.html" in (tmp_path / "lb" / "index.html").read_text()


def test_reported_csv_without_citation_or_with_bad_number_is_an_error(tmp_path):
    make_run(tmp_path / "runs", "a")
    no_citation = write_reported(tmp_path / "a.csv", [{"data": "CIFAR-10", "model": "resnet20", "method": "x"}])
    with pytest.raises(HarnessError, match="needs a citation"):
        write_leaderboards([tmp_path / "runs"], tmp_path / "lb", reported=no_citation)
    bad = write_reported(tmp_path / "b.csv", [{"data": "CIFAR-10", "model": "resnet20", "method": "x",
                                               "accuracy": "93%", "citation": "c"}])
    with pytest.raises(HarnessError, match="accuracy '93%' is not a number"):
        write_leaderboards([tmp_path / "runs"], tmp_path / "lb", reported=bad)


@pytest.fixture
def three_methods(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "cka", method="cka", accuracies=(91.0, 90.0, 90.5), flops=(100.0, 60.0, 40.0))  # 60% reduction
    make_run(runs, "rw", method="random-walk", accuracies=(91.0, 89.0, 88.0), flops=(100.0, 70.0, 55.0))  # 45%
    make_run(runs, "rnd", method="cka", criterion="random", accuracies=(91.0, 90.0, 89.5), flops=(100.0, 80.0, 75.0))
    return runs


def methods_in(out: Path) -> list[str]:
    return [(r["method"], r["criterion"]) for r in read_csv(out / "tables" / "cifar10-jpeg_resnet20.csv")]


def test_default_sort_is_flops_reduction_descending_and_sort_takes_any_column(three_methods, tmp_path):
    write_leaderboards([three_methods], tmp_path / "a")
    assert methods_in(tmp_path / "a") == [("cka", "kl"), ("random-walk", "kl"), ("cka", "random")]
    write_leaderboards([three_methods], tmp_path / "b", sort="accuracy")
    assert methods_in(tmp_path / "b") == [("random-walk", "kl"), ("cka", "random"), ("cka", "kl")]
    write_leaderboards([three_methods], tmp_path / "c", sort="-method")
    assert [m for m, _ in methods_in(tmp_path / "c")] == ["random-walk", "cka", "cka"]
    assert 'aria-sort="descending">method' in (tmp_path / "c" / "tables" / "cifar10-jpeg_resnet20.html").read_text()


def test_where_filters_combine_with_and(three_methods, tmp_path):
    write_leaderboards([three_methods], tmp_path / "a", where=["method=cka"])
    assert methods_in(tmp_path / "a") == [("cka", "kl"), ("cka", "random")]
    write_leaderboards([three_methods], tmp_path / "b", where=["method=cka", "criterion!=random"])
    assert methods_in(tmp_path / "b") == [("cka", "kl")]
    write_leaderboards([three_methods], tmp_path / "c", where=["flops_reduction_pct>=40"])
    assert methods_in(tmp_path / "c") == [("cka", "kl"), ("random-walk", "kl")]
    write_leaderboards([three_methods], tmp_path / "d", where=["accuracy_delta < -2"])
    assert methods_in(tmp_path / "d") == [("random-walk", "kl")]


@pytest.mark.parametrize("kwargs, message", [
    ({"sort": "-speed"}, "unknown column 'speed' in --sort; valid columns: model, data, method"),
    ({"where": ["speed>1"]}, "unknown column 'speed' in --where; valid columns: model, data, method"),
    ({"where": ["method~cka"]}, "is not COLUMN OP VALUE"),
    ({"where": ["accuracy>high"]}, "accuracy is numeric and 'high' is not a number"),
    ({"where": ["method>cka"]}, "method is text; use = or !="),
])
def test_bad_sort_or_where_is_a_harness_error(three_methods, tmp_path, kwargs, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(")) as err:
        write_leaderboards([three_methods], tmp_path / "lb", **kwargs)
    if "valid columns" in message:
        assert "flops_reduction_pct" in str(err.value) and "source" in str(err.value)
    assert not (tmp_path / "lb").exists(), "nothing is written on bad input"


def test_html_page_has_the_table_the_plot_and_the_sort_script(three_methods, tmp_path):
    write_leaderboards([three_methods], tmp_path / "lb")
    page = (tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and '<table class="board">' in page
    assert page.count("<tr class=\"measured\">") == 3
    assert '<th data-type="num" title="flops_reduction_pct" aria-sort="descending">FLOPs reduction %</th>' in page
    assert 'data-value="60.0">60.00</td>' in page
    assert "<script>" in page and 'addEventListener("click"' in page and "localeCompare" in page
    assert '<img src="cifar10-jpeg_resnet20.png"' in page
    assert "http://" not in page and "https://" not in page, "no external assets"
    index = (tmp_path / "lb" / "index.md").read_text()
    assert "[HTML](tables/cifar10-jpeg_resnet20.html)" in index and "**measured**" in index and "**reported**" in index


def test_two_builds_are_byte_identical_and_stale_pages_go(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(2):
        make_run(runs, f"s{seed}", seed=seed, accuracies=(91.0, 90.0, 89.0 + seed))
    make_run(runs, "orig", label="CIFAR-10", model="resnet56")
    reported = write_reported(tmp_path / "reported.csv", [
        {"data": "CIFAR-10", "model": "resnet56", "method": "cka", "flops_reduction_pct": "72.67",
         "accuracy_delta": "0.19", "citation": "Paper"}])
    first = write_leaderboards([runs], tmp_path / "one", reported=reported)
    second = write_leaderboards([runs], tmp_path / "two", reported=reported)
    relative = lambda paths, base: sorted(p.relative_to(base) for p in paths)  # noqa: E731
    assert relative(first, tmp_path / "one") == relative(second, tmp_path / "two")
    assert {p.suffix for p in first} == {".md", ".csv", ".html", ".png"} and len(first) == 2 + 2 * 4
    for path in first:
        twin = tmp_path / "two" / path.relative_to(tmp_path / "one")
        assert path.read_bytes() == twin.read_bytes(), path.name
    # the resnet56 group is gone from the records and the figures: its pages go, other files stay
    (tmp_path / "one" / "notes.txt").write_text("mine")
    write_leaderboards([runs / "s0", runs / "s1"], tmp_path / "one", reported=tmp_path / "none.csv")
    assert sorted(p.name for p in (tmp_path / "one" / "tables").iterdir()) == [
        f"cifar10-jpeg_resnet20.{ext}" for ext in ("csv", "html", "md", "png")]
    assert (tmp_path / "one" / "notes.txt").read_text() == "mine"


def test_plot_is_a_valid_png_without_software_metadata(three_methods, tmp_path):
    import matplotlib.image

    write_leaderboards([three_methods], tmp_path / "lb")
    png = tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.png"
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and b"Software" not in data
    height, width, _ = matplotlib.image.imread(png).shape
    assert width > 600 and height > 300


def test_no_records_and_no_reported_figures_write_nothing(tmp_path):
    assert write_leaderboards([tmp_path / "missing"], tmp_path / "lb") == []
    make_run(tmp_path / "runs", "running", complete=False)
    assert write_leaderboards([tmp_path / "runs"], tmp_path / "lb") == []
    assert not (tmp_path / "lb").exists()


def test_committed_reported_figures_are_cifar10_rows_with_citations():
    rows = read_reported(ROOT / "leaderboards" / "reported.csv")
    assert rows and {r["data"] for r in rows} == {"CIFAR-10"}
    assert all(r["source"] == "reported" and r["citation"] for r in rows)
    assert all(0 < r["flops_reduction_pct"] < 100 for r in rows)
    paper = {(r["model"], r["method"], r["flops_reduction_pct"]): r for r in rows if "2506.04513" in r["citation"]}
    assert paper[("resnet56", "cka", 72.67)]["accuracy_delta"] == pytest.approx(0.19)
    assert {("resnet56", "cka", 86.37), ("resnet110", "cka", 95.82), ("resnet32", "cka", 61.99),
            ("resnet32", "random-walk", 55.83), ("resnet56", "random-walk", 69.64)} <= set(paper)
    # checked against Tables I, III and IV of the paper's text: each row names its table and has its delta
    assert all("Table" in r["citation"] and "not verified" not in r["note"] for r in paper.values())
    assert all(not math.isnan(r["accuracy_delta"]) for r in paper.values())
    table3 = {(m, method): paper[(m, method, f)]["accuracy_delta"] for m, method, f in (
        ("resnet32", "random-walk", 55.83), ("resnet32", "cka", 61.99), ("resnet44", "random-walk", 69.74),
        ("resnet44", "cka", 71.31), ("resnet56", "random-walk", 69.64), ("resnet56", "cka", 72.67))}
    assert table3 == {("resnet32", "random-walk"): 0.12, ("resnet32", "cka"): 0.09, ("resnet44", "random-walk"): 0.21,
                      ("resnet44", "cka"): 0.66, ("resnet56", "random-walk"): 0.19, ("resnet56", "cka"): 0.19}
    assert paper[("resnet56", "cka", 86.37)]["accuracy_delta"] == -1.36
    assert paper[("resnet110", "cka", 95.82)]["accuracy_delta"] == -2.91


def test_hardware_column_says_where_wall_times_were_measured(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "gpu-s0", hardware={"device": "cuda", "name": "NVIDIA H100 80GB HBM3", "threads": 1})
    make_run(root, "gpu-s1", seed=1, hardware={"device": "cuda", "name": "NVIDIA H200", "threads": 4})
    make_run(root, "cpu", method="layer-only", hardware={"device": "cpu", "name": "Xeon", "threads": 2})
    make_run(root, "old", method="filter-only")  # records from before the hardware field
    board = build_board(read_runs([root]), []).set_index("method")
    assert board.loc["cka", "hardware"] == "NVIDIA H100 80GB HBM3 / NVIDIA H200"
    assert board.loc["cka", "seeds"] == 2, "hardware is not configuration: the seeds still merge"
    assert board.loc["layer-only", "hardware"] == "CPU, 2 threads"
    assert board.loc["filter-only", "hardware"] == ""
    assert board.loc["cka", "stop"] == "K=2"


def test_stop_column_names_the_stopping_rules(tmp_path):
    make_run(tmp_path / "runs", "tolerant", stop_on_drop=1.0)
    assert load_table([tmp_path / "runs"])["stop"].tolist() == ["K=2, drop > 1"]


def test_records_grouped_in_folders_are_found(tmp_path):
    root = tmp_path / "records"
    make_run(root / "table3", "a")
    make_run(root / "table3", "b", method="layer-only")
    make_run(root, "c", method="filter-only")
    assert sorted(load_table([root])["run"]) == ["a", "b", "c"]
    assert sorted(load_table([root, root / "table3", root / "table3" / "a"])["run"]) == ["a", "b", "c"]


def test_plot_series_tell_apart_what_varies_within_a_method(tmp_path):
    from harness.leaderboard import series_labels

    root = tmp_path / "runs"
    make_run(root, "kl", criterion="kl")
    make_run(root, "l1", criterion="l1")
    make_run(root, "lo", method="layer-only")
    board = build_board(read_runs([root]), [])
    measured = board[board["source"] == "measured"]
    assert sorted(series_labels(measured)) == ["cka · kl", "cka · l1", "layer-only"]


def test_a_corrupt_record_is_skipped_with_a_warning_naming_it(tmp_path):
    from conftest import run_cli

    runs = tmp_path / "runs"
    good = run_cli("bench", "--budget", "smoke", "--iterations", "1", "--runs-dir", str(runs), "--name", "good")
    assert good.returncode == 0, good.stderr
    bad = runs / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"config": {"model": "tiny-resnet"')  # cut short by a crash
    (bad / "iterations.jsonl").write_text('{"iteration": 0}\n')
    result = run_cli("leaderboard", "--runs", str(runs), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"harness: warning: skipping the corrupt run record {bad} (")
    assert result.stderr.count("\n") == 1
    page = (tmp_path / "out" / "tables" / "digits-scikit-learn_tiny-resnet.md").read_text()
    assert re.search(r"\| cka \| kl \| cka \| [0-9.]+ \|", page)  # the method, then its FLOPs reduction


def test_schema_reads_an_old_record(tmp_path):
    # schema 1: no data label, no final_iteration, no val_accuracy, no evaluations, no non_finite
    run = records.RunRecord.read(make_run(tmp_path, "old", version=1, accuracies=(91.0, 90.0, 89.0), final=1))
    assert run.complete and run.final_iteration == 1 and run.result["final_iteration"] == 1
    assert [r["iteration"] for r in run.through_final] == [0, 1]
    assert run.data_label == "cifar10" and run.evaluations == {}
    assert "val_accuracy" not in run.iterations[1] and "non_finite" not in run.iterations[1]
    unfinished = records.RunRecord.read(make_run(tmp_path, "running", complete=False))
    assert not unfinished.complete and unfinished.final_iteration == 2, "the last recorded while it runs"
    assert unfinished.data_label == "CIFAR-10 (JPEG)"
    assert records.RunRecord.read(tmp_path / "missing") is None, "no iteration 0 yet"


def test_schema_constructors_rebuild_a_committed_record_exactly():
    """As read (the committed records are older than ``type``: the reader names it so)."""
    run_dir = ROOT / "leaderboards" / "records" / "decisions" / "decisions-resnet32-cifar10-cka-kl-cka-s4"
    run = records.RunRecord.read(run_dir)
    measured = set(schema.Measurements.__annotations__)
    base = run.iterations[0]
    assert schema.unpruned_iteration({k: v for k, v in base.items() if k in measured},
                                     base["accuracy_before_baseline"]) == base
    for row in run.iterations[1:]:
        candidates = [schema.candidate(**{k: c[k] for k in ("type", "similarity", "units", "flops", "params",
                                                            "finetuned", "method_saw")},
                                       info={k: c[k] for k in ("similarities", "val_accuracy", "val_loss", "oracle")})
                      for c in row["candidates"]]
        assert candidates == row["candidates"]
        assert schema.pruned_iteration({k: v for k, v in row.items() if k in measured}, iteration=row["iteration"],
                                       decision=row["decision"], removed=row["removed"], candidates=candidates,
                                       wall_time_s=row["wall_time_s"], oracle=row["oracle"]) == row
    assert schema.result(**run.result) == run.result
    assert schema.run_config(**run.config) == run.config


def test_evaluator_tables_sit_below_the_main_one(tmp_path):
    runs = tmp_path / "runs"
    fgsm = {2: {"fgsm": {"eps_1_255": 35.0, "delta": {"eps_1_255": -3.9}}}}
    make_run(runs, "attacked", criterion="kl", evaluations=fgsm | {2: fgsm[2] | {"latency": {"latency_ms": 0.5}}})
    make_run(runs, "timed", criterion="l1", evaluations={2: {"latency": {"latency_ms": 0.25}}})
    make_run(runs, "plain", criterion="random")
    make_run(runs, "other", model="resnet56")  # a page without evaluator numbers
    write_leaderboards([runs], tmp_path / "lb")
    tables = tmp_path / "lb" / "tables"
    md = (tables / "cifar10-jpeg_resnet20.md").read_text()
    main, fgsm_md, latency_md = md.split("\n## Evaluator: ")
    assert fgsm_md.startswith("fgsm\n") and latency_md.startswith("latency\n"), "one per evaluator, in name order"
    assert "fgsm" not in main.split("![")[1] and "latency" not in main.split("![")[1], "no evaluator column in the main one"
    assert main.count("| measured |") == 3 and "| model |" not in main, "model and data are the page's title"
    assert "| method | criterion | similarity | budget | stop | hardware | seeds | eps_1_255 | eps_1_255 Δ |" in fgsm_md
    assert fgsm_md.count("\n| cka | ") == 1 and "| 35 | -3.9 |" in fgsm_md, "only the rows with the evaluator's numbers"
    assert latency_md.count("\n| cka | ") == 2 and "| 0.25 |" in latency_md and "| 0.5 |" in latency_md
    page = (tables / "cifar10-jpeg_resnet20.html").read_text()
    assert page.count('<table class="board">') == 3 and page.index("<figure>") < page.index('id="evaluator-fgsm"')
    assert page.index('id="evaluator-fgsm"') < page.index('id="evaluator-latency"') < page.index("<script>")
    assert '<th data-type="num" title="fgsm.eps_1_255_delta">eps_1_255 Δ</th>' in page
    header = list(read_csv(tables / "cifar10-jpeg_resnet20.csv")[0])
    assert {"model", "fgsm.eps_1_255_mean", "latency.latency_ms_mean"} <= set(header), "the CSV keeps every column"
    plain = (tables / "cifar10-jpeg_resnet56.md").read_text() + (tables / "cifar10-jpeg_resnet56.html").read_text()
    assert "Evaluator:" not in plain and "latency" not in plain


def test_style_sheet_and_sort_script_come_from_package_files(three_methods, tmp_path):
    from importlib import resources

    static = resources.files("harness.leaderboard").joinpath("static")
    css, js = (static.joinpath(name).read_text(encoding="utf-8").strip() for name in ("board.css", "board.js"))
    assert "table.board th" in css and 'addEventListener("click"' in js
    write_leaderboards([three_methods], tmp_path / "lb")
    page = (tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.html").read_text()
    assert f"<style>\n{css}\n</style>" in page and f"<script>\n{js}\n</script>" in page
    assert f"<style>\n{css}\n</style>" in (tmp_path / "lb" / "index.html").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"harness.leaderboard.static" = ["board.css", "board.js"]' in pyproject, "shipped as package data"


def test_wall_time_that_includes_the_oracle_says_so_with_its_share_of_the_training(tmp_path):
    from harness.leaderboard.runs import oracle_share

    cfg = {"candidate_epochs": 0.5, "finetune_epochs": 1.0}
    tuned = {"finetuned": True}
    rows = [{"iteration": 0}] + [{"iteration": i, "candidates": [tuned, tuned], "oracle": {"epochs": 0.5, "seeds": 2}}
                                 for i in (1, 2)]
    # per iteration the oracle trains 2 candidates x 2 seeds x 0.5 epoch, the method 2 x 0.5 + 1
    assert oracle_share(cfg, rows) == pytest.approx(0.5)
    assert oracle_share(cfg, [{"iteration": 0}, {"iteration": 1, "candidates": [tuned, tuned]}]) is None
    for seed in (0, 1):
        make_run(tmp_path / "runs", f"s{seed}", seed=seed)
    checked = tmp_path / "runs" / "s1"
    rows = records.read_iterations(checked)
    (checked / records.ITERATIONS_FILE).unlink()
    for row in rows:
        if row["iteration"]:
            row |= {"candidates": [tuned, tuned], "oracle": {"epochs": 1.0, "seeds": 2}}
        records.append_iteration(checked, row)
    write_leaderboards([tmp_path / "runs"], tmp_path / "lb")
    (row,) = read_csv(tmp_path / "lb" / "tables" / "cifar10-jpeg_resnet20.csv")
    # no candidate or fine-tune epochs in these configs: the oracle is all the training there is
    assert row["note"] == ("wall time includes the oracle (--oracle-epochs) on 1 of 2 runs: about 100% of their "
                           "training epochs; the records do not time it apart")


def test_a_setting_newer_than_a_record_does_not_split_its_configuration(tmp_path):
    """A run recorded before a setting existed has the value runs had then (Setting.old_records,
    else the default): its seeds merge with a newer run's at that value, not at another."""
    from harness.config import BenchConfig

    root = tmp_path / "runs"
    make_run(root, "old", seed=0)
    newer = make_run(root, "new", seed=1)
    config = records.read_config(newer)
    defaults = BenchConfig().to_dict()
    config["config"] |= {k: defaults[k] for k in ("label_smoothing", "oracle_seeds", "distill_temperature")}
    config["config"] |= {"cuda_graphs": "off", "precision": "fp32", "distill": 0.0}  # as runs were before them
    records.atomic_write_json(newer / records.CONFIG_FILE, config)
    make_run(root, "distilled", seed=2)
    config = records.read_config(root / "distilled")
    config["config"]["distill"] = 0.5  # runs before --distill existed did not distil
    records.atomic_write_json(root / "distilled" / records.CONFIG_FILE, config)
    board = build_board(read_runs([root]), [])
    assert sorted(board["seeds"]) == [1, 2]
    assert board.loc[board["seeds"] == 2, "decision_path"].item() == "LF / LF"

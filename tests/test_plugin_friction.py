"""Issue 26: the friction a package written from today's docs met: a traceback when asked,
blame on the plugin whose code raised, one line per failure, invariants checked at run time,
typed options in --help, records that say ``type``, a public way to get a plugin in tests,
leaderboards that count seeds and key rows on a run's own plugins' options, and warnings that
say what was left out. Plugins fail here by patching built-in plugin classes: every run
builds its objects from the registered classes."""

import json

import pytest

from conftest import run_cli
from harness import hookimpl, records, registry, schema
from harness.api import Criterion, Option
from harness.errors import HarnessError
from harness.leaderboard import build_board, read_runs, write_leaderboards
from harness_plugins.criteria import L1Criterion
from harness_plugins.methods import CKAGuided
from harness_plugins.models.cifar_resnet import CifarResNetFamily
from harness_plugins.similarity import LinearCKA, ProcrustesShape
from test_leaderboard import make_run

SMOKE = ("bench", "--budget", "smoke", "--iterations", "1")


def failing_scores(self, model, structure, units, ctx):
    return [units[len(units)]]  # off by one, as a plugin bug would be


@pytest.mark.parametrize("how", ["--traceback", "HARNESS_TRACEBACK"])
def test_a_traceback_is_printed_when_asked(monkeypatch, tmp_path, how):
    monkeypatch.setattr(L1Criterion, "scores", failing_scores)
    args = [*SMOKE, "--criterion", "l1", "--runs-dir", tmp_path, "--name", "t"]
    plain = run_cli(*args)
    assert plain.returncode == 4 and "Traceback" not in plain.stderr
    asked = run_cli("--traceback", *args[:-1], "t2") if how == "--traceback" else \
        run_cli(*args[:-1], "t2", env={"HARNESS_TRACEBACK": "1"})
    assert asked.returncode == 4
    assert "Traceback (most recent call last)" in asked.stderr and "in failing_scores" in asked.stderr
    assert "IndexError: list index out of range" in asked.stderr
    assert asked.stderr.strip().splitlines()[-1].startswith("harness: error: criterion 'l1' (from prunebench")


def test_a_plugin_failure_names_the_line_that_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(L1Criterion, "scores", failing_scores)
    result = run_cli(*SMOKE, "--criterion", "l1", "--runs-dir", tmp_path)
    error = result.stderr.strip().splitlines()[-1]
    assert "failed: IndexError: list index out of range (at test_plugin_friction.py:" in error


def test_a_model_family_failing_inside_a_structures_surgery_is_blamed_for_it(monkeypatch, tmp_path):
    build = CifarResNetFamily.build

    def fussy(self, arch):
        if any(len(stage["blocks"]) < 3 for stage in arch["stages"]):
            raise KeyError("blocks")  # a family that cannot build a pruned spec
        return build(self, arch)

    monkeypatch.setattr(CifarResNetFamily, "build", fussy)
    result = run_cli(*SMOKE, "--runs-dir", tmp_path, "--name", "f")
    assert result.returncode == 4, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("harness: error: model 'tiny-resnet' (from prunebench 0.1.0) failed: KeyError: 'blocks'")
    assert "structure" not in error


def test_a_failing_metric_is_one_warning_not_a_nested_one(monkeypatch, tmp_path):
    def broken(self, x, y):
        raise RuntimeError("singular matrix")

    monkeypatch.setattr(ProcrustesShape, "__call__", broken)
    result = run_cli(*SMOKE, "--runs-dir", tmp_path, "--name", "n")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "procrustes" in line]
    assert warnings and all(line.startswith("harness: warning: similarity 'procrustes' (from prunebench 0.1.0) "
                                            "failed: RuntimeError: singular matrix (at ") for line in warnings)
    assert "PluginError" not in result.stderr and result.stderr.count("failed") == len(warnings)


def test_the_runs_own_metric_outside_its_range_stops_the_run_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(LinearCKA, "__call__", lambda self, x, y: 1.79)
    result = run_cli(*SMOKE, "--runs-dir", tmp_path, "--name", "r")
    assert result.returncode == 4
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith("harness: error: similarity 'cka' (from prunebench 0.1.0) gave 1.79, outside its "
                            "declared range (a finite number, at most its maximum 1)")
    assert [r["iteration"] for r in records.read_iterations(tmp_path / "r")] == [0]


@pytest.mark.parametrize("scores, said", [
    (lambda units: [1.0] * (len(units) - 1), "gave {short} scores for the {n} units of structure 'resnet-block'"),
    (lambda units: [float("nan")] * len(units), "gave nan for unit 0 of the {n} units of structure 'resnet-block'"),
    (lambda units: [None] * len(units), "gave scores that are not numbers (TypeError: "),
])
def test_a_criterion_giving_other_than_one_finite_number_per_unit_stops_the_run_in_one_line(
        monkeypatch, tmp_path, scores, said):
    """Fewer scores than units ran to exit 0 (zip left units out of the ranking), and NaN scores
    ranked the units arbitrarily."""
    seen = []

    def given(self, model, structure, units, ctx):
        seen.append(len(units))
        return scores(units)

    monkeypatch.setattr(L1Criterion, "scores", given)
    result = run_cli(*SMOKE, "--criterion", "l1", "--runs-dir", tmp_path, "--name", "c")
    assert result.returncode == 4, result.stderr
    (error,) = result.stderr.strip().splitlines()
    n = seen[0]
    assert error.startswith("harness: error: criterion 'l1' (from prunebench 0.1.0) "
                            + said.format(short=n - 1, n=n)), error
    assert "; a criterion gives one finite number per unit: check it with harness check-plugin criterion l1; " \
           "the run so far is kept" in error, error
    assert [r["iteration"] for r in records.read_iterations(tmp_path / "c")] == [0]


def test_a_describing_metric_outside_its_range_is_recorded_as_null_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(ProcrustesShape, "__call__", lambda self, x, y: float("nan"))
    result = run_cli(*SMOKE, "--runs-dir", tmp_path, "--name", "d")
    assert result.returncode == 0, result.stderr
    assert "similarity 'procrustes' (from prunebench 0.1.0) gave nan, outside its declared range" in result.stderr
    (row,) = records.read_iterations(tmp_path / "d")[1:]
    assert all(c["similarities"]["procrustes"] is None and c["similarities"]["cka"] is not None
               for c in row["candidates"])


def test_a_method_asking_for_other_epochs_on_a_fine_tuned_candidate_is_one_line(monkeypatch, tmp_path):
    def greedy(self, step, candidates):
        for cand in candidates:
            step.finetune(cand.model, 2 * step.config.candidate_epochs)
        return candidates[0]

    monkeypatch.setattr(CKAGuided, "select", greedy)
    result = run_cli(*SMOKE, "--runs-dir", tmp_path, "--name", "e")
    assert result.returncode == 4
    assert result.stderr.strip().splitlines()[-1].startswith(
        "harness: error: method cka fine-tunes the layer candidate for 0.1 epochs after it was fine-tuned for 0.05: "
        "the loop fine-tunes candidates (--candidate-epochs); to train one longer, fine-tune a copy")


def test_an_option_that_changes_the_network_but_keys_no_baseline_is_refused(monkeypatch, tmp_path):
    """A family whose width option says affects_training=False: the second run's settings build
    another network than the cached baseline, so the run stops before writing anything."""
    monkeypatch.setattr(CifarResNetFamily, "options", (
        Option("tr_width", 8, "width of tiny-resnet", parse=int, affects_training=False),), raising=False)
    monkeypatch.setattr(CifarResNetFamily, "configure",
                        lambda self, options: setattr(self, "width", options.get("tr_width", self.width)),
                        raising=False)
    cache = {"HARNESS_CACHE": str(tmp_path / "cache")}
    args = ["bench", "--budget", "smoke", "--iterations", "0", "--runs-dir", tmp_path / "runs"]
    assert run_cli(*args, "--name", "a", env=cache).returncode == 0
    result = run_cli(*args, "--name", "b", "--tr-width", "4", env=cache)
    assert result.returncode == 2
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith("harness: error: the cached baseline ") and "is another network than this run's " \
        "settings build (stages " in error and "declared affects_training=False?" in error
    assert not (tmp_path / "runs" / "b").exists()


def test_plugin_options_are_typed_in_help():
    help_text = run_cli("bench", "--help").stdout
    flat = " ".join(help_text.split())
    assert "--rbf-cka-sigma FLOAT" in flat and "--latency-repeats INTEGER" in flat
    assert "--fgsm-eps TEXT" in flat  # a list parsed by the plugin stays text


def test_a_plugin_option_of_the_wrong_type_is_a_usage_error(tmp_path):
    result = run_cli("bench", "--latency-repeats", "many", "--runs-dir", tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "Invalid value for '--latency-repeats': 'many' is not a valid integer" in result.stderr
    assert not tmp_path.joinpath("runs").exists()


def test_new_records_write_a_candidates_type_and_old_ones_read_as_such(tmp_path):
    result = run_cli(*SMOKE, "--runs-dir", tmp_path, "--name", "k")
    assert result.returncode == 0, result.stderr
    written = [json.loads(line) for line in (tmp_path / "k" / records.ITERATIONS_FILE).read_text().splitlines()]
    assert all("type" in c and "structure" not in c for c in written[1]["candidates"])
    old = written[1] | {"candidates": [{("structure" if k == "type" else k): v for k, v in c.items()}
                                       for c in written[1]["candidates"]]}
    assert schema.read_iteration(old) == written[1]


def test_a_plugin_is_public_to_tests_through_harness_testing():
    from harness.testing import plugin

    structure = plugin("structure", "resnet-filter")
    assert structure.name == "resnet-filter" and structure is not registry.get("structure", "resnet-filter")


class Score(Criterion):
    name = "score"

    def scores(self, model, structure, units, ctx):
        return [0.0] * len(units)


def package(name):
    class Package:
        @staticmethod
        @hookimpl
        def register_criteria():
            return [Score]

    Package.__name__ = name
    return Package


def test_two_outside_packages_with_one_name_answer_neither_and_each_by_its_package(capsys):
    reg = registry.Registry(extra={"pkg-a": package("A"), "pkg-b": package("B")})
    assert sorted(n for n in reg.of_kind("criterion") if "score" in n) == ["pkg-a:score", "pkg-b:score"]
    assert "criterion 'score' is registered by pkg-a and by pkg-b; the name answers neither" in capsys.readouterr().err
    with pytest.raises(HarnessError, match="^criterion 'score' is registered by pkg-a and by pkg-b; choose one: "
                                           "pkg-a:score, pkg-b:score$"):
        reg.entry("criterion", "score")
    assert reg.entry("criterion", "pkg-b:score").package == "pkg-b"
    assert reg.entry("criterion", "Pkg_B:score").package == "pkg-b"  # as pip compares names


def test_a_hook_returning_what_cannot_be_built_leaves_that_plugin_out_with_a_warning(capsys):
    class Broken:
        @staticmethod
        @hookimpl
        def register_criteria():
            return [42, Score]

    reg = registry.Registry(extra={"pkg-broken": Broken})
    assert "score" in reg.of_kind("criterion") and "kl" in reg.of_kind("criterion")
    assert "a criterion plugin of pkg-broken is left out: HarnessError: register_criteria() of pkg-broken " \
           "returned 42" in capsys.readouterr().err


def test_an_option_declared_twice_is_a_warning_not_an_error_for_every_command(capsys):
    class Clash(Criterion):
        name = "clash"
        options = (Option("rbf_cka_sigma", 2.0, "a name rbf-cka has"),)

        def scores(self, model, structure, units, ctx):
            return [0.0] * len(units)

    class Package:
        @staticmethod
        @hookimpl
        def register_criteria():
            return [Clash]

    reg = registry.Registry(extra={"pkg-clash": Package})
    assert reg.all_options()["rbf_cka_sigma"].default == 0.5  # prunebench's own
    assert "option --rbf-cka-sigma of criterion 'clash' (from pkg-clash) is declared by similarity 'rbf-cka' " \
           "(from prunebench 0.1.0) already" in capsys.readouterr().err


def test_the_core_measurements_cannot_be_blocked_one_by_one():
    with pytest.raises(HarnessError, match="^cannot block prunebench:accuracy: the core measures"):
        registry.Registry(blocked=["prunebench:accuracy"])


# ---------------------------------------------------------------- leaderboards (item 8)
def test_two_records_of_one_seed_are_one_sample_with_a_note(tmp_path):
    make_run(tmp_path, "a-s0", seed=0, accuracies=(91.0, 90.0))
    make_run(tmp_path, "a-s0-resumed", seed=0, accuracies=(91.0, 90.0))
    make_run(tmp_path, "a-s1", seed=1, accuracies=(91.0, 89.0))
    (row,) = build_board(read_runs([tmp_path]), []).to_dict("records")
    assert row["seeds"] == 2 and row["accuracy"] == 89.5
    assert row["note"] == "seed 0 recorded 2 times (a-s0, a-s0-resumed): a-s0 counted"


def test_rows_are_keyed_on_the_runs_own_plugins_options_only(tmp_path):
    """Two identical runs, one recorded with another package's (or an unused metric's) options."""
    make_run(tmp_path, "plain", seed=0, options={})
    make_run(tmp_path, "busy", seed=1, options={"ece_bins": 10, "rbf_cka_sigma": 0.9, "not_installed": 3},
             option_defaults={"ece_bins": 15, "rbf_cka_sigma": 0.5, "not_installed": 1})
    make_run(tmp_path, "rbf", seed=0, similarity="rbf-cka", options={"rbf_cka_sigma": 0.9},
             option_defaults={"rbf_cka_sigma": 0.5})
    board = build_board(read_runs([tmp_path]), [])
    rows = {r["similarity"]: r for r in board.to_dict("records")}
    assert rows["cka"]["seeds"] == 2 and rows["cka"]["options"] == ""
    assert rows["rbf-cka"]["options"] == "rbf_cka_sigma=0.9"


@pytest.mark.parametrize("bad", [float("nan"), None])
def test_a_record_holding_nan_or_null_builds_its_board(tmp_path, bad):
    make_run(tmp_path, "a", seed=0, accuracies=(91.0, 90.0))
    make_run(tmp_path, "b", seed=1, accuracies=(91.0, 90.0))
    path = tmp_path / "b" / records.ITERATIONS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["accuracy"] = bad
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = write_leaderboards([tmp_path], tmp_path / "board")
    assert written
    (row,) = build_board(read_runs([tmp_path]), []).to_dict("records")
    assert row["seeds"] == 2 and row["accuracy"] != row["accuracy"]  # NaN: no mean with a missing value

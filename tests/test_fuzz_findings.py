"""Issue 26, item 9: every finding of the fuzzing session against main, each a test. Bad input
is one line on stderr (`harness: error: ...`) with exit status 2 and nothing written; the system
refusing a write partway (a full disk, a read-only file system) is one line with exit status 4
and every record kept; nothing hangs, nothing ends in a traceback."""

import errno
import json
import os
import shutil

import pytest
import torch

import harness
from conftest import run_cli
from harness import models, records
from harness.errors import HarnessError

BAD_INPUT, STOPPED = 2, 4


def one_line(result, code, *needles):
    """Exit ``code``, one line on stderr naming every needle (warnings aside), no traceback."""
    lines = [line for line in result.stderr.strip().splitlines()  # progress lines and warnings aside
             if line.startswith("harness: ") and not line.startswith("harness: warning: ")]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def bench(runs, name, *extra):
    return run_cli("bench", "--budget", "smoke", "--iterations", "1", "--runs-dir", runs, "--name", name, *extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete one-iteration run of the offline demo."""
    runs = tmp_path_factory.mktemp("runs")
    result = bench(runs, "done")
    assert result.returncode == 0, result.stderr
    return runs / "done"


@pytest.fixture
def unfinished(finished, tmp_path):
    """A copy of the finished run as if killed after its unpruned model's record."""
    run = tmp_path / "runs" / "cut"
    shutil.copytree(finished, run)
    (run / records.RESULT_FILE).unlink()
    path = run / records.ITERATIONS_FILE
    path.write_text(path.read_text().splitlines(keepends=True)[0])
    (run / records.MODELS_DIR / "iter_001.pt").unlink()
    return run


def refuse_writes(monkeypatch, code, where=lambda path: True):
    """Every atomic write (records, models, the baseline cache) whose path ``where`` accepts
    fails as the system would: OSError ``code`` (ENOSPC: a full disk, EROFS, EACCES)."""
    real = records.atomic_write_bytes

    def refused(path, data):
        if where(path):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, data)

    monkeypatch.setattr(records, "atomic_write_bytes", refused)
    monkeypatch.setattr(models, "atomic_write_bytes", refused)


def refuse_new_files(monkeypatch, code):
    """No new file anywhere (a read-only file system, a folder without write permission)."""
    def refused(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(records.tempfile, "mkstemp", refused)
    monkeypatch.setattr(records.tempfile, "mkdtemp", refused)


# ---------------------------------------------------------------- export and resume where nothing can be written
@pytest.mark.parametrize("out, needle", [
    ("a-file/model.pt", "its folder {tmp}/a-file is not a folder"),
    ("a-folder", "--out {tmp}/a-folder is a folder; give a file name"),
    ("/proc/model.pt", "its folder /proc cannot be written"),
])
def test_export_out_that_cannot_take_the_file_is_one_line(finished, tmp_path, out, needle):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    out = out if out.startswith("/") else str(tmp_path / out)
    result = run_cli("export", finished, "--format", "torchscript", "--out", out)
    one_line(result, BAD_INPUT, needle.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "a-folder"]
    assert not list((tmp_path / "a-folder").iterdir())


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_export_of_a_run_that_cannot_be_written_is_one_line(finished, monkeypatch, code):
    refuse_new_files(monkeypatch, code)
    result = run_cli("export", finished, "--format", "torchscript")
    one_line(result, BAD_INPUT, f"{finished}/exported", "cannot be written", os.strerror(code))
    assert not (finished / "exported").exists()


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_resume_of_a_run_that_cannot_be_written_is_one_line(unfinished, monkeypatch, code):
    before = sorted(p.name for p in unfinished.rglob("*"))
    refuse_new_files(monkeypatch, code)
    result = run_cli("bench", "--resume", unfinished)
    one_line(result, BAD_INPUT, f"--resume {unfinished} cannot be written")
    assert sorted(p.name for p in unfinished.rglob("*")) == before


@pytest.mark.parametrize("code, said", [(errno.ENOSPC, "cannot write: No space left on device"),
                                        (errno.ENOMEM, "out of memory: Cannot allocate memory")])
def test_a_full_disk_partway_keeps_the_records_and_resumes(unfinished, monkeypatch, code, said):
    # a write refused for want of memory (zoo.py's Swin V2 under a 12 GB cap) is named as such
    refuse_writes(monkeypatch, code, lambda path: path.name == "iter_001.pt")
    result = run_cli("bench", "--resume", unfinished)
    one_line(result, STOPPED, said, "iter_001.pt", f"harness bench --resume {unfinished}")
    assert [r["iteration"] for r in records.read_iterations(unfinished)] == [0]
    monkeypatch.undo()  # space freed
    result = run_cli("bench", "--resume", unfinished)
    assert result.returncode == 0, result.stderr
    assert [r["iteration"] for r in records.read_iterations(unfinished)] == [0, 1]


def test_a_full_disk_under_the_cache_is_one_line_and_nothing_is_left(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    refuse_writes(monkeypatch, errno.ENOSPC, lambda path: "baselines" in path.parts)
    result = bench(tmp_path / "runs", "full", "--scratch-epochs", "0.5")
    one_line(result, STOPPED, "No space left on device", "nothing of run", "start it again")
    assert not (tmp_path / "runs" / "full").exists()


# ---------------------------------------------------------------- records holding what no run writes
@pytest.mark.parametrize("bad", ["x", float("nan"), None, []])
def test_decisions_on_an_oracle_holding_text_or_nan_names_the_record(tmp_path, bad):
    from test_decisions import cand, write_run

    good = (cand(0.9, 80.0, 0.5, [88.0, 88.2]), cand(0.95, 81.0, 0.6, [90.0, 90.2]))
    run = write_run(tmp_path / "runs", "a", [good] * 4)
    path = run / records.ITERATIONS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["candidates"][0]["oracle"]["val_accuracy"] = bad if bad == [] else [88.0, bad]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN as the bare word JSON readers refuse
    result = run_cli("decisions", tmp_path / "runs", "--out", tmp_path / "out")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith("harness: warning: skipping the decisions of iteration 2 of ") and str(run) in warning
    assert "3 decisions with an oracle from 1 runs" in (tmp_path / "out" / "decisions.md").read_text()
    rows[1]["candidates"][0]["oracle"]["val_accuracy"] = rows[2]["candidates"][0]["oracle"]["val_accuracy"]
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n")
    one_line(run_cli("decisions", tmp_path / "runs", "--out", tmp_path / "none"), BAD_INPUT, "no decision with an oracle")


@pytest.mark.parametrize("bad", [float("nan"), None])
def test_leaderboard_on_a_record_holding_nan_or_null_builds_its_board(tmp_path, bad):
    """Fixed before this item (tests/test_plugin_friction.py holds the accuracy's case); here
    every number of an iteration, from the command line."""
    from test_leaderboard import make_run

    run = make_run(tmp_path / "runs", "a", seed=0, accuracies=(91.0, 90.0))
    path = run / records.ITERATIONS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for key in ("accuracy", "flops", "params", "wall_time_s"):
        rows[1][key] = bad
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("leaderboard", "--runs", tmp_path / "runs", "--out", tmp_path / "board")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "wrote " in result.stdout


# ---------------------------------------------------------------- harness.prune's inputs
def prune_inputs(n=40):
    from test_python_api import TinyResidualNet

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 4, (n,), generator=g)
    return TinyResidualNet(), x, y


@pytest.mark.parametrize("model, needle", [
    ("resnet18", "got a str"), (None, "got a NoneType"), (len, "got a builtin_function_or_method"),
    (torch.zeros(3), "got a torch.Tensor"),
])
def test_prune_of_something_that_is_not_a_network_is_one_error(tmp_path, model, needle):
    _, x, y = prune_inputs()
    with pytest.raises(HarnessError, match=f"harness.prune takes the network to prune as a torch.nn.Module; {needle}$"):
        harness.prune(model, [(x, y)], [(x, y)], runs_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("spoil, needle", [
    (lambda x, y: [{"image": x, "label": y}], "train_loader must give \\(inputs, labels\\) batches .*; it gave a dict "
                                              "with keys image, label$"),
    (lambda x, y: [(x, y - 1)], "train_loader gives the label -1: labels must be class indices 0, 1, 2, ...$"),
    (lambda x, y: [(x, y.float())], "train_loader's labels must be whole class indices .*; it gave torch.float32 "
                                    "labels of shape \\(40,\\) for 40 inputs$"),
    (lambda x, y: [(x, y[:, None])], "train_loader's labels must be whole class indices"),
    (lambda x, y: [(torch.full_like(x, float("nan")), y)], "train_loader gives 40 of 40 inputs holding NaN or "
                                                          "infinite values: every input must be finite$"),
])
def test_prune_refuses_a_loader_of_dicts_negative_or_float_labels_or_nan_inputs(tmp_path, spoil, needle):
    model, x, y = prune_inputs()
    with pytest.raises(HarnessError, match=needle):
        harness.prune(model, spoil(x, y), [(x, y)], runs_dir=tmp_path)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- training that cannot work
def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
    result = bench(tmp_path / "runs", "big", "--batch-size", "99999999999")
    one_line(result, BAD_INPUT, "--batch-size 99999999999 is larger than the training split of digits (1053 samples): "
                                "give at most 1053")
    assert not (tmp_path / "runs").exists()


def test_a_run_whose_fine_tune_diverges_stops_in_one_line_instead_of_deciding_on_nan(tmp_path):
    result = bench(tmp_path / "runs", "nan", "--lr", "1e12")
    one_line(result, STOPPED, "iteration 1: the layer candidate's features", "hold NaN or infinite values",
             "training diverged", "--resume")
    assert [r["iteration"] for r in records.read_iterations(tmp_path / "runs" / "nan")] == [0]


def test_a_baseline_that_diverges_is_one_line_and_nothing_is_written(tmp_path):
    result = bench(tmp_path / "runs", "nan", "--scratch-lr", "1e12", "--scratch-epochs", "0.5")
    one_line(result, BAD_INPUT, "baseline: training diverged", "learning rate 1e+12")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- where a run is written
def test_a_link_at_the_runs_name_is_refused_not_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "link").symlink_to(elsewhere)
    result = bench(tmp_path / "runs", "link")
    one_line(result, BAD_INPUT, f"{tmp_path}/runs/link is a link to {elsewhere}, outside --runs-dir",
             "remove the link or pick another --name")
    assert not list(elsewhere.iterdir())


# ---------------------------------------------------------------- Ray: checked up front, never waited on forever
@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    """A sweep file of test_ray's, with Ray's own joining made to fail at once: a check that
    let it through (it waited for minutes, or forever) fails the test instead of hanging it."""
    pytest.importorskip("ray")
    from test_ray import SWEEP

    from harness import candidate_pool, distributed

    def joined(address=None):
        raise AssertionError(f"Ray was joined at {address}")

    monkeypatch.setattr(distributed, "connect", joined)
    monkeypatch.setattr(candidate_pool, "connect", joined)
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(runs=tmp_path / "runs"))
    return path


def test_parallel_candidates_with_an_unreachable_ray_address_is_one_line(tmp_path, sweep_file):
    result = run_cli("bench", "--budget", "smoke", "--runs-dir", tmp_path / "runs", "--parallel-candidates",
                     env={"RAY_ADDRESS": "127.0.0.1:1"})
    one_line(result, BAD_INPUT, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
def test_sweep_on_an_address_where_something_else_listens_is_one_line(tmp_path, sweep_file, monkeypatch, answer):
    import socket
    import threading

    from harness import cluster

    monkeypatch.setattr(cluster, "PROBE_TIMEOUT", 0.5)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        try:
            conn, _ = server.accept()
            with conn:
                conn.sendall(answer)
                conn.recv(64)
        except OSError:  # the probe hung up first
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = run_cli("sweep", sweep_file, "--ray", f"127.0.0.1:{port}")
    finally:
        server.close()
    one_line(result, BAD_INPUT, f"what listens at 127.0.0.1:{port} is not a Ray cluster")
    assert not (tmp_path / "runs").exists()


def answer_as_http2_not_found(conn):
    """What stood at an unroutable address on the fuzzing machine: an HTTP/2 server (its
    SETTINGS frame passes the up-front check) that answers every request 404, so Ray's core
    retried, writing a gcs_client.cc warning to file descriptor 2 for each try."""
    pending = b""

    def read(n):
        nonlocal pending
        while len(pending) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            pending += chunk
        out, pending = pending[:n], pending[n:]
        return out

    with conn:
        try:
            conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame
            if read(24) != b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":
                return
            while True:
                header = read(9)
                kind, flags, stream = header[3], header[4], header[5:9]
                read(int.from_bytes(header[:3], "big"))
                if kind == 0x4 and not flags & 0x1:  # SETTINGS: acknowledged
                    conn.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                elif kind == 0x1:  # HEADERS, a request: :status 404 (HPACK static entry 13), stream ended
                    conn.sendall(b"\x00\x00\x01\x01\x05" + stream + b"\x8d")
        except (OSError, EOFError):
            pass


def test_a_ray_address_that_answers_but_is_no_cluster_is_one_line_without_rays_retries(tmp_path, sweep_file):
    """Ray itself is joined here (in a process of its own: its core writes to file descriptor
    2); RAY_NUM_REDIS_GET_RETRIES=2 keeps its 20 tries to 2."""
    import socket
    import threading

    server = socket.create_server(("", 0))  # Ray dials the node's own address, not 127.0.0.1
    port = server.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer_as_http2_not_found, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        result = run_cli("sweep", sweep_file, "--ray", f"127.0.0.1:{port}", env={"RAY_NUM_REDIS_GET_RETRIES": "2"},
                         isolated=True, timeout=300)
    finally:
        server.close()
    assert "gcs_client" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    one_line(result, BAD_INPUT, f"cannot reach the Ray cluster at 127.0.0.1:{port}")
    assert not (tmp_path / "runs").exists()


def test_what_ray_writes_while_joining_is_shown_when_it_joins_and_dropped_when_it_fails(capfd):
    from harness import cluster

    with cluster.held_back_stderr():
        os.write(2, b"joined after a retry\n")
        assert capfd.readouterr().err == ""
    assert capfd.readouterr().err == "joined after a retry\n"
    with pytest.raises(ConnectionError), cluster.held_back_stderr():
        os.write(2, b"gcs_client.cc:210: Failed to get cluster ID\n")
        raise ConnectionError("Failed to connect to Ray cluster")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_a_ray_address_whose_port_is_out_of_range_says_so(tmp_path, sweep_file):
    result = run_cli("sweep", sweep_file, "--ray", "127.0.0.1:99999")
    one_line(result, BAD_INPUT, "the Ray cluster address 127.0.0.1:99999 has no valid port", "1 to 65535")


@pytest.mark.parametrize("line, needle", [
    ("num_gpus = 1", "num_gpus = 1 in {path}: no node of the Ray cluster has that many (GPU: 0 on the largest node)"),
    ("num_cpus = 64", "num_cpus = 64 in {path}: no node of the Ray cluster has that many (CPU: 2 on the largest node)"),
])
def test_a_sweep_asking_more_than_any_ray_node_has_is_one_line(tmp_path, sweep_file, monkeypatch, line, needle):
    from harness import sweep

    class TwoCpus:  # a local Ray instance on this project's 2-core machine, without a GPU
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9}},
                    {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 1.0}}]

    monkeypatch.setattr(sweep, "connect", lambda address=None: TwoCpus, raising=False)
    sweep_file.write_text(sweep_file.read_text().replace("num_cpus = 1", line))
    result = run_cli("sweep", sweep_file, "--ray")
    one_line(result, BAD_INPUT, needle.format(path=sweep_file))
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- minor findings: inputs named for what they are
@pytest.mark.parametrize("args, needle", [
    (["--p-layer", "1000"], "--p-layer 1000: model tiny-resnet has 7 removable blocks; give at most 7"),
    (["--method", "layer-only", "--structures", "filter"],
     "method layer-only prunes layer, and --structures filter leaves it nothing to remove; valid choices: "
     "--structures layer, or a --method that prunes filter"),
    (["--method", "filter-only", "--structures", "layer"], "method filter-only prunes filter, and --structures layer"),
])
def test_a_plan_that_cannot_prune_is_refused_up_front(tmp_path, args, needle):
    result = bench(tmp_path / "runs", "plan", *args)
    one_line(result, BAD_INPUT, needle)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, needle", [
    (["--model", "resnet20", "--data-dir", "a-file"], "data directory a-file is a file; give the folder that holds"),
    (["--config", "a-folder"], "config file a-folder is a folder; give the TOML file inside it"),
    (["--model", "timm:"], "--model timm: names no network after the prefix; valid choices: timm:<name>, Vision "
                           "Transformers of timm by name (timm:vit_tiny_patch16_224, timm:deit_small_patch16_224, ...); "
                           "any other torchvision or timm network (torchvision:mobilenet_v2, timm:convnext_atto)"),
    (["--model", "torchvision:"], "valid choices: torchvision:<name>, torchvision's ResNets (resnet18/34/50/101/152, "
                                  "wide_resnet50_2/101_2), ImageNet weights with --pretrained; any other torchvision"),
])
def test_a_file_a_folder_or_a_bare_prefix_is_named_for_what_it_is(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    one_line(bench(tmp_path / "runs", "x", *args), BAD_INPUT, needle)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("files, needle", [
    (["train.tar.gz"], "has train.tar.gz but no test.tar.gz; CIFAR-10 as archives needs both train.tar.gz and "
                       "test.tar.gz"),
    (["test.tar.gz"], "has test.tar.gz but no train.tar.gz"),
    (["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/batches.meta"],
     "has cifar-10-batches-py/ without data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch; "
     "torchvision's CIFAR-10 needs"),
])
def test_half_of_a_cifar10_folder_names_what_is_missing_instead_of_blaming_the_network(tmp_path, files, needle):
    import tarfile

    data = tmp_path / "d"
    for name in files:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".tar.gz"):
            split = name.split(".")[0]
            (tmp_path / split / "cat").mkdir(parents=True)
            with tarfile.open(data / name, "w:gz") as tar:
                tar.add(tmp_path / split, arcname=split)
        else:
            (data / name).write_bytes(b"")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    line = one_line(bench(tmp_path / "runs", "half", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", data),
                    BAD_INPUT, f"data directory {data} {needle}")
    assert "download" not in line
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_holding_nan_is_refused(tmp_path):
    from harness.models import create_model

    state = create_model("tiny-resnet", 10, (1, 8, 8), "digits").state_dict()
    state["conv1.weight"].fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    result = bench(tmp_path / "runs", "nan", "--checkpoint", tmp_path / "nan.pt")
    one_line(result, BAD_INPUT, f"checkpoint {tmp_path}/nan.pt holds NaN or infinite values in 1 tensor(s), "
                                "conv1.weight first")
    assert not (tmp_path / "runs").exists()


def test_a_data_dir_a_bundled_data_set_ignores_is_said_to_be_ignored(finished, tmp_path):
    (tmp_path / "somewhere").mkdir()
    result = run_cli("bench", "--budget", "smoke", "--iterations", "0", "--runs-dir", tmp_path / "runs",
                     "--data-dir", tmp_path / "somewhere")
    assert result.returncode == 0, result.stderr
    assert (f"harness: warning: --data-dir {tmp_path}/somewhere is ignored: data set digits is bundled with its "
            "package and reads no files") in result.stderr.splitlines()


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, capsys):
    from harness import resolve
    from harness.config import BenchConfig

    monkeypatch.setattr(resolve, "cpu_has_fast_bf16", lambda: False)
    run = resolve.resolve(BenchConfig(precision="bf16", device="cpu", budget="smoke"))
    assert run.config.precision == "bf16"
    assert capsys.readouterr().err == ("harness: warning: --precision bf16 on a CPU without native bf16 (AVX512-BF16 "
                                       "or AMX) is emulated, slower than fp32; --precision auto chooses fp32 here\n")
    resolve.resolve(BenchConfig(precision="fp32", device="cpu", budget="smoke"))
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- minor findings: records read for what they say
def test_export_of_an_incomplete_run_asks_which_iteration(unfinished):
    result = run_cli("export", unfinished, "--format", "torchscript")
    one_line(result, BAD_INPUT, f"run {unfinished} is not complete, so the model it keeps is not decided: give "
                                f"--iteration (0 to 0), or finish it with harness bench --resume {unfinished}")
    assert not (unfinished / "exported").exists()


def test_export_of_a_result_pointing_past_the_records_blames_the_record(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    result = json.loads((run / records.RESULT_FILE).read_text())
    (run / records.RESULT_FILE).write_text(json.dumps(result | {"final_iteration": 9}))
    line = one_line(run_cli("export", run, "--format", "torchscript"), BAD_INPUT,
                    f"{run}/result.json keeps iteration 9, but the run's records hold iterations 0 to 1")
    assert "--iteration 9" not in line


def test_decisions_reads_the_default_folders_that_exist_and_names_each_malformed_record(tmp_path, monkeypatch):
    from test_decisions import cand, write_run

    monkeypatch.chdir(tmp_path)
    good = (cand(0.9, 80.0, 0.5, [88.0, 88.2]), cand(0.95, 81.0, 0.6, [90.0, 90.2]))
    for name in ("a", "garbage", "config"):
        write_run(tmp_path / "runs", name, [good] * 3)
    with open(tmp_path / "runs" / "garbage" / records.ITERATIONS_FILE, "a") as f:
        f.write("garbage\n")  # no record's start: not a line cut short
    (tmp_path / "runs" / "config" / records.CONFIG_FILE).write_text("{oops")
    result = run_cli("decisions", "--out", "out")  # no leaderboards/records here: runs/ alone is read
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2 and "cut short" not in result.stderr, result.stderr
    assert warnings[0].startswith("harness: warning: skipping the corrupt run record runs/config (HarnessError: "
                                  "runs/config/config.json is not valid JSON")
    assert warnings[1] == ("harness: warning: skipping the corrupt run record runs/garbage (HarnessError: "
                           "runs/garbage/iterations.jsonl line 5 is not valid JSON: the record cannot be trusted)")
    assert "3 decisions with an oracle from 1 runs" in (tmp_path / "out" / "decisions.md").read_text()
    shutil.rmtree(tmp_path / "runs")
    one_line(run_cli("decisions", "--out", "out"), BAD_INPUT, "no such run folder: runs, leaderboards/records; give RUNS")


def test_a_tls_cluster_address_is_only_checked_for_a_connection(monkeypatch):
    """Under RAY_USE_TLS the gRPC server speaks TLS first: the plain HTTP/2 probe is left out."""
    import socket
    import threading

    from harness import cluster

    monkeypatch.setattr(cluster, "PROBE_TIMEOUT", 0.5)
    server = socket.create_server(("127.0.0.1", 0))
    def serve():
        try:
            server.accept()[0].close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        monkeypatch.setenv("RAY_USE_TLS", "1")
        cluster.check_reachable(address)
    finally:
        server.close()


@pytest.mark.parametrize("said, line", [
    ("Failed to connect to Ray cluster at 10.1.2.3:6379 after 5 tries.",
     "cannot reach the Ray cluster at 10.1.2.3:6379 after 5 tries; start one with ray start --head"),
    ("Connection refused", "cannot reach the Ray cluster at 10.1.2.3:6379 (Connection refused); start one with ray "
                           "start --head"),
    # Ray dials the node's own address for a local one: both are worth seeing
    ("Failed to connect to Ray cluster at 10.9.9.9:6379.", "cannot reach the Ray cluster at 10.1.2.3:6379 (Failed to "
                                                           "connect to Ray cluster at 10.9.9.9:6379.); start one with "
                                                           "ray start --head"),
])
def test_a_ray_cluster_that_refuses_to_be_joined_is_named_once(monkeypatch, said, line):
    from harness import cluster

    ray = pytest.importorskip("ray")

    def refuse(**kwargs):
        raise ConnectionError(said + "\nmore of Ray's explanation")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(HarnessError) as exc:
        cluster.connect("10.1.2.3:6379")
    assert str(exc.value) == line

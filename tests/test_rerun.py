"""benchmarks/rerun.py, which CI runs on a committed record: it refuses, before training
anything, the runs this machine cannot reproduce bit for bit."""

import importlib.util
import json
import shutil
import sys

import pytest

from conftest import ROOT

RECORD = ROOT / "benchmarks" / "results" / "rerun-cpu" / "rerun-resnet20-cifar10-cka-kl-cka-s0"


def load_rerun():
    spec = importlib.util.spec_from_file_location("rerun", ROOT / "benchmarks" / "rerun.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_with(tmp_path, config=None, hardware=None):
    run = tmp_path / "run"
    shutil.copytree(RECORD, run, ignore=shutil.ignore_patterns("models"))
    data = json.loads((run / "config.json").read_text())
    data["config"].update(config or {})
    data["hardware"].update(hardware or {})
    (run / "config.json").write_text(json.dumps(data))
    return run


def run_main(monkeypatch, run):
    monkeypatch.setattr(sys, "argv", ["rerun.py", str(run)])
    from harness import run as harness_run

    def no_training(cfg):
        raise AssertionError("rerun.py trained a run it should have refused")

    monkeypatch.setattr(harness_run, "run_bench", no_training)
    with pytest.raises(SystemExit) as stopped:
        load_rerun().main()
    return stopped.value.code


def test_the_committed_ci_record_is_an_fp32_cpu_run():
    data = json.loads((RECORD / "config.json").read_text())
    assert data["config"]["precision"] == "fp32" and data["hardware"]["device"] == "cpu"


def test_a_bf16_run_is_refused_on_a_cpu_that_emulates_bf16(tmp_path, monkeypatch, capsys):
    from harness import training

    monkeypatch.setattr(training, "cpu_has_fast_bf16", lambda: False)
    assert run_main(monkeypatch, record_with(tmp_path, config={"precision": "bf16"})) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "native bf16" in err and "AVX512-BF16" in err


def test_a_cuda_run_is_refused_on_the_cpu(tmp_path, monkeypatch, capsys):
    assert run_main(monkeypatch, record_with(tmp_path, hardware={"device": "cuda", "name": "NVIDIA H200"})) == 2
    assert "only CPU runs reproduce here" in capsys.readouterr().err

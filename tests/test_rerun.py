"""benchmarks/rerun.py, which CI runs on a committed record: it refuses, before training
anything, the runs this machine cannot reproduce bit for bit."""

import importlib.util
import json
import os
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


def test_the_committed_ci_record_says_its_instruction_set():
    """Made on an AVX2 CPU: an AVX-512 CPU gave other last digits (oneDNN's kernels) until
    rerun.py capped it at AVX2, which gave the committed bits."""
    assert json.loads((RECORD / "config.json").read_text())["hardware"]["isa"] == "AVX2"


def test_a_cpu_run_records_the_instruction_set_it_computed_with():
    import torch

    from harness import provenance, training

    assert provenance.hardware(torch.device("cpu"))["isa"] == training.cpu_isa() in training.CPU_ISAS


def test_the_caps_lower_the_instruction_set_a_process_computes_with(monkeypatch):
    import subprocess

    from harness import training

    if training.cpu_isa(capped=False) == "DEFAULT":
        pytest.skip("this CPU has no AVX2")
    probe = "import torch; from harness.training import cpu_isa; print(cpu_isa(), torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, **training.isa_caps("AVX2")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "AVX2"]
    # read from the environment as the process sees it: a cap below native bf16 means bf16 is emulated
    training.cpu_isa.cache_clear()
    try:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
        assert training.cpu_isa() in ("DEFAULT", "AVX2", "AVX512") and not training.cpu_has_fast_bf16()
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
        training.cpu_isa.cache_clear()
        assert training.cpu_isa() == "DEFAULT"
    finally:
        monkeypatch.undo()
        training.cpu_isa.cache_clear()


def test_a_run_computed_with_a_wider_instruction_set_than_this_cpu_has_is_refused(tmp_path, monkeypatch, capsys):
    from harness import training

    monkeypatch.setattr(training, "cpu_isa", lambda capped=True: "AVX2")
    assert run_main(monkeypatch, record_with(tmp_path, hardware={"isa": "AMX"})) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "computed with AMX" in err and "its widest is AVX2" in err


def test_a_run_is_started_again_capped_at_its_instruction_set(tmp_path, monkeypatch):
    from harness import training

    class Exec(Exception):
        pass

    def execve(path, argv, env):
        raise Exec(env)

    monkeypatch.setattr(training, "cpu_isa", lambda capped=True: "AMX")
    monkeypatch.setattr(os, "execve", execve)
    for name in training.isa_caps("AVX2"):
        monkeypatch.delenv(name, raising=False)
    from harness import run as harness_run

    monkeypatch.setattr(harness_run, "run_bench", lambda cfg: pytest.fail("trained without the caps"))
    monkeypatch.setattr(sys, "argv", ["rerun.py", str(record_with(tmp_path))])
    with pytest.raises(Exec) as started:
        load_rerun().main()
    env = started.value.args[0]
    assert {k: env[k] for k in training.isa_caps("AVX2")} == {
        "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

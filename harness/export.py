"""Pruned models as files that run without this project: ONNX (onnxruntime and any other
ONNX runtime), PyTorch's ``torch.export`` program (.pt2) or TorchScript. The file takes raw
inputs (images in [0, 1] as (N, C, H, W), or rows (N, F)) with any batch size: the data set's
normalisation is part of the exported graph. Every export is checked: the file is loaded
with its own runtime, run on real inputs, and its outputs compared with the PyTorch model's."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness import records
from harness.checks import default_cache_dir
from harness.config import BenchConfig
from harness.errors import HarnessError, first_line
from harness.models import load_model
from harness.pruning import OWN_PREFIX, load_own_model
from harness.session import load_data

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt"}
# largest difference of any output from the PyTorch model's, relative to the largest output when that is
# above 1: float32 keeps about 7 digits, and a network with random weights can give logits of 1e9
TOLERANCE = 1e-4


class Deployable(nn.Module):
    """The model with its data set's normalisation in front: raw inputs in, logits out."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)  # per channel for images, per feature for rows
        return self.model((x - self.mean.view(shape)) / self.std.view(shape))


def write(module: nn.Module, example: torch.Tensor, fmt: str, path: Path) -> None:
    """Writes ``module`` (eval mode, CPU) in ``fmt``, its batch dimension left free."""
    if fmt == "onnx":
        try:
            import onnxscript  # noqa: F401 - torch's ONNX exporter needs it
        except ImportError:
            raise HarnessError("--format onnx needs onnx and onnxscript: pip install 'prunebench[export]'") from None
        batch = torch.export.Dim("batch")
        # one self-contained file: the weights inside, not in a side file
        torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                          verbose=False, optimize=True, external_data=False)
    elif fmt == "pt2":
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(path))
    else:
        torch.jit.save(torch.jit.trace(module, example), str(path))


def run_file(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Outputs of an exported file on ``x``, through the file's own runtime."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise HarnessError("checking an ONNX file needs onnxruntime: pip install 'prunebench[export]'") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    if fmt == "pt2":
        return torch.export.load(str(path)).module()(x)
    return torch.jit.load(str(path))(x)


@torch.no_grad()
def export_checked(model: nn.Module, mean, std, inputs: torch.Tensor, fmt: str, path: Path) -> dict:
    """Exports ``model`` to ``path`` and checks the file on ``inputs`` (real samples, raw):
    the file is only put in place when its outputs equal the model's within TOLERANCE (relative to
    the largest output when that is above 1).
    Returns what the check measured."""
    if fmt not in FORMATS:
        raise HarnessError(f"unknown --format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    module = Deployable(model.cpu().eval(), mean, std).eval()
    inputs = inputs.cpu().float()
    expected = module(inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written and checked in a folder of its own under its final name (pt2 insists on the
    # suffix), then moved in place: a refused or interrupted export leaves nothing behind
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        try:
            with warnings.catch_warnings():  # torch's deprecation notices for TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                write(module, inputs[:2], fmt, staging / path.name)
                got = run_file(staging / path.name, fmt, inputs)
        except HarnessError:
            raise
        except Exception as exc:
            raise HarnessError(f"cannot export to {fmt}: {type(exc).__name__}: {first_line(exc)}") from None
        difference = float((got - expected).abs().max())
        tolerance = TOLERANCE * max(1.0, float(expected.abs().max()))
        if not difference <= tolerance:
            raise HarnessError(f"the {fmt} file's outputs differ from the PyTorch model's by up to {difference:.3g} "
                               f"(tolerance {tolerance:.3g}) on {len(inputs)} inputs: not written")
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    same_class = float((got.argmax(1) == expected.argmax(1)).float().mean())
    return {"format": fmt, "path": str(path), "bytes": path.stat().st_size, "inputs": len(inputs),
            "max_abs_difference": difference, "max_output": float(expected.abs().max()), "same_prediction": same_class}


def check_out(out: Path) -> None:
    """The file to write must be a file name in a folder that takes files (checked before the
    data loads): not a folder, not under a file, not on a read-only or special file system."""
    if out.is_dir():
        raise HarnessError(f"--out {out} is a folder; give a file name, e.g. {out / ('model' + FORMATS['onnx'])}")
    records.check_folder(f"--out {out}: its folder", out.parent)


def export_run(run_dir: Path, fmt: str, iteration: int | None = None, out: Path | None = None,
               samples: int = 256, model: nn.Module | Callable[[], nn.Module] | None = None) -> dict:
    """Exports one iteration's model of a run (default: the model it kept), checked on the
    first ``samples`` test inputs of the run's data set. A run of ``harness.prune`` needs
    ``model``, a fresh instance of the network it pruned (or a call that makes one), and is
    checked on seeded random inputs of its input shape: it keeps none of the caller's data."""
    run_dir = Path(run_dir)
    if not (run_dir / records.CONFIG_FILE).exists():
        raise HarnessError(f"{run_dir} is not a run directory (no {records.CONFIG_FILE})")
    rows = records.read_iterations(run_dir)
    if not rows:
        raise HarnessError(f"run {run_dir} has no recorded model yet")
    recorded = [r["iteration"] for r in rows]
    if iteration is None:
        run = records.RunRecord.read(run_dir)
        if not run.complete:  # its last iteration is not the model it keeps until it says so
            raise HarnessError(f"run {run_dir} is not complete, so the model it keeps is not decided: give --iteration "
                               f"({recorded[0]} to {recorded[-1]}), or finish it with harness bench --resume {run_dir}")
        iteration = run.final_iteration
        if iteration not in recorded:
            raise HarnessError(f"{run_dir / records.RESULT_FILE} keeps iteration {iteration}, but the run's records hold "
                               f"iterations {recorded[0]} to {recorded[-1]}: the record is inconsistent; give "
                               "--iteration to export one of them")
    if iteration not in recorded:
        raise HarnessError(f"--iteration {iteration}: run {run_dir} has iterations {recorded[0]} to {recorded[-1]}")
    if fmt not in FORMATS:
        raise HarnessError(f"unknown --format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    out = Path(out) if out else run_dir / "exported" / f"iter_{iteration:03d}{FORMATS[fmt]}"
    check_out(out)
    record = records.read_config(run_dir)
    cfg = BenchConfig.from_dict(record["config"])
    path = records.model_path(run_dir, iteration)
    if cfg.model.startswith(OWN_PREFIX):
        if model is None:
            raise HarnessError(f"run {run_dir} was written by harness.prune, whose network only its caller can make: "
                               "give a fresh one (--factory MODULE:CALLABLE, e.g. 'torchvision.models:resnet18"
                               "(num_classes=10)'; from Python harness.export_pruned(run, model))")
        net = load_own_model(path, model)
        shape = tuple(record["data"]["input_shape"])
        channels = shape[0] if len(shape) == 3 else shape[-1]
        inputs = torch.randn((samples, *shape), generator=torch.Generator().manual_seed(0))
        report = export_checked(net, (0.0,) * channels, (1.0,) * channels, inputs, fmt, out)
        report["inputs_from"] = "random"
    else:
        net = load_model(path, "cpu")
        # the run's own cache when this machine has it (the decoded data set), else this machine's
        cache = cfg.cache_dir if cfg.cache_dir and os.path.isdir(cfg.cache_dir) else default_cache_dir()
        data = load_data(dataclasses.replace(cfg, cache_dir=cache))
        report = export_checked(net, data.mean, data.std, data.test.images[:samples], fmt, out)
        report["inputs_from"] = "test"
    return report | {"iteration": iteration, "flops": rows[recorded.index(iteration)]["flops"],
                     "params": rows[recorded.index(iteration)]["params"]}


def export_pruned(run_dir: str | Path, model: nn.Module | Callable[[], nn.Module], format: str = "onnx",
                  iteration: int | None = None, out: str | Path | None = None, samples: int = 256) -> dict:
    """A run of ``harness.prune`` exported (see :func:`export_run`), rebuilt on ``model``: a fresh
    instance of the network it pruned, or a call without arguments that makes one."""
    return export_run(Path(run_dir), format, iteration, Path(out) if out else None, samples, model)

"""Whether the training engine's step is really captured as one CUDA graph, and whether its
replays compute what the same step computes eagerly, for each kind of step a run uses: SGD in
fp32, SGD at the run's precision with distillation from a teacher (the candidates and the kept
model), AdamW at the run's precision (the transformer families). The first thing a GPU job runs
(benchmarks/gpu/run.py): a step that fails to capture falls back to eager steps with one
warning, which would make every later figure of the job an eager one.

    python benchmarks/gpu/capture_check.py --device cuda
    OMP_NUM_THREADS=1 python benchmarks/gpu/capture_check.py --batch-size 4   # a try on a CPU

Per case, one epoch of MIN_CAPTURED_STEPS steps (the shortest training that is captured) three
ways from the same weights and batches: captured (replays counted: S - WARMUP_STEPS expected),
the same graph-ready step run eagerly (its capture left out), and the plain eager step (another
optimizer kernel: fused against foreach). Distances are between the networks' outputs, as a
share of how far a training with another seed ends: the captured against the graph-ready eager
one should be about 0 (the same deterministic kernels, replayed; from 0.05 a note, from 0.5 a
failure: another training); against the plain eager one it is rounding, amplified over the
steps. Seconds per training (the capture included) for the captured and the
graph-ready eager step. Then, for ResNet-20 and -56 at a run's batch, where capturing starts to
pay (a line per network: eager and captured milliseconds per step, the capture's seconds, and
the steps from which capturing is faster: what MIN_CAPTURED_STEPS should be). On a CPU
nothing is captured and the script only tries itself. Exit 1 when on CUDA an SGD case (what
the CIFAR ResNets train with) was not captured or its replays ended apart from its eager
steps, 3 when only the AdamW case was.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from train_throughput import replays_during, timed  # noqa: E402

from harness.data import DataSplits, TensorSplit
from harness.models import create_model
from harness.train_step import MIN_CAPTURED_STEPS, WARMUP_STEPS, Recipe, TrainStep
from harness.training import default_batch_size, resolve_precision, train

#: (optimizer, precision, distillation weight, learning rate at the batch); "auto" is a run's
#: precision on the device (bf16 on a GPU that has it)
CASES = (("sgd", "fp32", 0.0, 0.01), ("sgd", "auto", 0.5, 0.01), ("adamw", "auto", 0.0, 1e-3))
#: replays this far from their eager steps (a share of another seed's distance) are another
#: training (a stale batch, a frozen learning rate); the check runs deterministic cudnn kernels,
#: so the same kernels replayed should end at about 0, and anything above NOTED is said
APART, NOTED = 0.5, 0.05


def synthetic_cifar(n: int) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    split = TensorSplit(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataSplits(split, split, split, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 10, augment="cifar")


def network(model: str, seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(model, 10, (3, 32, 32), "cifar10").to(device)


def trained(model: str, data: DataSplits, recipe: Recipe, seed: int, device: torch.device, teacher,
            capture: bool = True) -> tuple[torch.nn.Module, float, int]:
    """A network trained one epoch: with its seconds and the graph replays counted. With
    ``capture`` False a graph-ready step runs eagerly on CUDA too."""
    original_capture = TrainStep._capture
    if not capture:
        TrainStep._capture = lambda step: None
    try:
        net = network(model, 0, device)
        seconds, replays = replays_during(lambda: timed(
            lambda: train(net, data, 1, recipe=recipe, seed=seed, device=device, teacher=teacher, quiet=True),
            device))
        return net, seconds, replays
    finally:
        TrainStep._capture = original_capture


def break_even(model: str, batch_size: int, device: torch.device) -> str:
    """Where capturing starts to pay, for a run's default step (SGD at the device's precision)
    on ``model``: both trainings timed at two lengths, n1 = MIN_CAPTURED_STEPS and n2 = 3 n1
    steps, give each step's seconds eager (e) and captured (c) and the capture's cost (C, its
    warm-up steps included); capturing pays from C / (e - c) steps."""
    recipe = Recipe(lr=0.01, batch_size=batch_size, weight_decay=5e-4,
                    precision=resolve_precision("auto", device), cuda_graphs=True)
    n1, n2 = MIN_CAPTURED_STEPS, 3 * MIN_CAPTURED_STEPS
    data = {n: synthetic_cifar(batch_size * n) for n in (n1, n2)}
    for n in (n1, n2):  # untimed: cudnn's autotuning and the copies of the data to the device
        trained(model, data[n], recipe, 3, device, None, capture=False)
    timed_runs = {(n, capture): trained(model, data[n], recipe, 3, device, None, capture=capture)[1:]
                  for n in (n1, n2) for capture in (True, False)}
    seconds = {key: run[0] for key, run in timed_runs.items()}
    e = (seconds[n2, False] - seconds[n1, False]) / (n2 - n1)
    c = (seconds[n2, True] - seconds[n1, True]) / (n2 - n1)
    cost = seconds[n1, True] - seconds[n1, False] - n1 * (c - e)
    if not all(timed_runs[n, True][1] for n in (n1, n2)):
        verdict = "nothing was captured (eager both ways): no break-even"
    elif e <= c:
        verdict = "capturing never pays"
    else:
        verdict = f"capturing pays from {max(0.0, cost) / (e - c):.0f} steps"
    return (f"{model} {recipe.precision} batch {batch_size}: eager {1e3 * e:.2f} ms/step, captured {1e3 * c:.2f} "
            f"ms/step, capture {cost:.2f} s; {verdict} (MIN_CAPTURED_STEPS = {MIN_CAPTURED_STEPS})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--break-even", default=None, metavar="MODELS",
                    help="comma-separated networks to time where capturing pays, at a run's default batch "
                         "(default on CUDA: resnet20,resnet56; none on a CPU, where nothing is captured)")
    ap.add_argument("--break-even-batch", type=int, default=None, help="default: a run's on the device")
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                    help="the cases' table and the exit status (--no-check: the break-even lines alone)")
    args = ap.parse_args()
    device = torch.device(args.device)
    # the same kernels each time (no atomics in cudnn's choices), so that replayed and eager
    # steps can be compared exactly; the break-even timings below run as a run does
    torch.backends.cudnn.deterministic = args.check
    steps = MIN_CAPTURED_STEPS  # the shortest training that is captured
    data = synthetic_cifar(args.batch_size * steps)
    x = ((data.train.images[:1024] - 0.5) / 0.25).to(device)
    teacher = network(args.model, 1, device).eval()
    print(f"torch {torch.__version__}, {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, {args.model}, "
          f"{steps} steps of {args.batch_size}; captured: replays of {steps - WARMUP_STEPS} expected")
    if args.check:
        print("case | replays | captured vs graph-ready eager | captured vs plain eager | captured s | "
              "graph-ready eager s")
    failed = []
    for optimizer, precision, distill, lr in CASES if args.check else ():
        recipe = Recipe(lr=lr, batch_size=args.batch_size, weight_decay=5e-4, optimizer=optimizer,
                        precision=resolve_precision(precision, device), distill=distill)
        uses = teacher if distill else None
        ready = dataclasses.replace(recipe, cuda_graphs=True)
        captured, captured_s, replays = trained(args.model, data, ready, 3, device, uses)
        static, static_s, _ = trained(args.model, data, ready, 3, device, uses, capture=False)
        eager, _, _ = trained(args.model, data, recipe, 3, device, uses)
        other, _, _ = trained(args.model, data, recipe, 4, device, uses)
        with torch.no_grad():
            reference, scale = captured(x), float((other(x) - eager(x)).norm())
            apart = float((static(x) - reference).norm()) / scale
            from_eager = float((eager(x) - reference).norm()) / scale
        case = f"{optimizer} {recipe.precision}{' distill' if distill else ''}"
        print(f"{case} | {replays} | {apart:.3f} | {from_eager:.3f} | {captured_s:.2f} | {static_s:.2f}", flush=True)
        if device.type == "cuda" and (replays != steps - WARMUP_STEPS or not apart < APART):
            failed.append(case)
        elif apart >= NOTED:
            print(f"  note: {case}'s replays ended {apart:.3f} of another seed's distance from its eager steps, "
                  "more than rounding should give", flush=True)
    models = args.break_even if args.break_even is not None else "resnet20,resnet56" if device.type == "cuda" else ""
    torch.backends.cudnn.deterministic = False
    for model in filter(None, models.split(",")):  # a measurement: its failure is not the check's
        try:
            print(break_even(model, args.break_even_batch or default_batch_size(device), device), flush=True)
        except Exception as exc:  # noqa: BLE001 - said in one line, the exit status is the check's
            print(f"{model}: break-even not measured ({type(exc).__name__}: {exc})", flush=True)
    if failed:
        print(f"not captured, or not the eager training: {', '.join(failed)}", file=sys.stderr)
        return 1 if any(case.startswith("sgd") for case in failed) else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

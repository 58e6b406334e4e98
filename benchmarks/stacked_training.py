"""Several same-architecture models trained as one step (``torch.func``: the models' weights
stacked by ``stack_module_state``, one ``vmap`` of forward, loss and gradient, one SGD update of
the stacked tensors) against the same models trained one after another, same batches, same
run: the lever the GPU issue names for the oracle's seeds and a sweep's seeds, where one small
network leaves a GPU mostly idle. Measured, not yet adopted: the engine (harness/training.py)
trains one model per step.

    python benchmarks/stacked_training.py --model resnet20 --copies 4 --device cuda
    OMP_NUM_THREADS=1 python benchmarks/stacked_training.py --steps 4 --device cpu   # a try

Prints images per second both ways (all copies' images), the ratio ``stacked: X.XXx``, and
each way's gradient error against float64 (stacking runs other kernels: vmap makes each
convolution a grouped one). On this CPU (torch 2.14.1, fp32, ResNet-20, one thread) the stacked
step was slower (0.51x with 4 copies of batch 128), and with 3 or more copies some gradients
were far from float64 where one by one was not: with 4 copies of batch 128, 15 of 236 tensors
off by 10x or more, the worst 9.8e-4 against 3.1e-6; of batch 32, 78 of 236, the worst 5.5e-3
against 9.3e-7 (with 2 copies none). Over the whole gradient of each copy (the second error
line), both ways are off float64 alike: on an AVX-512 CPU, 4 copies of batch 128, stacked
2.6e-4 to 9.9e-4 and one by one 2.5e-4 to 5.6e-4; of batch 32, stacked 9.8e-7 to 1.4e-3 and one
by one 1.0e-6 to 1.8e-3. The per-tensor counts come from tensors whose gradient is near zero;
speed, not accuracy, keeps the stacked step out of the engine. On CUDA it is unmeasured:
benchmarks/gpu/run.py runs this script.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from harness.models import create_model

LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_by_one(models, batches, autocast) -> float:
    """Each model trains its own batches with torch.optim.SGD; returns seconds."""
    opts = [torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY) for m in models]
    sync(batches[0][0].device)
    t0 = time.perf_counter()
    for x, y in batches:  # x: (copies, batch, ...), one step of every copy
        for i, (m, opt) in enumerate(zip(models, opts)):
            with autocast():
                loss = F.cross_entropy(m(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sync(batches[0][0].device)
    return time.perf_counter() - t0


class StackedStep:
    """One SGD step of every copy at once; the same update as torch.optim.SGD's
    (d = g + wd * w; b = momentum * b + d, the first b = d; w -= lr * b)."""

    def __init__(self, models, autocast):
        self.params, self.buffers = stack_module_state(models)
        self.params = {k: v.detach() for k, v in self.params.items()}
        self.momentum = None
        skeleton = copy.deepcopy(models[0]).to("meta")

        def loss_of(p, b, x, y):
            with autocast():
                return F.cross_entropy(functional_call(skeleton, (p, b), (x,)), y)

        self.grads = vmap(grad_and_value(loss_of), in_dims=(0, 0, 0, 0))

    def __call__(self, x, y):
        grads, _ = self.grads(self.params, self.buffers, x, y)
        names = list(self.params)
        w = [self.params[n] for n in names]
        d = torch._foreach_add([grads[n] for n in names], w, alpha=WEIGHT_DECAY)
        if self.momentum is None:
            self.momentum = [t.clone() for t in d]
        else:
            torch._foreach_mul_(self.momentum, MOMENTUM)
            torch._foreach_add_(self.momentum, d)
        torch._foreach_add_(w, self.momentum, alpha=-LR)


def gradient_errors(models, batch) -> tuple[list[tuple[str, float, float]], list[tuple[float, float]]]:
    """Gradient errors against float64 (on the CPU), relative to the exact gradient's norm, both
    ways: per parameter tensor (copy and name, stacked error, one-by-one error), and per copy
    over the whole gradient (every parameter's as one vector: stacked, one by one), which a
    near-zero gradient of one tensor cannot make large. Stacking runs other kernels (vmap makes
    each convolution a grouped one), so its gradients are right where its error is of the size
    of the one-by-one error."""
    x, y = batch
    step = StackedStep(models, contextlib.nullcontext)
    grads, _ = step.grads(step.params, step.buffers, x, y)
    rows, whole = [], []
    for i, model in enumerate(models):
        exact = copy.deepcopy(model).cpu().double()
        F.cross_entropy(exact(x[i].cpu().double()), y[i].cpu()).backward()
        single = copy.deepcopy(model)
        F.cross_entropy(single(x[i]), y[i]).backward()
        mine = dict(single.named_parameters())
        sums = [0.0, 0.0, 0.0]  # squared norms: exact, stacked error, one-by-one error
        for name, p in exact.named_parameters():
            stacked_error = float((grads[name][i].cpu().double() - p.grad).norm())
            single_error = float((mine[name].grad.cpu().double() - p.grad).norm())
            norm = float(p.grad.norm())
            rows.append((f"copy {i} {name}", stacked_error / (norm or 1.0), single_error / (norm or 1.0)))
            sums = [sums[0] + norm ** 2, sums[1] + stacked_error ** 2, sums[2] + single_error ** 2]
        whole_norm = sums[0] ** 0.5 or 1.0
        whole.append((sums[1] ** 0.5 / whole_norm, sums[2] ** 0.5 / whole_norm))
    return rows, whole


def stacked(models, batches, autocast) -> tuple[float, StackedStep]:
    step = StackedStep(models, autocast)
    sync(batches[0][0].device)
    t0 = time.perf_counter()
    for x, y in batches:
        step(x, y)
    sync(batches[0][0].device)
    return time.perf_counter() - t0, step


def captured(models, batches, autocast) -> float:
    """The stacked step as one CUDA graph: static inputs copied in, the graph replayed."""
    step = StackedStep(models, autocast)
    x_static, y_static = batches[0][0].clone(), batches[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up off the default stream, as capture requires
            step(x_static, y_static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(x_static, y_static)
    sync(x_static.device)
    t0 = time.perf_counter()
    for x, y in batches:
        x_static.copy_(x)
        y_static.copy_(y)
        graph.replay()
    sync(x_static.device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128, help="images per copy per step")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--capture", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the stacked step captured as a CUDA graph (default: on CUDA)")
    args = ap.parse_args()
    device = torch.device(args.device)
    capture = device.type == "cuda" if args.capture is None else args.capture

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    torch.manual_seed(0)
    models = [create_model(args.model, 10, (3, 32, 32), "cifar10").to(device).train() for _ in range(args.copies)]
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(args.copies, args.batch_size, 3, 32, 32, generator=g).to(device),
                torch.randint(0, 10, (args.copies, args.batch_size), generator=g).to(device))
               for _ in range(args.steps)]
    warm = batches[:2]  # untimed: allocator, cudnn autotuning, vmap's first trace
    one_by_one([copy.deepcopy(m) for m in models], warm, autocast)
    stacked([copy.deepcopy(m) for m in models], warm, autocast)

    errors, whole = gradient_errors(models, batches[0])
    # off: 10x the one-by-one error of the same tensor and above 1e-4 (plain fp32 sums stay near 1e-6)
    off = sorted((e for e in errors if e[1] > max(10 * e[2], 1e-4)), key=lambda e: -e[1])
    t_one = one_by_one([copy.deepcopy(m) for m in models], batches, autocast)
    t_stacked, _ = stacked([copy.deepcopy(m) for m in models], batches, autocast)
    images = args.copies * args.batch_size * args.steps
    where = f"{device.type}, {torch.get_num_threads()} thread(s)" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"{args.model}, {args.copies} copies x batch {args.batch_size}, {args.steps} steps, {args.precision}, {where}")
    print(f"one by one: {images / t_one:9.0f} img/s")
    print(f"stacked:    {images / t_stacked:9.0f} img/s")
    if capture:
        try:
            t_graph = captured([copy.deepcopy(m) for m in models], batches, autocast)
            print(f"stacked, one CUDA graph: {images / t_graph:9.0f} img/s ({t_one / t_graph:.2f}x one by one)")
        except Exception as exc:  # what the engine would have to work around: say it
            print(f"stacked, one CUDA graph: capture failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    print(f"gradient error against float64, ||g - g64|| / ||g64|| per tensor, first batch: largest stacked "
          f"{max(e[1] for e in errors):.1e}, one by one {max(e[2] for e in errors):.1e}; "
          + (f"{len(off)} of {len(errors)} tensors off by 10x the one-by-one error or more, the worst "
             f"{off[0][0]} ({off[0][1]:.1e} against {off[0][2]:.1e})" if off else
             f"no tensor of {len(errors)} off by 10x the one-by-one error"))
    print(f"gradient error against float64, the whole gradient per copy, first batch: stacked "
          f"{', '.join(f'{w[0]:.1e}' for w in whole)}; one by one {', '.join(f'{w[1]:.1e}' for w in whole)}")
    print(f"stacked: {t_one / t_stacked:.2f}x")


if __name__ == "__main__":
    main()

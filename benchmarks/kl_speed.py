"""How fast is the KL criterion, one ablation per forward pass or many?

Scores every filter (and, separately, every removable block) of a model three ways, in
the same run and on the same inputs: one whole forward pass per unit (no prefix cache),
one forward from the unit's block per unit (the cached prefix: ``kl_scores_loop``), and
many ablations per forward pass (``kl_scores_batched``, torch.func.vmap). Prints the
times, the speed-ups and the largest difference between the scores.

    python benchmarks/kl_speed.py --model resnet20 --device cpu --calib 256 \\
        --checkpoint ../shared/models/cifar-resnet/resnet20-12fca82f.th \\
        --data-dir ../shared/data/cifar10-jpeg --cache-dir /tmp/klcache

Without --checkpoint the weights are random (with random batch-norm statistics), without
--data-dir the calibration inputs are Gaussian noise. ``--repeat N`` times every method N
times, interleaved (A B C A B C ...), and reports the fastest of each: on a shared machine
that is the least disturbed figure.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from harness import registry
from harness.models import create_model
from harness.training import normalize
from harness_plugins.criteria import KL_IMAGES_PER_FORWARD, _log_probs, kl_scores_batched, kl_scores_loop


def busy_seconds() -> float:
    """CPU seconds that the whole machine has been busy (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def randomise(model, x, seed: int = 0) -> None:
    """Random batch-norm weights and running statistics (so that no unit is trivially dead),
    and the classifier scaled to logits of standard deviation 2 on ``x``: random weights
    give logits in the hundreds, a one-hot softmax whose KLs are float32 rounding noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=g))
                m.bias.copy_(torch.empty(n).uniform_(-0.2, 0.2, generator=g))
                m.running_mean.copy_(torch.empty(n).uniform_(-0.1, 0.1, generator=g))
                m.running_var.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=g))
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        scale = 2.0 / float(model.eval()(x[:256]).std())
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.mul_(scale)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calib", type=int, default=256, help="calibration inputs")
    parser.add_argument("--checkpoint", help="weights (default: random)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", help="real calibration images from this data set (default: noise)")
    parser.add_argument("--cache-dir", default="/tmp/klcache")
    parser.add_argument("--structures", default="filter,layer", help="structure types to score")
    parser.add_argument("--images", type=int, default=None,
                        help="batched path: ablations x inputs per forward "
                             f"(default: {KL_IMAGES_PER_FORWARD} by device type)")
    parser.add_argument("--repeat", type=int, default=1, help="time each method this many times (fastest kept)")
    parser.add_argument("--skip-no-prefix", action="store_true", help="skip the slowest method")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.data_dir:
        data = registry.get("dataset", args.dataset).load(args.data_dir, args.cache_dir, args.calib)
        x = normalize(data.calib.images[: args.calib], data.mean, data.std)
        num_classes, shape, what = data.num_classes, tuple(data.input_shape), f"{len(x)} {data.label} images"
    else:
        num_classes, shape = 10, (3, 32, 32)
        x = torch.randn(args.calib, *shape, generator=torch.Generator().manual_seed(1))
        what = f"{args.calib} noise inputs"
    torch.manual_seed(0)  # random weights: the same ones in every run
    model = create_model(args.model, num_classes, shape, args.dataset, checkpoint=args.checkpoint)
    if not args.checkpoint:
        randomise(model, x)
    model = model.to(device).eval()
    x = x.to(device)
    print(f"{args.model} ({'weights ' + args.checkpoint if args.checkpoint else 'random weights'}) on {what}, "
          f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    with torch.no_grad():  # warm up kernels (mkldnn, cuDNN) before any timing
        _log_probs(model, x)
    synchronize(device)

    methods = {
        "loop-no-prefix": lambda s, u: kl_scores_loop(model, s, u, x, prefix=False),
        "loop": lambda s, u: kl_scores_loop(model, s, u, x),
        "batched": lambda s, u: kl_scores_batched(model, s, u, x, images=args.images),
    }
    if args.skip_no_prefix:
        del methods["loop-no-prefix"]
    for stype in args.structures.split(","):
        structure = next((s for s in registry.registry("structure").values() if s.type == stype and s.supports(model)),
                         None)
        if structure is None:
            print(f"{stype}: no structure of that type supports {args.model}")
            continue
        units = structure.units(model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        seconds = {name: float("inf") for name in methods}
        others = {}  # CPU seconds that other processes used during the fastest run of each
        scores = {}
        for _ in range(args.repeat):
            for name, method in methods.items():
                synchronize(device)
                busy, own, t0 = busy_seconds(), own_seconds(), time.perf_counter()
                scores[name] = method(structure, units)
                synchronize(device)
                elapsed = time.perf_counter() - t0
                if elapsed < seconds[name]:
                    seconds[name] = elapsed
                    others[name] = max(0.0, (busy_seconds() - busy) - (own_seconds() - own))
        unchanged = all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        ref = scores["loop"]
        diff = max(max(abs(a - b) for a, b in zip(ref, s)) for s in scores.values())
        rel = max(max(abs(a - b) / max(abs(a), 1e-300) for a, b in zip(ref, s) if a) for s in scores.values())
        times = ", ".join(f"{name} {t:.1f} s" for name, t in seconds.items())
        speedups = "; ".join(f"speedup vs {name}: {t / seconds['batched']:.2f}x"
                             for name, t in seconds.items() if name != "batched")
        print(f"{stype}s ({len(units)} units): {times}; {speedups}; max |diff| {diff:.1e} (relative {rel:.1e}); "
              f"scores {min(ref):.2e}..{max(ref):.2e}; parameters {'unchanged' if unchanged else 'CHANGED'}; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        print("  CPU seconds used by other processes meanwhile (0 = a quiet machine): "
              + ", ".join(f"{name} {others[name]:.1f}" for name in methods), flush=True)


if __name__ == "__main__":
    main()

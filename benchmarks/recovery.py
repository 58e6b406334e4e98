"""How much accuracy does fine-tuning recover per epoch, with and without distillation
from the parent?

The parent is the pretrained CIFAR ResNet-20 after the quick budget's baseline step
(2 epochs of 10,000 CIFAR-10 (JPEG) images). The two candidates of the first pruning
iteration are built exactly as a run builds them (KL criterion, one block removed, and
filters removed until the FLOPs match), then each is fine-tuned for 0.25 to 4 epochs
(an epoch is the quick budget's 10,000 images), each length a run of its own with its
own cosine schedule, with ``--distill 0`` and each weight in ``--distill-weights``.
Prints a table of test accuracy and writes a plot.

    python benchmarks/recovery.py --out recovery.png
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from harness import registry
from harness.candidates import build_candidates
from harness.session import Session
from harness.config import BenchConfig
from harness.training import Recipe, accuracy, resolve_precision, train

try:
    import cifar_setup
except ImportError:  # run as a module from the repository root
    from benchmarks import cifar_setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cifar_setup.add_arguments(ap)
    ap.add_argument("--epochs", default="0.25,0.5,1,2,4")
    ap.add_argument("--distill-weights", default="0.5", help="compared with 0 (no distillation)")
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--train-subset", type=int, default=10_000, help="images per epoch (the quick budget's)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="plot file (PNG)")
    args = ap.parse_args()
    device = torch.device(args.device)
    data, parent = cifar_setup.load(args)
    parent = parent.to(device)
    cfg = BenchConfig(model=args.model, criterion="kl", structures=["layer", "filter"], calib_size=args.calib_size,
                      train_subset=args.train_subset, precision=resolve_precision("auto", device), batch_size=128,
                      lr=0.01, optimizer="sgd").resolved()
    s = Session(cfg, data, device, None, False)
    t0 = time.perf_counter()
    train(parent, data, 2.0, recipe=s.recipe(), seed=0, device=device, quiet=True)  # the quick baseline step
    base = accuracy(parent, data.test, data, device)
    candidates = build_candidates(s, parent, 1, registry.get("method", "cka"))
    flops = {c.type: s.measure(c.model, "flops") for c in candidates}
    parent_flops = s.measure(parent, "flops")
    print(f"parent: test accuracy {base:.2f} ({time.perf_counter() - t0:.0f} s); candidates: " + ", ".join(
        f"{c.type} ({len(c.units)} units, FLOPs -{100 * (1 - flops[c.type] / parent_flops):.2f}%)"
        for c in candidates), flush=True)
    epochs = [float(e) for e in args.epochs.split(",")]
    weights = [0.0] + [float(w) for w in args.distill_weights.split(",")]
    rows = []
    for cand in candidates:
        zero = accuracy(cand.model, data.test, data, device)
        for w in weights:
            recipe = Recipe(lr=0.01, batch_size=128, weight_decay=5e-4, precision=cfg.precision,
                            train_subset=args.train_subset, distill=w, distill_temperature=args.temperature)
            accs = [zero]
            for e in epochs:
                t0, got = time.perf_counter(), []
                for seed in range(args.seeds):
                    m = copy.deepcopy(cand.model)
                    train(m, data, e, recipe=recipe, seed=100 + seed, device=device, teacher=parent, quiet=True)
                    got.append(accuracy(m, data.test, data, device))
                accs.append(sum(got) / len(got))
                print(f"{cand.type:6s} distill {w:<4g} {e:5g} epochs: {accs[-1]:.2f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            rows.append((cand.type, w, accs))
    print(f"\ntest accuracy (%) after fine-tuning; parent {base:.2f}; epochs of {args.train_subset} images; "
          f"{args.seeds} seed(s) each")
    print("| candidate | distill | 0 | " + " | ".join(f"{e:g}" for e in epochs) + " |")
    print("|---|---|" + "---|" * (len(epochs) + 1))
    for structure, w, accs in rows:
        print(f"| {structure} | {w:g} | " + " | ".join(f"{a:.2f}" for a in accs) + " |")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for structure, w, accs in rows:
            ax.plot([0] + epochs, accs, marker="o", linestyle="-" if w else "--",
                    label=f"{structure}, distill {w:g}")
        ax.axhline(base, color="grey", linewidth=0.8, label="parent")
        ax.set_xscale("symlog", linthresh=0.25)
        ax.set_xticks([0] + epochs, [f"{e:g}" for e in [0] + epochs])
        ax.minorticks_off()
        ax.set_xlabel(f"fine-tuning epochs ({args.train_subset} images each)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{args.model}: recovery after the first pruning step")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

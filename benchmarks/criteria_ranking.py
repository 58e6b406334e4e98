"""How far do cheaper criteria agree with KL, and what do they cost?

For a model and its calibration split, scores every filter and every removable block with
``kl`` (the reference: one forward pass per unit), ``taylor`` (one backward pass for all
units) and ``l1`` (weights only), then prints the Spearman correlation of each criterion's
ranking with KL's within each layer (filters compete within a layer first) and across
blocks, and the time each criterion took, as a ratio to KL's time measured in this run.

    python benchmarks/criteria_ranking.py --checkpoint ../shared/models/cifar-resnet/resnet20-12fca82f.th \
        --data-dir path/to/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from scipy.stats import spearmanr

from harness import registry
from harness.api import CriterionContext
from harness.checks import default_cache_dir
from harness.models import create_model
from harness.training import normalize


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--criteria", default="taylor,l1", help="compared with kl")
    args = parser.parse_args()

    data = registry.get("dataset", args.dataset).load(args.data_dir, default_cache_dir(), args.calib_size)
    model = create_model(args.model, data.num_classes, data.input_shape, args.dataset, checkpoint=args.checkpoint).eval()
    ctx = CriterionContext(normalize(data.calib.images, data.mean, data.std), data.calib.labels, seed=0)
    names = ["kl", *args.criteria.split(",")]
    print(f"{args.model} on {data.label}, {len(data.calib)} calibration images, torch threads {torch.get_num_threads()}")
    for stype in ("filter", "layer"):
        structure = next(s for s in registry.registry("structure").values()
                         if s.type == stype and s.supports(model))
        units = structure.units(model)
        scores, seconds = {}, {}
        for name in names:
            t0 = time.perf_counter()
            scores[name] = registry.get("criterion", name).scores(model, structure, units, ctx)
            seconds[name] = time.perf_counter() - t0
        print(f"\n{stype}: {len(units)} units")
        groups = defaultdict(list)
        for i, unit in enumerate(units):
            groups[unit.site if stype == "filter" else "all blocks"].append(i)
        header = "| group | units | " + " | ".join(f"Spearman {n} vs kl" for n in names[1:]) + " |"
        print(header + "\n|" + "---|" * (2 + len(names) - 1))
        means = defaultdict(list)
        for group, idx in groups.items():
            cells = []
            for name in names[1:]:
                rho = spearmanr([scores["kl"][i] for i in idx], [scores[name][i] for i in idx]).statistic
                means[name].append(rho)
                cells.append(f"{rho:+.3f}")
            print(f"| {group} | {len(idx)} | " + " | ".join(cells) + " |")
        if len(groups) > 1:
            print("| mean over layers | | " + " | ".join(f"{sum(means[n]) / len(means[n]):+.3f}" for n in names[1:]) + " |")
        print("time: " + ", ".join(f"{n} {seconds[n]:.2f} s ({seconds[n] / seconds['kl']:.3f}x kl)" for n in names))


if __name__ == "__main__":
    main()

"""What `--plain-layers` costs in accuracy (issue 24): a CIFAR VGG-11 with batch norm (torchvision's
layers, a linear classifier after global pooling) trained briefly on CIFAR-10 (JPEG), then
pruned by ``harness.prune`` with plain layers offered to the depth candidate. Every iteration
records both candidates after the same brief fine-tune: one plain layer removed (with its batch
norm and the ReLU after it) and the width candidate of the same FLOPs; the table compares their
validation accuracy.

    python benchmarks/plain_layers.py --data-dir ../shared/data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]


class CifarVGG(nn.Module):
    """torchvision's VGG-11 layers with batch norm, for 32x32 images: no 7x7 pooling and no
    4096-wide classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["A"], batch_norm=True)
        self.classifier = nn.Linear(512, classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def loader(split, data, shuffle=False):
    images = (split.images - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(1, -1, 1, 1)
    return DataLoader(TensorDataset(images, split.labels), batch_size=256, shuffle=shuffle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
    parser.add_argument("--train", type=int, default=5000, help="training images per epoch")
    parser.add_argument("--baseline-epochs", type=float, default=4)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "plain-layers-cpu.md"))
    args = parser.parse_args()

    import harness
    from harness import records, registry
    from harness.checks import default_cache_dir

    data = registry.get("dataset", "cifar10").load(args.data_dir, default_cache_dir(), 256)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=g)
    train = type(data.train)(data.train.images[order[:10000]], data.train.labels[order[:10000]])
    val = type(data.train)(data.train.images[order[10000:11000]], data.train.labels[order[10000:11000]])
    test = type(data.test)(data.test.images[:2000], data.test.labels[:2000])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    settings = dict(baseline_epochs=args.baseline_epochs, iterations=args.iterations, train_subset=args.train,
                    candidate_epochs=0.25, finetune_epochs=0.5, calib_size=256, criterion="l1",
                    options={"plain_layers": True})
    result = harness.prune(CifarVGG(), loader(train, data, True), loader(val, data), test_loader=loader(test, data),
                           runs_dir=tempfile.mkdtemp(prefix="plain-"), name="vgg11bn", **settings)
    minutes = (time.perf_counter() - t0) / 60
    rows = records.read_iterations(result.run_dir)
    lines = [
        "# The accuracy cost of plain layers (`--plain-layers yes`)",
        "",
        f"`python benchmarks/plain_layers.py --data-dir ../shared/data/cifar10-jpeg` ({minutes:.0f} min on this "
        "project's 2-core CPU, one thread, shared with other jobs). A CIFAR VGG-11 with batch norm (torchvision's "
        f"layers, global pooling, one linear classifier), trained {args.baseline_epochs:g} epochs of "
        f"{args.train} CIFAR-10 (JPEG) images from random weights, then "
        f"`harness.prune(..., {', '.join(f'{k}={v!r}' for k, v in settings.items() if k != 'baseline_epochs')})`; "
        "validation: 1,000 training images held out, test: the first 2,000 test images.",
        "",
        f"Unpruned: validation accuracy {rows[0]['val_accuracy']:.2f}%, test {rows[0]['accuracy']:.2f}%.",
        "",
        "| iteration | plain layer removed | its FLOPs -% | its val. acc. | width candidate val. acc. (same FLOPs) "
        "| kept | test acc. after fine-tune |",
        "|---|---|---|---|---|---|---|",
    ]
    parent = rows[0]["flops"]
    kind = lambda c: c.get("type", c.get("structure"))  # noqa: E731 - older records wrote "structure"
    for before, row in zip(rows, rows[1:]):
        cands = {kind(c): c for c in row["candidates"]}
        layer, width = cands.get("layer"), cands.get("filter")
        removed = row["removed"][0] if row["decision"] == "L" else "(width kept)"
        lines.append(f"| {row['iteration']} | {removed if layer else '-'} | "
                     f"{100 * (1 - layer['flops'] / before['flops']):.2f} | {layer['val_accuracy']:.2f} | "
                     f"{width['val_accuracy']:.2f} | {row['decision']} | {row['accuracy']:.2f} |"
                     if layer and width else f"| {row['iteration']} | - | - | - | - | {row['decision']} | "
                                             f"{row['accuracy']:.2f} |")
    gaps = [c_l["val_accuracy"] - c_w["val_accuracy"] for c_l, c_w in
            ((next(c for c in r["candidates"] if kind(c) == "layer"),
              next(c for c in r["candidates"] if kind(c) == "filter")) for r in rows[1:]
             if {kind(c) for c in r["candidates"]} >= {"layer", "filter"})]
    lines += ["", f"Mean validation-accuracy difference, plain layer minus width candidate of the same FLOPs: "
                  f"{sum(gaps) / len(gaps):+.2f} points over {len(gaps)} iterations; after {len(rows) - 1} iterations "
                  f"FLOPs -{rows[-1]['flops_reduction_pct']:.1f}% ({parent / 1e6:.0f} MFLOPs unpruned), test accuracy "
                  f"{rows[-1]['accuracy']:.2f}% (path {result.decision_path})."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

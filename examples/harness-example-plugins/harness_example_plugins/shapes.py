"""A data set made on the spot, so the example runs offline: 32x32 colour images of four
patterns (horizontal stripes, vertical stripes, a checkerboard, a centred square), each drawn
with a random phase, colour and noise from a fixed seed."""

from __future__ import annotations

import torch

from harness.api import DataSplits, Dataset, TensorSplit

CLASSES = ("horizontal", "vertical", "checkerboard", "square")


def _draw(n: int, g: torch.Generator) -> TensorSplit:
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    period = torch.randint(4, 9, (n, 1, 1), generator=g).float()
    phase = torch.rand(n, 1, 1, generator=g) * period
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    rows = (((y + phase) / period).floor() % 2)
    cols = (((x + phase) / period).floor() % 2)
    square = ((y - 15.5).abs() < period * 1.5) & ((x - 15.5).abs() < period * 1.5)
    pattern = torch.stack([rows, cols, (rows + cols) % 2, square.float()], 1)[torch.arange(n), labels]
    colour = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.4
    images = pattern[:, None] * colour + 0.15 * torch.randn(n, 3, 32, 32, generator=g)
    return TensorSplit(images.clamp(0, 1), labels)


class Shapes(Dataset):
    name = "example-shapes"
    description = "32x32 images of four seeded patterns, made on the spot (example plugin: a data set)"

    def load(self, data_dir, cache_dir, calib_size):
        g = torch.Generator().manual_seed(0)
        pool, test = _draw(2000 + calib_size, g), _draw(500, g)
        train, calib = pool.hold_out(calib_size, seed=1)
        return DataSplits(train, calib, test, (0.5,) * 3, (0.25,) * 3, num_classes=len(CLASSES),
                          label="example shapes", class_names=CLASSES)

"""What the engine benchmarks share: CIFAR-10 (JPEG) from ../shared and a pretrained CIFAR
ResNet, loaded the way a run loads them."""

from __future__ import annotations

from pathlib import Path

from harness import registry
from harness.checks import default_cache_dir
from harness.models import create_model

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA_DIR = SHARED / "data" / "cifar10-jpeg"
CHECKPOINTS = {p.name.split("-")[0]: p for p in (SHARED / "models" / "cifar-resnet").glob("resnet*.th")}


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="CIFAR-10 image folders or their tar.gz")
    parser.add_argument("--checkpoint", default=None, help="default: ../shared's weights for --model")
    parser.add_argument("--calib-size", type=int, default=256)


def load(args):
    """(data splits, pretrained model) as a run with these settings would have them."""
    data = registry.get("dataset", "cifar10").load(args.data_dir, default_cache_dir(), args.calib_size)
    checkpoint = args.checkpoint or str(CHECKPOINTS[args.model])
    model = create_model(args.model, data.num_classes, data.input_shape, "cifar10", checkpoint=checkpoint)
    return data, model

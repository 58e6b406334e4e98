import pytest
"""The real thing at test scale: published ResNet-20 weights, CIFAR-10 (JPEG) from ../shared."""

from conftest import RESNET_CKPT, needs_shared, run_cli
from harness import records


@pytest.mark.slow
@needs_shared
def test_pretrained_resnet20_prunes_one_iteration_and_still_classifies(cifar_subset, tmp_path):
    result = run_cli("bench", "--model", "resnet20", "--checkpoint", str(RESNET_CKPT / "resnet20-12fca82f.th"),
                     "--data-dir", str(cifar_subset), "--budget", "smoke", "--iterations", "1",
                     "--baseline-epochs", "0", "--candidate-epochs", "0.1", "--finetune-epochs", "0.3",
                     "--train-subset", "1000", "--calib-size", "64", "--runs-dir", str(tmp_path), "--name", "r20")
    assert result.returncode == 0, result.stderr
    base, pruned = records.read_iterations(tmp_path / "r20")
    # the published weights, on JPEG test images, without any fine-tuning
    assert base["accuracy"] > 70
    assert pruned["flops"] < base["flops"] and pruned["params"] < base["params"]
    assert pruned["decision"] in {"L", "F"} and len(pruned["candidates"]) == 2
    assert pruned["accuracy"] > 50, "ten classes: chance is 10%"

import shutil

import pytest
import torch

from conftest import RESNET_CKPT, needs_shared
from harness.errors import HarnessError
from harness.models import create_model


@needs_shared
def test_published_checkpoint_format_loads():
    model = create_model("resnet20", 10, (3, 32, 32), "cifar10", checkpoint=str(RESNET_CKPT / "resnet20-12fca82f.th"))
    raw = torch.load(RESNET_CKPT / "resnet20-12fca82f.th", weights_only=True, map_location="cpu")["state_dict"]
    assert torch.equal(model.linear.weight, raw["module.linear.weight"])


@needs_shared
def test_pretrained_resolves_through_the_torch_hub_cache(tmp_path, monkeypatch):
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(RESNET_CKPT / "resnet32-d509ac18.th", tmp_path / "hub" / "checkpoints")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    model = create_model("resnet32", 10, (3, 32, 32), "cifar10", pretrained=True)
    raw = torch.load(RESNET_CKPT / "resnet32-d509ac18.th", weights_only=True, map_location="cpu")["state_dict"]
    assert torch.equal(model.conv1.weight, raw["module.conv1.weight"])


@needs_shared
def test_pretrained_file_with_a_wrong_hash_is_refused(tmp_path, monkeypatch):
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    # resnet20's bytes under resnet32's name: the hash in the name does not match
    src = RESNET_CKPT / "resnet20-12fca82f.th"
    shutil.copy(src, tmp_path / "hub" / "checkpoints" / "resnet32-d509ac18.th")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(HarnessError):
        create_model("resnet32", 10, (3, 32, 32), "cifar10", pretrained=True)


@needs_shared
def test_mismatched_checkpoint_is_a_one_line_error():
    with pytest.raises(HarnessError) as err:
        create_model("resnet20", 10, (3, 32, 32), "cifar10", checkpoint=str(RESNET_CKPT / "resnet56-4bfd9763.th"))
    assert "does not match model resnet20" in str(err.value) and "\n" not in str(err.value)


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(HarnessError) as err:
        create_model("resnet20", 10, (3, 32, 32), "cifar10", checkpoint=str(bad))
    assert "corrupt" in str(err.value) and "\n" not in str(err.value)


class Payload:
    """Any class of one's own: a pickle holding it could run code when loaded."""


def test_a_pickle_with_code_is_refused_without_advice_to_unpickle_it(tmp_path):
    bad = tmp_path / "code.th"
    torch.save({"weights": Payload()}, bad)
    with pytest.raises(HarnessError) as err:
        create_model("resnet20", 10, (3, 32, 32), "cifar10", checkpoint=str(bad))
    message = str(err.value)
    assert "weights-only unpickler refused it" in message and "Payload" in message
    assert "weights_only" not in message and "\n" not in message

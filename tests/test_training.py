"""The training engine (harness/training.py): its augmentation, schedule, precision,
distillation and side-by-side fine-tuning do what they claim."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from harness.api import DataSplits, TensorSplit
from harness.config import BenchConfig
from harness.training import (Recipe, _schedule, crop_flip, default_batch_size, distillation_loss, resolve_precision,
                              scaled_lr, train)
from conftest import seeded_resnet


def small_cifar(n=256, seed=0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    split = TensorSplit(images, labels)
    return DataSplits(split, split, split, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 10, augment="cifar")


def test_crop_flip_is_a_padded_crop_then_a_flip():
    x = torch.rand(6, 3, 8, 8)
    oy, ox = torch.tensor([0, 8, 4, 2, 7, 4]), torch.tensor([8, 0, 4, 5, 1, 4])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(x, oy, ox, flip)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(6):
        want = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        assert torch.equal(out[i], want.flip(2) if flip[i] else want)
    assert torch.equal(out[5], x[5])  # offset 4 unflipped: the image itself


def test_warm_up_then_cosine():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = _schedule(opt, steps=100, warmup=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11)
    assert lrs[:10] == sorted(lrs[:10]) and lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)  # warm-up done: the cosine starts at the full rate
    assert lrs[-1] < 0.001 and lrs[10:] == sorted(lrs[10:], reverse=True)


def test_learning_rate_rules():
    assert scaled_lr(0.1, 512, "sgd") == pytest.approx(0.4)
    assert scaled_lr(1e-3, 512, "adamw") == pytest.approx(2e-3)
    assert scaled_lr(0.1, 128, "sgd") == 0.1
    assert default_batch_size(torch.device("cpu")) == 128
    assert default_batch_size(torch.device("cuda")) == 512
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")


def test_training_is_seeded_and_trains():
    data = small_cifar()
    recipe = Recipe(lr=0.05, batch_size=32, weight_decay=5e-4, precision="fp32")
    a, b = seeded_resnet(), seeded_resnet()
    before = [p.detach().clone() for p in a.parameters()]
    train(a, data, 1, recipe=recipe, seed=3, device="cpu", quiet=True)
    train(b, data, 1, recipe=recipe, seed=3, device="cpu", quiet=True)
    for p, q, p0 in zip(a.parameters(), b.parameters(), before):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, p0) for p, p0 in zip(a.parameters(), before))
    # the model comes back in eval mode and in the ordinary memory layout
    assert not a.training and all(p.is_contiguous() for p in a.parameters())


def test_bf16_training_keeps_fp32_parameters_and_statistics():
    data = small_cifar()
    model = seeded_resnet()
    train(model, data, 0.5, recipe=Recipe(lr=0.05, batch_size=32, weight_decay=5e-4, precision="bf16"),
          seed=0, device="cpu", quiet=True)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_distillation_pulls_the_student_towards_the_teacher():
    logits = torch.randn(16, 10)
    assert float(distillation_loss(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, torch.randn(16, 10), 4.0)) > 0
    data = small_cifar()
    teacher = seeded_resnet(seed=1)
    recipe = Recipe(lr=0.05, batch_size=32, weight_decay=0.0, precision="fp32", distill=1.0, distill_temperature=2.0)

    def gap(model):
        with torch.no_grad():
            x = (data.train.images[:128] - 0.5) / 0.25
            return float(distillation_loss(model(x), teacher(x), 2.0))

    student = seeded_resnet(seed=2)
    plain = copy.deepcopy(student)
    start = gap(student)
    train(student, data, 2, recipe=recipe, seed=0, device="cpu", teacher=teacher, quiet=True)
    train(plain, data, 2, recipe=dataclasses.replace(recipe, distill=0.0), seed=0, device="cpu", teacher=teacher,
          quiet=True)
    assert gap(student) < 0.7 * start
    assert gap(student) < gap(plain)


def test_candidates_fine_tuned_side_by_side_equal_one_after_another(tmp_path):
    """Several devices (here two CPU 'devices' in threads, as several GPUs would be used)
    give each candidate exactly what sequential fine-tuning gives."""
    from harness.session import Session

    data = small_cifar()
    cfg = BenchConfig(lr=0.05, batch_size=32, optimizer="sgd", precision="fp32", train_subset=None, seed=5)
    models = [seeded_resnet(seed=1), seeded_resnet(seed=2)]
    tags = [(1, "candidate", 0), (1, "candidate", 1)]
    one_by_one = Session(cfg, data, torch.device("cpu"), tmp_path, False)
    side_by_side = Session(cfg, data, torch.device("cpu"), tmp_path, False,
                           devices=[torch.device("cpu"), torch.device("cpu")])
    a = one_by_one.finetune_all([copy.deepcopy(m) for m in models], 0.5, tags)
    b = side_by_side.finetune_all([copy.deepcopy(m) for m in models], 0.5, tags)
    for ma, mb in zip(a, b):
        for p, q in zip(ma.state_dict().values(), mb.state_dict().values()):
            assert torch.equal(p, q)


def test_records_from_before_the_engine_resume_in_fp32_at_batch_128():
    old = {"model": "tiny-resnet", "seed": 0, "budget": "quick", "extra": {}}
    cfg = BenchConfig.from_dict(old)
    assert cfg.precision == "fp32" and cfg.batch_size == 128 and cfg.distill == 0.0

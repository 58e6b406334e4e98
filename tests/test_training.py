"""The training engine (harness/training.py, harness/train_step.py): its augmentation, schedule, precision,
distillation and side-by-side fine-tuning do what they claim."""

import contextlib
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from harness.api import DataSplits, TensorSplit
from harness.config import BenchConfig
from harness.errors import HarnessError
from harness.train_step import MIN_CAPTURED_STEPS, WARMUP_STEPS, Recipe, TrainStep, crop_flip, distillation_loss
from harness.training import TrainingPaused, default_batch_size, lr_factor, resolve_precision, scaled_lr, train
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
    factor = lr_factor(steps=100, warmup=0.1)
    lrs = [factor(i) for i in range(100)]
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


# ---------------------------------------------------------------- the captured step (--cuda-graphs)
def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def close_to(trained, other, start, share):
    """Every tensor of ``other`` within ``share`` of how far training moved ``trained``'s."""
    a, b = state_of(trained), state_of(other)
    return a.keys() == b.keys() and all(
        float((a[k] - b[k]).abs().max()) <= share * max(1e-6, float((a[k] - start[k]).abs().max()))
        for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("distill,warmup", [(0.0, 0.0), (0.5, 0.2)])
def test_the_graph_ready_step_trains_as_the_eager_one(distill, warmup):
    """What a CUDA graph captures (batches read from fixed buffers, the learning rate from a
    tensor, a fused optimizer), run here with capture off, ends where the eager loop does, up
    to float rounding (fused SGD rounds differently; measured here: at most 0.63% of a
    tensor's change after 12 steps), augmentation, warm-up, cosine and distillation included.
    A wrong batch, rate or step would be off by the whole change."""
    data = small_cifar(n=200)  # 6 full batches of 32 per epoch: the last 8 samples are left out
    recipe = Recipe(lr=0.05, batch_size=32, weight_decay=5e-4, precision="fp32", distill=distill, warmup=warmup)
    teacher = seeded_resnet(seed=1)
    eager, static, start = seeded_resnet(), seeded_resnet(), state_of(seeded_resnet())
    train(eager, data, 2, recipe=recipe, seed=3, device="cpu", teacher=teacher, quiet=True)
    train(static, data, 2, recipe=dataclasses.replace(recipe, cuda_graphs=True), seed=3, device="cpu",
          teacher=teacher, quiet=True)
    assert close_to(eager, static, start, 0.02)
    other_seed = seeded_resnet()
    train(other_seed, data, 2, recipe=recipe, seed=4, device="cpu", teacher=teacher, quiet=True)
    assert not close_to(eager, other_seed, start, 0.02)  # the tolerance tells batch orders apart


def test_the_graph_ready_step_with_adamw_trains_as_the_eager_one():
    """AdamW's steps are nearly signs, so an element whose gradient is near zero may step the
    other way after a rounding difference: compared by what the networks compute, the static
    step's stays far closer to the eager one's than another seed's does."""
    data = small_cifar(n=128)
    recipe = Recipe(lr=1e-3, batch_size=32, weight_decay=0.05, precision="fp32", optimizer="adamw")
    eager, static, other = seeded_resnet(), seeded_resnet(), seeded_resnet()
    train(eager, data, 1, recipe=recipe, seed=0, device="cpu", quiet=True)
    train(static, data, 1, recipe=dataclasses.replace(recipe, cuda_graphs=True), seed=0, device="cpu", quiet=True)
    train(other, data, 1, recipe=recipe, seed=1, device="cpu", quiet=True)
    with torch.no_grad():
        x = (data.train.images - 0.5) / 0.25
        same, apart = (eager(x) - static(x)).norm(), (eager(x) - other(x)).norm()
    assert same < 0.1 * apart


def test_the_graph_ready_step_keeps_one_shape_and_address():
    """A graph replays fixed buffers: every step fills the same tensors, whose shape is the batch."""
    data = small_cifar(n=100)
    model = seeded_resnet().train()
    step = TrainStep(model, data.train, data, Recipe(lr=0.05, batch_size=32, weight_decay=0.0), 32, True,
                     torch.contiguous_format, None, static=True, device=torch.device("cpu"))
    addresses = {k: v.data_ptr() for k, v in step.batch.items()}
    for start in (0, 32, 64):
        batch = {"order": torch.arange(start, start + 32), "oy": torch.zeros(32, dtype=torch.long),
                 "ox": torch.full((32,), 8), "flip": torch.ones(32, dtype=torch.bool)}
        loss = step(batch, 0.01)
        assert torch.isfinite(loss)
        assert {k: v.data_ptr() for k, v in step.batch.items()} == addresses
        assert torch.equal(step.batch["order"], batch["order"]) and float(step.lr) == pytest.approx(0.01)
    assert step.graph is None and not step.capture  # never captured off CUDA


class FakeCuda:
    """Just enough of torch.cuda for TrainStep's CUDA branch to run on a CPU: streams and
    device contexts that do nothing, and a graph whose capture runs its body once (as a real
    capture records it and the first replay runs it) and whose later replays run the step
    again from its fixed buffers, which is what a replayed graph computes."""

    def __init__(self, monkeypatch, fail=False):
        self.step, self.fail, self.replays, self.captures, self.restored = None, fail, 0, [], []

        class Stream:
            def wait_stream(self, other):
                pass

        self.default = Stream()
        fake = self

        class Graph:
            first = True

            def replay(self):
                fake.replays += 1
                if self.first:  # the capture already ran this step
                    self.first = False
                    return
                fake.step.opt.zero_grad(set_to_none=True)  # the graph writes its gradients afresh
                fake.step.compute(fake.step.batch)

        @contextlib.contextmanager
        def graph(g, stream=None, capture_error_mode="global"):
            fake.captures.append({"stream": stream, "mode": capture_error_mode,
                                  "capturable": [grp.get("capturable") for grp in fake.step.opt.param_groups]})
            if fake.fail:
                raise RuntimeError("operation not permitted when stream is capturing")
            yield

        for name, value in {"Stream": lambda device: Stream(), "current_stream": lambda device=None: self.default,
                            "stream": lambda s: contextlib.nullcontext(), "device": lambda d: contextlib.nullcontext(),
                            "CUDAGraph": Graph, "graph": graph, "synchronize": lambda device=None: None,
                            "set_stream": self.restored.append}.items():
            monkeypatch.setattr(torch.cuda, name, value)


def _steps(optimizer, capture, monkeypatch, fail=False, n=8):
    """A graph-ready step over ``n`` fixed batches at changing rates: eagerly, or through
    FakeCuda's capture and replays."""
    data = small_cifar(n=64)
    step = TrainStep(seeded_resnet().train(), data.train, data,
                     Recipe(lr=0.05 if optimizer == "sgd" else 1e-3, batch_size=16, weight_decay=5e-4,
                            optimizer=optimizer), 16, True, torch.contiguous_format, None, static=True,
                     device=torch.device("cpu"))
    fake = None
    if capture:
        fake = FakeCuda(monkeypatch, fail)
        fake.step, step.capture = step, True  # as on CUDA
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        batch = {"order": torch.randperm(64, generator=g)[:16], "oy": torch.randint(0, 9, (16,), generator=g),
                 "ox": torch.randint(0, 9, (16,), generator=g), "flip": torch.rand(16, generator=g) < 0.5}
        step(batch, 0.05 * (1 - i / n))
    return step, fake


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_capture_replays_what_the_graph_ready_step_computes(optimizer, monkeypatch):
    """TrainStep's CUDA branch, run on a CPU with a fake torch.cuda: warm-up steps, one capture
    on the step's own stream (Adam's family made capturable for it), then a replay per step
    that reads the batch and the rate filled in just before, ending bit for bit where the
    graph-ready step run eagerly does. A replay before the buffers are filled, a capture per
    step or a stale learning rate would end elsewhere."""
    eager, _ = _steps(optimizer, False, monkeypatch)
    captured, fake = _steps(optimizer, True, monkeypatch)
    assert fake.replays == 8 - WARMUP_STEPS and len(fake.captures) == 1 and captured.graph is not None
    assert fake.captures[0]["stream"] is captured.side and fake.captures[0]["mode"] == "thread_local"
    assert fake.captures[0]["capturable"] == ([True] if optimizer == "adamw" else [None])
    for (name, a), b in zip(state_of(eager.model).items(), state_of(captured.model).values()):
        assert torch.equal(a, b), name


def test_a_failed_capture_trains_on_eagerly_and_the_process_captures_no_more(monkeypatch, capsys):
    """PyTorch cannot recover a failed capture: one warning, the stream that was current
    restored, AdamW's capturable flag reset, the step trained eagerly to the graph-ready
    step's weights, and no later step of the process tries to capture."""
    from harness import train_step

    monkeypatch.setattr(train_step, "_CAPTURE_FAILED", set())
    eager, _ = _steps("adamw", False, monkeypatch)
    failed, fake = _steps("adamw", True, monkeypatch, fail=True)
    assert len(fake.captures) == 1 and fake.replays == 0 and failed.graph is None and not failed.capture
    assert fake.restored == [fake.default] and [g["capturable"] for g in failed.opt.param_groups] == [False]
    assert capsys.readouterr().err.count("CUDA graph capture failed (RuntimeError: operation not permitted") == 1
    for (name, a), b in zip(state_of(eager.model).items(), state_of(failed.model).values()):
        assert torch.equal(a, b), name
    later, fake = _steps("sgd", True, monkeypatch, n=WARMUP_STEPS + 2)
    assert fake.captures == [] and not later.capture and "capture failed" not in capsys.readouterr().err


@pytest.mark.parametrize("graph_ready", [False, True])
def test_a_training_paused_by_its_deadline_resumes_to_the_uninterrupted_weights(graph_ready):
    """A deadline already passed pauses at the first epoch boundary, after one epoch; resumed
    from its progress (momentum, data order, schedule position) the training ends bit for bit
    where one uninterrupted training does, in both step kinds (the graph-ready one keeps its
    learning rate in a tensor that the saved optimizer state must not replace)."""
    data = small_cifar(n=200)  # 6 steps of 32 per epoch
    recipe = Recipe(lr=0.05, batch_size=32, weight_decay=5e-4, precision="fp32", warmup=0.2,
                    cuda_graphs=graph_ready)
    whole, paused = seeded_resnet(), seeded_resnet()
    train(whole, data, 2.5, recipe=recipe, seed=3, device="cpu", quiet=True)
    with pytest.raises(TrainingPaused) as stop:
        train(paused, data, 2.5, recipe=recipe, seed=3, device="cpu", quiet=True, deadline=0.0)
    progress = stop.value.progress
    assert progress.step == 6 and stop.value.steps == 16 and not paused.training  # ceil(2.5 * 200 / 32)
    assert not torch.equal(state_of(paused)["linear.weight"], state_of(whole)["linear.weight"])
    saved = torch.load(_round_trip(progress.to_dict()), weights_only=True)  # as harness pretrain stores it
    with pytest.raises(TrainingPaused) as again:  # one more epoch per call, however late
        train(paused, data, 2.5, recipe=recipe, seed=3, device="cpu", quiet=True, deadline=0.0,
              resume=type(progress)(**saved))
    assert again.value.progress.step == 12
    train(paused, data, 2.5, recipe=recipe, seed=3, device="cpu", quiet=True, resume=again.value.progress)
    a, b = state_of(whole), state_of(paused)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("graph_ready", [False, True])
def test_a_training_killed_after_a_checkpoint_continues_from_it_to_the_uninterrupted_weights(graph_ready):
    """Checkpoints at epoch boundaries (here every one): the weights and progress of the first,
    taken in the middle of a training that went on, continue a fresh model to the end the
    training reached, bit for bit."""
    data = small_cifar(n=200)
    recipe = Recipe(lr=0.05, batch_size=32, weight_decay=5e-4, precision="fp32", cuda_graphs=graph_ready)
    whole, taken = seeded_resnet(), []
    train(whole, data, 2.5, recipe=recipe, seed=3, device="cpu", quiet=True, checkpoint_every_s=0.0,
          checkpoint=lambda progress: taken.append((state_of(whole), progress)))
    assert [progress.step for _, progress in taken] == [6, 12]
    weights, progress = taken[0]
    revived = seeded_resnet(seed=5)  # other weights, to be replaced by the checkpoint's
    revived.load_state_dict(weights)
    train(revived, data, 2.5, recipe=recipe, seed=3, device="cpu", quiet=True, resume=progress)
    a, b = state_of(whole), state_of(revived)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _round_trip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_cuda_graphs_setting_resolves_by_device():
    from harness.resolve import resolve

    assert resolve(BenchConfig()).config.cuda_graphs == ("on" if torch.cuda.is_available() else "off")
    assert resolve(BenchConfig(cuda_graphs="off")).config.cuda_graphs == "off"
    with pytest.raises(HarnessError, match="--cuda-graphs on needs a CUDA device.*valid choices here: auto, off"):
        resolve(BenchConfig(cuda_graphs="on", device="cpu"))
    assert BenchConfig.from_dict({"model": "tiny-resnet"}).cuda_graphs == "off"  # older records trained eagerly


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA device captures the step")
def test_captured_training_matches_eager_training_on_cuda():
    """On CUDA the step is captured after a few eager ones and replayed; the result is the
    eager loop's within float rounding (fused and foreach SGD round differently)."""
    data = small_cifar(n=32 * MIN_CAPTURED_STEPS)
    recipe = Recipe(lr=0.05, batch_size=32, weight_decay=5e-4, precision="fp32", distill=0.5)
    teacher = seeded_resnet(seed=1).cuda()
    eager, captured = seeded_resnet().cuda(), seeded_resnet().cuda()
    train(eager, data, 1, recipe=recipe, seed=3, device="cuda", teacher=teacher, quiet=True)
    replays = []
    original = torch.cuda.CUDAGraph.replay
    torch.cuda.CUDAGraph.replay = lambda self: (replays.append(1), original(self))[1]
    try:
        train(captured, data, 1, recipe=dataclasses.replace(recipe, cuda_graphs=True), seed=3, device="cuda",
              teacher=teacher, quiet=True)
    finally:
        torch.cuda.CUDAGraph.replay = original
    assert len(replays) == MIN_CAPTURED_STEPS - 3
    for p, q in zip(state_of(eager).values(), state_of(captured).values()):
        if p.is_floating_point():
            assert torch.allclose(p, q, atol=1e-3, rtol=1e-3)

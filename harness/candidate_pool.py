"""A run's candidates fine-tuned as concurrent Ray tasks (``--parallel-candidates``), with
the records of the sequential run: each task trains under its own seed with the run's threads."""

from __future__ import annotations

import copy

import torch

from harness.checkpoints import renamed
from harness.cluster import RETRIES, connect
from harness.seeds import seeded_train


def _finetune_task(model, data, epochs, recipe, seed, teacher, threads: int):
    """One candidate's fine-tune in a Ray worker, with the threads of the run's own process so
    that the arithmetic (and so the result) is the sequential one's."""
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trained = seeded_train(model.to(device), data, epochs, recipe=recipe, seed=seed, device=device,
                           teacher=teacher.to(device) if teacher is not None else None, quiet=True)
    return renamed(trained.state_dict(), value=lambda v: v.cpu())


class CandidatePool:
    """Fine-tunes a run's candidates as concurrent Ray tasks (one CPU slot each, or one GPU
    when the run uses CUDA); the data set goes into Ray's object store once."""

    def __init__(self, data, gpu: bool):
        self.ray = connect(None)
        self.data = self.ray.put(data)
        self.task = self.ray.remote(_finetune_task).options(num_cpus=1, num_gpus=1 if gpu else 0,
                                                             max_retries=RETRIES)

    def finetune_all(self, models, epochs, recipe, seeds, teacher):
        """Fine-tunes copies of ``models`` side by side and loads the results into them."""
        threads = torch.get_num_threads()
        teacher_ref = self.ray.put(copy.deepcopy(teacher).cpu()) if teacher is not None else None
        refs = [self.task.remote(copy.deepcopy(m).cpu(), self.data, epochs, recipe, seed, teacher_ref, threads)
                for m, seed in zip(models, seeds)]
        for model, state in zip(models, self.ray.get(refs)):
            model.load_state_dict(state)
            model.eval()
        return models

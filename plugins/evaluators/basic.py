"""The evaluators the loop itself needs: measured on every iteration of every run."""

from __future__ import annotations

from harness.api import Evaluator
from harness.api import count_flops, count_parameters
from harness.api import accuracy


class Accuracy(Evaluator):
    name = "accuracy"
    description = "clean top-1 accuracy (%) on the test split"

    def evaluate(self, model, ctx):
        return {"accuracy": accuracy(model, ctx.data.test, ctx.data, ctx.device)}


class Flops(Evaluator):
    name = "flops"
    description = "FLOPs of one forward pass (torch.utils.flop_counter, a multiply-add = 2) and parameters"

    def evaluate(self, model, ctx):
        return {"flops": count_flops(model, ctx.data.input_shape), "params": count_parameters(model)}

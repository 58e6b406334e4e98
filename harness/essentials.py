"""The plugins the core registers itself, before any entry point, and which no ``--block``
removes (pytest's essential plugins): the ``accuracy`` and ``flops`` evaluators. The core
takes these measurements on every iteration whatever else is installed; registered, they are
listed, named and checked like any other evaluator."""

from __future__ import annotations

from harness.api import Evaluator, accuracy, count_flops, count_parameters
from harness.hookspecs import hookimpl

CORE_EVALUATORS = ("accuracy", "flops")  # measured on every iteration: the loop's stopping rules read them


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


@hookimpl
def register_evaluators():
    return [Accuracy, Flops]

"""Evaluators: measurements of a model, taken on the unpruned model and after each
iteration (or on the final model only), chosen with ``--evaluators``. (``accuracy`` and
``flops``, measured on every iteration, are the core's own: harness/essentials.py.) Each
module holds one evaluator; this package registers them all."""

from harness import hookimpl
from harness_plugins.evaluators.cifar10c import Cifar10C
from harness_plugins.evaluators.cifar102 import Cifar102
from harness_plugins.evaluators.co2 import CO2
from harness_plugins.evaluators.fgsm import FGSM
from harness_plugins.evaluators.latency import Latency, LatencyORT


@hookimpl
def register_evaluators():
    return [FGSM, Latency, LatencyORT, CO2, Cifar10C, Cifar102]

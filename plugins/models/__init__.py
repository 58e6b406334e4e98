"""Model families, created by name (``harness bench --model NAME``). Each module holds one
family; this package registers them all."""

from harness import hookimpl
from harness_plugins.models.cifar_resnet import cifar_resnets


@hookimpl
def register_models():
    return [*cifar_resnets()]

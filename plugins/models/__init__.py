"""Model families, created by name (``harness bench --model NAME``). Each module holds one
family; this package registers them all."""

from harness import hookimpl
from harness_plugins.models.cifar_resnet import cifar_resnets
from harness_plugins.models.tabular_transformer import tabular_transformers
from harness_plugins.models.timm_vit import timm_models
from harness_plugins.models.torchvision_resnet import torchvision_resnets
from harness_plugins.models.traced import traced_models


@hookimpl
def register_models():
    return [*cifar_resnets(), *torchvision_resnets(), *timm_models(), *tabular_transformers(), *traced_models()]

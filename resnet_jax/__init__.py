"""resnet_jax: deep residual networks in JAX/Flax, exact to torchvision."""

from resnet_jax.hub import pretrained
from resnet_jax.models import (BasicBlock, BatchNorm, Bottleneck, ResNet, get_model, list_models,
                               register_model)
from resnet_jax import timm_models  # noqa: F401  registers timm's names

__version__ = "0.1.0"

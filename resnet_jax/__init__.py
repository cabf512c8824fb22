"""resnet_jax: deep residual networks in JAX/Flax, exact to torchvision.

The public surface (each name is documented where it is defined):

  build and list      get_model, list_models, register_model, ResNet, BasicBlock, Bottleneck, BatchNorm
  weights             pretrained (by name, file or saved directory), load_variables (a converted model or
                      a training workdir, or timm's weights by name), from_torchvision / to_torchvision
                      and from_timm / to_timm (state dicts both ways; transformers' layout reads too)
  inference           fold_batchnorm (BatchNorm folded into the convolutions)
  size                complexity (parameters and multiply-adds), count_params
  Flax NNX            to_nnx, nnx_variables (the same models as `nnx.Module`s)

The layers below it: `resnet_jax.models`, `.data`, `.weights`, `.training` (see each folder's docstring).
"""

from resnet_jax.api import load_variables, pretrained
from resnet_jax.models import (BasicBlock, BatchNorm, Bottleneck, ResNet, get_model, list_models,
                               register_model)
from resnet_jax.models.complexity import complexity, count_params
from resnet_jax.models.inference import fold_batchnorm
from resnet_jax.models.nnx import linen_variables as nnx_variables, to_nnx
from resnet_jax.weights.convert import from_torchvision, to_torchvision
from resnet_jax.weights.convert_timm import from_timm, to_timm

__version__ = "0.1.0"

__all__ = ["BasicBlock", "BatchNorm", "Bottleneck", "ResNet", "complexity", "count_params",
           "fold_batchnorm", "from_timm", "from_torchvision", "get_model", "list_models", "load_variables",
           "nnx_variables", "pretrained", "register_model", "to_nnx", "to_timm", "to_torchvision"]


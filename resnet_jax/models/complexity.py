"""Parameter counts and forward multiply-adds of a model, computed from shapes alone."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


@dataclasses.dataclass(frozen=True)
class Complexity:
  params: int  # trainable parameters (BatchNorm running statistics excluded, as torchvision counts)
  macs: int  # multiply-adds of one forward pass of one image, convolutions and linear layers

  @property
  def gmacs(self) -> float:
    return self.macs / 1e9


def count_params(params) -> int:
  """Number of scalars in a parameter tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def complexity(model: nn.Module, image_size: int | Sequence[int] = 224) -> Complexity:
  """Parameters and multiply-adds of `model` on one image of `image_size` (int or (height, width)).

  Multiply-adds are those of the convolutions (weight-standardised and blur filters included) and
  the classifier, the convention of torchvision's
  "GFLOPS" metadata (which, despite the name, counts multiply-adds): norms, activations, pooling and
  additions are left out. Nothing is computed: shapes come from `jax.eval_shape`.
  """
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  x = jax.ShapeDtypeStruct((1, h, w, getattr(model, "in_channels", 3)), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype)))
  macs = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != "__call__":
      return out
    (inputs,) = args[:1]
    if isinstance(module, nn.Conv):  # 1-D (ECA) or 2-D
      per_output = int(np.prod(module.kernel_size)) * inputs.shape[-1] // module.feature_group_count
    elif isinstance(module, nn.Dense):
      per_output = inputs.shape[-1]
    elif hasattr(module, "macs_per_output"):  # layers.StdConv, layers.BlurPool
      per_output = module.macs_per_output(inputs)
    else:
      return out
    macs.append(int(np.prod(out.shape[1:])) * per_output)
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return Complexity(params=count_params(variables["params"]), macs=int(sum(macs)))

"""The zoo for Flax NNX: each linen model wrapped once (`nnx.bridge.ToNNX`), train and eval mode as NNX has them.

One definition of each architecture serves both APIs: `to_nnx` wraps the linen module, and the wrapper
passes `mutable=['batch_stats']` itself in train mode, so the running statistics update in place as an
`nnx.BatchNorm`'s do (a bare `ToNNX` needs the caller to know to pass it, and fails with Flax's
"collection is immutable" error otherwise).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util
from flax import nnx
from flax.nnx import bridge

from resnet_jax.models.resnet import get_model


class NNXModel(bridge.ToNNX):
  """A zoo model as an `nnx.Module`.

  Like NNX's own layers (and PyTorch's modules), it starts in train mode: `model.eval()` switches to the
  running statistics, `model.train()` back (both set `use_running_average`, the attribute
  `nnx.BatchNorm` uses). In train mode a call normalises with the batch's statistics and updates the
  running ones in the module's state; `drop_rate`/`drop_path_rate` models draw from the 'dropout' stream
  of the `rngs` given at construction.
  """

  def __init__(self, module: nn.Module, rngs: nnx.Rngs, use_running_average: bool = False):
    super().__init__(module, rngs=rngs)
    # ToNNX takes every attribute not prefixed `to_nnx__` for a linen variable: the mode is stored
    # under that prefix, and `use_running_average` (what `eval()`/`train()` set) is a property.
    self.to_nnx__use_running_average = use_running_average

  @property
  def use_running_average(self) -> bool:
    return self.to_nnx__use_running_average

  @use_running_average.setter
  def use_running_average(self, value: bool) -> None:
    self.to_nnx__use_running_average = bool(value)

  def __call__(self, x: jax.Array, *, rngs: Optional[nnx.Rngs] = None, **kwargs: Any) -> Any:
    train = not self.use_running_average
    return super().__call__(x, train=train, rngs=rngs,
                            mutable=["batch_stats"] if train else False, **kwargs)


def to_nnx(model: nn.Module | str, variables: Optional[Mapping[str, Any]] = None, *,
           rngs: Optional[nnx.Rngs] = None, input_shape: Sequence[int] = (1, 32, 32, 3),
           **overrides: Any) -> NNXModel:
  """An NNX module computing `model`, holding `variables` (converted, pretrained or trained) if given.

  Example:
    model, variables, _ = resnet_jax.pretrained("resnet50", "IMAGENET1K_V2")
    net = resnet_jax.to_nnx(model, variables)
    net.eval()
    logits = net(x)

  Args:
    model: a linen zoo model, or a registered name (then `overrides` go to `get_model`).
    variables: linen variables {'params', 'batch_stats'}; None initialises fresh ones from `rngs`.
    rngs: NNX random streams ('params' for a fresh initialisation, 'dropout' for training with
      dropout or stochastic depth); default `nnx.Rngs(0)`.
    input_shape: NHWC shape of a sample batch for the initialisation (the channel count must be the
      model's input channels; height and width only need to survive the downsampling).

  Returns:
    The `NNXModel`, in train mode.
  """
  if isinstance(model, str):
    model = get_model(model, **overrides)
  elif overrides:
    raise TypeError("overrides are only for a model given by name")
  rngs = nnx.Rngs(0) if rngs is None else rngs
  shape = tuple(input_shape[:-1]) + (getattr(model, "in_channels", input_shape[-1]),)
  net = NNXModel(model, rngs)
  net.use_running_average = True  # initialise without touching any statistics
  bridge.lazy_init(net, jnp.zeros(shape, jnp.float32))
  net.use_running_average = False
  if variables is not None:
    load_variables(net, variables)
  return net


def linen_variables(net: NNXModel) -> dict[str, Any]:
  """The linen variables {'params', 'batch_stats'} an `NNXModel` holds: what `to_torchvision`,
  `fold_batchnorm` and the training checkpoints take."""
  attrs = {k: v for k, v in vars(net).items()
           if not k.startswith(("to_nnx__", "_pytree__"))}
  return bridge.variables.nnx_attrs_to_linen_vars(attrs)


def load_variables(net: NNXModel, variables: Mapping[str, Any]) -> None:
  """Replaces the NNX module's variables by linen `variables` of the same structure and shapes."""
  expected = {k: jnp.shape(v) for k, v in traverse_util.flatten_dict(linen_variables(net)).items()}
  given = {k: jnp.shape(v) for k, v in traverse_util.flatten_dict(dict(variables)).items()}
  if expected != given:
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    shapes = sorted(k for k in expected.keys() & given.keys() if expected[k] != given[k])
    raise ValueError(f"variables do not fit this model: missing {missing[:3]}, unexpected "
                     f"{unexpected[:3]}, other shapes {shapes[:3]}")
  nnx.update(net, nnx.State(bridge.variables.linen_vars_to_nnx_attrs(
      jax.tree.map(jnp.asarray, dict(variables)))))

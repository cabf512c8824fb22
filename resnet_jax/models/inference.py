"""The inference-optimised model: BatchNorm folded into the preceding convolutions."""

from __future__ import annotations

import flax
import jax.numpy as jnp
import numpy as np

from resnet_jax.models.resnet import ResNet

EPSILON = 1e-5  # models.BatchNorm's, torchvision's


def fold_batchnorm(model: ResNet, variables: dict) -> tuple[ResNet, dict]:
  """Returns an eval-mode-equivalent model whose convolutions carry their BatchNorm.

  Each `conv -> BatchNorm(running statistics)` pair becomes one convolution with a bias:
  `kernel * a` and bias `b`, where `a = scale / sqrt(var + eps)` and `b = bias - mean * a`. The network
  then has no normalisation pass at all, which lets XLA/cuDNN fuse convolution, bias, residual add and
  ReLU into one kernel. The folding is done in float64 and stored in `param_dtype`; outputs agree with
  `model.apply(variables, x, train=False)` to float32 rounding (checked in tests/test_inference.py).

  Args:
    model: a `ResNet` with `norm='batch'`.
    variables: its {'params', 'batch_stats'}.

  Returns:
    (the same model with `norm='folded'`, its {'params'}).
  """
  if not isinstance(model, ResNet):  # ResNetV2's norms precede their convs: nothing to fold into
    raise ValueError(f"only a models.ResNet can be folded, not a {type(model).__name__}")
  if model.norm != "batch":
    raise ValueError(f"only BatchNorm can be folded, the model has norm={model.norm!r}")
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
  stats = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["batch_stats"]))
  folded = {}
  for path, value in params.items():
    *module, leaf = path
    if module[-1] == "fc" or "se" in module:  # the classifier; attention convs have no norm
      folded[path] = value
      continue
    if leaf != "kernel":
      continue  # norm parameters, consumed with their conv below
    norm = tuple(module[:-1]) + (_norm_of(module[-1]),)
    a = (np.asarray(params[norm + ("scale",)], np.float64)
         / np.sqrt(np.asarray(stats[norm + ("var",)], np.float64) + EPSILON))
    b = np.asarray(params[norm + ("bias",)], np.float64) - np.asarray(
        stats[norm + ("mean",)], np.float64) * a
    dtype = np.asarray(value).dtype
    folded[path] = jnp.asarray(np.asarray(value, np.float64) * a, dtype)  # HWIO: a is per O
    folded[tuple(module) + ("bias",)] = jnp.asarray(b, dtype)
  return model.clone(norm="folded"), {"params": flax.traverse_util.unflatten_dict(folded)}


# Convs whose norm is not named by the rule below: timm's deep stem and ResNet-RS's stem conv.
_NORMS = {"downsample_conv": "downsample_bn", "conv1_0": "conv1_1", "conv1_3": "conv1_4",
          "conv1_6": "bn1", "maxpool_0": "maxpool_1"}


def _norm_of(conv: str) -> str:
  """The norm that follows a conv, named as models.py names it (conv1 -> bn1, downsample_conv -> ..._bn)."""
  return _NORMS.get(conv) or conv.replace("conv", "bn")

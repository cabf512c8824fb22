"""Optimizers of the modern recipes: per-group weight decay as torchvision's reference, gradient-norm
clipping, and AdamW / LARS / LAMB from optax with the exclusions their ResNet recipes use.

torchvision's reference (`utils.set_weight_decay`) puts each parameter in one group: a parameter
named 'bias' gets `--bias-weight-decay` when given (BatchNorm biases included: its custom key is
matched first), else a BatchNorm parameter gets `--norm-weight-decay` when given, else
`--weight-decay`. In Flax the BatchNorm (or GroupNorm) parameters are the 1-D 'scale'/'bias' leaves
outside the classifier; the classifier's bias is the one other 'bias'.
"""

from __future__ import annotations

from typing import Optional

import jax
import optax

OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")


def _is_norm(path, leaf) -> bool:
  return leaf.ndim == 1 and path[0].key != "fc"


def decay_rates(params, weight_decay: float, norm_weight_decay: Optional[float] = None,
                bias_weight_decay: Optional[float] = None):
  """A tree of each parameter's weight-decay rate, grouped as torchvision's `set_weight_decay`."""
  def rate(path, leaf):
    if bias_weight_decay is not None and path[-1].key == "bias":
      return bias_weight_decay
    if norm_weight_decay is not None and _is_norm(path, leaf):
      return norm_weight_decay
    return weight_decay
  return jax.tree_util.tree_map_with_path(rate, params)


def add_decayed_weights(rates_fn) -> optax.GradientTransformation:
  """updates + rate * params, each leaf at its own rate (`rates_fn(params)`, Python floats)."""
  def update(updates, state, params=None):
    rates = rates_fn(params)
    return jax.tree.map(lambda g, p, r: g + r * p if r else g, updates, params, rates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def not_norm_or_bias(params):
  """True for the kernels: LARS and LAMB recipes (MLPerf's, NVIDIA's) neither decay nor adapt the
  BatchNorm parameters and biases."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def create(name: str, schedule: optax.Schedule, *, weight_decay: float, momentum: float = 0.9,
           nesterov: bool = False, norm_weight_decay: Optional[float] = None,
           bias_weight_decay: Optional[float] = None,
           clip_grad_norm: float = 0.0) -> optax.GradientTransformation:
  """The optimizer `name` with decoupled-from-the-loss weight decay.

  'sgd' adds the decay to the gradient before momentum (PyTorch's SGD); 'adamw' decays after Adam's
  scaling (PyTorch's AdamW, betas 0.9/0.999, eps 1e-8); 'lars' (trust coefficient 0.001, as MLPerf)
  and 'lamb' exclude BatchNorm parameters and biases. `clip_grad_norm` > 0 clips the gradient's
  global norm first, as torch.nn.utils.clip_grad_norm_ before `optimizer.step()`.
  """
  rates = lambda params: decay_rates(params, weight_decay, norm_weight_decay, bias_weight_decay)
  if name == "sgd":
    tx = optax.chain(add_decayed_weights(rates),
                     optax.sgd(schedule, momentum=momentum, nesterov=nesterov))
  elif name == "adamw":
    tx = optax.chain(optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8), add_decayed_weights(rates),
                     optax.scale_by_learning_rate(schedule))
  elif name == "lars":
    tx = optax.lars(schedule, weight_decay=weight_decay, weight_decay_mask=not_norm_or_bias,
                    trust_ratio_mask=not_norm_or_bias, momentum=momentum, nesterov=nesterov)
  elif name == "lamb":
    tx = optax.lamb(schedule, weight_decay=weight_decay, mask=not_norm_or_bias)
  else:
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
  if clip_grad_norm:
    tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
  return tx

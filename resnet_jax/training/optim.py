"""Learning-rate schedules and optimizers: the paper's SGD and the modern recipes' optimizers.

The modern recipes get per-group weight decay as torchvision's reference, gradient-norm clipping,
and AdamW / LARS / LAMB from optax with the exclusions their ResNet recipes use.

torchvision's reference (`utils.set_weight_decay`) puts each parameter in one group: a parameter
named 'bias' gets `--bias-weight-decay` when given (BatchNorm biases included: its custom key is
matched first), else a BatchNorm parameter gets `--norm-weight-decay` when given, else
`--weight-decay`. In Flax the BatchNorm (or GroupNorm) parameters are the 1-D 'scale'/'bias' leaves
outside the classifier; the classifier's bias is the one other 'bias'.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")
SCHEDULES = ("step", "cosine", "poly", "constant")
WARMUPS = ("linear", "constant")


def _module_paths_with_kernels(params) -> set[tuple]:
  """The paths of the modules holding a 'kernel': convolutions and dense layers."""
  paths = set()
  for path, _ in jax.tree_util.tree_leaves_with_path(params):
    if path[-1].key == "kernel":
      paths.add(tuple(p.key for p in path[:-1]))
  return paths


def decay_rates(params, weight_decay: float, norm_weight_decay: Optional[float] = None,
                bias_weight_decay: Optional[float] = None):
  """A tree of each parameter's weight-decay rate, grouped as torchvision's `set_weight_decay`: the
  normalisation layers' parameters (BatchNorm, GroupNorm: the vectors of a module without a
  kernel) at `norm_weight_decay`, every 'bias' at `bias_weight_decay` when given, the rest (a
  conv's or dense layer's bias included, e.g. squeeze-excitation's) at `weight_decay`."""
  with_kernel = _module_paths_with_kernels(params)

  def rate(path, leaf):
    if bias_weight_decay is not None and path[-1].key == "bias":
      return bias_weight_decay
    if (norm_weight_decay is not None and leaf.ndim == 1
        and tuple(p.key for p in path[:-1]) not in with_kernel):
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


def learning_rate_schedule(*, learning_rate: float, kind: str, total_steps: int,
                           boundaries: tuple = (), decay_factor: float = 0.1, warmup_steps: int = 0,
                           warmup_type: str = "linear", warmup_factor: float = 0.0,
                           end_value: float = 0.0, power: float = 2.0) -> optax.Schedule:
  """The learning rate at each step.

  Args:
    learning_rate: the peak rate (already scaled with the batch size).
    kind: 'step' (multiply by `decay_factor` at each of `boundaries`, in steps from the start, as
      the paper), 'cosine' (to zero at `total_steps`, starting after the warm-up), 'poly' (from
      `learning_rate` to `end_value` as (1 - t/T)^`power` over the steps after the warm-up: the
      LARS recipes') or 'constant'.
    warmup_steps: steps of warm-up before the main schedule; 'linear' ramps from
      `warmup_factor * learning_rate` to `learning_rate`, 'constant' holds `warmup_factor *
      learning_rate` (the paper's ResNet-110: 0.01 for the first 400 iterations, then 0.1).
  """
  if kind == "step":
    main = optax.piecewise_constant_schedule(learning_rate, {int(b): decay_factor for b in boundaries})
  elif kind == "cosine":
    cosine = optax.cosine_decay_schedule(learning_rate, max(total_steps - warmup_steps, 1))
    main = lambda step: cosine(jnp.maximum(step - warmup_steps, 0))
  elif kind == "poly":
    poly = optax.polynomial_schedule(learning_rate, end_value, power,
                                     max(total_steps - warmup_steps, 1))
    main = lambda step: poly(jnp.maximum(step - warmup_steps, 0))
  elif kind == "constant":
    main = optax.constant_schedule(learning_rate)
  else:
    raise ValueError(f"unknown learning-rate schedule {kind!r}; expected one of {SCHEDULES}")
  if not warmup_steps:
    return main
  if warmup_type == "linear":
    warm = optax.linear_schedule(warmup_factor * learning_rate, learning_rate, warmup_steps)
  elif warmup_type == "constant":
    warm = optax.constant_schedule(warmup_factor * learning_rate)
  else:
    raise ValueError(f"unknown warm-up {warmup_type!r}; expected one of {WARMUPS}")
  return lambda step: jnp.where(step < warmup_steps, warm(step), main(step))


def create_sgd(schedule: optax.Schedule, *, momentum: float, nesterov: bool,
                     weight_decay: float, exclude_bn_and_bias: bool) -> optax.GradientTransformation:
  """SGD with momentum and decoupled-from-the-loss L2 weight decay.

  The decay is added to the gradient before momentum, which is what PyTorch's
  `SGD(weight_decay=...)` and the paper do; with `exclude_bn_and_bias`, vectors (BatchNorm scales
  and biases, the classifier bias) are not decayed.
  """
  mask = (lambda params: jax.tree.map(lambda p: p.ndim > 1, params)) if exclude_bn_and_bias else None
  return optax.chain(optax.add_decayed_weights(weight_decay, mask),
                     optax.sgd(schedule, momentum=momentum, nesterov=nesterov))

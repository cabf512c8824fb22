"""Weight EMA as torchvision's classification reference: its decay adjustment and update schedule.

The reference (references/classification/train.py and utils.ExponentialMovingAverage) keeps an
`AveragedModel(use_buffers=True)` of the parameters *and* the BatchNorm running statistics, updated
every `model_ema_steps` steps with `ema = decay * ema + (1 - decay) * model`, where the first update
(and every update during the learning-rate warm-up, which resets its count) copies the model. The
decay is adjusted so that the recipe's `model_ema_decay` means the same averaging horizon whatever
the batch size, update interval and number of epochs.

One difference: torchvision counts `model_ema_steps` from the start of each epoch; here from the
start of training, since batches run across epoch boundaries. They agree whenever an epoch is a
whole number of `model_ema_steps`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def adjusted_decay(decay: float, *, global_batch_size: int, every: int, epochs: float) -> float:
  """torchvision's `adjust = world_size * batch_size * model_ema_steps / epochs`; the EMA's
  `alpha = min(1, (1 - decay) * adjust)`; returns 1 - alpha, in float64 as the reference."""
  adjust = global_batch_size * every / epochs
  alpha = min(1.0, (1.0 - decay) * adjust)
  return 1.0 - alpha


def init(params, batch_stats) -> dict:
  """The EMA of a fresh model: a copy (never used before the first update, which copies too)."""
  return {"params": params, "batch_stats": batch_stats, "count": jnp.zeros((), jnp.int32)}


def update(ema: dict, params, batch_stats, step, *, decay: float, every: int,
           warmup_steps: int) -> dict:
  """The EMA after the training step with 0-based index `step` produced `params`/`batch_stats`.

  As AveragedModel.update_parameters: updated when `step % every == 0`; a copy when its count is
  0; its count reset to 0 while `step < warmup_steps` (the reference's `epoch < lr_warmup_epochs`).
  """
  due = step % every == 0
  first = ema["count"] == 0

  def average(old, new):
    mixed = decay * old + (1.0 - decay) * new  # torchvision's ema_avg, Python-float weights.
    return jnp.where(due, jnp.where(first, new, mixed), old).astype(old.dtype)

  count = jnp.where(due, ema["count"] + 1, ema["count"])
  count = jnp.where(due & (step < warmup_steps), 0, count)
  return {"params": jax.tree.map(average, ema["params"], params),
          "batch_stats": jax.tree.map(average, ema["batch_stats"], batch_stats),
          "count": count.astype(jnp.int32)}

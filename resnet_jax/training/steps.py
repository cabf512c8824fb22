"""The train and eval steps, pure functions of (TrainState, batch), and the state they carry.

Everything else a step needs (model, optimizer, schedule, normalisation) is bound with
`functools.partial`; `sharding.Layout.compile` compiles them for 'jit' or 'pmap'.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
import optax
from flax import serialization, struct

from resnet_jax import models
from resnet_jax.data import image_ops, protocols


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any = None  # With config.model_ema: ema.init's {'params', 'batch_stats', 'count'}.


def _state_to_dict(state: TrainState) -> dict:
  # Without EMA the checkpoint holds exactly the fields it held before EMA existed, so runs
  # started earlier still resume.
  return {f.name: serialization.to_state_dict(getattr(state, f.name))
          for f in dataclasses.fields(state) if not (f.name == "ema" and state.ema is None)}


def _state_from_dict(target: TrainState, values: dict) -> TrainState:
  return target.replace(**{name: serialization.from_state_dict(getattr(target, name), values[name])
                           for name in values})


serialization.register_serialization_state(TrainState, _state_to_dict, _state_from_dict,
                                           override=True)


def ema_view(state: TrainState) -> TrainState:
  """`state` with the EMA's parameters and BatchNorm statistics in place of the model's."""
  return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy in float32, with optional label smoothing.

  `labels` are class indices, or (N, classes) probabilities (MixUp/CutMix targets), smoothed the
  same way, as torch's `CrossEntropyLoss(label_smoothing=...)` does.
  """
  targets = (labels.astype(jnp.float32) if labels.ndim == logits.ndim
             else jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32))
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


LOSSES = ("cross_entropy", "bce")


def binary_cross_entropy(logits, labels, label_smoothing: float = 0.0,
                         target_threshold: Optional[float] = None):
  """Per-example binary cross-entropy (one sigmoid per class) in float32, as timm's
  `BinaryCrossEntropy(smoothing, target_threshold)`: the mean over the classes, so that the batch
  mean is torch's `binary_cross_entropy_with_logits(reduction='mean')` over all elements.

  `labels` are class indices or (N, classes) probabilities (MixUp/CutMix targets). Smoothing moves
  each target to (1 - s) * y + s / classes (timm's on/off values); then, with a `target_threshold`
  ("ResNet strikes back": 0.2), targets above it become 1 and the others 0.
  """
  targets = (labels.astype(jnp.float32) if labels.ndim == logits.ndim
             else jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32))
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  if target_threshold is not None:
    targets = (targets > target_threshold).astype(jnp.float32)
  return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets).mean(-1)


def train_step(state: TrainState, batch: dict, *, model: models.ResNet,
               tx: optax.GradientTransformation, schedule: optax.Schedule, mean, std,
               label_smoothing: float = 0.0, loss: str = "cross_entropy",
               bce_target_threshold: Optional[float] = None, axis_name: Optional[str] = None,
               average_batch_stats: bool = False, mix: Optional[Callable] = None,
               mix_seed: int = 0, ema_update: Optional[Callable] = None,
               grad_accum_steps: int = 1) -> tuple[TrainState, dict]:
  """One SGD step on a batch {'image': uint8 NHWC, 'label': int}.

  Args:
    axis_name: under `pmap`, the axis to average gradients and metrics over. Under `jit` with a
      sharded batch the means below already run over the global batch, so it is None.
    average_batch_stats: under `pmap` with per-device BatchNorm, average the running statistics
      after the step so the replicas stay identical (what gets evaluated and saved).
    mix: `mixup.mix_batch` with its alphas bound, or None; it gets a key from `mix_seed` and the
      step number, so a resumed run mixes exactly as an uninterrupted one (and so does the
      'dropout' stream of stochastic depth).
    ema_update: `ema.update` with its decay and schedule bound, or None (no EMA in the state).
    loss: 'cross_entropy' (softmax) or 'bce' (`binary_cross_entropy`, with `bce_target_threshold`).
    grad_accum_steps: split the batch into this many micro-batches (`accumulate_gradients`).

  Returns:
    (the new state, float32 metrics: 'loss', 'accuracy', 'learning_rate', and 'finite', 1 when
    the loss and the new state are finite).
  """
  chex.assert_rank(batch["image"], 4)
  # Normalised (and mixed) in float32, then cast to the compute dtype (bfloat16 on accelerators).
  images = image_ops.normalize(batch["image"], mean, std)
  labels = targets = batch["label"]
  if mix is not None:
    key = jax.random.fold_in(jax.random.key(mix_seed), state.step)
    images, targets = mix(key, images, jax.nn.one_hot(labels, model.num_classes, dtype=jnp.float32))
  images = images.astype(model.dtype)

  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  loss_of = (functools.partial(binary_cross_entropy, target_threshold=bce_target_threshold)
             if loss == "bce" else cross_entropy)
  # Stochastic depth and dropout draw from Flax's 'dropout' stream (a model without them ignores
  # it): keyed by the seed and the step like the mixing, and by the device under pmap, whose
  # devices would otherwise drop the same paths of their different examples.
  dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(mix_seed), state.step), 1)
  if axis_name is not None:
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))

  def loss_fn(params, batch_stats, images, targets):
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                  train=True, mutable=["batch_stats"],
                                  rngs={"dropout": dropout_key})
    return loss_of(logits, targets, label_smoothing).mean(), (logits, updates["batch_stats"])

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    (loss, (logits, batch_stats)), grads = grad_fn(state.params, state.batch_stats, images, targets)
  else:
    loss, logits, batch_stats, grads = accumulate_gradients(
        grad_fn, state.params, state.batch_stats, images, targets, grad_accum_steps)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels, dtype=jnp.float32)
  if axis_name is not None:
    # Each device's loss is the mean over its 1/n of the batch, so the mean of the n gradients is
    # the gradient of the global-batch loss: the same update as one device on the whole batch.
    grads = jax.lax.pmean(grads, axis_name)
    loss, accuracy = jax.lax.pmean((loss, accuracy), axis_name)
    if average_batch_stats:
      batch_stats = jax.lax.pmean(batch_stats, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # A finite loss can still produce an infinite update: the loop checks this before any save.
  finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((params, batch_stats))]))
  metrics = {"loss": loss, "accuracy": accuracy,
             "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
             "finite": finite.astype(jnp.float32)}
  new_ema = (state.ema if ema_update is None
             else ema_update(state.ema, params, batch_stats, state.step))
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema=new_ema)
  return new_state, metrics


def accumulate_gradients(grad_fn: Callable, params, batch_stats, images, targets, steps: int):
  """The batch's mean loss and gradient computed over `steps` micro-batches, one after the other.

  Micro-batch j is examples j, j + steps, ... of the batch, so under `jit` each one stays spread
  over every device (no resharding). BatchNorm normalises each micro-batch with its own statistics
  and updates its running averages once per micro-batch, as PyTorch does when it accumulates over
  `steps` backward passes; with GroupNorm the result is the whole batch's.

  Returns:
    (mean loss, logits in the batch's order, BatchNorm statistics, mean gradient).
  """
  split = lambda x: x.reshape(x.shape[0] // steps, steps, *x.shape[1:]).swapaxes(0, 1)

  def micro(stats, batch):
    (loss, (logits, stats)), grads = grad_fn(params, stats, *batch)
    return stats, (loss, logits, grads)

  batch_stats, (losses, logits, grads) = jax.lax.scan(micro, batch_stats,
                                                      (split(images), split(targets)))
  logits = logits.swapaxes(0, 1).reshape(-1, logits.shape[-1])
  return losses.mean(), logits, batch_stats, jax.tree.map(lambda g: g.mean(0), grads)


def eval_step(state: TrainState, batch: dict, *, model: models.ResNet, mean, std,
              axis_name: Optional[str] = None) -> dict:
  """Sums over the batch's real examples (mask 1) of loss, top-1 and top-5 hits, and their count.

  Images of rank 5, (batch, crops, H, W, C), are evaluated crop by crop and the class
  probabilities averaged (multi-crop protocols).
  """
  images, labels, mask = batch["image"], batch["label"], batch["mask"]
  crops = images.shape[1] if images.ndim == 5 else 1
  images = images.reshape((-1, *images.shape[-3:]))
  images = image_ops.normalize(images, mean, std).astype(model.dtype)
  logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images,
                       train=False)
  probs = jax.nn.softmax(logits.astype(jnp.float32)).reshape(labels.shape[0], crops, -1).mean(1)
  log_probs = jnp.log(jnp.maximum(probs, 1e-30))
  loss = -jnp.take_along_axis(log_probs, labels[:, None], -1)[:, 0]
  top1 = protocols.topk_correct(probs, labels, 1)
  top5 = protocols.topk_correct(probs, labels, 5)
  sums = {"loss": jnp.sum(loss * mask), "top1": jnp.sum(top1 * mask),
          "top5": jnp.sum(top5 * mask), "count": jnp.sum(mask)}
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums

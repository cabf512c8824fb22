"""Batch-level MixUp and CutMix on the device, as torchvision's `transforms.v2.MixUp` / `CutMix`.

Each example is paired with the previous one (the batch rolled by one), lambda ~ Beta(alpha, alpha);
CutMix pastes the partner's pixels into a box whose side is sqrt(1 - lambda) of the image, centred at
a uniform pixel and clipped, then sets lambda to the share of pixels kept. Targets are one-hot rows
mixed with the same lambda; label smoothing is applied afterwards by the loss, as torch's
`CrossEntropyLoss(label_smoothing=...)` does with probability targets. With both alphas set, one of
the two is picked per batch with equal odds (torchvision's `RandomChoice`).

Everything is a function of a JAX key, which the train step derives from the seed and the step
number, so a resumed run mixes exactly as the uninterrupted one. Under `pmap` each device rolls its
own part of the batch (as each DDP process does with its loader's batch); under `jit` the roll is
over the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _roll_mix(x, lam):
  # torchvision: x.roll(1, 0) * (1 - lam) + x * lam.
  return jnp.roll(x, 1, axis=0) * (1.0 - lam) + x * lam


def mixup(images, targets, lam):
  """MixUp of NHWC float `images` and (N, classes) `targets` with weight `lam` on each example."""
  return _roll_mix(images, lam), _roll_mix(targets, lam)


def cutmix_box(lam, r_y, r_x, height: int, width: int):
  """torchvision's box around pixel (r_y, r_x): (y1, y2, x1, x2) and the corrected lambda."""
  r = 0.5 * jnp.sqrt(1.0 - lam)
  half_w = jnp.floor(r * width).astype(jnp.int32)  # int() of a non-negative float.
  half_h = jnp.floor(r * height).astype(jnp.int32)
  x1, x2 = jnp.maximum(r_x - half_w, 0), jnp.minimum(r_x + half_w, width)
  y1, y2 = jnp.maximum(r_y - half_h, 0), jnp.minimum(r_y + half_h, height)
  lam_adjusted = 1.0 - ((x2 - x1) * (y2 - y1)).astype(jnp.float32) / (width * height)
  return (y1, y2, x1, x2), lam_adjusted


def cutmix(images, targets, box, lam_adjusted):
  """Pastes the rolled batch's pixels inside `box` = (y1, y2, x1, x2); targets mixed by `lam_adjusted`."""
  y1, y2, x1, x2 = box
  rows = jnp.arange(images.shape[1])[:, None]
  cols = jnp.arange(images.shape[2])[None, :]
  inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
  mixed = jnp.where(inside[None, :, :, None], jnp.roll(images, 1, axis=0), images)
  return mixed, _roll_mix(targets, lam_adjusted)


def mix_batch(key, images, targets, *, mixup_alpha: float, cutmix_alpha: float):
  """MixUp, CutMix, or one of the two at random, for the alphas that are > 0 (neither: unchanged)."""
  if not mixup_alpha and not cutmix_alpha:
    return images, targets
  k_choice, k_mixup, k_cutmix, k_y, k_x = jax.random.split(key, 5)
  height, width = images.shape[1:3]

  def do_mixup(_):
    return mixup(images, targets, jax.random.beta(k_mixup, mixup_alpha, mixup_alpha))

  def do_cutmix(_):
    lam = jax.random.beta(k_cutmix, cutmix_alpha, cutmix_alpha)
    box, lam_adjusted = cutmix_box(lam, jax.random.randint(k_y, (), 0, height),
                                   jax.random.randint(k_x, (), 0, width), height, width)
    return cutmix(images, targets, box, lam_adjusted)

  if not cutmix_alpha:
    return do_mixup(None)
  if not mixup_alpha:
    return do_cutmix(None)
  return jax.lax.cond(jax.random.bernoulli(k_choice), do_cutmix, do_mixup, None)

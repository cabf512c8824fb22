"""mixup against torchvision's transforms.v2 MixUp/CutMix: same lambda and box -> same images and targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from resnet_jax.data import mixup
from resnet_jax.training import steps
from resnet_jax._torchvision import import_torchvision

import_torchvision()
from torchvision.transforms import v2  # noqa: E402

N, C, H, W, CLASSES = 6, 3, 12, 17, 5  # Odd sizes so clipping at both edges happens.


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(N, C, H, W)).astype(np.float32)  # torch's NCHW, normalised floats.
  labels = rng.integers(0, CLASSES, N)
  return images, labels


def _ours(images, labels):
  return jnp.asarray(images.transpose(0, 2, 3, 1)), jax.nn.one_hot(labels, CLASSES)


def _theirs(transform, params, images, labels):
  labels_t = torch.from_numpy(labels)
  params = dict(params, labels=labels_t, batch_size=N)
  out = transform.transform(torch.from_numpy(images), params).numpy().transpose(0, 2, 3, 1)
  return out, transform.transform(labels_t, params).numpy()


def test_mixup_equals_torchvision():
  images, labels = _batch()
  transform = v2.MixUp(alpha=0.2, num_classes=CLASSES)
  for seed in range(5):
    torch.manual_seed(seed)
    params = transform.make_params([torch.from_numpy(images)])
    want_images, want_targets = _theirs(transform, params, images, labels)
    got_images, got_targets = mixup.mixup(*_ours(images, labels), jnp.float32(params["lam"]))
    # torch computes 1 - lam in float64 before its float32 multiply; we in float32: <= 1 ulp of
    # the weight, i.e. a relative 1.2e-7 of each term.
    np.testing.assert_allclose(got_images, want_images, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_targets, want_targets, rtol=1e-6, atol=1e-7)


def test_cutmix_box_and_result_equal_torchvision():
  images, labels = _batch(1)
  transform = v2.CutMix(alpha=1.0, num_classes=CLASSES)
  for seed in range(40):
    torch.manual_seed(seed)
    params = transform.make_params([torch.from_numpy(images)])
    # Replay the draws make_params made (Beta, then randint(W), randint(H)) to get its centre.
    torch.manual_seed(seed)
    lam = float(transform._dist.sample(()))
    r_x, r_y = int(torch.randint(W, (1,))), int(torch.randint(H, (1,)))
    (y1, y2, x1, x2), lam_adjusted = mixup.cutmix_box(jnp.float32(lam), r_y, r_x, H, W)
    assert (int(x1), int(y1), int(x2), int(y2)) == params["box"], f"seed {seed}"
    assert float(lam_adjusted) == pytest.approx(params["lam_adjusted"], abs=1e-7)
    want_images, want_targets = _theirs(transform, params, images, labels)
    got_images, got_targets = mixup.cutmix(*_ours(images, labels), (y1, y2, x1, x2), lam_adjusted)
    np.testing.assert_array_equal(got_images, want_images)  # A copy of pixels: exact.
    np.testing.assert_allclose(got_targets, want_targets, rtol=1e-6, atol=1e-7)


def test_mixed_targets_with_label_smoothing_give_torch_s_loss():
  from resnet_jax.training import train_lib
  _, labels = _batch()
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(N, CLASSES)).astype(np.float32)
  targets = np.array(mixup.mixup(jnp.zeros((N, 1, 1, 1)), jax.nn.one_hot(labels, CLASSES), 0.3)[1])
  want = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(
      torch.from_numpy(logits).double(), torch.from_numpy(targets).double()).item()
  got = float(steps.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), 0.1).mean())
  assert got == pytest.approx(want, rel=1e-6)  # float32 against float64.


def test_mix_batch_is_a_function_of_the_key_and_uses_both():
  images, labels = _ours(*_batch())
  mix = jax.jit(lambda key: mixup.mix_batch(key, images, labels, mixup_alpha=0.2, cutmix_alpha=1.0))
  kinds = set()
  for step in range(12):
    key = jax.random.fold_in(jax.random.key(0), step)
    out, targets = mix(key)
    again, _ = mix(key)
    np.testing.assert_array_equal(out, again)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    # CutMix leaves each pixel equal to one of the two images; MixUp blends them.
    rolled = jnp.roll(images, 1, 0)
    kinds.add("cutmix" if bool(jnp.all((out == images) | (out == rolled))) else "mixup")
  assert kinds == {"cutmix", "mixup"}
  same = mixup.mix_batch(jax.random.key(0), images, labels, mixup_alpha=0.0, cutmix_alpha=0.0)
  assert same[0] is images and same[1] is labels

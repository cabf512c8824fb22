"""autoaugment against torchvision's own transforms, on scikit-image's photographs, through PIL as
torchvision's classification reference runs them (bilinear, zero fill)."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from resnet_jax.data import autoaugment, image_ops
from resnet_jax._torchvision import import_torchvision

import_torchvision()  # The CPU torch here cannot load torchvision's CUDA extension; this lets it import.
from torchvision.transforms import InterpolationMode, RandomErasing  # noqa: E402
from torchvision.transforms import autoaugment as tv_aa, functional as tv_f  # noqa: E402

BILINEAR = InterpolationMode.BILINEAR


class TorchDraws:
  """The numpy Generator calls autoaugment makes, answered by torch's global generator in the
  form torchvision calls it, so both consume the same random numbers in the same order."""

  def integers(self, low, high=None):
    low, high = (0, low) if high is None else (low, high)
    return int(torch.randint(low, high, (1,)).item())

  def random(self):
    return torch.rand(1).item()

  def uniform(self, low, high):
    return torch.empty(1).uniform_(float(low), float(high)).item()

  def dirichlet(self, alpha):
    return torch._sample_dirichlet(torch.tensor([list(alpha)])).numpy()[0]


def _photos():
  # Small crops of real photographs keep it fast; one odd-sized RGB, one grayscale (mode 'L').
  astronaut = np.asarray(Image.fromarray(skdata.astronaut()).resize((72, 60), Image.BILINEAR))
  camera = np.asarray(Image.fromarray(skdata.camera()).resize((48, 40), Image.BILINEAR))[..., None]
  return {"rgb": astronaut, "gray": camera}


PHOTOS = _photos()


def _pil(image):
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _np(img):
  out = np.asarray(img)
  return out[..., None] if out.ndim == 2 else out


@pytest.mark.parametrize("start,end,n", [(0.0, 0.99, 31), (0.0, 32.0, 31), (0.0, 135.0, 31),
                                         (255.0, 0.0, 31), (0.0, 0.3, 10), (0.0, 30.0, 10),
                                         (0.0, 150 / 331 * 72, 31), (0.0, 150 / 331 * 224, 31),
                                         (0.0, 0.9, 31), (0.0, 24.0, 10), (0.0, 224 / 3, 10)])
def test_linspace32_is_torch_linspace(start, end, n):
  np.testing.assert_array_equal(autoaugment.linspace32(start, end, n),
                                torch.linspace(start, end, n).numpy())


def test_augmentation_spaces_are_torchvision_bins():
  h, w = 60, 72
  ours = {"ta": autoaugment.trivial_augment_space(31), "ra": autoaugment.rand_augment_space(31, h, w),
          "augmix": autoaugment.augmix_space(10, h, w)}
  theirs = {"ta": tv_aa.TrivialAugmentWide()._augmentation_space(31),
            "ra": tv_aa.RandAugment()._augmentation_space(31, (h, w)),
            "augmix": tv_aa.AugMix()._augmentation_space(10, (h, w))}
  for key in ours:
    assert list(ours[key]) == list(theirs[key]), key  # Same ops in the same order (the draw picks by index).
    for name, (bins, signed) in ours[key].items():
      their_bins, their_signed = theirs[key][name]
      assert signed == their_signed, (key, name)
      if their_bins.ndim == 0:
        assert bins is None, (key, name)
      else:
        np.testing.assert_array_equal(bins, their_bins.numpy(), err_msg=f"{key} {name}")


def _op_cases():
  space = autoaugment.trivial_augment_space(31)
  for name, (bins, signed) in space.items():
    picks = [0.0] if bins is None else [float(bins[i]) for i in (1, 15, 30)]
    for m in picks:
      for sign in ((1, -1) if signed else (1,)):
        for photo in PHOTOS:
          yield pytest.param(name, sign * m, photo, id=f"{name}-{sign * m:.3g}-{photo}")


@pytest.mark.parametrize("name,magnitude,photo", list(_op_cases()))
def test_each_operation_equals_torchvision(name, magnitude, photo):
  image = PHOTOS[photo]
  expected = _np(tv_aa._apply_op(_pil(image), name, magnitude, interpolation=BILINEAR, fill=None))
  np.testing.assert_array_equal(autoaugment.apply_op(image, name, magnitude), expected)


@pytest.mark.parametrize("photo", list(PHOTOS))
def test_trivial_augment_wide_equals_torchvision(photo):
  image, transform = PHOTOS[photo], tv_aa.TrivialAugmentWide(interpolation=BILINEAR)
  for seed in range(40):  # Enough draws to pick every one of the 14 operations.
    torch.manual_seed(seed)
    expected = _np(transform(_pil(image)))
    torch.manual_seed(seed)
    np.testing.assert_array_equal(autoaugment.trivial_augment_wide(image, TorchDraws()), expected,
                                  err_msg=f"seed {seed}")


@pytest.mark.parametrize("magnitude", [9, 30])
def test_rand_augment_equals_torchvision(magnitude):
  image = PHOTOS["rgb"]
  transform = tv_aa.RandAugment(num_ops=2, magnitude=magnitude, interpolation=BILINEAR)
  for seed in range(20):
    torch.manual_seed(seed)
    expected = _np(transform(_pil(image)))
    torch.manual_seed(seed)
    np.testing.assert_array_equal(autoaugment.rand_augment(image, TorchDraws(), magnitude=magnitude),
                                  expected, err_msg=f"seed {seed}")


@pytest.mark.parametrize("photo", list(PHOTOS))
def test_augmix_equals_torchvision_with_pil_operations(photo, monkeypatch):
  # torchvision's AugMix runs its operations on uint8 tensors; route them through its PIL kernels
  # (the ones every other policy and this module use) to compare the policy itself: draws, bins,
  # chain depths, Dirichlet weights and the float32 mixture, bit for bit.
  apply_pil = tv_aa._apply_op

  def via_pil(img, op_name, magnitude, interpolation, fill):
    out = apply_pil(tv_f.to_pil_image(img[0]), op_name, magnitude, interpolation, fill)
    return tv_f.pil_to_tensor(out)[None]
  monkeypatch.setattr(tv_aa, "_apply_op", via_pil)
  image = PHOTOS[photo]
  transform = tv_aa.AugMix(severity=3, interpolation=BILINEAR)
  for seed in range(10):
    torch.manual_seed(seed)
    expected = _np(transform(_pil(image)))
    torch.manual_seed(seed)
    np.testing.assert_array_equal(autoaugment.augmix(image, TorchDraws(), severity=3), expected,
                                  err_msg=f"seed {seed}")


def test_random_erasing_equals_torchvision():
  # Same draws -> same box: the whole (p, scale, ratio) distribution is torchvision's. Value 0 on a
  # normalised float image, as the reference; 400 draws with p=0.5 include erased and kept images.
  image = (PHOTOS["rgb"].astype(np.float32) - 120.0) / 60.0
  transform = RandomErasing(p=0.5, value=0)
  erased = 0
  for seed in range(400):
    torch.manual_seed(seed)
    expected = transform(torch.from_numpy(image.transpose(2, 0, 1).copy())).numpy().transpose(1, 2, 0)
    torch.manual_seed(seed)
    ours = autoaugment.random_erasing(image, TorchDraws(), p=0.5, value=(0.0,))
    np.testing.assert_array_equal(ours, expected, err_msg=f"seed {seed}")
    erased += not np.array_equal(ours, image)
  assert 150 < erased < 250


def test_random_erasing_on_uint8_fills_the_rounded_mean():
  image, mean = PHOTOS["rgb"], image_ops.IMAGENET_MEAN_255
  out = autoaugment.random_erasing(image, np.random.default_rng(1), p=1.0, value=mean)
  changed = np.any(out != image, axis=-1)
  assert changed.any()
  np.testing.assert_array_equal(out[changed], np.broadcast_to([124, 116, 104], out[changed].shape))


def test_train_policy():
  assert autoaugment.train_policy("") is None  # Nothing on: today's pipeline, untouched.
  image = PHOTOS["gray"]
  for name in ("ta_wide", "rand_augment", "augmix"):
    policy = autoaugment.train_policy(name, random_erase=0.5, erase_value=(84.0,))
    out = policy(image, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8, name
    again = policy(image, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)  # Determined by the generator: resume is exact.
  with pytest.raises(ValueError, match="auto_augment"):
    autoaugment.train_policy("autoaugment")


def test_policy_in_the_pipeline_is_the_same_on_any_process_count():
  # Per-example generators from Grain: two processes' batches together are one process's batch,
  # pixel for pixel, so a restarted or re-sharded run sees the same augmented images.
  from resnet_jax.data import input_pipeline as ip
  policy = autoaugment.train_policy("ta_wide", random_erase=0.5, erase_value=(84.0,))
  kw = dict(global_batch_size=8, image_size=16, augment="none", seed=3, extra_augment=policy)
  source = ip.digits("train")
  whole = ip.train_dataset(source, **kw)[5]["image"]
  parts = [ip.train_dataset(source, process_index=p, process_count=2, **kw)[5]["image"]
           for p in range(2)]
  key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))
  assert key(np.concatenate(parts)) == key(whole)
  plain = ip.train_dataset(source, **dict(kw, extra_augment=None))[5]["image"]
  assert not np.array_equal(plain, whole)

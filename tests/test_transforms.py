"""Preprocessing: identical to torchvision's `weights.transforms()` on real photos, NHWC out."""

import numpy as np
import pytest
from PIL import Image

from resnet_jax.data import image_ops, transforms

skimage_data = pytest.importorskip("skimage.data")

# Colour and grayscale photos of several aspect ratios; 'page' (191 px high) is upsampled.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "page")
# One uint8 level after normalisation, for the channel with the smallest std.
ONE_LEVEL = 1 / 255 / min(image_ops.IMAGENET_STD_01)


def _photo(name):
  pixels = getattr(skimage_data, name)()
  return np.stack([pixels] * 3, -1) if pixels.ndim == 2 else pixels


@pytest.fixture(scope="module", params=["IMAGENET1K_V1", "IMAGENET1K_V2"])
def recipe(request, torchvision):
  """(torchvision's preset, ours) for ResNet50's V1 (resize 256) or V2 (resize 232) weights."""
  weights = torchvision.models.ResNet50_Weights[request.param]
  return weights.transforms(), transforms.for_resize(256 if request.param.endswith("V1") else 232)


@pytest.mark.parametrize("name", PHOTOS)
def test_identical_to_torchvision_on_pil_images(recipe, name):
  theirs, ours = recipe
  pixels = _photo(name)
  expected = theirs(Image.fromarray(pixels)).numpy().transpose(1, 2, 0)
  got = ours(pixels)
  assert got.shape == (1, 224, 224, 3) and got.dtype == np.float32
  # Measured max difference: 0.0 on every photo.
  np.testing.assert_array_equal(got[0], expected)


@pytest.mark.parametrize("name", PHOTOS)
def test_within_one_level_of_torchvision_on_tensors(recipe, torch, name):
  # torchvision resizes tensors with its own antialiased kernel, which rounds differently from PIL's.
  theirs, ours = recipe
  pixels = _photo(name)
  expected = theirs(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))))
  difference = np.abs(ours(pixels)[0] - expected.numpy().transpose(1, 2, 0))
  print(f"{name}: max difference {difference.max():.4f}, differing pixels "
        f"{np.mean(difference > 1e-6):.1%}")
  # Measured: exactly one level (0.0175) at most, on 7-18% of the pixels.
  assert difference.max() <= ONE_LEVEL + 1e-6


def test_odd_sizes_round_the_crop_as_torchvision(recipe):
  theirs, ours = recipe
  rng = np.random.default_rng(0)
  for h, w in ((301, 457), (457, 300), (224, 224), (233, 1000)):
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = theirs(Image.fromarray(pixels)).numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(ours(pixels)[0], expected, err_msg=f"{h}x{w}")


def test_inputs_paths_batches_and_modes(tmp_path):
  preprocess = transforms.ImageClassification()
  rgb = _photo("chelsea")
  path = tmp_path / "chelsea.png"
  Image.fromarray(rgb).save(path)
  reference = preprocess(rgb)
  np.testing.assert_array_equal(preprocess(str(path)), reference)
  np.testing.assert_array_equal(preprocess(Image.fromarray(rgb)), reference)
  rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
  np.testing.assert_array_equal(preprocess(rgba), reference)
  gray = skimage_data.camera()
  np.testing.assert_array_equal(preprocess(gray), preprocess(np.stack([gray] * 3, -1)))
  batch = preprocess([rgb, path, gray])
  assert batch.shape == (3, 224, 224, 3)
  np.testing.assert_array_equal(batch[0], reference[0])
  assert preprocess(np.stack([rgb, rgb])).shape == (2, 224, 224, 3)


def test_bad_inputs():
  preprocess = transforms.ImageClassification()
  with pytest.raises(TypeError, match="uint8"):
    preprocess(np.zeros((300, 300, 3), np.float32))
  with pytest.raises(ValueError, match="shape"):
    preprocess(np.zeros((300, 300, 5), np.uint8))
  with pytest.raises(ValueError, match="smaller than"):
    transforms.ImageClassification(crop_size=300, resize_size=256)(np.zeros((256, 256, 3), np.uint8))


def test_imagenet_classes_are_torchvision_s(torchvision):
  names = transforms.imagenet_classes()
  assert list(names) == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
  assert names[0] == "tench" and len(set(names)) == 1000

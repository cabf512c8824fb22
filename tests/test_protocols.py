"""Tests of the paper's augmentation, testing protocols and error rates (resnet_jax.data.protocols)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from resnet_jax.data import image_ops
from resnet_jax.data import protocols as P
from resnet_jax.models.resnet import get_model


def position_image(height, width):
  """uint8 image whose pixel (y, x) holds (y, x, 7): every view says where it was cut from."""
  y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([y, x, np.full_like(y, 7)], axis=-1).astype(np.uint8)


def assert_window(view, top, left, flipped=False):
  """`view` is the window of a `position_image` at (top, left), mirrored if `flipped`."""
  h, w = view.shape[:2]
  rows = top + np.arange(h)[:, None]
  cols = left + np.arange(w)[None, :]
  if flipped:
    cols = cols[:, ::-1]
  np.testing.assert_array_equal(view[..., 0], np.broadcast_to(rows, (h, w)))
  np.testing.assert_array_equal(view[..., 1], np.broadcast_to(cols, (h, w)))
  assert (view[..., 2] == 7).all()


# ----------------------------------------------------------------------------------------------
# Testing views.

# (image height, width) with shorter side 16 (= resize_size, so no resampling), crop 12, and the
# expected (top, left) of: top-left, top-right, bottom-left, bottom-right, center.
TEN_CROP_CASES = {
    "landscape_16x20": ((16, 20), [(0, 0), (0, 8), (4, 0), (4, 8), (2, 4)]),
    "portrait_20x16": ((20, 16), [(0, 0), (0, 4), (8, 0), (8, 4), (4, 2)]),
    # (23 - 12) / 2 = 5.5 rounds half to even, to 6, as torchvision's CenterCrop.
    "odd_margin_16x23": ((16, 23), [(0, 0), (0, 11), (4, 0), (4, 11), (2, 6)]),
}


@pytest.mark.parametrize("shape,corners", TEN_CROP_CASES.values(), ids=TEN_CROP_CASES.keys())
def test_ten_crop_views_are_the_corners_center_and_their_mirrors(shape, corners):
  [views] = P.ten_crop_views(position_image(*shape), resize_size=16, crop_size=12)
  assert views.shape == (10, 12, 12, 3) and views.dtype == np.uint8
  for i, (top, left) in enumerate(corners):
    assert_window(views[i], top, left)
    assert_window(views[5 + i], top, left, flipped=True)


@pytest.mark.parametrize("shape,corners", TEN_CROP_CASES.values(), ids=TEN_CROP_CASES.keys())
def test_center_view_is_the_fifth_crop(shape, corners):
  [views] = P.center_views(position_image(*shape), resize_size=16, crop_size=12)
  assert views.shape == (1, 12, 12, 3)
  assert_window(views[0], *corners[4])


def test_ten_crop_resizes_the_shorter_side_first():
  image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
  [views] = P.ten_crop_views(image, resize_size=16, crop_size=12)
  resized = np.asarray(Image.fromarray(image).resize((20, 16), Image.BILINEAR))  # 50 * 16 / 40
  np.testing.assert_array_equal(views[3], resized[4:16, 8:20])
  np.testing.assert_array_equal(views[4], resized[2:14, 4:16])
  np.testing.assert_array_equal(views[8], resized[4:16, 8:20][:, ::-1])


def test_multi_scale_views_are_whole_images_at_each_scale_and_mirrors():
  image = position_image(16, 20)
  stacks = P.multi_scale_views(image, scales=(8, 12, 16, 24))
  assert [s.shape for s in stacks] == [(2, 8, 10, 3), (2, 12, 15, 3), (2, 16, 20, 3), (2, 24, 30, 3)]
  # At its own size the image is used as is: the exact positions, then the mirror.
  assert_window(stacks[2][0], 0, 0)
  assert_window(stacks[2][1], 0, 0, flipped=True)
  for stack, s in zip(stacks, (8, 12, 16, 24)):
    h, w = stack.shape[1:3]
    np.testing.assert_array_equal(stack[0], np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)))
    np.testing.assert_array_equal(stack[1], stack[0][:, ::-1])
    # The whole image, not a crop: the x coordinate runs from the left edge to the right edge.
    assert stack[0][0, 0, 1] <= 1 and stack[0][0, -1, 1] >= 18
    assert stack[1][0, 0, 1] >= 18 and stack[1][0, -1, 1] <= 1


def test_protocols_by_name():
  image = position_image(20, 24)
  assert P.num_views(P.get_protocol("center", resize_size=16, crop_size=12), image) == 1
  assert P.num_views(P.get_protocol("ten_crop", resize_size=16, crop_size=12), image) == 10
  assert P.num_views(P.get_protocol("multi_scale", scales=(8, 16)), image) == 4
  assert P.num_views(P.get_protocol("multi_scale"), image) == 10
  with pytest.raises(ValueError, match="unknown protocol"):
    P.get_protocol("twelve_crop")


# ----------------------------------------------------------------------------------------------
# Averaged scores against a slow reference.

def _small_net():
  """A jitted fully-convolutional scorer that tells mirrored and shifted inputs apart."""
  k1, k2 = jax.random.split(jax.random.key(0))
  kernel = jax.random.normal(k1, (3, 3, 3, 8)) * 0.3
  dense = jax.random.normal(k2, (8, 5))

  @jax.jit
  def logits_fn(x):
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jax.nn.relu(y), axis=(1, 2)) @ dense
  return logits_fn


def reference_scores(logits_fn, images, views_fn, mean, std, average):
  """One image and one view at a time, in plain Python."""
  rows = []
  for image in images:
    per_view = []
    for stack in views_fn(image):
      for view in stack:
        x = (view.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
        logits = np.asarray(logits_fn(x[None]))[0]
        per_view.append(np.asarray(jax.nn.softmax(logits)) if average == "softmax" else logits)
    rows.append(sum(per_view) / len(per_view))
  return np.stack(rows)


PROTOCOL_CASES = {
    "center": functools.partial(P.center_views, resize_size=16, crop_size=12),
    "ten_crop": functools.partial(P.ten_crop_views, resize_size=16, crop_size=12),
    "multi_scale": functools.partial(P.multi_scale_views, scales=(12, 16, 20)),
}


@pytest.mark.parametrize("chunk", [None, 4], ids=["one_call_per_shape", "chunks_of_4"])
@pytest.mark.parametrize("average", P.AVERAGES)
@pytest.mark.parametrize("views_fn", PROTOCOL_CASES.values(), ids=PROTOCOL_CASES.keys())
def test_averaged_scores_equal_a_slow_reference_loop(views_fn, average, chunk):
  rng = np.random.default_rng(1)
  # Different sizes and orientations, and two images of one size that share calls.
  images = [rng.integers(0, 256, shape, dtype=np.uint8)
            for shape in [(16, 20, 3), (21, 17, 3), (18, 18, 3), (16, 20, 3)]]
  logits_fn = _small_net()
  kw = dict(mean=np.asarray(image_ops.IMAGENET_MEAN_255), std=np.asarray(image_ops.IMAGENET_STD_255))
  got = P.averaged_scores(logits_fn, images, views_fn, average=average, chunk=chunk, **kw)
  want = reference_scores(logits_fn, images, views_fn, average=average, **kw)
  assert got.shape == (4, 5)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if average == "softmax":
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-6)


def test_averaged_scores_calls_once_per_view_shape_with_fixed_chunks():
  images = np.random.default_rng(2).integers(0, 256, (3, 16, 20, 3), dtype=np.uint8)
  seen = []

  def logits_fn(x):
    seen.append(x.shape)
    return np.zeros((len(x), 5))
  P.averaged_scores(logits_fn, images, PROTOCOL_CASES["multi_scale"], mean=0.0, std=None)
  assert seen == [(6, 12, 15, 3), (6, 16, 20, 3), (6, 20, 25, 3)]
  seen.clear()
  P.averaged_scores(logits_fn, images, PROTOCOL_CASES["ten_crop"], mean=0.0, std=None, chunk=8)
  assert seen == [(8, 12, 12, 3)] * 4  # 30 views in 4 calls, the last one padded


def test_registry_model_scores_every_multi_scale_size():
  # Global average pooling lets a network trained on one size score the whole image at any scale.
  model = get_model("resnet20", stage_sizes=(1, 1, 1))  # One block per stage keeps it fast.
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  images = np.random.default_rng(3).integers(0, 256, (2, 16, 20, 3), dtype=np.uint8)
  scores = P.averaged_scores(jax.jit(functools.partial(model.apply, variables)), images,
                             functools.partial(P.multi_scale_views, scales=(8, 12)),
                             mean=np.asarray(image_ops.IMAGENET_MEAN_255), std=np.asarray(image_ops.IMAGENET_STD_255))
  assert scores.shape == (2, 10) and np.isfinite(scores).all()
  np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-6)


def test_averaged_scores_rejects_unknown_average():
  with pytest.raises(ValueError, match="average"):
    P.averaged_scores(lambda x: x, [], P.center_views, mean=0.0, std=None, average="median")


# ----------------------------------------------------------------------------------------------
# Error rates.

def _reference_topk_correct(scores, labels, k):
  """torchvision's `accuracy` rule (topk, then eq) in numpy, ties ranked lower index first.

  torch's own `topk` leaves the order of tied scores unspecified (on CPU, five zeros come back as
  [2, 4, 3, 0, 1]); `jax.lax.top_k` and a stable sort rank the lower index first.
  """
  top = np.argsort(-np.asarray(scores), axis=-1, kind="stable")[:, :k]
  return np.any(top == np.asarray(labels)[:, None], axis=-1)


def test_topk_errors_in_percent():
  scores = np.array([[0.1, 0.5, 0.2, 0.15, 0.05],   # label 1: top-1
                     [0.3, 0.1, 0.25, 0.2, 0.15],   # label 2: second
                     [0.3, 0.1, 0.25, 0.2, 0.15],   # label 1: last
                     [0.2, 0.2, 0.2, 0.2, 0.2]])    # label 0: tied with everything, ranked first
  labels = np.array([1, 2, 1, 0])
  want = {k: 100.0 * (1 - np.mean(_reference_topk_correct(scores, labels, k))) for k in (1, 2, 4, 5)}
  assert want == {1: 50.0, 2: 25.0, 4: 25.0, 5: 0.0}  # The reference, as read off the rows above.
  assert P.topk_errors(scores, labels, ks=(1, 2, 4, 5)) == want
  assert P.format_errors({1: 75.0, 5: 25.0}) == "top-1 error 75.00%, top-5 error 25.00%"


def test_topk_is_topk_then_eq_with_ties_to_the_lower_index_and_works_under_jit():
  scores = jnp.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 1.0], [3.0, 3.0, 0.0]])
  labels = jnp.array([0, 1, 2, 1])
  for k in (1, 2, 3):
    want = _reference_topk_correct(scores, labels, k)
    np.testing.assert_array_equal(jax.jit(P.topk_correct, static_argnums=2)(scores, labels, k), want)
    np.testing.assert_array_equal(P.topk_correct(np.asarray(scores), np.asarray(labels), k), want)
  # Label 0 tied at the top is a top-1 hit, label 2 tied is not: what the training evaluation counts.
  np.testing.assert_array_equal(P.topk_correct(scores, labels, 1), [True, True, False, False])


# ----------------------------------------------------------------------------------------------
# Training augmentation.

def test_scale_augmentation_short_side_within_256_480_with_the_aspect_kept():
  image = np.random.default_rng(4).integers(0, 256, (24, 30, 3), dtype=np.uint8)
  rng = np.random.default_rng(5)
  shorts = []
  for _ in range(200):
    h, w = P.random_scale(image, rng).shape[:2]
    assert w == int(h * 30 / 24)
    shorts.append(h)
  assert 256 <= min(shorts) and max(shorts) <= 480
  assert max(shorts) - min(shorts) > 150  # spread over the range, not stuck at one size


def test_scale_augmentation_is_uniform_over_the_integers_of_the_range():
  image = np.zeros((10, 14, 3), np.uint8)
  rng = np.random.default_rng(6)
  counts = np.bincount([min(P.random_scale(image, rng, (8, 12)).shape[:2]) for _ in range(2000)],
                       minlength=13)[8:]
  # 400 expected each; the binomial standard deviation is 18, so +-20% is over 4 sigma.
  assert len(counts) == 5 and np.all(np.abs(counts - 400) < 80), counts


def test_random_crop_takes_every_window_that_fits():
  image = position_image(10, 12)
  rng = np.random.default_rng(7)
  corners = set()
  for _ in range(600):
    view = P.random_crop(image, rng, 8)
    top, left = int(view[0, 0, 0]), int(view[0, 0, 1])
    assert_window(view, top, left)
    corners.add((top, left))
  assert corners == {(t, l) for t in range(3) for l in range(5)}


def test_flip_probability_is_one_half():
  image = position_image(4, 6)
  rng = np.random.default_rng(8)
  flips = [image_ops.random_hflip(image, rng)[0, 0, 1] == 5 for _ in range(4000)]
  # Standard deviation of the frequency: 0.5 / sqrt(4000) = 0.008; 0.03 is almost 4 sigma.
  assert abs(np.mean(flips) - 0.5) < 0.03


def test_lighting_noise_has_the_stated_covariance():
  n, alphastd = 20000, 0.1
  rng = np.random.default_rng(9)
  shifts = np.stack([P.lighting_shift(rng, alphastd) for _ in range(n)])
  want = P.IMAGENET_EIGVEC @ np.diag(alphastd**2 * P.IMAGENET_EIGVAL**2) @ P.IMAGENET_EIGVEC.T
  got = np.cov(shifts, rowvar=False)
  assert np.all(np.abs(shifts.mean(0)) < 4 * np.sqrt(np.diag(want) / n))
  # The variances differ by 2,300x along the principal axes, so compare there, where each must be
  # 0.01 * eigval^2 (relative standard error sqrt(2 / n) = 1%, tolerance 5%) and uncorrelated.
  v_inv = np.linalg.inv(P.IMAGENET_EIGVEC)
  along_axes = v_inv @ got @ v_inv.T
  np.testing.assert_allclose(np.diag(along_axes), alphastd**2 * P.IMAGENET_EIGVAL**2, rtol=0.05)
  d = np.sqrt(np.diag(along_axes))
  correlation = along_axes / np.outer(d, d)
  assert np.all(np.abs(correlation - np.eye(3)) < 0.05), correlation
  # And in RGB, as one matrix: Frobenius error relative to the matrix, within 5%.
  assert np.linalg.norm(got - want) < 0.05 * np.linalg.norm(want)


def test_lighting_adds_one_shift_in_pixel_units_to_every_pixel():
  image = np.random.default_rng(10).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  out = P.lighting(image, 11)
  shift = P.lighting_shift(11) * 255.0
  assert out.dtype == np.float32
  np.testing.assert_allclose(out - image, np.broadcast_to(shift, image.shape), atol=1e-4)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("layout", ["contiguous", "flipped view", "float32"])
def test_add_per_channel_is_numpys_float32_sum_bit_for_bit(channels, layout):
  """The lookup-table path (uint8, 2-4 channels) and the fallback both give exactly
  `image.astype(float32) + shift.astype(float32)`: every uint8 value, shifts of both signs and
  sizes, a mirrored (non-contiguous) view as the paper's flip leaves it."""
  rng = np.random.default_rng(channels)
  image = np.concatenate([np.arange(256, dtype=np.uint8)[None, :, None].repeat(channels, -1),
                          rng.integers(0, 256, (9, 256, channels), dtype=np.uint8)])
  if layout == "flipped view":
    image = image[:, ::-1]
  elif layout == "float32":
    image = image.astype(np.float32) / 7
  for shift in (rng.normal(0, 20, channels), np.full(channels, 1e-7), np.full(channels, -300.25)):
    want = image.astype(np.float32) + shift.astype(np.float32)
    got = image_ops.add_per_channel(image, shift)
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_normalize_by_channel_mean_or_mean_image():
  image = np.full((4, 4, 3), 100, np.uint8)
  np.testing.assert_allclose(image_ops.normalize(image, np.asarray(image_ops.IMAGENET_MEAN_255))[0, 0], 100 - np.asarray(image_ops.IMAGENET_MEAN_255),
                             rtol=1e-6)
  mean_image = np.arange(48, dtype=np.float32).reshape(4, 4, 3)
  np.testing.assert_array_equal(image_ops.normalize(image, mean_image), 100 - mean_image)
  np.testing.assert_allclose(image_ops.normalize(image, 40.0, std=np.array([2.0, 4.0, 5.0]))[0, 0], [30, 15, 12])


def test_paper_augment_shape_determinism_and_flip():
  image = np.random.default_rng(12).integers(0, 256, (20, 26, 3), dtype=np.uint8)
  aug = functools.partial(P.paper_augment, short_side=(16, 24), crop_size=12)
  out = aug(image, (0, 3, 17))
  assert out.shape == (12, 12, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out, aug(image, (0, 3, 17)))
  assert not np.array_equal(out, aug(image, (0, 4, 17)))
  # Without scale, colour or mean, only the crop's mirror remains: both outcomes occur.
  square = position_image(12, 12)
  plain = functools.partial(P.paper_augment, short_side=(12, 12), crop_size=12, alphastd=0.0, mean=0.0)
  outs = {bool(plain(square, seed)[0, 0, 1] == 11) for seed in range(20)}
  assert outs == {False, True}
  with pytest.raises(ValueError, match="crop_size"):
    P.paper_augment(image, 0, short_side=(8, 24), crop_size=12)

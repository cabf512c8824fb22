"""The paper's protocol (He et al. 2015, sec. 3.4): scale and colour augmentation, 10-crop and multi-scale testing.

Everything here works on one HWC image as a numpy array (uint8 RGB from a decoder) with PIL for
resizing (training's `paper_augment` with OpenCV's `image_ops.resize_box` unless `exact`), so it
runs inside any host-side input pipeline; only `averaged_scores` calls into JAX,
through the `logits_fn` it is given. Sizes are parameters, so the same code runs on 32-px test images.

Training, "paper" augmentation (`paper_augment`), in this order:
  1. scale augmentation: resize so the shorter side is s ~ U{256, ..., 480} (bilinear);
  2. a random 224x224 crop, mirrored with probability 0.5 ("a crop from the image or its
     horizontal flip": cropping then mirroring gives the same distribution and touches fewer pixels);
  3. PCA lighting noise of Krizhevsky et al. 2012 with ImageNet's eigenvalues/eigenvectors, sigma 0.1;
  4. mean subtraction. The paper subtracts "the per-pixel mean" (Krizhevsky et al.'s mean image of
     the training set); with scale augmentation a crop has no fixed place in a mean image, so the
     default is the per-channel `IMAGENET_MEAN_255`, as fb.resnet.torch and torchvision do (a mean
     image of the crop's shape works too). The paper divides by no standard deviation (`std=None`);
     weights converted from torchvision need `std=IMAGENET_STD_255`.

Testing: `center_views` (resize 256, center 224), `ten_crop_views` (AlexNet's 10 crops) and
`multi_scale_views` (the fully-convolutional form: whole image with shorter side in
{224, 256, 384, 480, 640} and its mirror). `averaged_scores` averages a model's scores over the views.
"""

from __future__ import annotations

import collections
import functools
from typing import Callable, Optional, Sequence, Union

import numpy as np

from resnet_jax.data.image_ops import (IMAGENET_MEAN_255, add_per_channel, center_offsets, crop,
                                       hflip, normalize, random_hflip, resize_box, resize_center_crop,
                                       resize_shorter_side, resized_size)

Seed = Union[None, int, Sequence[int], np.random.Generator]

# Krizhevsky et al.'s PCA of ImageNet's RGB pixels (values in [0, 1]), as fb.resnet.torch lists it.
# Column j of IMAGENET_EIGVEC is the eigenvector of IMAGENET_EIGVAL[j].
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])
PAPER_SHORT_SIDE = (256, 480)
PAPER_CROP = 224
TEST_RESIZE = 256
MULTI_SCALES = (224, 256, 384, 480, 640)
AVERAGES = ("softmax", "logits")


# ----------------------------------------------------------------------------------------------
# Training augmentation.

def random_scale(image: np.ndarray, rng: Seed, short_side: tuple[int, int] = PAPER_SHORT_SIDE
                 ) -> np.ndarray:
  """Scale augmentation: shorter side resized to an integer drawn uniformly from [lo, hi], both included."""
  rng = np.random.default_rng(rng)
  lo, hi = short_side
  return resize_shorter_side(image, int(rng.integers(lo, hi + 1)))


def random_crop(image: np.ndarray, rng: Seed, size: int = PAPER_CROP) -> np.ndarray:
  """A `size` x `size` crop whose top-left corner is uniform over every position that fits."""
  rng = np.random.default_rng(rng)
  h, w = image.shape[:2]
  if min(h, w) < size:
    raise ValueError(f"cannot take a {size}x{size} crop from a {h}x{w} image")
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  return crop(image, top, left, size)


def _scaled_crop(image: np.ndarray, rng: np.random.Generator, short_side: tuple[int, int],
                 size: int) -> np.ndarray:
  """`random_crop(random_scale(...))` from the same draws, with only the crop's box resized."""
  h, w = image.shape[:2]
  lo, hi = short_side
  new_h, new_w = resized_size(h, w, int(rng.integers(lo, hi + 1)))
  if min(new_h, new_w) < size:
    raise ValueError(f"cannot take a {size}x{size} crop from a {new_h}x{new_w} image")
  top, left = int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1))
  if (new_h, new_w) == (h, w):  # As resize_shorter_side: no resampling at the image's own size.
    return crop(image, top, left, size)
  sy, sx = h / new_h, w / new_w  # Original pixels per rescaled pixel.
  return resize_box(image, (left * sx, top * sy, (left + size) * sx, (top + size) * sy), size, size)


def lighting_shift(rng: Seed, alphastd: float = 0.1, eigval: np.ndarray = IMAGENET_EIGVAL,
                   eigvec: np.ndarray = IMAGENET_EIGVEC) -> np.ndarray:
  """Krizhevsky et al.'s RGB shift `eigvec @ (alpha * eigval)`, alpha ~ N(0, alphastd^2) per component.

  Its covariance is `eigvec @ diag(alphastd^2 * eigval^2) @ eigvec.T`: the shift moves colours
  along the principal axes of natural RGB variation, so it changes illumination, not object identity.

  Returns:
    The shift of shape (3,), in the units of `eigval` ([0, 1] pixels for ImageNet's values).
  """
  rng = np.random.default_rng(rng)
  alpha = rng.normal(0.0, alphastd, size=len(eigval))
  return eigvec @ (alpha * eigval)


def lighting(image: np.ndarray, rng: Seed, alphastd: float = 0.1, pixel_scale: float = 255.0,
             eigval: np.ndarray = IMAGENET_EIGVAL, eigvec: np.ndarray = IMAGENET_EIGVEC
             ) -> np.ndarray:
  """Adds one `lighting_shift` to every pixel of an HWC RGB image.

  Args:
    image: HWC image with 3 channels in RGB order.
    rng: numpy Generator or seed.
    alphastd: standard deviation of each alpha; 0.1 in Krizhevsky et al. and the paper.
    pixel_scale: pixel value of full intensity; ImageNet's eigenvalues are for [0, 1] pixels, so
      255 for uint8-range images.

  Returns:
    float32 image, not clipped (as fb.resnet.torch: the network sees the shifted values).
  """
  shift = lighting_shift(rng, alphastd, eigval, eigvec) * pixel_scale
  return add_per_channel(image, shift)


def paper_augment(image: np.ndarray, rng: Seed, *, short_side: tuple[int, int] = PAPER_SHORT_SIDE,
                  crop_size: int = PAPER_CROP, alphastd: float = 0.1,
                  mean: np.ndarray = IMAGENET_MEAN_255, std: Optional[np.ndarray] = None,
                  pixel_scale: float = 255.0, exact: bool = False) -> np.ndarray:
  """The paper's training augmentation of one HWC uint8 RGB image (sec. 3.4, see the module doc).

  Args:
    image: HWC uint8 RGB image of any size.
    rng: numpy Generator or seed; pass e.g. `(seed, epoch, index)` for an augmentation that is
      deterministic per example and differs between epochs.
    short_side: range [lo, hi] of the shorter side after scale augmentation; lo >= crop_size.
    crop_size: side of the square crop.
    alphastd: standard deviation of the PCA lighting coefficients (0 turns the noise off).
    mean, std: `image_ops.normalize`'s; see step 4 above.
    pixel_scale: full intensity in the image's units (255 for uint8).
    exact: resize the whole image with PIL, then crop (torchvision's `Resize` bytes); else resize
      only the crop's box, with `image_ops.resize_box`: the same draws, several times faster.

  Returns:
    float32 array of shape (crop_size, crop_size, 3).
  """
  if short_side[0] < crop_size:
    raise ValueError(f"short_side {short_side} must not go below crop_size {crop_size}")
  rng = np.random.default_rng(rng)
  # The draws happen in a fixed order (scale, crop, flip, lighting), so a seed fixes the result.
  if exact:
    x = random_crop(random_scale(image, rng, short_side), rng, crop_size)
  else:
    x = _scaled_crop(image, rng, short_side, crop_size)
  x = random_hflip(x, rng)
  x = lighting(x, rng, alphastd, pixel_scale)
  return normalize(x, mean, std)


# ----------------------------------------------------------------------------------------------
# Testing protocols. Each returns a list of NHWC stacks; every view in them counts once in the
# average, and a stack holds views of one shape so that it can be batched.

def center_views(image: np.ndarray, resize_size: int = TEST_RESIZE, crop_size: int = PAPER_CROP,
                 interpolation: str = "bilinear") -> list[np.ndarray]:
  """One view: shorter side resized to `resize_size` (PIL's `interpolation`), then the centred
  `crop_size` square."""
  return [resize_center_crop(image, resize_size, crop_size, interpolation)[None]]


def ten_crop_views(image: np.ndarray, resize_size: int = TEST_RESIZE, crop_size: int = PAPER_CROP,
                   interpolation: str = "bilinear") -> list[np.ndarray]:
  """AlexNet's 10-crop testing: shorter side to `resize_size`, then 10 `crop_size` squares.

  The stack's order, with H x W the resized size and c = crop_size:
    0 top-left (0, 0), 1 top-right (0, W - c), 2 bottom-left (H - c, 0),
    3 bottom-right (H - c, W - c), 4 center (`center_offsets`),
    5..9 the mirrors of views 0..4 (view 5 + i is `hflip(view i)`).
  torchvision's `TenCrop` instead takes the five crops of the mirrored image, so its view 5 is
  the mirror of our view 1; the ten views are the same set (but for the centre crop when H - c or
  W - c is odd, which rounding places one pixel apart), so averages agree.

  Returns:
    A list holding one stack of shape (10, c, c, C).
  """
  x = resize_shorter_side(image, resize_size, interpolation)
  h, w = x.shape[:2]
  c = crop_size
  corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), center_offsets(h, w, c)]
  five = np.stack([crop(x, top, left, c) for top, left in corners])
  return [np.concatenate([five, hflip(five)])]


def multi_scale_views(image: np.ndarray, scales: Sequence[int] = MULTI_SCALES,
                      interpolation: str = "bilinear") -> list[np.ndarray]:
  """The fully-convolutional form: the whole image at each scale and its mirror, no crop.

  The network's global average pool makes it accept any input size, and it then computes exactly
  what the paper's dense evaluation averages (its fc layer is a 1x1 convolution over the pooled map).

  Returns:
    One stack per scale, in the order of `scales`, of shape (2, h_s, w_s, C) with min(h_s, w_s) = s:
    the resized image, then its mirror.
  """
  views = []
  for s in scales:
    x = resize_shorter_side(image, s, interpolation)
    views.append(np.stack([x, hflip(x)]))
  return views


PROTOCOLS = {"center": center_views, "ten_crop": ten_crop_views, "multi_scale": multi_scale_views}


def get_protocol(name: str, **sizes) -> Callable[[np.ndarray], list[np.ndarray]]:
  """The views function of protocol `name` with its sizes bound, e.g. `get_protocol('ten_crop')`."""
  if name not in PROTOCOLS:
    raise ValueError(f"unknown protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}")
  return functools.partial(PROTOCOLS[name], **sizes)


def num_views(views_fn: Callable[[np.ndarray], list[np.ndarray]], image: np.ndarray) -> int:
  """How many views `views_fn` makes of `image` (1, 10, or 2 per scale)."""
  return sum(len(stack) for stack in views_fn(image))


# ----------------------------------------------------------------------------------------------
# Scores.

def softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over the last axis, in float64 so that averaging many views loses nothing."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def _padded_calls(logits_fn, views: np.ndarray, chunk: Optional[int]) -> np.ndarray:
  """`logits_fn` over `views` in calls of exactly `chunk` views (the last one zero-padded)."""
  if chunk is None:
    return np.asarray(logits_fn(views))
  outputs = []
  for start in range(0, len(views), chunk):
    part = views[start:start + chunk]
    n = len(part)
    if n < chunk:  # A constant batch shape: one compilation per view shape, shardable by `chunk`.
      part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
    outputs.append(np.asarray(logits_fn(part))[:n])
  return np.concatenate(outputs)


def averaged_scores(logits_fn: Callable, images: Sequence[np.ndarray],
                    views_fn: Callable[[np.ndarray], list[np.ndarray]], *, mean: np.ndarray,
                    std: Optional[np.ndarray], average: str = "softmax",
                    chunk: Optional[int] = None) -> np.ndarray:
  """Each image's score averaged over the views of a testing protocol.

  The paper says only that the scores are averaged. We average softmax probabilities by default:
  the released Caffe models' score is their final softmax ("prob") layer, and fb.resnet.torch's
  10-crop test adds up its per-crop outputs, softmax outputs in the usual reading. `average='logits'`
  averages the logits instead (a geometric mean of the probabilities, up to normalisation); the
  two usually rank classes alike, and top-k errors differ by little.

  Views of equal shape, across images, go to `logits_fn` together, so a batch of same-size images
  costs one call per view shape (one for 10-crop, one per scale for multi-scale).

  Args:
    logits_fn: `logits_fn(batch_nhwc float32) -> (batch, num_classes)`, e.g. a jitted model apply.
    images: a sequence of HWC uint8 images (sizes may differ), or an NHWC array.
    views_fn: a protocol's views function, e.g. `get_protocol('ten_crop')` or a
      `functools.partial(ten_crop_views, resize_size=36, crop_size=32)`.
    mean, std: normalisation of each view, as in training (see `normalize`).
    average: 'softmax' (mean of probabilities) or 'logits' (mean of logits).
    chunk: if given, every call to `logits_fn` gets exactly `chunk` views, zero-padded, so a jitted
      function compiles once per view shape and `chunk` can be a multiple of the device count.

  Returns:
    float64 array (len(images), num_classes): mean probabilities or mean logits.
  """
  if average not in AVERAGES:
    raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
  if len(images) == 0:
    raise ValueError("no images to score")
  # shape -> list of (image index, stack); views of one shape are scored in one go.
  groups = collections.defaultdict(list)
  for i, image in enumerate(images):
    for stack in views_fn(image):
      groups[stack.shape[1:]].append((i, stack))
  totals, counts = None, np.zeros(len(images))
  for entries in groups.values():
    owners = np.concatenate([np.full(len(stack), i) for i, stack in entries])
    views = normalize(np.concatenate([stack for _, stack in entries]), mean, std)
    scores = _padded_calls(logits_fn, views, chunk).astype(np.float64)
    if average == "softmax":
      scores = softmax(scores)
    if totals is None:
      totals = np.zeros((len(images), scores.shape[-1]))
    np.add.at(totals, owners, scores)
    np.add.at(counts, owners, 1)
  return totals / counts[:, None]


def topk_correct(scores, labels, k: int):
  """Whether each label is among the `k` highest scores: torchvision's rule, `topk` then `eq`.

  The one top-k rule of the library: the in-loop evaluation (`steps.eval_step`) and
  `resnet-jax evaluate` both count with it. Tied scores rank the lower class index first (as
  `jax.lax.top_k` and torch's `topk` order them). Works on numpy and JAX arrays, and in jit.
  """
  import jax  # Deferred: the augmentation above needs no JAX.
  scores = jax.numpy.asarray(scores)
  top = jax.lax.top_k(scores, min(k, scores.shape[-1]))[1]
  return jax.numpy.any(top == jax.numpy.asarray(labels)[:, None], axis=-1)


def topk_errors(scores, labels, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
  """Top-k error rates in percent, as the paper reports them: {1: top-1 error, 5: top-5 error}.

  The error is the fraction of examples whose label is not among the k highest scores.
  """
  labels = np.asarray(labels)
  if len(labels) == 0:
    raise ValueError("no examples to score")
  return {k: 100.0 * (1.0 - float(np.mean(np.asarray(topk_correct(scores, labels, k))))) for k in ks}


def format_errors(errors: dict[int, float]) -> str:
  """'top-1 error 23.85%, top-5 error 7.13%'."""
  return ", ".join(f"top-{k} error {e:.2f}%" for k, e in sorted(errors.items()))

"""Image operations (resize, crop, flip, normalise) and ImageNet's statistics, one definition each.

Images are HWC numpy arrays (uint8 from a decoder); `resize` goes through PIL's bilinear filter,
which antialiases when shrinking, as torchvision's PIL path does (its bytes; evaluation uses it).
`resize_box` is training's faster resize (OpenCV), within a PSNR of PIL's that tests state. Sizes and
offsets are rounded as torchvision's `Resize` and `CenterCrop` round them.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image

# ImageNet's per-channel statistics of RGB pixels: torchvision's values, for pixels in [0, 1] ...
IMAGENET_MEAN_01 = (0.485, 0.456, 0.406)
IMAGENET_STD_01 = (0.229, 0.224, 0.225)
# ... and the same times 255, for uint8 pixels (123.675, 116.28, 103.53; 58.395, 57.12, 57.375).
IMAGENET_MEAN_255 = tuple(round(m * 255, 3) for m in IMAGENET_MEAN_01)
IMAGENET_STD_255 = tuple(round(s * 255, 3) for s in IMAGENET_STD_01)


# The resize filters: PIL's, as torchvision's PIL path (and timm's eval transform) apply them.
INTERPOLATIONS = ("bilinear", "bicubic")
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
  """(height, width) with the shorter side at `size`; the longer side truncates, as torchvision's."""
  if width <= height:
    return int(size * height / width), size
  return size, int(size * width / height)


def resize(image: np.ndarray, height: int, width: int, interpolation: str = "bilinear") -> np.ndarray:
  """Resize of an HWC uint8 image to height x width with PIL's `interpolation` filter (bilinear or
  bicubic); an image already that size is returned as is."""
  if image.shape[:2] == (height, width):
    return image
  resample = _RESAMPLE[interpolation]
  channels = image.shape[-1]
  if channels in (1, 3):
    out = np.asarray(Image.fromarray(image[..., 0] if channels == 1 else image)
                     .resize((width, height), resample))
    return out[..., None] if channels == 1 else out
  # PIL has no mode for other channel counts; resizing channel by channel ('L' images) gives the
  # bytes an 'RGB' resize gives.
  return np.stack([np.asarray(Image.fromarray(image[..., c]).resize((width, height), resample))
                   for c in range(channels)], axis=-1)


_CV2 = None


def _cv2():
  """OpenCV, imported on first use (it takes a while) and single-threaded: an input pipeline already
  runs one image per thread or process, and OpenCV's own threads would only contend with them."""
  global _CV2
  if _CV2 is None:
    import cv2
    cv2.setNumThreads(1)
    _CV2 = cv2
  return _CV2


def _blur_kernel(variance: float) -> np.ndarray:
  """A symmetric kernel of this variance (in pixels^2; the target f^2/6 less the area average's
  (n^2 - 1)/12 and the warp's n^2/6, in the reduced image's pixels): [c, 1 - 2c, c] (variance 2c)
  while c <= 1/4, else a Gaussian to 3 sigma; [1] for none."""
  if variance <= 0:
    return np.ones(1, np.float32)
  if variance <= 0.5:
    return np.array([variance / 2, 1 - variance, variance / 2], np.float32)
  x = np.arange(-math.ceil(3 * math.sqrt(variance)), math.ceil(3 * math.sqrt(variance)) + 1)
  g = np.exp(-x * x / (2 * variance))
  return (g / g.sum()).astype(np.float32)


def resize_box(image: np.ndarray, box: Optional[Sequence[float]], height: int, width: int,
               flip: bool = False) -> np.ndarray:
  """Bilinear resize of the fractional `box` (left, top, right, bottom; None: all) of an HWC uint8 image
  to height x width, close to PIL's antialiased bilinear and several times faster (OpenCV; BENCHMARKS.md):
  training's resize. `flip` mirrors the output, as `hflip` would, within the same warp (no copy).

  PIL shrinks by a factor f with a tent f input pixels wide (variance f^2/6); OpenCV's bilinear warp
  has a tent 1 pixel wide. The difference in variance is added by a blur before the warp: 3 taps up
  to 2x, a Gaussian beyond; past 4x, n x n blocks are first averaged (OpenCV's area reduction,
  n = f // 2, so that the box stays a small part of the filter). Pixels within the filter's
  reach of the box are read, as PIL's box resize reads them (crop the image first to read nothing
  outside, as torchvision's crop does). tests/test_input_pipeline.py bounds the PSNR from PIL's.
  """
  cv2 = _cv2()
  h, w, channels = image.shape
  if channels > 4:  # OpenCV warps at most 4 channels at once.
    return np.stack([resize_box(image[..., c:c + 1], box, height, width, flip)[..., 0]
                     for c in range(channels)], axis=-1)
  left, top, right, bottom = (0.0, 0.0, float(w), float(h)) if box is None else box
  fx, fy = (right - left) / width, (bottom - top) / height  # Input pixels per output pixel.
  n = max(int(min(fx, fy) / 2), 1)
  # The pixels the filters reach: PIL's tent reaches max(f, 1) beyond the box, plus one for rounding.
  x0, x1 = max(int(left - max(fx, 1)) - 1, 0), min(math.ceil(right + max(fx, 1)) + 1, w)
  y0, y1 = max(int(top - max(fy, 1)) - 1, 0), min(math.ceil(bottom + max(fy, 1)) + 1, h)
  region = image[y0:y1, x0:x1]
  if n > 1:
    # OpenCV's fast area path needs sides divisible by n: the edge pixels are repeated to get there.
    pad_y, pad_x = -(y1 - y0) % n, -(x1 - x0) % n
    if pad_y or pad_x:
      region = cv2.copyMakeBorder(region, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
    region = cv2.resize(region, (region.shape[1] // n, region.shape[0] // n),
                        interpolation=cv2.INTER_AREA)
  kernels = [_blur_kernel((f * f / 6 - n * n / 6 - (n * n - 1) / 12) / (n * n)) for f in (fx, fy)]
  if len(kernels[0]) > 1 or len(kernels[1]) > 1:
    region = cv2.sepFilter2D(region, -1, kernels[0], kernels[1], borderType=cv2.BORDER_REPLICATE)
  # Output pixel (x, y) samples the box at its centre, in the region's (reduced) pixel indices.
  sx, sy = fx / n, fy / n
  warp = np.array([[sx, 0.0, (left - x0) / n + 0.5 * sx - 0.5],
                   [0.0, sy, (top - y0) / n + 0.5 * sy - 0.5]])
  if flip:  # Output column x samples where column width - 1 - x would.
    warp[0] = (-sx, 0.0, warp[0, 2] + (width - 1) * sx)
  out = cv2.warpAffine(region, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
  return out.reshape(height, width, channels)  # OpenCV drops a single channel's axis.


def resize_shorter_side(image: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
  """torchvision's `Resize(size)`: the shorter side to `size`, the aspect kept (the longer side truncated).

  An image whose shorter side already is `size` is returned unchanged (no resampling blur).
  """
  # PIL resamples 8-bit images exactly as torchvision's PIL path does; floats would need mode 'F'.
  if image.ndim != 3 or image.dtype != np.uint8:
    raise ValueError(f"expected an HWC uint8 image, got shape {image.shape} and dtype {image.dtype}")
  return resize(image, *resized_size(*image.shape[:2], size), interpolation)


def crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
  """The `size` x `size` window of `image` whose top-left pixel is (top, left)."""
  h, w = image.shape[:2]
  if not (0 <= top <= h - size and 0 <= left <= w - size):
    raise ValueError(f"a {size}x{size} crop at ({top}, {left}) does not fit in a {h}x{w} image")
  return image[top:top + size, left:left + size]


def center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
  """(top, left) of the centred `size` crop, Python's round (half to even) as torchvision's `CenterCrop`."""
  return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """torchvision's `CenterCrop(size)` of an image at least `size` on each side."""
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f"image of {h}x{w} is smaller than the {size}x{size} crop; resize it first")
  return crop(image, *center_offsets(h, w, size), size)


def resize_center_crop(image: np.ndarray, resize_size: int, crop_size: int,
                       interpolation: str = "bilinear") -> np.ndarray:
  """`Resize(resize_size)` then `CenterCrop(crop_size)`: torchvision's (and timm's) evaluation view."""
  return center_crop(resize_shorter_side(image, resize_size, interpolation), crop_size)


def hflip(image: np.ndarray) -> np.ndarray:
  """Horizontal mirror of an HWC image (or of each image of an NHWC stack)."""
  return image[..., ::-1, :]


def random_hflip(image: np.ndarray, rng, p: float = 0.5) -> np.ndarray:
  """Mirrors the image with probability `p`; `rng` is a numpy Generator or a seed."""
  rng = np.random.default_rng(rng)
  return hflip(image) if rng.random() < p else image


def add_per_channel(image: np.ndarray, shift: np.ndarray) -> np.ndarray:
  """float32 `image + shift` for an HWC image and a per-channel `shift`, as
  `image.astype(np.float32) + shift.astype(np.float32)` computes it, bit for bit. A uint8 image with
  at most 4 channels goes through a 256-entry table per channel (OpenCV's LUT): one pass, about 3x
  faster than numpy's broadcast over a last axis of 3."""
  shift = np.asarray(shift, np.float32)
  channels = image.shape[-1]
  if image.dtype == np.uint8 and image.ndim == 3 and 1 < channels <= 4 and shift.shape == (channels,):
    table = np.arange(256, dtype=np.float32)[:, None] + shift  # Each sum computed as numpy's.
    return _cv2().LUT(np.ascontiguousarray(image), table.reshape(256, 1, channels))
  return image.astype(np.float32) + shift


def normalize(images, mean, std: Optional[object] = None):
  """(images - mean) / std in float32 (no division when `std` is None), numpy or JAX arrays alike.

  `mean` and `std` are per channel (or a mean image of the images' shape), on the images' scale:
  `IMAGENET_MEAN_255` for uint8 pixels. Runs on the host in numpy and inside the jitted steps.
  """
  out = images.astype(np.float32) - np.asarray(mean, np.float32)
  if std is not None:
    out = out / np.asarray(std, np.float32)
  return out

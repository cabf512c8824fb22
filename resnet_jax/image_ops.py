"""Image operations (resize, crop, flip, normalise) and ImageNet's statistics, one definition each.

Images are HWC numpy arrays (uint8 from a decoder); resizing goes through PIL's bilinear filter,
which antialiases when shrinking, as torchvision's PIL path does. Sizes and offsets are rounded as
torchvision's `Resize` and `CenterCrop` round them.
"""

from __future__ import annotations

from typing import Optional

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


def normalize(images, mean, std: Optional[object] = None):
  """(images - mean) / std in float32 (no division when `std` is None), numpy or JAX arrays alike.

  `mean` and `std` are per channel (or a mean image of the images' shape), on the images' scale:
  `IMAGENET_MEAN_255` for uint8 pixels. Runs on the host in numpy and inside the jitted steps.
  """
  out = images.astype(np.float32) - np.asarray(mean, np.float32)
  if std is not None:
    out = out / np.asarray(std, np.float32)
  return out

"""Inference preprocessing identical to torchvision's `weights.transforms()`, producing NHWC arrays.

torchvision's preset resizes with PIL when given a PIL image (the usual case: `ImageFolder` and
`Image.open` give PIL images) and with its own antialiased kernel when given a uint8 tensor. We resize
with PIL, so on PIL input the result is bit-identical to torchvision's (max difference 0.0 on
scikit-image's sample photos: astronaut, coffee, chelsea, rocket, camera, ... see
tests/test_transforms.py). torchvision's tensor path rounds its bilinear kernel differently from
PIL: on the same photos it differs from ours (and from its own PIL path) by at most one uint8 level,
i.e. 1 / 255 / 0.224 = 0.0175 after normalisation, on 7-18% of the pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from resnet_jax.data import image_ops
from resnet_jax.data import images as images_lib


@dataclasses.dataclass(frozen=True)
class ImageClassification:
  """torchvision's `ImageClassification` preset: resize, center-crop, scale to [0, 1], normalise.

  Attributes:
    crop_size: side of the square center crop (224 for every torchvision ResNet).
    resize_size: the shorter side is resized to this first: 256 for the IMAGENET1K_V1 weights,
      232 for IMAGENET1K_V2 (and resnext101_64x4d's V1).
    mean, std: per-channel normalisation of the [0, 1] pixels (RGB, or luma for 1 channel); std
      None divides by nothing (the paper's mean subtraction only).
    channels: 3 (RGB) or 1 (greyscale, ITU-R 601 luma as PIL's and torchvision's Grayscale).
    interpolation: the resize's PIL filter, 'bilinear' (torchvision's) or 'bicubic' (timm's).
  """
  crop_size: int = 224
  resize_size: int = 256
  mean: Sequence[float] = image_ops.IMAGENET_MEAN_01
  std: Optional[Sequence[float]] = image_ops.IMAGENET_STD_01
  channels: int = 3
  interpolation: str = "bilinear"

  def __call__(self, images: Any) -> np.ndarray:
    """Preprocesses one image or a sequence of them.

    Args:
      images: a PIL image, a uint8 array (H, W, 3|4) or (H, W), a file path, or a list of these; a
        uint8 array (N, H, W, C) is a batch.

    Returns:
      float32 array (N, crop_size, crop_size, channels), N = 1 for a single image.

    Raises:
      images.ImageError: a file that cannot be decoded, named in the message.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
      images = list(images)
    elif not isinstance(images, (list, tuple)):
      images = [images]
    return np.stack([self.one(image) for image in images])

  def one(self, image: Any) -> np.ndarray:
    """Preprocesses a single image to a float32 (crop_size, crop_size, channels) array."""
    pixels = np.asarray(to_pil(image, self.channels))
    # The array of a PIL image resizes to the bytes the PIL image does (PIL always antialiases).
    pixels = image_ops.resize_center_crop(pixels[..., None] if pixels.ndim == 2 else pixels,
                                          self.resize_size, self.crop_size, self.interpolation)
    # Same float32 operations, in the same order, as convert_image_dtype and normalize.
    return image_ops.normalize(pixels.astype(np.float32) / np.float32(255), self.mean, self.std)


def for_resize(resize_size: int) -> ImageClassification:
  """The ImageNet preprocessing with the given resize (256 for V1 weights, 232 for V2)."""
  return ImageClassification(resize_size=resize_size)


def to_pil(image: Any, channels: int = 3) -> Image.Image:
  """An RGB (channels 3) or 'L' (channels 1) PIL image from a PIL image of any mode (16-bit and float
  scaled, see `images`), a file path, or a uint8 array (grayscale, RGB or RGBA)."""
  if isinstance(image, (str, os.PathLike)):
    image = images_lib.load_image(image, channels)
  elif isinstance(image, Image.Image):
    image = images_lib.to_uint8(image, channels)
  pixels = np.asarray(image)
  if channels == 1 and pixels.ndim == 3 and pixels.shape[-1] == 1:
    return Image.fromarray(pixels[..., 0], mode="L")
  if pixels.dtype != np.uint8:
    raise TypeError(f"expected uint8 pixels (0..255), got {pixels.dtype}; convert [0, 1] floats with "
                    "(x * 255).round().astype(np.uint8)")
  mode = "L" if channels == 1 else "RGB"
  if pixels.ndim == 2:
    return Image.fromarray(pixels).convert(mode)
  if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
    raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {pixels.shape}")
  return Image.fromarray(pixels).convert(mode)


@functools.lru_cache(maxsize=None)
def imagenet_classes() -> tuple[str, ...]:
  """The 1000 ImageNet-1k class names, in the order of the classifier's outputs (torchvision's)."""
  text = importlib.resources.files("resnet_jax.data").joinpath("imagenet_classes.txt").read_text()
  names = tuple(text.splitlines())
  assert len(names) == 1000, len(names)
  return names

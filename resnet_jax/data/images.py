"""Decoding one image file to uint8 pixels: 16-bit and float images scaled, every error naming its file.

Shared by `predict` (transforms.py) and the image-folder training source (input_pipeline.py), so a
model sees the same pixels in both. PIL's `convert('RGB')` clips 16-bit ('I;16', 'I') and float ('F')
pixels to 0..255 instead of scaling them (a 16-bit photo becomes mostly white); here they are scaled
first: 16-bit by 255/65535, floats (taken as 0..1, the convention of float TIFFs) by 255.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Iterator, Optional, Union

import numpy as np
from PIL import Image

# Modes whose pixels are not 8-bit: PIL reads 16-bit greyscale PNG/TIFF as 'I;16*' (or 'I'), float TIFF as 'F'.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageError(ValueError):
  """An image file that cannot be decoded: missing, truncated, not an image, too large, odd pixels."""


def load_image(path: Union[str, os.PathLike], channels: int = 3) -> np.ndarray:
  """Decodes the image file `path` to uint8 (H, W, channels): RGB for 3 channels, luma for 1.

  Raises:
    ImageError: naming `path`, for a missing, truncated, unreadable or over-large file (PIL's
      decompression-bomb limit, `PIL.Image.MAX_IMAGE_PIXELS` x 2) or out-of-range float pixels.
  """
  path = os.fspath(path)
  return _decode(path, path, channels)


def decode_image(data: bytes, where: str, channels: int = 3) -> np.ndarray:
  """`load_image` of an image file's bytes kept elsewhere (an ArrayRecord record); errors name `where`."""
  return _decode(io.BytesIO(data), where, channels)


def _decode(file, where: str, channels: int) -> np.ndarray:
  with decoded(file, where) as image:
    with _named_errors(where):
      return to_uint8(image, channels, where=where)


def decoded(file, where: str, shorter_side: Optional[int] = None) -> Image.Image:
  """The PIL image of `file` (a path or a binary file), decoded whole so that a truncated or broken
  file fails here, with `load_image`'s errors naming `where`. A JPEG whose shorter side exceeds
  `shorter_side` is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps it at least that.
  The caller closes the image."""
  with _named_errors(where):
    image = Image.open(file)
    try:
      if shorter_side and image.format == "JPEG" and min(image.size) > shorter_side:
        scale = shorter_side / min(image.size)
        image.draft(image.mode, (int(image.width * scale), int(image.height * scale)))
      image.load()  # Decode now: a truncated file fails here, inside the error mapping.
    except BaseException:
      image.close()
      raise
    return image


@contextlib.contextmanager
def _named_errors(where: str) -> Iterator[None]:
  """PIL's and the file system's errors as one ImageError naming `where`."""
  try:
    yield
  except Image.DecompressionBombError as e:
    raise ImageError(f"{where}: image too large to decode safely ({e})") from None
  except FileNotFoundError:
    raise ImageError(f"{where}: no such image file") from None
  except Image.UnidentifiedImageError:  # Its message names an in-memory file's object, not `where`.
    raise ImageError(f"{where}: not an image file that Pillow can read") from None
  except (OSError, SyntaxError, ValueError) as e:  # PIL: truncated or broken data, odd modes
    if isinstance(e, ImageError):
      raise
    raise ImageError(f"{where}: cannot decode the image: {e}") from None


def to_uint8(image: Image.Image, channels: int = 3, where: str = "image") -> np.ndarray:
  """The uint8 (H, W, channels) pixels of a PIL image of any mode, high bit depths scaled."""
  if channels not in (1, 3):
    raise ImageError(f"{where}: images can be read with 1 or 3 channels, not {channels}")
  if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
    image = Image.fromarray(_scaled_grey(np.asarray(image), image.mode, where), mode="L")
  image = image.convert("L" if channels == 1 else "RGB")
  pixels = np.asarray(image)
  return pixels[..., None] if channels == 1 else pixels


def _scaled_grey(pixels: np.ndarray, mode: str, where: str) -> np.ndarray:
  if mode == "F":
    finite = np.isfinite(pixels)
    if not finite.all() or pixels.min() < 0 or pixels.max() > 1:
      raise ImageError(f"{where}: float pixels must lie in [0, 1] (found {np.nanmin(pixels):g} to "
                       f"{np.nanmax(pixels):g}{', with NaN or inf' if not finite.all() else ''})")
    scaled = pixels.astype(np.float64) * 255.0
  else:  # 16-bit; mode 'I' (32-bit int) is how older PIL reads 16-bit PNGs
    pixels = pixels.astype(np.int64)
    if pixels.min() < 0 or pixels.max() > 65535:
      raise ImageError(f"{where}: 32-bit integer pixels outside 0..65535 (found {pixels.min()} to "
                       f"{pixels.max()}); convert the image to 8 or 16 bits")
    scaled = pixels * (255.0 / 65535.0)
  return np.round(scaled).astype(np.uint8)

"""Training-time JPEG decoding at the smallest DCT scale (1, 1/2, 1/4, 1/8) that a crop's output allows.

A JPEG stores 8x8 blocks of DCT coefficients; libjpeg-turbo can invert them at 1/2, 1/4 or 1/8 size
for a fraction of the cost of a full decode. A training crop resized to 224 px does not need more
pixels than 224 across the crop, so when the crop spans at least 2x224 original pixels (both ways)
the image can be decoded at half size and the output still has its full resolution (what differs is
the filtering: 47 dB PSNR from the full decode's output on photos, tests/test_input_pipeline.py).
`dct_scale` picks the factor, never below what the output needs; `decode` runs it.

Decoders, all libjpeg-turbo with its default (accurate) IDCT and fancy upsampling, so they return the
same pixels (tests/test_input_pipeline.py checks it): simplejpeg (a 0.4 MB wheel, no system library),
OpenCV (`opencv-python-headless`, a 60 MB wheel), and Pillow's `Image.draft` (always there, the
fallback). benchmarks/input_pipeline.py times each; PyTurboJPEG needs a system libturbojpeg and
is left out.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Callable, Optional

import numpy as np
from PIL import Image

DCT_SCALES = (8, 4, 2, 1)  # libjpeg-turbo's power-of-two reductions, largest first.


def is_jpeg(data: bytes) -> bool:
  return data[:3] == b"\xff\xd8\xff"


def header_size(data: bytes) -> tuple[int, int]:
  """(height, width) from the JPEG's header, without decoding it.

  Raises:
    ValueError: not a JPEG, or more pixels than Pillow would decode (its decompression-bomb limit,
      `Image.MAX_IMAGE_PIXELS`): the caller then leaves the file to the source's own decoding.
  """
  if "simplejpeg" in _DEFAULT:  # A few microseconds, against tens for Pillow's parser.
    import simplejpeg
    h, w = simplejpeg.decode_jpeg_header(data)[:2]
  else:
    with Image.open(io.BytesIO(data)) as image:
      h, w = image.height, image.width
  if Image.MAX_IMAGE_PIXELS and h * w > 2 * Image.MAX_IMAGE_PIXELS:  # Pillow's own threshold.
    raise ValueError(f"{w}x{h} pixels is over Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS}")
  return h, w


def dct_scale(box_height: float, box_width: float, out_height: int, out_width: int) -> int:
  """The largest k in (8, 4, 2, 1) such that the box, decoded at 1/k, still has at least the output's
  pixels along both axes: downscaling by the DCT then never goes below what the output needs."""
  for k in DCT_SCALES:
    if box_height / k >= out_height and box_width / k >= out_width:
      return k
  return 1


def _pillow(data: bytes, k: int) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    if k > 1:
      # draft() takes the largest reduction that keeps the image at least this size; floor sizes so
      # that it picks exactly k (ceil would make it fall back to k/2 on odd sides).
      image.draft("RGB", (image.width // k, image.height // k))
    return np.asarray(image.convert("RGB"))


def _simplejpeg(data: bytes, k: int) -> np.ndarray:
  import simplejpeg
  h, w = simplejpeg.decode_jpeg_header(data)[:2]
  return simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=k, min_height=-(-h // k),
                                min_width=-(-w // k))


def _opencv(data: bytes, k: int) -> np.ndarray:
  import cv2
  flags = {1: cv2.IMREAD_COLOR_RGB, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
           8: cv2.IMREAD_REDUCED_COLOR_8}[k]
  image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
  if image is None:
    raise ValueError("OpenCV could not decode the JPEG")
  return image if k == 1 else image[..., ::-1]  # The reduced modes have no RGB variant.


DECODERS: dict[str, Callable[[bytes, int], np.ndarray]] = {
    "simplejpeg": _simplejpeg, "opencv": _opencv, "pillow": _pillow}


def available_decoders() -> list[str]:
  """The DECODERS whose package imports here, fastest measured first (BENCHMARKS.md)."""
  # find_spec, not import: OpenCV takes a while to import and is only timed, never the default.
  names = [name for name, module in (("simplejpeg", "simplejpeg"), ("opencv", "cv2"))
           if importlib.util.find_spec(module) is not None]
  return names + ["pillow"]


def decode(data: bytes, k: int = 1, decoder: Optional[str] = None) -> np.ndarray:
  """RGB uint8 (ceil(H/k), ceil(W/k), 3) of a JPEG decoded at 1/k by DCT scaling.

  Args:
    data: the JPEG file's bytes.
    k: 1, 2, 4 or 8.
    decoder: a DECODERS name; None takes the first of `available_decoders()`.
  """
  name = decoder or _DEFAULT[0]
  image = DECODERS[name](data, k)
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"{name} returned shape {image.shape}, not (H, W, 3)")
  return image


_DEFAULT = available_decoders()

"""Training-time JPEG decoding at the smallest DCT scale (1, 1/2, 1/4, 1/8) that a crop's output allows.

A JPEG stores 8x8 blocks of DCT coefficients; libjpeg-turbo can invert them at 1/2, 1/4 or 1/8 size
for a fraction of the cost of a full decode. A training crop resized to 224 px does not need more
pixels than 224 across the crop, so when the crop spans at least 2x224 original pixels (both ways)
the image can be decoded at half size and the output still has its full resolution (what differs is
the filtering). `dct_scale` picks the factor, never below what the output needs; `decode` runs it.
Training asks it for twice its output (input_pipeline's `_dct_scale`), so that the resize's own
antialiasing filter, not the DCT's block average, does most of the shrinking.

A crop needs only the 8x8 blocks it covers: `region_pixels` asks libjpeg-turbo 3 (its tj3 API,
through ctypes, from the `turbojpeg` wheel, which bundles the library) to decode just the iMCU
blocks around the crop, with one iMCU of context on each side so that fancy upsampling sees the
same neighbours: the crop's pixels are the whole decode's, byte for byte (tests/test_input_pipeline.py).
Where the library is missing, the whole image is decoded and cropped.

Whole-image decoders, all libjpeg-turbo with its default (accurate) IDCT and fancy upsampling, so they
return the same pixels (tests/test_input_pipeline.py checks it): simplejpeg (a 0.4 MB wheel, no
system library), libturbojpeg (the same binding as the regions), OpenCV (`opencv-python-headless`, a
60 MB wheel), and Pillow's `Image.draft` (always there, the fallback). benchmarks/input_pipeline.py
times each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import io
import re
import threading
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


# ----------------------------------------------------------------------------------------------
# libturbojpeg's tj3 API (libjpeg-turbo >= 3.0, turbojpeg.h), the calls and constants used here.

class _Region(ctypes.Structure):  # tjregion
  _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _ScalingFactor(ctypes.Structure):  # tjscalingfactor
  _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


_TJINIT_DECOMPRESS, _TJPF_RGB = 1, 0
_TJPARAM_SUBSAMP, _TJPARAM_JPEGWIDTH, _TJPARAM_JPEGHEIGHT = 4, 5, 6
# The iMCU (width, height) of each TJSAMP: 4:4:4, 4:2:2, 4:2:0, gray, 4:4:0, 4:1:1, 4:4:1. Another
# value (TJSAMP_UNKNOWN) is decoded whole.
_IMCU = {0: (8, 8), 1: (16, 8), 2: (16, 16), 3: (8, 8), 4: (8, 16), 5: (32, 8), 6: (8, 32)}
_EOI = b"\xff\xd9"
# The library the `turbojpeg` wheel bundles (auditwheel/delocate rename it: libturbojpeg-1a2b3c4d.so.0).
_BUNDLED = re.compile(r"^(libturbojpeg[^/\\]*\.(so[.\d]*|dylib)|turbojpeg[^/\\]*\.dll)$")


def _libturbojpeg_path() -> Optional[str]:
  try:
    for file in importlib.metadata.files("turbojpeg") or ():
      if _BUNDLED.match(file.name):
        return str(file.locate())
  except importlib.metadata.PackageNotFoundError:
    pass
  return ctypes.util.find_library("turbojpeg")


def _check_box(box: tuple[int, int, int, int], height: int, width: int, k: int) -> None:
  top, left, bh, bw = box
  if not (0 <= top and 0 <= left and bh > 0 and bw > 0 and top + bh <= height and left + bw <= width):
    raise ValueError(f"box {tuple(box)} (top, left, height, width) is not inside the {width}x{height} "
                     f"image decoded at 1/{k}")


class _Handle:
  """One tj3 decompressor; a handle is not thread-safe, so each thread has its own."""

  def __init__(self, lib):
    self.lib, self.value = lib, lib.tj3Init(_TJINIT_DECOMPRESS)
    if not self.value:
      raise MemoryError("tj3Init failed")

  def __del__(self):
    if self.value:
      self.lib.tj3Destroy(self.value)


class TurboJPEG:
  """libjpeg-turbo 3's decoder through ctypes: DCT-scaled, and cropped to a region's blocks.

  Raises (constructor):
    OSError: no libturbojpeg 3 here (`pip install turbojpeg` brings one).
  """

  def __init__(self, path: Optional[str] = None):
    path = path or _libturbojpeg_path()
    if not path:
      raise OSError("no libturbojpeg found (pip install turbojpeg)")
    lib = ctypes.CDLL(path)
    if not hasattr(lib, "tj3SetCroppingRegion"):
      raise OSError(f"{path} is libjpeg-turbo 2 or older; region decoding needs 3.0")
    handle, buf = ctypes.c_void_p, ctypes.c_char_p
    for name, restype, argtypes in (
        ("tj3Init", handle, [ctypes.c_int]),
        ("tj3Destroy", None, [handle]),
        ("tj3DecompressHeader", ctypes.c_int, [handle, buf, ctypes.c_size_t]),
        ("tj3Get", ctypes.c_int, [handle, ctypes.c_int]),
        ("tj3SetScalingFactor", ctypes.c_int, [handle, _ScalingFactor]),
        ("tj3SetCroppingRegion", ctypes.c_int, [handle, _Region]),
        ("tj3Decompress8", ctypes.c_int,
         [handle, buf, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]),
        ("tj3GetErrorStr", ctypes.c_char_p, [handle])):
      function = getattr(lib, name)
      function.restype, function.argtypes = restype, argtypes
    self.path, self._lib, self._local = path, lib, threading.local()

  def _handle(self) -> int:
    handle = getattr(self._local, "handle", None)
    if handle is None:
      handle = self._local.handle = _Handle(self._lib)
    return handle.value

  def _check(self, handle: int, status: int) -> None:
    # Warnings (a truncated file, corrupt data) count: a pixel the file does not hold is an error.
    if status != 0:
      raise ValueError(f"libturbojpeg: {self._lib.tj3GetErrorStr(handle).decode(errors='replace')}")

  def decode(self, data: bytes, k: int = 1,
             box: Optional[tuple[int, int, int, int]] = None) -> tuple[np.ndarray, int, int]:
    """(pixels, y, x): RGB uint8 pixels of the JPEG decoded at 1/k, and where their first pixel lies
    in the whole 1/k image. Without `box` that is the whole image at (0, 0); with a box (top, left,
    height, width) in the 1/k image's pixels, a region of whole iMCU columns that covers the box
    and one iMCU beyond it, so that its pixels inside the box are the whole decode's.

    Raises:
      ValueError: the box is not inside the image, or libjpeg-turbo cannot read all of the file
        (damaged or truncated data, CMYK, 12-bit, lossless).
    """
    data = bytes(data)
    lib, handle = self._lib, self._handle()
    self._check(handle, lib.tj3DecompressHeader(handle, data, len(data)))
    height, width = lib.tj3Get(handle, _TJPARAM_JPEGHEIGHT), lib.tj3Get(handle, _TJPARAM_JPEGWIDTH)
    subsampling = lib.tj3Get(handle, _TJPARAM_SUBSAMP)
    self._check(handle, lib.tj3SetScalingFactor(handle, _ScalingFactor(1, k)))
    sh, sw = -(-height // k), -(-width // k)  # TJSCALED
    y0, x0, y1, x1 = 0, 0, sh, sw
    if box is not None:
      top, left, bh, bw = box
      _check_box(box, sh, sw, k)
      # A file that does not end in EOI may be cut short below the box: decoded whole, the
      # decoder reaches the cut and says so, as a whole decode would.
      if subsampling in _IMCU and data.endswith(_EOI):
        mw, mh = (-(-m // k) for m in _IMCU[subsampling])  # The iMCU at 1/k.
        x0 = max(left - mw, 0) // mw * mw  # libjpeg-turbo crops whole iMCU columns only.
        y0 = max(top - mh, 0)
        y1, x1 = min(top + bh + mh, sh), min(left + bw + mw, sw)
    whole = (y0, x0, y1, x1) == (0, 0, sh, sw)
    region = _Region(0, 0, 0, 0) if whole else _Region(x0, y0, x1 - x0, y1 - y0)
    self._check(handle, lib.tj3SetCroppingRegion(handle, region))
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    self._check(handle, lib.tj3Decompress8(handle, data, len(data), out.ctypes.data, 0, _TJPF_RGB))
    return out, y0, x0


_TURBOJPEG: Optional[TurboJPEG] = None
_TURBOJPEG_ERROR = ""


def turbojpeg() -> Optional[TurboJPEG]:
  """The process's libturbojpeg binding, or None where there is none (`turbojpeg_error` says why).
  Made when this module is imported (`available_decoders`), before any input thread or process."""
  global _TURBOJPEG, _TURBOJPEG_ERROR
  if _TURBOJPEG is None and not _TURBOJPEG_ERROR:
    try:
      _TURBOJPEG = TurboJPEG()
    except OSError as e:
      _TURBOJPEG_ERROR = str(e)
  return _TURBOJPEG


def turbojpeg_error() -> str:
  turbojpeg()
  return _TURBOJPEG_ERROR


def _turbojpeg_whole(data: bytes, k: int) -> np.ndarray:
  decoder = turbojpeg()
  if decoder is None:
    raise OSError(_TURBOJPEG_ERROR)
  return decoder.decode(data, k)[0]


DECODERS: dict[str, Callable[[bytes, int], np.ndarray]] = {
    "simplejpeg": _simplejpeg, "turbojpeg": _turbojpeg_whole, "opencv": _opencv, "pillow": _pillow}


def available_decoders() -> list[str]:
  """The DECODERS whose package imports here, fastest measured first (BENCHMARKS.md)."""
  # find_spec, not import: OpenCV takes a while to import and is only timed, never the default.
  names = [name for name, module in (("simplejpeg", "simplejpeg"), ("opencv", "cv2"))
           if importlib.util.find_spec(module) is not None]
  if turbojpeg() is not None:
    names.insert(1 if "simplejpeg" in names else 0, "turbojpeg")
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


def _region(data: bytes, k: int, top: int, left: int, height: int,
            width: int) -> tuple[np.ndarray, int, int]:
  """A decode that covers the box, and where its first pixel lies in the whole 1/k image."""
  decoder = turbojpeg()
  if decoder is None:
    pixels = decode(data, k)
    _check_box((top, left, height, width), *pixels.shape[:2], k)
    return pixels, 0, 0
  return decoder.decode(data, k, (top, left, height, width))


def region_pixels(data: bytes, k: int, top: int, left: int, height: int, width: int) -> np.ndarray:
  """The height x width pixels at (top, left) of the JPEG decoded at 1/k, RGB uint8 (a view into the
  decoded buffer), decoded from the blocks around them alone where libturbojpeg is here (else from a
  whole decode by the default decoder): the same pixels either way.

  Raises:
    ValueError: the box is not inside the 1/k image, or the file cannot be decoded.
  """
  pixels, y, x = _region(data, k, top, left, height, width)
  return pixels[top - y:top - y + height, left - x:left - x + width]


def region_image(data: bytes, k: int, top: int, left: int, height: int, width: int) -> Image.Image:
  """`region_pixels` as an RGB PIL image (for PIL's resize: training's `exact_input`)."""
  pixels, y, x = _region(data, k, top, left, height, width)
  # The box's rows straight from the decoded buffer, with its row stride: no intermediate copy.
  offset = (top - y) * pixels.strides[0] + (left - x) * 3
  return Image.frombuffer("RGB", (width, height), memoryview(pixels.reshape(-1))[offset:], "raw",
                          "RGB", pixels.strides[0], 1)


_DEFAULT = available_decoders()

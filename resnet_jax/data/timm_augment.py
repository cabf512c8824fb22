"""timm's RandAugment ('rand-m7-mstd0.5-inc1', "ResNet strikes back"), on the host, as timm applies it.

timm's variant differs from torchvision's (resnet_jax/data/autoaugment.py) in every part: magnitudes on a
0-10 scale (`m7` = 0.7 of each operation's range), each of the 2 chosen operations applied with
probability 0.5, the magnitude drawn per operation from a normal of std `mstd` around `m` and clipped
to [0, 10], the "increasing" operation set (`inc1`: posterize, solarize and the enhancements grow
stronger with the magnitude), translations relative to the image size (0.45 of it at 10), a fill of
the dataset mean (timm: round(255 * mean)), and bicubic or bilinear resampling (timm's 'random'
picks one per geometric operation). Each operation calls the PIL function timm calls with the
argument timm computes, so the pixels are timm's (tests/test_timm_augment.py, op by op).

Random draws go through a numpy `Generator` (Grain's per-example generator in training): the 2
operations with replacement, then per operation: whether it applies, its magnitude, its sign, and
for 'random' its filter.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

LEVEL_DENOM = 10.0  # timm's 'Mx' scale: magnitude 10 is each operation's full range.
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order (the draw indexes them).
TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
              "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
              "TranslateYRel")
INCREASING = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
              "TranslateYRel")
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
          "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
_ENHANCE = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
            "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}


@dataclasses.dataclass(frozen=True)
class RandAugmentConfig:
  """A parsed timm RandAugment string: 'rand-m7-mstd0.5-inc1' -> magnitude 7, std 0.5, increasing."""
  magnitude: float = LEVEL_DENOM
  num_layers: int = 2
  prob: float = 0.5
  magnitude_std: float = 0.0
  magnitude_max: Optional[float] = None
  increasing: bool = False

  @property
  def ops(self) -> tuple[str, ...]:
    return INCREASING if self.increasing else TRANSFORMS


def parse(config_str: str) -> RandAugmentConfig:
  """timm's `rand_augment_transform` config string: sections m (magnitude), n (operations), p
  (probability of each), mstd (magnitude noise; > 100 uniform), mmax (clip), inc (0/1).

  Raises:
    ValueError: naming the string, for anything else (timm's transform sets 't...' included).
  """
  sections = config_str.split("-")
  if sections[0] != "rand" or len(sections) < 2:
    raise ValueError(f"{config_str!r} is not a timm RandAugment string such as 'rand-m7-mstd0.5-inc1'")
  fields = {}
  names = {"m": "magnitude", "n": "num_layers", "p": "prob", "mstd": "magnitude_std",
           "mmax": "magnitude_max", "inc": "increasing"}
  for section in sections[1:]:
    match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", section)
    if not match or match.group(1) not in names:
      raise ValueError(f"{config_str!r}: unknown RandAugment section {section!r} (known: "
                       f"{', '.join(names)})")
    key, text = names[match.group(1)], match.group(2)
    if key in ("prob", "magnitude_std"):
      value = float(text)
      if key == "magnitude_std" and value > 100:
        value = float("inf")  # timm: uniform in [0, magnitude]
    elif "." in text:
      raise ValueError(f"{config_str!r}: section {section!r} takes an integer")
    else:
      value = bool(int(text)) if key == "increasing" else int(text)
    fields[key] = value
  return RandAugmentConfig(**fields)


def is_rand_augment(name: str) -> bool:
  """Whether `name` is a valid timm RandAugment string."""
  try:
    parse(name)
    return True
  except ValueError:
    return False


def level_argument(name: str, level: float, negate: bool, width: int, height: int):
  """The argument timm's `LEVEL_TO_ARG[name]` gives at `level` (0-10), with the sign it draws."""
  sign = -1.0 if negate else 1.0
  f = level / LEVEL_DENOM
  if name == "Rotate":
    return sign * f * 30.0
  if name in ("ShearX", "ShearY"):
    return sign * f * 0.3
  if name == "TranslateXRel":
    return sign * f * 0.45 * width
  if name == "TranslateYRel":
    return sign * f * 0.45 * height
  if name == "Posterize":
    return int(f * 4)
  if name == "PosterizeIncreasing":
    return 4 - int(f * 4)
  if name == "Solarize":
    return min(256, int(f * 256))
  if name == "SolarizeIncreasing":
    return 256 - min(256, int(f * 256))
  if name == "SolarizeAdd":
    return min(128, int(f * 110))
  if name.endswith("Increasing"):  # an enhancement around 'no change' (1.0), at least 0.1
    return max(0.1, 1.0 + sign * f * 0.9)
  if name in _ENHANCE:
    return f * 1.8 + 0.1
  return None


def apply_op(img: Image.Image, name: str, arg, fill: tuple, resample) -> Image.Image:
  """timm's operation `name` on a PIL image with its computed argument (`level_argument`)."""
  base = name[:-len("Increasing")] if name.endswith("Increasing") else name
  if base == "AutoContrast":
    return ImageOps.autocontrast(img)
  if base == "Equalize":
    return ImageOps.equalize(img)
  if base == "Invert":
    return ImageOps.invert(img)
  if base == "Posterize":
    if arg <= 0:  # keep no bit: black. PIL >= 9 refuses 0 bits (timm then raises); older PIL gave this.
      return img.point([0] * 256 * len(img.getbands()))
    return img if arg >= 8 else ImageOps.posterize(img, arg)
  if base == "Solarize":
    return ImageOps.solarize(img, arg)
  if base == "SolarizeAdd":  # add to the pixels below 128, saturating
    table = [min(255, i + arg) if i < 128 else i for i in range(256)]
    return img.point(table * len(img.getbands())) if img.mode in ("L", "RGB") else img
  if base in _ENHANCE:
    return _ENHANCE[base](img).enhance(arg)
  if base == "Rotate":
    return img.rotate(arg, resample=resample, fillcolor=fill)
  # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f).
  matrix = {"ShearX": (1, arg, 0, 0, 1, 0), "ShearY": (1, 0, 0, arg, 1, 0),
            "TranslateXRel": (1, 0, arg, 0, 1, 0), "TranslateYRel": (1, 0, 0, 0, 1, arg)}[base]
  return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def rand_augment(image: np.ndarray, rng: np.random.Generator, config: RandAugmentConfig, *,
                 fill: Sequence[int] = (124, 116, 104), interpolation: str = "random") -> np.ndarray:
  """timm's `RandAugment` on a uint8 (H, W, C) image, C = 1 or 3.

  Args:
    config: the parsed string (`parse`).
    fill: the value of pixels moved in from outside (timm: round(255 * mean), ImageNet's
      (124, 116, 104)); one value per channel.
    interpolation: 'bilinear', 'bicubic', or 'random' (one of the two per geometric operation,
      timm's default when training).
  """
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"expected a uint8 (H, W, 1 or 3) image, got {image.dtype} {image.shape}")
  img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  fill = tuple(int(v) for v in fill)
  fill = fill[0] if img.mode == "L" else (fill * 3 if len(fill) == 1 else fill)
  ops = config.ops
  upper = config.magnitude_max or LEVEL_DENOM
  for index in rng.integers(0, len(ops), size=config.num_layers):
    name = ops[int(index)]
    if config.prob < 1.0 and rng.random() > config.prob:
      continue
    level = config.magnitude
    if config.magnitude_std == float("inf"):
      level = rng.uniform(0.0, level)
    elif config.magnitude_std > 0:
      level = rng.normal(level, config.magnitude_std)
    level = max(0.0, min(float(level), upper))
    negate = bool(rng.random() > 0.5) if name in SIGNED else False
    resample = None
    if name in GEOMETRIC:
      resample = (_RESAMPLE[interpolation] if interpolation != "random"
                  else (Image.BILINEAR, Image.BICUBIC)[int(rng.integers(0, 2))])
    arg = level_argument(name, level, negate, *img.size)
    img = apply_op(img, name, arg, fill, resample)
  out = np.asarray(img)
  return out[..., None] if out.ndim == 2 else out

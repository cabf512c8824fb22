"""Automatic augmentation on the host, as torchvision's: TrivialAugmentWide, RandAugment, AugMix, RandomErasing.

torchvision's classification reference applies these to PIL images (its default `--backend pil`), after
RandomResizedCrop and the flip, with bilinear interpolation and a zero fill; each operation here calls the
same PIL function with the same arguments (the affine matrix computed by torchvision's formula), so the
pixels are torchvision's. Images are uint8 (H, W, C) numpy arrays with C = 1 or 3.

The random draws go through a numpy `Generator` (Grain's per-example generator in training) in the order
torchvision makes them with torch's generator: `integers(n)` where torchvision calls `torch.randint(n)`,
`uniform` for `uniform_`, `random()` for `torch.rand(1)`, `dirichlet` for its Dirichlet samples. The tests
replay torch's own draws through that interface and get torchvision's images.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

INTERPOLATION = Image.BILINEAR  # The reference passes InterpolationMode.BILINEAR to every policy.


def linspace32(start: float, end: float, steps: int) -> np.ndarray:
  """torch.linspace in float32, value for value (a bin that is one ulp off can move a pixel): its CPU
  kernel fills the first half forwards from `start` and the second half backwards from `end`, each
  value a fused multiply-add of the float32 step, rounded once (float64 here, exact for these sizes)."""
  f32 = np.float32
  step = np.float64((f32(end) - f32(start)) / f32(steps - 1)) if steps > 1 else 0.0
  i = np.arange(steps)
  forward = np.float64(np.float32(start)) + step * i
  backward = np.float64(np.float32(end)) - step * (steps - 1 - i)
  return np.where(i < steps // 2, forward, backward).astype(np.float32)


def _posterize_bins(num_bins: int, top: int, span: int) -> np.ndarray:
  # torchvision: top - (arange(n) / ((n - 1) / span)).round().int(), the division in float32.
  return (top - np.round(np.arange(num_bins, dtype=np.float32) /
                         np.float32((num_bins - 1) / span))).astype(np.int64)


def _inverse_affine(center, angle: float, translate, shear) -> list[float]:
  """torchvision's `_get_inverse_affine_matrix` at scale 1: output pixel -> input pixel, for PIL."""
  rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
  cx, cy = center
  tx, ty = translate
  a = math.cos(rot - sy) / math.cos(sy)
  b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
  c = math.sin(rot - sy) / math.cos(sy)
  d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
  m = [d, -b, 0.0, -c, a, 0.0]
  m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
  m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
  m[2] += cx
  m[5] += cy
  return m


def _affine(img: Image.Image, fill, *, center=None, translate=(0, 0), shear=(0.0, 0.0)) -> Image.Image:
  if center is None:  # torchvision's PIL path: the centre without the half-pixel offset.
    center = (img.size[0] * 0.5, img.size[1] * 0.5)
  matrix = _inverse_affine(center, 0.0, translate, shear)
  return img.transform(img.size, Image.AFFINE, matrix, INTERPOLATION, fillcolor=fill)


# name -> fn(PIL image, signed magnitude, fill). Shears: torchvision passes the angle atan(magnitude).
OPS: dict[str, Callable] = {
    "Identity": lambda img, m, fill: img,
    "ShearX": lambda img, m, fill: _affine(img, fill, center=(0, 0),
                                           shear=(math.degrees(math.atan(m)), 0.0)),
    "ShearY": lambda img, m, fill: _affine(img, fill, center=(0, 0),
                                           shear=(0.0, math.degrees(math.atan(m)))),
    "TranslateX": lambda img, m, fill: _affine(img, fill, translate=(int(m), 0)),
    "TranslateY": lambda img, m, fill: _affine(img, fill, translate=(0, int(m))),
    "Rotate": lambda img, m, fill: img.rotate(m, INTERPOLATION, False, None, fillcolor=fill),
    "Brightness": lambda img, m, fill: ImageEnhance.Brightness(img).enhance(1.0 + m),
    "Color": lambda img, m, fill: ImageEnhance.Color(img).enhance(1.0 + m),
    "Contrast": lambda img, m, fill: ImageEnhance.Contrast(img).enhance(1.0 + m),
    "Sharpness": lambda img, m, fill: ImageEnhance.Sharpness(img).enhance(1.0 + m),
    "Posterize": lambda img, m, fill: ImageOps.posterize(img, int(m)),
    "Solarize": lambda img, m, fill: ImageOps.solarize(img, m),
    "AutoContrast": lambda img, m, fill: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, fill: ImageOps.equalize(img),
}


def _to_pil(image: np.ndarray) -> Image.Image:
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"expected a uint8 (H, W, 1 or 3) image, got {image.dtype} {image.shape}")
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(img: Image.Image) -> np.ndarray:
  out = np.asarray(img)
  return out[..., None] if out.ndim == 2 else out


def apply_op(image: np.ndarray, name: str, magnitude: float, fill: int = 0) -> np.ndarray:
  """One operation at a signed magnitude, as torchvision's `_apply_op` on a PIL image."""
  img = _to_pil(image)
  fill = fill if img.mode == "L" else (fill,) * 3
  return _from_pil(OPS[name](img, magnitude, fill))


# The augmentation spaces: name -> (magnitude bins, or None for an operation without one; signed).
def trivial_augment_space(num_bins: int = 31) -> dict:
  wide = lambda top: linspace32(0.0, top, num_bins)
  return {"Identity": (None, False), "ShearX": (wide(0.99), True), "ShearY": (wide(0.99), True),
          "TranslateX": (wide(32.0), True), "TranslateY": (wide(32.0), True),
          "Rotate": (wide(135.0), True), "Brightness": (wide(0.99), True),
          "Color": (wide(0.99), True), "Contrast": (wide(0.99), True),
          "Sharpness": (wide(0.99), True), "Posterize": (_posterize_bins(num_bins, 8, 6), False),
          "Solarize": (linspace32(255.0, 0.0, num_bins), False),
          "AutoContrast": (None, False), "Equalize": (None, False)}


def rand_augment_space(num_bins: int, height: int, width: int) -> dict:
  bins = lambda top: linspace32(0.0, top, num_bins)
  return {"Identity": (None, False), "ShearX": (bins(0.3), True), "ShearY": (bins(0.3), True),
          "TranslateX": (bins(150.0 / 331.0 * width), True),
          "TranslateY": (bins(150.0 / 331.0 * height), True),
          "Rotate": (bins(30.0), True), "Brightness": (bins(0.9), True), "Color": (bins(0.9), True),
          "Contrast": (bins(0.9), True), "Sharpness": (bins(0.9), True),
          "Posterize": (_posterize_bins(num_bins, 8, 4), False),
          "Solarize": (linspace32(255.0, 0.0, num_bins), False),
          "AutoContrast": (None, False), "Equalize": (None, False)}


def augmix_space(num_bins: int, height: int, width: int, all_ops: bool = True) -> dict:
  bins = lambda top: linspace32(0.0, top, num_bins)
  space = {"ShearX": (bins(0.3), True), "ShearY": (bins(0.3), True),
           "TranslateX": (bins(width / 3.0), True), "TranslateY": (bins(height / 3.0), True),
           "Rotate": (bins(30.0), True), "Posterize": (_posterize_bins(num_bins, 4, 4), False),
           "Solarize": (linspace32(255.0, 0.0, num_bins), False),
           "AutoContrast": (None, False), "Equalize": (None, False)}
  if all_ops:
    space.update({"Brightness": (bins(0.9), True), "Color": (bins(0.9), True),
                  "Contrast": (bins(0.9), True), "Sharpness": (bins(0.9), True)})
  return space


def _draw_op(space: dict, rng, bin_index: Optional[int] = None, num_bins: Optional[int] = None):
  """(name, signed magnitude): the op uniformly, then the bin (fixed, or uniform below `num_bins`),
  then the sign, in torchvision's order; ops without bins draw neither bin nor sign."""
  name = list(space)[int(rng.integers(len(space)))]
  bins, signed = space[name]
  if bins is None:
    return name, 0.0
  index = bin_index if bin_index is not None else int(rng.integers(num_bins or len(bins)))
  magnitude = float(bins[index])
  if signed and rng.integers(2):
    magnitude = -magnitude
  return name, magnitude


def trivial_augment_wide(image: np.ndarray, rng, num_bins: int = 31) -> np.ndarray:
  """TrivialAugmentWide: one operation, uniformly, at a uniformly drawn magnitude bin."""
  return apply_op(image, *_draw_op(trivial_augment_space(num_bins), rng))


def rand_augment(image: np.ndarray, rng, num_ops: int = 2, magnitude: int = 9,
                 num_bins: int = 31) -> np.ndarray:
  """RandAugment: `num_ops` operations drawn uniformly, each at bin `magnitude`."""
  space = rand_augment_space(num_bins, *image.shape[:2])
  for _ in range(num_ops):
    image = apply_op(image, *_draw_op(space, rng, bin_index=magnitude))
  return image


def augmix(image: np.ndarray, rng, severity: int = 3, mixture_width: int = 3, chain_depth: int = -1,
           alpha: float = 1.0, all_ops: bool = True) -> np.ndarray:
  """AugMix: `mixture_width` chains of 1-3 operations at bins below `severity`, mixed with the image.

  The mixture is computed as torchvision's, in float32 and truncated to uint8. torchvision runs the
  chains' operations on uint8 tensors (its tensor kernels) where the rest of its PIL pipeline uses PIL;
  here they are the PIL operations, so geometric and colour operations differ from its AugMix by the
  difference between torchvision's two backends, not by the policy: measured on the test photographs
  with the same draws, about 1% of pixels differ by more than one level (up to ~30 at the edges of
  rotated or sheared content, where the two bilinear samplers treat borders differently).
  """
  if not 1 <= severity <= 10:
    raise ValueError(f"AugMix severity must be in [1, 10], got {severity}")
  space = augmix_space(10, *image.shape[:2], all_ops=all_ops)
  m = np.asarray(rng.dirichlet([alpha, alpha]), np.float32)
  weights = np.asarray(rng.dirichlet([alpha] * mixture_width), np.float32) * m[1]
  mix = m[0] * image.astype(np.float32)
  for i in range(mixture_width):
    aug = image
    depth = chain_depth if chain_depth > 0 else int(rng.integers(1, 4))
    for _ in range(depth):
      aug = apply_op(aug, *_draw_op(space, rng, num_bins=severity))
    mix += weights[i] * aug.astype(np.float32)
  return mix.astype(np.uint8)  # Truncation, as torch's float -> uint8 cast.


def random_erasing(image: np.ndarray, rng, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3),
                   value: Sequence[float] = (0.0,)) -> np.ndarray:
  """torchvision's RandomErasing on an (H, W, C) image: with probability `p`, a box of area in
  `scale` (fraction of the image) and log-uniform aspect `ratio` set to `value` (per channel, or one
  for all), 10 tries; unchanged when no box fits. Integer images get `value` rounded."""
  if rng.random() >= p:
    return image
  img_h, img_w = image.shape[:2]
  log_ratio = np.log(np.asarray(ratio, np.float32))  # torch.log of a float32 tensor.
  for _ in range(10):
    erase_area = img_h * img_w * float(rng.uniform(scale[0], scale[1]))
    aspect = float(np.exp(np.float32(rng.uniform(log_ratio[0], log_ratio[1]))))
    h = int(round(math.sqrt(erase_area * aspect)))
    w = int(round(math.sqrt(erase_area / aspect)))
    if not (h < img_h and w < img_w):
      continue
    i = int(rng.integers(0, img_h - h + 1))
    j = int(rng.integers(0, img_w - w + 1))
    fill = np.broadcast_to(np.asarray(value, np.float64), (image.shape[-1],))
    if np.issubdtype(image.dtype, np.integer):
      fill = np.round(fill)
    out = image.copy()
    out[i:i + h, j:j + w] = fill.astype(image.dtype)
    return out
  return image


POLICIES = ("", "ta_wide", "rand_augment", "augmix")  # config.auto_augment's choices ('': none).


def train_policy(auto_augment: str, *, ra_magnitude: int = 9, augmix_severity: int = 3,
                 random_erase: float = 0.0, erase_value: Sequence[float] = (0.0,)
                 ) -> Optional[Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
  """What torchvision's ClassificationPresetTrain adds after crop and flip: the policy named
  `auto_augment` ('' for none, 'ta_wide', 'rand_augment', 'augmix', or timm's RandAugment string
  such as 'rand-m7-mstd0.5-inc1': `timm_augment`) then RandomErasing with probability
  `random_erase`. None when neither is on (today's pipeline, unchanged).

  torchvision erases after Normalize with value 0, i.e. the mean; pass `erase_value` = the mean on
  the 0-255 scale (uint8 images round it: at most half a level, 0.5/std after normalisation).
  """
  policies = {"": None, "ta_wide": trivial_augment_wide,
              "rand_augment": lambda image, rng: rand_augment(image, rng, magnitude=ra_magnitude),
              "augmix": lambda image, rng: augmix(image, rng, severity=augmix_severity)}
  assert tuple(policies) == POLICIES
  from resnet_jax.data import timm_augment
  if auto_augment.startswith("rand-"):  # timm's RandAugment string, e.g. 'rand-m7-mstd0.5-inc1'
    config = timm_augment.parse(auto_augment)
    # timm fills with round(255 * mean): the mean, which `erase_value` holds on the 0-255 scale.
    fill = tuple(min(255, int(round(v))) for v in erase_value)
    policies[auto_augment] = functools.partial(timm_augment.rand_augment, config=config, fill=fill)
  if auto_augment not in policies:
    raise ValueError(f"unknown auto_augment {auto_augment!r}; expected one of {POLICIES} or a timm "
                     "RandAugment string such as 'rand-m7-mstd0.5-inc1'")
  policy = policies[auto_augment]
  if policy is None and not random_erase:
    return None

  def apply(image: np.ndarray, rng) -> np.ndarray:
    if policy is not None:
      image = policy(image, rng)
    if random_erase:
      image = random_erasing(image, rng, p=random_erase, value=erase_value)
    return image
  return apply

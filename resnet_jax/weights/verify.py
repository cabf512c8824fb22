"""Verification of converted weights: torchvision's model (timm's for timm's own names) as the reference,
and how closely Flax follows it.

`resnet-jax verify` (CPU) and benchmarks/verify_gpu.py (accelerators) both run these.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Optional

import numpy as np

# scikit-image's sample photos that verification runs through both models.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# Default tolerances per compute dtype: (max relative error, min top-1 agreement).
# float32 with matmul precision "highest" agrees to ~1e-6 on CPU; bfloat16 (8 bits of mantissa) to
# ~1e-2 on resnet18/50, and may swap near-tied classes.
TOLERANCES = {"float32": (1e-4, 1.0), "bfloat16": (5e-2, 0.75)}


@dataclasses.dataclass(frozen=True)
class Agreement:
  """How closely a batch of logits follows a reference batch.

  Attributes:
    max_abs: largest absolute difference.
    rel: `max_abs` over the largest reference magnitude. Element-wise relative error is not used:
      it is unbounded for logits near zero, which every batch has.
    top1: fraction of samples with the same arg max.
    top5: fraction of samples with the same set of five highest classes.
  """
  max_abs: float
  rel: float
  top1: float
  top5: float

  def __str__(self):
    return (f"max abs {self.max_abs:.3g}  rel {self.rel:.3g}  top-1 {self.top1:.1%}  "
            f"top-5 {self.top5:.1%}")


def compare_logits(logits: Any, reference: Any) -> Agreement:
  """Compares `logits` (batch, classes) with `reference`, e.g. Flax's with torchvision's."""
  a = np.asarray(logits, np.float64)
  b = np.asarray(reference, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"logits of shape {a.shape} and {b.shape} cannot be compared")
  max_abs = float(np.max(np.abs(a - b)))
  k = min(5, a.shape[-1])
  top_a = np.sort(np.argsort(-a, axis=-1)[:, :k], axis=-1)
  top_b = np.sort(np.argsort(-b, axis=-1)[:, :k], axis=-1)
  return Agreement(
      max_abs=max_abs,
      rel=max_abs / max(float(np.max(np.abs(b))), np.finfo(np.float32).tiny),
      top1=float(np.mean(a.argmax(-1) == b.argmax(-1))),
      top5=float(np.mean(np.all(top_a == top_b, axis=-1))))


def torchvision_model(arch: str, seed: Optional[int] = None, **kwargs):
  """torchvision's `arch` (random weights, eval mode), optionally with randomised BatchNorm.

  Args:
    arch: one of `TORCHVISION_ARCHS`.
    seed: when given, the weights are drawn from this seed and every BatchNorm gets a random weight,
      bias, running mean and running variance, so that a conversion test exercises all four (a fresh
      model has 1, 0, 0, 1, which would hide a swapped or dropped statistic). Weights zeroed by
      `zero_init_residual` stay zero.
    **kwargs: torchvision's options: num_classes, zero_init_residual, replace_stride_with_dilation.
  """
  from resnet_jax._torchvision import import_torchvision
  from resnet_jax.weights.convert import TORCHVISION_ARCHS
  torchvision = import_torchvision()
  import torch
  if arch not in TORCHVISION_ARCHS:
    raise ValueError(f"torchvision has no {arch!r}; it has {', '.join(TORCHVISION_ARCHS)}")
  if seed is None:
    return torchvision.models.get_model(arch, weights=None, **kwargs).eval()
  with torch.random.fork_rng(devices=[]):  # leave the caller's global torch RNG alone
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    with torch.no_grad():
      for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          if torch.any(m.weight):  # keep zero_init_residual's zeros
            m.weight.uniform_(0.5, 1.5)
          m.bias.normal_(0.0, 0.2)
          m.running_mean.normal_(0.0, 0.2)
          m.running_var.uniform_(0.5, 2.0)
  return model.eval()


def timm_model(arch: str, num_classes: Optional[int] = 1000):
  """timm's `arch` (random weights, eval mode; None classes: headless), the reference for the
  names only timm has (`convert_timm.TIMM_ONLY`). timm is imported after torchvision's operator
  schemas are in place (`import_torchvision`), which its import needs beside a CPU torch."""
  from resnet_jax._torchvision import import_torchvision
  import_torchvision()
  try:
    import timm
  except ImportError as error:
    raise ImportError(f"verify compares {arch} with timm's model, and timm is not installed "
                      "(pip install timm)") from error
  return timm.create_model(arch, pretrained=False, num_classes=num_classes or 0).eval()


def reference_name(arch: str) -> str:
  """Whose model `arch` is checked against: 'timm' for timm's own names, else 'torchvision'."""
  from resnet_jax.weights.convert_timm import TIMM_ONLY
  return "timm" if arch in TIMM_ONLY else "torchvision"


def run_torchvision(model, images: Any, train: bool = False) -> np.ndarray:
  """torchvision `model`'s outputs on NHWC `images`, in eval mode unless `train`.

  The images are cast to the model's dtype and device; the outputs come back as float32 numpy
  (float64 for a float64 model). In train mode the model's running statistics are updated, as torch
  does.
  """
  import torch
  parameter = next(model.parameters())
  x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))
  x = x.to(device=parameter.device, dtype=parameter.dtype)
  model.train(train)
  try:
    with torch.no_grad():
      out = model(x)
  finally:
    model.eval()
  return (out if out.dtype == torch.float64 else out.float()).cpu().numpy()


def inputs(transform: Callable, *, seed: int, batch: int, size: int, photos: bool = True
           ) -> dict[str, np.ndarray]:
  """{'random': (batch, size, size, 3) normal noise, 'photos': `PHOTOS` through `transform`}.

  The photos need scikit-image; without it they are left out, with a line on stderr.
  """
  batches = {"random": np.random.default_rng(seed).standard_normal(
      (batch, size, size, 3)).astype(np.float32)}
  if not photos:
    return batches
  try:
    import skimage.data
  except ImportError:
    print("scikit-image is not installed: skipping the photos (pip install scikit-image)",
          file=sys.stderr)
    return batches
  batches["photos"] = transform([getattr(skimage.data, name)() for name in PHOTOS])
  return batches


def passes(agreement: Agreement, dtype: str, rtol: Optional[float] = None,
           min_top1: Optional[float] = None) -> bool:
  """Whether `agreement` is within `TOLERANCES[dtype]`, or the given `rtol` and `min_top1`."""
  default_rtol, default_top1 = TOLERANCES[dtype]
  return (agreement.rel <= (default_rtol if rtol is None else rtol)
          and agreement.top1 >= (default_top1 if min_top1 is None else min_top1))

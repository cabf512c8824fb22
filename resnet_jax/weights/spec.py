"""ModelSpec: the one description of a saved model that every writer and reader of a model shares.

Training, `resnet-jax convert` and `save_variables` write it; `predict`, `export`, `evaluate`,
`init_from` and `pretrained()` read it. It says what the variables are (architecture, overrides,
classes, input channels) and how the model must be fed (input size, resize before the center
crop, normalisation), so that every command feeds a model the preprocessing it was trained or
published with, and says where the weights came from. Files carry a format name and a version;
anything else is refused with a message that names the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional

from resnet_jax.data.image_ops import IMAGENET_MEAN_255, IMAGENET_STD_255

FORMAT = "resnet_jax.ModelSpec"
VERSION = 1
SPEC_KEY = "spec"  # The key of the spec in a training checkpoint's meta.


class SpecError(ValueError):
  """A model description that is missing, foreign, of another version, or inconsistent."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What a model is and how it must be fed.

  Attributes:
    arch: a registered architecture name (`resnet_jax.list_models()`).
    num_classes: classifier outputs; None for a headless model (pooled features).
    in_channels: channels of the input images (1 for grey-scale digits, 3 for RGB).
    model_overrides: other `ResNet` fields the model was built with (JSON values), e.g.
      {'stage_sizes': [1, 1, 1]}; never 'num_classes', 'in_channels' or 'dtype'.
    image_size: side of the square input (the center crop at evaluation).
    resize_size: shorter side before the center crop (256 for torchvision's V1 weights, 232 for V2;
      floor(image_size / crop_pct) for timm's); equal to `image_size` for a model fed whole images.
    interpolation: the resize's filter, 'bilinear' (torchvision's) or 'bicubic' (most of timm's
      weights), both PIL's as torchvision's and timm's PIL paths use them.
    mean_255, std_255: per-channel normalisation on the 0-255 pixel scale, one value per input
      channel; `std_255` None for the paper's mean subtraction only.
    class_names: one name per class, or () when unknown (then 'class i').
    source: where the weights came from, e.g. {'kind': 'torchvision', 'weights': 'IMAGENET1K_V2',
      'sha256': ...} or {'kind': 'training', 'workdir': ..., 'step': 1000}. Informational.
  """
  arch: str
  num_classes: Optional[int]
  in_channels: int = 3
  model_overrides: dict = dataclasses.field(default_factory=dict)
  image_size: int = 224
  resize_size: int = 256
  interpolation: str = "bilinear"
  mean_255: tuple = IMAGENET_MEAN_255
  std_255: Optional[tuple] = IMAGENET_STD_255
  class_names: tuple = ()
  source: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    # Normalise containers so equal specs compare equal after a JSON round trip.
    object.__setattr__(self, "mean_255", tuple(float(m) for m in self.mean_255))
    if self.std_255 is not None:
      object.__setattr__(self, "std_255", tuple(float(s) for s in self.std_255))
    object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
    object.__setattr__(self, "model_overrides", json.loads(json.dumps(dict(self.model_overrides))))
    object.__setattr__(self, "source", json.loads(json.dumps(dict(self.source))))
    self.validate()

  def validate(self) -> None:
    """Raises SpecError naming the first field that cannot describe a usable model."""
    from resnet_jax import models  # Imported here: the spec is read before JAX is needed.
    if self.arch not in models.list_models():
      raise SpecError(f"arch {self.arch!r} is not a registered architecture")
    if self.num_classes is not None and (not isinstance(self.num_classes, int) or self.num_classes < 1):
      raise SpecError(f"num_classes must be a positive integer or None, got {self.num_classes!r}")
    if not isinstance(self.in_channels, int) or self.in_channels < 1:
      raise SpecError(f"in_channels must be a positive integer, got {self.in_channels!r}")
    reserved = {"num_classes", "in_channels", "dtype", "param_dtype", "axis_name"} & set(self.model_overrides)
    if reserved:
      raise SpecError(f"model_overrides may not set {sorted(reserved)}: they are spec fields or "
                      "chosen at run time")
    fields = {f.name for f in dataclasses.fields(models.ResNet)} - {"parent", "name"}
    unknown = set(self.model_overrides) - fields
    if unknown:
      raise SpecError(f"model_overrides has unknown ResNet fields {sorted(unknown)}")
    for key in ("image_size", "resize_size"):
      value = getattr(self, key)
      if not isinstance(value, int) or value < 1:
        raise SpecError(f"{key} must be a positive integer, got {value!r}")
    from resnet_jax.data.image_ops import INTERPOLATIONS
    if self.interpolation not in INTERPOLATIONS:
      raise SpecError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got "
                      f"{self.interpolation!r}")
    if self.resize_size < self.image_size:
      raise SpecError(f"resize_size {self.resize_size} is smaller than image_size {self.image_size}")
    for key in ("mean_255", "std_255"):
      values = getattr(self, key)
      if values is None:
        continue
      if len(values) != self.in_channels:
        raise SpecError(f"{key} has {len(values)} values for {self.in_channels} input channel(s)")
      if not all(math.isfinite(v) for v in values):
        raise SpecError(f"{key} holds a non-finite value: {values}")
    if self.std_255 is not None and any(s <= 0 for s in self.std_255):
      raise SpecError(f"std_255 must be positive, got {self.std_255}")
    if self.class_names and self.num_classes is not None and len(self.class_names) != self.num_classes:
      raise SpecError(f"{len(self.class_names)} class names for {self.num_classes} classes")

  def build(self, **kwargs: Any):
    """The Flax model this spec describes; `kwargs` set run-time fields (dtype, axis_name)."""
    from resnet_jax import models
    return models.get_model(self.arch, num_classes=self.num_classes, in_channels=self.in_channels,
                            **self.model_overrides, **kwargs)

  def mean_std(self, scale: float = 255.0) -> tuple[tuple, Optional[tuple]]:
    """(mean, std) for pixels whose white is `scale` (255 for uint8, 1 for [0, 1] floats)."""
    factor = scale / 255.0
    return (tuple(m * factor for m in self.mean_255),
            None if self.std_255 is None else tuple(s * factor for s in self.std_255))

  def class_name(self, index: int) -> str:
    return self.class_names[index] if self.class_names else f"class {index}"

  def differences(self, other: "ModelSpec") -> list[str]:
    """'field: ours -> theirs' for every field that changes the variables or their input; the
    class names and the source are ignored. Empty when `other` describes the same model."""
    keys = ("arch", "num_classes", "in_channels", "model_overrides", "image_size", "interpolation",
            "mean_255", "std_255")
    return [f"{k}: {getattr(self, k)!r} -> {getattr(other, k)!r}" for k in keys
            if getattr(self, k) != getattr(other, k)]

  def transform(self):
    """The inference preprocessing this model was trained or published with (resize, center crop,
    normalisation, channels), as a `transforms.ImageClassification`."""
    from resnet_jax.data import transforms
    mean, std = self.mean_std(scale=1.0)
    return transforms.ImageClassification(crop_size=self.image_size, resize_size=self.resize_size,
                                          mean=mean, std=std, channels=self.in_channels,
                                          interpolation=self.interpolation)

  @classmethod
  def for_torchvision(cls, arch: str, num_classes: Optional[int], resize_size: int,
                      source: dict) -> "ModelSpec":
    """torchvision's published ImageNet preprocessing: resize `resize_size` (256 for V1 weights, 232
    for V2), crop 224, ImageNet's mean and std; ImageNet's class names for a 1000-class head."""
    from resnet_jax.data import transforms
    names = transforms.imagenet_classes() if num_classes == 1000 else ()
    return cls(arch=arch, num_classes=num_classes, resize_size=resize_size, class_names=names,
               source=source)

  def replace(self, **changes: Any) -> "ModelSpec":
    return dataclasses.replace(self, **changes)

  def to_json(self) -> dict:
    """A JSON-ready dict with the format name and version."""
    out = {"format": FORMAT, "version": VERSION}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      out[f.name] = list(value) if isinstance(value, tuple) else value
    return out

  @classmethod
  def from_json(cls, data: Any, where: str = "the model description") -> "ModelSpec":
    """Reads what `to_json` wrote; SpecError naming `where` for a foreign, newer or broken one."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
      raise SpecError(f"{where} is not a resnet_jax model description (no format {FORMAT!r}); "
                      "it was written by another program or an older resnet_jax")
    if data.get("version") != VERSION:
      raise SpecError(f"{where} has ModelSpec version {data.get('version')!r}; this resnet_jax "
                      f"reads version {VERSION}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names - {"format", "version"}
    if unknown:
      raise SpecError(f"{where} has unknown fields {sorted(unknown)}")
    missing = {"arch", "num_classes"} - set(data)
    if missing:
      raise SpecError(f"{where} lacks {sorted(missing)}")
    fields = {k: v for k, v in data.items() if k in names}
    try:
      return cls(**fields)
    except SpecError as e:
      raise SpecError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
      raise SpecError(f"{where} holds an invalid value: {e}") from None


def _from_legacy_conversion(data: dict, where: str) -> ModelSpec:
  """What `resnet-jax convert` wrote before ModelSpec: every field is recorded (arch, classes, resize,
  crop) or is torchvision's published fact (RGB, ImageNet's mean, std and class names), so the
  translation is exact. Nothing else written without a spec is translated."""
  if data.get("crop_size") != 224:
    raise SpecError(f"{where} records crop {data.get('crop_size')!r}; torchvision's weights use 224")
  source = {"kind": "torchvision", "weights": data.get("weights"), "file": data.get("source"),
            "head": data.get("head")}
  spec = ModelSpec.for_torchvision(data["arch"], data.get("num_classes"), data["resize_size"], source)
  if data.get("head") != "converted":  # A new head: ImageNet's names do not apply.
    spec = spec.replace(class_names=())
  return spec


_LEGACY_CONVERSION = {"arch", "num_classes", "source", "weights", "head", "resize_size", "crop_size"}


def from_file_data(data: Any, where: str) -> ModelSpec:
  """The spec in a model.json's parsed content, translating what `convert` wrote before ModelSpec."""
  if isinstance(data, dict) and "format" not in data and set(data) == _LEGACY_CONVERSION:
    try:
      return _from_legacy_conversion(data, where)
    except (TypeError, ValueError, KeyError) as e:
      raise SpecError(f"{where} is an older resnet_jax conversion that cannot be read ({e}); "
                      "convert the weights again with `resnet-jax convert`") from None
  if isinstance(data, dict) and "format" not in data and "arch" in data:
    raise SpecError(f"{where} was written by an older resnet_jax without a model description; "
                    "convert the weights again with `resnet-jax convert`")
  return ModelSpec.from_json(data, where)


def from_training_meta(meta: dict, where: str) -> ModelSpec:
  """The spec recorded in a training checkpoint's meta, with the checkpoint's step in its source.

  Checkpoints written before ModelSpec recorded neither the resize nor the class names (the crop
  fraction was not saved), so they are refused rather than guessed. Training resumes them (the
  trainer compares their fields with its config), and every checkpoint it saves records a spec.
  """
  if SPEC_KEY not in meta:
    raise SpecError(f"{where} was written by an older resnet_jax that did not record the model "
                    "description; train again, or resume an unfinished run with this version "
                    "(its next checkpoint records it)")
  spec = ModelSpec.from_json(meta[SPEC_KEY], where)
  if "step" in meta:
    spec = spec.replace(source=dict(spec.source, step=int(meta["step"])))
  return spec


def write(path: str, spec: ModelSpec) -> None:
  """Writes `spec` as JSON to `path` atomically (a temporary file renamed into place)."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(spec.to_json(), f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read(path: str) -> ModelSpec:
  """The spec in the JSON file `path`; SpecError naming the file when it is missing or unreadable."""
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise SpecError(f"no model description at {path}") from None
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SpecError(f"{path} is not a readable model description: {e}") from None
  return from_file_data(data, where=path)


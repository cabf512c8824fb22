"""timm's pretrained weights by name ('resnet50.a1_in1k') from the Hugging Face Hub, with their preprocessing.

timm publishes each weight as a Hub repository `timm/<architecture>.<tag>` holding `model.safetensors`
(older ones `pytorch_model.bin`) and a `config.json` whose `pretrained_cfg` says how the model was
trained to be fed: input size, crop fraction, interpolation, mean and std. The files are fetched with
`huggingface_hub` (its cache, `HF_HUB_OFFLINE`, pinned revisions) and the `pretrained_cfg` becomes the
model's `ModelSpec`, as timm's own `resolve_data_config` + `create_transform` would build its eval
transform: resize the shorter side to floor(input / crop_pct) with timm's interpolation, center crop.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Optional

from resnet_jax.weights import convert
from resnet_jax.weights.spec import ModelSpec

ORG = "timm"
_SAFETENSORS, _PICKLE = "model.safetensors", "pytorch_model.bin"
# 'timm/resnet50d.ra2_in1k', 'hf-hub:timm/resnet50.a1_in1k@<revision>', 'resnet50.a1_in1k'.
_NAME = re.compile(r"^(?:hf[-_]hub:)?(?:(?P<org>timm)/)?(?P<arch>[a-z][a-z0-9_]*)"
                   r"(?:\.(?P<tag>[a-z0-9_]+))(?:@(?P<revision>[\w.\-/]+))?$")
INTERPOLATIONS = ("bilinear", "bicubic")


class HubError(OSError):
  """timm's weights could not be fetched (offline and not cached, no such repository or revision)."""


def is_timm_name(weights: str) -> bool:
  """Whether `weights` names timm weights ('resnet50.a1_in1k', 'timm/resnet50d.ra2_in1k', ...)
  rather than a file, a URL or torchvision's weights ('IMAGENET1K_V2', 'ResNet50_Weights.X')."""
  return (isinstance(weights, str) and not os.path.exists(weights) and "://" not in weights
          and not weights.endswith((".pth", ".pt", ".safetensors", ".bin"))
          and _NAME.match(weights) is not None)


def parse(name: str, revision: Optional[str] = None) -> tuple[str, Optional[str]]:
  """(Hub repository id, revision) of a timm name; '@revision' in the name and `revision` must agree.

  Raises:
    ValueError: not a timm name, or two different revisions.
  """
  match = _NAME.match(name)
  if match is None:
    raise ValueError(f"{name!r} is not a timm weights name such as 'resnet50.a1_in1k' or "
                     "'timm/resnet50d.ra2_in1k'")
  pinned = match.group("revision")
  if pinned and revision and pinned != revision:
    raise ValueError(f"{name!r} pins revision {pinned!r} but --revision is {revision!r}")
  return f"{ORG}/{match.group('arch')}.{match.group('tag')}", pinned or revision


def download(repo_id: str, revision: Optional[str] = None) -> tuple[str, str]:
  """(weights file, config.json) of a timm repository, from the Hub cache or downloaded into it.

  `model.safetensors` is preferred; `pytorch_model.bin` (loaded with `weights_only`) is the fallback.

  Raises:
    HubError: one line: not cached while offline, no such repository, revision or file.
  """
  try:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
  except ImportError as e:
    raise ImportError(f"timm's weights by name need huggingface_hub: pip install huggingface_hub "
                      f"({e})") from e
  at = f"{repo_id}@{revision}" if revision else repo_id

  def get(filename):
    return hf_hub_download(repo_id, filename, revision=revision)

  try:
    config = get("config.json")
    try:
      weights = get(_SAFETENSORS)
    except (EntryNotFoundError, LocalEntryNotFoundError):
      weights = get(_PICKLE)
  except LocalEntryNotFoundError as e:
    raise HubError(f"{at} is not in the Hugging Face cache and cannot be downloaded (offline, "
                   f"HF_HUB_OFFLINE set, or no network): {str(e).splitlines()[0]}") from None
  except RevisionNotFoundError:
    raise HubError(f"{repo_id} has no revision {revision!r}") from None
  except RepositoryNotFoundError:
    raise HubError(f"no Hugging Face repository {repo_id} (timm names its weights "
                   "'<architecture>.<tag>', e.g. resnet50.a1_in1k)") from None
  except EntryNotFoundError:
    raise HubError(f"{at} has neither {_SAFETENSORS} nor {_PICKLE}") from None
  return weights, config


def read_config(path: str) -> dict:
  """timm's `config.json` as a dict; ValueError naming the file when it is not timm's."""
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not a readable config.json: {e}") from None
  if not isinstance(data, dict) or not isinstance(data.get("pretrained_cfg"), dict) \
      or "architecture" not in data:
    raise ValueError(f"{path} is not timm's config.json (no 'architecture' and 'pretrained_cfg')")
  return data


def scale_255(values) -> tuple:
  """[0, 1] statistics on the 0-255 scale, rounded as `image_ops.IMAGENET_MEAN_255` is, so that
  ImageNet's values compare equal to the constants (init_from warns about a different mean)."""
  return tuple(round(float(v) * 255.0, 6) for v in values)


def spec_of(config: dict, num_classes: Optional[int], source: dict, where: str) -> ModelSpec:
  """The ModelSpec of timm weights from their config.json: the eval preprocessing timm's
  `resolve_data_config` gives (input_size, crop_pct, interpolation, mean, std), and the class names.

  Raises:
    ValueError: one line naming `where` and the key, for a preprocessing we cannot reproduce.
  """
  cfg = config["pretrained_cfg"]
  channels, height, width = cfg.get("input_size", (3, 224, 224))
  if height != width:
    raise ValueError(f"{where}: input_size {cfg['input_size']} is not square")
  crop_pct = float(cfg.get("crop_pct", 0.875))  # timm's DEFAULT_CROP_PCT
  crop_mode = cfg.get("crop_mode", "center")
  if crop_mode != "center":
    raise ValueError(f"{where}: crop_mode {crop_mode!r} is not supported (only 'center')")
  interpolation = cfg.get("interpolation", "bilinear")
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"{where}: interpolation {interpolation!r} is not supported (one of "
                     f"{', '.join(INTERPOLATIONS)})")
  mean = cfg.get("mean", (0.485, 0.456, 0.406))
  std = cfg.get("std", (0.229, 0.224, 0.225))
  names = config.get("label_names") or cfg.get("label_names") or ()
  if not names and num_classes == 1000:
    from resnet_jax.data import transforms
    names = transforms.imagenet_classes()  # timm's in1k heads use torchvision's class order
  if names and len(names) != num_classes:
    names = ()
  # timm: scale_size = floor(img_size / crop_pct), the shorter side resized to it.
  return ModelSpec(arch=config["architecture"], num_classes=num_classes, in_channels=int(channels),
                   image_size=int(height), resize_size=int(math.floor(height / crop_pct)),
                   interpolation=interpolation,
                   mean_255=scale_255(mean), std_255=scale_255(std),
                   class_names=tuple(names), source=source)


def load(name: str, revision: Optional[str] = None, *, arch: Optional[str] = None,
         allow_nonfinite: bool = False) -> tuple[dict, ModelSpec]:
  """(Flax variables, ModelSpec) of timm's weights `name`, e.g. 'resnet50.a1_in1k'.

  Args:
    name: timm's name, optionally 'timm/'-prefixed and '@revision'-pinned.
    revision: a branch, tag or commit of the Hub repository (default: main).
    arch: when given, must be the weights' architecture.
    allow_nonfinite: convert weights holding NaN or infinity instead of refusing them.

  Raises:
    HubError: the files cannot be fetched. ValueError: the weights are not for a model here.
  """
  from resnet_jax import models
  from resnet_jax.weights import hub
  repo_id, revision = parse(name, revision)
  weights_path, config_path = download(repo_id, revision)
  config = read_config(config_path)
  architecture = config["architecture"]
  if arch is not None and arch != architecture:
    raise ValueError(f"{repo_id} holds a {architecture}, not a {arch}")
  if architecture not in models.list_models():
    raise ValueError(f"{repo_id}: timm's architecture {architecture!r} is not a model of this "
                     "resnet_jax (resnet_jax.list_models())")
  variables = convert.from_torchvision(weights_path, architecture, allow_nonfinite=allow_nonfinite)
  # The snapshot directory is named by the commit: the exact revision the files came from.
  commit = os.path.basename(os.path.dirname(weights_path))
  source = {"kind": "timm", "weights": repo_id, "revision": revision or "main", "commit": commit,
            "file": weights_path, "sha256": hub.sha256(weights_path)}
  spec = spec_of(config, convert.variables_classes(variables), source, where=config_path)
  return variables, spec

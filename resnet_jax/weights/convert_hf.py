"""transformers' ResNet layout (`ResNetForImageClassification`, `ResNetModel`) <-> torchvision's keys.

transformers' ResNet (the `microsoft/resnet-*` files) is torchvision's ResNet v1.5 under other names:

  resnet.embedder.embedder.{convolution,normalization}          conv1, bn1
  resnet.encoder.stages.S.layers.B.layer.K.{convolution,normalization}
                                                                 layer{S+1}.B.conv{K+1}, bn{K+1}
  resnet.encoder.stages.S.layers.B.shortcut.{convolution,normalization}
                                                                 layer{S+1}.B.downsample.{0,1}
  classifier.1                                                   fc

(`ResNetModel`, headless, has the same keys without 'resnet.'). So a transformers state_dict is renamed
to torchvision's keys and converted by `convert.from_torchvision`, which infers the architecture from
keys and shapes as it does for torchvision's files. `ResNetConfig` can also describe networks none of
our models is: another stem width, other stage widths, the stride on the first 1x1 convolution
(`downsample_in_bottleneck`), a strided first stage, another activation; those are refused in one line.
The stage widths, stem width and depths are read from the shapes; what the shapes cannot show (strides,
activation) is read from the `config.json` beside the weights file when there is one.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping, Optional

from resnet_jax.weights.convert import ConversionError

_MODEL_PREFIX = "resnet."  # ResNetForImageClassification's backbone; ResNetModel has none
_STEM = "embedder.embedder."
_STAGE = re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)$")
_PARTS = {"convolution": "conv", "normalization": "bn"}
_CLASSIFIER = "classifier.1."
# ResNetConfig fields whose values our models share; any other value is a network we do not have.
_REQUIRED = {"hidden_act": "relu", "downsample_in_first_stage": False,
             "downsample_in_bottleneck": False, "embedding_size": 64}


class LayoutError(ConversionError):
  """transformers weights or config that describe a ResNet our zoo has no model for."""


def is_transformers(state_dict: Mapping[str, Any]) -> bool:
  """Whether the keys are transformers' (`ResNetForImageClassification` or `ResNetModel`)."""
  return any(k.startswith((_MODEL_PREFIX + _STEM, _STEM)) for k in state_dict)


def _torchvision_key(key: str) -> Optional[str]:
  """torchvision's name of a transformers key; None for a key outside the ResNet layout."""
  if key.startswith(_CLASSIFIER):
    return "fc." + key[len(_CLASSIFIER):]
  if key.startswith(_MODEL_PREFIX):
    key = key[len(_MODEL_PREFIX):]
  if key.startswith(_STEM):
    part, leaf = key[len(_STEM):].split(".", 1)
    return f"{_PARTS[part]}1.{leaf}" if part in _PARTS else None
  match = _STAGE.match(key)
  if not match:
    return None
  stage, block, rest = int(match.group(1)), int(match.group(2)), match.group(3)
  prefix = f"layer{stage + 1}.{block}."
  shortcut = re.match(r"^shortcut\.(convolution|normalization)\.(.*)$", rest)
  if shortcut:
    return prefix + ("downsample.0." if shortcut.group(1) == "convolution" else "downsample.1.") \
        + shortcut.group(2)
  layer = re.match(r"^layer\.(\d+)\.(convolution|normalization)\.(.*)$", rest)
  if layer:
    return f"{prefix}{_PARTS[layer.group(2)]}{int(layer.group(1)) + 1}.{layer.group(3)}"
  return None


def to_torchvision_keys(state_dict: Mapping[str, Any], where: str = "the state_dict") -> dict:
  """A transformers ResNet state_dict under torchvision's keys (the values are the same objects).

  Raises:
    LayoutError: a key outside transformers' ResNet layout (named), or a stem that is not 64 wide.
  """
  out = {}
  for key, value in state_dict.items():
    new = _torchvision_key(key)
    if new is None:
      raise LayoutError(f"{where}: {key!r} is not a key of transformers' ResNet")
    out[new] = value
  stem = out.get("conv1.weight")
  if stem is not None and stem.shape[0] != _REQUIRED["embedding_size"]:
    raise LayoutError(f"{where}: a stem of {stem.shape[0]} channels (embedding_size); our ResNets "
                      f"have {_REQUIRED['embedding_size']}")
  bottleneck = "layer1.0.conv3.weight" in out
  last = "conv3" if bottleneck else "conv2"
  found = [int(out[f"layer{s}.0.{last}.weight"].shape[0]) for s in range(1, 9)
           if f"layer{s}.0.{last}.weight" in out]
  ours = [w * (4 if bottleneck else 1) for w in (64, 128, 256, 512)]
  if found and found != ours[:len(found)]:
    raise LayoutError(f"{where}: stage widths (hidden_sizes) {found} have no model here (a "
                      f"{'bottleneck' if bottleneck else 'basic'} ResNet has {ours})")
  return out


def check_config(config: Mapping[str, Any], where: str = "the config") -> None:
  """Refuses, in one line, a transformers `ResNetConfig` (as a dict) that none of our models is.

  The stage widths and depths are checked against the weights' shapes by the conversion; here the
  fields the weights cannot show: activation, strides and the stem's width.
  """
  if config.get("model_type", "resnet") != "resnet":
    raise LayoutError(f"{where}: model_type {config.get('model_type')!r} is not transformers' "
                      "'resnet'")
  for key, ours in _REQUIRED.items():
    if key in config and config[key] != ours:
      raise LayoutError(f"{where}: {key}={config[key]!r} has no model here (ours: {ours!r}; "
                        "the stride on the first 1x1 is ResNet v1, ours are v1.5)"
                        if key == "downsample_in_bottleneck" else
                        f"{where}: {key}={config[key]!r} has no model here (ours: {ours!r})")
  hidden = config.get("hidden_sizes")
  layer_type = config.get("layer_type", "bottleneck")
  if hidden is not None:
    expansion = 4 if layer_type == "bottleneck" else 1
    ours = [w * expansion for w in (64, 128, 256, 512)]
    if list(hidden) != ours:
      raise LayoutError(f"{where}: hidden_sizes={list(hidden)} has no model here (a {layer_type} "
                        f"ResNet has {ours})")


def _json_beside(path: str | os.PathLike, name: str) -> tuple[str, Optional[Any]]:
  """(path, parsed content or None when absent) of the file `name` beside the file `path`."""
  where = os.path.join(os.path.dirname(os.path.abspath(path)), name)
  if not os.path.isfile(where):
    return where, None
  try:
    with open(where) as f:
      return where, json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise LayoutError(f"{where} is not readable JSON: {e}") from None


def config_beside(path: str | os.PathLike) -> Optional[dict]:
  """The transformers `config.json` in the directory of the weights file `path`, or None."""
  _, data = _json_beside(path, "config.json")
  return data if isinstance(data, dict) and data.get("model_type") == "resnet" else None


# PIL's resampling codes, as transformers' image processors store them.
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def preprocessing_beside(path: str | os.PathLike) -> Optional[dict]:
  """`ModelSpec` fields (image_size, resize_size, interpolation, mean_255, std_255) from the
  `preprocessor_config.json` beside a transformers weights file, or None when there is none.

  The microsoft/resnet-* processors (ConvNeXt's) resize the shorter side to
  int(shortest_edge / crop_pct), bicubic, then center-crop shortest_edge: 256 then 224.

  Raises:
    LayoutError: a processor whose resize or filter we cannot reproduce, named with the file.
  """
  where, data = _json_beside(path, "preprocessor_config.json")
  if not isinstance(data, dict):
    return None
  size = data.get("size", 224)
  edge = size.get("shortest_edge") if isinstance(size, dict) else size
  if not isinstance(edge, int):
    raise LayoutError(f"{where}: size {size!r} is not a shortest edge (only those are supported)")
  resample = data.get("resample", 2)
  if resample not in _PIL_RESAMPLE:
    raise LayoutError(f"{where}: resample {resample!r} is not PIL's bilinear (2) or bicubic (3)")
  crop_pct = data.get("crop_pct")
  # ConvNeXt's processor crops only below 384 px; at 384 and above it warps to the square.
  if crop_pct is None or edge >= 384:
    raise LayoutError(f"{where}: only a resize then center crop (crop_pct, size below 384) is "
                      "supported")
  mean = data.get("image_mean", (0.485, 0.456, 0.406))
  std = data.get("image_std", (0.229, 0.224, 0.225))
  return {"image_size": edge, "resize_size": int(edge / crop_pct),
          "interpolation": _PIL_RESAMPLE[resample],
          "mean_255": tuple(round(m * 255.0, 6) for m in mean),
          "std_255": tuple(round(s * 255.0, 6) for s in std)}


def torchvision_keys(state_dict: dict, source: Any = None) -> dict:
  """`state_dict` itself, or, when its keys are transformers', the same under torchvision's keys
  (checked against the `config.json` beside the file `source`, if any). `convert.state_dict_of`
  calls this, so every reader of weights (`from_torchvision`, `resnet-jax convert`, `pretrained`)
  takes transformers' files."""
  if not is_transformers(state_dict):
    return state_dict
  where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the state_dict"
  if isinstance(source, (str, os.PathLike)):
    config = config_beside(source)
    if config is not None:
      check_config(config, where=os.path.join(os.path.dirname(os.path.abspath(source)),
                                              "config.json"))
  elif hasattr(source, "config") and hasattr(source.config, "to_dict"):  # a transformers model
    check_config(source.config.to_dict(), where=f"the {type(source).__name__}'s config")
  return to_torchvision_keys(state_dict, where)


def from_transformers(source: Any, arch: Optional[str] = None, **kwargs) -> dict:
  """Converts transformers ResNet weights (a model, state_dict or file) to Flax variables.

  The same as `convert.from_torchvision`, which takes transformers' layout too; `arch` is inferred
  (resnet18/34/50/101/152) when None.
  """
  from resnet_jax.weights import convert
  return convert.from_torchvision(source, arch, **kwargs)


def to_transformers(variables: Mapping[str, Any], arch: Optional[str] = None, *,
                    as_numpy: bool = False, headless_prefix: bool = False) -> dict:
  """Flax variables as a state_dict `ResNetForImageClassification` loads with `strict=True`.

  Args:
    variables: {'params', 'batch_stats'} of a resnet18/34/50/101/152.
    arch: when given, the variables are checked against it first.
    as_numpy: numpy arrays instead of torch tensors.
    headless_prefix: keys of `ResNetModel` (no 'resnet.' prefix; there is no classifier).

  Returns:
    An ordered dict from transformers key to tensor (or array).
  """
  from resnet_jax.weights import convert
  state = convert.to_torchvision(variables, arch, as_numpy=as_numpy)
  prefix = "" if headless_prefix else _MODEL_PREFIX
  out = {}
  for key, value in state.items():
    out[_transformers_key(key, prefix)] = value
  return out


def _transformers_key(key: str, prefix: str) -> str:
  if key.startswith("fc."):
    return _CLASSIFIER + key[3:]
  stem = re.match(r"^(conv|bn)1\.(.*)$", key)
  if stem:
    part = "convolution" if stem.group(1) == "conv" else "normalization"
    return f"{prefix}{_STEM}{part}.{stem.group(2)}"
  match = re.match(r"^layer(\d+)\.(\d+)\.(.*)$", key)
  stage, block, rest = int(match.group(1)) - 1, match.group(2), match.group(3)
  base = f"{prefix}encoder.stages.{stage}.layers.{block}."
  down = re.match(r"^downsample\.([01])\.(.*)$", rest)
  if down:
    part = "convolution" if down.group(1) == "0" else "normalization"
    return f"{base}shortcut.{part}.{down.group(2)}"
  layer = re.match(r"^(conv|bn)(\d)\.(.*)$", rest)
  part = "convolution" if layer.group(1) == "conv" else "normalization"
  return f"{base}layer.{int(layer.group(2)) - 1}.{part}.{layer.group(3)}"

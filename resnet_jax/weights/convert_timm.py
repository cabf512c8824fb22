"""timm <-> Flax ResNet variables: timm's key map on convert.py's checks and layout transposes.

timm's `resnet.py` keeps torchvision's names and adds its own: a deep stem is `conv1.0/.1/.3/.4/.6`
(an nn.Sequential's indices), ResNet-RS's stem conv is `maxpool.0/.1`, an average-pool shortcut
shifts `downsample.0/.1` to `.1/.2` (index 0 is the pool), and attention is `se.fc1/.fc2` (SE) or
`se.conv` (ECA). Anti-aliasing has no weights. `resnetv2.py`'s keys are the Flax module names
with '_' read as '.' ('stages_0_blocks_1' -> 'stages.0.blocks.1', 'head_fc' -> 'head.fc').
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping, Optional

from resnet_jax.weights import convert
from resnet_jax.weights.convert import ConversionError, Inferred
from resnet_jax.models.layers import make_divisible
from resnet_jax.models.resnet import get_model
from resnet_jax.models.timm_models import TIMM_RESNETS, TIMM_RESNETV2S, ResNetV2, timm_names

# The timm names whose keys are not torchvision's: converted here whatever entry point is used.
TIMM_ONLY = frozenset(TIMM_RESNETS) | frozenset(TIMM_RESNETV2S)
_INDEXED = re.compile(r"^(.*?)_(\d+)$")  # 'layer2_0' -> 'layer2.0', 'conv1_3' -> 'conv1.3'


def timm_key(path: tuple[str, ...], avg_down: bool = False) -> str:
  """The timm key of a flattened Flax variable path of a model with (or without) `avg_down`.

  ('params', 'conv1_0', 'kernel') -> 'conv1.0.weight';
  ('params', 'layer2_0', 'downsample_conv', 'kernel') -> 'layer2.0.downsample.1.weight' (avg_down).
  """
  collection, *modules, leaf = path
  offset = 1 if avg_down else 0
  renames = {"downsample_conv": f"downsample.{offset}", "downsample_bn": f"downsample.{offset + 1}"}
  names = [renames.get(m) or _INDEXED.sub(r"\1.\2", m) for m in modules]
  if (collection, leaf) not in convert._LEAVES:
    raise ConversionError(f"no timm name for variable {'/'.join(path)}")
  return ".".join(names + [convert._LEAVES[collection, leaf]])


def timm_v2_key(path: tuple[str, ...]) -> str:
  """The timm key of a flattened Flax variable path of a `ResNetV2`.

  ('params', 'stages_1_blocks_0', 'downsample_conv', 'kernel') -> 'stages.1.blocks.0.downsample.conv.weight'.
  """
  collection, *modules, leaf = path
  if (collection, leaf) not in convert._LEAVES:
    raise ConversionError(f"no timm name for variable {'/'.join(path)}")
  return ".".join([m.replace("_", ".") for m in modules] + [convert._LEAVES[collection, leaf]])


def key_map(model):
  """The Flax path -> timm key function of a built model."""
  if isinstance(model, ResNetV2):
    return timm_v2_key
  return functools.partial(timm_key, avg_down=model.avg_down)


def timm_layout(model) -> dict[str, tuple[tuple, tuple]]:
  """timm key -> (Flax path, timm shape) of every variable of a built model."""
  return convert.layout_of(model, key_map(model))


def state_dict_classes(state: Mapping[str, Any]) -> Optional[int]:
  """The classifier outputs of timm weights (`fc` or ResNetV2's `head.fc`); None when headless."""
  fc = state.get("fc.weight", state.get("head.fc.weight"))
  return int(fc.shape[0]) if fc is not None else None


@functools.lru_cache(maxsize=None)
def _layout(name: str, num_classes: Optional[int]):
  return timm_layout(get_model(name, num_classes=num_classes))


def _model_signature(model) -> tuple:
  """What a state_dict shows of a model: everything but anti-aliasing (which has no weights) and,
  in ResNetV2, the kind of shortcut and convolution."""
  if isinstance(model, ResNetV2):
    return ("v2", model.bottleneck, tuple(model.stage_sizes), make_divisible(64 * model.width_factor),
            model.stem, model.norm)
  deep = model.stem.startswith("deep")
  rd = None
  if model.attn == "se":
    rd = make_divisible(model.stage_widths[0] * model.block.expansion * model.attn_ratio, 8, 0.0)
  return (model.block.__name__, tuple(model.stage_sizes), model.groups, model.width_per_group,
          model.block_reduce_first, model.stem, model.stem_width if deep else None, model.stem_pool,
          model.avg_down, model.down_kernel_size, model.attn, rd, model.norm)


def _state_signature(state: Mapping[str, Any]) -> tuple:
  """`_model_signature` as read from a timm state_dict's keys and shapes."""
  shape = lambda k: tuple(state[k].shape) if k in state else None  # noqa: E731
  if "stages.0.blocks.0.norm1.weight" in state:
    sizes = convert.count_blocks(state, "stages.{stage}.blocks.{block}.norm1.weight")
    if "stem.conv.weight" in state:
      stem, width = "imagenet", shape("stem.conv.weight")[0]
    else:
      width = (shape("stem.conv3.weight") or (0,))[0]
      first, second = shape("stem.conv1.weight")[0], (shape("stem.conv2.weight") or (0,))[0]
      stem = "deep" if first == second else "tiered"
    return ("v2", "stages.0.blocks.0.conv3.weight" in state, sizes, width, stem,
            "batch" if "norm.running_mean" in state else "group")
  if "layer1.0.conv1.weight" not in state:
    some = ", ".join(list(state)[:8])
    raise ConversionError(f"not a timm ResNet state_dict (no 'layer1.0.conv1.weight' nor "
                          f"'stages.0.blocks.0.norm1.weight'); keys start: {some}")
  sizes = convert.count_blocks(state, "layer{stage}.{block}.conv1.weight", first_stage=1)
  bottleneck = "layer1.0.conv3.weight" in state
  first = shape("layer1.0.conv1.weight")[0]
  conv2 = shape("layer1.0.conv2.weight") or (0, 1)
  groups, width_per_group, reduce_first = 1, 64, conv2[0] // max(first, 1)
  if bottleneck:
    width, in_per_group = conv2[:2]
    planes = shape("layer1.0.conv3.weight")[0] // 4
    groups = first // in_per_group
    width_per_group = width // groups * 64 // planes
  deep = "conv1.0.weight" in state
  stem = "imagenet"
  stem_width = None
  if deep:
    stem_width = shape("conv1.3.weight")[0]
    stem = "deep" if shape("conv1.0.weight")[0] == stem_width else "deep_tiered"
  elif (shape("conv1.weight") or (0, 0, 7))[2] == 3:
    stem = "cifar"
  avg_down = any(re.fullmatch(r"layer\d+\.0\.downsample\.2\.weight", k) for k in state)
  down = shape(f"layer2.0.downsample.{int(avg_down)}.weight")
  attn, rd = None, None
  if "layer1.0.se.fc1.weight" in state:
    attn, rd = "se", shape("layer1.0.se.fc1.weight")[0]
  elif "layer1.0.se.conv.weight" in state:
    attn = "eca"
  return ("Bottleneck" if bottleneck else "BasicBlock", sizes, groups, width_per_group,
          reduce_first, stem, stem_width, "conv" if "maxpool.0.weight" in state else "max",
          avg_down, down[-1] if down else 1, attn, rd,
          "batch" if "bn1.running_mean" in state else "group")


def infer_timm_arch(state_dict: Mapping[str, Any]) -> Inferred:
  """Names the timm ResNet a state_dict belongs to, from its keys and shapes.

  Raises:
    ConversionError: no registered timm name fits, or several do (anti-aliasing has no weights:
      resnet50, resnetaa50 and resnetblur50 have the same keys), naming the candidates.
  """
  candidates = timm_candidates(state_dict)
  if len(candidates) == 1:
    return Inferred(candidates[0], state_dict_classes(state_dict))
  if candidates:
    raise ConversionError(f"the weights fit {', '.join(candidates)} alike (anti-aliasing has no "
                          "weights); pass the name")
  raise ConversionError(f"no timm ResNet of {', '.join(timm_names()[:3])}... has this structure "
                        f"({_state_signature(state_dict)}); pass the name to have the differing "
                        "keys listed")


def timm_candidates(state_dict: Mapping[str, Any]) -> list[str]:
  """The timm names whose models have this state_dict's structure (several only where the models
  differ in what has no weights: anti-aliasing)."""
  try:
    found = _state_signature(state_dict)
  except (ConversionError, KeyError, IndexError, TypeError):  # Not a timm ResNet's keys.
    return []
  return [n for n in timm_names() if _model_signature(get_model(n)) == found]


def from_timm(source: Any, name: Optional[str] = None, *, num_classes: Optional[int] = -1,
              allow_nonfinite: bool = False, model=None) -> dict[str, dict]:
  """Converts timm ResNet weights to Flax variables for `get_model(name)`.

  Args:
    source: a state_dict (torch tensors or numpy arrays), a timm module, or a checkpoint path.
    name: a timm name the zoo registers; inferred from the keys and shapes when None.
    num_classes: the classifier size; by default read from `fc.weight` (none: a headless model).
    allow_nonfinite: convert NaN and infinite values instead of refusing them.
    model: the built model, when it has overrides the name alone does not describe.

  Returns:
    {'params': ..., 'batch_stats': ...} (no 'batch_stats' for GroupNorm models) of numpy arrays.

  Raises:
    ConversionError: the weights do not fit (every missing, unexpected and mis-shaped key listed),
      the name cannot be inferred, or a value is not a finite float.
  """
  state = convert.state_dict_of(source)
  if num_classes == -1:
    num_classes = state_dict_classes(state)
  if name is None:
    name = infer_timm_arch(state).arch
  if model is None:
    layout = _layout(name, num_classes)
  else:
    layout, num_classes = timm_layout(model), model.num_classes or None
  convert.check_state_dict(state, name, num_classes, layout=layout, infer=infer_timm_arch)
  convert.check_values(state, layout, allow_nonfinite)
  return convert.variables_from(state, layout)


def to_timm(variables: Mapping[str, Any], name: str, *, as_numpy: bool = False,
            model=None) -> dict[str, Any]:
  """Converts Flax variables of `get_model(name)` to a state_dict timm's model loads strictly.

  Adds each BatchNorm's `num_batches_tracked` (0: Flax does not count). Values are float32.
  """
  model = model or get_model(name)
  state = convert.state_dict_from(variables, key_map(model))
  num_classes = state_dict_classes(state)
  layout = timm_layout(model.clone(num_classes=num_classes))
  convert.check_state_dict(state, name, num_classes, layout=layout, infer=infer_timm_arch)
  return convert._as_torch(state, as_numpy)


__all__ = ["TIMM_ONLY", "from_timm", "infer_timm_arch", "key_map", "timm_candidates",
           "state_dict_classes", "timm_key", "timm_layout", "timm_v2_key", "to_timm"]
